/// Web-request traffic on a durable PostgreSQL (fsync and synchronous commit on): concurrent publishers
/// each committing its events in its own Marten session and transaction, as web requests do, through a
/// scheduler in the same process; and, as this scenario's ceiling, the same database work written by
/// hand in the same run.
module Events.Benchmarks.Publishers

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging.Abstractions
open Npgsql
open Events.Core
open Events.Marten
open Events.Benchmarks.Measure

/// What one run of publishers saw.
type PublishResult =
    {
        /// Events fully handled (both requests completed) per second, from the first commit to the last
        /// completion.
        EventsPerSecond: float
        /// This process's CPU milliseconds per event (publishers, engine and store together).
        CpuMsPerEvent: float
    }

/// Milliseconds from each event's commit returning to each of its handlers' starts, sorted.
type LatencyResult = { Latencies: float[] }

/// The requests of the database completed so far (the Marten store's table for its documents).
let private completed (connectionString: string) =
    task {
        use connection = new NpgsqlConnection(connectionString)
        do! connection.OpenAsync()

        use command =
            new NpgsqlCommand("SELECT count(*) FROM mt_doc_events_request WHERE completed_at IS NOT NULL", connection)

        let! count = command.ExecuteScalarAsync()
        return Convert.ToInt64 count
    }

let private waitUntil (label: string) (total: int64) (count: unit -> Task<int64>) =
    task {
        let watch = Stopwatch.StartNew()
        let mutable seen = 0L

        while seen < total do
            if watch.Elapsed > TimeSpan.FromMinutes 10.0 then
                failwith $"%s{label}: only %d{seen} of %d{total} requests completed within 10 min"

            let! now = count ()
            seen <- now
            progress label seen total

            if seen < total then
                do! Task.Delay 20

        progressDone ()
    }

let private scheduler (store: IEventStore) configuration =
    new Scheduler(
        store,
        configuration,
        ProcessorOptions.Default,
        ExecutorOptions.Default,
        { SchedulerOptions.Default with
            ShutdownGrace = TimeSpan.FromSeconds 1.0
        },
        NullLogger.Instance,
        TimeProvider.System
    )

/// `publishers` concurrent publishers commit `count` events, `perTransaction` per Marten session,
/// while a scheduler with the default options handles them (two handlers per event).
let publish (label: string) (connectionString: string) (count: int) (perTransaction: int) (publishers: int) =
    task {
        let! (store: MartenEventStore) = MartenEventStore.CreateAsync(connectionString)

        try
            use running = scheduler store (handlers "web.request" ignore)

            let batches =
                ConcurrentQueue<Event list>(List.chunkBySize perTransaction (events "web.request" count))

            let cpu = Process.GetCurrentProcess().TotalProcessorTime
            let watch = Stopwatch.StartNew()
            running.Start()

            let publisher () =
                task {
                    let mutable batch = Unchecked.defaultof<Event list>

                    while batches.TryDequeue(&batch) do
                        use session = store.DocumentStore.LightweightSession()
                        session.AppendEvents batch |> ignore
                        do! session.SaveChangesAsync()
                }

            let publishing = Task.WhenAll [ for _ in 1..publishers -> publisher () :> Task ]
            do! waitUntil label (int64 count * 2L) (fun () -> completed connectionString)
            do! publishing
            let seconds = watch.Elapsed.TotalSeconds
            let used = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMilliseconds
            use deadline = new CancellationTokenSource(TimeSpan.FromSeconds 5.0)
            do! running.ShutdownAsync deadline.Token

            return
                {
                    EventsPerSecond = float count / seconds
                    CpuMsPerEvent = used / float count
                }
        finally
            store.DisposeAsync().AsTask().GetAwaiter().GetResult()
    }

/// One publisher commits `count` events, one per transaction, at `rate` per second; the delay from each
/// commit returning to each of its two handlers' starts.
let latency (label: string) (connectionString: string) (count: int) (rate: float) =
    task {
        let! (store: MartenEventStore) = MartenEventStore.CreateAsync(connectionString)

        try
            let started = ConcurrentQueue<struct (Guid * int64)>()

            use running =
                scheduler
                    store
                    (handlers "web.request" (fun context ->
                        started.Enqueue(struct (context.Request.EventId, Stopwatch.GetTimestamp()))))

            running.Start()

            let commit (event: Event) =
                task {
                    use session = store.DocumentStore.LightweightSession()
                    session.AppendEvents [ event ] |> ignore
                    do! session.SaveChangesAsync()
                }
                :> Task

            let! committed =
                commitPaced (events "web.request" count) rate commit (fun _ ->
                    progress label (int64 started.Count) (int64 count * 2L))

            do! waitUntil label (int64 count * 2L) (fun () -> Task.FromResult(int64 started.Count))
            use deadline = new CancellationTokenSource(TimeSpan.FromSeconds 5.0)
            do! running.ShutdownAsync deadline.Token

            return
                {
                    Latencies =
                        [|
                            for struct (id, at) in started do
                                // A handler can start before the commit's return is stamped: count that as 0.
                                match committed.TryGetValue id with
                                | true, commit -> max 0.0 (Stopwatch.GetElapsedTime(commit, at).TotalMilliseconds)
                                | false, _ -> 0.0
                        |]
                        |> Array.sort
                }
        finally
            store.DisposeAsync().AsTask().GetAwaiter().GetResult()
    }

/// The ceiling of this scenario: the same database work written by hand. `publishers` clients each
/// raise with one statement that inserts the event already processed with its two requests (no
/// NOTIFY), `perTransaction` events per statement; one completer beside them claims runnable requests
/// in batches of 500 (FOR UPDATE SKIP LOCKED) and marks them completed.
let ceiling (label: string) (connectionString: string) (count: int) (perTransaction: int) (publishers: int) =
    task {
        let setup =
            """
CREATE TABLE ceiling_events (id uuid PRIMARY KEY, name text NOT NULL, data jsonb NOT NULL,
    created_at timestamptz NOT NULL, processed_at timestamptz);
CREATE TABLE ceiling_requests (id uuid PRIMARY KEY, event_id uuid NOT NULL, handler text NOT NULL,
    created_at timestamptz NOT NULL, completed_at timestamptz);
CREATE INDEX ceiling_requests_runnable ON ceiling_requests (created_at, id) WHERE completed_at IS NULL;"""

        let raise =
            """
WITH e AS (
    INSERT INTO ceiling_events (id, name, data, created_at, processed_at)
    SELECT id, 'web.request', '{"n":1}'::jsonb, now(), now() FROM unnest($1::uuid[]) AS ids(id)
    RETURNING id)
INSERT INTO ceiling_requests (id, event_id, handler, created_at)
SELECT gen_random_uuid(), e.id, h.handler, now() FROM e, unnest(ARRAY['first', 'second']) AS h(handler)"""

        let complete =
            """
WITH picked AS (
    SELECT id FROM ceiling_requests WHERE completed_at IS NULL ORDER BY created_at, id LIMIT 500
    FOR UPDATE SKIP LOCKED)
UPDATE ceiling_requests AS r SET completed_at = now() FROM picked WHERE r.id = picked.id"""

        use connection = new NpgsqlConnection(connectionString)
        do! connection.OpenAsync()
        use command = new NpgsqlCommand(setup, connection)
        let! _ = command.ExecuteNonQueryAsync()

        let batches =
            ConcurrentQueue<Guid[]>(
                List.init count (fun _ -> Guid.CreateVersion7())
                |> List.chunkBySize perTransaction
                |> List.map Array.ofList
            )

        let total = int64 count * 2L
        let mutable done' = 0L
        let watch = Stopwatch.StartNew()

        let client () =
            task {
                use connection = new NpgsqlConnection(connectionString)
                do! connection.OpenAsync()
                use command = new NpgsqlCommand(raise, connection)

                let ids =
                    NpgsqlParameter(NpgsqlDbType = (NpgsqlTypes.NpgsqlDbType.Array ||| NpgsqlTypes.NpgsqlDbType.Uuid))

                command.Parameters.Add ids |> ignore
                let mutable batch = Unchecked.defaultof<Guid[]>

                while batches.TryDequeue(&batch) do
                    ids.Value <- batch
                    let! _ = command.ExecuteNonQueryAsync()
                    ()
            }

        let completer () =
            task {
                use connection = new NpgsqlConnection(connectionString)
                do! connection.OpenAsync()
                use command = new NpgsqlCommand(complete, connection)

                while Volatile.Read(&done') < total do
                    let! rows = command.ExecuteNonQueryAsync()
                    let now = Interlocked.Add(&done', int64 rows)
                    progress label now total

                    if rows = 0 then
                        do! Task.Delay 1
            }

        do! Task.WhenAll [ yield completer () :> Task; for _ in 1..publishers -> client () :> Task ]
        progressDone ()
        return float count / watch.Elapsed.TotalSeconds
    }

/// The scenario's figures from one run.
type Figures =
    {
        /// Events per transaction -> (framework events/s, framework CPU ms per event, ceiling events/s).
        Throughput: (int * PublishResult * float) list
        /// Commit to handler start at `Rate` events per second.
        Latency: LatencyResult
        Rate: float
        Events: int
        Publishers: int
    }

/// Runs the scenario on `server`, each measurement in a fresh database: 8 publishers committing one
/// event per transaction and 100 per transaction, each against its ceiling, then latency at 200/s.
let runs (quick: bool) (server: Postgres.Server) =
    task {
        let count = if quick then 2_000 else 20_000
        let publishers = 8
        let rate = 200.0
        let latencyCount = if quick then 600 else 2_000

        let fresh (body: string -> Task<'T>) =
            task {
                let! name, connectionString = server.CreateDatabaseAsync()

                try
                    return! body connectionString
                finally
                    server.DropDatabaseAsync(name).GetAwaiter().GetResult()
            }

        let throughput = ResizeArray()

        for perTransaction in [ 1; 100 ] do
            eprintfn "== publishers: %d x %d events, %d per transaction" publishers count perTransaction

            let! framework =
                fresh (fun connectionString ->
                    publish $"publishers %d{perTransaction}/tx" connectionString count perTransaction publishers)

            eprintfn
                "   framework: %.0f events/s fully handled, %.2f ms CPU per event"
                framework.EventsPerSecond
                framework.CpuMsPerEvent

            let! byHand =
                fresh (fun connectionString ->
                    ceiling $"ceiling %d{perTransaction}/tx" connectionString count perTransaction publishers)

            eprintfn "   ceiling: %.0f events/s fully handled" byHand
            throughput.Add(perTransaction, framework, byHand)

        eprintfn "== publishers: latency at %.0f events/s" rate

        let! latencies =
            fresh (fun connectionString -> latency "latency" connectionString latencyCount rate)

        return
            {
                Throughput = List.ofSeq throughput
                Latency = latencies
                Rate = rate
                Events = count
                Publishers = publishers
            }
    }

/// The scenario's table, in markdown.
let print (figures: Figures) =
    let p (q: float) = percentile figures.Latency.Latencies q
    printfn ""
    printfn "## Web requests: %d publishers, each committing in its own Marten session" figures.Publishers
    printfn ""

    printfn
        "%d events x 2 handlers (no-op), the scheduler with default options in the same process; the ceiling does the same database work by hand (each raise one statement inserting its event processed with its 2 requests, no NOTIFY, and a batched completer beside them)."
        figures.Events

    printfn ""
    printfn "| measure | framework | ceiling (SQL by hand) | framework ÷ ceiling | target |"
    printfn "|---|---:|---:|---:|---|"

    for perTransaction, framework, byHand in figures.Throughput do
        printfn
            "| fully handled, %d event(s) per transaction (events/s) | %.0f | %.0f | %.2f | %s |"
            perTransaction
            framework.EventsPerSecond
            byHand
            (framework.EventsPerSecond / byHand)
            (if perTransaction = 1 then "≥ 0.5" else "")

    for perTransaction, framework, _ in figures.Throughput do
        printfn
            "| process CPU per event, %d per transaction (ms) | %.2f | | | %s |"
            perTransaction
            framework.CpuMsPerEvent
            (if perTransaction = 1 then "≤ 0.5" else "")

    printfn "| commit to handler start at %.0f/s, p50 (ms) | %.1f | | | ≤ 2 |" figures.Rate (p 50.0)
    printfn "| commit to handler start at %.0f/s, p99 (ms) | %.1f | | | ≤ 10 |" figures.Rate (p 99.0)
