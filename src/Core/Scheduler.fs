namespace Events.Core

open System
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging
open Microsoft.Extensions.Logging.Abstractions
open FsToolkit.ErrorHandling

/// Drives a processor and an executor over one store: start, pause, resume, shut down. Its loops are
/// pumps: the processor's side claims events while there are any, the executor's side claims requests
/// whenever it has free slots and work may be waiting, and neither ever waits for a running handler.
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
    let processorOptions, executorOptions, options =
        EngineOptions.validateAll configuration processorOptions executorOptions options
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
    let mutable fanOutOnAppend: IDisposable = null

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
                    logger.LogError(Log.GaugesFailed, error, "error reading the store's gauges")
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

    /// Unreadable stored items are counted and logged as the store sets them aside.
    let setAside =
        match store with
        | :? ISetAsideItems as items ->
            items.ItemsSetAside.Subscribe(fun aside ->
                for item in aside do
                    let kind =
                        match item.Kind with
                        | StoredItemKind.Event -> "event"
                        | StoredItemKind.Request -> "request"

                    instruments.ItemsSetAside.Add(1L, instruments.Tag("item.kind", kind))

                    logger.LogError(
                        Log.ItemSetAside,
                        "set aside stored {Kind} {Id}, which could not be read: {Reason}",
                        kind,
                        item.Id,
                        item.Reason
                    ))
        | _ ->
            { new IDisposable with
                member _.Dispose() = ()
            }

    /// One pump loop, with the processor's side, the executor's side, or both (cooperative). Each side
    /// knows whether work may be waiting ("more"): after a full claim, a wake-up or an interval. The
    /// processor's side runs rounds while they come back full; the executor's side claims while it has
    /// free slots and work may be waiting. With nothing to do now, the loop waits for a wake-up of a side
    /// with no known work, for a free slot if the executor's side has work but no slot, or for the
    /// interval.
    let pump (processing: bool) (executing: bool) =
        Task.Run<unit>(fun () ->
            task {
                let mutable processMore = processing
                let mutable executeMore = executing

                while not stopping.IsCancellationRequested do
                    if isRunning () then
                        try
                            if processing && processMore then
                                let! claimed = processor.ProcessAsync stopping.Token
                                processMore <- claimed >= processorOptions.Limit

                            if executing && executeMore && executor.FreeSlots > 0 then
                                let! step = executor.ClaimAsync(stopping.Token, hardStop.Token)
                                executeMore <- step.Full
                        with error ->
                            logger.LogError(Log.LoopFailed, error, "error in a scheduler loop")
                            processMore <- false
                            executeMore <- false

                    let ready =
                        isRunning ()
                        && (processing && processMore || executing && executeMore && executor.FreeSlots > 0)

                    if not ready then
                        let waits =
                            [
                                if processing then
                                    processWake.Signalled
                                if executing then
                                    if executeMore then
                                        executor.SlotFreed.Signalled
                                    else
                                        executeWake.Signalled
                            ]

                        let before = time.GetTimestamp()
                        do! Wake.anyAsync waits options.Interval time stopping.Token
                        let polled = time.GetElapsedTime before >= options.Interval
                        // Each loop takes only its own sides' signals.
                        if processing && (processWake.Take() || polled) then
                            processMore <- true

                        if executing then
                            executor.SlotFreed.Take() |> ignore

                            if executeWake.Take() || polled then
                                executeMore <- true
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

            // Events appended in this process are fanned out in their own transaction while running.
            match store, processor.AppendFanOut isRunning with
            | :? IFanOutOnAppend as fanning, Some fanOut -> fanOutOnAppend <- fanning.UseFanOut fanOut
            | _ -> ()

            loops <-
                match options.Kind with
                | SchedulerKind.Cooperative -> [| pump true true |]
                | SchedulerKind.Concurrent -> [| pump true false; pump false true |]

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
    /// up to ShutdownGrace for them to return. Claimed work not started is given back. Refused unless
    /// running or paused.
    member _.ShutdownAsync(deadline: CancellationToken) : Task =
        task {
            match move SchedulerCommand.Shutdown with
            | Error error -> invalidOp error.Message
            | Ok _ ->
                if not (isNull fanOutOnAppend) then
                    fanOutOnAppend.Dispose()

                stopping.Cancel()

                let finished =
                    task {
                        do! Task.WhenAll loops
                        do! executor.WhenIdleAsync()
                    }
                    :> Task

                let expired = Task.Delay(Timeout.InfiniteTimeSpan, deadline)
                let! first = Task.WhenAny(finished, expired)

                if first <> finished then
                    logger.LogWarning(Log.ShutdownDeadline, "shutdown deadline reached: canceling running handlers")
                    hardStop.Cancel()
                    let! _ = Task.WhenAny(finished, Task.Delay(options.ShutdownGrace, time))

                    if not finished.IsCompleted then
                        logger.LogError(
                            Log.ShutdownStuck,
                            "{Count} handlers still running {Grace} after they were canceled; their leases will lapse",
                            executor.Running,
                            options.ShutdownGrace
                        )

                executor.StopRenewing()
                gaugesOn <- false
                subscription.Dispose()
                setAside.Dispose()
        }

    interface IDisposable with
        member _.Dispose() =
            subscription.Dispose()
            setAside.Dispose()
            stopping.Dispose()
            hardStop.Dispose()
            (instruments :> IDisposable).Dispose()
