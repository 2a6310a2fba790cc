namespace Events.Core

open System
open System.Collections.Generic
open System.Threading
open System.Threading.Tasks

/// Dead requests that failed for one cause (one error fingerprint).
type TriageGroup =
    {
        /// The cause.
        Fingerprint: ErrorFingerprint
        /// How many dead requests it holds.
        Count: int64
        /// The handlers among them, sorted.
        HandlerNames: HandlerName list
        /// The event names among them, sorted.
        EventNames: EventName list
        /// When the earliest of them last failed.
        FirstSeen: DateTimeOffset
        /// When the latest of them last failed.
        LastSeen: DateTimeOffset
        /// One of them, as an example.
        Sample: HandlerRequest
    }

/// An event with every request it fanned out to.
type EventDetails =
    {
        /// The event.
        Event: Event
        /// Its requests, with their statuses at the time asked, by handler name.
        Requests: (HandlerRequest * RequestStatus) list
        /// Whether the event is processed and every request completed or canceled: nothing is left to do.
        FullyHandled: bool
    }

/// What a bulk change does to each request it selects.
[<RequireQualifiedAccess>]
type BulkCommand =
    /// Runs the request again from zero errors (the core's `ReExecute`).
    | ReExecute
    /// Cancels the request (the core's `Cancel`).
    | Cancel

/// Which requests a bulk change selects: those matching a filter, optionally only those whose last
/// error has this fingerprint (a triage group's `Fingerprint.Id`).
type BulkSelection =
    {
        /// The requests.
        Filter: RequestFilter
        /// Only those whose last error has this fingerprint id.
        Fingerprint: string option
    }

/// How a bulk change runs.
type BulkOptions =
    {
        /// Requests changed per transaction (at least 1).
        ChunkSize: int
        /// Only count what would be changed.
        DryRun: bool
        /// Start after this cursor (to resume a run that stopped: its last progress's `Cursor`).
        After: RequestCursor option
        /// Change at most this many.
        Limit: int64 option
    }

/// Where a bulk change stands.
type BulkProgress =
    {
        /// Requests selected so far (on a dry run: all that match).
        Selected: int64
        /// Requests changed.
        Updated: int64
        /// Requests the core refused to change (they changed since they were selected).
        Refused: int64
        /// Requests another transaction held (an executor working on them): left alone; run again to retry.
        Locked: int64
        /// Everything up to here has been looked at: pass it as `After` to resume.
        Cursor: RequestCursor option
        /// Whether the run got to the end of the selection (or its limit).
        Finished: bool
        /// The ids changed, in order (the canary's).
        UpdatedIds: Guid list
    }

/// How a canary redrive ended.
[<RequireQualifiedAccess>]
type CanaryOutcome =
    /// Every canary completed; the rest were re-executed.
    | Succeeded of canaries: Guid list * rest: BulkProgress
    /// A canary failed again (these, as they are now); the rest were left dead.
    | Failed of canaries: HandlerRequest list
    /// The canaries had not all finished in time; the rest were left dead.
    | Undecided of canaries: HandlerRequest list
    /// Nothing matched the selection.
    | NothingSelected

/// Administration: queries, triage, bulk changes and canary redrives over the administration port.
/// Every change is the core's transition, applied by the store while it holds the row.
[<RequireQualifiedAccess>]
module Administration =

    /// Requests read per page by triage and bulk changes.
    [<Literal>]
    let ScanPageSize = 1000

    /// Defaults: chunks of 500, not a dry run, from the start, no limit.
    let defaultBulkOptions =
        {
            ChunkSize = 500
            DryRun = false
            After = None
            Limit = None
        }

    /// The core's command for a bulk command at `now`.
    let command (now: DateTimeOffset) (bulk: BulkCommand) =
        match bulk with
        | BulkCommand.ReExecute -> RequestCommand.ReExecute
        | BulkCommand.Cancel -> RequestCommand.Cancel now

    /// The transition a bulk command applies to a request (with the request's own backoff policy).
    let transition (now: DateTimeOffset) (bulk: BulkCommand) (request: HandlerRequest) =
        HandlerRequest.transition request.Backoff (command now bulk) request

    /// Re-executes the request with this id (the core's `ReExecute`): runnable again from zero errors.
    let reExecuteAsync (store: IAdminStore) (id: Guid) (cancellationToken: CancellationToken) =
        store.UpdateRequestAsync(
            id,
            HandlerRequest.transition BackoffPolicy.Default RequestCommand.ReExecute,
            cancellationToken
        )

    /// Cancels the request with this id at `now` (the core's `Cancel`).
    let cancelAsync (store: IAdminStore) (id: Guid) (now: DateTimeOffset) (cancellationToken: CancellationToken) =
        store.UpdateRequestAsync(
            id,
            HandlerRequest.transition BackoffPolicy.Default (RequestCommand.Cancel now),
            cancellationToken
        )

    let private scan
        (store: IAdminStore)
        (filter: RequestFilter)
        (now: DateTimeOffset)
        (after: RequestCursor option)
        (pageSize: int)
        (visit: HandlerRequest list -> RequestCursor option -> Task<bool>)
        (cancellationToken: CancellationToken)
        =
        task {
            let mutable cursor = after
            let mutable going = true

            while going do
                cancellationToken.ThrowIfCancellationRequested()

                let! page =
                    store.QueryRequestsAsync(filter, now, cursor, pageSize, cancellationToken)

                let next = page.Next |> Option.orElse cursor
                let! goOn = visit page.Requests next
                cursor <- next
                going <- goOn && page.Next.IsSome
        }

    /// One page of requests matching the filter at `now`.
    let queryAsync store filter now after limit cancellationToken : Task<RequestPage> =
        let filter = RequestFilter.validate filter
        RequestFilter.checkLimit limit
        (store: IAdminStore).QueryRequestsAsync(filter, now, after, limit, cancellationToken)

    /// An event with all its requests and their statuses at `now`; none when no event has this id.
    let eventDetailsAsync (store: IAdminStore) (eventId: Guid) (now: DateTimeOffset) cancellationToken =
        task {
            match! store.FindEventAsync(eventId, cancellationToken) with
            | None -> return None
            | Some event ->
                let requests = ResizeArray()

                do!
                    scan
                        store
                        { RequestFilter.all with
                            EventId = Some eventId
                        }
                        now
                        None
                        ScanPageSize
                        (fun page _ ->
                            requests.AddRange page
                            Task.FromResult true)
                        cancellationToken

                let requests =
                    requests
                    |> Seq.sortBy (fun request -> request.HandlerName)
                    |> Seq.map (fun request -> request, RequestStatus.ofRequest now request)
                    |> List.ofSeq

                return
                    Some
                        {
                            Event = event
                            Requests = requests
                            FullyHandled =
                                event.ProcessedAt.IsSome
                                && requests |> List.forall (fun (request, _) -> HandlerRequest.isTerminal request)
                        }
        }

    /// Groups the dead requests matching the filter (statuses aside: only dead ones) by the fingerprint
    /// of their last error, largest group first.
    let triageAsync (store: IAdminStore) (filter: RequestFilter) (now: DateTimeOffset) cancellationToken =
        let filter =
            { RequestFilter.validate filter with
                Statuses = [ RequestStatus.Dead ]
            }

        task {
            let groups = Dictionary<string, TriageGroup>()

            let seen (request: HandlerRequest) =
                defaultArg request.LastAttemptAt request.EventTimestamp

            let add (request: HandlerRequest) =
                let fingerprint = ErrorFingerprint.ofError (defaultArg request.LastError "")
                let at = seen request

                match groups.TryGetValue fingerprint.Id with
                | true, group ->
                    groups[fingerprint.Id] <-
                        { group with
                            Count = group.Count + 1L
                            HandlerNames =
                                if List.contains request.HandlerName group.HandlerNames then
                                    group.HandlerNames
                                else
                                    List.sort (request.HandlerName :: group.HandlerNames)
                            EventNames =
                                if List.contains request.EventName group.EventNames then
                                    group.EventNames
                                else
                                    List.sort (request.EventName :: group.EventNames)
                            FirstSeen = min group.FirstSeen at
                            LastSeen = max group.LastSeen at
                        }
                | false, _ ->
                    groups[fingerprint.Id] <-
                        {
                            Fingerprint = fingerprint
                            Count = 1L
                            HandlerNames = [ request.HandlerName ]
                            EventNames = [ request.EventName ]
                            FirstSeen = at
                            LastSeen = at
                            Sample = request
                        }

            do!
                scan
                    store
                    filter
                    now
                    None
                    ScanPageSize
                    (fun page _ ->
                        List.iter add page
                        Task.FromResult true)
                    cancellationToken

            return
                groups.Values
                |> Seq.sortBy (fun group -> -group.Count, group.Fingerprint.Id)
                |> List.ofSeq
        }

    let private checkOptions (options: BulkOptions) =
        if options.ChunkSize < 1 then
            invalidArg (nameof options) $"ChunkSize must be at least 1, got %d{options.ChunkSize}"

        match options.Limit with
        | Some limit when limit < 0L -> invalidArg (nameof options) $"Limit must not be negative, got %d{limit}"
        | _ -> ()

    let private selects (selection: BulkSelection) (request: HandlerRequest) =
        match selection.Fingerprint with
        | None -> true
        | Some id ->
            match request.LastError with
            | Some error -> (ErrorFingerprint.ofError error).Id = id
            | None -> false

    /// Applies a bulk command to the requests selected at `now`, in chunks of `ChunkSize` (each its own
    /// short transaction, locking only rows no executor holds), calling `progress` after each chunk.
    /// A dry run only counts them. Stopping (a failure, cancellation) leaves every chunk written so far
    /// written and nothing else: resume from the last progress's `Cursor`.
    let bulkAsync
        (store: IAdminStore)
        (selection: BulkSelection)
        (bulk: BulkCommand)
        (now: DateTimeOffset)
        (options: BulkOptions)
        (progress: BulkProgress -> unit)
        (cancellationToken: CancellationToken)
        : Task<BulkProgress> =
        let filter = RequestFilter.validate selection.Filter
        let selection = { selection with Filter = filter }
        checkOptions options

        task {
            let mutable state =
                {
                    Selected = 0L
                    Updated = 0L
                    Refused = 0L
                    Locked = 0L
                    Cursor = options.After
                    Finished = false
                    UpdatedIds = []
                }

            let updatedIds = ResizeArray<Guid>()
            let limit = defaultArg options.Limit Int64.MaxValue

            if options.DryRun && selection.Fingerprint.IsNone && options.After.IsNone then
                let! count = store.CountRequestsAsync(filter, now, cancellationToken)

                state <-
                    { state with
                        Selected = min count limit
                        Finished = true
                    }
            else
                let pageSize = if options.DryRun then ScanPageSize else options.ChunkSize

                do!
                    scan
                        store
                        filter
                        now
                        options.After
                        pageSize
                        (fun page next ->
                            task {
                                let room = limit - state.Selected

                                let chosen =
                                    page
                                    |> List.filter (selects selection)
                                    |> List.truncate (int (min room (int64 Int32.MaxValue)))

                                // Past the limit, the cursor stops after the last one chosen.
                                let cursor =
                                    if int64 chosen.Length = room && room > 0L then
                                        Some(RequestCursor.ofRequest (List.last chosen))
                                    else
                                        next

                                if options.DryRun || List.isEmpty chosen then
                                    state <-
                                        { state with
                                            Selected = state.Selected + int64 chosen.Length
                                            Cursor = cursor
                                        }
                                else
                                    let! results =
                                        store.UpdateRequestsAsync(
                                            chosen |> List.map _.Id,
                                            transition now bulk,
                                            cancellationToken
                                        )

                                    let count predicate =
                                        results |> List.filter predicate |> List.length |> int64

                                    for result in results do
                                        match result with
                                        | BulkItemResult.Updated request -> updatedIds.Add request.Id
                                        | BulkItemResult.Refused _
                                        | BulkItemResult.Locked
                                        | BulkItemResult.NotFound -> ()

                                    state <-
                                        { state with
                                            Selected = state.Selected + int64 chosen.Length
                                            Updated =
                                                state.Updated
                                                + count (function
                                                    | BulkItemResult.Updated _ -> true
                                                    | _ -> false)
                                            Refused =
                                                state.Refused
                                                + count (function
                                                    | BulkItemResult.Refused _
                                                    | BulkItemResult.NotFound -> true
                                                    | _ -> false)
                                            Locked =
                                                state.Locked
                                                + count (function
                                                    | BulkItemResult.Locked -> true
                                                    | _ -> false)
                                            Cursor = cursor
                                        }

                                    progress state

                                return state.Selected < limit
                            })
                        cancellationToken

                state <-
                    { state with
                        Finished = true
                        UpdatedIds = List.ofSeq updatedIds
                    }

            progress state
            return state
        }

    /// Canary redrive: re-executes `canaries` of the selection first and waits (polling every
    /// `pollEvery`, at most `wait`) until each has completed or failed again; only when all completed
    /// are the rest re-executed. `now` reads the clock; `delay` waits.
    let canaryAsync
        (store: IAdminStore)
        (selection: BulkSelection)
        (canaries: int)
        (wait: TimeSpan)
        (pollEvery: TimeSpan)
        (now: unit -> DateTimeOffset)
        (delay: TimeSpan -> CancellationToken -> Task)
        (options: BulkOptions)
        (progress: BulkProgress -> unit)
        (cancellationToken: CancellationToken)
        : Task<CanaryOutcome> =
        if canaries < 1 then
            invalidArg (nameof canaries) $"at least one canary is needed, got %d{canaries}"

        if pollEvery <= TimeSpan.Zero then
            invalidArg (nameof pollEvery) "the polling interval must be positive"

        task {
            let! first =
                bulkAsync
                    store
                    selection
                    BulkCommand.ReExecute
                    (now ())
                    { options with
                        DryRun = false
                        Limit = Some(int64 canaries)
                    }
                    progress
                    cancellationToken

            match first.UpdatedIds with
            | [] -> return CanaryOutcome.NothingSelected
            | ids ->
                let started = now ()
                let mutable outcome = None

                while outcome.IsNone do
                    let! current = store.FindRequestsAsync(ids, cancellationToken)

                    let failedAgain (request: HandlerRequest) =
                        request.Errors > 0
                        || HandlerRequest.isDead request
                        || (HandlerRequest.canceledAt request).IsSome

                    if current |> List.exists failedAgain then
                        outcome <- Some(CanaryOutcome.Failed current)
                    elif
                        current
                        |> List.forall (fun request -> (HandlerRequest.completedAt request).IsSome)
                    then
                        let! rest =
                            bulkAsync
                                store
                                selection
                                BulkCommand.ReExecute
                                (now ())
                                { options with
                                    DryRun = false
                                    After = None
                                }
                                progress
                                cancellationToken

                        outcome <- Some(CanaryOutcome.Succeeded(ids, rest))
                    elif now () - started >= wait then
                        outcome <- Some(CanaryOutcome.Undecided current)
                    else
                        do! delay pollEvery cancellationToken

                return outcome.Value
        }
