namespace Events.CSharp;

/// <summary>
/// Where events and handler requests are kept: <see cref="InMemory"/> for tests and demos, or a
/// PostgreSQL database through Marten. One store may be shared by several runtimes (processes sharing
/// one database do the same).
/// </summary>
public sealed class EventStore
{
    internal EventStore(IEventStore port, string description)
    {
        Port = port;
        Description = description;
    }

    internal IEventStore Port { get; }

    /// <summary>What kind of store this is, for logs.</summary>
    public string Description { get; }

    /// <summary>A new, empty in-memory store: everything lives as long as the process.</summary>
    /// <returns>The store.</returns>
    public static EventStore InMemory() => new(new InMemoryStore(null), "in-memory");

    /// <inheritdoc/>
    public override string ToString() => Description;
}
