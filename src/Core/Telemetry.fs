namespace Events.Core

open System
open System.Collections.Generic
open System.Diagnostics
open System.Diagnostics.Metrics
open Microsoft.Extensions.Logging

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

    /// events.items.set_aside
    member val ItemsSetAside =
        meter.CreateCounter<int64>(
            name "events.items.set_aside",
            "{item}",
            "The number of stored events and requests set aside because the store could not read them."
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

    /// The attributes of an event's span.
    member this.EventSpanTags(event: Event) =
        [
            yield this.Tag("event.id", string event.Id)
            yield this.Tag("event.type", event.Name.Value)
            yield this.Tag("correlation_id", event.CorrelationId |> Option.map string |> Option.toObj)
            match event.Entity with
            | Some entity -> yield this.Tag("event.entity.id", entity.Id)
            | None -> ()
        ]

    /// The attributes of a request's span.
    member this.RequestSpanTags(request: HandlerRequest) =
        [
            yield this.Tag("request.id", string request.Id)
            yield this.Tag("request.event.id", string request.EventId)
            yield this.Tag("request.event.type", request.EventName.Value)
            yield this.Tag("request.type", request.HandlerName.Value)
            yield this.Tag("correlation_id", request.CorrelationId |> Option.map string |> Option.toObj)
            match request.EventEntity with
            | Some entity -> yield this.Tag("request.event.entity.id", entity.Id)
            | None -> ()
        ]

    /// The attributes of the event metrics.
    member this.EventMetricTags(event: Event) =
        [| this.Tag("event.type", event.Name.Value) |]

    /// The attributes of the request metrics.
    member this.RequestMetricTags(request: HandlerRequest) =
        [|
            this.Tag("request.event.type", request.EventName.Value)
            this.Tag("request.type", request.HandlerName.Value)
        |]

    /// The attributes of the request failure counter.
    member this.RequestFailureTags(request: HandlerRequest, retryable: bool) =
        Array.append
            (this.RequestMetricTags request)
            [|
                this.Tag("request.retryable", retryable)
                this.Tag("request.errors", request.Errors)
            |]

    /// The attributes of the handler metrics.
    member this.HandlerMetricTags(request: HandlerRequest, isError: bool) =
        [|
            this.Tag("event_handler.name", request.HandlerName.Value)
            this.Tag("event.type", request.EventName.Value)
            this.Tag("event_handler.error", isError)
        |]

    /// Starts a round's span ("process events", "execute requests") once its claim found work, dated from
    /// when the claim began: an empty poll makes no span.
    member _.StartRound(spanName: string, startedAt: DateTimeOffset) =
        source.StartActivity(
            spanName,
            ActivityKind.Internal,
            Unchecked.defaultof<ActivityContext>,
            Seq.empty,
            Seq.empty,
            startedAt
        )

    /// Starts the span of one event's processing: a child of the event's stored trace, linked to the round.
    member this.StartEventSpan(event: Event) =
        this.StartLinked($"process %s{event.Name.Value} event", event.Trace, this.EventSpanTags event)

    /// Starts the span of one request's execution: a child of the event's stored trace, linked to the round.
    member this.StartRequestSpan(request: HandlerRequest) =
        this.StartLinked(
            $"execute %s{request.HandlerName.Value} request",
            request.EventTrace,
            this.RequestSpanTags request
        )

    /// Starts the handler's span, a child of the request's span. When the request's span is not recorded
    /// (its stored trace was not sampled, or nobody listens) the handler's span has the same parent, so it
    /// follows the same sampling decision instead of hanging from a parent that is never exported.
    member _.StartHandlerSpan(request: HandlerRequest, requestSpan: Activity) =
        let name = $"%s{request.HandlerName.Value} handler"

        match requestSpan with
        | null ->
            let parent =
                match request.EventTrace with
                | Some trace ->
                    match ActivityContext.TryParse(trace.TraceParent, Option.toObj trace.TraceState) with
                    | true, context -> context
                    | false, _ -> Unchecked.defaultof<ActivityContext>
                | None -> Unchecked.defaultof<ActivityContext>

            Activity.Current <- null
            source.StartActivity(name, ActivityKind.Internal, parent)
        | span -> source.StartActivity(name, ActivityKind.Internal, span.Context)

    /// Marks a span failed with this description, recording the exception as a span event when there is one.
    static member Fail(span: Activity, description: string, error: exn) =
        if not (isNull span) then
            if not (isNull error) then
                span.AddException error |> ignore

            span.SetStatus(ActivityStatusCode.Error, description) |> ignore

    /// Marks a handler's span with its result: a thrown error as an exception event and the Go framework's
    /// panic attribute; any other failure as an error status.
    member this.MarkHandler(span: Activity, result: AttemptResult) =
        if not (isNull span) then
            match result with
            | AttemptResult.Succeeded -> ()
            | AttemptResult.Threw error
            | AttemptResult.ThrewPermanently error ->
                span.SetTag(this.Name "request.event.panic", error.Message) |> ignore
                Instruments.Fail(span, "handler threw while executing handler request", error)
            | AttemptResult.Failed _
            | AttemptResult.FailedPermanently _
            | AttemptResult.TimedOut _
            | AttemptResult.Interrupted
            | AttemptResult.LostClaim -> Instruments.Fail(span, "error handling event", null)

    interface IDisposable with
        member _.Dispose() =
            meter.Dispose()
            source.Dispose()

/// Log event ids, one per kind of message, and the structured fields of the item a message is about.
module internal Log =

    let ClaimEventsFailed = EventId(1, "ClaimEventsFailed")
    let BeforeProcessFailed = EventId(2, "BeforeProcessFailed")
    let NoHandlers = EventId(3, "NoHandlers")
    let ProcessingFailed = EventId(4, "ProcessingFailed")
    let ReleaseEventsFailed = EventId(5, "ReleaseEventsFailed")
    let ClaimRequestsFailed = EventId(10, "ClaimRequestsFailed")
    let BeforeExecuteFailed = EventId(11, "BeforeExecuteFailed")
    let RequestFailed = EventId(12, "RequestFailed")
    let OutcomeRefused = EventId(13, "OutcomeRefused")
    let OutcomeWriteFailed = EventId(14, "OutcomeWriteFailed")
    let ReleaseRequestFailed = EventId(15, "ReleaseRequestFailed")
    let ClaimLost = EventId(16, "ClaimLost")
    let RenewalFailed = EventId(17, "RenewalFailed")
    let ReporterFailed = EventId(18, "ReporterFailed")
    let CoreRefused = EventId(19, "CoreRefused")
    let ShutdownDeadline = EventId(30, "ShutdownDeadline")
    let ShutdownStuck = EventId(31, "ShutdownStuck")
    let GaugesFailed = EventId(32, "GaugesFailed")
    let LoopFailed = EventId(33, "LoopFailed")
    let ItemSetAside = EventId(34, "ItemSetAside")

    /// A time as ISO 8601 text (round-trip form), for log messages; empty for none.
    let time (value: DateTimeOffset option) =
        match value with
        | Some value -> value.ToString "O"
        | None -> ""

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
