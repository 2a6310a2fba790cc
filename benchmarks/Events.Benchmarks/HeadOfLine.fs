/// Head-of-line blocking: how long a fast handler's requests wait to start while a slow handler of
/// the same executor runs, against the same run without the slow handler, with default options.
module Events.Benchmarks.HeadOfLine

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging.Abstractions
open Events.Core
open Events.Benchmarks.Measure

/// What one run saw of the fast handler.
type HeadOfLineResult =
    {
        /// Milliseconds from each fast event's append returning to its handler's start, sorted.
        Latencies: float[]
        /// Fast requests that started while the slow handler was still running (all of them, without one).
        StartedBeside: int
        /// Fast events raised.
        Raised: int
    }

let private add name handlerName handler configuration =
    match Configuration.tryAdd name handlerName handler [] configuration with
    | Ok configuration -> configuration
    | Error errors -> failwithf "%A" errors

/// Raises one `slow.job` (when `slow` is set) whose handler takes `slowFor`, waits 200 ms, then raises
/// `fast.job` at `rate` per second for `seconds`, through a scheduler of `kind` with default options on
/// `store`; waits until every fast request started.
let run
    (label: string)
    (store: IEventStore)
    (kind: SchedulerKind)
    (slow: bool)
    (slowFor: TimeSpan)
    (rate: float)
    (seconds: float)
    =
    task {
        let started = ConcurrentDictionary<Guid, int64>()
        let mutable slowRunning = 0
        let mutable startedBeside = 0

        let slowHandler: Handler =
            fun _ token ->
                task {
                    Volatile.Write(&slowRunning, 1)

                    try
                        try
                            do! Task.Delay(slowFor, token)
                        with :? OperationCanceledException ->
                            ()
                    finally
                        Volatile.Write(&slowRunning, 0)

                    return HandlerResult.Succeeded
                }

        let fastHandler: Handler =
            fun context _ ->
                let now = Stopwatch.GetTimestamp()

                if started.TryAdd(context.Request.EventId, now) && Volatile.Read(&slowRunning) = 1 then
                    Interlocked.Increment(&startedBeside) |> ignore

                Task.FromResult HandlerResult.Succeeded

        let configuration =
            Configuration.empty
            |> add "slow.job" "slow-handler" slowHandler
            |> add "fast.job" "fast-handler" fastHandler

        use scheduler =
            new Scheduler(
                store,
                configuration,
                ProcessorOptions.Default,
                ExecutorOptions.Default,
                { SchedulerOptions.Default with
                    Kind = kind
                    ShutdownGrace = TimeSpan.FromSeconds 1.0
                },
                NullLogger.Instance,
                TimeProvider.System
            )

        scheduler.Start()

        if slow then
            let! _ = store.AppendAsync(events "slow.job" 1, CancellationToken.None)
            ()

        do! Task.Delay 200
        let count = int (rate * seconds)

        let! raised =
            commitPaced
                (events "fast.job" count)
                rate
                (fun event -> store.AppendAsync([ event ], CancellationToken.None) :> Task)
                (fun _ -> progress label (int64 started.Count) (int64 count))

        let waited = Stopwatch.StartNew()

        while started.Count < count && waited.Elapsed < TimeSpan.FromSeconds 90.0 do
            progress label (int64 started.Count) (int64 count)
            do! Task.Delay 20

        progressDone ()

        if started.Count < count then
            failwith $"%s{label}: only %d{started.Count} of %d{count} fast handlers started within 90 s"

        use deadline = new CancellationTokenSource(TimeSpan.FromSeconds 1.0)
        do! scheduler.ShutdownAsync deadline.Token

        return
            {
                Latencies =
                    [|
                        for pair in started do
                            // A handler can start before the append's return is stamped: count that as 0.
                            match raised.TryGetValue pair.Key with
                            | true, at -> max 0.0 (Stopwatch.GetElapsedTime(at, pair.Value).TotalMilliseconds)
                            | false, _ -> 0.0
                    |]
                    |> Array.sort
                StartedBeside = Volatile.Read(&startedBeside)
                Raised = count
            }
    }
