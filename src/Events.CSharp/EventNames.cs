namespace Events.CSharp;

/// <summary>Checks names against the rules the core applies to event and handler names.</summary>
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
}
