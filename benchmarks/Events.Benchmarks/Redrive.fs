/// Bulk redrive: re-executing many dead requests through the administration port while a scheduler's
/// executors run on the same database (claiming the re-executed requests as they become runnable, and
/// a stream of live events beside them).
module Events.Benchmarks.Redrive

open System
open System.Diagnostics
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging.Abstractions
open Events.Core
open Events.Marten
open Events.Benchmarks.Measure

/// What one redrive measured.
type RedriveResult =
    {
        /// Dead requests re-executed.
        Dead: int64
        /// Seconds the bulk re-execute took (chunks of `Chunk`).
        BulkSeconds: float
        /// Requests changed per transaction.
        Chunk: int
        /// Requests re-executed.
        Updated: int64
        /// Requests an executor held when their chunk ran (left alone).
        Locked: int64
        /// Seconds from the start of the redrive until every re-executed request completed.
        DrainSeconds: float
        /// Live events handled while the redrive ran.
        LiveHandled: int64
    }

let private add name handlerName handler options configuration =
    match Configuration.tryAdd name handlerName handler options configuration with
    | Ok configuration -> configuration
    | Error errors -> failwithf "%A" errors

/// Makes `count` dead requests (a handler that fails once, MaxErrors 1), makes the handler healthy, then
/// re-executes every dead request in chunks of `chunk` while the scheduler runs and live events arrive
/// at `liveRate` per second; waits until every re-executed request completed.
let run (store: MartenEventStore) (count: int) (chunk: int) (liveRate: float) =
    task {
        let mutable healthy = 0
        let mutable liveHandled = 0L
        let mutable redriven = 0L

        let flaky: Handler =
            fun _ _ ->
                if Volatile.Read(&healthy) = 1 then
                    Interlocked.Increment(&redriven) |> ignore
                    Task.FromResult HandlerResult.Succeeded
                else
                    Task.FromResult(HandlerResult.Failed $"upstream %d{Random.Shared.Next 1000} refused the call")

        let live: Handler =
            fun _ _ ->
                Interlocked.Increment(&liveHandled) |> ignore
                Task.FromResult HandlerResult.Succeeded

        let configuration =
            Configuration.empty
            |> add "order.placed" "flaky" flaky [ HandlerOption.MaxErrors 1 ]
            |> add "order.live" "live" live []

        let port = store :> IEventStore
        let admin = new MartenAdminStore(store) :> IAdminStore

        use scheduler =
            new Scheduler(
                port,
                configuration,
                processorOptions 500,
                executorOptions 500,
                { SchedulerOptions.Default with
                    Kind = SchedulerKind.Concurrent
                    ShutdownGrace = TimeSpan.FromSeconds 5.0
                },
                NullLogger.Instance,
                TimeProvider.System
            )

        scheduler.Start()

        let! _ =
            appendAll
                "redrive: append"
                (fun events -> port.AppendAsync(events, CancellationToken.None))
                1000
                (events "order.placed" count)

        let mutable dead = 0L

        while dead < int64 count do
            do! Task.Delay 250
            let! stats = port.StatsAsync(DateTimeOffset.UtcNow, CancellationToken.None)
            dead <- stats.DeadRequests
            progress "redrive: dying" dead (int64 count)

        progressDone ()
        Volatile.Write(&healthy, 1)
        use stopLive = new CancellationTokenSource()

        let liveLoop =
            task {
                let gap = TimeSpan.FromSeconds(1.0 / liveRate)

                while not stopLive.IsCancellationRequested do
                    let! _ = port.AppendAsync(events "order.live" 1, CancellationToken.None)

                    try
                        do! Task.Delay(gap, stopLive.Token)
                    with :? OperationCanceledException ->
                        ()
            }

        let liveBefore = Interlocked.Read &liveHandled
        let watch = Stopwatch.StartNew()

        let! result =
            Administration.bulkAsync
                admin
                {
                    Filter = RequestFilter.dead
                    Fingerprint = None
                }
                BulkCommand.ReExecute
                DateTimeOffset.UtcNow
                { Administration.defaultBulkOptions with
                    ChunkSize = chunk
                }
                (fun p -> progress "redrive: re-execute" p.Selected (int64 count))
                CancellationToken.None

        let bulkSeconds = watch.Elapsed.TotalSeconds
        progressDone ()

        while Interlocked.Read &redriven < result.Updated
              && watch.Elapsed < TimeSpan.FromMinutes 10.0 do
            progress "redrive: drain" (Interlocked.Read &redriven) result.Updated
            do! Task.Delay 100

        let drainSeconds = watch.Elapsed.TotalSeconds
        progressDone ()
        stopLive.Cancel()
        do! liveLoop
        use deadline = new CancellationTokenSource(TimeSpan.FromSeconds 10.0)
        do! scheduler.ShutdownAsync deadline.Token

        return
            {
                Dead = dead
                BulkSeconds = bulkSeconds
                Chunk = chunk
                Updated = result.Updated
                Locked = result.Locked
                DrainSeconds = drainSeconds
                LiveHandled = Interlocked.Read &liveHandled - liveBefore
            }
    }
