/// The schedulers: the pure status machine, and cooperative and concurrent scheduling over a store.
module Events.Tests.SchedulerTests

open System
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging.Abstractions
open Expecto
open FsCheck
open FsCheck.FSharp
open Events.Core
open Events.Tests.TestSupport

let private commands =
    Gen.elements
        [
            SchedulerCommand.Start
            SchedulerCommand.Pause
            SchedulerCommand.Resume
            SchedulerCommand.Shutdown
        ]
    |> Gen.listOf
    |> Arb.fromGen

let private run (commands: SchedulerCommand list) =
    commands
    |> List.scan
        (fun status command ->
            match Scheduling.transition command status with
            | Ok next -> next
            | Error _ -> status)
        SchedulerStatus.NotStarted

let private config =
    { FsCheckConfig.defaultConfig with
        maxTest = 500
    }

/// The pure status machine.
let statusMachine =
    testList
        "Scheduling"
        [
            testCase "start is allowed only from not started"
            <| fun () ->
                Expect.equal
                    (Scheduling.transition SchedulerCommand.Start SchedulerStatus.NotStarted)
                    (Ok SchedulerStatus.Running)
                    "start from not started runs"

                for status in [ SchedulerStatus.Running; SchedulerStatus.Paused; SchedulerStatus.Shutdown ] do
                    Expect.equal
                        (Scheduling.transition SchedulerCommand.Start status)
                        (Error(SchedulerError.AlreadyStarted status))
                        $"start from %A{status} is refused"

            testCase "shutdown is allowed only when running or paused"
            <| fun () ->
                for status in [ SchedulerStatus.Running; SchedulerStatus.Paused ] do
                    Expect.equal
                        (Scheduling.transition SchedulerCommand.Shutdown status)
                        (Ok SchedulerStatus.Shutdown)
                        $"shutdown from %A{status} is allowed"

                for status in [ SchedulerStatus.NotStarted; SchedulerStatus.Shutdown ] do
                    Expect.equal
                        (Scheduling.transition SchedulerCommand.Shutdown status)
                        (Error(SchedulerError.NotRunning status))
                        $"shutdown from %A{status} is refused"

            testCase "pause and resume move between running and paused and are ignored elsewhere"
            <| fun () ->
                Expect.equal
                    (Scheduling.transition SchedulerCommand.Pause SchedulerStatus.Running)
                    (Ok SchedulerStatus.Paused)
                    "pause pauses a running scheduler"

                Expect.equal
                    (Scheduling.transition SchedulerCommand.Resume SchedulerStatus.Paused)
                    (Ok SchedulerStatus.Running)
                    "resume resumes a paused one"

                for status in [ SchedulerStatus.NotStarted; SchedulerStatus.Paused; SchedulerStatus.Shutdown ] do
                    Expect.equal
                        (Scheduling.transition SchedulerCommand.Pause status)
                        (Ok status)
                        $"pause is ignored in %A{status}"

                for status in
                    [
                        SchedulerStatus.NotStarted
                        SchedulerStatus.Running
                        SchedulerStatus.Shutdown
                    ] do
                    Expect.equal
                        (Scheduling.transition SchedulerCommand.Resume status)
                        (Ok status)
                        $"resume is ignored in %A{status}"

            testPropertyWithConfig config "shutdown is absorbing: no command leaves it"
            <| Prop.forAll commands (fun commands ->
                let statuses = run (SchedulerCommand.Start :: SchedulerCommand.Shutdown :: commands)
                statuses |> List.skip 2 |> List.forall ((=) SchedulerStatus.Shutdown))

            testPropertyWithConfig
                config
                "the status gauge counts exactly one while running or paused, never below zero"
            <| Prop.forAll commands (fun commands ->
                let statuses = run commands

                let counts =
                    statuses
                    |> List.pairwise
                    |> List.scan
                        (fun count (before, after) ->
                            let weight status =
                                if (Scheduling.gaugeState status).IsSome then 1 else 0

                            count - weight before + weight after)
                        0

                List.forall2
                    (fun count status ->
                        count = (if (Scheduling.gaugeState status).IsSome then 1 else 0) && count >= 0)
                    counts
                    statuses)

            testPropertyWithConfig config "a scheduler once started never returns to not started"
            <| Prop.forAll commands (fun commands ->
                run commands
                |> List.skipWhile ((=) SchedulerStatus.NotStarted)
                |> List.forall ((<>) SchedulerStatus.NotStarted))
        ]

/// Scheduling over a store made by the factory.
let schedulerSuite (storeName: string) (makeStore: unit -> Task<IEventStore>) =
    let startWith (kind: SchedulerKind) (configuration: Configuration<Handler>) (executorOptions: ExecutorOptions) =
        task {
            let! store = makeStore ()
            let logs = new LogSink()

            let scheduler =
                new Scheduler(
                    store,
                    configuration,
                    ProcessorOptions.Default,
                    executorOptions,
                    { SchedulerOptions.Default with
                        Kind = kind
                        Interval = TimeSpan.FromMinutes 1.0
                        ShutdownGrace = TimeSpan.FromMilliseconds 200.0
                    },
                    logs.Logger,
                    TimeProvider.System
                )

            return store, scheduler
        }

    let start (kind: SchedulerKind) (configuration: Configuration<Handler>) =
        startWith kind configuration ExecutorOptions.Default

    let raiseNamed (name: string) (store: IEventStore) =
        task {
            let event =
                EventFactory().Application(name, {| |})
                |> Result.defaultWith (fun e -> failwith e.Message)

            let! _ = store.AppendAsync([ event ], CancellationToken.None)
            return ()
        }

    let raise (store: IEventStore) = raiseNamed "thing.happened" store

    let requestsOf (store: IEventStore) =
        toList (store.RequestsAsync CancellationToken.None)

    let completed (store: IEventStore) (count: int) () =
        task {
            let! requests = toList (store.RequestsAsync CancellationToken.None)
            return (requests |> Seq.filter HandlerRequest.isTerminal |> Seq.length) >= count
        }

    /// A fast handler's request completes while a slow handler's request still runs: the slow one holds
    /// its own slot and no other.
    let fastBesideSlow kind =
        testCaseTask $"the %A{kind} scheduler completes a fast handler's request while a slow handler still runs"
        <| fun () ->
            task {
                let slowStarted = TaskCompletionSource()
                let releaseSlow = TaskCompletionSource()

                let slow: Handler =
                    fun _ _ ->
                        task {
                            slowStarted.TrySetResult() |> ignore
                            do! releaseSlow.Task
                            return HandlerResult.Succeeded
                        }

                let! store, scheduler =
                    start kind (configure [ "slow.job", "slow", slow, []; "fast.job", "fast", succeed, [] ])

                use scheduler = scheduler
                scheduler.Start()
                do! raiseNamed "slow.job" store
                do! slowStarted.Task.WaitAsync(TimeSpan.FromSeconds 30.0)

                for _ in 1..5 do
                    do! raiseNamed "fast.job" store

                do!
                    waitUntil (TimeSpan.FromSeconds 30.0) "the fast requests completed beside the slow one" (fun () ->
                        task {
                            let! requests = requestsOf store

                            return
                                requests
                                |> List.filter (fun r -> r.HandlerName.Value = "fast" && HandlerRequest.isTerminal r)
                                |> List.length
                                    =
                                    5
                        })

                Expect.isFalse releaseSlow.Task.IsCompleted "the slow handler was still running all along"
                let! requests = requestsOf store
                let slowRequest = requests |> List.find (fun r -> r.HandlerName.Value = "slow")
                Expect.isSome (HandlerRequest.lease slowRequest) "the slow request is still running, claimed"
                releaseSlow.SetResult()
                use deadline = new CancellationTokenSource(TimeSpan.FromSeconds 30.0)
                do! scheduler.ShutdownAsync deadline.Token
            }

    /// With n slots, n handlers run at once when n are runnable, and never more.
    let slotsBound kind =
        testCaseTask $"the %A{kind} scheduler runs n handlers at once with Workers = n when n are runnable, never more"
        <| fun () ->
            task {
                let workers = 3
                let mutable current = 0
                let mutable highest = 0
                let allRunning = TaskCompletionSource()

                let counted: Handler =
                    fun _ _ ->
                        task {
                            let now = Interlocked.Increment &current
                            lock allRunning (fun () -> highest <- max highest now)

                            if now >= workers then
                                allRunning.TrySetResult() |> ignore

                            // Holds its slot until n run at once (the timeout only keeps a broken pump from hanging the run).
                            let! _ = Task.WhenAny(allRunning.Task, Task.Delay(TimeSpan.FromSeconds 30.0))
                            Interlocked.Decrement &current |> ignore
                            return HandlerResult.Succeeded
                        }

                let! store, scheduler =
                    startWith
                        kind
                        (configure [ "thing.happened", "h", counted, [] ])
                        { ExecutorOptions.Default with
                            Workers = workers
                        }

                use scheduler = scheduler
                scheduler.Start()

                for _ in 1..10 do
                    do! raise store

                do! waitUntil (TimeSpan.FromSeconds 60.0) "all 10 requests completed" (completed store 10)
                use deadline = new CancellationTokenSource(TimeSpan.FromSeconds 30.0)
                do! scheduler.ShutdownAsync deadline.Token
                Expect.isTrue allRunning.Task.IsCompleted $"%d{workers} handlers ran at once"
                Expect.equal highest workers $"never more than %d{workers} handlers ran at once"
            }

    /// Shutdown with a handler that ignores its token: only what runs stays claimed.
    let stuckShutdown kind =
        testCaseTask
            $"the %A{kind} scheduler's shutdown beside a handler that ignores its token leaves nothing claimed unstarted"
        <| fun () ->
            task {
                let started = TaskCompletionSource()
                let release = TaskCompletionSource()

                let stubborn: Handler =
                    fun _ _ ->
                        task {
                            started.TrySetResult() |> ignore
                            do! release.Task
                            return HandlerResult.Succeeded
                        }

                let! store, scheduler =
                    startWith
                        kind
                        (configure [ "thing.happened", "h", stubborn, [] ])
                        { ExecutorOptions.Default with
                            Workers = 1
                            Limit = 5
                        }

                use scheduler = scheduler
                scheduler.Start()

                for _ in 1..5 do
                    do! raise store

                do! started.Task.WaitAsync(TimeSpan.FromSeconds 30.0)

                do!
                    waitUntil (TimeSpan.FromSeconds 30.0) "every event was fanned out" (fun () ->
                        task {
                            let! requests = requestsOf store
                            return requests.Length = 5
                        })

                use deadline = new CancellationTokenSource(TimeSpan.FromMilliseconds 200.0)
                do! scheduler.ShutdownAsync(deadline.Token).WaitAsync(TimeSpan.FromSeconds 30.0)
                let! requests = requestsOf store
                let claimed = requests |> List.filter (fun r -> (HandlerRequest.lease r).IsSome)
                Expect.equal claimed.Length 1 "only the request whose handler still runs is claimed"

                let waiting =
                    requests
                    |> List.filter (fun r -> r.State = RequestState.Runnable None && r.Errors = 0)

                Expect.equal waiting.Length 4 "the other four were never claimed: runnable, with no error charged"
                release.SetResult()
            }

    let endToEnd kind =
        testCaseTask $"the %A{kind} scheduler handles a new event at once, woken without waiting for its 1-minute tick"
        <| fun () ->
            task {
                let! store, scheduler = start kind (configure [ "thing.happened", "h", succeed, [] ])
                use scheduler = scheduler
                scheduler.Start()
                do! Task.Delay 50
                do! raise store
                do! waitUntil (TimeSpan.FromSeconds 10.0) "the event's request completed" (completed store 1)
                use deadline = new CancellationTokenSource(TimeSpan.FromSeconds 10.0)
                do! scheduler.ShutdownAsync deadline.Token
                Expect.equal scheduler.Status SchedulerStatus.Shutdown "the scheduler shut down"
            }

    /// A processor's fan-out on append registered on the store, with no loop running: what the store
    /// does with appended events is then the append's work alone.
    let withFanOut (configuration: Configuration<Handler>) (options: ProcessorOptions) =
        task {
            let! store = makeStore ()

            let instruments =
                new Instruments("", (fun () -> None), (fun () -> DateTimeOffset.UtcNow))

            let processor =
                Processor(store, configuration, options, instruments, NullLogger.Instance, TimeProvider.System)

            let registration =
                match store, processor.AppendFanOut(fun () -> true) with
                | :? IFanOutOnAppend as fanning, Some fanOut -> Some(fanning.UseFanOut fanOut)
                | _ -> None

            return store, processor, registration
        }

    let event (name: string) =
        EventFactory().Application(name, {| |})
        |> Result.defaultWith (fun e -> failwith e.Message)

    let fanOutOnAppend =
        testList
            "fan-out on append"
            [
                testCaseTask "an event is stored processed with its requests by the append itself"
                <| fun () ->
                    task {
                        let configuration =
                            configure [ "thing.happened", "a", succeed, []; "thing.happened", "b", succeed, [] ]

                        let! store, processor, registration =
                            withFanOut configuration ProcessorOptions.Default

                        Expect.isSome registration "the store fans out on append"
                        let created = ref 0

                        use _ =
                            processor.RequestsCreated.Subscribe(fun () -> Interlocked.Increment created |> ignore)

                        let raised = event "thing.happened"
                        let! _ = store.AppendAsync([ raised ], CancellationToken.None)
                        let! stored = store.FindEventAsync(raised.Id, CancellationToken.None)
                        Expect.isSome stored.Value.ProcessedAt "stored processed, with no processor round"
                        let! requests = requestsOf store

                        Expect.equal
                            (requests |> List.map _.HandlerName.Value |> List.sort)
                            [ "a"; "b" ]
                            "one runnable request per handler"

                        Expect.allEqual
                            (requests |> List.map _.State)
                            (RequestState.Runnable None)
                            "the requests are runnable"

                        Expect.equal created.Value 1 "the executor is told once the append committed"

                        let! claimed =
                            store.ClaimEventsAsync(
                                10,
                                DateTimeOffset.UtcNow,
                                TimeSpan.FromMinutes 1.0,
                                CancellationToken.None
                            )

                        Expect.isEmpty claimed "nothing is left for the processor"
                        registration.Value.Dispose()
                        let later = event "thing.happened"
                        let! _ = store.AppendAsync([ later ], CancellationToken.None)
                        let! stored = store.FindEventAsync(later.Id, CancellationToken.None)
                        Expect.isNone stored.Value.ProcessedAt "once disposed, events keep the processor's path"
                    }

                testCaseTask "an event no handler is mapped for, or one already processed, keeps its path"
                <| fun () ->
                    task {
                        let! store, _, _ =
                            withFanOut (configure [ "thing.happened", "a", succeed, [] ]) ProcessorOptions.Default

                        let unmapped = event "other.thing"

                        let processed =
                            { event "thing.happened" with
                                ProcessedAt = Some DateTimeOffset.UtcNow
                            }

                        let! _ = store.AppendAsync([ unmapped; processed ], CancellationToken.None)
                        let! stored = store.FindEventAsync(unmapped.Id, CancellationToken.None)

                        Expect.isNone
                            stored.Value.ProcessedAt
                            "left to the processor, which logs that no handler is mapped"

                        let! requests = requestsOf store
                        Expect.isEmpty requests "no request for either"
                    }

                testCaseTask "with a before-process hook, events keep the processor's path"
                <| fun () ->
                    task {
                        let hook: BeforeProcess = fun event _ -> Task.FromResult(HookResult.Continue event)

                        let! _, processor, registration =
                            withFanOut
                                (configure [ "thing.happened", "a", succeed, [] ])
                                { ProcessorOptions.Default with
                                    BeforeProcess = Some hook
                                }

                        Expect.isNone (processor.AppendFanOut(fun () -> true)) "no fan-out on append"
                        Expect.isNone registration "nothing registered"
                    }

                testCaseTask "a running scheduler fans out on append until it shuts down"
                <| fun () ->
                    task {
                        let! store, scheduler =
                            start SchedulerKind.Concurrent (configure [ "thing.happened", "h", succeed, [] ])

                        use scheduler = scheduler
                        scheduler.Start()
                        do! raise store
                        do! waitUntil (TimeSpan.FromSeconds 10.0) "the event's request completed" (completed store 1)
                        do! scheduler.ShutdownAsync CancellationToken.None
                        do! raise store
                        let! stats = store.StatsAsync(DateTimeOffset.UtcNow, CancellationToken.None)
                        Expect.equal stats.UnprocessedEvents 1L "after shutdown, an append fans nothing out"
                    }
            ]

    testList
        $"Scheduler on %s{storeName}"
        [
            fanOutOnAppend
            endToEnd SchedulerKind.Cooperative
            endToEnd SchedulerKind.Concurrent
            fastBesideSlow SchedulerKind.Cooperative
            fastBesideSlow SchedulerKind.Concurrent
            slotsBound SchedulerKind.Cooperative
            slotsBound SchedulerKind.Concurrent
            stuckShutdown SchedulerKind.Cooperative
            stuckShutdown SchedulerKind.Concurrent

            testCaseTask "a paused scheduler does no work until resumed"
            <| fun () ->
                task {
                    let! store, scheduler =
                        start SchedulerKind.Cooperative (configure [ "thing.happened", "h", succeed, [] ])

                    use scheduler = scheduler
                    scheduler.Start()
                    scheduler.Pause()
                    Expect.equal scheduler.Status SchedulerStatus.Paused "pause pauses"
                    do! raise store
                    do! Task.Delay 300
                    let! stats = store.StatsAsync(DateTimeOffset.UtcNow, CancellationToken.None)
                    Expect.equal stats.UnprocessedEvents 1L "nothing is processed while paused"
                    scheduler.Resume()
                    do! waitUntil (TimeSpan.FromSeconds 10.0) "the request completed after resume" (completed store 1)
                    do! scheduler.ShutdownAsync CancellationToken.None
                }

            testCaseTask "start twice, and shutdown before start or twice, are refused"
            <| fun () ->
                task {
                    let! _, scheduler =
                        start SchedulerKind.Cooperative (configure [ "thing.happened", "h", succeed, [] ])

                    use scheduler = scheduler

                    let refusedShutdown () =
                        task {
                            try
                                do! scheduler.ShutdownAsync CancellationToken.None
                                return None
                            with :? InvalidOperationException as error ->
                                return Some error.Message
                        }

                    let! refused = refusedShutdown ()
                    Expect.isSome refused "shutdown before start is refused"

                    Expect.stringStarts
                        refused.Value
                        "scheduler is not operational: "
                        "with the Go framework's words first"

                    scheduler.Start()

                    let again =
                        Thrown.by<InvalidOperationException> "a second start is refused" scheduler.Start

                    Expect.stringStarts
                        again.Message
                        "scheduler is already started: "
                        "with the Go framework's words first"

                    do! scheduler.ShutdownAsync CancellationToken.None

                    let! refused = refusedShutdown ()
                    Expect.isSome refused "a second shutdown is refused"
                }

            testCaseTask "graceful shutdown lets a running handler finish before the deadline"
            <| fun () ->
                task {
                    let started = TaskCompletionSource()

                    let slow: Handler =
                        fun _ _ ->
                            task {
                                started.TrySetResult() |> ignore
                                do! Task.Delay 300
                                return HandlerResult.Succeeded
                            }

                    let! store, scheduler =
                        start SchedulerKind.Concurrent (configure [ "thing.happened", "h", slow, [] ])

                    use scheduler = scheduler
                    scheduler.Start()
                    do! raise store
                    do! started.Task.WaitAsync(TimeSpan.FromSeconds 10.0)
                    use deadline = new CancellationTokenSource(TimeSpan.FromSeconds 10.0)
                    do! scheduler.ShutdownAsync deadline.Token
                    let! finished = completed store 1 ()
                    Expect.isTrue finished "the running handler completed before shutdown returned"
                }

            testCaseTask
                "at the deadline running handlers are canceled and their requests given back, nothing left claimed"
            <| fun () ->
                task {
                    let started = TaskCompletionSource()

                    let stuck: Handler =
                        fun _ cancellationToken ->
                            task {
                                started.TrySetResult() |> ignore
                                do! Task.Delay(Timeout.InfiniteTimeSpan, cancellationToken)
                                return HandlerResult.Succeeded
                            }

                    let! store, scheduler =
                        start SchedulerKind.Cooperative (configure [ "thing.happened", "h", stuck, [] ])

                    use scheduler = scheduler
                    scheduler.Start()
                    do! raise store
                    do! started.Task.WaitAsync(TimeSpan.FromSeconds 10.0)
                    use deadline = new CancellationTokenSource(TimeSpan.FromMilliseconds 200.0)
                    do! scheduler.ShutdownAsync(deadline.Token).WaitAsync(TimeSpan.FromSeconds 10.0)
                    let! requests = toList (store.RequestsAsync CancellationToken.None)
                    let request = List.exactlyOne requests

                    Expect.equal
                        request.State
                        (RequestState.Runnable None)
                        "the canceled request is runnable again, not stuck claimed"

                    Expect.equal request.Errors 0 "an attempt canceled by shutdown is not counted as a failure"
                }

            testCaseTask "invalid options are refused with every error at once"
            <| fun () ->
                task {
                    let! store = makeStore ()

                    let message =
                        try
                            new Scheduler(
                                store,
                                Configuration.empty,
                                { ProcessorOptions.Default with
                                    Workers = 0
                                    Limit = 0
                                },
                                ExecutorOptions.Default,
                                SchedulerOptions.Default,
                                NullLogger.Instance,
                                TimeProvider.System
                            )
                            |> ignore

                            None
                        with :? ArgumentException as error ->
                            Some error.Message

                    Expect.isSome message "zero workers and a zero limit are refused"
                    Expect.stringContains message.Value "Workers must be at least 1" "the message names the workers"
                    Expect.stringContains message.Value "Limit must be at least 1" "and, at once, the limit"
                }
        ]
