/// Measurements: end-to-end throughput through a real scheduler, latency from an event's commit to its
/// handler's start, the cost per event as the backlog grows; on any store of the framework, and the
/// same on the hand-written SQL ceiling.
module Events.Benchmarks.Measure

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging.Abstractions
open Events.Core
open Events.Benchmarks.Ceiling

/// Events appended per call in the throughput runs, by the framework and the ceiling alike.
[<Literal>]
let AppendBatch = 100

/// Events appended per call when a backlog is filled (not timed).
[<Literal>]
let FillBatch = 1000

/// Claims per batch when the cost per event is sampled at a backlog, for the framework and the ceiling.
[<Literal>]
let SampleBatch = 100

/// The two no-op handlers of every event.
let handlerNames = [ "first"; "second" ]

/// Options tuned for throughput: `batch` events and requests claimed per round.
let processorOptions (batch: int) =
    { ProcessorOptions.Default with
        Limit = batch
        Workers = 1
    }

/// Executor workers in the throughput runs (`--workers`).
let mutable executorWorkers = 8

let executorOptions (batch: int) =
    { ExecutorOptions.Default with
        Limit = batch
        Workers = executorWorkers
    }

let mutable private lastProgress = 0L

/// Prints a progress line that rewrites itself, at most five times a second.
let progress (label: string) (done': int64) (total: int64) =
    let now = Stopwatch.GetTimestamp()

    if
        done' >= total
        || Stopwatch.GetElapsedTime(Volatile.Read &lastProgress, now).TotalMilliseconds
           >= 200.0
    then
        Volatile.Write(&lastProgress, now)
        Console.Error.Write($"\r  %s{label}: %d{done'}/%d{total}                    ")

/// Ends a progress line.
let progressDone () = Console.Error.Write "\r"

/// Tracks the peak working set of the process in each phase, sampled every 50 ms.
[<Sealed>]
type PeakMemory() =
    let peaks = ConcurrentDictionary<string, int64>()
    let mutable phase = "start"

    let timer =
        new Timer(
            (fun _ ->
                let current = Environment.WorkingSet
                peaks.AddOrUpdate(phase, current, (fun _ peak -> max peak current)) |> ignore),
            null,
            0,
            50
        )

    /// Starts a phase: collects garbage first, so a phase starts from what is live.
    member _.Enter(name: string) =
        GC.Collect(2, GCCollectionMode.Forced, true, true)
        GC.WaitForPendingFinalizers()
        phase <- name

    /// The peak of a phase, in MiB.
    member _.PeakMiB(name: string) =
        match peaks.TryGetValue name with
        | true, peak -> Some(float peak / 1048576.0)
        | false, _ -> None

    interface IDisposable with
        member _.Dispose() = timer.Dispose()

let private factory = EventFactory()

/// `count` application events named `name`, ready to append.
let events (name: string) (count: int) =
    [
        for i in 1..count ->
            match factory.Application(name, {| n = i |}) with
            | Ok event -> event
            | Error error -> failwith error.Message
    ]

/// Appends events in batches of `batch`, showing progress; returns seconds.
let appendAll (label: string) (append: Event list -> Task) (batch: int) (events: Event list) =
    task {
        let total = int64 events.Length
        let watch = Stopwatch.StartNew()
        let mutable appended = 0L

        for chunk in List.chunkBySize batch events do
            do! append chunk
            appended <- appended + int64 chunk.Length
            progress label appended total

        progressDone ()
        return watch.Elapsed.TotalSeconds
    }

let private appendTo (store: IEventStore) =
    fun events ->
        task {
            let! _ = store.AppendAsync(events, CancellationToken.None)
            ()
        }
        :> Task

/// A configuration with the no-op handlers on `name`, each run told to `ran`.
let handlers (name: string) (ran: HandlerContext -> unit) =
    let handler: Handler =
        fun context _ ->
            ran context
            Task.FromResult HandlerResult.Succeeded

    handlerNames
    |> List.fold
        (fun configuration handlerName ->
            match Configuration.tryAdd name handlerName handler [] configuration with
            | Ok configuration -> configuration
            | Error errors -> failwithf "%A" errors)
        Configuration.empty

/// The two phases of a throughput run.
type Throughput =
    {
        /// Appending every event, in batches of `AppendBatch`.
        AppendSeconds: float
        /// Fully handling the backlog: every request of every event completed.
        DrainSeconds: float
    }

    member this.Events(count: int) =
        float count / (this.AppendSeconds + this.DrainSeconds)

/// Waits until `target` handler runs were counted, showing progress.
let private waitFor (label: string) (counter: int64 ref) (target: int64) (failed: unit -> exn option) =
    task {
        while Volatile.Read(&counter.contents) < target do
            match failed () with
            | Some error -> raise (InvalidOperationException("a loop failed", error))
            | None -> ()

            progress label (Volatile.Read(&counter.contents)) target
            do! Task.Delay 5

        progress label target target
        progressDone ()
    }

/// Appends `count` events, runs `analyze` (not timed), then runs a concurrent scheduler until every
/// request was handled and its outcome written (`settled`: no request left running).
let throughput
    (label: string)
    (store: IEventStore)
    (count: int)
    (batch: int)
    (analyze: unit -> Task)
    (settled: unit -> Task<bool>)
    =
    task {
        let counter = ref 0L
        let name = "bench.event"

        let! appendSeconds =
            appendAll $"%s{label} append" (appendTo store) AppendBatch (events name count)

        do! analyze ()
        let target = int64 count * 2L

        use scheduler =
            new Scheduler(
                store,
                handlers name (fun _ -> Interlocked.Increment &counter.contents |> ignore),
                processorOptions batch,
                executorOptions batch,
                { SchedulerOptions.Default with
                    Kind = SchedulerKind.Concurrent
                },
                NullLogger.Instance,
                TimeProvider.System
            )

        let watch = Stopwatch.StartNew()
        scheduler.Start()
        do! waitFor $"%s{label} handled" counter target (fun () -> None)
        let mutable settledNow = false

        while not settledNow do
            let! ok = settled ()
            settledNow <- ok

            if not ok then
                do! Task.Delay 2

        let seconds = watch.Elapsed.TotalSeconds
        do! scheduler.ShutdownAsync CancellationToken.None

        return
            {
                AppendSeconds = appendSeconds
                DrainSeconds = seconds
            }
    }

/// Appends `count` events, analyzes the table, then runs the ceiling's loops, claiming `batch` per round, until every
/// request was completed.
let ceilingThroughput (label: string) (ceiling: Ceiling) (count: int) (batch: int) =
    task {
        let counter = ref 0L

        let! appendSeconds =
            appendAll $"%s{label} append" ceiling.AppendAsync AppendBatch (events "bench.event" count)

        // As in the framework's run: the planner gets the backlog's statistics before the drain.
        do! ceiling.ExecuteAsync "ANALYZE ceiling_events"

        let pipeline =
            Pipeline(
                ceiling,
                batch,
                TimeSpan.FromSeconds 1.0,
                handlerNames,
                ignore,
                (fun n -> Interlocked.Add(&counter.contents, int64 n) |> ignore)
            )

        let watch = Stopwatch.StartNew()
        do! pipeline.StartAsync false
        do! waitFor $"%s{label} handled" counter (int64 count * 2L) (fun () -> pipeline.Error)
        let seconds = watch.Elapsed.TotalSeconds
        do! pipeline.StopAsync()

        return
            {
                AppendSeconds = appendSeconds
                DrainSeconds = seconds
            }
    }

/// Percentile of sorted values (nearest rank).
let percentile (sorted: float[]) (p: float) =
    if sorted.Length = 0 then
        nan
    else
        sorted[min (sorted.Length - 1) (int (Math.Ceiling(p / 100.0 * float sorted.Length)) - 1 |> max 0)]

/// Commits events one at a time at `rate` per second, paced against the clock so the rate holds whatever
/// each commit costs; `committed` is told each one's index. Returns when each commit returned
/// (Stopwatch timestamps, by event id).
let commitPaced (events: Event list) (rate: float) (commit: Event -> Task) (committed: int -> unit) =
    task {
        let stamps = ConcurrentDictionary<Guid, int64>()
        let gap = TimeSpan.FromSeconds(1.0 / rate)
        let watch = Stopwatch.StartNew()

        for i, event in List.indexed events do
            let due = gap * float i

            if watch.Elapsed < due then
                do! Task.Delay(due - watch.Elapsed)

            do! commit event
            stamps[event.Id] <- Stopwatch.GetTimestamp()
            committed i

        return stamps
    }

/// Appends `count` events one at a time at `rate` per second; returns each request's latency, from
/// the return of the append that committed its event to its handler's start, in milliseconds, sorted.
let private paced
    (label: string)
    (count: int)
    (rate: float)
    (append: Event -> Task)
    (started: ConcurrentDictionary<struct (Guid * string), int64>)
    (failed: unit -> exn option)
    =
    task {
        let! committed =
            commitPaced (events "latency.event" count) rate append (fun i ->
                progress label (int64 i + 1L) (int64 count))

        let expected = count * handlerNames.Length
        let deadline = Stopwatch.StartNew()

        while started.Count < expected && deadline.Elapsed < TimeSpan.FromSeconds 60.0 do
            match failed () with
            | Some error -> raise (InvalidOperationException("a loop failed", error))
            | None -> do! Task.Delay 20

        progressDone ()

        if started.Count < expected then
            failwith $"%s{label}: only %d{started.Count} of %d{expected} handlers started within 60 s"

        return
            [|
                for pair in started do
                    let struct (eventId, _) = pair.Key
                    Stopwatch.GetElapsedTime(committed[eventId], pair.Value).TotalMilliseconds
            |]
            |> Array.sort
    }

/// Latency through the framework: `appender` appends (through another store instance on PostgreSQL,
/// so that the scheduler hears of each event only through LISTEN/NOTIFY), a concurrent scheduler with
/// default options on `consumer` handles.
let latency (label: string) (appender: IEventStore) (consumer: IEventStore) (count: int) (rate: float) =
    task {
        let started = ConcurrentDictionary<struct (Guid * string), int64>()

        let configuration =
            handlers "latency.event" (fun context ->
                started.TryAdd(
                    struct (context.Request.EventId, context.Request.HandlerName.Value),
                    Stopwatch.GetTimestamp()
                )
                |> ignore)

        use scheduler =
            new Scheduler(
                consumer,
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
        // Let the first (empty) rounds pass.
        do! Task.Delay 500

        let! latencies =
            paced label count rate (fun event -> appendTo appender [ event ]) started (fun () -> None)

        do! scheduler.ShutdownAsync CancellationToken.None
        return latencies
    }

/// Latency through the ceiling: its loops, woken by its LISTEN/NOTIFY listener.
let ceilingLatency (label: string) (ceiling: Ceiling) (count: int) (rate: float) =
    task {
        let started = ConcurrentDictionary<struct (Guid * string), int64>()

        let pipeline =
            Pipeline(
                ceiling,
                50,
                TimeSpan.FromSeconds 1.0,
                handlerNames,
                (fun requests ->
                    let now = Stopwatch.GetTimestamp()

                    for request in requests do
                        started.TryAdd(struct (request.EventId, request.Handler), now) |> ignore),
                ignore
            )

        do! pipeline.StartAsync true
        do! Task.Delay 500

        let! latencies =
            paced label count rate (fun event -> ceiling.AppendAsync [ event ]) started (fun () -> pipeline.Error)

        do! pipeline.StopAsync()
        return latencies
    }

/// The cost per event at a backlog: microseconds to process one event (claim and fan-out commit) and
/// to handle one request (claim and completion), sampled at the head of a backlog, in batches of
/// `SampleBatch`.
type BacklogCost =
    {
        EventMicroseconds: float
        RequestMicroseconds: float
    }

    /// The database work of one event: processing it and handling its two requests.
    member this.PerEvent = this.EventMicroseconds + 2.0 * this.RequestMicroseconds

/// Fills a backlog of `count` events; times processing `eventSample` of them; fans the rest out (a
/// backlog of 2 x `count` requests); times claiming and completing `requestSample` requests directly
/// on the store. `settle` runs before each timing (VACUUM ANALYZE on PostgreSQL).
let backlogCost
    (label: string)
    (store: IEventStore)
    (count: int)
    (eventSample: int)
    (requestSample: int)
    (settle: unit -> Task)
    =
    task {
        let name = "backlog.event"
        let! _ = appendAll $"%s{label} fill" (appendTo store) FillBatch (events name count)
        do! settle ()

        let processor limit =
            Processor(
                store,
                handlers name ignore,
                processorOptions limit,
                new Instruments("bench", (fun () -> None), (fun () -> DateTimeOffset.UtcNow)),
                NullLogger.Instance,
                TimeProvider.System
            )

        let sampled = processor SampleBatch
        let watch = Stopwatch.StartNew()
        let mutable processed = 0

        while processed < eventSample do
            let! claimed = sampled.ProcessAsync CancellationToken.None
            processed <- processed + claimed

            if claimed = 0 then
                failwith "the backlog ran out"

        let eventMicroseconds = watch.Elapsed.TotalMicroseconds / float processed

        // Fan the rest out without running anything.
        let rest = processor FillBatch
        let mutable more = true

        while more do
            let! claimed = rest.ProcessAsync CancellationToken.None
            processed <- processed + claimed
            progress $"%s{label} fan-out" (int64 processed) (int64 count)
            more <- claimed > 0

        progressDone ()
        do! settle ()
        let watch = Stopwatch.StartNew()
        let mutable handled = 0

        while handled < requestSample do
            let! claim =
                store.ClaimRequestsAsync(
                    SampleBatch,
                    DateTimeOffset.UtcNow,
                    TimeSpan.FromMinutes 5.0,
                    CancellationToken.None
                )

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

            if claim.Claimed.IsEmpty then
                failwith "the request backlog ran out"

        return
            {
                EventMicroseconds = eventMicroseconds
                RequestMicroseconds = watch.Elapsed.TotalMicroseconds / float handled
            }
    }

/// The same on the ceiling.
let ceilingBacklogCost (label: string) (ceiling: Ceiling) (count: int) (eventSample: int) (requestSample: int) =
    task {
        let! _ =
            appendAll $"%s{label} fill" ceiling.AppendAsync FillBatch (events "backlog.event" count)

        let settle () = ceiling.ExecuteAsync "VACUUM ANALYZE"
        do! settle ()

        let round limit =
            task {
                let! token, claimed = ceiling.ClaimEventsAsync(limit, TimeSpan.FromMinutes 1.0)

                if claimed.Length > 0 then
                    let! _ = ceiling.CommitAsync(token, claimed, handlerNames)
                    ()

                return claimed.Length
            }

        let watch = Stopwatch.StartNew()
        let mutable processed = 0

        while processed < eventSample do
            let! claimed = round SampleBatch
            processed <- processed + claimed

            if claimed = 0 then
                failwith "the backlog ran out"

        let eventMicroseconds = watch.Elapsed.TotalMicroseconds / float processed
        let mutable more = true

        while more do
            let! claimed = round FillBatch
            processed <- processed + claimed
            progress $"%s{label} fan-out" (int64 processed) (int64 count)
            more <- claimed > 0

        progressDone ()
        do! settle ()
        let watch = Stopwatch.StartNew()
        let mutable handled = 0

        while handled < requestSample do
            let! token, claimed =
                ceiling.ClaimRequestsAsync(SampleBatch, TimeSpan.FromMinutes 5.0)

            do! ceiling.CompleteAsync(token, claimed |> Array.map _.RequestId)
            handled <- handled + claimed.Length

            if claimed.Length = 0 then
                failwith "the request backlog ran out"

        return
            {
                EventMicroseconds = eventMicroseconds
                RequestMicroseconds = watch.Elapsed.TotalMicroseconds / float handled
            }
    }
