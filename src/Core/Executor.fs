namespace Events.Core

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging

/// What one claim for the executor's free slots did.
[<Struct>]
type internal ClaimStep =
    {
        /// How many requests the claim asked for: the free slots, at most Limit (0: none was free).
        Asked: int
        /// How many it got, each started at once.
        Claimed: int
    }

    /// Whether more runnable requests may be waiting: the claim got all it asked for.
    member this.Full = this.Asked > 0 && this.Claimed = this.Asked

/// The executor: a pump of `Workers` slots. It claims runnable handler requests only for its free slots
/// and starts each at once, so a slow handler holds its own slot and no other; outcomes go to one
/// continuous batch writer, and one lease keeper renews the running attempts' leases (heartbeats), so a
/// handler that runs longer than the lease keeps its claim: a request runs at most once at a time however
/// long its handler takes.
[<Sealed>]
type Executor
    (
        store: IEventStore,
        configuration: Configuration<Handler>,
        options: ExecutorOptions,
        instruments: Instruments,
        logger: ILogger,
        time: TimeProvider,
        sample: unit -> float
    ) =
    let options =
        EngineOptions.validateExecutorFor configuration options
        |> EngineOptions.orThrow (nameof options)

    // Up to 500 outcomes a write; up to a few slots' worth queued before the slots wait for the writes.
    let writer = OutcomeWriter(store, 500, max 1000 (4 * options.Workers))
    let keeper = LeaseKeeper(store, options.Lease, logger, time)
    let mutable busy = 0
    let mutable sequence = 0L
    let slotFreed = WakeSignal()
    let inflight = ConcurrentDictionary<int64, Task>()
    let claiming = new SemaphoreSlim(1, 1)

    /// The Go framework's stand-in for a request whose handler is not configured: it always fails.
    let missingHandler: Handler =
        fun _ _ -> Task.FromResult(HandlerResult.Failed "handler request has no configured handler")

    let report (failure: ErrorReport) (hardStop: CancellationToken) =
        task {
            match options.ErrorReporter with
            | None -> return false
            | Some reporter ->
                try
                    return! reporter.ReportAsync(failure, hardStop)
                with error ->
                    logger.LogError(
                        Log.ReporterFailed,
                        error,
                        "the error reporter threw while reporting request {RequestId}",
                        failure.Request.Id
                    )

                    return false
        }

    /// Counts, logs and reports a failed attempt that was recorded, and marks its span failed.
    let failed (request: HandlerRequest) (thrown: exn option) (activity: Activity) (hardStop: CancellationToken) =
        task {
            let retryable = not (HandlerRequest.isDead request)
            let error = request.LastError |> Option.defaultValue ""
            // The log line shows the error's first line; a thrown handler's stack goes with its exception.
            let summary = error.Split('\n')[0]
            instruments.RequestsFailed.Add(1L, instruments.RequestFailureTags(request, retryable))

            let! reported =
                if thrown.IsSome || not retryable then
                    report
                        {
                            Request = request
                            Error = error
                            Exception = thrown
                            StackTrace = thrown |> Option.bind (fun e -> Option.ofObj e.StackTrace)
                            Retryable = retryable
                        }
                        hardStop
                else
                    Task.FromResult false

            let level = if retryable then LogLevel.Warning else LogLevel.Error

            logger.Log(
                level,
                Log.RequestFailed,
                Option.toObj thrown,
                "error while executing handler request {RequestId} ({HandlerName}): {Error}; last attempt at {LastAttemptAt}, error reported: {ErrorReported}, retryable: {Retryable}, errors: {Errors}",
                request.Id,
                request.HandlerName.Value,
                summary,
                Log.time request.LastAttemptAt,
                reported,
                retryable,
                request.Errors
            )

            Instruments.Fail(activity, "error while executing handler request", Option.toObj thrown)
        }

    /// Runs the handler in its span, with its timeout; counts it in the handler metrics.
    let run
        (handler: Handler)
        (context: HandlerContext)
        (timeout: TimeSpan option)
        (permanentOn: Type list)
        (hardStop: CancellationToken)
        (lost: CancellationToken)
        (requestSpan: Activity)
        =
        task {
            use handlerSpan = instruments.StartHandlerSpan(context.Request, requestSpan)
            use timeoutSource = CancellationTokenSource.CreateLinkedTokenSource(hardStop, lost)
            timeout |> Option.iter timeoutSource.CancelAfter
            let started = time.GetTimestamp()

            let! result =
                task {
                    try
                        match! handler context timeoutSource.Token with
                        | HandlerResult.Succeeded -> return AttemptResult.Succeeded
                        | HandlerResult.Failed error -> return AttemptResult.Failed error
                        | HandlerResult.FailedPermanently error -> return AttemptResult.FailedPermanently error
                    with
                    | :? OperationCanceledException when hardStop.IsCancellationRequested ->
                        return AttemptResult.Interrupted
                    | :? OperationCanceledException when lost.IsCancellationRequested -> return AttemptResult.LostClaim
                    | :? OperationCanceledException when timeoutSource.IsCancellationRequested ->
                        return AttemptResult.TimedOut(Option.defaultValue TimeSpan.Zero timeout)
                    | error when permanentOn |> List.exists (fun permanent -> permanent.IsInstanceOfType error) ->
                        return AttemptResult.ThrewPermanently error
                    | error -> return AttemptResult.Threw error
                }

            let elapsed = time.GetElapsedTime started
            let tags = instruments.HandlerMetricTags(context.Request, Attempt.isError result)
            instruments.HandlerExecutions.Add(1L, tags)
            instruments.HandlerTime.Record(elapsed.TotalSeconds, tags)
            instruments.MarkHandler(handlerSpan, result)
            return result
        }

    /// Gives a claim back unrun (no error counted).
    let releaseClaim (request: HandlerRequest) (token: Guid) (reason: string) =
        task {
            match HandlerRequest.transition BackoffPolicy.Default (RequestCommand.Release token) request with
            | Ok released ->
                try
                    match!
                        writer.WriteAsync
                            {
                                Request = released
                                Token = token
                                Transaction = None
                            }
                    with
                    | Ok() -> logger.LogDebug("released request {RequestId}: {Reason}", request.Id, reason)
                    | Error error ->
                        logger.LogWarning(
                            Log.ReleaseRequestFailed,
                            "could not release request {RequestId}: {Reason}",
                            request.Id,
                            error.Message
                        )
                with error ->
                    logger.LogError(Log.ReleaseRequestFailed, error, "error releasing request {RequestId}", request.Id)
            | Error error ->
                logger.LogError(
                    Log.ReleaseRequestFailed,
                    "could not release request {RequestId}: {Reason}",
                    request.Id,
                    error.Message
                )
        }

    let dispose (transaction: IHandlerTransaction option) =
        task {
            match transaction with
            | Some transaction -> do! transaction.DisposeAsync()
            | None -> ()
        }

    /// Writes a recorded outcome, then counts and logs it; the slot is freed once the outcome is queued.
    let record
        (request: HandlerRequest)
        (token: Guid)
        (next: HandlerRequest)
        (kept: IHandlerTransaction option)
        (thrown: exn option)
        (activity: Activity)
        (freeSlot: unit -> unit)
        (hardStop: CancellationToken)
        =
        task {
            let! written =
                task {
                    try
                        let! queued =
                            writer.QueueAsync
                                {
                                    Request = next
                                    Token = token
                                    Transaction = kept
                                }

                        freeSlot ()
                        let! result = queued
                        return Ok result
                    with error ->
                        return Error error
                }

            do! dispose kept

            match written with
            | Ok(Ok()) ->
                match next.State with
                | RequestState.Completed completedAt ->
                    let tags = instruments.RequestMetricTags next
                    instruments.RequestsSucceeded.Add(1L, tags)
                    instruments.ExecutionTime.Record((completedAt - next.EventTimestamp).TotalSeconds, tags)
                | RequestState.Runnable _
                | RequestState.Running _
                | RequestState.Dead
                | RequestState.Canceled _ -> do! failed next thrown activity hardStop
            | Ok(Error(RequestError.CommitFailed _ as refusal)) ->
                // The handler's own commit failed, and the outcome with it: the attempt failed, recorded at
                // once as a thrown handler's (its claim goes to the backoff, not left to lapse).
                let error = InvalidOperationException(refusal.Message)

                match Attempt.decide token (time.GetUtcNow()) (sample ()) (AttemptResult.Threw error) with
                | AttemptDecision.Record(command, _) ->
                    match HandlerRequest.transition request.Backoff command request with
                    | Ok failedNext ->
                        match!
                            writer.WriteAsync
                                {
                                    Request = failedNext
                                    Token = token
                                    Transaction = None
                                }
                        with
                        | Ok() -> do! failed failedNext (Some(error :> exn)) activity hardStop
                        | Error refused ->
                            logger.LogWarning(
                                Log.OutcomeRefused,
                                "the outcome of request {RequestId} was refused: {Reason}",
                                request.Id,
                                refused.Message
                            )
                    | Error refused ->
                        logger.LogError(
                            Log.CoreRefused,
                            "the core refused the outcome of request {RequestId}: {Reason}",
                            request.Id,
                            refused.Message
                        )
                | AttemptDecision.GiveBack _
                | AttemptDecision.Abandon -> ()
            | Ok(Error refusal) ->
                logger.LogWarning(
                    Log.OutcomeRefused,
                    "the outcome of request {RequestId} was refused: {Reason}",
                    request.Id,
                    refusal.Message
                )
            | Error error ->
                logger.LogError(
                    Log.OutcomeWriteFailed,
                    error,
                    "error recording the outcome of request {RequestId}",
                    request.Id
                )

                Instruments.Fail(activity, "error running transaction", error)
        }

    /// Runs one claimed request from its start to its outcome's write. Its slot is freed as soon as its
    /// outcome is queued (or it is given back), so the slot serves the next request while outcomes are
    /// written together.
    let attempt (stopping: CancellationToken) (hardStop: CancellationToken) (request: HandlerRequest) : Task =
        let mutable slotHeld = 1

        let freeSlot () =
            if Interlocked.Exchange(&slotHeld, 0) = 1 then
                Interlocked.Decrement(&busy) |> ignore
                slotFreed.Set()

        task {
            try
                try
                    let token =
                        match HandlerRequest.lease request with
                        | Some lease -> lease.Token
                        | None -> invalidOp $"the store handed out request %O{request.Id} without a claim"

                    use activity = instruments.StartRequestSpan request
                    use _ = Log.requestScope logger request

                    // The code is the live configuration's; the settings (MaxErrors, Priority, Backoff and
                    // Timeout) are the request's own, snapshotted when its event was fanned out.
                    let handler, permanentOn =
                        match Configuration.tryFind request.EventName request.HandlerName configuration with
                        | Some entry -> entry.Handler, entry.Settings.PermanentOn
                        | None -> missingHandler, []

                    // A timeout snapshotted under an earlier, longer lease is held below this lease.
                    let timeout =
                        request.Timeout |> Option.map (fun timeout -> min timeout (options.Lease / 2.0))

                    let leaseLeft = (HandlerRequest.lease request).Value.Until - time.GetUtcNow()

                    match
                        Attempt.admit
                            stopping.IsCancellationRequested
                            leaseLeft
                            (Attempt.leaseNeeded timeout options.Lease)
                    with
                    | AttemptStart.GiveBack reason ->
                        freeSlot ()
                        do! releaseClaim request token reason
                    | AttemptStart.Run ->
                        // Renewed from here until the handler returns (or the hook refuses it).
                        let held = keeper.Hold(request, token)

                        let! hooked =
                            match options.BeforeExecute with
                            | None -> Task.FromResult(Ok(HookResult.Continue request))
                            | Some hook ->
                                task {
                                    try
                                        let! result = hook request stopping
                                        return Ok result
                                    with error ->
                                        return Error error
                                }

                        let refuse (reason: string) (error: exn) =
                            task {
                                logger.LogError(
                                    Log.BeforeExecuteFailed,
                                    error,
                                    "error running before execute for request {RequestId}: {Reason}",
                                    request.Id,
                                    reason
                                )

                                Instruments.Fail(activity, "error running before execute", null)
                                keeper.Drop held
                                freeSlot ()
                                do! releaseClaim request token "the before-execute hook refused it"
                            }

                        match hooked with
                        | Error error -> do! refuse error.Message error
                        | Ok(HookResult.Refuse reason) -> do! refuse reason null
                        | Ok(HookResult.Continue view) ->
                            logger.LogDebug(
                                "executing {HandlerName} request {RequestId}",
                                request.HandlerName.Value,
                                request.Id
                            )

                            let context = HandlerContext(view, fun () -> store.BeginHandlerTransaction request)

                            let! result =
                                run handler context timeout permanentOn hardStop held.Lost.Token activity

                            keeper.Drop held
                            let opened = context.OpenedTransaction

                            let thrown =
                                match result with
                                | AttemptResult.Threw error
                                | AttemptResult.ThrewPermanently error -> Some error
                                | AttemptResult.Succeeded
                                | AttemptResult.Failed _
                                | AttemptResult.FailedPermanently _
                                | AttemptResult.TimedOut _
                                | AttemptResult.Interrupted
                                | AttemptResult.LostClaim -> None

                            match Attempt.decide token (time.GetUtcNow()) (sample ()) result with
                            | AttemptDecision.Abandon ->
                                do! dispose opened

                                logger.LogWarning(
                                    Log.ClaimLost,
                                    "the handler of request {RequestId} was canceled: its attempt lost its claim, so no outcome is recorded",
                                    request.Id
                                )
                            | AttemptDecision.GiveBack reason ->
                                do! dispose opened
                                freeSlot ()
                                do! releaseClaim request token reason
                            | AttemptDecision.Record(command, commit) ->
                                // The handler's work in the store's transaction commits only with a success: a
                                // failed attempt's partial work is discarded (the Go framework commits it).
                                let kept = if commit then opened else None

                                if not commit then
                                    do! dispose opened

                                match HandlerRequest.transition request.Backoff command request with
                                | Error error ->
                                    do! dispose kept

                                    logger.LogError(
                                        Log.CoreRefused,
                                        "the core refused the outcome of request {RequestId}: {Reason}",
                                        request.Id,
                                        error.Message
                                    )
                                | Ok next -> do! record request token next kept thrown activity freeSlot hardStop
                with error ->
                    logger.LogError(Log.LoopFailed, error, "error executing request {RequestId}", request.Id)
            finally
                freeSlot ()
        }

    /// Runs work on the thread pool, tracked until it ends (shutdown and `WhenIdleAsync` wait for it).
    let track (work: unit -> Task) =
        let id = Interlocked.Increment(&sequence)
        let running = Task.Run<unit>(fun () -> task { do! work () })
        inflight[id] <- running

        running.ContinueWith(fun (_: Task) -> inflight.TryRemove id |> ignore, TaskScheduler.Default)
        |> ignore

    /// Starts each claimed request at once, tracking it until its outcome is written.
    let start (stopping: CancellationToken) (hardStop: CancellationToken) (request: HandlerRequest) =
        Interlocked.Increment(&busy) |> ignore
        track (fun () -> attempt stopping hardStop request)

    /// One claim for up to `wanted` requests (at most the free slots); recovers lapsed leases first.
    let claimUpTo (wanted: int) (stopping: CancellationToken) (hardStop: CancellationToken) : Task<ClaimStep> =
        task {
            do! claiming.WaitAsync()

            try
                let asked = min wanted (options.Workers - Volatile.Read(&busy))

                if stopping.IsCancellationRequested || asked <= 0 then
                    return { Asked = 0; Claimed = 0 }
                else
                    let startedAt = time.GetUtcNow()

                    let! claim =
                        task {
                            try
                                let! claim =
                                    store.ClaimRequestsAsync(asked, startedAt, options.Lease, CancellationToken.None)

                                return Ok claim
                            with error ->
                                return Error error
                        }

                    match claim with
                    | Error error ->
                        logger.LogError(Log.ClaimRequestsFailed, error, "error finding unexecuted requests")
                        return { Asked = asked; Claimed = 0 }
                    | Ok claim ->
                        // Reported off the claim loop, so a slow reporter never delays the next claim.
                        for recovered in claim.Recovered do
                            track (fun () ->
                                task {
                                    use _ = Log.requestScope logger recovered
                                    do! failed recovered None null hardStop
                                })

                        if not claim.Claimed.IsEmpty then
                            use _round = instruments.StartRound("execute requests", startedAt)

                            for request in claim.Claimed do
                                start stopping hardStop request

                        return
                            {
                                Asked = asked
                                Claimed = claim.Claimed.Length
                            }
            finally
                claiming.Release() |> ignore
        }

    /// An executor drawing its backoff samples from `Random.Shared`.
    new(store, configuration, options, instruments, logger, time) =
        Executor(store, configuration, options, instruments, logger, time, (fun () -> Random.Shared.NextDouble()))

    /// Slots free now.
    member _.FreeSlots = options.Workers - Volatile.Read(&busy)

    /// Handlers running now (or whose outcomes are being queued).
    member _.Running = Volatile.Read(&busy)

    /// Set whenever a slot frees.
    member internal _.SlotFreed = slotFreed

    /// One claim for the free slots (at most Limit), each claimed request started at once; recovers
    /// lapsed leases first. Requests claimed while `stopping` fires are given back; `hardStop` cancels
    /// running handlers.
    member internal _.ClaimAsync(stopping: CancellationToken, hardStop: CancellationToken) : Task<ClaimStep> =
        claimUpTo options.Limit stopping hardStop

    /// Completes when every started attempt has finished and its outcome is written.
    member _.WhenIdleAsync() : Task =
        task {
            while not inflight.IsEmpty do
                let running = inflight.Values |> Array.ofSeq

                try
                    do! Task.WhenAll running
                with _ ->
                    // Attempts log their own errors; waiting is all that is asked here.
                    ()
        }

    /// Stops renewing leases (after a hard stop: handlers still running let their leases lapse).
    member internal _.StopRenewing() = keeper.Stop()

    /// Runs the executor until nothing runnable is left or Limit requests were claimed, claiming for free
    /// slots only (a slot that frees takes the next request), then waits until every started attempt's
    /// outcome is written. Requests claimed once `stopping` fires are given back; `hardStop` cancels
    /// running handlers. Returns the number claimed. The scheduler's pump does the same without waiting.
    member this.ExecuteAsync(stopping: CancellationToken, hardStop: CancellationToken) : Task<int> =
        task {
            let mutable total = 0
            let mutable going = true

            while going do
                let wanted = options.Limit - total

                if wanted <= 0 || stopping.IsCancellationRequested then
                    going <- false
                elif this.FreeSlots <= 0 then
                    slotFreed.Take() |> ignore

                    if this.FreeSlots <= 0 then
                        do! Wake.anyAsync [ slotFreed.Signalled ] Timeout.InfiniteTimeSpan time CancellationToken.None
                else
                    let! step = claimUpTo wanted stopping hardStop
                    total <- total + step.Claimed
                    going <- step.Full

            do! this.WhenIdleAsync()
            return total
        }
