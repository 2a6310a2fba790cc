using Events.Marten;
using Marten;
using Microsoft.FSharp.Core;

namespace Events.CSharp;

/// <summary>
/// Where events and handler requests are kept: <see cref="InMemory"/> for tests and demos, or PostgreSQL
/// through Marten (<see cref="Marten(IDocumentStore)"/>, <see cref="CreateMartenAsync(string, string?)"/>).
/// One store may be shared by several runtimes, as processes share one database. Disposing it stops
/// what it runs in the background (the Marten store's listener for other processes' work).
/// </summary>
public sealed class EventStore : IAsyncDisposable
{
    private readonly Func<CancellationToken, Task> prepare;

    private EventStore(IEventStore port, string description, Func<CancellationToken, Task>? prepare = null)
    {
        Port = port;
        Description = description;
        this.prepare = prepare ?? (_ => Task.CompletedTask);
    }

    internal IEventStore Port { get; }

    /// <summary>What kind of store this is, for logs.</summary>
    public string Description { get; }

    /// <summary>A new, empty in-memory store: everything lives as long as the process.</summary>
    /// <returns>The store.</returns>
    public static EventStore InMemory() => new(new InMemoryStore(null), "in-memory");

    /// <summary>
    /// A store in the application's Marten document store, which must be configured with
    /// <see cref="EventsMarten.UseEvents(StoreOptions, string?)"/> (<c>UseMartenStore()</c> does that with
    /// dependency injection). Events and handler requests are Marten documents; the document store stays
    /// the application's. The Events tables are created, as Marten creates any document's, under the
    /// document store's <c>AutoCreateSchemaObjects</c> when the hosted service starts, or by Marten's own
    /// schema tools.
    /// </summary>
    /// <param name="documentStore">The application's Marten document store.</param>
    /// <returns>The store.</returns>
    public static EventStore Marten(IDocumentStore documentStore)
    {
        ArgumentNullException.ThrowIfNull(documentStore);
        var store = new MartenEventStore(documentStore, null);
        return new EventStore(store, "Marten (PostgreSQL)", store.EnsureStorageAsync);
    }

    /// <summary>
    /// A store in a PostgreSQL database of its own: builds a Marten document store for the connection string,
    /// applies the Events schema, and returns a store that owns the document store (disposing the store
    /// disposes it).
    /// </summary>
    /// <param name="connectionString">The database's connection string.</param>
    /// <param name="schemaName">The PostgreSQL schema of the Events tables; <see langword="null"/> for <c>public</c>.</param>
    /// <returns>The store, its schema applied.</returns>
    public static async Task<EventStore> CreateMartenAsync(string connectionString, string? schemaName = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(connectionString);
        var store = await MartenEventStore.CreateAsync(
            connectionString,
            schemaName is null ? null : FSharpOption<string>.Some(schemaName),
            null).ConfigureAwait(false);
        return new EventStore(store, "Marten (PostgreSQL)");
    }

    /// <summary>Makes sure the store can be used (the Marten store: its tables exist, as Marten's policy allows).</summary>
    internal Task PrepareAsync(CancellationToken cancellationToken) => prepare(cancellationToken);

    /// <summary>Stops what the store runs in the background, and disposes the document store if the store built it.</summary>
    /// <returns>Completes when the store is disposed.</returns>
    public ValueTask DisposeAsync() => Port is IAsyncDisposable disposable ? disposable.DisposeAsync() : default;

    /// <inheritdoc/>
    public override string ToString() => Description;
}
