using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace Events.CSharp;

/// <summary>Conversions between the core's F# shapes and the facade's C# shapes.</summary>
internal static class Interop
{
    public static T? ToNullable<T>(this FSharpOption<T>? option)
        where T : struct =>
        FSharpOption<T>.get_IsSome(option) ? option!.Value : null;

    public static T? ToNullableReference<T>(this FSharpOption<T>? option)
        where T : class =>
        FSharpOption<T>.get_IsSome(option) ? option!.Value : null;

    public static FSharpOption<T>? ToOption<T>(this T? value)
        where T : class =>
        value is null ? FSharpOption<T>.None : FSharpOption<T>.Some(value);

    public static FSharpOption<T>? ToOption<T>(this T? value)
        where T : struct =>
        value is { } some ? FSharpOption<T>.Some(some) : FSharpOption<T>.None;

    public static FSharpList<T> ToFSharpList<T>(this IEnumerable<T> items) => ListModule.OfSeq(items);

    /// <summary>Every error's message, joined into one sentence.</summary>
    public static string Messages<T>(this IEnumerable<T> errors, Func<T, string> message) =>
        string.Join("; ", errors.Select(message));
}
