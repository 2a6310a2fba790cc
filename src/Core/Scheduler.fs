namespace Events

open System
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging
open Microsoft.Extensions.Logging.Abstractions
open FsToolkit.ErrorHandling

/// How a scheduler drives the processor and the executor.
[<RequireQualifiedAccess>]
type SchedulerKind =
    /// One loop: on each tick, process then execute.
    | Cooperative
    /// Two loops on the same interval, one processing, one executing.
    | Concurrent

/// Settings of a scheduler.
type SchedulerOptions =
    {
        /// Cooperative (default) or concurrent.
        Kind: SchedulerKind
        /// The polling interval: the longest a loop waits when no wake-up signal arrives (default 1 s).
        Interval: TimeSpan
        /// Prefixes every metric, span attribute and log key (default none).
        TelemetryPrefix: string
        /// After the caller's shutdown deadline cancels running handlers, how long shutdown waits for them
        /// to return (default 5 s).
        ShutdownGrace: TimeSpan
    }

    /// Cooperative, 1 s, no prefix, 5 s grace.
    static member Default =
        {
            Kind = SchedulerKind.Cooperative
            Interval = TimeSpan.FromSeconds 1.0
            TelemetryPrefix = ""
            ShutdownGrace = TimeSpan.FromSeconds 5.0
        }

/// A wake-up a loop can wait on with a timeout; signals that arrive while the loop works are kept.
[<Sealed>]
type internal WakeSignal() =
    let mutable promise =
        TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)

    member _.Set() =
        Volatile.Read(&promise).TrySetResult() |> ignore

    /// Returns when signalled, when the interval passes or when the token fires; resets the signal.
    member _.WaitAsync(interval: TimeSpan, time: TimeProvider, cancellationToken: CancellationToken) : Task =
        task {
            let current = Volatile.Read(&promise)

            if not current.Task.IsCompleted then
                use delay = CancellationTokenSource.CreateLinkedTokenSource cancellationToken
                let sleeping = Task.Delay(interval, time, delay.Token)
                let! _ = Task.WhenAny(current.Task, sleeping)
                delay.Cancel()

            if current.Task.IsCompleted then
                Interlocked.CompareExchange(
                    &promise,
                    TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously),
                    current
                )
                |> ignore
        }

/// Drives a processor and an executor over one store: start, pause, resume, shut down.
[<Sealed>]
type Scheduler
    (
        store: IEventStore,
        configuration: Configuration<Handler>,
        processorOptions: ProcessorOptions,
        executorOptions: ExecutorOptions,
        options: SchedulerOptions,
        logger: ILogger,
        time: TimeProvider
    ) =
    let options =
        EngineOptions.validateInterval options.Interval
        |> Validation.map (fun _ -> options)
        |> EngineOptions.orThrow (nameof options)

    let gate = obj ()
    let mutable status = SchedulerStatus.NotStarted
    let mutable gaugesOn = false
    let mutable cached: (DateTimeOffset * StoreStats) option = None
    let stopping = new CancellationTokenSource()
    let hardStop = new CancellationTokenSource()
    let processWake = WakeSignal()
    let executeWake = WakeSignal()
    let mutable loops: Task[] = [||]

    /// The gauges read the store at most twice a second, and only while the scheduler is started.
    let stats () =
        if not gaugesOn then
            None
        else
            let now = time.GetUtcNow()

            match cached with
            | Some(at, stats) when now - at < TimeSpan.FromMilliseconds 500.0 -> Some stats
            | _ ->
                try
                    let stats = store.StatsAsync(now, CancellationToken.None).GetAwaiter().GetResult()
                    cached <- Some(now, stats)
                    Some stats
                with error ->
                    logger.LogError(error, "error reading the store's gauges")
                    None

    let instruments =
        new Instruments(options.TelemetryPrefix, stats, (fun () -> time.GetUtcNow()))

    let processor =
        Processor(store, configuration, processorOptions, instruments, logger, time)

    let executor =
        Executor(store, configuration, executorOptions, instruments, logger, time)

    let statusTag (value: SchedulerStatus) =
        Scheduling.gaugeState value
        |> Option.map (fun state -> instruments.Tag("events.scheduler.state", state))

    let move (command: SchedulerCommand) =
        lock gate (fun () ->
            match Scheduling.transition command status with
            | Ok next ->
                if next <> status then
                    statusTag status
                    |> Option.iter (fun tag -> instruments.SchedulerStatus.Add(-1L, tag))

                    statusTag next
                    |> Option.iter (fun tag -> instruments.SchedulerStatus.Add(1L, tag))

                status <- next
                Ok next
            | Error error -> Error error)

    let isRunning () = status = SchedulerStatus.Running

    let subscription =
        store.WorkArrived.Subscribe(fun signal ->
            match signal with
            | WorkSignal.EventsAppended -> processWake.Set()
            | WorkSignal.RequestsReady -> executeWake.Set())

    do processor.RequestsCreated.Add(fun () -> executeWake.Set())

    /// Runs rounds while they come back full (a backlog), so a backlog drains without waiting a tick.
    let drain (round: unit -> Task<int>) (limit: int) =
        task {
            let mutable full = true

            while full && isRunning () && not stopping.IsCancellationRequested do
                try
                    let! claimed = round ()
                    full <- claimed >= limit
                with error ->
                    logger.LogError(error, "error in a scheduler round")
                    full <- false
        }

    let processRound () = processor.ProcessAsync stopping.Token

    let executeRound () =
        executor.ExecuteAsync(stopping.Token, hardStop.Token)

    let loop (wait: unit -> Task) (work: unit -> Task) =
        Task.Run<unit>(fun () ->
            task {
                while not stopping.IsCancellationRequested do
                    if isRunning () then
                        do! work ()

                    do! wait ()
            })
        :> Task

    /// A scheduler on the system clock, logging nowhere.
    new(store, configuration, processorOptions, executorOptions, options) =
        new Scheduler(
            store,
            configuration,
            processorOptions,
            executorOptions,
            options,
            NullLogger.Instance,
            TimeProvider.System
        )

    /// The scheduler's status.
    member _.Status = status

    /// The processor it drives.
    member _.Processor = processor

    /// The executor it drives.
    member _.Executor = executor

    /// Starts the loops; refused unless not started yet.
    member _.Start() =
        match move SchedulerCommand.Start with
        | Error error -> invalidOp error.Message
        | Ok _ ->
            gaugesOn <- true
            let interval = options.Interval

            let waitEither () =
                // The cooperative loop wakes on either signal.
                let both = new CancellationTokenSource()

                task {
                    let linked =
                        CancellationTokenSource.CreateLinkedTokenSource(stopping.Token, both.Token)

                    let! _ =
                        Task.WhenAny(
                            processWake.WaitAsync(interval, time, linked.Token),
                            executeWake.WaitAsync(interval, time, linked.Token)
                        )

                    both.Cancel()
                    linked.Dispose()
                    both.Dispose()
                }
                :> Task

            loops <-
                match options.Kind with
                | SchedulerKind.Cooperative ->
                    [|
                        loop waitEither (fun () ->
                            task {
                                do! drain processRound processorOptions.Limit
                                do! drain executeRound executorOptions.Limit
                            })
                    |]
                | SchedulerKind.Concurrent ->
                    [|
                        loop (fun () -> processWake.WaitAsync(interval, time, stopping.Token)) (fun () ->
                            drain processRound processorOptions.Limit)
                        loop (fun () -> executeWake.WaitAsync(interval, time, stopping.Token)) (fun () ->
                            drain executeRound executorOptions.Limit)
                    |]

    /// Skips ticks until resumed (ignored unless running).
    member _.Pause() = move SchedulerCommand.Pause |> ignore

    /// Ticks again after a pause (ignored unless paused).
    member _.Resume() =
        match move SchedulerCommand.Resume with
        | Ok SchedulerStatus.Running ->
            processWake.Set()
            executeWake.Set()
        | Ok _
        | Error _ -> ()

    /// Stops claiming, lets running handlers finish until `deadline` fires, then cancels them and waits
    /// up to ShutdownGrace for them to return. Claimed work not started is released. Refused unless
    /// running or paused.
    member _.ShutdownAsync(deadline: CancellationToken) : Task =
        task {
            match move SchedulerCommand.Shutdown with
            | Error error -> invalidOp error.Message
            | Ok _ ->
                stopping.Cancel()
                let all = Task.WhenAll loops
                let expired = Task.Delay(Timeout.InfiniteTimeSpan, deadline)
                let! first = Task.WhenAny(all, expired)

                if first <> all then
                    logger.LogWarning("shutdown deadline reached: canceling running handlers")
                    hardStop.Cancel()
                    let! _ = Task.WhenAny(all, Task.Delay(options.ShutdownGrace, time))

                    if not all.IsCompleted then
                        logger.LogError(
                            "handlers still running {Grace} after they were canceled; their leases will lapse",
                            options.ShutdownGrace
                        )

                gaugesOn <- false
                subscription.Dispose()
        }

    interface IDisposable with
        member _.Dispose() =
            subscription.Dispose()
            stopping.Dispose()
            hardStop.Dispose()
            (instruments :> IDisposable).Dispose()
