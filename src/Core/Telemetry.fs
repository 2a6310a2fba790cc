namespace Events

open System
open System.Collections.Generic
open System.Diagnostics
open System.Diagnostics.Metrics

/// The names under which the library publishes its traces and metrics.
[<AbstractClass; Sealed>]
type Telemetry =
    /// The name of the library's ActivitySource and Meter: give it to OpenTelemetry's AddSource and
    /// AddMeter.
    static member SourceName = "Events"

    /// Seconds buckets of the processing and execution time histograms.
    static member LatencyBuckets: IReadOnlyList<float> =
        [|
            0.01
            0.02
            0.05
            0.1
            0.2
            0.5
            1.0
            2.0
            5.0
            10.0
            30.0
            60.0
            120.0
            300.0
        |]

    /// Seconds buckets of the handler execution time histogram.
    static member HandlerBuckets: IReadOnlyList<float> =
        [|
            0.005
            0.01
            0.025
            0.05
            0.075
            0.1
            0.25
            0.5
            0.75
            1.0
            2.5
            5.0
            7.5
            10.0
        |]

/// The instruments and the activity source of one engine, every name prefixed by "{prefix}." when a
/// prefix is given (as the Go framework does, attribute keys included).
[<Sealed>]
type Instruments(prefix: string, stats: unit -> StoreStats option, now: unit -> DateTimeOffset) =
    let name (key: string) =
        if String.IsNullOrEmpty prefix then
            key
        else
            $"%s{prefix}.%s{key}"

    let meter = new Meter(Telemetry.SourceName)
    let source = new ActivitySource(Telemetry.SourceName)

    let histogram (key: string) (description: string) (buckets: IReadOnlyList<float>) =
        meter.CreateHistogram<float>(
            name key,
            "s",
            description,
            Seq.empty,
            InstrumentAdvice<float>(HistogramBucketBoundaries = buckets)
        )

    let age (oldest: DateTimeOffset option) =
        match oldest with
        | Some time -> max 0.0 (now () - time).TotalSeconds
        | None -> 0.0

    let gauge (key: string) (unit: string) (description: string) (read: StoreStats -> 'T) =
        meter.CreateObservableGauge<'T>(
            name key,
            (fun () ->
                match stats () with
                | Some stats -> Seq.singleton (Measurement<'T>(read stats))
                | None -> Seq.empty),
            unit,
            description
        )
        |> ignore

    do
        gauge "events.unprocessed.count" "{event}" "The number of unprocessed events in the queue." _.UnprocessedEvents

        gauge "events.unprocessed.max_age" "s" "The age of the oldest unprocessed event in the queue." (fun s ->
            age s.OldestUnprocessedEvent)

        gauge
            "requests.unexecuted.count"
            "{request}"
            "The number of unexecuted requests in the queue."
            _.RunnableRequests

        gauge "requests.unexecuted.max_age" "s" "The age of the oldest unexecuted request in the queue." (fun s ->
            age s.OldestRunnableRequest)

        gauge "requests.dead.count" "{request}" "The number of dead requests in the queue." _.DeadRequests

    /// The prefixed form of a metric, span attribute or log key.
    member _.Name(key: string) = name key

    /// The activity source of spans.
    member _.Source = source

    /// events.processed.successes
    member val EventsProcessed =
        meter.CreateCounter<int64>(
            name "events.processed.successes",
            "{success}",
            "The number of successfully processed events."
        )

    /// events.processed.failures
    member val EventsFailed =
        meter.CreateCounter<int64>(
            name "events.processed.failures",
            "{failure}",
            "The number of events that failed to process."
        )

    /// events.processing_time
    member val ProcessingTime =
        histogram "events.processing_time" "The time spent processing an event." Telemetry.LatencyBuckets

    /// requests.executed.successes
    member val RequestsSucceeded =
        meter.CreateCounter<int64>(
            name "requests.executed.successes",
            "{success}",
            "The number of successfully executed requests."
        )

    /// requests.executed.failures
    member val RequestsFailed =
        meter.CreateCounter<int64>(
            name "requests.executed.failures",
            "{failure}",
            "The number of requests that failed to execute."
        )

    /// requests.execution_time
    member val ExecutionTime =
        histogram "requests.execution_time" "The time spent executing a handler request." Telemetry.LatencyBuckets

    /// event_handlers.executions
    member val HandlerExecutions =
        meter.CreateCounter<int64>(
            name "event_handlers.executions",
            "{execution}",
            "The number of event handler executions."
        )

    /// event_handlers.execution_time
    member val HandlerTime =
        histogram "event_handlers.execution_time" "The time spent executing an event handler." Telemetry.HandlerBuckets

    /// events.scheduler.status
    member val SchedulerStatus =
        meter.CreateUpDownCounter<int64>(name "events.scheduler.status", null, "The status of the scheduler.")

    /// A tag with the prefixed key.
    member _.Tag(key: string, value: obj) =
        KeyValuePair<string, obj>(name key, value)

    /// Starts a span whose parent is the trace context stored on an event (so one trace reaches from the
    /// producer to every handler), linked to the current round's span.
    member _.StartLinked(spanName: string, trace: TraceContext option, tags: KeyValuePair<string, obj> seq) =
        let round =
            match Activity.Current with
            | null -> []
            | current -> [ ActivityLink(current.Context) ]

        let parent =
            match trace with
            | Some trace ->
                match ActivityContext.TryParse(trace.TraceParent, Option.toObj trace.TraceState) with
                | true, context -> context
                | false, _ -> Unchecked.defaultof<ActivityContext>
            | None -> Unchecked.defaultof<ActivityContext>

        // Without a stored trace the span is a new root, linked to the round, as the Go framework's are.
        if parent = Unchecked.defaultof<ActivityContext> then
            Activity.Current <- null

        source.StartActivity(spanName, ActivityKind.Internal, parent, tags, round)

    interface IDisposable with
        member _.Dispose() =
            meter.Dispose()
            source.Dispose()
