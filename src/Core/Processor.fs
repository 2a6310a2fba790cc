namespace Events.Core

open System
open System.Diagnostics
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging

/// The processor: claims unprocessed events and fans each out to one handler request per configured
/// handler, atomically. It never waits for handlers: a round is its claim, its hooks and one commit.
[<Sealed>]
type Processor
    (
        store: IEventStore,
        configuration: Configuration<Handler>,
        options: ProcessorOptions,
        instruments: Instruments,
        logger: ILogger,
        time: TimeProvider
    ) =
    let options =
        EngineOptions.validateProcessor options
        |> EngineOptions.orThrow (nameof options)

    let requestsCreated = Event<unit>()

    /// Failed commits of events that failed alone, by event, in a row (this process's count).
    let commitFailures = System.Collections.Concurrent.ConcurrentDictionary<Guid, int>()

    let release (claims: ClaimedEvent list) =
        task {
            if not claims.IsEmpty then
                try
                    do! store.ReleaseEventsAsync(claims, CancellationToken.None)
                with error ->
                    logger.LogError(
                        Log.ReleaseEventsFailed,
                        error,
                        "error releasing {Count} claimed events",
                        claims.Length
                    )
        }

    /// The fan-out of one claimed event after its hook, with its span; or nothing when the hook refused it
    /// or the processor is stopping (the claim is then released).
    let prepare (stopping: CancellationToken) (claim: ClaimedEvent) : Task<Choice<ProcessedEvent * Activity, unit>> =
        task {
            let event = claim.Event
            let activity = instruments.StartEventSpan event
            use _ = Log.eventScope logger event

            let fail (reason: string) (error: exn) =
                logger.LogError(
                    Log.BeforeProcessFailed,
                    error,
                    "error running before process for event {EventId}: {Reason}",
                    event.Id,
                    reason
                )

                Instruments.Fail(activity, "error running before process", null)

                if not (isNull activity) then
                    activity.Dispose()

                Choice2Of2()

            if stopping.IsCancellationRequested then
                if not (isNull activity) then
                    activity.Dispose()

                return Choice2Of2()
            else
                let! hooked =
                    match options.BeforeProcess with
                    | None -> Task.FromResult(Ok(HookResult.Continue event))
                    | Some hook ->
                        task {
                            try
                                let! result = hook event stopping
                                return Ok result
                            with error ->
                                return Error error
                        }

                match hooked with
                | Error error -> return fail error.Message error
                | Ok(HookResult.Refuse reason) -> return fail reason null
                | Ok(HookResult.Continue event) ->
                    logger.LogDebug("processing {EventName} event {EventId}", event.Name.Value, event.Id)
                    let now = time.GetUtcNow()
                    let handlers = Configuration.handlersFor event.Name configuration

                    if handlers.IsEmpty then
                        logger.LogWarning(
                            Log.NoHandlers,
                            "no handlers mapped for {EventName} event {EventId}",
                            event.Name.Value,
                            event.Id
                        )

                    let requests = FanOut.requests configuration event now

                    let processed =
                        {
                            EventId = claim.Event.Id
                            Token = claim.Token
                            ProcessedAt = now
                            Requests = requests
                        }

                    return Choice1Of2(processed, activity)
        }

    /// Commits prepared fan-outs in one batch, counting and logging each result. When the store throws,
    /// commits the halves, down to single events, so one event the store cannot commit never holds back
    /// the others; that one is released for a later round and counted as a processing failure.
    let rec commitSplitting (ready: (ClaimedEvent * ProcessedEvent * Activity)[]) : Task =
        task {
            try
                let! results =
                    store.CommitProcessingAsync([ for _, processed, _ in ready -> processed ], CancellationToken.None)

                if results.Length <> ready.Length then
                    invalidOp $"the store answered %d{results.Length} results for %d{ready.Length} processed events"

                let mutable created = false

                for (claim, processed, activity), result in Seq.zip ready results do
                    let tags = instruments.EventMetricTags claim.Event

                    match result with
                    | Ok() ->
                        if not commitFailures.IsEmpty then
                            commitFailures.TryRemove claim.Event.Id |> ignore

                        instruments.EventsProcessed.Add(1L, tags)

                        instruments.ProcessingTime.Record(
                            (processed.ProcessedAt - claim.Event.Timestamp).TotalSeconds,
                            tags
                        )

                        created <- created || not processed.Requests.IsEmpty
                    | Error error -> logger.LogDebug("skipped event {EventId}: {Reason}", claim.Event.Id, error.Message)

                    if not (isNull activity) then
                        activity.Dispose()

                if created then
                    requestsCreated.Trigger()
            with
            | _ when ready.Length > 1 ->
                let half = ready.Length / 2
                do! commitSplitting ready[.. half - 1]
                do! commitSplitting ready[half..]
            | error ->
                for claim, _, activity in ready do
                    instruments.EventsFailed.Add(1L, instruments.EventMetricTags claim.Event)
                    use _ = Log.eventScope logger claim.Event
                    logger.LogError(Log.ProcessingFailed, error, "error processing event {EventId}", claim.Event.Id)
                    Instruments.Fail(activity, "error processing event", error)

                    if not (isNull activity) then
                        activity.Dispose()

                // An event that fails alone, again and again, is set aside (where the store can) rather
                // than retried at the head of every round forever.
                let settingAside =
                    match store, ready with
                    | :? ISetAsideItems as items, [| claim, _, _ |] ->
                        let failures =
                            commitFailures.AddOrUpdate(claim.Event.Id, 1, (fun _ count -> count + 1))

                        if failures >= Processor.MaxCommitFailures then
                            commitFailures.TryRemove claim.Event.Id |> ignore
                            Some(items, claim)
                        else
                            None
                    | _ -> None

                match settingAside with
                | Some(items, claim) ->
                    try
                        let reason =
                            $"its fan-out failed to commit %d{Processor.MaxCommitFailures} times in a row: %s{error.Message}"

                        let! _ =
                            items.SetItemAsideAsync(
                                StoredItemKind.Event,
                                claim.Event.Id,
                                reason,
                                CancellationToken.None
                            )

                        ()
                    with aside ->
                        logger.LogError(
                            Log.ProcessingFailed,
                            aside,
                            "error setting event {EventId} aside",
                            claim.Event.Id
                        )

                        do! release [ claim ]
                | None -> do! release [ for claim, _, _ in ready -> claim ]
        }

    /// Commits the prepared fan-outs in batches of at most about `MaxCommitBytes` of requests (an event's
    /// data is copied into each of its requests), each batch split further if the store throws.
    let commit (ready: (ClaimedEvent * ProcessedEvent * Activity)[]) =
        task {
            let weight (_, processed: ProcessedEvent, _) =
                processed.Requests
                |> List.sumBy (fun request -> int64 request.EventData.Json.Length + 512L)

            let chunks = ResizeArray<ResizeArray<_>>()
            let mutable bytes = 0L

            for item in ready do
                let size = weight item

                if
                    chunks.Count = 0
                    || (bytes + size > Processor.MaxCommitBytes && chunks[chunks.Count - 1].Count > 0)
                then
                    chunks.Add(ResizeArray())
                    bytes <- 0L

                chunks[chunks.Count - 1].Add item
                bytes <- bytes + size

            for chunk in chunks do
                do! commitSplitting (chunk.ToArray())
        }

    /// How many times in a row an event's fan-out may fail to commit on its own before the processor
    /// sets it aside (where the store can set items aside): 5.
    static member MaxCommitFailures = 5

    /// The most a fan-out commit carries, roughly, in bytes of requests: 16 MiB.
    static member MaxCommitBytes = 16L * 1024L * 1024L

    /// Raised after a round created handler requests, so the executor can start at once.
    [<CLIEvent>]
    member _.RequestsCreated = requestsCreated.Publish

    /// The fan-out on append of this processor's configuration (see `IAppendFanOut`), while `enabled`
    /// says so; none with a before-process hook, which may change or refuse an event at processing time,
    /// so such events keep the processor's path. Events fanned out on append are counted as processed,
    /// with their processing span, once their transaction commits.
    member _.AppendFanOut(enabled: unit -> bool) : IAppendFanOut option =
        match options.BeforeProcess with
        | Some _ -> None
        | None ->
            Some
                { new IAppendFanOut with
                    member _.FanOut event =
                        if not (enabled ()) then
                            None
                        else
                            let now = time.GetUtcNow()

                            match FanOut.requests configuration event now with
                            | [] -> None
                            | requests ->
                                Some
                                    {
                                        ProcessedAt = now
                                        Requests = requests
                                    }

                    member _.Committed events =
                        for event, fanOut in events do
                            // The processing span, as the processor makes it, once the fan-out committed.
                            let activity = instruments.StartEventSpan event

                            if not (isNull activity) then
                                activity.Dispose()

                            let tags = instruments.EventMetricTags event
                            instruments.EventsProcessed.Add(1L, tags)
                            instruments.ProcessingTime.Record((fanOut.ProcessedAt - event.Timestamp).TotalSeconds, tags)

                        if not events.IsEmpty then
                            requestsCreated.Trigger()
                }

    /// One round: claims up to Limit events, fans them out on Workers workers, commits the batch. Stops
    /// before starting work on its next event once `stopping` fires. A round that claims nothing makes no
    /// span. Returns the number claimed.
    member _.ProcessAsync(stopping: CancellationToken) : Task<int> =
        task {
            if stopping.IsCancellationRequested then
                return 0
            else
                let startedAt = time.GetUtcNow()

                let! claims =
                    task {
                        try
                            let! claims =
                                store.ClaimEventsAsync(
                                    options.Limit,
                                    startedAt,
                                    options.ClaimLease,
                                    CancellationToken.None
                                )

                            return Ok claims
                        with error ->
                            return Error error
                    }

                match claims with
                | Error error ->
                    logger.LogError(Log.ClaimEventsFailed, error, "error finding unprocessed events")
                    return 0
                | Ok [] -> return 0
                | Ok claims ->
                    use _round = instruments.StartRound("process events", startedAt)
                    let claimArray = Array.ofList claims
                    let prepared = Array.zeroCreate claimArray.Length

                    do!
                        Parallel.ForEachAsync(
                            Seq.indexed claimArray,
                            ParallelOptions(MaxDegreeOfParallelism = options.Workers),
                            fun (index, claim) _ ->
                                ValueTask(
                                    task {
                                        let! result = prepare stopping claim
                                        prepared[index] <- result
                                    }
                                )
                        )

                    let paired = Array.zip claimArray prepared

                    let ready =
                        paired
                        |> Array.choose (fun (claim, result) ->
                            match result with
                            | Choice1Of2(processed, activity) -> Some(claim, processed, activity)
                            | Choice2Of2() -> None)

                    let refused =
                        paired
                        |> Array.choose (fun (claim, result) ->
                            match result with
                            | Choice1Of2 _ -> None
                            | Choice2Of2() -> Some claim)
                        |> List.ofArray

                    do! release refused

                    if ready.Length > 0 then
                        do! commit ready

                    return claimArray.Length
        }
