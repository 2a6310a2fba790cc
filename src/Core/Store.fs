namespace Events.Core

open System
open System.Collections.Generic
open System.Threading
open System.Threading.Tasks

/// An unprocessed event held by one processor until `Until`, named by `Token`.
type ClaimedEvent =
    {
        /// The event as stored.
        Event: Event
        /// Names this claim; the processing commit must carry it.
        Token: Guid
        /// When the claim lapses and another processor may take the event.
        Until: DateTimeOffset
    }

/// The fan-out of one claimed event, to be committed atomically: its requests created and the event
/// marked processed at `ProcessedAt`, only if the claim named by `Token` still holds the event.
type ProcessedEvent =
    {
        /// The event's id.
        EventId: Guid
        /// The claim's token.
        Token: Guid
        /// When the event was processed.
        ProcessedAt: DateTimeOffset
        /// One new request per configured handler (none when the event has no handler).
        Requests: HandlerRequest list
    }

/// Why a processing commit was refused.
[<RequireQualifiedAccess>]
type ProcessError =
    /// The event is gone from the store.
    | EventNotFound
    /// The event was processed already (by this or another processor).
    | AlreadyProcessed
    /// The claim no longer holds the event: it lapsed or was released (and another processor may hold it).
    | StaleClaim

    /// A sentence that says why.
    member this.Message =
        match this with
        | EventNotFound -> "the event is not in the store"
        | AlreadyProcessed -> "the event was processed already"
        | StaleClaim ->
            "the claim no longer holds the event (it lapsed or was released, and may be held by another processor)"

/// Store-specific work a handler did (a Marten session's changes, say), committed with its request's
/// outcome in one transaction, or discarded when the outcome is refused.
type IHandlerTransaction =
    inherit IAsyncDisposable

    /// Whether the handler recorded anything to commit.
    abstract HasChanges: bool

/// The outcome of one attempt, to be written only while the attempt's token is the request's.
type OutcomeWrite =
    {
        /// The request after the core's transition.
        Request: HandlerRequest
        /// The token of the attempt the outcome belongs to.
        Token: Guid
        /// Work the handler did in the store's transaction, if any.
        Transaction: IHandlerTransaction option
    }

/// What a request claim found: the requests now held for this worker, and the requests whose lease
/// had run out and were recovered (each counted as one failed attempt, so some may now be dead).
type RequestClaim =
    {
        /// Requests in the Running state, each with a fresh lease and token, in the core's run order.
        Claimed: HandlerRequest list
        /// Requests whose lapsed lease was recorded as a failed attempt.
        Recovered: HandlerRequest list
    }

/// Gauges a store answers cheaply.
type StoreStats =
    {
        /// Events not processed yet.
        UnprocessedEvents: int64
        /// The timestamp of the oldest unprocessed event.
        OldestUnprocessedEvent: DateTimeOffset option
        /// Requests runnable now.
        RunnableRequests: int64
        /// The event timestamp of the oldest runnable request.
        OldestRunnableRequest: DateTimeOffset option
        /// Dead requests.
        DeadRequests: int64
    }

/// A filter and a page over dead requests. Empty name lists mean no filter on that field.
type DeadRequestQuery =
    {
        /// Only requests of these events (any when empty).
        EventNames: EventName list
        /// Only requests of these handlers (any when empty).
        HandlerNames: HandlerName list
        /// At most this many (at least 0).
        Limit: int
        /// Skip this many first (at least 0).
        Offset: int
    }

/// A page of dead requests, ordered by event time then id, and the count of all that match.
type DeadRequestPage =
    {
        /// Dead requests matching the filter (all pages).
        Total: int64
        /// This page.
        Requests: HandlerRequest list
    }

/// Why a change to a request by id was refused.
[<RequireQualifiedAccess>]
type AdminError =
    /// No request has this id.
    | RequestNotFound of Guid
    /// The core refused the transition.
    | Refused of RequestError

    /// A sentence that says why.
    member this.Message =
        match this with
        | RequestNotFound id -> $"no handler request has id %O{id}"
        | Refused error -> error.Message

/// What new work a store signals.
[<RequireQualifiedAccess>]
type WorkSignal =
    /// New events were appended.
    | EventsAppended
    /// New handler requests were created (by a processing commit), or a request was made runnable by an
    /// administrative update (re-execute). Backoffs that end and recovered leases raise nothing: the
    /// executor's polling interval finds those.
    | RequestsReady

/// The engine's port, which every store implements: what the processor and the executor need, in
/// batches, safe for many processes sharing one database (administration is `IAdminStore`). Stores
/// persist states; the core decides them.
type IEventStore =
    /// Appends events (assigning each a correlation id unless it has one) and returns them as stored,
    /// one per event given, in order. An event whose deduplication key is stored already (or held by
    /// an earlier event of the batch) is not stored: the stored event with that key is returned in its
    /// place (see `Event.isDuplicateOf`). A bad key refuses the batch with an `ArgumentException`.
    abstract AppendAsync: events: Event list * cancellationToken: CancellationToken -> Task<Event list>

    /// Claims up to `limit` unprocessed events, oldest first, each for `leaseFor` from `now`. A claimed
    /// event is not handed to another claimer while its claim holds.
    abstract ClaimEventsAsync:
        limit: int * now: DateTimeOffset * leaseFor: TimeSpan * cancellationToken: CancellationToken ->
            Task<ClaimedEvent list>

    /// Commits each event's fan-out atomically (its requests created and the event marked processed),
    /// refusing those whose claim no longer holds. One result per item, in order.
    abstract CommitProcessingAsync:
        processed: ProcessedEvent list * cancellationToken: CancellationToken -> Task<Result<unit, ProcessError> list>

    /// Gives claimed events back unprocessed (their processing failed), so they can be claimed again.
    abstract ReleaseEventsAsync: claims: ClaimedEvent list * cancellationToken: CancellationToken -> Task<unit>

    /// Recovers requests whose lease ran out by `now` (the core's `ExpireLease`), then claims up to
    /// `limit` runnable requests in the core's run order, each for `leaseFor` with a fresh token.
    abstract ClaimRequestsAsync:
        limit: int * now: DateTimeOffset * leaseFor: TimeSpan * cancellationToken: CancellationToken ->
            Task<RequestClaim>

    /// Writes attempts' outcomes, each only if its token is still the request's (else `StaleToken`).
    /// One result per item, in order.
    abstract RecordOutcomesAsync:
        outcomes: OutcomeWrite list * cancellationToken: CancellationToken -> Task<Result<unit, RequestError> list>

    /// Renews the leases of running attempts, each named by (request id, token), until `until` (the
    /// core's `Renew`: a heartbeat while their handlers run, so that no other worker recovers them). A
    /// lease never shortens. Each renewal is applied only while its token is still the request's; a
    /// refusal (`StaleToken`, `NotRunning` also for an unknown request, `AlreadyCompleted`,
    /// `AlreadyCanceled`) means the attempt lost its claim. One result per item, in order.
    abstract RenewLeasesAsync:
        renewals: (Guid * Guid) list * until: DateTimeOffset * cancellationToken: CancellationToken ->
            Task<Result<unit, RequestError> list>

    /// A transaction a handler may use for its own work, committed with its outcome; none when the
    /// store has no such thing. Opened lazily, only when a handler asks for it.
    abstract BeginHandlerTransaction: request: HandlerRequest -> IHandlerTransaction option

    /// The event with this id, if any.
    abstract FindEventAsync: id: Guid * cancellationToken: CancellationToken -> Task<Event option>

    /// The request with this id, if any.
    abstract FindRequestAsync: id: Guid * cancellationToken: CancellationToken -> Task<HandlerRequest option>

    /// Every event, oldest first.
    abstract EventsAsync: cancellationToken: CancellationToken -> IAsyncEnumerable<Event>

    /// Every request, by event time then id.
    abstract RequestsAsync: cancellationToken: CancellationToken -> IAsyncEnumerable<HandlerRequest>

    /// The gauges at `now`.
    abstract StatsAsync: now: DateTimeOffset * cancellationToken: CancellationToken -> Task<StoreStats>

    /// Raised when new work arrives (in this process, or in another through the database).
    [<CLIEvent>]
    abstract WorkArrived: IEvent<WorkSignal>

/// Checks on queries, shared by every store.
[<RequireQualifiedAccess>]
module DeadRequestQuery =

    /// Every dead request, first page of 100.
    let all =
        {
            EventNames = []
            HandlerNames = []
            Limit = 100
            Offset = 0
        }

    /// Whether a dead request matches the query's filters (not its paging).
    let matches (query: DeadRequestQuery) (request: HandlerRequest) =
        HandlerRequest.isDead request
        && (List.isEmpty query.EventNames
            || List.contains request.EventName query.EventNames)
        && (List.isEmpty query.HandlerNames
            || List.contains request.HandlerName query.HandlerNames)

    /// Refuses a negative limit or offset.
    let validate (query: DeadRequestQuery) : DeadRequestQuery =
        if query.Limit < 0 then
            invalidArg (nameof query) $"Limit must not be negative, got %d{query.Limit}"

        if query.Offset < 0 then
            invalidArg (nameof query) $"Offset must not be negative, got %d{query.Offset}"

        query

/// Argument checks every store applies at its boundary, so all stores refuse the same calls.
[<RequireQualifiedAccess>]
module StoreArguments =

    /// Refuses a negative limit and a lease that is not positive.
    let checkClaim (limit: int) (leaseFor: TimeSpan) =
        if limit < 0 then
            invalidArg (nameof limit) $"the limit must not be negative, got %d{limit}"

        if leaseFor <= TimeSpan.Zero then
            invalidArg (nameof leaseFor) $"a lease must be positive, got %O{leaseFor}"

    /// Refuses a null list (from C# callers).
    let checkList (name: string) (items: 'item list) =
        if isNull (box items) then
            nullArg name

/// What every store does to the events it is given before storing them.
[<RequireQualifiedAccess>]
module StoredEvent =

    /// The event with a correlation id (a new UUIDv7) unless it has one.
    let withCorrelationId (event: Event) : Event =
        match event.CorrelationId with
        | Some _ -> event
        | None ->
            { event with
                CorrelationId = Some(Guid.CreateVersion7())
            }
