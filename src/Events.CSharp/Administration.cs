using Events.Core;
namespace Events.CSharp;

/// <summary>Raises events: appends them to the store, where the processor finds them.</summary>
public interface IEventPublisher
{
    /// <summary>Raises an event.</summary>
    /// <param name="event">The event, made with <see cref="Event.Application(string, object)"/> or <see cref="Event.Domain(string, string, string, object)"/>.</param>
    /// <param name="cancellationToken">Cancels the append.</param>
    /// <returns>The event as stored, with its correlation id; when its deduplication key was stored already, the event stored before with that key, marked <see cref="Event.IsDuplicate"/> (nothing is stored).</returns>
    Task<Event> RaiseAsync(Event @event, CancellationToken cancellationToken = default);

    /// <summary>Raises events together, in one append.</summary>
    /// <param name="events">The events.</param>
    /// <param name="cancellationToken">Cancels the append.</param>
    /// <returns>The events as stored, in order, with their correlation ids; in the place of an event whose deduplication key was stored already (or held by an earlier event of the batch), the event stored with that key, marked <see cref="Event.IsDuplicate"/>.</returns>
    Task<IReadOnlyList<Event>> RaiseAsync(IEnumerable<Event> events, CancellationToken cancellationToken = default);

    /// <summary>Makes an application event on the runtime's clock and raises it.</summary>
    /// <param name="name">What happened, such as <c>"user.signed-in"</c>.</param>
    /// <param name="data">A value that serialises to a JSON object.</param>
    /// <param name="cancellationToken">Cancels the append.</param>
    /// <returns>The event as stored.</returns>
    /// <exception cref="ArgumentException">The name or the data is refused; the message says why.</exception>
    Task<Event> RaiseApplicationEventAsync(string name, object data, CancellationToken cancellationToken = default);

    /// <summary>Makes a domain event about an entity on the runtime's clock and raises it.</summary>
    /// <param name="name">What happened, such as <c>"order.placed"</c>.</param>
    /// <param name="entityId">The entity's id.</param>
    /// <param name="entityName">The entity's kind, such as <c>"order"</c>.</param>
    /// <param name="data">A value that serialises to a JSON object.</param>
    /// <param name="cancellationToken">Cancels the append.</param>
    /// <returns>The event as stored.</returns>
    /// <exception cref="ArgumentException">The name, the entity or the data is refused; the message says why.</exception>
    Task<Event> RaiseDomainEventAsync(
        string name,
        string entityId,
        string entityName,
        object data,
        CancellationToken cancellationToken = default);
}

/// <summary>Looks into the store and manages dead handler requests.</summary>
public interface IEventsAdmin
{
    /// <summary>The store's gauges now: unprocessed events, runnable requests, dead requests.</summary>
    /// <param name="cancellationToken">Cancels the query.</param>
    /// <returns>The gauges.</returns>
    Task<EventsStatistics> GetStatisticsAsync(CancellationToken cancellationToken = default);

    /// <summary>Counts dead requests matching a query's filters (its paging is ignored).</summary>
    /// <param name="query">The filters; <see langword="null"/> for every dead request.</param>
    /// <param name="cancellationToken">Cancels the query.</param>
    /// <returns>The count.</returns>
    /// <exception cref="ArgumentException">A name in the filters breaks the naming rules.</exception>
    Task<long> CountDeadRequestsAsync(DeadRequestQuery? query = null, CancellationToken cancellationToken = default);

    /// <summary>One page of dead requests matching a query, ordered by event time then id.</summary>
    /// <param name="query">The filters and the page; <see langword="null"/> for the first 100 of all.</param>
    /// <param name="cancellationToken">Cancels the query.</param>
    /// <returns>The page, and the count of all that match.</returns>
    /// <exception cref="ArgumentException">A name breaks the naming rules, or the limit or offset is negative.</exception>
    Task<DeadRequestPage> GetDeadRequestsAsync(DeadRequestQuery? query = null, CancellationToken cancellationToken = default);

    /// <summary>The distinct event names and handler names among dead requests, sorted.</summary>
    /// <param name="cancellationToken">Cancels the query.</param>
    /// <returns>The names.</returns>
    Task<DeadRequestNames> GetDeadRequestNamesAsync(CancellationToken cancellationToken = default);

    /// <summary>Makes a dead (or waiting) request runnable again from zero errors.</summary>
    /// <param name="requestId">The request's id.</param>
    /// <param name="cancellationToken">Cancels the update.</param>
    /// <returns>The request as written.</returns>
    /// <exception cref="KeyNotFoundException">No request has this id.</exception>
    /// <exception cref="InvalidOperationException">The request is completed, canceled or running; the message says which.</exception>
    Task<HandlerRequest> ReExecuteAsync(Guid requestId, CancellationToken cancellationToken = default);

    /// <summary>Cancels a dead (or waiting) request: it will not run again.</summary>
    /// <param name="requestId">The request's id.</param>
    /// <param name="cancellationToken">Cancels the update.</param>
    /// <returns>The request as written.</returns>
    /// <exception cref="KeyNotFoundException">No request has this id.</exception>
    /// <exception cref="InvalidOperationException">The request is completed, canceled or running; the message says which.</exception>
    Task<HandlerRequest> CancelAsync(Guid requestId, CancellationToken cancellationToken = default);

    /// <summary>The event with this id.</summary>
    /// <param name="eventId">The event's id.</param>
    /// <param name="cancellationToken">Cancels the query.</param>
    /// <returns>The event, or <see langword="null"/> when there is none.</returns>
    Task<Event?> FindEventAsync(Guid eventId, CancellationToken cancellationToken = default);

    /// <summary>The handler request with this id.</summary>
    /// <param name="requestId">The request's id.</param>
    /// <param name="cancellationToken">Cancels the query.</param>
    /// <returns>The request, or <see langword="null"/> when there is none.</returns>
    Task<HandlerRequest?> FindRequestAsync(Guid requestId, CancellationToken cancellationToken = default);

    /// <summary>Every handler request (of every event, whatever its state), by event time then id.</summary>
    /// <param name="cancellationToken">Cancels the enumeration.</param>
    /// <returns>The requests.</returns>
    IAsyncEnumerable<HandlerRequest> GetRequestsAsync(CancellationToken cancellationToken = default);

    /// <summary>One page of the requests matching a filter, in event time then id order (keyset paged).</summary>
    /// <param name="filter">The filter; <see langword="null"/> for every request.</param>
    /// <param name="after">The cursor of the page before (its <see cref="RequestPage.Next"/>); <see langword="null"/> for the first.</param>
    /// <param name="limit">At most this many (at least 0).</param>
    /// <param name="cancellationToken">Cancels the query.</param>
    /// <returns>The page and the next page's cursor.</returns>
    /// <exception cref="ArgumentException">A name, the cursor or the limit is refused.</exception>
    Task<RequestPage> QueryRequestsAsync(
        RequestFilter? filter = null,
        string? after = null,
        int limit = 100,
        CancellationToken cancellationToken = default);

    /// <summary>Counts the requests matching a filter.</summary>
    /// <param name="filter">The filter; <see langword="null"/> for every request.</param>
    /// <param name="cancellationToken">Cancels the query.</param>
    /// <returns>The count.</returns>
    Task<long> CountRequestsAsync(RequestFilter? filter = null, CancellationToken cancellationToken = default);

    /// <summary>Requests per handler and status (pairs with none left out).</summary>
    /// <param name="cancellationToken">Cancels the query.</param>
    /// <returns>The counts, by handler then status.</returns>
    Task<IReadOnlyList<HandlerStatusCount>> GetCountsByHandlerAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Per handler with live requests or recent completions: runnable, backing off, running and dead requests, those
    /// completed within <paramref name="window"/> (the last hour when <see langword="null"/>) and the age of the
    /// oldest runnable one. Reads only live and recently completed requests.
    /// </summary>
    /// <param name="window">How far back completions count; positive.</param>
    /// <param name="cancellationToken">Cancels the query.</param>
    /// <returns>The overviews, by handler name.</returns>
    Task<IReadOnlyList<HandlerOverview>> GetHandlerOverviewAsync(TimeSpan? window = null, CancellationToken cancellationToken = default);

    /// <summary>An event with all its requests and their statuses: is it fully handled?</summary>
    /// <param name="eventId">The event's id.</param>
    /// <param name="cancellationToken">Cancels the query.</param>
    /// <returns>The details, or <see langword="null"/> when no event has this id.</returns>
    Task<EventDetails?> GetEventDetailsAsync(Guid eventId, CancellationToken cancellationToken = default);

    /// <summary>The dead requests matching a filter, grouped by the cause of their last error, largest group first.</summary>
    /// <param name="filter">The filter (its statuses are ignored: only dead requests); <see langword="null"/> for all.</param>
    /// <param name="cancellationToken">Cancels the scan.</param>
    /// <returns>The groups.</returns>
    Task<IReadOnlyList<TriageGroup>> TriageAsync(RequestFilter? filter = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Re-executes or cancels every request a filter (and optionally a triage group) selects, in chunks of short
    /// transactions that skip rows an executor holds; a dry run only counts. Resumable from the result's cursor.
    /// </summary>
    /// <param name="command">Re-execute or cancel.</param>
    /// <param name="request">The selection and how to run.</param>
    /// <param name="progress">Told after each chunk; may be <see langword="null"/>.</param>
    /// <param name="cancellationToken">Stops after the chunk in progress (chunks written stay written).</param>
    /// <returns>The counts and the cursor reached.</returns>
    Task<BulkResult> BulkAsync(
        BulkCommand command,
        BulkRequest request,
        IProgress<BulkResult>? progress = null,
        CancellationToken cancellationToken = default);

    /// <summary>
    /// Canary redrive: re-executes <paramref name="canaries"/> of the selection, waits up to <paramref name="wait"/> for
    /// them to finish, and re-executes the rest only if every canary completed.
    /// </summary>
    /// <param name="request">The selection (its <see cref="BulkRequest.DryRun"/> is ignored).</param>
    /// <param name="canaries">How many to try first (at least 1).</param>
    /// <param name="wait">How long to wait for the canaries.</param>
    /// <param name="cancellationToken">Cancels the redrive.</param>
    /// <returns>How it ended.</returns>
    Task<CanaryResult> CanaryRedriveAsync(
        BulkRequest request,
        int canaries,
        TimeSpan wait,
        CancellationToken cancellationToken = default);

    /// <summary>
    /// The stored items the store set aside, oldest first: rows it could not read (a hand-edited row, say) and
    /// events whose fan-out kept failing on their own. They are in no claim, gauge or page until restored.
    /// </summary>
    /// <param name="cancellationToken">Cancels the query.</param>
    /// <returns>The items; empty for a store that sets nothing aside.</returns>
    Task<IReadOnlyList<SetAsideItem>> GetSetAsideItemsAsync(CancellationToken cancellationToken = default);

    /// <summary>Puts a set-aside item back once what was wrong with it is fixed: it is claimed again.</summary>
    /// <param name="kind">An event or a handler request.</param>
    /// <param name="id">Its id.</param>
    /// <param name="cancellationToken">Cancels the command.</param>
    /// <returns>Whether it was set aside.</returns>
    Task<bool> RestoreSetAsideItemAsync(SetAsideKind kind, Guid id, CancellationToken cancellationToken = default);
}

/// <summary>What kind of stored item was set aside.</summary>
public enum SetAsideKind
{
    /// <summary>An event.</summary>
    Event,

    /// <summary>A handler request.</summary>
    Request,
}

/// <summary>A stored item the store set aside, with the reason and its stored text as found.</summary>
/// <param name="Kind">An event or a handler request.</param>
/// <param name="Id">Its id.</param>
/// <param name="Reason">Why it was set aside.</param>
/// <param name="Stored">Its stored text (JSON), as found.</param>
public sealed record SetAsideItem(SetAsideKind Kind, Guid Id, string Reason, string Stored);

/// <summary>A filter and a page over dead requests. Empty name lists mean no filter on that field.</summary>
public sealed record DeadRequestQuery
{
    /// <summary>Only requests of these events (any when empty).</summary>
    public IReadOnlyCollection<string> EventNames { get; init; } = [];

    /// <summary>Only requests of these handlers (any when empty).</summary>
    public IReadOnlyCollection<string> HandlerNames { get; init; } = [];

    /// <summary>At most this many (at least 0; default 100).</summary>
    public int Limit { get; init; } = DeadRequestQueryModule.all.Limit;

    /// <summary>Skip this many first (at least 0; default 0).</summary>
    public int Offset { get; init; } = DeadRequestQueryModule.all.Offset;
}

/// <summary>A page of dead requests, and the count of all that match the query.</summary>
public sealed class DeadRequestPage
{
    internal DeadRequestPage(long total, IReadOnlyList<HandlerRequest> requests)
    {
        Total = total;
        Requests = requests;
    }

    /// <summary>Dead requests matching the filters, over all pages.</summary>
    public long Total { get; }

    /// <summary>This page, ordered by event time then id.</summary>
    public IReadOnlyList<HandlerRequest> Requests { get; }
}

/// <summary>The distinct event names and handler names among dead requests.</summary>
public sealed class DeadRequestNames
{
    internal DeadRequestNames(IReadOnlyList<string> eventNames, IReadOnlyList<string> handlerNames)
    {
        EventNames = eventNames;
        HandlerNames = handlerNames;
    }

    /// <summary>The event names, sorted.</summary>
    public IReadOnlyList<string> EventNames { get; }

    /// <summary>The handler names, sorted.</summary>
    public IReadOnlyList<string> HandlerNames { get; }
}

/// <summary>The store's gauges at one moment (the same the <c>*.count</c> and <c>*.max_age</c> metrics publish).</summary>
public sealed class EventsStatistics
{
    internal EventsStatistics(DateTimeOffset at, StoreStats stats)
    {
        At = at;
        UnprocessedEvents = stats.UnprocessedEvents;
        OldestUnprocessedEvent = stats.OldestUnprocessedEvent.ToNullable();
        RunnableRequests = stats.RunnableRequests;
        OldestRunnableRequest = stats.OldestRunnableRequest.ToNullable();
        DeadRequests = stats.DeadRequests;
    }

    /// <summary>When the gauges were read.</summary>
    public DateTimeOffset At { get; }

    /// <summary>Events not processed yet.</summary>
    public long UnprocessedEvents { get; }

    /// <summary>The timestamp of the oldest unprocessed event; <see langword="null"/> when there is none.</summary>
    public DateTimeOffset? OldestUnprocessedEvent { get; }

    /// <summary>The age of the oldest unprocessed event at <see cref="At"/>; zero when there is none.</summary>
    public TimeSpan OldestUnprocessedEventAge => Age(OldestUnprocessedEvent);

    /// <summary>Handler requests runnable now (the Go framework's "unexecuted").</summary>
    public long RunnableRequests { get; }

    /// <summary>The event timestamp of the oldest runnable request; <see langword="null"/> when there is none.</summary>
    public DateTimeOffset? OldestRunnableRequest { get; }

    /// <summary>The age of the oldest runnable request's event at <see cref="At"/>; zero when there is none.</summary>
    public TimeSpan OldestRunnableRequestAge => Age(OldestRunnableRequest);

    /// <summary>Dead handler requests.</summary>
    public long DeadRequests { get; }

    private TimeSpan Age(DateTimeOffset? oldest) =>
        oldest is { } time && At > time ? At - time : TimeSpan.Zero;

    /// <inheritdoc/>
    public override string ToString() =>
        $"unprocessed {UnprocessedEvents} (oldest {OldestUnprocessedEventAge.TotalSeconds:0.0}s), " +
        $"unexecuted {RunnableRequests} (oldest {OldestRunnableRequestAge.TotalSeconds:0.0}s), dead {DeadRequests}";
}
