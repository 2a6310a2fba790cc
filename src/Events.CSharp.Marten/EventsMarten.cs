using Events.Marten;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using CoreEvent = Events.Core.Event;

namespace Events.CSharp;

/// <summary>Events with Marten: the document store's configuration, the outbox, and a handler's session.</summary>
public static class EventsMarten
{
    private static Func<bool>? Listening(MartenEventStore store) =>
        store.Options.ListenForWork ? () => store.WhenListening.IsCompletedSuccessfully : null;

    /// <summary>
    /// Adds the Events documents (events and handler requests, with their columns and indexes) to a Marten
    /// configuration, and the listener that appends the events raised by saved <see cref="IRaiseEvents"/>
    /// entities. Events needs System.Text.Json: another serialiser is replaced by Marten's System.Text.Json
    /// one. Idempotent.
    /// </summary>
    /// <param name="options">Marten's store options.</param>
    /// <param name="schemaName">A PostgreSQL schema of their own for the Events tables; <see langword="null"/> for the store's.</param>
    /// <returns>The options, to chain.</returns>
    public static StoreOptions UseEvents(this StoreOptions options, string? schemaName = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.UseEventsDocuments(schemaName!);
        if (!options.Listeners.OfType<RaisedEventsOutbox>().Any())
        {
            options.Listeners.Add(new RaisedEventsOutbox());
        }

        return options;
    }

    /// <summary>
    /// Raises events in the application's own Marten session (the transactional outbox): they are appended
    /// when the session saves its changes, in the same transaction, and not at all if it does not. The
    /// session's document store must be configured with <see cref="UseEvents(StoreOptions, string?)"/>. In a
    /// handler, raise them in its session (<see cref="GetMartenSession(HandlerContext)"/>, or the injected
    /// <c>IDocumentSession</c>): they commit with the request's outcome.
    /// </summary>
    /// <param name="session">The application's session.</param>
    /// <param name="events">The events, made with <see cref="Event.Application(string, object)"/> or <see cref="Event.Domain(string, EntityRef, object)"/>.</param>
    /// <returns>
    /// The events as they will be stored, with their correlation ids. An event with a deduplication key is
    /// stored only if no event with its key is stored when the session commits (a later event of the batch
    /// with the key of an earlier one comes back as that one, marked <see cref="Event.IsDuplicate"/>).
    /// </returns>
    public static IReadOnlyList<Event> RaiseEvents(this IDocumentSession session, params IEnumerable<Event> events)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(events);
        var batch = events.Select(e => (e ?? throw new ArgumentException("an event is null", nameof(events))).Core).ToList();
        var placed = DocumentSessionExtensions.AppendEvents(HandlerSessions.Unwrap(session), batch);
        return [.. batch.Zip(placed, Event.Returned)];
    }

    /// <summary>
    /// The Marten session for a handler's own work, opened on first use: its changes are saved in the same
    /// transaction as the request's outcome, discarded when the attempt fails, and rolled back when the
    /// outcome is refused (another process took the request). It is the <c>IDocumentSession</c> and
    /// <c>IQuerySession</c> of the attempt's scope. Calling <c>SaveChangesAsync</c> or <c>Dispose</c> on it does
    /// nothing: the outcome's commit saves it, the store disposes it.
    /// </summary>
    /// <param name="context">The handler's context.</param>
    /// <returns>The session, or <see langword="null"/> when the store is not Marten.</returns>
    public static IDocumentSession? GetMartenSession(this HandlerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return context.StoreSession(HandlerSessions.Open);
    }

    /// <summary>Keeps events and handler requests in Marten: <c>EventStore.Marten(documentStore)</c>, <c>EventStore.CreateMartenAsync(...)</c>.</summary>
    extension(EventStore)
    {
        /// <summary>
        /// A store in the application's Marten document store, which must be configured with
        /// <see cref="UseEvents(StoreOptions, string?)"/> (<c>UseMartenStore()</c> does that with dependency
        /// injection). Events and handler requests are Marten documents; the document store stays the
        /// application's. The Events tables are created, as Marten creates any document's, under the document
        /// store's <c>AutoCreateSchemaObjects</c> when the hosted service starts, or by Marten's own schema
        /// tools.
        /// </summary>
        /// <param name="documentStore">The application's Marten document store.</param>
        /// <returns>The store.</returns>
        public static EventStore Marten(IDocumentStore documentStore)
        {
            ArgumentNullException.ThrowIfNull(documentStore);
            var store = new MartenEventStore(documentStore, null);
            return new EventStore(
                store,
                new MartenAdminStore(store),
                "Marten (PostgreSQL)",
                store.EnsureStorageAsync,
                listening: Listening(store));
        }

        /// <summary>
        /// A store in a PostgreSQL database of its own: builds a Marten document store for the connection
        /// string, applies the Events schema, and returns a store that owns the document store (disposing the
        /// store disposes it).
        /// </summary>
        /// <param name="connectionString">The database's connection string.</param>
        /// <param name="schemaName">The PostgreSQL schema of the Events tables; <see langword="null"/> for <c>public</c>.</param>
        /// <param name="cancellationToken">Cancels applying the schema (the document store is then disposed).</param>
        /// <returns>The store, its schema applied.</returns>
        public static async Task<EventStore> CreateMartenAsync(
            string connectionString,
            string? schemaName = null,
            CancellationToken cancellationToken = default)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(connectionString);
            var documents = DocumentStore.For(marten =>
            {
                marten.Connection(connectionString);
                if (schemaName is not null)
                {
                    marten.DatabaseSchemaName = schemaName;
                }

                marten.UseEvents();
            });
            try
            {
                await documents.Storage.Database.ApplyAllConfiguredChangesToDatabaseAsync(null, null, cancellationToken).ConfigureAwait(false);
                var store = new MartenEventStore(documents, null);
                return new EventStore(
                    store,
                    new MartenAdminStore(store),
                    "Marten (PostgreSQL)",
                    owned: documents,
                    listening: Listening(store));
            }
            catch
            {
                await documents.DisposeAsync().ConfigureAwait(false);
                throw;
            }
        }
    }

    /// <summary>
    /// Keeps events and handler requests in the application's Marten document store (registered with
    /// <c>AddMarten</c>, which must come first): adds the Events documents to its configuration, registers
    /// the store as <see cref="EventStore"/>, and makes <c>IDocumentSession</c> and <c>IQuerySession</c>, in a
    /// handler's scope, the session that commits with the request's outcome (elsewhere they stay Marten's).
    /// The hosted service creates the Events tables on start as Marten's <c>AutoCreateSchemaObjects</c>
    /// allows; with <c>AutoCreate.None</c>, apply them with Marten's schema tools.
    /// </summary>
    /// <param name="events">The expression of <c>AddEvents</c>.</param>
    /// <param name="schemaName">A PostgreSQL schema of their own for the Events tables; <see langword="null"/> for the store's.</param>
    /// <returns>The expression, to chain.</returns>
    /// <exception cref="InvalidOperationException"><c>AddMarten</c> was not called before.</exception>
    public static EventsConfigurationExpression UseMartenStore(this EventsConfigurationExpression events, string? schemaName = null)
    {
        ArgumentNullException.ThrowIfNull(events);
        var services = events.Services;
        HandlerSessions.Register(services);
        services.ConfigureMarten(marten => marten.UseEvents(schemaName));
        return events.UseStore(provider => EventStore.Marten(provider.GetRequiredService<IDocumentStore>()));
    }

    /// <summary>Appends the events raised by saved facade <see cref="IRaiseEvents"/> entities, and clears them after the commit.</summary>
    private sealed class RaisedEventsOutbox : global::Marten.DocumentSessionListenerBase
    {
        private static List<IRaiseEvents> Raisers(IEnumerable<object> documents) =>
            [.. documents.OfType<IRaiseEvents>().Distinct(ReferenceEqualityComparer.Instance).Cast<IRaiseEvents>()];

        public override Task BeforeSaveChangesAsync(IDocumentSession session, CancellationToken token)
        {
            var pending = session.PendingChanges;
            foreach (var entity in Raisers(pending.Inserts().Concat(pending.Updates())))
            {
                var raised = entity.Raiser.Events;
                if (raised.Count > 0)
                {
                    DocumentSessionExtensions.AppendEvents(session, raised.Select(e => e.Core));
                }
            }

            return Task.CompletedTask;
        }

        public override Task AfterCommitAsync(IDocumentSession session, global::Marten.Services.IChangeSet commit, CancellationToken token)
        {
            foreach (var entity in Raisers(commit.Inserted.Concat(commit.Updated)))
            {
                entity.Raiser.Clear();
            }

            return Task.CompletedTask;
        }
    }
}
