using Events.Marten;
using Marten;
using CoreEvent = Events.Event;

namespace Events.CSharp;

/// <summary>Events with Marten: the document store's configuration, the outbox, and a handler's session.</summary>
public static class EventsMarten
{
    /// <summary>
    /// Adds the Events documents (events and handler requests, with their columns and indexes) to a Marten
    /// configuration. Events needs System.Text.Json: another serialiser is replaced by Marten's
    /// System.Text.Json one. Idempotent.
    /// </summary>
    /// <param name="options">Marten's store options.</param>
    /// <param name="schemaName">A PostgreSQL schema of their own for the Events tables; <see langword="null"/> for the store's.</param>
    /// <returns>The options, to chain.</returns>
    public static StoreOptions UseEvents(this StoreOptions options, string? schemaName = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        return options.UseEventsDocuments(schemaName!);
    }

    /// <summary>
    /// Raises events in the application's own Marten session (the transactional outbox): they are appended
    /// when the session saves its changes, in the same transaction, and not at all if it does not. The
    /// session's document store must be configured with <see cref="UseEvents(StoreOptions, string?)"/>.
    /// </summary>
    /// <param name="session">The application's session.</param>
    /// <param name="events">The events, made with <see cref="Event.Application(string, object)"/> or <see cref="Event.Domain(string, string, string, object)"/>.</param>
    /// <returns>The events as they will be stored, with their correlation ids.</returns>
    public static IReadOnlyList<Event> RaiseEvents(this IDocumentSession session, params IEnumerable<Event> events)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(events);
        var batch = events.Select(e => (e ?? throw new ArgumentException("an event is null", nameof(events))).Core);
        return [.. DocumentSessionExtensions.AppendEvents(session, batch).Select((CoreEvent e) => new Event(e))];
    }

    /// <summary>
    /// The Marten session for a handler's own work, opened on first use: its changes are saved in the same
    /// transaction as the request's outcome, and discarded when the outcome is refused. Do not call
    /// <c>SaveChangesAsync</c> on it.
    /// </summary>
    /// <param name="context">The handler's context.</param>
    /// <returns>The session, or <see langword="null"/> when the store is not Marten.</returns>
    public static IDocumentSession? GetMartenSession(this HandlerContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        return context.GetTransaction<MartenHandlerTransaction>()?.Session;
    }
}
