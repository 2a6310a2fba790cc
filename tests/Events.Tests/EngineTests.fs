/// The engine's behaviour (BEHAVIOUR.md: Processor, Executor), written once and run against every store.
module Events.Tests.EngineTests

open System
open System.Collections.Concurrent
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging
open Expecto
open Events.Core
open Events.Tests.TestSupport

let private oneHandler name handler options =
    configure [ "thing.happened", name, handler, options ]

let private single (engine: Engine) =
    task {
        let! requests = engine.RequestsAsync()
        return List.exactlyOne requests
    }

/// A reporter that keeps what it is given and answers `accept`.
type private Reporter(accept: bool) =
    let reports = ConcurrentQueue<ErrorReport>()
    member _.Reports = List.ofSeq reports

    interface IErrorReporter with
        member _.ReportAsync(report, _) =
            reports.Enqueue report
            Task.FromResult accept

let private failureLog (engine: Engine) =
    engine.Logs.Entries
    |> List.filter (fun entry -> entry.Message.StartsWith "error while executing handler request")

/// The behaviour suite over a store factory.
let engineSuite (storeName: string) (makeStore: unit -> Task<IEventStore>) =
    let build configuration processorOptions executorOptions =
        engineWith makeStore configuration processorOptions executorOptions ""

    let simple configuration =
        build configuration ProcessorOptions.Default ExecutorOptions.Default

    /// An engine over a store that refuses every batch holding a poisoned event.
    let faulty configuration executorOptions =
        task {
            let mutable wrapped = None

            let makeFaulty () =
                task {
                    let! store = makeStore ()
                    let faulty = FaultyStore store
                    wrapped <- Some faulty
                    return faulty :> IEventStore
                }

            let! engine =
                engineWith makeFaulty configuration ProcessorOptions.Default executorOptions ""

            return engine, wrapped.Value
        }

    let isolation =
        testList
            "one bad item"
            [
                testCaseTask "a fan-out the store cannot commit fails alone: the events beside it are processed"
                <| fun () ->
                    task {
                        let! engine, store =
                            faulty (configure [ "thing.happened", "h", succeed, [] ]) ExecutorOptions.Default

                        let! events = Task.WhenAll [ for _ in 1..9 -> engine.Raise("thing.happened", {| |}) ]
                        store.Poison events[4].Id
                        let! _ = engine.Processor.ProcessAsync CancellationToken.None
                        let! requests = engine.RequestsAsync()

                        Expect.equal
                            (requests |> List.map _.EventId |> Set.ofList)
                            (events |> Seq.map _.Id |> Seq.filter ((<>) events[4].Id) |> Set.ofSeq)
                            "the 8 healthy events are fanned out in the same round"

                        let! stats =
                            engine.Store.StatsAsync(DateTimeOffset.UtcNow.AddYears 1, CancellationToken.None)

                        Expect.equal stats.UnprocessedEvents 1L "the bad one is left for a later round"
                    }

                testCaseTask
                    "fan-out commits are bounded by bytes: 40 events of 500 KB for 10 handlers (200 MB) go in several commits"
                <| fun () ->
                    task {
                        let handlers = [ for h in 1..10 -> "big.thing", $"h%d{h}", succeed, [] ]

                        let! engine, store = faulty (configure handlers) ExecutorOptions.Default
                        let data = {| blob = String('x', 500_000) |}
                        let! _ = Task.WhenAll [ for _ in 1..40 -> engine.Raise("big.thing", data) ]
                        let! processed = engine.Processor.ProcessAsync CancellationToken.None
                        Expect.equal processed 40 "one claim takes all 40"
                        let! requests = engine.RequestsAsync()
                        Expect.equal requests.Length 400 "every request is made in the round"
                        let commits = store.CommitBytes
                        Expect.isGreaterThan commits.Length 1 "in several commits"

                        Expect.all
                            commits
                            (fun bytes -> bytes <= Processor.MaxCommitBytes + 10L * 500_100L)
                            "none much above the bound (a commit holds at least one event)"
                    }

                testCaseTask
                    "an event whose fan-out keeps failing alone is set aside after 5 tries, listed, and restored by a person"
                <| fun () ->
                    task {
                        let! engine, store =
                            faulty (configure [ "thing.happened", "h", succeed, [] ]) ExecutorOptions.Default

                        let! events = Task.WhenAll [ for _ in 1..3 -> engine.Raise("thing.happened", {| |}) ]
                        let bad = events[0]
                        store.Poison bad.Id

                        for _ in 1 .. Processor.MaxCommitFailures do
                            let! _ = engine.Processor.ProcessAsync CancellationToken.None
                            ()

                        let aside = store :> ISetAsideItems
                        let! listed = aside.SetAsideAsync CancellationToken.None

                        Expect.equal
                            (listed |> List.map (fun item -> item.Kind, item.Id))
                            [ StoredItemKind.Event, bad.Id ]
                            "the event is set aside after its fifth failure alone"

                        Expect.stringContains listed.Head.Reason "5 times" "with the reason"
                        let! claimed = engine.Processor.ProcessAsync CancellationToken.None
                        Expect.equal claimed 0 "it is claimed no more"
                        let! requests = engine.RequestsAsync()
                        Expect.equal requests.Length 2 "the two events beside it were fanned out"
                        store.Heal bad.Id

                        let! restored =
                            aside.RestoreAsync(StoredItemKind.Event, bad.Id, CancellationToken.None)

                        Expect.isTrue restored "a person puts it back"
                        let! claimed = engine.Processor.ProcessAsync CancellationToken.None
                        Expect.equal claimed 1 "and it is processed"
                        let! listed = aside.SetAsideAsync CancellationToken.None
                        Expect.isEmpty listed "nothing is set aside any more"
                    }

                testCaseTask "an outcome the store cannot write fails alone: its siblings in the batch are written"
                <| fun () ->
                    task {
                        let! engine, store =
                            faulty
                                (configure [ "thing.happened", "h", succeed, [] ])
                                { ExecutorOptions.Default with
                                    Workers = 10
                                }

                        let! events = Task.WhenAll [ for _ in 1..9 -> engine.Raise("thing.happened", {| |}) ]
                        let! _ = engine.Processor.ProcessAsync CancellationToken.None
                        store.Poison events[4].Id
                        do! engine.RoundAsync()
                        let! requests = engine.RequestsAsync()
                        let completed = requests |> List.filter HandlerRequest.isTerminal
                        Expect.equal completed.Length 8 "the 8 healthy outcomes are written"

                        Expect.isFalse
                            (completed |> List.exists (fun request -> request.EventId = events[4].Id))
                            "not the bad one"
                    }
            ]

    testList
        $"Engine on %s{storeName}"
        [
            isolation
            testList
                "Processor"
                [
                    testCaseTask
                        "an event fans out to one request per configured handler, copying the event and the settings"
                    <| fun () ->
                        task {
                            let configuration =
                                configure
                                    [
                                        "order.placed",
                                        "email",
                                        succeed,
                                        [ HandlerOption.MaxErrors 3; HandlerOption.Priority 7 ]
                                        "order.placed", "ledger", succeed, []
                                        "other.event", "unrelated", succeed, []
                                    ]

                            let! engine = simple configuration
                            let! event = engine.Raise("order.placed", {| Amount = 12.5m |})
                            let! claimed = engine.ProcessAsync()
                            Expect.equal claimed 1 "the processor claims the one unprocessed event"
                            let! requests = engine.RequestsAsync()
                            let byHandler = requests |> List.map (fun r -> r.HandlerName.Value, r) |> Map.ofList

                            Expect.equal
                                (Set.ofSeq byHandler.Keys)
                                (set [ "email"; "ledger" ])
                                "one request per handler of the event"

                            let email = byHandler["email"]
                            Expect.equal email.EventId event.Id "the request copies the event id"
                            Expect.equal email.EventData event.Data "the request copies the event data"
                            Expect.equal email.EventTimestamp event.Timestamp "the request copies the event time"
                            Expect.equal email.CorrelationId event.CorrelationId "the request copies the correlation id"
                            Expect.isSome email.CorrelationId "the store set a correlation id"

                            Expect.equal
                                (email.MaxErrors, email.Priority)
                                (3, 7)
                                "the request takes MaxErrors and Priority from its handler"

                            Expect.equal byHandler["ledger"].MaxErrors 5 "defaults apply to the other handler"
                            let! stored = engine.Store.FindEventAsync(event.Id, CancellationToken.None)
                            Expect.isTrue (stored |> Option.exists Event.isProcessed) "the event is marked processed"
                            let! again = engine.ProcessAsync()
                            Expect.equal again 0 "a processed event is not claimed again"
                        }

                    testCaseTask "an event with no handlers is marked processed with a warning"
                    <| fun () ->
                        task {
                            let! engine = simple (oneHandler "h" succeed [])
                            let! event = engine.Raise("nobody.listens", {| |})
                            let! _ = engine.ProcessAsync()
                            let! stored = engine.Store.FindEventAsync(event.Id, CancellationToken.None)

                            Expect.isTrue
                                (stored |> Option.exists Event.isProcessed)
                                "an event without handlers is still processed"

                            let! requests = engine.RequestsAsync()
                            Expect.isEmpty requests "no requests are made for it"

                            let warning =
                                engine.Logs.Entries
                                |> List.tryFind (fun e ->
                                    e.Level = LogLevel.Warning && e.Message.Contains "no handlers mapped")

                            Expect.isSome warning "a warning says no handlers are mapped"

                            Expect.equal
                                (warning.Value.Field "EventName")
                                (Some(box "nobody.listens"))
                                "the warning names the event"
                        }

                    testCaseTask "the before-process hook may change the event the requests copy"
                    <| fun () ->
                        task {
                            let hook: BeforeProcess =
                                fun event _ ->
                                    let data =
                                        EventData.TryParse """{"changed":true}"""
                                        |> Result.defaultWith (fun e -> failwith e.Message)

                                    Task.FromResult(HookResult.Continue { event with Data = data })

                            let! engine =
                                build
                                    (oneHandler "h" succeed [])
                                    { ProcessorOptions.Default with
                                        BeforeProcess = Some hook
                                    }
                                    ExecutorOptions.Default

                            let! _ = engine.Raise("thing.happened", {| changed = false |})
                            let! _ = engine.ProcessAsync()
                            let! request = single engine

                            Expect.equal
                                request.EventData.Json
                                """{"changed":true}"""
                                "the request carries the data the hook returned"
                        }

                    testCaseTask
                        "an event the before-process hook refuses or throws on stays unprocessed, and is logged as an error"
                    <| fun () ->
                        task {
                            let mutable calls = 0

                            let hook: BeforeProcess =
                                fun event _ ->
                                    calls <- calls + 1

                                    match calls with
                                    | 1 -> Task.FromResult(HookResult.Refuse "not yet")
                                    | 2 -> raise (InvalidOperationException "hook broke")
                                    | _ -> Task.FromResult(HookResult.Continue event)

                            let! engine =
                                build
                                    (oneHandler "h" succeed [])
                                    { ProcessorOptions.Default with
                                        BeforeProcess = Some hook
                                    }
                                    ExecutorOptions.Default

                            let! event = engine.Raise("thing.happened", {| |})

                            for round in 1..2 do
                                let! _ = engine.ProcessAsync()
                                let! stored = engine.Store.FindEventAsync(event.Id, CancellationToken.None)

                                Expect.isFalse
                                    (stored |> Option.exists Event.isProcessed)
                                    $"round %d{round}: a refused event stays unprocessed"

                            let errors =
                                engine.Logs.Entries
                                |> List.filter (fun e ->
                                    e.Level = LogLevel.Error && e.Message.Contains "before process")

                            Expect.equal errors.Length 2 "each refusal is logged as an error"

                            Expect.isTrue
                                (errors |> List.exists (fun e -> e.Exception.IsSome))
                                "the thrown exception is logged with it"

                            let! _ = engine.ProcessAsync()
                            let! requests = engine.RequestsAsync()

                            Expect.equal
                                requests.Length
                                1
                                "once the hook accepts, the event is fanned out (its claim was released)"
                        }

                    testCaseTask "a processor asked to stop claims nothing"
                    <| fun () ->
                        task {
                            let! engine = simple (oneHandler "h" succeed [])
                            let! _ = engine.Raise("thing.happened", {| |})
                            use stopped = new CancellationTokenSource()
                            stopped.Cancel()
                            let! claimed = engine.Processor.ProcessAsync stopped.Token
                            Expect.equal claimed 0 "a stopped processor starts no round"
                        }

                    testCaseTask "processors racing over the same events fan each out exactly once"
                    <| fun () ->
                        task {
                            let! engine =
                                build
                                    (oneHandler "h" succeed [])
                                    { ProcessorOptions.Default with
                                        Limit = 7
                                        Workers = 2
                                    }
                                    ExecutorOptions.Default

                            let second =
                                Processor(
                                    engine.Store,
                                    oneHandler "h" succeed [],
                                    { ProcessorOptions.Default with
                                        Limit = 5
                                    },
                                    engine.Instruments,
                                    engine.Logs.Logger,
                                    engine.Time
                                )

                            for i in 1..200 do
                                let! _ = engine.Raise("thing.happened", {| n = i |})
                                ()

                            let drain (processor: Processor) =
                                task {
                                    let mutable more = true

                                    while more do
                                        let! claimed = processor.ProcessAsync CancellationToken.None
                                        more <- claimed > 0
                                }

                            let! _ = Task.WhenAll(drain engine.Processor, drain second, drain engine.Processor)
                            ()
                            let! requests = engine.RequestsAsync()
                            Expect.equal requests.Length 200 "one request per event, none duplicated, none lost"

                            Expect.equal
                                (requests |> List.distinctBy _.EventId).Length
                                200
                                "every event was fanned out once"
                        }
                ]

            testList
                "Executor"
                [
                    testCaseTask
                        "an error holding U+0000 is kept with U+FFFD in its place, and the outcomes written beside it are recorded"
                    <| fun () ->
                        task {
                            let! engine =
                                build
                                    (configure
                                        [
                                            "thing.happened", "nul", failWith "bad\000text", []
                                            "thing.happened",
                                            "thrower",
                                            (fun _ _ -> raise (InvalidOperationException "bad\000throw")),
                                            []
                                            "thing.happened", "good", succeed, []
                                        ])
                                    ProcessorOptions.Default
                                    { ExecutorOptions.Default with
                                        Workers = 3
                                    }

                            for _ in 1..3 do
                                let! _ = engine.Raise("thing.happened", {| |})
                                ()

                            do! engine.RoundAsync()
                            let! requests = engine.RequestsAsync()

                            let byHandler name =
                                requests |> List.filter (fun r -> r.HandlerName.Value = name)

                            Expect.isTrue
                                (byHandler "good" |> List.forall (fun r -> (HandlerRequest.completedAt r).IsSome))
                                "the healthy requests beside the bad errors completed"

                            for request in byHandler "nul" do
                                Expect.equal
                                    request.LastError
                                    (Some "bad\uFFFDtext")
                                    "the returned error is kept, NUL replaced"

                                Expect.equal request.Errors 1 "and its failure counted"
                                Expect.isNone (HandlerRequest.lease request) "nothing is left claimed"

                            for request in byHandler "thrower" do
                                Expect.stringStarts
                                    (request.LastError |> Option.defaultValue "")
                                    "recovered panic while executing handler request: System.InvalidOperationException: bad\uFFFDthrow\n"
                                    "the thrown error is kept, NUL replaced"
                        }

                    testCaseTask
                        "data nested deeper than 64 is refused when the event is made; the events raised beside it are handled"
                    <| fun () ->
                        task {
                            let! engine = simple (oneHandler "h" succeed [])
                            let json = "{\"a\":" + String.replicate 64 "[" + String.replicate 64 "]" + "}"

                            use document =
                                Text.Json.JsonDocument.Parse(json, Text.Json.JsonDocumentOptions(MaxDepth = 1000))

                            match engine.Factory.Application("thing.happened", document.RootElement) with
                            | Ok _ -> failtest "65 levels of nesting must be refused"
                            | Error error ->
                                Expect.stringContains error.Message "at most 64 deep" "the refusal says why"

                            let! _ = engine.Raise("thing.happened", {| n = 1 |})
                            let! _ = engine.Raise("thing.happened", {| n = 2 |})
                            do! engine.RoundAsync()
                            let! requests = engine.RequestsAsync()
                            Expect.equal requests.Length 2 "only the healthy events were stored"

                            Expect.isTrue
                                (requests |> List.forall (fun r -> (HandlerRequest.completedAt r).IsSome))
                                "and both were handled"
                        }

                    testCaseTask
                        "a request keeps the settings its handler had at fan-out: a later configuration changes its code, not its backoff nor its timeout"
                    <| fun () ->
                        task {
                            let waits: Handler =
                                fun _ cancellationToken ->
                                    task {
                                        do! Task.Delay(Timeout.InfiniteTimeSpan, cancellationToken)
                                        return HandlerResult.Succeeded
                                    }

                            let tiny =
                                BackoffPolicy.Exponential
                                    {
                                        Base = TimeSpan.FromMilliseconds 1.0
                                        Cap = TimeSpan.FromMilliseconds 1.0
                                    }

                            let! engine =
                                simple (
                                    configure
                                        [
                                            "thing.happened",
                                            "h",
                                            waits,
                                            [
                                                HandlerOption.Timeout(TimeSpan.FromMilliseconds 50.0)
                                                HandlerOption.Backoff tiny
                                                HandlerOption.MaxErrors 4
                                                HandlerOption.Priority 9
                                            ]
                                        ]
                                )

                            let! _ = engine.Raise("thing.happened", {| |})
                            let! _ = engine.ProcessAsync()
                            let! fanned = single engine
                            Expect.equal fanned.Backoff tiny "the backoff is snapshotted at fan-out"

                            Expect.equal
                                fanned.Timeout
                                (Some(TimeSpan.FromMilliseconds 50.0))
                                "the timeout is snapshotted at fan-out"

                            // The handler is reconfigured with no timeout and the default backoff: only its code counts.
                            let later =
                                configure
                                    [
                                        "thing.happened",
                                        "h",
                                        waits,
                                        [ HandlerOption.MaxErrors 1; HandlerOption.Priority 1 ]
                                    ]

                            let executor =
                                Executor(
                                    engine.Store,
                                    later,
                                    ExecutorOptions.Default,
                                    engine.Instruments,
                                    engine.Logs.Logger,
                                    engine.Time
                                )

                            let! claimed = executor.ExecuteAsync(CancellationToken.None, CancellationToken.None)
                            Expect.equal claimed 1 "the request ran under the later configuration"
                            let! request = single engine

                            Expect.equal
                                request.LastError
                                (Some "handler timed out after 00:00:00.0500000")
                                "it timed out after its own 50 ms, not the later configuration's none"

                            Expect.equal
                                (request.MaxErrors, request.Priority)
                                (4, 9)
                                "MaxErrors and Priority are its own"

                            match request.State with
                            | RequestState.Runnable(Some until) ->
                                Expect.isTrue
                                    (until <= engine.Time.GetUtcNow() + TimeSpan.FromMilliseconds 1.0)
                                    "its backoff is its own 1 ms policy, not the default's 30 s or more"
                            | other -> failtest $"expected a request backing off, got %A{other}"
                        }

                    testCaseTask
                        "a permanent failure, returned or thrown as a type the options name, is dead at once and reported"
                    <| fun () ->
                        task {
                            let reporter = Reporter(true)

                            let handler: Handler =
                                fun context _ ->
                                    match context.Request.EventName.Value with
                                    | "returned.thing" -> Task.FromResult(HandlerResult.FailedPermanently "bad data")
                                    | "thrown.thing" -> raise (FormatException "not a number")
                                    | _ -> raise (InvalidOperationException "try later")

                            let options =
                                [ HandlerOption.MaxErrors 5; HandlerOption.PermanentOn typeof<FormatException> ]

                            let! engine =
                                build
                                    (configure
                                        [
                                            "returned.thing", "h", handler, options
                                            "thrown.thing", "h", handler, options
                                            "other.thing", "h", handler, options
                                        ])
                                    ProcessorOptions.Default
                                    { ExecutorOptions.Default with
                                        ErrorReporter = Some reporter
                                    }

                            for name in [ "returned.thing"; "thrown.thing"; "other.thing" ] do
                                let! _ = engine.Raise(name, {| |})
                                ()

                            do! engine.RoundAsync()
                            let! requests = engine.RequestsAsync()

                            let byEvent name =
                                requests |> List.find (fun r -> r.EventName.Value = name)

                            let returned = byEvent "returned.thing"
                            Expect.equal returned.State RequestState.Dead "a returned permanent failure is dead at once"
                            Expect.equal returned.Errors 5 "its count raised to MaxErrors"
                            Expect.equal returned.LastError (Some "bad data") "with its error"
                            let thrown = byEvent "thrown.thing"
                            Expect.equal thrown.State RequestState.Dead "a thrown FormatException, named permanent, too"

                            Expect.stringStarts
                                (thrown.LastError |> Option.defaultValue "")
                                "recovered panic while executing handler request: System.FormatException: not a number"
                                "with the thrown error"

                            let other = byEvent "other.thing"
                            Expect.equal other.Errors 1 "another exception is an ordinary failure"
                            Expect.isFalse (HandlerRequest.isDead other) "and is retried"

                            Expect.equal
                                (reporter.Reports |> List.filter (fun r -> not r.Retryable) |> List.length)
                                2
                                "both permanent failures are reported as dead"
                        }

                    testCaseTask "a successful handler completes its request"
                    <| fun () ->
                        task {
                            let! engine = simple (oneHandler "h" succeed [])
                            let! _ = engine.Raise("thing.happened", {| |})
                            do! engine.RoundAsync()
                            let! request = single engine

                            Expect.equal
                                request.State
                                (RequestState.Completed(engine.Time.GetUtcNow()))
                                "the request completed now"

                            Expect.equal
                                request.LastAttemptAt
                                (Some(engine.Time.GetUtcNow()))
                                "the attempt time is recorded"

                            Expect.isNone request.LastError "no error is recorded"
                            Expect.equal request.Errors 0 "no error is counted"

                            let! claimed = engine.ExecuteAsync()

                            Expect.equal claimed 0 "a completed request is not run again"
                        }

                    testCaseTask "a failing handler is retried after its backoff, with a warning"
                    <| fun () ->
                        task {
                            let! engine = simple (oneHandler "h" (failWith "try later") [])
                            let! _ = engine.Raise("thing.happened", {| |})
                            do! engine.RoundAsync()
                            let! request = single engine
                            let now = engine.Time.GetUtcNow()
                            Expect.equal request.Errors 1 "one failed attempt"
                            Expect.equal request.LastError (Some "try later") "the error is recorded"
                            let low, high = Backoff.bounds BackoffPolicy.Default 1

                            match request.State with
                            | RequestState.Runnable(Some until) ->
                                Expect.isTrue
                                    (until >= now + low && until <= now + high)
                                    "the backoff is within the default policy's bounds for attempt 1"
                            | other -> failtest $"expected a runnable request backing off, got %A{other}"

                            let! claimed = engine.ExecuteAsync()

                            Expect.equal claimed 0 "a request backing off is not run"
                            engine.Time.Advance high

                            let! claimed = engine.ExecuteAsync()

                            Expect.equal claimed 1 "after the backoff the request runs again"

                            let warnings =
                                failureLog engine |> List.filter (fun e -> e.Level = LogLevel.Warning)

                            Expect.equal warnings.Length 2 "each retryable failure is a warning"
                            let first = warnings.Head
                            Expect.equal (first.Field "Error") (Some(box "try later")) "the log carries the error"

                            Expect.equal
                                (first.Field "LastAttemptAt")
                                (Some(box (request.LastAttemptAt.Value.ToString "O")))
                                "the log carries the last attempt time in ISO 8601"

                            Expect.equal
                                first.EventId.Name
                                "RequestFailed"
                                "a failed attempt's log has its own event id"

                            Expect.equal
                                (first.Field "ErrorReported")
                                (Some(box false))
                                "the log says the error was not reported"

                            Expect.equal (first.Field "HandlerName") (Some(box "h")) "the log carries the handler name"
                            Expect.isSome (first.Field "RequestId") "the log carries the request id"
                        }

                    testCaseTask "a request that fails MaxErrors times is dead, logged as an error and reported"
                    <| fun () ->
                        task {
                            let reporter = Reporter(true)

                            let! engine =
                                build
                                    (oneHandler
                                        "h"
                                        (failWith "always")
                                        [
                                            HandlerOption.MaxErrors 2
                                            HandlerOption.Backoff(
                                                BackoffPolicy.Exponential
                                                    {
                                                        Base = TimeSpan.FromSeconds 1.0
                                                        Cap = TimeSpan.FromSeconds 1.0
                                                    }
                                            )
                                        ])
                                    ProcessorOptions.Default
                                    { ExecutorOptions.Default with
                                        ErrorReporter = Some reporter
                                    }

                            let! _ = engine.Raise("thing.happened", {| |})
                            do! engine.RoundAsync()
                            engine.Time.Advance(TimeSpan.FromSeconds 2.0)
                            do! engine.RoundAsync()
                            let! request = single engine
                            Expect.equal request.State RequestState.Dead "two failures with MaxErrors 2 make it dead"
                            Expect.isTrue (HandlerRequest.isDead request) "the core agrees it is dead"
                            let! stats = engine.Store.StatsAsync(engine.Time.GetUtcNow(), CancellationToken.None)
                            Expect.equal stats.DeadRequests 1L "the store counts it dead"

                            Expect.equal
                                (reporter.Reports |> List.map _.Retryable)
                                [ false ]
                                "only the failure that made it dead is reported"

                            let logs = failureLog engine

                            Expect.equal
                                (logs |> List.map _.Level)
                                [ LogLevel.Warning; LogLevel.Error ]
                                "retryable at warning, dead at error"

                            Expect.equal
                                ((List.last logs).Field "ErrorReported")
                                (Some(box true))
                                "the log says the reporter accepted it"

                            engine.Time.Advance(TimeSpan.FromDays 1.0)

                            let! claimed = engine.ExecuteAsync()

                            Expect.equal claimed 0 "a dead request is never run"
                        }

                    testCaseTask "a thrown exception fails the attempt, keeps its stack and is always reported"
                    <| fun () ->
                        task {
                            let reporter = Reporter(false)
                            let thrower: Handler = fun _ _ -> raise (InvalidOperationException "boom")

                            let! engine =
                                build
                                    (oneHandler "h" thrower [])
                                    ProcessorOptions.Default
                                    { ExecutorOptions.Default with
                                        ErrorReporter = Some reporter
                                    }

                            let! _ = engine.Raise("thing.happened", {| |})
                            do! engine.RoundAsync()
                            let! request = single engine
                            Expect.equal request.Errors 1 "a throw counts as a failed attempt"

                            Expect.stringStarts
                                (request.LastError |> Option.defaultValue "")
                                "recovered panic while executing handler request: System.InvalidOperationException: boom\n   at "
                                "the error is recorded in the Go framework's words, with the exception's type and stack"

                            let report = List.exactlyOne reporter.Reports
                            Expect.isTrue report.Retryable "the request is still retryable"
                            Expect.isSome report.Exception "the reporter gets the exception"
                            Expect.isSome report.StackTrace "the reporter gets the stack"
                            let log = failureLog engine |> List.exactlyOne
                            Expect.equal log.Level LogLevel.Warning "a retryable throw is a warning"
                            Expect.isSome log.Exception "the log carries the exception"

                            Expect.equal
                                (log.Field "ErrorReported")
                                (Some(box false))
                                "the reporter declined it, and the log says so"
                        }

                    testCaseTask
                        "the error reporter is called exactly for throws and deaths, with or without a reporter"
                    <| fun () ->
                        task {
                            // (returned or thrown) x (retryable or dead) x (reporter or none)
                            for thrown in [ false; true ] do
                                for dead in [ false; true ] do
                                    for withReporter in [ false; true ] do
                                        let reporter = Reporter(true)

                                        let handler: Handler =
                                            if thrown then
                                                fun _ _ -> raise (ArgumentException "thrown")
                                            else
                                                failWith "returned"

                                        let maxErrors = if dead then 1 else 5

                                        let! engine =
                                            build
                                                (oneHandler "h" handler [ HandlerOption.MaxErrors maxErrors ])
                                                ProcessorOptions.Default
                                                { ExecutorOptions.Default with
                                                    ErrorReporter =
                                                        if withReporter then
                                                            Some(reporter :> IErrorReporter)
                                                        else
                                                            None
                                                }

                                        let! _ = engine.Raise("thing.happened", {| |})
                                        do! engine.RoundAsync()
                                        let expected = withReporter && (thrown || dead)
                                        let case = $"thrown=%b{thrown} dead=%b{dead} reporter=%b{withReporter}"

                                        Expect.equal
                                            reporter.Reports.Length
                                            (if expected then 1 else 0)
                                            $"%s{case}: reporter calls"

                                        let log = failureLog engine |> List.exactlyOne

                                        Expect.equal
                                            log.Level
                                            (if dead then LogLevel.Error else LogLevel.Warning)
                                            $"%s{case}: log level"

                                        Expect.equal
                                            (log.Field "ErrorReported")
                                            (Some(box expected))
                                            $"%s{case}: the log says whether it was reported"
                        }

                    testCaseTask "a request whose handler is not configured fails as the Go framework's does"
                    <| fun () ->
                        task {
                            let! engine = simple (oneHandler "h" succeed [])

                            let event =
                                engine.Factory.Application("thing.happened", {| |})
                                |> Result.defaultWith (fun e -> failwith e.Message)

                            let! stored = engine.Store.AppendAsync([ event ], CancellationToken.None)

                            let! claims =
                                engine.Store.ClaimEventsAsync(
                                    10,
                                    engine.Time.GetUtcNow(),
                                    TimeSpan.FromMinutes 1.0,
                                    CancellationToken.None
                                )

                            let orphan =
                                HandlerRequest.create
                                    (Guid.CreateVersion7())
                                    (List.exactlyOne stored)
                                    (HandlerName.Create "gone")
                                    HandlerSettings.defaults

                            let claim = List.exactlyOne claims

                            let! _ =
                                engine.Store.CommitProcessingAsync(
                                    [
                                        {
                                            EventId = claim.Event.Id
                                            Token = claim.Token
                                            ProcessedAt = engine.Time.GetUtcNow()
                                            Requests = [ orphan ]
                                        }
                                    ],
                                    CancellationToken.None
                                )

                            let! _ = engine.ExecuteAsync()
                            let! request = single engine

                            Expect.equal
                                request.LastError
                                (Some "handler request has no configured handler")
                                "a missing handler fails with the Go framework's message"

                            Expect.equal request.Errors 1 "and counts as a failed attempt"
                        }

                    testCaseTask "the before-execute hook may change what the handler sees, or refuse to run it"
                    <| fun () ->
                        task {
                            let seen = ConcurrentQueue<string>()

                            let handler: Handler =
                                fun context _ ->
                                    seen.Enqueue context.Request.EventData.Json
                                    Task.FromResult HandlerResult.Succeeded

                            let mutable refuse = true

                            let hook: BeforeExecute =
                                fun request _ ->
                                    if refuse then
                                        Task.FromResult(HookResult.Refuse "maintenance")
                                    else
                                        let data =
                                            EventData.TryParse """{"from":"hook"}"""
                                            |> Result.defaultWith (fun e -> failwith e.Message)

                                        Task.FromResult(HookResult.Continue { request with EventData = data })

                            let! engine =
                                build
                                    (oneHandler "h" handler [])
                                    ProcessorOptions.Default
                                    { ExecutorOptions.Default with
                                        BeforeExecute = Some hook
                                    }

                            let! _ = engine.Raise("thing.happened", {| from = "event" |})
                            do! engine.RoundAsync()
                            let! request = single engine
                            Expect.isEmpty seen "a refused request's handler does not run"

                            Expect.equal
                                request.State
                                (RequestState.Runnable None)
                                "a refused request is given back runnable"

                            Expect.equal request.Errors 0 "a refusal is not a failed attempt"

                            Expect.isTrue
                                (engine.Logs.Entries
                                 |> List.exists (fun e ->
                                     e.Level = LogLevel.Error && e.Message.Contains "before execute"))
                                "the refusal is logged as an error"

                            refuse <- false
                            do! engine.RoundAsync()

                            Expect.equal
                                (List.ofSeq seen)
                                [ """{"from":"hook"}""" ]
                                "the handler sees the request the hook returned"

                            let! request = single engine

                            Expect.equal
                                request.EventData.Json
                                """{"from":"event"}"""
                                "the stored request keeps its own data"
                        }

                    testCaseTask "requests run in priority order, lower first, then by event time"
                    <| fun () ->
                        task {
                            let order = ConcurrentQueue<string>()

                            let recorder name : Handler =
                                fun _ _ ->
                                    order.Enqueue name
                                    Task.FromResult HandlerResult.Succeeded

                            let configuration =
                                configure
                                    [
                                        "a", "late", recorder "late", [ HandlerOption.Priority 90 ]
                                        "a", "early", recorder "early", [ HandlerOption.Priority 10 ]
                                        "b", "middle", recorder "middle", [ HandlerOption.Priority 50 ]
                                    ]

                            let! engine =
                                build
                                    configuration
                                    ProcessorOptions.Default
                                    { ExecutorOptions.Default with
                                        Workers = 1
                                    }

                            let! _ = engine.Raise("a", {| |})
                            engine.Time.Advance(TimeSpan.FromSeconds 1.0)
                            let! _ = engine.Raise("b", {| |})
                            engine.Time.Advance(TimeSpan.FromSeconds 1.0)
                            let! _ = engine.Raise("b", {| |})
                            let! _ = engine.ProcessAsync()
                            let! _ = engine.ExecuteAsync()

                            Expect.equal
                                (List.ofSeq order)
                                [ "early"; "middle"; "middle"; "late" ]
                                "priority ascending, then event time"
                        }

                    testCaseTask "a handler that overruns its timeout is canceled and the attempt fails"
                    <| fun () ->
                        task {
                            let slow: Handler =
                                fun _ cancellationToken ->
                                    task {
                                        do! Task.Delay(TimeSpan.FromSeconds 30.0, cancellationToken)
                                        return HandlerResult.Succeeded
                                    }

                            let! engine =
                                simple (oneHandler "h" slow [ HandlerOption.Timeout(TimeSpan.FromMilliseconds 50.0) ])

                            let! _ = engine.Raise("thing.happened", {| |})
                            do! engine.RoundAsync()
                            let! request = single engine
                            Expect.equal request.Errors 1 "a timeout is a failed attempt"

                            Expect.stringContains
                                (defaultArg request.LastError "")
                                "timed out"
                                "the error says it timed out"
                        }

                    testCaseTask "a request whose lease lapsed is recovered as one failed attempt and runs again"
                    <| fun () ->
                        task {
                            let! engine = simple (oneHandler "h" succeed [])
                            let! _ = engine.Raise("thing.happened", {| |})
                            let! _ = engine.ProcessAsync()
                            // A worker that claims and then dies.
                            let! lost =
                                engine.Store.ClaimRequestsAsync(
                                    10,
                                    engine.Time.GetUtcNow(),
                                    TimeSpan.FromSeconds 30.0,
                                    CancellationToken.None
                                )

                            Expect.equal lost.Claimed.Length 1 "the dying worker held the request"

                            let! claimed = engine.ExecuteAsync()

                            Expect.equal claimed 0 "a held request is not run while its lease holds"
                            engine.Time.Advance(TimeSpan.FromSeconds 31.0)

                            let! claimed = engine.ExecuteAsync()

                            Expect.equal claimed 1 "after the lease the request is recovered and run"
                            let! request = single engine
                            Expect.equal request.Errors 1 "the lapsed lease counted one failed attempt"
                            Expect.isTrue (HandlerRequest.isTerminal request) "the recovered request then completed"

                            Expect.isTrue
                                (failureLog engine |> List.exists (fun e -> e.Level = LogLevel.Warning))
                                "the recovery is logged as a failure"
                        }

                    testCaseTask
                        "claims are sized to free slots: with one worker each queued request is claimed as the slot frees and starts with its whole lease"
                    <| fun () ->
                        task {
                            let starts = ConcurrentQueue<TimeSpan * int>()
                            let ran = ConcurrentDictionary<Guid, unit>()
                            let mutable engineRef = None

                            // Each run takes 600 ms of the test's clock and the lease is 10 s: had the 8 requests
                            // been claimed together, the last would have waited out 4.2 s of its lease.
                            let slow: Handler =
                                fun context _ ->
                                    let engine: Engine = engineRef.Value
                                    let lease = (HandlerRequest.lease context.Request).Value

                                    // Claimed requests that have not started: the ones that ran already may still
                                    // be claimed while their outcomes are written.
                                    ran[context.Request.Id] <- ()

                                    let unstarted =
                                        (engine.RequestsAsync().GetAwaiter().GetResult())
                                        |> List.filter (fun r ->
                                            (HandlerRequest.lease r).IsSome && not (ran.ContainsKey r.Id))
                                        |> List.length

                                    starts.Enqueue(lease.Until - engine.Time.GetUtcNow(), unstarted)
                                    engine.Time.Advance(TimeSpan.FromMilliseconds 600.0)
                                    Task.FromResult HandlerResult.Succeeded

                            let! engine =
                                build
                                    (oneHandler "h" slow [])
                                    ProcessorOptions.Default
                                    { ExecutorOptions.Default with
                                        Workers = 1
                                        Limit = 8
                                        Lease = TimeSpan.FromSeconds 10.0
                                    }

                            engineRef <- Some engine

                            for i in 1..8 do
                                let! _ = engine.Raise("thing.happened", {| n = i |})
                                ()

                            let! _ = engine.ProcessAsync()
                            let! claimed = engine.ExecuteAsync()
                            Expect.equal claimed 8 "the round claimed all 8, one at a time"
                            let runs = List.ofSeq starts
                            Expect.equal runs.Length 8 "every request ran"

                            Expect.isTrue
                                (runs |> List.forall (fun (left, _) -> left = TimeSpan.FromSeconds 10.0))
                                $"every run started with its whole lease left (%A{runs})"

                            Expect.isTrue
                                (runs |> List.forall (fun (_, unstarted) -> unstarted = 0))
                                $"no claimed request waited unstarted at any start (%A{runs})"

                            let! requests = engine.RequestsAsync()

                            Expect.isTrue (requests |> List.forall HandlerRequest.isTerminal) "every request completed"
                        }

                    testCaseTask
                        "a handler that runs longer than the lease keeps its claim: renewed, never recovered nor run again meanwhile"
                    <| fun () ->
                        task {
                            // A lease of 600 ms of the test's clock; the renewal loop beats every 200 ms of real
                            // time. The handler moves the clock on by half a lease four times (two leases in
                            // all), waiting after each step until the loop has renewed its lease to a full lease
                            // from then, and lets a second executor claim in between.
                            let lease = TimeSpan.FromMilliseconds 600.0

                            let options =
                                { ExecutorOptions.Default with
                                    Workers = 1
                                    Lease = lease
                                }

                            let runs = ref 0
                            let secondClaims = ConcurrentQueue<int>()
                            let mutable engineRef = None
                            let mutable secondRef = None

                            let long: Handler =
                                fun context _ ->
                                    task {
                                        if Interlocked.Increment &runs.contents > 1 then
                                            return HandlerResult.Succeeded
                                        else
                                            let engine: Engine = engineRef.Value
                                            let second: Executor = secondRef.Value

                                            for _ in 1..4 do
                                                engine.Time.Advance(lease / 2.0)
                                                let renewedTo = engine.Time.GetUtcNow() + lease

                                                do!
                                                    waitUntil
                                                        (TimeSpan.FromSeconds 10.0)
                                                        $"the lease is renewed to %O{renewedTo}"
                                                        (fun () ->
                                                            task {
                                                                let! stored =
                                                                    engine.Store.FindRequestAsync(
                                                                        context.Request.Id,
                                                                        CancellationToken.None
                                                                    )

                                                                return
                                                                    stored
                                                                    |> Option.bind HandlerRequest.lease
                                                                    |> Option.exists (fun held ->
                                                                        held.Until >= renewedTo)
                                                            })

                                                let! claimed =
                                                    second.ExecuteAsync(CancellationToken.None, CancellationToken.None)

                                                secondClaims.Enqueue claimed

                                            return HandlerResult.Succeeded
                                    }

                            let configuration = oneHandler "long" long []
                            let! engine = build configuration ProcessorOptions.Default options
                            engineRef <- Some engine

                            secondRef <-
                                Some(
                                    Executor(
                                        engine.Store,
                                        configuration,
                                        options,
                                        engine.Instruments,
                                        engine.Logs.Logger,
                                        engine.Time
                                    )
                                )

                            let! _ = engine.Raise("thing.happened", {| n = 1 |})
                            let started = engine.Time.GetUtcNow()
                            do! engine.RoundAsync()

                            Expect.isGreaterThanOrEqual
                                (engine.Time.GetUtcNow() - started)
                                (lease * 2.0)
                                "the handler ran for two leases of the executor's clock"

                            Expect.equal
                                (List.ofSeq secondClaims)
                                [ 0; 0; 0; 0 ]
                                "the second executor neither recovered nor claimed the running request, even after its first lease ended"

                            Expect.equal runs.Value 1 "the handler ran once"
                            let! request = single engine
                            Expect.isTrue (HandlerRequest.isTerminal request) "the request completed"
                            Expect.equal request.Errors 0 "no lapsed lease was counted against it"

                            Expect.isEmpty
                                (engine.Logs.Entries
                                 |> List.filter (fun entry -> entry.Level >= LogLevel.Warning))
                                "nothing went wrong: no lost claim, no failure"
                        }

                    testCaseTask
                        "a handler whose lease renewal is refused lost its claim: it is canceled and records no outcome"
                    <| fun () ->
                        task {
                            let lease = TimeSpan.FromMilliseconds 600.0
                            let mutable engineRef = None
                            let canceled = TaskCompletionSource<bool>()

                            // The handler has another process recover its request (the core's ExpireLease, as a
                            // claim after the lease would), then waits: the next renewal is refused.
                            let robbed: Handler =
                                fun context cancellationToken ->
                                    task {
                                        let engine: Engine = engineRef.Value

                                        let recover (request: HandlerRequest) =
                                            let held = (HandlerRequest.lease request).Value

                                            HandlerRequest.transition
                                                BackoffPolicy.Default
                                                (RequestCommand.ExpireLease held.Until)
                                                request

                                        let! recovered =
                                            (adminOf engine.Store)
                                                .UpdateRequestAsync(context.Request.Id, recover, CancellationToken.None)

                                        Expect.isOk recovered "another process recovers the request"

                                        try
                                            do! Task.Delay(TimeSpan.FromSeconds 10.0, cancellationToken)
                                            canceled.TrySetResult false |> ignore
                                        with :? OperationCanceledException ->
                                            canceled.TrySetResult true |> ignore

                                        cancellationToken.ThrowIfCancellationRequested()
                                        return HandlerResult.Succeeded
                                    }

                            let! engine =
                                build
                                    (oneHandler "robbed" robbed [])
                                    ProcessorOptions.Default
                                    { ExecutorOptions.Default with
                                        Workers = 1
                                        Lease = lease
                                    }

                            engineRef <- Some engine
                            let! _ = engine.Raise("thing.happened", {| n = 1 |})
                            do! engine.RoundAsync()
                            let! wasCanceled = canceled.Task
                            Expect.isTrue wasCanceled "the handler was canceled once its renewal was refused"
                            let! request = single engine

                            Expect.equal
                                (request.State, request.Errors, request.LastError)
                                (RequestState.Runnable(Some request.LastAttemptAt.Value),
                                 1,
                                 Some HandlerRequest.LeaseExpiredError)
                                "the request stays as the recovery left it: the lost attempt wrote nothing"

                            let warnings =
                                engine.Logs.Entries
                                |> List.filter (fun entry -> entry.Level = LogLevel.Warning)
                                |> List.map _.Message

                            Expect.exists
                                warnings
                                (fun message -> message.Contains "could not be renewed")
                                "the refused renewal is logged as a warning"

                            Expect.exists
                                warnings
                                (fun message -> message.Contains "lost its claim, so no outcome is recorded")
                                "and the canceled attempt records nothing"
                        }

                    testCaseTask "a handler whose timeout does not end before the executor's lease is refused"
                    <| fun () ->
                        task {
                            let! store = makeStore ()

                            let message =
                                try
                                    Executor(
                                        store,
                                        oneHandler "slow" succeed [ HandlerOption.Timeout(TimeSpan.FromMinutes 10.0) ],
                                        ExecutorOptions.Default,
                                        new Instruments("", (fun () -> None), (fun () -> DateTimeOffset.UtcNow)),
                                        Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance,
                                        TimeProvider.System
                                    )
                                    |> ignore

                                    None
                                with :? ArgumentException as error ->
                                    Some error.Message

                            Expect.isSome message "a 10-minute timeout under a 5-minute lease is refused"

                            Expect.stringContains
                                message.Value
                                "handler slow of event thing.happened"
                                "the message names the handler"

                            Expect.stringContains
                                message.Value
                                "shorter than the executor Lease"
                                "and says what is wrong"
                        }

                    testCaseTask "a dead request can be re-executed, and a canceled one never runs"
                    <| fun () ->
                        task {
                            let mutable fail = true

                            let flaky: Handler =
                                fun _ _ ->
                                    Task.FromResult(
                                        if fail then
                                            HandlerResult.Failed "down"
                                        else
                                            HandlerResult.Succeeded
                                    )

                            let configuration =
                                configure
                                    [
                                        "a", "flaky", flaky, [ HandlerOption.MaxErrors 1 ]
                                        "b", "flaky", flaky, [ HandlerOption.MaxErrors 1 ]
                                    ]

                            let! engine = simple configuration
                            let! a = engine.Raise("a", {| |})
                            let! b = engine.Raise("b", {| |})
                            do! engine.RoundAsync()
                            let! requests = engine.RequestsAsync()

                            Expect.isTrue
                                (requests |> List.forall HandlerRequest.isDead)
                                "both died on their first failure"

                            let ofEvent (event: Event) =
                                requests |> List.find (fun r -> r.EventId = event.Id)

                            let! reExecuted =
                                (adminOf engine.Store)
                                    .UpdateRequestAsync(
                                        (ofEvent a).Id,
                                        HandlerRequest.transition BackoffPolicy.Default RequestCommand.ReExecute,
                                        CancellationToken.None
                                    )

                            Expect.isOk reExecuted "a dead request can be re-executed"

                            let! canceled =
                                (adminOf engine.Store)
                                    .UpdateRequestAsync(
                                        (ofEvent b).Id,
                                        HandlerRequest.transition
                                            BackoffPolicy.Default
                                            (RequestCommand.Cancel(engine.Time.GetUtcNow())),
                                        CancellationToken.None
                                    )

                            Expect.isOk canceled "a dead request can be canceled"
                            fail <- false
                            do! engine.RoundAsync()
                            let! after = engine.RequestsAsync()

                            let state (event: Event) =
                                (after |> List.find (fun r -> r.EventId = event.Id)).State

                            Expect.equal
                                (state a)
                                (RequestState.Completed(engine.Time.GetUtcNow()))
                                "the re-executed request ran and completed"

                            Expect.equal
                                (state b)
                                (RequestState.Canceled(engine.Time.GetUtcNow()))
                                "the canceled request stayed canceled"
                        }

                    testCaseTask "a handler may use the store's transaction when the store has one"
                    <| fun () ->
                        task {
                            let mutable sawTransaction = None

                            let handler: Handler =
                                fun context _ ->
                                    sawTransaction <- Some context.Transaction.IsSome
                                    Task.FromResult HandlerResult.Succeeded

                            let! engine = simple (oneHandler "h" handler [])
                            let! _ = engine.Raise("thing.happened", {| |})
                            do! engine.RoundAsync()
                            let! request = single engine

                            Expect.isTrue
                                (HandlerRequest.isTerminal request)
                                "asking for the transaction does not stop completion"

                            Expect.isSome sawTransaction "the handler ran"
                        }

                    testCaseTask
                        "many executors and producers at once: every request runs once, never twice at the same time"
                    <| fun () ->
                        task {
                            let running = ConcurrentDictionary<Guid, int>()
                            let runs = ConcurrentDictionary<Guid, int>()
                            let mutable overlaps = 0

                            let handler: Handler =
                                fun context _ ->
                                    task {
                                        let id = context.Request.Id

                                        if running.AddOrUpdate(id, 1, fun _ n -> n + 1) > 1 then
                                            Interlocked.Increment &overlaps |> ignore

                                        runs.AddOrUpdate(id, 1, fun _ n -> n + 1) |> ignore
                                        do! Task.Yield()
                                        running.AddOrUpdate(id, 0, fun _ n -> n - 1) |> ignore
                                        return HandlerResult.Succeeded
                                    }

                            let configuration = configure [ "e", "one", handler, []; "e", "two", handler, [] ]

                            let executorOptions =
                                { ExecutorOptions.Default with
                                    Workers = 4
                                    Limit = 20
                                }

                            let! engine =
                                build
                                    configuration
                                    { ProcessorOptions.Default with
                                        Limit = 25
                                    }
                                    executorOptions

                            let others =
                                [
                                    for _ in 1..2 ->
                                        Executor(
                                            engine.Store,
                                            configuration,
                                            executorOptions,
                                            engine.Instruments,
                                            engine.Logs.Logger,
                                            engine.Time
                                        )
                                ]

                            let total = 300

                            let produce () =
                                task {
                                    for i in 1 .. total / 3 do
                                        let! _ = engine.Raise("e", {| n = i |})
                                        ()
                                }

                            let mutable producing = true

                            let work (round: unit -> Task<int>) =
                                task {
                                    let mutable idle = 0

                                    while producing || idle < 3 do
                                        let! claimed = round ()

                                        if claimed = 0 && not producing then
                                            idle <- idle + 1
                                        else
                                            idle <- 0

                                        do! Task.Yield()
                                }

                            let producers = Task.WhenAll [ produce (); produce (); produce () ]

                            let workers =
                                [
                                    work (fun () -> engine.ProcessAsync())
                                    work (fun () -> engine.ExecuteAsync())
                                    yield!
                                        others
                                        |> List.map (fun executor ->
                                            work (fun () ->
                                                executor.ExecuteAsync(CancellationToken.None, CancellationToken.None)))
                                ]

                            let! _ = producers
                            producing <- false
                            let! _ = Task.WhenAll workers
                            // Whatever the racing loops left, a last drain finishes.
                            let mutable more = true

                            while more do
                                let! events = engine.ProcessAsync()

                                let! requests = engine.ExecuteAsync()

                                more <- events + requests > 0

                            let! requests = engine.RequestsAsync()
                            Expect.equal requests.Length (2 * total) "two requests per event, none lost or duplicated"
                            let unfinished = requests |> List.filter (HandlerRequest.isTerminal >> not)

                            Expect.equal
                                (unfinished |> List.map (fun r -> r.State, r.Errors, r.LastError))
                                []
                                "every request completed"

                            Expect.equal overlaps 0 "no request ran twice at the same time"
                            Expect.isTrue (runs.Values |> Seq.forall ((=) 1)) "every request ran exactly once"
                        }
                ]
        ]
