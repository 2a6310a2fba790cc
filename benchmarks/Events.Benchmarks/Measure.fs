/// Measurements shared by every benchmark: end-to-end throughput through a real scheduler, and latency
/// from an event's append to its handler's start.
module Events.Benchmarks.Measure

open System
open System.Diagnostics
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging.Abstractions
open Events

/// Options tuned for throughput: big batches, several executor workers.
let processorOptions =
    { ProcessorOptions.Default with
        Limit = 500
        Workers = 1
    }

let executorOptions =
    { ExecutorOptions.Default with
        Limit = 500
        Workers = 8
    }

/// Prints a progress line that rewrites itself.
let progress (label: string) (done': int64) (total: int64) =
    Console.Error.Write($"\r  %s{label}: %d{done'}/%d{total}        ")

let private factory = EventFactory()

/// `count` application events named `name`, ready to append.
let events (name: string) (count: int) =
    [
        for i in 1..count ->
            match factory.Application(name, {| n = i |}) with
            | Ok event -> event
            | Error error -> failwith error.Message
    ]

/// Appends events in batches of 1,000.
let appendAll (store: IEventStore) (events: Event list) =
    task {
        for batch in List.chunkBySize 1000 events do
            let! _ = store.AppendAsync(batch, CancellationToken.None)
            ()
    }

/// A configuration with two no-op handlers on `name`, counting their runs.
let twoNoOpHandlers (name: string) (counter: int64 ref) =
    let handler: Handler =
        fun _ _ ->
            Interlocked.Increment &counter.contents |> ignore
            Task.FromResult HandlerResult.Succeeded

    [ "first"; "second" ]
    |> List.fold
        (fun configuration handlerName ->
            match Configuration.tryAdd name handlerName handler [] configuration with
            | Ok configuration -> configuration
            | Error errors -> failwithf "%A" errors)
        Configuration.empty

/// Appends `count` events, then runs a concurrent scheduler until every handler ran; returns seconds.
let throughput (label: string) (store: IEventStore) (count: int) =
    task {
        let counter = ref 0L
        let name = "bench.event"
        do! appendAll store (events name count)
        let target = int64 count * 2L

        use scheduler =
            new Scheduler(
                store,
                twoNoOpHandlers name counter,
                processorOptions,
                executorOptions,
                { SchedulerOptions.Default with
                    Kind = SchedulerKind.Concurrent
                    Interval = TimeSpan.FromMilliseconds 200.0
                },
                NullLogger.Instance,
                TimeProvider.System
            )

        let watch = Stopwatch.StartNew()
        scheduler.Start()

        while Volatile.Read(&counter.contents) < target do
            progress label (Volatile.Read(&counter.contents)) target
            do! Task.Delay 100

        let seconds = watch.Elapsed.TotalSeconds
        Console.Error.Write "\r"
        do! scheduler.ShutdownAsync CancellationToken.None
        return seconds
    }

/// Percentile of sorted values (nearest rank).
let percentile (sorted: float[]) (p: float) =
    if sorted.Length = 0 then
        nan
    else
        sorted[min (sorted.Length - 1) (int (Math.Ceiling(p / 100.0 * float sorted.Length)) - 1 |> max 0)]

/// Appends `count` events at `rate` per second with a running scheduler; returns each event's latency
/// from append to its handler's start, in milliseconds, sorted.
let latency (label: string) (store: IEventStore) (count: int) (rate: float) =
    task {
        let started = Collections.Concurrent.ConcurrentDictionary<Guid, int64>()
        let appended = Collections.Concurrent.ConcurrentDictionary<Guid, int64>()

        let handler: Handler =
            fun context _ ->
                started.TryAdd(context.Request.EventId, Stopwatch.GetTimestamp()) |> ignore
                Task.FromResult HandlerResult.Succeeded

        let configuration =
            match Configuration.tryAdd "latency.event" "probe" handler [] Configuration.empty with
            | Ok configuration -> configuration
            | Error errors -> failwithf "%A" errors

        use scheduler =
            new Scheduler(
                store,
                configuration,
                ProcessorOptions.Default,
                ExecutorOptions.Default,
                { SchedulerOptions.Default with
                    Kind = SchedulerKind.Concurrent
                },
                NullLogger.Instance,
                TimeProvider.System
            )

        scheduler.Start()
        let gap = TimeSpan.FromSeconds(1.0 / rate)
        let watch = Stopwatch.StartNew()

        for i, event in List.indexed (events "latency.event" count) do
            // Paced against the clock so the rate holds whatever each append costs.
            let due = gap * float i

            if watch.Elapsed < due then
                do! Task.Delay(due - watch.Elapsed)

            appended[event.Id] <- Stopwatch.GetTimestamp()
            let! _ = store.AppendAsync([ event ], CancellationToken.None)
            progress label (int64 i + 1L) (int64 count)

        while started.Count < count do
            do! Task.Delay 20

        Console.Error.Write "\r"
        do! scheduler.ShutdownAsync CancellationToken.None

        return
            [|
                for pair in appended -> Stopwatch.GetElapsedTime(pair.Value, started[pair.Key]).TotalMilliseconds
            |]
            |> Array.sort
    }

/// Fills a backlog of `count` runnable requests, then times claiming and completing `sample` of them
/// directly on the store: the cost per event as the backlog grows. Returns microseconds per request.
let backlogCost (store: IEventStore) (count: int) (sample: int) =
    task {
        let counter = ref 0L
        let name = "backlog.event"
        do! appendAll store (events name count)

        // Fan the events out without running anything.
        let processor =
            Processor(
                store,
                twoNoOpHandlers name counter,
                processorOptions,
                new Instruments("bench", (fun () -> None), (fun () -> DateTimeOffset.UtcNow)),
                NullLogger.Instance,
                TimeProvider.System
            )

        let mutable more = true

        while more do
            let! claimed = processor.ProcessAsync CancellationToken.None
            more <- claimed > 0

        let watch = Stopwatch.StartNew()
        let mutable handled = 0

        while handled < sample do
            let! claim =
                store.ClaimRequestsAsync(100, DateTimeOffset.UtcNow, TimeSpan.FromMinutes 5.0, CancellationToken.None)

            let outcomes =
                [
                    for request in claim.Claimed ->
                        let token = (HandlerRequest.lease request).Value.Token

                        match
                            HandlerRequest.transition
                                BackoffPolicy.Default
                                (RequestCommand.Succeed(token, DateTimeOffset.UtcNow))
                                request
                        with
                        | Ok next ->
                            {
                                Request = next
                                Token = token
                                Transaction = None
                            }
                        | Error error -> failwith error.Message
                ]

            let! _ = store.RecordOutcomesAsync(outcomes, CancellationToken.None)
            handled <- handled + claim.Claimed.Length

        return watch.Elapsed.TotalMilliseconds * 1000.0 / float handled
    }
