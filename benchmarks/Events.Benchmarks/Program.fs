/// The benchmark program: throughput, latency, backlog scaling, memory and idle queries, on the
/// in-memory store and on PostgreSQL, with the hand-written SQL ceiling measured in the same run.
module Events.Benchmarks.Program

open System
open System.Diagnostics
open System.Threading
open System.Threading.Tasks
open Events.Core
open Events.Marten
open Events.Benchmarks.Ceiling
open Events.Benchmarks.Measure
open Events.Benchmarks.Postgres
open Events.Benchmarks.Profile

let private usage =
    $"""Usage: dotnet run -c Release --project benchmarks/Events.Benchmarks -- [options]

Measures the framework on the in-memory store and on PostgreSQL, and the same database work done by
hand-written batched SQL through Npgsql (the ceiling), in the same run. Progress goes to stderr, the
results (markdown tables) to stdout.

Options:
  --quick        a smoke run with small sizes (seconds, not minutes)
  --million      also measure 1,000,000 events (throughput and backlog; slow: half an hour)
  --million-backlog
                 also measure the cost per event at a backlog of 1,000,000 events (minutes)
  --batch N      events and requests the framework claims per round (default 500); the ceiling runs
                 with batches of 100 and of N
  --workers N    the framework's executor workers in the throughput runs (default 8)
  --only WHICH   memory or postgres: measure one store only
  --head-of-line only the head-of-line scenario: a fast handler's raise-to-start delay beside a
                 20 s handler, and without it (default options, cooperative scheduler)
  --publishers   only the web-request scenario on PostgreSQL: 8 publishers each committing in its own
                 Marten session (1 and 100 events per transaction) against the same work by hand,
                 and commit-to-start latency at 200 events/s
  --redrive N    only the bulk redrive: N dead requests re-executed (chunks of 500 and 2000) while
                 the scheduler's executors run and live events arrive (PostgreSQL)
  --help         this text

PostgreSQL: a throwaway server started from the machine's server binaries (Debian: apt-get install
postgresql) with durable settings (fsync, synchronous_commit and full_page_writes on) and
pg_stat_statements preloaded; or the server whose connection string is in
%s{EnvironmentVariable} (a fresh database is made in it for each measurement, and dropped)."""

/// What to run.
type Settings =
    {
        Quick: bool
        Million: bool
        MillionBacklog: bool
        Batch: int
        Workers: int
        Memory: bool
        Postgres: bool
        /// Only the head-of-line scenario.
        HeadOfLineOnly: bool
        /// Only the web-request publishers scenario.
        PublishersOnly: bool
        /// Only the redrive scenario, with this many dead requests.
        Redrive: int option
    }

    member this.ThroughputSizes =
        if this.Quick then [ 1_000; 5_000 ]
        elif this.Million then [ 10_000; 100_000; 1_000_000 ]
        else [ 10_000; 100_000 ]

    member this.BacklogSizes =
        if this.MillionBacklog && not this.Million && not this.Quick then
            this.ThroughputSizes @ [ 1_000_000 ]
        else
            this.ThroughputSizes

    member this.EventSample = if this.Quick then 500 else 5_000

    member this.RequestSample = if this.Quick then 1_000 else 10_000

    member this.LatencyCount = if this.Quick then 100 else 2_000

    member this.LatencyRate = if this.Quick then 100.0 else 200.0

    member this.IdleSeconds = if this.Quick then 3.0 else 10.0

    member this.CeilingBatches = List.distinct [ 100; this.Batch ]

let private parse (argv: string[]) =
    let rec go (settings: Settings) args =
        match args with
        | [] -> Ok settings
        | "--quick" :: rest -> go { settings with Quick = true } rest
        | "--million" :: rest -> go { settings with Million = true } rest
        | "--million-backlog" :: rest -> go { settings with MillionBacklog = true } rest
        | "--workers" :: value :: rest ->
            match Int32.TryParse value with
            | true, workers when workers > 0 -> go { settings with Workers = workers } rest
            | _ -> Error $"--workers needs a positive number, got %s{value}"
        | "--batch" :: value :: rest ->
            match Int32.TryParse value with
            | true, batch when batch > 0 -> go { settings with Batch = batch } rest
            | _ -> Error $"--batch needs a positive number, got %s{value}"
        | "--head-of-line" :: rest -> go { settings with HeadOfLineOnly = true } rest
        | "--publishers" :: rest ->
            go
                { settings with
                    PublishersOnly = true
                    Memory = false
                }
                rest
        | "--redrive" :: value :: rest ->
            match Int32.TryParse value with
            | true, count when count > 0 -> go { settings with Redrive = Some count } rest
            | _ -> Error $"--redrive needs a positive number, got %s{value}"
        | "--only" :: "memory" :: rest -> go { settings with Postgres = false } rest
        | "--only" :: "postgres" :: rest -> go { settings with Memory = false } rest
        | other :: _ -> Error $"unknown option %s{other}"

    go
        {
            Quick = false
            Million = false
            MillionBacklog = false
            Batch = 500
            Workers = 8
            Memory = true
            Postgres = true
            HeadOfLineOnly = false
            PublishersOnly = false
            Redrive = None
        }
        (List.ofArray argv)

/// One row of the results table.
type Row =
    {
        Measure: string
        mutable Memory: string
        mutable Postgres: string
        mutable Ceiling: string
        mutable Ratio: string
        mutable Target: string
    }

let private rows = ResizeArray<Row>()

let private row (measure: string) =
    match rows |> Seq.tryFind (fun row -> row.Measure = measure) with
    | Some row -> row
    | None ->
        let row =
            {
                Measure = measure
                Memory = "—"
                Postgres = "—"
                Ceiling = "—"
                Ratio = "—"
                Target = ""
            }

        rows.Add row
        row

/// Figures kept to compute ratios once both sides are measured.
let private figures = Collections.Generic.Dictionary<string, float>()

let private heading (text: string) = eprintfn "== %s" text

let private told (text: string) = eprintfn "   %s" text

let private thousands (n: int) =
    if n >= 1_000_000 && n % 1_000_000 = 0 then
        $"%d{n / 1_000_000}M"
    elif n >= 1_000 && n % 1_000 = 0 then
        $"%d{n / 1_000}k"
    else
        string n

/// The profile of one PostgreSQL run: CPU seconds and where the time went.
type RunProfile =
    {
        Title: string
        Seconds: float
        ClientCpu: float
        ServerCpu: float option
        Calls: (string * int64 * int64 * float) list
        Statements: (string * int64 * int64 * float) list
    }

let private profiles = ResizeArray<RunProfile>()

let private idleDetails =
    ResizeArray<string * (string * int64 * int64 * float) list>()

/// Runs `work` on a fresh database, with the statement statistics reset and CPU time measured; drops
/// the database after.
let private onFreshDatabase (server: Server) (work: string -> string -> Task<'T>) =
    task {
        let! name, connectionString = server.CreateDatabaseAsync()

        try
            return! work name connectionString
        finally
            server.DropDatabaseAsync(name).GetAwaiter().GetResult()
    }

let private profiled (server: Server) (title: string) (database: string) (tally: Tally) (run: unit -> Task<'T>) =
    task {
        do! server.ResetStatementsAsync()
        let client = Process.GetCurrentProcess().TotalProcessorTime
        let serverBefore = server.Cpu.Seconds()
        let watch = Stopwatch.StartNew()
        let! result = run ()
        let seconds = watch.Elapsed.TotalSeconds

        let clientCpu =
            (Process.GetCurrentProcess().TotalProcessorTime - client).TotalSeconds

        let serverAfter = server.Cpu.Seconds()
        let! statements = server.StatementsAsync database

        profiles.Add
            {
                Title = title
                Seconds = seconds
                ClientCpu = clientCpu
                ServerCpu = Option.map2 (fun before after -> after - before) serverBefore serverAfter
                Calls = tally.Rows
                Statements = statements
            }

        return result
    }

let private throughputRows (size: int) =
    $"throughput, %s{thousands size} events x 2 no-op handlers"

let private recordThroughput (side: string) (size: int) (batch: int) (result: Throughput) =
    let key = $"%s{side}/%d{size}/%d{batch}"
    figures[key + "/total"] <- result.Events size
    figures[key + "/append"] <- float size / result.AppendSeconds
    figures[key + "/drain"] <- float size / result.DrainSeconds

    told (
        $"%s{side} %d{size} (batch %d{batch}): %.0f{result.Events size} events/s end-to-end; "
        + $"append %.0f{float size / result.AppendSeconds}/s, drain %.0f{float size / result.DrainSeconds}/s"
    )

/// The PostgreSQL runs of the ceiling.
let private ceilingRuns (settings: Settings) (server: Server) =
    task {
        for size in settings.ThroughputSizes do
            for batch in settings.CeilingBatches do
                heading $"ceiling: throughput, %d{size} events, batches of %d{batch}"

                let! result =
                    onFreshDatabase server (fun database connectionString ->
                        task {
                            let! ceiling = Ceiling.CreateAsync connectionString
                            let tally = Tally()
                            ceiling.Tally <- Some tally

                            let! result =
                                profiled
                                    server
                                    $"ceiling, %s{thousands size} events, batches of %d{batch}"
                                    database
                                    tally
                                    (fun () -> ceilingThroughput "ceiling" ceiling size batch)

                            do! (ceiling :> IAsyncDisposable).DisposeAsync()
                            return result
                        })

                recordThroughput "ceiling" size batch result

        heading "ceiling: latency"

        let! latencies =
            onFreshDatabase server (fun _ connectionString ->
                task {
                    let! ceiling = Ceiling.CreateAsync connectionString

                    let! latencies =
                        ceilingLatency "ceiling latency" ceiling settings.LatencyCount settings.LatencyRate

                    do! (ceiling :> IAsyncDisposable).DisposeAsync()
                    return latencies
                })

        figures["ceiling/p50"] <- percentile latencies 50.0
        figures["ceiling/p99"] <- percentile latencies 99.0
        told $"""ceiling latency: p50 %.2f{figures["ceiling/p50"]} ms, p99 %.2f{figures["ceiling/p99"]} ms"""

        for size in settings.BacklogSizes do
            heading $"ceiling: backlog of %d{size} events"

            let! cost =
                onFreshDatabase server (fun _ connectionString ->
                    task {
                        let! ceiling = Ceiling.CreateAsync connectionString

                        let! cost =
                            ceilingBacklogCost
                                "ceiling backlog"
                                ceiling
                                size
                                settings.EventSample
                                settings.RequestSample

                        do! (ceiling :> IAsyncDisposable).DisposeAsync()
                        return cost
                    })

            figures[$"ceiling/backlog/%d{size}/event"] <- cost.EventMicroseconds
            figures[$"ceiling/backlog/%d{size}/request"] <- cost.RequestMicroseconds
            told $"ceiling backlog %d{size}: %.1f{cost.PerEvent} us/event"

        heading "ceiling: idle"

        let! idle =
            onFreshDatabase server (fun database connectionString ->
                task {
                    let! ceiling = Ceiling.CreateAsync connectionString

                    let pipeline =
                        Pipeline(ceiling, 100, TimeSpan.FromSeconds 1.0, handlerNames, ignore, ignore)

                    do! pipeline.StartAsync true
                    do! Task.Delay 1500
                    let! idle = idleStatements server database settings.IdleSeconds "ceiling idle"
                    do! pipeline.StopAsync()
                    do! (ceiling :> IAsyncDisposable).DisposeAsync()
                    return idle
                })

        figures["ceiling/idle/server"] <- idle.ServerPerSecond
        figures["ceiling/idle/client"] <- idle.ClientPerSecond
        idleDetails.Add("ceiling", idle.Statements)
    }

let private martenOptions (listen: bool) =
    { MartenEventStoreOptions.Default with
        ListenForWork = listen
    }

/// The framework's runs on PostgreSQL (the Marten store).
let private frameworkRuns (settings: Settings) (server: Server) =
    task {
        for size in settings.ThroughputSizes do
            heading $"PostgreSQL: throughput, %d{size} events, batch %d{settings.Batch}"

            let! result =
                onFreshDatabase server (fun database connectionString ->
                    task {
                        let! store = MartenEventStore.CreateAsync(connectionString)
                        let tally = Tally()
                        let timed = TimedStore(store, tally)

                        // Every outcome written: counted as the store answers.
                        let settled () =
                            Task.FromResult(timed.Recorded >= int64 size * 2L)

                        let! result =
                            profiled
                                server
                                $"framework on PostgreSQL, %s{thousands size} events, batch %d{settings.Batch}"
                                database
                                tally
                                (fun () ->
                                    throughput
                                        "postgres"
                                        (timed :> IEventStore)
                                        size
                                        settings.Batch
                                        (fun () -> execute connectionString "ANALYZE mt_doc_events_event")
                                        settled)

                        do! store.DisposeAsync()
                        return result
                    })

            recordThroughput "postgres" size settings.Batch result

        heading "PostgreSQL: latency"

        let! latencies =
            onFreshDatabase server (fun _ connectionString ->
                task {
                    let! consumer = MartenEventStore.CreateAsync(connectionString)

                    let! appender =
                        MartenEventStore.CreateAsync(connectionString, options = martenOptions false)

                    do! consumer.WhenListening

                    let! latencies =
                        latency "postgres latency" appender consumer settings.LatencyCount settings.LatencyRate

                    do! appender.DisposeAsync()
                    do! consumer.DisposeAsync()
                    return latencies
                })

        figures["postgres/p50"] <- percentile latencies 50.0
        figures["postgres/p99"] <- percentile latencies 99.0
        told $"""postgres latency: p50 %.2f{figures["postgres/p50"]} ms, p99 %.2f{figures["postgres/p99"]} ms"""

        for size in settings.BacklogSizes do
            heading $"PostgreSQL: backlog of %d{size} events"

            let! cost =
                onFreshDatabase server (fun _ connectionString ->
                    task {
                        let! store =
                            MartenEventStore.CreateAsync(connectionString, options = martenOptions false)

                        let settle () =
                            execute connectionString "VACUUM ANALYZE mt_doc_events_event, mt_doc_events_request"

                        let! cost =
                            backlogCost
                                "postgres backlog"
                                store
                                size
                                settings.EventSample
                                settings.RequestSample
                                settle

                        do! store.DisposeAsync()
                        return cost
                    })

            figures[$"postgres/backlog/%d{size}/event"] <- cost.EventMicroseconds
            figures[$"postgres/backlog/%d{size}/request"] <- cost.RequestMicroseconds
            told $"postgres backlog %d{size}: %.1f{cost.PerEvent} us/event"

        heading "PostgreSQL: idle"

        let! idle =
            onFreshDatabase server (fun database connectionString ->
                task {
                    let! store = MartenEventStore.CreateAsync(connectionString)
                    do! store.WhenListening

                    use scheduler =
                        new Scheduler(
                            store,
                            handlers "idle.event" ignore,
                            ProcessorOptions.Default,
                            ExecutorOptions.Default,
                            { SchedulerOptions.Default with
                                Kind = SchedulerKind.Concurrent
                            }
                        )

                    scheduler.Start()
                    do! Task.Delay 1500
                    let! idle = idleStatements server database settings.IdleSeconds "postgres idle"
                    do! scheduler.ShutdownAsync CancellationToken.None
                    do! store.DisposeAsync()
                    return idle
                })

        figures["postgres/idle/server"] <- idle.ServerPerSecond
        figures["postgres/idle/client"] <- idle.ClientPerSecond
        idleDetails.Add("framework", idle.Statements)
    }

/// The head-of-line scenario on one store: the fast handler beside a slow one, then alone.
let private headOfLineRuns (settings: Settings) (side: string) (store: unit -> Task<IEventStore * (unit -> Task)>) =
    task {
        let slowFor = TimeSpan.FromSeconds(if settings.Quick then 5.0 else 20.0)
        let seconds = if settings.Quick then 4.0 else 10.0

        for slow in [ true; false ] do
            let case = if slow then "beside" else "alone"
            heading $"%s{side}: head of line, fast handler %s{case}"
            let! store, dispose = store ()

            let! result =
                HeadOfLine.run $"%s{side} head of line" store SchedulerKind.Cooperative slow slowFor 20.0 seconds

            do! dispose ()
            figures[$"hol/%s{side}/%s{case}/p50"] <- percentile result.Latencies 50.0
            figures[$"hol/%s{side}/%s{case}/p99"] <- percentile result.Latencies 99.0
            figures[$"hol/%s{side}/%s{case}/max"] <- Array.last result.Latencies
            figures[$"hol/%s{side}/%s{case}/beside"] <- float result.StartedBeside
            figures[$"hol/%s{side}/raised"] <- float result.Raised

            told (
                $"%s{side} %s{case}: p50 %.1f{percentile result.Latencies 50.0} ms, p99 %.1f{percentile result.Latencies 99.0} ms, "
                + $"%d{result.StartedBeside} of %d{result.Raised} started while the slow handler ran"
            )
    }

/// The framework's runs on the in-memory store.
let private memoryRuns (settings: Settings) =
    task {
        for size in settings.ThroughputSizes do
            heading $"in-memory: throughput, %d{size} events"

            let! result =
                throughput "memory" (InMemoryStore()) size settings.Batch (fun () -> Task.CompletedTask) (fun () ->
                    Task.FromResult true)

            recordThroughput "memory" size settings.Batch result

        heading "in-memory: latency"
        let store = InMemoryStore()

        let! latencies =
            latency "memory latency" store store settings.LatencyCount settings.LatencyRate

        figures["memory/p50"] <- percentile latencies 50.0
        figures["memory/p99"] <- percentile latencies 99.0

        for size in settings.BacklogSizes do
            heading $"in-memory: backlog of %d{size} events"

            let! cost =
                backlogCost
                    "memory backlog"
                    (InMemoryStore())
                    size
                    settings.EventSample
                    settings.RequestSample
                    (fun () -> Task.CompletedTask)

            figures[$"memory/backlog/%d{size}/event"] <- cost.EventMicroseconds
            figures[$"memory/backlog/%d{size}/request"] <- cost.RequestMicroseconds
            told $"memory backlog %d{size}: %.1f{cost.PerEvent} us/event"
    }

let private get (key: string) =
    match figures.TryGetValue key with
    | true, value -> Some value
    | false, _ -> None

let private cell (format: float -> string) (value: float option) =
    value |> Option.map format |> Option.defaultValue "—"

let private ratioCell (framework: float option) (ceiling: float option) =
    Option.map2 (fun framework ceiling -> framework / ceiling) framework ceiling

let private verdict (met: bool option) (text: string) =
    match met with
    | Some true -> $"%s{text}: met"
    | Some false -> $"%s{text}: **not met**"
    | None -> text

/// The head-of-line table: in-memory and PostgreSQL, beside a slow handler and alone.
let private printHeadOfLine (settings: Settings) =
    if figures.Keys |> Seq.exists (fun key -> key.StartsWith "hol/") then
        let slowFor = if settings.Quick then 5 else 20

        let value (side: string) (key: string) (format: float -> string) =
            cell format (get $"hol/%s{side}/%s{key}")

        let ms (value: float) = $"%.1f{value}"
        let count (value: float) = $"%.0f{value}"

        printfn ""
        printfn "## Head of line: a fast handler beside a %d s handler (default options, cooperative)" slowFor
        printfn ""

        printfn
            "One slow.job event whose handler takes %d s, then fast.job events at 20/s; delay from each fast event's append returning to its handler's start."
            slowFor

        printfn ""
        printfn "| measure | in-memory | PostgreSQL |"
        printfn "|---|---:|---:|"

        for case, text in [ "beside", $"beside the %d{slowFor} s handler"; "alone", "without it" ] do
            for p in [ "p50"; "p99"; "max" ] do
                printfn
                    "| fast handler %s, %s (ms) | %s | %s |"
                    text
                    p
                    (value "memory" $"%s{case}/%s{p}" ms)
                    (value "postgres" $"%s{case}/%s{p}" ms)

        let ratio (side: string) =
            Option.map2
                (fun beside alone -> $"%.2f{beside / alone}")
                (get $"hol/%s{side}/beside/p99")
                (get $"hol/%s{side}/alone/p99")
            |> Option.defaultValue "—"

        printfn "| p99 beside ÷ p99 alone (target ≤ 2) | %s | %s |" (ratio "memory") (ratio "postgres")

        printfn
            "| fast requests started while the slow handler ran, of %s | %s | %s |"
            (value "memory" "raised" count)
            (value "memory" "beside/beside" count)
            (value "postgres" "beside/beside" count)

/// Fills the table's rows from the figures.
let private tabulate (settings: Settings) (memory: PeakMemory) =
    let rate = cell (fun value -> $"%.0f{value}")
    let ratio = cell (fun value -> $"%.2f{value}")

    for size in settings.ThroughputSizes do
        let parts =
            [
                "total", $"%s{throughputRows size}: append, then drain (events/s)"
                "append", $"  append only, %s{thousands size} events in batches of %d{AppendBatch} (events/s)"
                "drain", $"  drain only, %s{thousands size} appended events (events/s)"
            ]

        for part, label in parts do
            let framework = get $"postgres/%d{size}/%d{settings.Batch}/%s{part}"
            let ceiling = get $"ceiling/%d{size}/100/%s{part}"
            let r = row $"%s{label}, ceiling in batches of 100"
            r.Memory <- rate (get $"memory/%d{size}/%d{settings.Batch}/%s{part}")
            r.Postgres <- rate framework
            r.Ceiling <- rate ceiling
            let value = ratioCell framework ceiling
            r.Ratio <- ratio value

            if part = "total" then
                r.Target <- verdict (value |> Option.map (fun v -> v >= 0.5)) "≥ 0.5"

        if settings.Batch <> 100 then
            for part, label in parts |> List.filter (fun (part, _) -> part <> "append") do
                let framework = get $"postgres/%d{size}/%d{settings.Batch}/%s{part}"
                let ceiling = get $"ceiling/%d{size}/%d{settings.Batch}/%s{part}"
                let r = row $"%s{label}, ceiling in batches of %d{settings.Batch}"
                r.Postgres <- rate framework
                r.Ceiling <- rate ceiling
                r.Ratio <- ratio (ratioCell framework ceiling)

    let ms = cell (fun value -> $"%.2f{value}")

    let latencyRow (percentileName: string) (target: bool) =
        let r =
            row $"latency, append commit → handler start, %s{percentileName}, %.0f{settings.LatencyRate} events/s (ms)"

        let framework = get $"postgres/%s{percentileName}"
        let ceiling = get $"ceiling/%s{percentileName}"
        r.Memory <- ms (get $"memory/%s{percentileName}")
        r.Postgres <- ms framework
        r.Ceiling <- ms ceiling
        r.Ratio <- ratio (ratioCell framework ceiling)

        if target then
            r.Target <- verdict (framework |> Option.map (fun v -> v <= 10.0)) "≤ 10 ms"

    latencyRow "p50" true
    latencyRow "p99" false

    let perEvent (side: string) (size: int) =
        Option.map2
            (fun event request -> event + 2.0 * request)
            (get $"%s{side}/backlog/%d{size}/event")
            (get $"%s{side}/backlog/%d{size}/request")

    let costCell (side: string) (size: int) =
        match perEvent side size, get $"%s{side}/backlog/%d{size}/event", get $"%s{side}/backlog/%d{size}/request" with
        | Some total, Some event, Some request -> $"%.1f{total} (%.1f{event} + 2 × %.1f{request})"
        | _ -> "—"

    for size in settings.BacklogSizes do
        let r =
            row $"time per event at a backlog of %s{thousands size} events: process + 2 × handle (µs)"

        r.Memory <- costCell "memory" size
        r.Postgres <- costCell "postgres" size
        r.Ceiling <- costCell "ceiling" size
        r.Ratio <- ratio (ratioCell (perEvent "postgres" size) (perEvent "ceiling" size))

    match settings.BacklogSizes with
    | smallest :: _ :: _ ->
        let largest = List.last settings.BacklogSizes

        let growth (side: string) =
            Option.map2 (fun large small -> large / small) (perEvent side largest) (perEvent side smallest)

        let r =
            row $"growth of the time per event, backlog %s{thousands largest} ÷ %s{thousands smallest}"

        r.Memory <- ratio (growth "memory")
        r.Postgres <- ratio (growth "postgres")
        r.Ceiling <- ratio (growth "ceiling")
        r.Ratio <- ratio (ratioCell (growth "postgres") (growth "ceiling"))

        r.Target <-
            if largest = 1_000_000 && smallest = 10_000 then
                verdict (growth "postgres" |> Option.map (fun v -> v <= 1.5)) "≤ 1.5"
            else
                "≤ 1.5 at 1M ÷ 10k (--million)"
    | _ -> ()

    let mib = cell (fun value -> $"%.0f{value}")
    let r = row "peak working set of the process while measuring (MiB)"
    r.Memory <- mib (memory.PeakMiB "memory")
    r.Postgres <- mib (memory.PeakMiB "postgres")
    r.Ceiling <- mib (memory.PeakMiB "ceiling")
    r.Ratio <- ratio (ratioCell (memory.PeakMiB "postgres") (memory.PeakMiB "ceiling"))

    let perSecond = cell (fun value -> $"%.1f{value}")
    let r = row "idle: statements/s the server executed, started loops with no work"
    r.Postgres <- perSecond (get "postgres/idle/server")
    r.Ceiling <- perSecond (get "ceiling/idle/server")
    r.Ratio <- ratio (ratioCell (get "postgres/idle/server") (get "ceiling/idle/server"))
    let r = row "idle: Npgsql commands/s (round trips) this process sent"
    r.Postgres <- perSecond (get "postgres/idle/client")
    r.Ceiling <- perSecond (get "ceiling/idle/client")
    r.Ratio <- ratio (ratioCell (get "postgres/idle/client") (get "ceiling/idle/client"))

let private printProfiles (settings: Settings) =
    let largest = List.last settings.ThroughputSizes
    let tag = $"%s{thousands largest} events"

    let shown =
        profiles
        |> Seq.filter (fun profile -> profile.Title.Contains(tag + ",") || profile.Title.EndsWith tag)
        |> List.ofSeq

    if not shown.IsEmpty then
        printfn ""
        printfn "## Where the time goes (throughput, %s)" tag
        printfn ""

        printfn
            "Client calls are timed around each store (or ceiling) call; server statements are pg_stat_statements' execution times (not counting parse, network or waiting for the client). CPU seconds: this process, and the server's processes (from /proc)."

        for profile in shown do
            printfn ""

            let serverCpu =
                profile.ServerCpu
                |> Option.map (fun cpu -> $"%.1f{cpu} s")
                |> Option.defaultValue "unknown"

            printfn
                "### %s: %.1f s wall, CPU %.1f s in this process, %s in the server"
                profile.Title
                profile.Seconds
                profile.ClientCpu
                serverCpu

            printfn ""
            printfn "| call | calls | items | items/call | ms/call | total s |"
            printfn "|---|---:|---:|---:|---:|---:|"

            for operation, calls, items, total in profile.Calls do
                printfn
                    "| %s | %d | %d | %.1f | %.2f | %.2f |"
                    operation
                    calls
                    items
                    (float items / float calls)
                    (total / float calls)
                    (total / 1000.0)

            if not profile.Statements.IsEmpty then
                printfn ""
                printfn "| server statement | calls | rows | rows/call | ms/call | total s |"
                printfn "|---|---:|---:|---:|---:|---:|"

                for text, calls, rows, total in profile.Statements |> List.truncate 10 do
                    printfn
                        "| %s | %d | %d | %.1f | %.3f | %.2f |"
                        (label text)
                        calls
                        rows
                        (float rows / float (max calls 1L))
                        (total / float (max calls 1L))
                        (total / 1000.0)

let private printIdle () =
    if idleDetails |> Seq.exists (fun (_, statements) -> not statements.IsEmpty) then
        printfn ""
        printfn "## Idle statements, by statement"
        printfn ""
        printfn "| side | statement | calls |"
        printfn "|---|---|---:|"

        for side, statements in idleDetails do
            for text, calls, _, _ in statements |> List.sortByDescending (fun (_, calls, _, _) -> calls) do
                printfn "| %s | %s | %d |" side (label text) calls

/// The redrive scenario on a throwaway PostgreSQL: one fresh database per chunk size.
let private redriveRuns (count: int) =
    task {
        let! server = Server.StartAsync()

        try
            printfn
                "| dead requests | chunk | bulk re-execute | per second | locked (skipped) | until all completed | live events handled meanwhile |"

            printfn "|---:|---:|---:|---:|---:|---:|---:|"

            for chunk in [ 500; 2000 ] do
                let! name, connectionString = server.CreateDatabaseAsync()
                let! store = MartenEventStore.CreateAsync(connectionString)

                try
                    let! result = Redrive.run store count chunk 200.0

                    printfn
                        "| %d | %d | %.1f s | %.0f | %d | %.1f s | %d |"
                        result.Dead
                        result.Chunk
                        result.BulkSeconds
                        (float result.Updated / result.BulkSeconds)
                        result.Locked
                        result.DrainSeconds
                        result.LiveHandled
                finally
                    store.DisposeAsync().AsTask().GetAwaiter().GetResult()
                    server.DropDatabaseAsync(name).GetAwaiter().GetResult()
        finally
            server.DisposeAsync().AsTask().GetAwaiter().GetResult()
    }
    |> _.GetAwaiter().GetResult()

[<EntryPoint>]
let main argv =
    if argv |> Array.exists (fun a -> a = "--help" || a = "-h") then
        printfn "%s" usage
        0
    else
        match parse argv with
        | Error error ->
            eprintfn "%s\n\n%s" error usage
            2
        | Ok settings when settings.Redrive.IsSome ->
            Measure.executorWorkers <- settings.Workers
            redriveRuns settings.Redrive.Value
            0
        | Ok settings ->
            Measure.executorWorkers <- settings.Workers
            use memory = new PeakMemory()
            let started = Stopwatch.StartNew()
            let mutable serverLine = None
            let mutable publishers = None

            let run =
                task {
                    if settings.Postgres then
                        heading "starting PostgreSQL"
                        let! server = Server.StartAsync()

                        serverLine <-
                            Some(
                                $"%s{server.Description}: %s{server.Settings}; statements counted by "
                                + (match server.Counting with
                                   | StatementCounting.Statements -> "pg_stat_statements"
                                   | StatementCounting.Transactions ->
                                       "pg_stat_database transactions (pg_stat_statements unavailable; may lag)")
                            )

                        try
                            if not settings.HeadOfLineOnly && not settings.PublishersOnly then
                                memory.Enter "ceiling"
                                do! ceilingRuns settings server
                                memory.Enter "postgres"
                                do! frameworkRuns settings server

                            if not settings.HeadOfLineOnly then
                                let! figures = Publishers.runs settings.Quick server
                                publishers <- Some figures

                            if not settings.PublishersOnly then
                                do!
                                    headOfLineRuns settings "postgres" (fun () ->
                                        task {
                                            let! name, connectionString = server.CreateDatabaseAsync()
                                            let! store = MartenEventStore.CreateAsync(connectionString)

                                            let dispose () =
                                                task {
                                                    do! store.DisposeAsync()
                                                    do! server.DropDatabaseAsync name
                                                }
                                                :> Task

                                            return (store :> IEventStore), dispose
                                        })
                        finally
                            server.DisposeAsync().AsTask().GetAwaiter().GetResult()

                    if settings.Memory then
                        memory.Enter "memory"

                        if not settings.HeadOfLineOnly then
                            do! memoryRuns settings

                        do!
                            headOfLineRuns settings "memory" (fun () ->
                                Task.FromResult((InMemoryStore() :> IEventStore), (fun () -> Task.CompletedTask)))
                }

            run.GetAwaiter().GetResult()

            if not settings.HeadOfLineOnly && not settings.PublishersOnly then
                tabulate settings memory

            heading $"done in %.0f{started.Elapsed.TotalSeconds} s"

            printfn "# Events benchmark"
            printfn ""

            printfn
                "%d cores, %s, %s; %s run, %.0f s."
                Environment.ProcessorCount
                Runtime.InteropServices.RuntimeInformation.FrameworkDescription
                Runtime.InteropServices.RuntimeInformation.OSDescription
                (if settings.HeadOfLineOnly then
                     "head of line only"
                 elif settings.PublishersOnly then
                     "web-request publishers only"
                 elif settings.Quick then
                     "quick (smoke)"
                 elif settings.Million then
                     "full, with 1M"
                 elif settings.MillionBacklog then
                     "full, with a 1M backlog"
                 else
                     "full")
                started.Elapsed.TotalSeconds

            printfn ""

            match serverLine with
            | Some line -> printfn "- PostgreSQL: %s." line
            | None -> ()

            printfn
                "- Framework: concurrent scheduler; throughput with processor Limit %d, executor Limit %d and %d workers; latency and idle with the default options (Limit 50, 16 workers, 1 s interval). On PostgreSQL: the Marten store, a fresh database per measurement; latency appends through a second store instance so the scheduler hears of events only by LISTEN/NOTIFY."
                settings.Batch
                settings.Batch
                settings.Workers

            printfn
                "- Ceiling: hand-written batched SQL through Npgsql on tables of its own (same server, fresh database): append rows + NOTIFY; claim events FOR UPDATE SKIP LOCKED; mark processed + insert 2 request rows per event in one statement; recover + claim requests FOR UPDATE SKIP LOCKED in one round trip; mark completed. Two loops, woken in process and by LISTEN/NOTIFY, as the framework's."

            printfn
                "- Ratio: PostgreSQL ÷ ceiling (throughput: higher is better, target ≥ 0.5; times and counts: lower is better). Throughput appends first (batches of %d), then ANALYZEs the events table (not timed: without statistics the planner sorts the whole backlog on every claim), then drains; end-to-end = events ÷ (append + drain time). Backlog: cost sampled at the head of a backlog after VACUUM ANALYZE, claims in batches of %d. Single runs on a shared, noisy machine: expect ±15%%."
                AppendBatch
                SampleBatch

            if not settings.HeadOfLineOnly && not settings.PublishersOnly then
                printfn ""
                printfn "| measure | in-memory | PostgreSQL | ceiling (SQL by hand) | PostgreSQL ÷ ceiling | target |"
                printfn "|---|---:|---:|---:|---:|---|"

                for r in rows do
                    printfn "| %s | %s | %s | %s | %s | %s |" r.Measure r.Memory r.Postgres r.Ceiling r.Ratio r.Target

                printProfiles settings
                printIdle ()

            publishers |> Option.iter Publishers.print
            printHeadOfLine settings
            0
