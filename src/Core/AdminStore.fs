namespace Events.Core

open System
open System.Threading
open System.Threading.Tasks

/// Where a handler request stands, as a person asks for it: the core's `RequestState`, with a runnable
/// request split into one runnable now and one waiting out a backoff.
[<RequireQualifiedAccess>]
type RequestStatus =
    /// Waiting to run, and any backoff has passed.
    | Runnable
    /// Waiting out a backoff after a failed attempt.
    | BackingOff
    /// A worker holds it and runs its handler.
    | Running
    /// Its handler succeeded.
    | Completed
    /// It failed MaxErrors times.
    | Dead
    /// A person canceled it.
    | Canceled

/// A filter over handler requests. Every field narrows the selection; an empty list or `None` does
/// not filter on that field.
type RequestFilter =
    {
        /// Only requests in one of these statuses.
        Statuses: RequestStatus list
        /// Only requests of these handlers.
        HandlerNames: HandlerName list
        /// Only requests of these events (by name).
        EventNames: EventName list
        /// Only the requests of this event.
        EventId: Guid option
        /// Only requests whose event happened at or after this time.
        From: DateTimeOffset option
        /// Only requests whose event happened before this time.
        Until: DateTimeOffset option
        /// Only requests whose last error contains this text (ignoring case).
        ErrorContains: string option
    }

/// A place in the order of requests (event time, then id): a page starts after it.
type RequestCursor =
    {
        /// The event time of the last request seen.
        EventTimestamp: DateTimeOffset
        /// The id of the last request seen.
        Id: Guid
    }

/// One page of requests matching a filter, in event time then id order.
type RequestPage =
    {
        /// This page.
        Requests: HandlerRequest list
        /// Where the next page starts; none when this page is the last.
        Next: RequestCursor option
    }

/// How many requests of one handler are in one status.
type HandlerStatusCount =
    {
        /// The handler.
        HandlerName: HandlerName
        /// The status.
        Status: RequestStatus
        /// The count (never 0).
        Count: int64
    }

/// One handler at a glance: its live requests by status, how many completed since a time, and the
/// event time of its oldest runnable request.
type HandlerOverview =
    {
        /// The handler.
        HandlerName: HandlerName
        /// Requests runnable now.
        Runnable: int64
        /// Requests waiting out a backoff.
        BackingOff: int64
        /// Requests a worker holds.
        Running: int64
        /// Dead requests.
        Dead: int64
        /// Requests completed at or after the `since` asked for.
        CompletedSince: int64
        /// The event timestamp of the oldest request runnable now; none when none is.
        OldestRunnable: DateTimeOffset option
    }

/// What became of one request of a bulk change.
[<RequireQualifiedAccess>]
type BulkItemResult =
    /// The transition was applied and written; the request as written.
    | Updated of HandlerRequest
    /// The core refused the transition (the request changed since it was selected, say).
    | Refused of RequestError
    /// Another transaction held the row (an executor claiming or finishing it): left as it was.
    | Locked
    /// No request has this id.
    | NotFound

/// The administration port: what a person needs to find, count and change handler requests. The
/// engine never calls it; a store implements it beside `IEventStore`. Changes are the core's
/// transitions, applied by the store while it holds the row.
type IAdminStore =
    /// Requests matching the filter at `now` (which splits runnable from backing off), at most `limit`,
    /// after the cursor (from the first when none), in event time then id order.
    abstract QueryRequestsAsync:
        filter: RequestFilter *
        now: DateTimeOffset *
        after: RequestCursor option *
        limit: int *
        cancellationToken: CancellationToken ->
            Task<RequestPage>

    /// How many requests match the filter at `now`.
    abstract CountRequestsAsync:
        filter: RequestFilter * now: DateTimeOffset * cancellationToken: CancellationToken -> Task<int64>

    /// Requests per handler and status at `now` (pairs with no request are left out), by handler name
    /// then status; completed and canceled ones only when `includeFinished` (on PostgreSQL those are
    /// counted by reading the whole table, the others through the partial indexes of live requests).
    abstract CountByHandlerAsync:
        now: DateTimeOffset * includeFinished: bool * cancellationToken: CancellationToken ->
            Task<HandlerStatusCount list>

    /// One row per handler with a live request (runnable, backing off, running or dead) or one completed
    /// at or after `since`, by handler name; statuses at `now` (on PostgreSQL through the partial indexes
    /// of live requests and the index of completion times, never the whole table).
    abstract OverviewAsync:
        now: DateTimeOffset * since: DateTimeOffset * cancellationToken: CancellationToken -> Task<HandlerOverview list>

    /// The requests with these ids that exist, in the order of the ids.
    abstract FindRequestsAsync: ids: Guid list * cancellationToken: CancellationToken -> Task<HandlerRequest list>

    /// The event with this id, if any.
    abstract FindEventAsync: id: Guid * cancellationToken: CancellationToken -> Task<Event option>

    /// Dead requests matching the query, one page.
    abstract DeadRequestsAsync: query: DeadRequestQuery * cancellationToken: CancellationToken -> Task<DeadRequestPage>

    /// The distinct event names and handler names among dead requests, sorted.
    abstract DeadRequestNamesAsync: cancellationToken: CancellationToken -> Task<EventName list * HandlerName list>

    /// Applies a core transition to the request with this id, atomically (read, decide, write), and
    /// returns the request as written. The transition must be pure: a store may run it more than once
    /// (after a conflicting write) or while it holds a row lock.
    abstract UpdateRequestAsync:
        id: Guid *
        transition: (HandlerRequest -> Result<HandlerRequest, RequestError>) *
        cancellationToken: CancellationToken ->
            Task<Result<HandlerRequest, AdminError>>

    /// Applies a core transition to each request named, in one short transaction that locks only rows
    /// no other transaction holds (a held row is reported `Locked` and left alone, never waited for).
    /// One result per id, in order. The transition must be pure.
    abstract UpdateRequestsAsync:
        ids: Guid list *
        transition: (HandlerRequest -> Result<HandlerRequest, RequestError>) *
        cancellationToken: CancellationToken ->
            Task<BulkItemResult list>

/// The statuses and filters every store agrees with.
[<RequireQualifiedAccess>]
module RequestStatus =

    /// Every status, in the order counts are listed.
    let all =
        [
            RequestStatus.Runnable
            RequestStatus.BackingOff
            RequestStatus.Running
            RequestStatus.Completed
            RequestStatus.Dead
            RequestStatus.Canceled
        ]

    /// The status of a request at `now`.
    let ofRequest (now: DateTimeOffset) (request: HandlerRequest) : RequestStatus =
        match request.State with
        | RequestState.Runnable(Some until) when until > now -> RequestStatus.BackingOff
        | RequestState.Runnable _ -> RequestStatus.Runnable
        | RequestState.Running _ -> RequestStatus.Running
        | RequestState.Completed _ -> RequestStatus.Completed
        | RequestState.Dead -> RequestStatus.Dead
        | RequestState.Canceled _ -> RequestStatus.Canceled

    /// The status's name, in lower case with dashes ("backing-off").
    let name (status: RequestStatus) =
        match status with
        | RequestStatus.Runnable -> "runnable"
        | RequestStatus.BackingOff -> "backing-off"
        | RequestStatus.Running -> "running"
        | RequestStatus.Completed -> "completed"
        | RequestStatus.Dead -> "dead"
        | RequestStatus.Canceled -> "canceled"

    /// The status a name (as `name` writes it, any case; "backingoff" also) stands for.
    let tryParse (text: string) : RequestStatus option =
        if isNull text then
            None
        else
            let key = text.Trim().ToLowerInvariant().Replace("-", "").Replace("_", "")

            all |> List.tryFind (fun status -> (name status).Replace("-", "") = key)

/// Filters over requests.
[<RequireQualifiedAccess>]
module RequestFilter =

    /// Every request.
    let all =
        {
            Statuses = []
            HandlerNames = []
            EventNames = []
            EventId = None
            From = None
            Until = None
            ErrorContains = None
        }

    /// Every dead request.
    let dead =
        { all with
            Statuses = [ RequestStatus.Dead ]
        }

    /// Whether a request matches the filter at `now`.
    let matches (now: DateTimeOffset) (filter: RequestFilter) (request: HandlerRequest) : bool =
        (List.isEmpty filter.Statuses
         || List.contains (RequestStatus.ofRequest now request) filter.Statuses)
        && (List.isEmpty filter.HandlerNames
            || List.contains request.HandlerName filter.HandlerNames)
        && (List.isEmpty filter.EventNames
            || List.contains request.EventName filter.EventNames)
        && (filter.EventId |> Option.forall (fun id -> id = request.EventId))
        && (filter.From |> Option.forall (fun from -> request.EventTimestamp >= from))
        && (filter.Until |> Option.forall (fun until -> request.EventTimestamp < until))
        && (filter.ErrorContains
            |> Option.forall (fun text ->
                match request.LastError with
                | Some error -> error.Contains(text, StringComparison.OrdinalIgnoreCase)
                | None -> false))

    /// Refuses null lists (from C# callers) and an empty error text.
    let validate (filter: RequestFilter) : RequestFilter =
        if isNull (box filter) then
            nullArg (nameof filter)

        if
            isNull (box filter.Statuses)
            || isNull (box filter.HandlerNames)
            || isNull (box filter.EventNames)
        then
            invalidArg (nameof filter) "the filter's lists must not be null"

        match filter.ErrorContains with
        | Some text when String.IsNullOrEmpty text ->
            invalidArg (nameof filter) "ErrorContains must not be empty (use None for any error)"
        | _ -> ()

        filter

    /// Refuses a negative page size.
    let checkLimit (limit: int) =
        if limit < 0 then
            invalidArg (nameof limit) $"the limit must not be negative, got %d{limit}"

/// Handler overviews.
[<RequireQualifiedAccess>]
module HandlerOverview =

    /// The overview of requests at `now`, completions counted from `since`: what every store returns.
    let ofRequests (now: DateTimeOffset) (since: DateTimeOffset) (requests: HandlerRequest seq) =
        requests
        |> Seq.groupBy _.HandlerName
        |> Seq.map (fun (handlerName, requests) ->
            let statuses =
                requests |> Seq.map (fun r -> r, RequestStatus.ofRequest now r) |> List.ofSeq

            let count status =
                statuses |> List.filter (fun (_, s) -> s = status) |> List.length |> int64

            let completedSince =
                statuses
                |> List.filter (fun (r, _) ->
                    match r.State with
                    | RequestState.Completed at -> at >= since
                    | _ -> false)
                |> List.length
                |> int64

            let oldest =
                statuses
                |> List.filter (fun (_, s) -> s = RequestStatus.Runnable)
                |> List.map (fun (r, _) -> r.EventTimestamp)
                |> List.sort
                |> List.tryHead

            {
                HandlerName = handlerName
                Runnable = count RequestStatus.Runnable
                BackingOff = count RequestStatus.BackingOff
                Running = count RequestStatus.Running
                Dead = count RequestStatus.Dead
                CompletedSince = completedSince
                OldestRunnable = oldest
            })
        |> Seq.filter (fun o -> o.Runnable + o.BackingOff + o.Running + o.Dead + o.CompletedSince > 0L)
        |> Seq.sortBy _.HandlerName
        |> List.ofSeq

/// Cursors over requests.
[<RequireQualifiedAccess>]
module RequestCursor =

    /// The cursor just after a request.
    let ofRequest (request: HandlerRequest) =
        {
            EventTimestamp = request.EventTimestamp
            Id = request.Id
        }

    /// Whether the request comes after the cursor in event time then id order.
    let isAfter (cursor: RequestCursor option) (request: HandlerRequest) =
        match cursor with
        | None -> true
        | Some cursor ->
            request.EventTimestamp > cursor.EventTimestamp
            || (request.EventTimestamp = cursor.EventTimestamp
                && request.Id.CompareTo cursor.Id > 0)

    /// The cursor as text ("<ticks>.<id>"), for a command line or a URL.
    let format (cursor: RequestCursor) =
        $"%d{cursor.EventTimestamp.UtcTicks}.%O{cursor.Id}"

    /// Reads a cursor `format` wrote.
    let tryParse (text: string) : RequestCursor option =
        if isNull text then
            None
        else
            match text.Split '.' with
            | [| ticks; id |] ->
                match Int64.TryParse ticks, Guid.TryParse id with
                | (true, ticks), (true, id) when ticks >= 0L && ticks <= DateTimeOffset.MaxValue.UtcTicks ->
                    Some
                        {
                            EventTimestamp = DateTimeOffset(ticks, TimeSpan.Zero)
                            Id = id
                        }
                | _ -> None
            | _ -> None
