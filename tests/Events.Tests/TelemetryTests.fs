/// Every instrument and span, through the real OpenTelemetry SDK and its in-memory exporter.
module Events.Tests.TelemetryTests

open System
open System.Collections.Generic
open System.Diagnostics
open System.Threading
open System.Threading.Tasks
open Expecto
open OpenTelemetry
open OpenTelemetry.Metrics
open OpenTelemetry.Trace
open Events.Core
open Events.Tests.TestSupport

let private producerSource = new ActivitySource("Events.Tests.Producer")

let private tags (point: MetricPoint) =
    [
        for tag in point.Tags do
            tag.Key, string tag.Value
    ]
    |> Map.ofList

/// Runs a small workload with a unique prefix and returns what the SDK exported.
let private collect (makeStore: unit -> Task<IEventStore>) =
    task {
        let prefix = "t" + Guid.NewGuid().ToString "N"
        let metrics = List<MetricSnapshot>()
        let spans = List<Activity>()

        use meterProvider =
            Sdk.CreateMeterProviderBuilder().AddMeter(Telemetry.SourceName).AddInMemoryExporter(metrics).Build()

        use tracerProvider =
            Sdk
                .CreateTracerProviderBuilder()
                .AddSource(Telemetry.SourceName, "Events.Tests.Producer")
                .SetSampler(AlwaysOnSampler())
                .AddInMemoryExporter(spans)
                .Build()

        let configuration =
            configure
                [
                    "thing.happened", "good", succeed, []
                    "thing.happened", "bad", failWith "nope", [ HandlerOption.MaxErrors 1 ]
                ]

        let mutable faulty = None

        let makeFaulty () =
            task {
                let! store = makeStore ()
                let wrapped = FaultyStore store
                faulty <- Some wrapped
                return wrapped :> IEventStore
            }

        let! engine =
            engineWith makeFaulty configuration ProcessorOptions.Default ExecutorOptions.Default prefix
        // One processing commit fails (a failure counted), and the event is processed on the next round.
        faulty.Value.FailNextCommit()

        use producer = producerSource.StartActivity "produce"
        let! event = engine.Raise("thing.happened", {| |})
        producer.Stop()
        Activity.Current <- null
        do! engine.RoundAsync()
        do! engine.RoundAsync()

        // The status counter, through a real scheduler with the same prefix.
        use scheduler =
            new Scheduler(
                engine.Store,
                configuration,
                ProcessorOptions.Default,
                ExecutorOptions.Default,
                { SchedulerOptions.Default with
                    TelemetryPrefix = prefix
                    Interval = TimeSpan.FromMinutes 1.0
                },
                engine.Logs.Logger,
                TimeProvider.System
            )

        scheduler.Start()
        scheduler.Pause()
        meterProvider.ForceFlush() |> ignore
        do! scheduler.ShutdownAsync CancellationToken.None
        tracerProvider.ForceFlush() |> ignore

        let ours =
            metrics
            |> Seq.filter (fun metric -> metric.Name.StartsWith(prefix + "."))
            |> Seq.map (fun metric -> metric.Name.Substring(prefix.Length + 1), metric)
            |> Map.ofSeq

        let traceId = producer.TraceId

        let mine =
            spans
            |> Seq.filter (fun span ->
                span.TraceId = traceId
                || span.DisplayName.EndsWith " events"
                || span.DisplayName.EndsWith " requests")
            |> List.ofSeq

        return prefix, event, ours, mine, producer
    }

let private instrumentTable =
    [
        "events.processed.successes", MetricType.LongSum, "{success}"
        "events.processed.failures", MetricType.LongSum, "{failure}"
        "events.processing_time", MetricType.Histogram, "s"
        "events.unprocessed.count", MetricType.LongGauge, "{event}"
        "events.unprocessed.max_age", MetricType.DoubleGauge, "s"
        "requests.executed.successes", MetricType.LongSum, "{success}"
        "requests.executed.failures", MetricType.LongSum, "{failure}"
        "requests.execution_time", MetricType.Histogram, "s"
        "requests.unexecuted.count", MetricType.LongGauge, "{request}"
        "requests.unexecuted.max_age", MetricType.DoubleGauge, "s"
        "requests.dead.count", MetricType.LongGauge, "{request}"
        "event_handlers.executions", MetricType.LongSum, "{execution}"
        "event_handlers.execution_time", MetricType.Histogram, "s"
        "events.scheduler.status", MetricType.LongSumNonMonotonic, ""
    ]

/// Runs `work` on an engine over a fresh store with `configuration`, exporting the library's spans through
/// the SDK with `sampler`; returns the spans.
let private spansOf
    (makeStore: unit -> Task<IEventStore>)
    (sampler: Sampler)
    (configuration: Configuration<Handler>)
    (work: Engine -> Task)
    =
    task {
        let spans = List<Activity>()

        use tracerProvider =
            Sdk
                .CreateTracerProviderBuilder()
                .AddSource(Telemetry.SourceName)
                .SetSampler(sampler)
                .AddInMemoryExporter(spans)
                .Build()

        let! engine =
            engineWith makeStore configuration ProcessorOptions.Default ExecutorOptions.Default ""

        Activity.Current <- null
        do! work engine
        tracerProvider.ForceFlush() |> ignore
        return List.ofSeq spans
    }

/// The telemetry suite over a store factory.
let telemetrySuite (storeName: string) (makeStore: unit -> Task<IEventStore>) =
    testSequencedGroup "telemetry"
    <| testList
        $"Telemetry on %s{storeName}"
        [
            testCaseTask
                "every instrument of the Go framework is published under the prefix, with its kind, unit and attributes"
            <| fun () ->
                task {
                    let! prefix, _, metrics, _, _ = collect makeStore
                    let key (name: string) = $"%s{prefix}.%s{name}"

                    for name, kind, unit in instrumentTable do
                        match metrics.TryFind name with
                        | None -> failtest $"instrument %s{name} was not exported (got %A{metrics.Keys |> List.ofSeq})"
                        | Some metric ->
                            Expect.equal metric.MetricType kind $"%s{name} is a %A{kind}"

                            Expect.equal
                                (Option.ofObj metric.Unit |> Option.defaultValue "")
                                unit
                                $"%s{name} has unit %s{unit}"

                            Expect.isNotEmpty metric.Description $"%s{name} has a description"

                    let points name =
                        metrics[name].MetricPoints |> List.ofSeq

                    let sumOf name =
                        points name |> List.sumBy (fun p -> p.GetSumLong())

                    let only name = points name |> List.exactlyOne

                    Expect.equal (sumOf "events.processed.successes") 1L "one event processed"
                    Expect.equal (sumOf "events.processed.failures") 1L "one failed processing commit counted"

                    Expect.equal
                        (tags (only "events.processed.successes"))
                        (Map [ key "event.type", "thing.happened" ])
                        "processed events carry the event type"

                    Expect.equal (sumOf "requests.executed.successes") 1L "one request succeeded"

                    Expect.equal
                        (tags (only "requests.executed.successes"))
                        (Map [ key "request.event.type", "thing.happened"; key "request.type", "good" ])
                        "successes carry the event type and the handler"

                    Expect.equal
                        (tags (only "requests.executed.failures"))
                        (Map
                            [
                                key "request.event.type", "thing.happened"
                                key "request.type", "bad"
                                key "request.retryable", "False"
                                key "request.errors", "1"
                            ])
                        "failures carry retryable and the error count"

                    let handlerTags = points "event_handlers.executions" |> List.map tags |> Set.ofList

                    Expect.equal
                        handlerTags
                        (set
                            [
                                Map
                                    [
                                        key "event_handler.name", "good"
                                        key "event.type", "thing.happened"
                                        key "event_handler.error", "False"
                                    ]
                                Map
                                    [
                                        key "event_handler.name", "bad"
                                        key "event.type", "thing.happened"
                                        key "event_handler.error", "True"
                                    ]
                            ])
                        "handler executions carry the handler, the event type and whether it failed"

                    let bounds name =
                        let point = only name

                        [
                            for bucket in point.GetHistogramBuckets() do
                                bucket.ExplicitBound
                        ]
                        |> List.filter (fun bound -> not (Double.IsPositiveInfinity bound))

                    Expect.equal
                        (bounds "events.processing_time")
                        (List.ofSeq Telemetry.LatencyBuckets)
                        "processing time uses the Go buckets"

                    Expect.equal
                        (bounds "requests.execution_time")
                        (List.ofSeq Telemetry.LatencyBuckets)
                        "execution time uses the Go buckets"

                    let handlerBounds =
                        [
                            for bucket in (points "event_handlers.execution_time" |> List.head).GetHistogramBuckets() do
                                bucket.ExplicitBound
                        ]
                        |> List.filter (fun bound -> not (Double.IsPositiveInfinity bound))

                    Expect.equal
                        handlerBounds
                        (List.ofSeq Telemetry.HandlerBuckets)
                        "handler time uses the Go handler buckets"

                    Expect.equal
                        ((only "requests.dead.count").GetGaugeLastValueLong())
                        1L
                        "the dead gauge reads the store"

                    Expect.equal
                        ((only "events.unprocessed.count").GetGaugeLastValueLong())
                        0L
                        "nothing is left unprocessed"

                    let status =
                        points "events.scheduler.status"
                        |> List.map (fun point -> tags point, point.GetSumLong())
                        |> Map.ofList

                    Expect.equal
                        status
                        (Map
                            [
                                Map [ key "events.scheduler.state", "running" ], 0L
                                Map [ key "events.scheduler.state", "paused" ], 1L
                            ])
                        "a started then paused scheduler counts one paused and no running"
                }

            testCaseTask
                "processing and handler spans join the trace of the code that raised the event, linked to their rounds"
            <| fun () ->
                task {
                    let! prefix, event, _, spans, producer = collect makeStore

                    let named name =
                        spans |> List.filter (fun span -> span.DisplayName = name)

                    let attempts = named "process thing.happened event"
                    Expect.equal attempts.Length 2 "one processing span per attempt: the failed commit and the good one"

                    Expect.exists
                        attempts
                        (fun span -> span.Status = ActivityStatusCode.Error)
                        "the failed commit's span has error status"

                    let processing =
                        attempts |> List.find (fun span -> span.Status <> ActivityStatusCode.Error)

                    Expect.equal processing.TraceId producer.TraceId "the processing span is in the producer's trace"
                    Expect.equal processing.ParentSpanId producer.SpanId "its parent is the producer's span"

                    Expect.equal
                        (processing.GetTagItem $"%s{prefix}.event.id")
                        (box (string event.Id))
                        "it names the event"

                    let rounds = named "process events" |> List.map _.SpanId

                    Expect.exists
                        processing.Links
                        (fun (link: ActivityLink) -> List.contains link.Context.SpanId rounds)
                        $"it links to its round (links %A{processing.Links |> Seq.map (fun l -> string l.Context.SpanId) |> List.ofSeq}, rounds %A{rounds |> List.map string})"

                    for handler in [ "good"; "bad" ] do
                        let execute = named $"execute %s{handler} request" |> List.exactlyOne

                        Expect.equal
                            execute.TraceId
                            producer.TraceId
                            $"the %s{handler} request's span is in the producer's trace"

                        Expect.equal
                            (execute.GetTagItem $"%s{prefix}.request.type")
                            (box handler)
                            "it names the handler"

                        let run = named $"%s{handler} handler" |> List.exactlyOne
                        Expect.equal run.ParentSpanId execute.SpanId "the handler span is a child of the request span"

                    let failed = named "bad handler" |> List.exactlyOne
                    Expect.equal failed.Status ActivityStatusCode.Error "a failed handler's span has error status"
                    let dead = named "execute bad request" |> List.exactlyOne
                    Expect.equal dead.Status ActivityStatusCode.Error "a request that died has error status"
                }

            testCaseTask "an empty poll makes no span; a round that claims makes one"
            <| fun () ->
                task {
                    let! spans =
                        spansOf
                            makeStore
                            (AlwaysOnSampler())
                            (configure [ "thing.happened", "h", succeed, [] ])
                            (fun engine ->
                                task {
                                    let! _ = engine.ProcessAsync()
                                    let! _ = engine.ExecuteAsync()
                                    let! _ = engine.Raise("thing.happened", {| |})
                                    do! engine.RoundAsync()
                                    let! _ = engine.ProcessAsync()
                                    let! _ = engine.ExecuteAsync()
                                    return ()
                                })

                    let count name =
                        spans |> List.filter (fun span -> span.DisplayName = name) |> List.length

                    Expect.equal (count "process events") 1 "one processing round span: only the round that claimed"
                    Expect.equal (count "execute requests") 1 "one executing round span: only the round that claimed"
                }

            testCaseTask
                "a failed attempt marks its request span failed; a thrown handler's spans carry its exception as an event"
            <| fun () ->
                task {
                    let throws: Handler = fun _ _ -> raise (InvalidOperationException "boom")

                    let! spans =
                        spansOf
                            makeStore
                            (AlwaysOnSampler())
                            (configure
                                [
                                    "thing.happened", "thrower", throws, []
                                    "thing.happened", "failer", failWith "nope", []
                                ])
                            (fun engine ->
                                task {
                                    let! _ = engine.Raise("thing.happened", {| |})
                                    do! engine.RoundAsync()
                                })

                    let named name =
                        spans |> List.find (fun span -> span.DisplayName = name)

                    for handler in [ "thrower"; "failer" ] do
                        Expect.equal
                            (named $"execute %s{handler} request").Status
                            ActivityStatusCode.Error
                            $"the %s{handler} request's span of a failed, retryable attempt has error status"

                    let hasException (span: Activity) =
                        span.Events |> Seq.exists (fun e -> e.Name = "exception")

                    Expect.isTrue (hasException (named "thrower handler")) "the thrown handler's span has the exception"
                    Expect.isTrue (hasException (named "execute thrower request")) "so has its request's span"
                    Expect.isFalse (hasException (named "failer handler")) "a returned failure has no exception event"
                }

            testCaseTask
                "an event raised in an unsampled trace records neither its request span nor its handler span (they follow the producer's decision)"
            <| fun () ->
                task {
                    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"

                    let! spans =
                        spansOf
                            makeStore
                            (ParentBasedSampler(AlwaysOnSampler()))
                            (configure [ "thing.happened", "h", succeed, [] ])
                            (fun engine ->
                                task {
                                    let event =
                                        match engine.Factory.Application("thing.happened", {| |}) with
                                        | Ok event ->
                                            { event with
                                                Trace =
                                                    Some
                                                        {
                                                            TraceParent = unsampled
                                                            TraceState = None
                                                        }
                                            }
                                        | Error error -> failwith error.Message

                                    let! _ = engine.Store.AppendAsync([ event ], CancellationToken.None)
                                    do! engine.RoundAsync()
                                    let! requests = engine.RequestsAsync()

                                    Expect.isTrue
                                        (requests |> List.forall HandlerRequest.isTerminal)
                                        "the request was handled all the same"
                                })

                    let inTrace =
                        spans
                        |> List.filter (fun span -> string span.TraceId = "0af7651916cd43dd8448eb211c80319c")

                    Expect.isEmpty inTrace "no span of the unsampled trace is exported"

                    Expect.isFalse
                        (spans |> List.exists (fun span -> span.DisplayName = "h handler"))
                        "the handler span is not exported under some other parent either"
                }
        ]
