/// The schedulers: the pure status machine, and cooperative and concurrent scheduling over a store.
module Events.Tests.SchedulerTests

open System
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging.Abstractions
open Expecto
open FsCheck
open FsCheck.FSharp
open Events
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
    let start (kind: SchedulerKind) (configuration: Configuration<Handler>) =
        task {
            let! store = makeStore ()
            let logs = new LogSink()

            let scheduler =
                new Scheduler(
                    store,
                    configuration,
                    ProcessorOptions.Default,
                    ExecutorOptions.Default,
                    { SchedulerOptions.Default with
                        Kind = kind
                        Interval = TimeSpan.FromMinutes 1.0
                    },
                    logs.Logger,
                    TimeProvider.System
                )

            return store, scheduler
        }

    let raise (store: IEventStore) =
        task {
            let event =
                EventFactory().Application("thing.happened", {| |})
                |> Result.defaultWith (fun e -> failwith e.Message)

            let! _ = store.AppendAsync([ event ], CancellationToken.None)
            return ()
        }

    let completed (store: IEventStore) (count: int) () =
        task {
            let! requests = toList (store.RequestsAsync CancellationToken.None)
            return (requests |> Seq.filter HandlerRequest.isTerminal |> Seq.length) >= count
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

    testList
        $"Scheduler on %s{storeName}"
        [
            endToEnd SchedulerKind.Cooperative
            endToEnd SchedulerKind.Concurrent

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
                                return false
                            with :? InvalidOperationException ->
                                return true
                        }

                    let! refused = refusedShutdown ()
                    Expect.isTrue refused "shutdown before start is refused"

                    scheduler.Start()
                    Expect.throwsT<InvalidOperationException> scheduler.Start "a second start is refused"
                    do! scheduler.ShutdownAsync CancellationToken.None

                    let! refused = refusedShutdown ()
                    Expect.isTrue refused "a second shutdown is refused"
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
