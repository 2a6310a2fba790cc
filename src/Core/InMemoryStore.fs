namespace Events.Core

open System
open System.Collections.Generic
open System.Threading
open System.Threading.Tasks

/// Settings of an in-memory store.
type InMemoryStoreOptions =
    {
        /// The most lapsed leases one request claim recovers, so that a claim never holds the store's
        /// lock for long after a mass expiry; the rest are recovered by the next claims (default 1000).
        MaxRecoveredPerClaim: int
    }

    /// Recovers at most 1000 lapsed leases per claim.
    static member Default = { MaxRecoveredPerClaim = 1000 }

/// An index key: (time, id), such as (event timestamp, event id) or (lease end, request id).
type internal TimeKey = (struct (DateTimeOffset * Guid))

/// An index key in the core's run order: (priority, event timestamp, id).
type internal RunKey = (struct (int * DateTimeOffset * Guid))

/// Orders index keys by their own order, counting comparisons so tests can check that claims cost
/// O(log N) comparisons; only ever called under the store's lock.
[<Sealed>]
type internal CountingComparer<'key when 'key :> IComparable<'key>>(count: int64 ref) =
    interface IComparer<'key> with
        member _.Compare(left, right) =
            count.Value <- count.Value + 1L
            left.CompareTo right

/// How many items each index of an in-memory store holds (for tests of its memory use).
type internal IndexSizes =
    {
        UnprocessedEvents: int
        UnclaimedEvents: int
        EventClaims: int
        RunnableRequests: int
        RunnableByEventTime: int
        BackingOffRequests: int
        RunningRequests: int
        DeadRequests: int
        DeadEventNames: int
        DeadHandlerNames: int
    }

/// A stored event and its claim (the token and the claim's end), if any. A lapsed claim stays here
/// until the event is claimed again or released, so that its holder may still commit.
[<NoEquality; NoComparison>]
type private EventEntry =
    {
        mutable Event: Event
        mutable Claim: (struct (Guid * DateTimeOffset)) voption
    }

/// Enumerates a snapshot taken when enumeration starts.
[<Sealed>]
type private SnapshotEnumerable<'item>(snapshot: unit -> 'item list, cancellationToken: CancellationToken) =
    interface IAsyncEnumerable<'item> with
        member _.GetAsyncEnumerator(enumeratorToken) =
            let items = (snapshot () :> seq<'item>).GetEnumerator()

            { new IAsyncEnumerator<'item> with
                member _.Current = items.Current

                member _.MoveNextAsync() =
                    cancellationToken.ThrowIfCancellationRequested()
                    enumeratorToken.ThrowIfCancellationRequested()
                    ValueTask<bool>(items.MoveNext())

                member _.DisposeAsync() =
                    items.Dispose()
                    ValueTask.CompletedTask
            }

/// The store port held in memory, for tests, demos and single-process use. Thread-safe: one lock
/// guards every map and index, held only while reading or writing them (never while a caller's
/// function runs or an event is raised). Claims follow a database's rules: a claimed event or request
/// is never handed out twice while its claim holds, and a lapsed claim is recovered (a request's
/// through the core's `ExpireLease`). Claiming costs O(log N) per item: ordered indexes hold only
/// the live items (unprocessed events, runnable, backing-off, running and dead requests); processed
/// events and completed or canceled requests are only in the maps by id. A request whose backoff
/// ends is made runnable by the first claim or gauge reading at or after that time; claims are exact
/// whatever the `now` given (the core refuses a claim before the backoff ends), but gauges read at a
/// `now` earlier than a previous reading may count such a request runnable early. `UpdateRequestAsync`
/// runs the caller's function outside the lock and runs it again if the request changed meanwhile,
/// so the function must be pure.
[<Sealed>]
type InMemoryStore(?options: InMemoryStoreOptions) =
    let options = defaultArg options InMemoryStoreOptions.Default

    do
        if options.MaxRecoveredPerClaim < 1 then
            invalidArg (nameof options) $"MaxRecoveredPerClaim must be at least 1, got %d{options.MaxRecoveredPerClaim}"

    let gate = obj ()
    let comparisons = ref 0L
    let timeComparer = CountingComparer<TimeKey> comparisons
    let runComparer = CountingComparer<RunKey> comparisons

    let events = Dictionary<Guid, EventEntry>()
    // The id of the stored event of each deduplication key.
    let deduplicationKeys = Dictionary<string, Guid>(StringComparer.Ordinal)
    // Every unprocessed event, by (timestamp, id): the oldest-unprocessed gauge.
    let unprocessed = SortedSet<TimeKey>(timeComparer)
    // Unprocessed events no claim holds (none, released, or lapsed and recovered), by (timestamp, id).
    let unclaimed = SortedSet<TimeKey>(timeComparer)
    // Unprocessed events a claim holds, by (claim end, id); moved to `unclaimed` once lapsed.
    let eventClaims = SortedSet<TimeKey>(timeComparer)

    let requests = Dictionary<Guid, HandlerRequest>()
    // Runnable requests (no backoff, or a backoff found over when last looked at), in run order ...
    let runnable = SortedSet<RunKey>(runComparer)
    // ... and the same requests by (event timestamp, id): the oldest-runnable gauge.
    let runnableByEventTime = SortedSet<TimeKey>(timeComparer)
    // Runnable requests waiting out a backoff, by (backoff end, id).
    let backingOff = SortedSet<TimeKey>(timeComparer)
    // Running requests, by (lease end, id).
    let running = SortedSet<TimeKey>(timeComparer)
    // Dead requests, by (event timestamp, id), and how many carry each name.
    let dead = SortedSet<TimeKey>(timeComparer)
    let deadEventNames = Dictionary<EventName, int>()
    let deadHandlerNames = Dictionary<HandlerName, int>()

    let workArrived = Event<WorkSignal>()
    let fanOuts = ResizeArray<IAppendFanOut>()
    let setAside = Dictionary<struct (StoredItemKind * Guid), SetAsideItem * int64>()
    let mutable setAsideOrder = 0L
    let itemsSetAside = Event<SetAsideItem list>()

    let eventKey (event: Event) : TimeKey = struct (event.Timestamp, event.Id)

    let eventTimeKey (request: HandlerRequest) : TimeKey =
        struct (request.EventTimestamp, request.Id)

    let runKey (request: HandlerRequest) : RunKey = HandlerRequest.runOrder request

    let countName (counts: Dictionary<'name, int>) (name: 'name) (delta: int) =
        match counts.TryGetValue name with
        | true, count when count + delta = 0 -> counts.Remove name |> ignore
        | true, count -> counts[name] <- count + delta
        | false, _ -> counts[name] <- delta

    let makeRunnable (request: HandlerRequest) =
        runnable.Add(runKey request) |> ignore
        runnableByEventTime.Add(eventTimeKey request) |> ignore

    let addToIndexes (request: HandlerRequest) =
        match request.State with
        | RequestState.Runnable None -> makeRunnable request
        | RequestState.Runnable(Some until) -> backingOff.Add(struct (until, request.Id)) |> ignore
        | RequestState.Running lease -> running.Add(struct (lease.Until, request.Id)) |> ignore
        | RequestState.Dead ->
            dead.Add(eventTimeKey request) |> ignore
            countName deadEventNames request.EventName 1
            countName deadHandlerNames request.HandlerName 1
        | RequestState.Completed _
        | RequestState.Canceled _ -> ()

    let removeFromIndexes (request: HandlerRequest) =
        match request.State with
        | RequestState.Runnable None ->
            runnable.Remove(runKey request) |> ignore
            runnableByEventTime.Remove(eventTimeKey request) |> ignore
        | RequestState.Runnable(Some until) ->
            // Either still waiting, or found due by an earlier look and made runnable.
            if not (backingOff.Remove(struct (until, request.Id))) then
                runnable.Remove(runKey request) |> ignore
                runnableByEventTime.Remove(eventTimeKey request) |> ignore
        | RequestState.Running lease -> running.Remove(struct (lease.Until, request.Id)) |> ignore
        | RequestState.Dead ->
            dead.Remove(eventTimeKey request) |> ignore
            countName deadEventNames request.EventName (-1)
            countName deadHandlerNames request.HandlerName (-1)
        | RequestState.Completed _
        | RequestState.Canceled _ -> ()

    /// Replaces a stored request and moves it between indexes. Under the lock.
    let write (stored: HandlerRequest) (next: HandlerRequest) =
        removeFromIndexes stored
        requests[next.Id] <- next
        addToIndexes next

    let add (request: HandlerRequest) =
        requests.Add(request.Id, request)
        addToIndexes request

    /// Makes the requests whose backoff ended by `now` runnable: each is moved once, O(log N). Under the lock.
    let promoteDue (now: DateTimeOffset) =
        let mutable due = backingOff.Count > 0

        while due do
            let struct (until, id) as key = backingOff.Min

            if until <= now then
                backingOff.Remove key |> ignore
                makeRunnable requests[id]
                due <- backingOff.Count > 0
            else
                due <- false

    /// Returns lapsed event claims to the unclaimed index, keeping their tokens. Under the lock.
    let recoverEventClaims (now: DateTimeOffset) =
        let mutable lapsed = eventClaims.Count > 0

        while lapsed do
            let struct (until, id) as key = eventClaims.Min

            if until <= now then
                eventClaims.Remove key |> ignore
                unclaimed.Add(eventKey events[id].Event) |> ignore
                lapsed <- eventClaims.Count > 0
            else
                lapsed <- false

    /// Records lapsed leases as failed attempts through the core, oldest lease first. Under the lock.
    let recoverLeases (now: DateTimeOffset) =
        let recovered = ResizeArray()
        let mutable lapsed = running.Count > 0

        while lapsed && recovered.Count < options.MaxRecoveredPerClaim do
            let struct (until, id) = running.Min

            if until <= now then
                let stored = requests[id]

                match HandlerRequest.transition BackoffPolicy.Default (RequestCommand.ExpireLease now) stored with
                | Ok next ->
                    write stored next
                    recovered.Add next
                | Error error ->
                    invalidOp
                        $"the running index holds request %O{id}, which the core refuses to expire: %s{error.Message}"

                lapsed <- running.Count > 0
            else
                lapsed <- false

        List.ofSeq recovered

    let claimRequests (limit: int) (now: DateTimeOffset) (leaseFor: TimeSpan) =
        let recovered = recoverLeases now
        promoteDue now
        let claimed = ResizeArray()
        // Requests made runnable by a look at a later `now` than this claim's: not due yet for it.
        let early = ResizeArray()

        while claimed.Count < limit && runnable.Count > 0 do
            let struct (_, _, id) = runnable.Min
            let stored = requests[id]
            let command = RequestCommand.Claim(now, leaseFor, Guid.NewGuid())

            match HandlerRequest.transition BackoffPolicy.Default command stored with
            | Ok next ->
                write stored next
                claimed.Add next
            | Error(RequestError.BackingOff _) ->
                removeFromIndexes stored
                early.Add stored
            | Error(RequestError.LeaseNotPositive _ as error)
            | Error(RequestError.AlreadyClaimed _ as error)
            | Error(RequestError.ReachedMaxErrors as error)
            | Error(RequestError.AlreadyCompleted as error)
            | Error(RequestError.AlreadyCanceled as error)
            | Error(RequestError.NotRunning as error)
            | Error(RequestError.StaleToken as error)
            | Error(RequestError.LeaseNotExpired _ as error)
            | Error(RequestError.CommitFailed _ as error) ->
                invalidOp $"the runnable index holds request %O{id}, which the core refuses to claim: %s{error.Message}"

        // Back to waiting out their backoff: a later claim makes them runnable when due.
        for request in early do
            addToIndexes request

        {
            Claimed = List.ofSeq claimed
            Recovered = recovered
        }

    let commitOne (item: ProcessedEvent) : Result<int, ProcessError> =
        match events.TryGetValue item.EventId with
        | false, _ -> Error ProcessError.EventNotFound
        | true, entry ->
            match entry.Event.ProcessedAt, entry.Claim with
            | Some _, _ -> Error ProcessError.AlreadyProcessed
            | None, ValueSome(struct (token, until)) when token = item.Token ->
                let key = eventKey entry.Event
                unprocessed.Remove key |> ignore

                if not (eventClaims.Remove(struct (until, item.EventId))) then
                    unclaimed.Remove key |> ignore

                entry.Event <-
                    { entry.Event with
                        ProcessedAt = Some item.ProcessedAt
                    }

                entry.Claim <- ValueNone

                for request in item.Requests do
                    add request

                Ok(List.length item.Requests)
            | None, ValueSome _
            | None, ValueNone -> Error ProcessError.StaleClaim

    let releaseOne (claim: ClaimedEvent) =
        match events.TryGetValue claim.Event.Id with
        | true, entry ->
            match entry.Event.ProcessedAt, entry.Claim with
            | None, ValueSome(struct (token, until)) when token = claim.Token ->
                if eventClaims.Remove(struct (until, claim.Event.Id)) then
                    unclaimed.Add(eventKey entry.Event) |> ignore

                entry.Claim <- ValueNone
            | Some _, _
            | None, ValueSome _
            | None, ValueNone -> ()
        | false, _ -> ()

    /// A page of the dead requests matching the query's names, and how many match in all. Under the lock.
    let filteredDeadPage (query: DeadRequestQuery) =
        let page = ResizeArray()
        let mutable total = 0L

        for struct (_, id) in dead do
            let request = requests[id]

            if DeadRequestQuery.matches query request then
                if total >= int64 query.Offset && page.Count < query.Limit then
                    page.Add request

                total <- total + 1L

        {
            Total = total
            Requests = List.ofSeq page
        }

    /// A page of every dead request; O(offset + limit). Under the lock.
    let unfilteredDeadPage (query: DeadRequestQuery) =
        let page =
            dead
            |> Seq.skip (min query.Offset dead.Count)
            |> Seq.truncate query.Limit
            |> Seq.map (fun (struct (_, id)) -> requests[id])
            |> List.ofSeq

        {
            Total = int64 dead.Count
            Requests = page
        }

    let guarded (cancellationToken: CancellationToken) (action: unit -> 'result) : Task<'result> =
        if cancellationToken.IsCancellationRequested then
            Task.FromCanceled<'result> cancellationToken
        else
            Task.FromResult(action ())

    /// Comparisons made by the indexes since the store was made (for tests of claiming's cost).
    member internal _.Comparisons = lock gate (fun () -> comparisons.Value)

    /// How many items each index holds (for tests of memory use).
    member internal _.IndexSizes =
        lock gate (fun () ->
            {
                UnprocessedEvents = unprocessed.Count
                UnclaimedEvents = unclaimed.Count
                EventClaims = eventClaims.Count
                RunnableRequests = runnable.Count
                RunnableByEventTime = runnableByEventTime.Count
                BackingOffRequests = backingOff.Count
                RunningRequests = running.Count
                DeadRequests = dead.Count
                DeadEventNames = deadEventNames.Count
                DeadHandlerNames = deadHandlerNames.Count
            })

    interface ISetAsideItems with
        member _.SetAsideAsync cancellationToken =
            guarded cancellationToken (fun () ->
                lock gate (fun () -> setAside.Values |> Seq.sortBy snd |> Seq.map fst |> List.ofSeq))

        member _.SetItemAsideAsync(kind, id, reason, cancellationToken) =
            guarded cancellationToken (fun () ->
                let reason = HandlerRequest.storable reason

                let aside =
                    lock gate (fun () ->
                        if setAside.ContainsKey(struct (kind, id)) then
                            None
                        else
                            let found =
                                match kind with
                                | StoredItemKind.Event ->
                                    match events.TryGetValue id with
                                    | true, entry ->
                                        unprocessed.Remove(eventKey entry.Event) |> ignore
                                        unclaimed.Remove(eventKey entry.Event) |> ignore

                                        match entry.Claim with
                                        | ValueSome(struct (_, until)) ->
                                            eventClaims.Remove(struct (until, id)) |> ignore
                                            entry.Claim <- ValueNone
                                        | ValueNone -> ()

                                        Some(string entry.Event.Data)
                                    | false, _ -> None
                                | StoredItemKind.Request ->
                                    match requests.TryGetValue id with
                                    | true, stored ->
                                        removeFromIndexes stored

                                        // As on PostgreSQL, a lease is dropped: the attempt's outcome is refused.
                                        match stored.State with
                                        | RequestState.Running _ ->
                                            requests[id] <-
                                                { stored with
                                                    State = RequestState.Runnable None
                                                }
                                        | RequestState.Runnable _
                                        | RequestState.Completed _
                                        | RequestState.Dead
                                        | RequestState.Canceled _ -> ()

                                        Some(string stored.EventData)
                                    | false, _ -> None

                            found
                            |> Option.map (fun stored ->
                                let item =
                                    {
                                        Kind = kind
                                        Id = id
                                        Reason = reason
                                        Stored = stored
                                    }

                                setAsideOrder <- setAsideOrder + 1L
                                setAside[struct (kind, id)] <- (item, setAsideOrder)
                                item))

                match aside with
                | Some item ->
                    itemsSetAside.Trigger [ item ]
                    true
                | None -> false)

        member _.RestoreAsync(kind, id, cancellationToken) =
            guarded cancellationToken (fun () ->
                let restored =
                    lock gate (fun () ->
                        if not (setAside.Remove(struct (kind, id))) then
                            false
                        else
                            match kind with
                            | StoredItemKind.Event ->
                                let entry = events[id]

                                if not (Event.isProcessed entry.Event) then
                                    unprocessed.Add(eventKey entry.Event) |> ignore
                                    unclaimed.Add(eventKey entry.Event) |> ignore
                            | StoredItemKind.Request -> addToIndexes requests[id]

                            true)

                if restored then
                    workArrived.Trigger(
                        match kind with
                        | StoredItemKind.Event -> WorkSignal.EventsAppended
                        | StoredItemKind.Request -> WorkSignal.RequestsReady
                    )

                restored)

        [<CLIEvent>]
        member _.ItemsSetAside = itemsSetAside.Publish

    interface IFanOutOnAppend with
        member _.UseFanOut(fanOut: IAppendFanOut) =
            if isNull (box fanOut) then
                nullArg (nameof fanOut)

            lock fanOuts (fun () -> fanOuts.Add fanOut)

            { new IDisposable with
                member _.Dispose() =
                    lock fanOuts (fun () -> fanOuts.Remove fanOut |> ignore)
            }

    interface IEventStore with
        member _.AppendAsync(batch, cancellationToken) =
            StoreArguments.checkList (nameof batch) batch
            Event.checkDeduplicationKeys batch

            guarded cancellationToken (fun () ->
                let prepared = batch |> List.map StoredEvent.withCorrelationId

                let fanOut = lock fanOuts (fun () -> Seq.tryLast fanOuts)

                let stored, fannedOut, appended =
                    lock gate (fun () ->
                        // Which events are stored: the first of each deduplication key not stored yet.
                        let batchKeys = Dictionary<string, Event>()

                        let placed =
                            prepared
                            |> List.map (fun event ->
                                match event.DeduplicationKey with
                                | Some key ->
                                    match deduplicationKeys.TryGetValue key with
                                    | true, id -> Choice2Of2 events[id].Event
                                    | false, _ ->
                                        match batchKeys.TryGetValue key with
                                        | true, first -> Choice2Of2 first
                                        | false, _ ->
                                            batchKeys.Add(key, event)
                                            Choice1Of2 event
                                | None -> Choice1Of2 event)

                        let fresh =
                            placed
                            |> List.choose (fun placed ->
                                match placed with
                                | Choice1Of2 event -> Some event
                                | Choice2Of2 _ -> None)

                        // Refuse the whole batch before appending any of it.
                        let ids = HashSet<Guid>()

                        for event in fresh do
                            if not (ids.Add event.Id) then
                                invalidArg (nameof batch) $"the batch holds event id %O{event.Id} more than once"

                            if events.ContainsKey event.Id then
                                invalidArg (nameof batch) $"an event with id %O{event.Id} is already stored"

                        let fannedOut =
                            [
                                for event in fresh do
                                    event.DeduplicationKey
                                    |> Option.iter (fun key -> deduplicationKeys.Add(key, event.Id))

                                    let decided =
                                        if Event.isProcessed event then
                                            None
                                        else
                                            fanOut |> Option.bind (fun fanOut -> fanOut.FanOut event)

                                    match decided with
                                    | Some decision ->
                                        let processed =
                                            { event with
                                                ProcessedAt = Some decision.ProcessedAt
                                            }

                                        events.Add(event.Id, { Event = processed; Claim = ValueNone })

                                        for request in decision.Requests do
                                            add request

                                        yield event, decision
                                    | None ->
                                        events.Add(event.Id, { Event = event; Claim = ValueNone })

                                        if not (Event.isProcessed event) then
                                            unprocessed.Add(eventKey event) |> ignore
                                            unclaimed.Add(eventKey event) |> ignore
                            ]

                        let stored =
                            placed
                            |> List.map (fun placed ->
                                match placed with
                                | Choice1Of2 event -> event
                                | Choice2Of2 first -> first)

                        stored, fannedOut, fresh.Length)

                match fanOut with
                | Some fanOut when not fannedOut.IsEmpty -> fanOut.Committed fannedOut
                | _ -> ()

                if fannedOut.Length < appended then
                    workArrived.Trigger WorkSignal.EventsAppended

                if not fannedOut.IsEmpty then
                    workArrived.Trigger WorkSignal.RequestsReady

                stored)

        member _.ClaimEventsAsync(limit, now, leaseFor, cancellationToken) =
            StoreArguments.checkClaim limit leaseFor

            guarded cancellationToken (fun () ->
                let until = Backoff.addSaturating now leaseFor

                lock gate (fun () ->
                    recoverEventClaims now
                    let claimed = ResizeArray()

                    while claimed.Count < limit && unclaimed.Count > 0 do
                        let struct (_, id) as key = unclaimed.Min
                        unclaimed.Remove key |> ignore
                        let entry = events[id]
                        let token = Guid.NewGuid()
                        entry.Claim <- ValueSome(struct (token, until))
                        eventClaims.Add(struct (until, id)) |> ignore

                        claimed.Add
                            {
                                Event = entry.Event
                                Token = token
                                Until = until
                            }

                    List.ofSeq claimed))

        member _.CommitProcessingAsync(processed, cancellationToken) =
            StoreArguments.checkList (nameof processed) processed

            guarded cancellationToken (fun () ->
                let ids = HashSet<Guid>()

                for item in processed do
                    for request in item.Requests do
                        if request.EventId <> item.EventId then
                            invalidArg
                                (nameof processed)
                                $"request %O{request.Id} is for event %O{request.EventId}, not for %O{item.EventId}"

                        if not (ids.Add request.Id) then
                            invalidArg (nameof processed) $"the batch holds request id %O{request.Id} more than once"

                let results, created =
                    lock gate (fun () ->
                        // Refuse the whole batch before committing any of it.
                        for id in ids do
                            if requests.ContainsKey id then
                                invalidArg (nameof processed) $"a request with id %O{id} is already stored"

                        let results = processed |> List.map commitOne

                        let created =
                            results
                            |> List.sumBy (fun result ->
                                match result with
                                | Ok count -> count
                                | Error _ -> 0)

                        results, created)

                if created > 0 then
                    workArrived.Trigger WorkSignal.RequestsReady

                results |> List.map (Result.map ignore))

        member _.ReleaseEventsAsync(claims, cancellationToken) =
            StoreArguments.checkList (nameof claims) claims

            guarded cancellationToken (fun () -> lock gate (fun () -> List.iter releaseOne claims))

        member _.ClaimRequestsAsync(limit, now, leaseFor, cancellationToken) =
            StoreArguments.checkClaim limit leaseFor
            guarded cancellationToken (fun () -> lock gate (fun () -> claimRequests limit now leaseFor))

        member _.RecordOutcomesAsync(outcomes, cancellationToken) =
            StoreArguments.checkList (nameof outcomes) outcomes

            for outcome in outcomes do
                match outcome.Transaction with
                | Some _ ->
                    invalidArg
                        (nameof outcomes)
                        "the in-memory store opens no handler transactions, so it cannot commit one"
                | None -> ()

            guarded cancellationToken (fun () ->
                lock gate (fun () ->
                    outcomes
                    |> List.map (fun outcome ->
                        match requests.TryGetValue outcome.Request.Id with
                        | false, _ -> Error RequestError.NotRunning
                        | true, stored ->
                            HandlerRequest.checkToken outcome.Token stored
                            |> Result.map (fun () -> write stored outcome.Request))))

        member _.RenewLeasesAsync(renewals, until, cancellationToken) =
            StoreArguments.checkList (nameof renewals) renewals

            guarded cancellationToken (fun () ->
                lock gate (fun () ->
                    renewals
                    |> List.map (fun (id, token) ->
                        match requests.TryGetValue id with
                        | false, _ -> Error RequestError.NotRunning
                        | true, stored ->
                            HandlerRequest.transition
                                BackoffPolicy.Default
                                (RequestCommand.Renew(token, until))
                                stored
                            |> Result.map (fun next ->
                                // Re-indexed by the new lease end only when it moved: O(log N).
                                if not (LanguagePrimitives.PhysicalEquality next stored) then
                                    write stored next))))

        member _.BeginHandlerTransaction _ = None

        member _.FindEventAsync(id, cancellationToken) =
            guarded cancellationToken (fun () ->
                lock gate (fun () ->
                    match events.TryGetValue id with
                    | true, entry -> Some entry.Event
                    | false, _ -> None))

        member _.FindRequestAsync(id, cancellationToken) =
            guarded cancellationToken (fun () ->
                lock gate (fun () ->
                    match requests.TryGetValue id with
                    | true, request -> Some request
                    | false, _ -> None))

        member _.EventsAsync cancellationToken =
            SnapshotEnumerable(
                (fun () ->
                    let all = lock gate (fun () -> events.Values |> Seq.map _.Event |> Array.ofSeq)
                    all |> Array.sortBy eventKey |> List.ofArray),
                cancellationToken
            )
            :> IAsyncEnumerable<Event>

        member _.RequestsAsync cancellationToken =
            SnapshotEnumerable(
                (fun () ->
                    let all = lock gate (fun () -> Array.ofSeq requests.Values)
                    all |> Array.sortBy eventTimeKey |> List.ofArray),
                cancellationToken
            )
            :> IAsyncEnumerable<HandlerRequest>

        member _.StatsAsync(now, cancellationToken) =
            guarded cancellationToken (fun () ->
                lock gate (fun () ->
                    promoteDue now

                    {
                        UnprocessedEvents = int64 unprocessed.Count
                        OldestUnprocessedEvent =
                            if unprocessed.Count = 0 then
                                None
                            else
                                let struct (timestamp, _) = unprocessed.Min
                                Some timestamp
                        RunnableRequests = int64 runnable.Count
                        OldestRunnableRequest =
                            if runnableByEventTime.Count = 0 then
                                None
                            else
                                let struct (timestamp, _) = runnableByEventTime.Min
                                Some timestamp
                        DeadRequests = int64 dead.Count
                    }))

        [<CLIEvent>]
        member _.WorkArrived = workArrived.Publish

    /// Every request, by event time then id, under the lock.
    member private _.Snapshot() =
        lock gate (fun () -> Array.ofSeq requests.Values) |> Array.sortBy eventTimeKey

    interface IAdminStore with
        member this.QueryRequestsAsync(filter, now, after, limit, cancellationToken) =
            let filter = RequestFilter.validate filter
            RequestFilter.checkLimit limit

            guarded cancellationToken (fun () ->
                // Backoffs are judged against `now` by the filter itself, so nothing is promoted here.
                let matching =
                    this.Snapshot()
                    |> Seq.filter (RequestCursor.isAfter after)
                    |> Seq.filter (RequestFilter.matches now filter)
                    |> Seq.truncate (limit + 1)
                    |> List.ofSeq

                let page = List.truncate limit matching

                {
                    Requests = page
                    Next =
                        if matching.Length > limit && limit > 0 then
                            Some(RequestCursor.ofRequest (List.last page))
                        else
                            None
                })

        member this.CountRequestsAsync(filter, now, cancellationToken) =
            let filter = RequestFilter.validate filter

            guarded cancellationToken (fun () ->
                this.Snapshot()
                |> Seq.filter (RequestFilter.matches now filter)
                |> Seq.length
                |> int64)

        member this.CountByHandlerAsync(now, includeFinished, cancellationToken) =
            guarded cancellationToken (fun () ->
                this.Snapshot()
                |> Seq.filter (fun request -> includeFinished || not (HandlerRequest.isTerminal request))
                |> Seq.countBy (fun request -> request.HandlerName, RequestStatus.ofRequest now request)
                |> Seq.map (fun ((handlerName, status), count) ->
                    {
                        HandlerName = handlerName
                        Status = status
                        Count = int64 count
                    })
                |> Seq.sortBy (fun count -> count.HandlerName, List.findIndex ((=) count.Status) RequestStatus.all)
                |> List.ofSeq)

        member this.OverviewAsync(now, since, cancellationToken) =
            guarded cancellationToken (fun () -> HandlerOverview.ofRequests now since (this.Snapshot()))

        member _.FindRequestsAsync(ids, cancellationToken) =
            StoreArguments.checkList (nameof ids) ids

            guarded cancellationToken (fun () ->
                lock gate (fun () ->
                    ids
                    |> List.choose (fun id ->
                        match requests.TryGetValue id with
                        | true, request -> Some request
                        | false, _ -> None)))

        member _.FindEventAsync(id, cancellationToken) =
            guarded cancellationToken (fun () ->
                lock gate (fun () ->
                    match events.TryGetValue id with
                    | true, entry -> Some entry.Event
                    | false, _ -> None))

        member this.UpdateRequestsAsync(ids, transition, cancellationToken) =
            StoreArguments.checkList (nameof ids) ids

            if isNull (box transition) then
                nullArg (nameof transition)

            task {
                let results = ResizeArray()

                for id in ids do
                    let! result =
                        (this :> IAdminStore).UpdateRequestAsync(id, transition, cancellationToken)

                    results.Add(
                        match result with
                        | Ok request -> BulkItemResult.Updated request
                        | Error(AdminError.RequestNotFound _) -> BulkItemResult.NotFound
                        | Error(AdminError.Refused error) -> BulkItemResult.Refused error
                    )

                return List.ofSeq results
            }

        member _.DeadRequestsAsync(query, cancellationToken) =
            let query = DeadRequestQuery.validate query

            guarded cancellationToken (fun () ->
                lock gate (fun () ->
                    if List.isEmpty query.EventNames && List.isEmpty query.HandlerNames then
                        unfilteredDeadPage query
                    else
                        filteredDeadPage query))

        member _.DeadRequestNamesAsync cancellationToken =
            guarded cancellationToken (fun () ->
                let eventNames, handlerNames =
                    lock gate (fun () -> List.ofSeq deadEventNames.Keys, List.ofSeq deadHandlerNames.Keys)

                List.sort eventNames, List.sort handlerNames)

        member _.UpdateRequestAsync(id, transition, cancellationToken) =
            if isNull (box transition) then
                nullArg (nameof transition)

            guarded cancellationToken (fun () ->
                // Optimistic: the caller's function runs outside the lock; the write happens only if the
                // request is still the one it was given (records are immutable, so the same reference
                // means the same content), else the function runs again on the newer request.
                let rec attempt () =
                    match lock gate (fun () -> requests.TryGetValue id) with
                    | false, _ -> Error(AdminError.RequestNotFound id)
                    | true, read ->
                        match transition read with
                        | Error error -> Error(AdminError.Refused error)
                        | Ok next when next.Id <> id ->
                            invalidOp $"the transition changed the request's id from %O{id} to %O{next.Id}"
                        | Ok next ->
                            let written =
                                lock gate (fun () ->
                                    match requests.TryGetValue id with
                                    | true, current when LanguagePrimitives.PhysicalEquality current read ->
                                        write current next
                                        true
                                    | true, _
                                    | false, _ -> false)

                            if written then Ok next else attempt ()

                let result = attempt ()

                match result with
                | Ok request ->
                    match request.State with
                    | RequestState.Runnable _ -> workArrived.Trigger WorkSignal.RequestsReady
                    | RequestState.Running _
                    | RequestState.Completed _
                    | RequestState.Dead
                    | RequestState.Canceled _ -> ()
                | Error _ -> ()

                result)
