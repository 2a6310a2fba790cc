using Events.Core;
namespace Events.CSharp;

/// <summary>
/// Where events and handler requests are kept: <see cref="InMemory"/> for tests and demos, or PostgreSQL
/// through Marten (the package <c>Events.CSharp.Marten</c>: <c>EventStore.Marten(documentStore)</c>,
/// <c>EventStore.CreateMartenAsync(connectionString)</c>). One store may be shared by several runtimes, as
/// processes share one database. Disposing it stops what it runs in the background (the Marten store's
/// listener for other processes' work).
/// </summary>
public sealed class EventStore : IAsyncDisposable
{
    private readonly Func<CancellationToken, Task> prepare;
    private readonly IAsyncDisposable? owned;
    private readonly Func<bool>? listening;

    internal EventStore(
        IEventStore port,
        IAdminStore admin,
        string description,
        Func<CancellationToken, Task>? prepare = null,
        IAsyncDisposable? owned = null,
        Func<bool>? listening = null)
    {
        Port = port;
        Admin = admin;
        this.listening = listening;
        Description = description;
        this.prepare = prepare ?? (_ => Task.CompletedTask);
        this.owned = owned;
    }

    internal IEventStore Port { get; }

    internal IAdminStore Admin { get; }

    /// <summary>
    /// Whether the store's wake-up listener (other processes' new work, through the database) is connected now;
    /// <see langword="null"/> for a store without one (in memory, or a Marten store made not to listen).
    /// </summary>
    public bool? IsListening => listening?.Invoke();

    /// <summary>What kind of store this is, for logs.</summary>
    public string Description { get; }

    /// <summary>A new, empty in-memory store: everything lives as long as the process.</summary>
    /// <returns>The store.</returns>
    public static EventStore InMemory()
    {
        var store = new InMemoryStore(null);
        return new(store, store, "in-memory");
    }

    /// <summary>Makes sure the store can be used (the Marten store: its tables exist, as Marten's policy allows).</summary>
    internal Task PrepareAsync(CancellationToken cancellationToken) => prepare(cancellationToken);

    /// <summary>Stops what the store runs in the background, and disposes what the store was made with if it owns it.</summary>
    /// <returns>Completes when the store is disposed.</returns>
    public async ValueTask DisposeAsync()
    {
        if (Port is IAsyncDisposable disposable)
        {
            await disposable.DisposeAsync().ConfigureAwait(false);
        }

        if (owned is not null)
        {
            await owned.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <inheritdoc/>
    public override string ToString() => Description;
}
