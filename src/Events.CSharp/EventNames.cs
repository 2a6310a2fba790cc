using System.Reflection;
using Events.Core;

namespace Events.CSharp;

/// <summary>Checks names against the rules the core applies to event and handler names, and derives event names from data types.</summary>
public static class EventNames
{
    /// <summary>The longest name accepted, in UTF-16 characters.</summary>
    public static int MaxLength => Name.MaxLength;

    /// <summary>Whether <paramref name="name"/> is a valid event or handler name.</summary>
    /// <param name="name">The name to check.</param>
    /// <param name="error">Why the name is refused, or <see langword="null"/> when it is valid.</param>
    /// <returns><see langword="true"/> when the name is valid.</returns>
    public static bool IsValid(string? name, out string? error)
    {
        var result = Name.Validate(name);
        error = result.IsOk ? null : result.ErrorValue.Message;
        return result.IsOk;
    }

    /// <summary>
    /// The name of the events whose data is <typeparamref name="TData"/>: its <see cref="EventNameAttribute"/>,
    /// else its full type name (so renaming or moving the type renames its events: give stored events'
    /// types the attribute).
    /// </summary>
    /// <typeparam name="TData">The data type.</typeparam>
    /// <returns>The event name.</returns>
    public static string Of<TData>() => Of(typeof(TData));

    /// <summary>The name of the events whose data is of <paramref name="dataType"/> (see <see cref="Of{TData}"/>).</summary>
    /// <param name="dataType">The data type.</param>
    /// <returns>The event name.</returns>
    public static string Of(Type dataType)
    {
        ArgumentNullException.ThrowIfNull(dataType);
        return dataType.GetCustomAttribute<EventNameAttribute>(inherit: false)?.Name
            ?? (dataType.FullName ?? dataType.Name).Replace('+', '.');
    }
}

/// <summary>
/// Names the events whose data is the type it marks, for <see cref="EventsOptions.On{TData}"/>,
/// <see cref="Event.Application{TData}(TData)"/> and <see cref="Event.Domain{TData}(EntityRef, TData)"/>.
/// </summary>
/// <param name="name">The event name, such as <c>"order.placed"</c>.</param>
[AttributeUsage(AttributeTargets.Class | AttributeTargets.Struct, Inherited = false)]
public sealed class EventNameAttribute(string name) : Attribute
{
    /// <summary>The event name.</summary>
    public string Name { get; } = name ?? throw new ArgumentNullException(nameof(name));
}
