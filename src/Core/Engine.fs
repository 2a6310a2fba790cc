namespace Events

open System
open System.Collections.Concurrent
open System.Collections.Generic
open System.Diagnostics
open System.Runtime.ExceptionServices
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging
open FsToolkit.ErrorHandling

/// Settings of the processor, which fans events out to handler requests.
type ProcessorOptions =
    {
        /// Events fanned out at once (default 1).
        Workers: int
        /// Events claimed per round (default 50).
        Limit: int
        /// How long a round holds its claimed events before another processor may take them (default 1 min).
        ClaimLease: TimeSpan
        /// Runs before each event is fanned out; may change or refuse it.
        BeforeProcess: BeforeProcess option
    }

    /// Workers 1, Limit 50, ClaimLease 1 minute, no hook: the Go framework's defaults.
    static member Default =
        {
            Workers = 1
            Limit = 50
            ClaimLease = TimeSpan.FromMinutes 1.0
            BeforeProcess = None
        }

/// Settings of the executor, which runs handlers.
type ExecutorOptions =
    {
        /// Handlers run at once (default 2).
        Workers: int
        /// Requests claimed per round (default 50).
        Limit: int
        /// How long a claimed request is held before another executor may recover it, counting one failed
        /// attempt (default 5 min). While a handler runs, its lease is renewed every Lease/3 to Lease from
        /// then; a queued request must still hold half of it (or its handler's timeout) to start.
        Lease: TimeSpan
        /// Runs before each handler; may change the request it sees or refuse to run it.
        BeforeExecute: BeforeExecute option
        /// Told about every thrown exception and every failure that makes a request dead.
        ErrorReporter: IErrorReporter option
    }

    /// Workers 2, Limit 50, Lease 5 minutes, no hook, no reporter: the Go framework's defaults.
    static member Default =
        {
            Workers = 2
            Limit = 50
            Lease = TimeSpan.FromMinutes 5.0
            BeforeExecute = None
            ErrorReporter = None
        }

/// Why engine options were refused.
[<RequireQualifiedAccess>]
type OptionsError =
    /// A worker count below 1.
    | WorkersBelowOne of owner: string * value: int
    /// A limit below 1.
    | LimitBelowOne of owner: string * value: int
    /// A lease or interval that is zero or negative.
    | NotPositive of setting: string * value: TimeSpan
    /// A handler's timeout that does not end before the executor's lease: its attempts could outlive
    /// their claim and run again elsewhere at the same time.
    | TimeoutNotBelowLease of eventName: string * handlerName: string * timeout: TimeSpan * lease: TimeSpan

    /// A sentence that says what is wrong.
    member this.Message =
        match this with
        | WorkersBelowOne(owner, value) -> $"%s{owner} Workers must be at least 1, got %d{value}"
        | LimitBelowOne(owner, value) -> $"%s{owner} Limit must be at least 1, got %d{value}"
        | NotPositive(setting, value) -> $"%s{setting} must be positive, got %O{value}"
        | TimeoutNotBelowLease(eventName, handlerName, timeout, lease) ->
            $"handler %s{handlerName} of event %s{eventName} has Timeout %O{timeout}, which must be shorter than the executor Lease %O{lease}"

/// Checks on engine options, reporting every error at once.
[<RequireQualifiedAccess>]
module EngineOptions =

    let private check condition error : Validation<unit, OptionsError> =
        if condition then
            Validation.ok ()
        else
            Validation.error error

    /// Validates processor options.
    let validateProcessor (options: ProcessorOptions) : Validation<ProcessorOptions, OptionsError> =
        validation {
            let! () =
                check (options.Workers >= 1) (OptionsError.WorkersBelowOne("processor", options.Workers))

            and! () =
                check (options.Limit >= 1) (OptionsError.LimitBelowOne("processor", options.Limit))

            and! () =
                check
                    (options.ClaimLease > TimeSpan.Zero)
                    (OptionsError.NotPositive("processor ClaimLease", options.ClaimLease))

            return options
        }

    /// Validates executor options.
    let validateExecutor (options: ExecutorOptions) : Validation<ExecutorOptions, OptionsError> =
        validation {
            let! () =
                check (options.Workers >= 1) (OptionsError.WorkersBelowOne("executor", options.Workers))

            and! () =
                check (options.Limit >= 1) (OptionsError.LimitBelowOne("executor", options.Limit))

            and! () =
                check (options.Lease > TimeSpan.Zero) (OptionsError.NotPositive("executor Lease", options.Lease))

            return options
        }

    /// Validates executor options against the handlers they will run: every handler's timeout must end
    /// before the lease.
    let validateExecutorFor
        (configuration: Configuration<'handler>)
        (options: ExecutorOptions)
        : Validation<ExecutorOptions, OptionsError> =
        let timeouts =
            Configuration.entries configuration
            |> List.choose (fun (eventName, entry) ->
                match entry.Settings.Timeout with
                | Some timeout when timeout >= options.Lease ->
                    Some(OptionsError.TimeoutNotBelowLease(eventName.Value, entry.Name.Value, timeout, options.Lease))
                | Some _
                | None -> None)

        match validateExecutor options, timeouts with
        | Ok options, [] -> Ok options
        | Ok _, errors -> Error errors
        | Error errors, more -> Error(errors @ more)

    /// Validates a scheduler interval.
    let validateInterval (interval: TimeSpan) : Validation<TimeSpan, OptionsError> =
        check (interval > TimeSpan.Zero) (OptionsError.NotPositive("scheduler Interval", interval))
        |> Validation.map (fun () -> interval)

    /// Throws ArgumentException listing every error, or returns the value.
    let orThrow (paramName: string) (validated: Validation<'T, OptionsError>) : 'T =
        match validated with
        | Ok value -> value
        | Error errors ->
            let messages = errors |> List.map _.Message |> String.concat "; "
            invalidArg paramName $"invalid options: %s{messages}"

/// Log messages, with the structured fields of the item they are about.
module internal Log =
    let eventScope (logger: ILogger) (event: Event) =
        logger.BeginScope(
            [
                KeyValuePair<string, obj>("EventId", event.Id)
                KeyValuePair<string, obj>("EventName", event.Name.Value)
                KeyValuePair<string, obj>("CorrelationId", Option.toNullable event.CorrelationId)
            ]
        )

    let requestScope (logger: ILogger) (request: HandlerRequest) =
        logger.BeginScope(
            [
                KeyValuePair<string, obj>("RequestId", request.Id)
                KeyValuePair<string, obj>("HandlerName", request.HandlerName.Value)
                KeyValuePair<string, obj>("EventId", request.EventId)
                KeyValuePair<string, obj>("EventName", request.EventName.Value)
                KeyValuePair<string, obj>("CorrelationId", Option.toNullable request.CorrelationId)
            ]
        )

/// Writes outcomes in batches: outcomes that arrive while a write is in flight go in the next write
/// together (group commit), so many workers cost few round trips.
[<Sealed>]
type internal OutcomeWriter(store: IEventStore) =
    let pending =
        ConcurrentQueue<struct (OutcomeWrite * TaskCompletionSource<Result<unit, RequestError>>)>()

    let mutable flushing = 0
    let maxBatch = 500

    member private this.Flush() : Task =
        task {
            try
                while not pending.IsEmpty do
                    let batch = ResizeArray()
                    let mutable item = Unchecked.defaultof<_>

                    while batch.Count < maxBatch && pending.TryDequeue(&item) do
                        batch.Add item

                    try
                        let! results =
                            store.RecordOutcomesAsync(
                                [ for struct (outcome, _) in batch -> outcome ],
                                CancellationToken.None
                            )

                        if results.Length <> batch.Count then
                            invalidOp $"the store answered %d{results.Length} results for %d{batch.Count} outcomes"

                        Seq.iter2
                            (fun struct (_, promise: TaskCompletionSource<_>) result ->
                                promise.TrySetResult result |> ignore)
                            batch
                            results
                    with error ->
                        for struct (_, promise) in batch do
                            promise.TrySetException error |> ignore
            finally
                Volatile.Write(&flushing, 0)

            if not pending.IsEmpty then
                this.Start()
        }

    member private this.Start() =
        if Interlocked.CompareExchange(&flushing, 1, 0) = 0 then
            Task.Run<unit>(fun () -> task { do! this.Flush() }) |> ignore

    /// Queues an outcome; completes when it is written (or refused).
    member this.WriteAsync(outcome: OutcomeWrite) : Task<Result<unit, RequestError>> =
        let promise =
            TaskCompletionSource<Result<unit, RequestError>>(TaskCreationOptions.RunContinuationsAsynchronously)

        pending.Enqueue(struct (outcome, promise))
        this.Start()
        promise.Task

/// What became of a handler run.
[<RequireQualifiedAccess>]
type internal RunResult =
    | Succeeded
    | Failed of error: string
    | Threw of exn
    | TimedOut of TimeSpan
    | Interrupted
    | LostClaim

/// An attempt whose handler runs, held by an executor round: its token, and what cancels the handler
/// once a renewal finds the claim lost.
[<Sealed>]
type internal HeldAttempt(request: HandlerRequest, token: Guid) =
    let lost = new CancellationTokenSource()

    member _.Request = request
    member _.Token = token

    /// Cancelled when the attempt lost its claim. Never disposed: it holds no timer, and the handler may
    /// still hold its token.
    member _.Lost = lost

/// The attempts of one executor round whose handlers run, their leases renewed every `period` (one
/// batch per beat) until the round ends.
[<Sealed>]
type internal LeaseKeeper(store: IEventStore, lease: TimeSpan, logger: ILogger, time: TimeProvider) =
    let held = ConcurrentDictionary<Guid, HeldAttempt>()

    // Lease/3, at least a millisecond (no busy loop) and at most a day (the timer's range); the leases
    // are renewed to a full Lease from each beat.
    let period =
        TimeSpan.FromTicks(Math.Clamp((lease / 3.0).Ticks, TimeSpan.TicksPerMillisecond, TimeSpan.TicksPerDay))

    let beat () =
        task {
            let attempts = held.Values |> List.ofSeq

            if not attempts.IsEmpty then
                let until = Backoff.addSaturating (time.GetUtcNow()) lease

                try
                    let! results =
                        store.RenewLeasesAsync(
                            [ for attempt in attempts -> attempt.Request.Id, attempt.Token ],
                            until,
                            CancellationToken.None
                        )

                    if results.Length <> attempts.Length then
                        invalidOp $"the store answered %d{results.Length} results for %d{attempts.Length} renewals"

                    for attempt, result in List.zip attempts results do
                        match result with
                        | Ok() -> ()
                        | Error refusal ->
                            // Only if its handler still runs: a handler that returned was dropped before its
                            // outcome was written, so a refusal caused by that outcome is not a lost claim.
                            if held.TryRemove(KeyValuePair(attempt.Request.Id, attempt)) then
                                use _ = Log.requestScope logger attempt.Request

                                logger.LogWarning(
                                    "the lease of request {RequestId} ({HandlerName}) could not be renewed: {Reason}; the attempt lost its claim, so its handler is canceled and its outcome will be refused",
                                    attempt.Request.Id,
                                    attempt.Request.HandlerName.Value,
                                    refusal.Message
                                )

                                attempt.Lost.Cancel()
                with error ->
                    logger.LogError(
                        error,
                        "error renewing the leases of {Count} running requests; retrying at the next beat",
                        attempts.Length
                    )
        }

    /// Renews the held attempts' leases every beat until `stop` fires.
    member _.RunAsync(stop: CancellationToken) : Task =
        task {
            let mutable running = true

            while running do
                try
                    do! Task.Delay(period, time, stop)
                    do! beat ()
                with :? OperationCanceledException when stop.IsCancellationRequested ->
                    running <- false
        }

    /// Renews the attempt's lease from now on; returns it, to be dropped when its handler returns.
    member _.Hold(request: HandlerRequest, token: Guid) : HeldAttempt =
        let attempt = HeldAttempt(request, token)
        held[request.Id] <- attempt
        attempt

    /// Stops renewing the attempt's lease.
    member _.Drop(attempt: HeldAttempt) =
        held.TryRemove(KeyValuePair(attempt.Request.Id, attempt)) |> ignore

/// The processor: claims unprocessed events and fans each out to one handler request per configured
/// handler, atomically.
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

    let release (claims: ClaimedEvent list) =
        task {
            if not claims.IsEmpty then
                try
                    do! store.ReleaseEventsAsync(claims, CancellationToken.None)
                with error ->
                    logger.LogError(error, "error releasing {Count} claimed events", claims.Length)
        }

    let prepare (stopping: CancellationToken) (claim: ClaimedEvent) : Task<Choice<ProcessedEvent * Activity, unit>> =
        task {
            let event = claim.Event

            let tags =
                [
                    yield instruments.Tag("event.id", string event.Id)
                    yield instruments.Tag("event.type", event.Name.Value)
                    yield instruments.Tag("correlation_id", event.CorrelationId |> Option.map string |> Option.toObj)
                    match event.Entity with
                    | Some entity -> yield instruments.Tag("event.entity.id", entity.Id)
                    | None -> ()
                ]

            let activity =
                instruments.StartLinked($"process %s{event.Name.Value} event", event.Trace, tags)

            use _ = Log.eventScope logger event

            let fail (reason: string) (error: exn) =
                logger.LogError(error, "error running before process for event {EventId}: {Reason}", event.Id, reason)

                if not (isNull activity) then
                    activity.SetStatus(ActivityStatusCode.Error, "error running before process")
                    |> ignore

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
                            "no handlers mapped for {EventName} event {EventId}",
                            event.Name.Value,
                            event.Id
                        )

                    let requests =
                        handlers
                        |> List.map (fun entry ->
                            HandlerRequest.create (Guid.CreateVersion7 now) event entry.Name entry.Settings)

                    let processed =
                        {
                            EventId = claim.Event.Id
                            Token = claim.Token
                            ProcessedAt = now
                            Requests = requests
                        }

                    return Choice1Of2(processed, activity)
        }

    /// Raised after a round created handler requests, so the executor can start at once.
    [<CLIEvent>]
    member _.RequestsCreated = requestsCreated.Publish

    /// One round: claims up to Limit events, fans them out on Workers workers, commits the batch.
    /// Stops before starting work on its next event once `stopping` fires. Returns the number claimed.
    member _.ProcessAsync(stopping: CancellationToken) : Task<int> =
        task {
            if stopping.IsCancellationRequested then
                return 0
            else
                use round = instruments.Source.StartActivity "process events"

                let! claims =
                    task {
                        try
                            let! claims =
                                store.ClaimEventsAsync(
                                    options.Limit,
                                    time.GetUtcNow(),
                                    options.ClaimLease,
                                    CancellationToken.None
                                )

                            return Ok claims
                        with error ->
                            return Error error
                    }

                match claims with
                | Error error ->
                    logger.LogError(error, "error finding unprocessed events")

                    if not (isNull round) then
                        round.SetStatus(ActivityStatusCode.Error, "error finding unprocessed events")
                        |> ignore

                    return 0
                | Ok claims ->
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

                    let ready =
                        Array.zip claimArray prepared
                        |> Array.choose (fun (claim, result) ->
                            match result with
                            | Choice1Of2(processed, activity) -> Some(claim, processed, activity)
                            | Choice2Of2() -> None)

                    let refused =
                        Array.zip claimArray prepared
                        |> Array.choose (fun (claim, result) ->
                            match result with
                            | Choice1Of2 _ -> None
                            | Choice2Of2() -> Some claim)
                        |> List.ofArray

                    do! release refused

                    if ready.Length > 0 then
                        try
                            let! results =
                                store.CommitProcessingAsync(
                                    [ for _, processed, _ in ready -> processed ],
                                    CancellationToken.None
                                )

                            if results.Length <> ready.Length then
                                invalidOp
                                    $"the store answered %d{results.Length} results for %d{ready.Length} processed events"

                            let mutable created = false

                            for (claim, processed, activity), result in Seq.zip ready results do
                                let tags = [| instruments.Tag("event.type", claim.Event.Name.Value) |]

                                match result with
                                | Ok() ->
                                    instruments.EventsProcessed.Add(1L, tags)

                                    instruments.ProcessingTime.Record(
                                        (processed.ProcessedAt - claim.Event.Timestamp).TotalSeconds,
                                        tags
                                    )

                                    created <- created || not processed.Requests.IsEmpty
                                | Error error ->
                                    logger.LogDebug("skipped event {EventId}: {Reason}", claim.Event.Id, error.Message)

                                if not (isNull activity) then
                                    activity.Dispose()

                            if created then
                                requestsCreated.Trigger()
                        with error ->
                            for claim, _, activity in ready do
                                instruments.EventsFailed.Add(1L, instruments.Tag("event.type", claim.Event.Name.Value))
                                use _ = Log.eventScope logger claim.Event
                                logger.LogError(error, "error processing event {EventId}", claim.Event.Id)

                                if not (isNull activity) then
                                    activity
                                        .AddException(error)
                                        .SetStatus(ActivityStatusCode.Error, "error processing event")
                                    |> ignore

                                    activity.Dispose()

                            do! release [ for claim, _, _ in ready -> claim ]

                    return claimArray.Length
        }

/// The executor: claims runnable handler requests and runs their handlers on a pool of workers,
/// recording each outcome through the core's state machine. While handlers run it renews their leases
/// (heartbeats), so a handler that runs longer than the lease keeps its claim: a request runs at most
/// once at a time however long its handler takes.
[<Sealed>]
type Executor
    (
        store: IEventStore,
        configuration: Configuration<Handler>,
        options: ExecutorOptions,
        instruments: Instruments,
        logger: ILogger,
        time: TimeProvider
    ) =
    let options =
        EngineOptions.validateExecutorFor configuration options
        |> EngineOptions.orThrow (nameof options)

    let writer = OutcomeWriter store

    /// The Go framework's stand-in for a request whose handler is not configured: it always fails.
    let missingHandler: Handler =
        fun _ _ -> Task.FromResult(HandlerResult.Failed "handler request has no configured handler")

    let requestTags (request: HandlerRequest) =
        [|
            instruments.Tag("request.event.type", request.EventName.Value)
            instruments.Tag("request.type", request.HandlerName.Value)
        |]

    let report (failure: ErrorReport) =
        match options.ErrorReporter with
        | None -> false
        | Some reporter ->
            try
                reporter.Report failure
            with error ->
                logger.LogError(
                    error,
                    "the error reporter threw while reporting request {RequestId}",
                    failure.Request.Id
                )

                false

    /// Counts, logs and reports a failed attempt that was recorded.
    let failed (request: HandlerRequest) (thrown: exn option) (activity: Activity) =
        let retryable = not (HandlerRequest.isDead request)
        let error = request.LastError |> Option.defaultValue ""

        let tags =
            Array.append
                (requestTags request)
                [|
                    instruments.Tag("request.retryable", retryable)
                    instruments.Tag("request.errors", request.Errors)
                |]

        instruments.RequestsFailed.Add(1L, tags)

        let reported =
            if thrown.IsSome || not retryable then
                report
                    {
                        Request = request
                        Error = error
                        Exception = thrown
                        StackTrace = thrown |> Option.bind (fun e -> Option.ofObj e.StackTrace)
                        Retryable = retryable
                    }
            else
                false

        let level = if retryable then LogLevel.Warning else LogLevel.Error

        logger.Log(
            level,
            Option.toObj thrown,
            "error while executing handler request {RequestId} ({HandlerName}): {Error}; last attempt at {LastAttemptAt}, error reported: {ErrorReported}, retryable: {Retryable}, errors: {Errors}",
            request.Id,
            request.HandlerName.Value,
            error,
            Option.toNullable request.LastAttemptAt,
            reported,
            retryable,
            request.Errors
        )

        if not retryable && not (isNull activity) then
            activity.SetStatus(ActivityStatusCode.Error, "error while executing handler request")
            |> ignore

    let run
        (handler: Handler)
        (context: HandlerContext)
        (timeout: TimeSpan option)
        (hardStop: CancellationToken)
        (lost: CancellationToken)
        =
        task {
            use handlerSpan =
                instruments.Source.StartActivity $"%s{context.Request.HandlerName.Value} handler"

            use timeoutSource = CancellationTokenSource.CreateLinkedTokenSource(hardStop, lost)
            timeout |> Option.iter timeoutSource.CancelAfter
            let started = Stopwatch.GetTimestamp()

            let! result =
                task {
                    try
                        match! handler context timeoutSource.Token with
                        | HandlerResult.Succeeded -> return RunResult.Succeeded
                        | HandlerResult.Failed error -> return RunResult.Failed error
                    with
                    | :? OperationCanceledException when hardStop.IsCancellationRequested ->
                        return RunResult.Interrupted
                    | :? OperationCanceledException when lost.IsCancellationRequested -> return RunResult.LostClaim
                    | :? OperationCanceledException when timeoutSource.IsCancellationRequested ->
                        return RunResult.TimedOut(Option.defaultValue TimeSpan.Zero timeout)
                    | error -> return RunResult.Threw error
                }

            let elapsed = Stopwatch.GetElapsedTime started

            let isError =
                match result with
                | RunResult.Succeeded -> false
                | RunResult.Failed _
                | RunResult.Threw _
                | RunResult.TimedOut _
                | RunResult.Interrupted
                | RunResult.LostClaim -> true

            let tags =
                [|
                    instruments.Tag("event_handler.name", context.Request.HandlerName.Value)
                    instruments.Tag("event.type", context.Request.EventName.Value)
                    instruments.Tag("event_handler.error", isError)
                |]

            instruments.HandlerExecutions.Add(1L, tags)
            instruments.HandlerTime.Record(elapsed.TotalSeconds, tags)

            if not (isNull handlerSpan) then
                match result with
                | RunResult.Succeeded -> ()
                | RunResult.Threw error ->
                    handlerSpan
                        .SetTag(instruments.Name "request.event.panic", error.Message)
                        .AddException(error)
                        .SetStatus(ActivityStatusCode.Error, "handler threw while executing handler request")
                    |> ignore
                | RunResult.Failed _
                | RunResult.TimedOut _
                | RunResult.Interrupted
                | RunResult.LostClaim ->
                    handlerSpan.SetStatus(ActivityStatusCode.Error, "error handling event")
                    |> ignore

            return result
        }

    let write (request: HandlerRequest) (token: Guid) (transaction: IHandlerTransaction option) =
        task {
            let! written =
                task {
                    try
                        let! result =
                            writer.WriteAsync
                                {
                                    Request = request
                                    Token = token
                                    Transaction = transaction
                                }

                        return Ok result
                    with error ->
                        return Error error
                }

            match transaction with
            | Some transaction -> do! transaction.DisposeAsync()
            | None -> ()

            match written with
            | Ok result -> return result
            | Error error ->
                ExceptionDispatchInfo.Capture(error).Throw()
                return Unchecked.defaultof<_>
        }

    let releaseClaim (request: HandlerRequest) (token: Guid) (reason: string) =
        task {
            match HandlerRequest.transition BackoffPolicy.Default (RequestCommand.Release token) request with
            | Ok released ->
                match! write released token None with
                | Ok() -> logger.LogDebug("released request {RequestId}: {Reason}", request.Id, reason)
                | Error error ->
                    logger.LogWarning("could not release request {RequestId}: {Reason}", request.Id, error.Message)
            | Error error ->
                logger.LogError("could not release request {RequestId}: {Reason}", request.Id, error.Message)
        }

    /// Runs one claimed request. Its outcome is queued for the group-committed write and awaited in a task
    /// added to `pending`, so the worker is free for the next request while outcomes are written together.
    let execute
        (stopping: CancellationToken)
        (hardStop: CancellationToken)
        (keeper: LeaseKeeper)
        (pending: ConcurrentQueue<Task>)
        (request: HandlerRequest)
        =
        task {
            let token =
                match HandlerRequest.lease request with
                | Some lease -> lease.Token
                | None -> invalidOp $"the store handed out request %O{request.Id} without a claim"

            let tags =
                [
                    yield instruments.Tag("request.id", string request.Id)
                    yield instruments.Tag("request.event.id", string request.EventId)
                    yield instruments.Tag("request.event.type", request.EventName.Value)
                    yield instruments.Tag("request.type", request.HandlerName.Value)
                    yield instruments.Tag("correlation_id", request.CorrelationId |> Option.map string |> Option.toObj)
                    match request.EventEntity with
                    | Some entity -> yield instruments.Tag("request.event.entity.id", entity.Id)
                    | None -> ()
                ]

            // Ended here, or by the deferred outcome write when there is one.
            let activity =
                instruments.StartLinked($"execute %s{request.HandlerName.Value} request", request.EventTrace, tags)

            let mutable deferred = false
            use _ = Log.requestScope logger request

            try

                let handler, settings =
                    match Configuration.tryFind request.EventName request.HandlerName configuration with
                    | Some entry -> entry.Handler, entry.Settings
                    | None -> missingHandler, HandlerSettings.defaults

                // A request that waited in its batch for a worker must still hold enough of its lease to run:
                // its timeout, or half the lease for a handler without one. Its lease is renewed only from its
                // start on (every Lease/3), so otherwise its claim could lapse before the first renewal, and
                // another process recover it and run it at the same time.
                let needed =
                    match settings.Timeout with
                    | Some timeout -> timeout
                    | None -> options.Lease / 2.0

                let leaseUntil = (HandlerRequest.lease request).Value.Until

                if stopping.IsCancellationRequested then
                    do! releaseClaim request token "the executor is shutting down"
                elif leaseUntil - time.GetUtcNow() < needed then
                    do! releaseClaim request token "too little of its lease is left to run it"
                else
                    // Renewed from here until the handler returns (or the hook refuses it).
                    let attempt = keeper.Hold(request, token)

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
                                error,
                                "error running before execute for request {RequestId}: {Reason}",
                                request.Id,
                                reason
                            )

                            if not (isNull activity) then
                                activity.SetStatus(ActivityStatusCode.Error, "error running before execute")
                                |> ignore

                            keeper.Drop attempt
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
                        let! result = run handler context settings.Timeout hardStop attempt.Lost.Token
                        keeper.Drop attempt
                        let now = time.GetUtcNow()

                        let command, thrown =
                            match result with
                            | RunResult.Succeeded -> Some(RequestCommand.Succeed(token, now)), None
                            | RunResult.Failed error ->
                                Some(RequestCommand.Fail(token, now, error, Random.Shared.NextDouble())), None
                            | RunResult.Threw error ->
                                let message = $"handler threw %s{error.GetType().FullName}: %s{error.Message}"
                                Some(RequestCommand.Fail(token, now, message, Random.Shared.NextDouble())), Some error
                            | RunResult.TimedOut timeout ->
                                let message = $"handler timed out after %O{timeout}"
                                Some(RequestCommand.Fail(token, now, message, Random.Shared.NextDouble())), None
                            | RunResult.Interrupted
                            | RunResult.LostClaim -> None, None

                        // The handler's work in the store's transaction commits only with a success: a failed
                        // or interrupted attempt's partial work is discarded (the Go framework commits it).
                        let kept, discarded =
                            match result with
                            | RunResult.Succeeded -> context.OpenedTransaction, None
                            | RunResult.Failed _
                            | RunResult.Threw _
                            | RunResult.TimedOut _
                            | RunResult.Interrupted
                            | RunResult.LostClaim -> None, context.OpenedTransaction

                        match discarded with
                        | Some transaction -> do! transaction.DisposeAsync()
                        | None -> ()

                        match command with
                        | None ->
                            match result with
                            | RunResult.LostClaim ->
                                logger.LogWarning(
                                    "the handler of request {RequestId} was canceled: its attempt lost its claim, so no outcome is recorded",
                                    request.Id
                                )
                            | RunResult.Interrupted
                            | RunResult.Succeeded
                            | RunResult.Failed _
                            | RunResult.Threw _
                            | RunResult.TimedOut _ ->
                                do! releaseClaim request token "the handler was canceled by a hard shutdown"
                        | Some command ->
                            match HandlerRequest.transition settings.Backoff command request with
                            | Error error ->
                                match kept with
                                | Some transaction -> do! transaction.DisposeAsync()
                                | None -> ()

                                logger.LogError(
                                    "the core refused the outcome of request {RequestId}: {Reason}",
                                    request.Id,
                                    error.Message
                                )
                            | Ok next ->
                                deferred <- true

                                let finish =
                                    task {
                                        try
                                            let! written =
                                                task {
                                                    try
                                                        let! result = write next token kept
                                                        return Ok result
                                                    with error ->
                                                        return Error error
                                                }

                                            match written with
                                            | Ok(Ok()) ->
                                                match next.State with
                                                | RequestState.Completed completedAt ->
                                                    let tags = requestTags next
                                                    instruments.RequestsSucceeded.Add(1L, tags)

                                                    instruments.ExecutionTime.Record(
                                                        (completedAt - next.EventTimestamp).TotalSeconds,
                                                        tags
                                                    )
                                                | RequestState.Runnable _
                                                | RequestState.Running _
                                                | RequestState.Dead
                                                | RequestState.Canceled _ -> failed next thrown activity
                                            | Ok(Error refusal) ->
                                                logger.LogWarning(
                                                    "the outcome of request {RequestId} was refused: {Reason}",
                                                    request.Id,
                                                    refusal.Message
                                                )
                                            | Error error ->
                                                logger.LogError(
                                                    error,
                                                    "error recording the outcome of request {RequestId}",
                                                    request.Id
                                                )

                                                if not (isNull activity) then
                                                    activity.SetStatus(
                                                        ActivityStatusCode.Error,
                                                        "error running transaction"
                                                    )
                                                    |> ignore
                                        finally
                                            if not (isNull activity) then
                                                activity.Dispose()
                                    }

                                pending.Enqueue finish
            finally
                if not deferred && not (isNull activity) then
                    activity.Dispose()
        }

    /// One round: recovers lapsed leases, claims up to Limit runnable requests and runs them on Workers
    /// workers, renewing the leases of the running ones in one batch every Lease/3 (a handler whose
    /// renewal is refused lost its claim: it is canceled and its outcome dropped). Requests not started
    /// once `stopping` fires are released; `hardStop` cancels running handlers and stops the renewals.
    /// Returns the number claimed.
    member _.ExecuteAsync(stopping: CancellationToken, hardStop: CancellationToken) : Task<int> =
        task {
            if stopping.IsCancellationRequested then
                return 0
            else
                use round = instruments.Source.StartActivity "execute requests"

                let! claim =
                    task {
                        try
                            let! claim =
                                store.ClaimRequestsAsync(
                                    options.Limit,
                                    time.GetUtcNow(),
                                    options.Lease,
                                    CancellationToken.None
                                )

                            return Ok claim
                        with error ->
                            return Error error
                    }

                match claim with
                | Error error ->
                    logger.LogError(error, "error finding unexecuted requests")

                    if not (isNull round) then
                        round.SetStatus(ActivityStatusCode.Error, "error finding unexecuted requests")
                        |> ignore

                    return 0
                | Ok claim ->
                    for recovered in claim.Recovered do
                        use _ = Log.requestScope logger recovered
                        failed recovered None null

                    if not claim.Claimed.IsEmpty then
                        // One renewal loop for the round, stopped when its last handler returns, or at a hard
                        // stop (handlers canceled then give their claims back; any that do not, lapse).
                        let keeper = LeaseKeeper(store, options.Lease, logger, time)
                        use roundOver = CancellationTokenSource.CreateLinkedTokenSource hardStop
                        let renewing = keeper.RunAsync roundOver.Token
                        let pending = ConcurrentQueue<Task>()

                        let! ran =
                            task {
                                try
                                    do!
                                        Parallel.ForEachAsync(
                                            claim.Claimed,
                                            ParallelOptions(MaxDegreeOfParallelism = options.Workers),
                                            fun request _ -> ValueTask(execute stopping hardStop keeper pending request)
                                        )

                                    // The outcomes written after their workers moved on.
                                    do! Task.WhenAll pending
                                    return None
                                with error ->
                                    return Some error
                            }

                        roundOver.Cancel()
                        do! renewing

                        match ran with
                        | Some error -> ExceptionDispatchInfo.Capture(error).Throw()
                        | None -> ()

                    return claim.Claimed.Length
        }
