/// The PostgreSQL server the benchmark runs on, fresh databases, and what it reads off the server:
/// statement counts (pg_stat_statements, else transaction counts), the server's CPU time, and a
/// client-side count of Npgsql commands.
module Events.Benchmarks.Postgres

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.IO
open System.Threading.Tasks
open Npgsql
open Events.Testing

/// The variable that names an existing server to use instead of a throwaway one.
[<Literal>]
let EnvironmentVariable = "EVENTS_BENCH_POSTGRES"

let private quote (name: string) =
    "\"" + name.Replace("\"", "\"\"") + "\""

/// Runs one statement on a connection string; returns the first column of the first row, if any.
let scalar (connectionString: string) (sql: string) : Task<obj> =
    task {
        use connection = new NpgsqlConnection(connectionString)
        do! connection.OpenAsync()
        use command = new NpgsqlCommand(sql, connection)
        command.CommandTimeout <- 0
        let! value = command.ExecuteScalarAsync()
        return value
    }

/// Runs statements on a connection string.
let execute (connectionString: string) (sql: string) : Task =
    task {
        use connection = new NpgsqlConnection(connectionString)
        do! connection.OpenAsync()
        use command = new NpgsqlCommand(sql, connection)
        command.CommandTimeout <- 0
        let! _ = command.ExecuteNonQueryAsync()
        ()
    }

/// How statements executed by the server are counted.
[<RequireQualifiedAccess>]
type StatementCounting =
    /// pg_stat_statements: every statement, counted as it ends.
    | Statements
    /// pg_stat_database's xact_commit + xact_rollback: transactions, flushed by backends lazily (up to
    /// a few seconds late), so a short window may miss some.
    | Transactions

/// CPU seconds used by the server's processes (the postmaster, its live children and its waited-for
/// children) from /proc; None when the server is not a local process.
type ServerCpu(postmaster: int option) =
    let ticksPerSecond = 100.0

    let fields (pid: int) =
        try
            let text = File.ReadAllText $"/proc/%d{pid}/stat"
            // The command name is in parentheses and may hold spaces: split after the last ')'.
            let rest = text.Substring(text.LastIndexOf ')' + 2).Split ' '
            Some rest
        with _ ->
            None

    /// The postmaster's pid, found from a backend's pid.
    static member OfBackend(backend: int) =
        try
            let text = File.ReadAllText $"/proc/%d{backend}/stat"
            let rest = text.Substring(text.LastIndexOf ')' + 2).Split ' '
            ServerCpu(Some(int rest[1]))
        with _ ->
            ServerCpu None

    /// Whether the server's CPU time can be read.
    member _.Available = postmaster.IsSome

    /// CPU seconds so far (utime + stime, with those of exited children).
    member _.Seconds() : float option =
        match postmaster with
        | None -> None
        | Some root ->
            match fields root with
            | None -> None
            | Some rest ->
                // Fields after the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
                let own = [ 11; 12; 13; 14 ] |> List.sumBy (fun i -> float (int64 rest[i]))

                let children =
                    Directory.GetDirectories "/proc"
                    |> Array.choose (fun folder ->
                        match Int32.TryParse(Path.GetFileName folder) with
                        | true, pid when pid <> root -> Some pid
                        | _ -> None)
                    |> Array.sumBy (fun pid ->
                        match fields pid with
                        | Some rest when int rest[1] = root -> float (int64 rest[11] + int64 rest[12])
                        | _ -> 0.0)

                Some((own + children) / ticksPerSecond)

/// A PostgreSQL server: a throwaway one (ThrowawayPostgres) or the one named by EVENTS_BENCH_POSTGRES.
/// Each measurement gets a fresh database, dropped after it.
[<Sealed>]
type Server private (admin: string, description: string, throwaway: ThrowawayPostgres option) =
    let mutable counting = StatementCounting.Transactions
    let mutable cpu = ServerCpu None
    let mutable settings = ""

    /// Starts a throwaway server, or connects to EVENTS_BENCH_POSTGRES; turns pg_stat_statements on
    /// when it can (on a throwaway server by restarting it with the library preloaded).
    static member StartAsync() : Task<Server> =
        task {
            let! server =
                task {
                    match Environment.GetEnvironmentVariable EnvironmentVariable with
                    | null
                    | "" ->
                        let! postgres = ThrowawayPostgres.StartDurableAsync()

                        return
                            new Server(
                                postgres.ConnectionString,
                                "a throwaway server with durable settings (fsync, synchronous_commit and full_page_writes on)",
                                Some postgres
                            )
                    | connectionString ->
                        return new Server(connectionString, $"the server of %s{EnvironmentVariable}", None)
                }

            do! server.PrepareAsync()
            return server
        }

    member private _.PrepareAsync() : Task =
        task {
            let tryStatements () =
                task {
                    try
                        do! execute admin "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
                        let! _ = scalar admin "SELECT count(*) FROM pg_stat_statements"
                        return true
                    with _ ->
                        return false
                }

            let! ready = tryStatements ()

            let! ready =
                match ready, throwaway with
                | false, Some postgres ->
                    task {
                        try
                            do! execute admin "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
                            do! postgres.RestartAsync()
                            NpgsqlConnection.ClearAllPools()
                            return! tryStatements ()
                        with _ ->
                            return false
                    }
                | _ -> Task.FromResult ready

            counting <-
                if ready then
                    StatementCounting.Statements
                else
                    StatementCounting.Transactions

            let! backend = scalar admin "SELECT pg_backend_pid()"
            cpu <- ServerCpu.OfBackend(Convert.ToInt32 backend)

            let! shown =
                scalar
                    admin
                    "SELECT version() || '; fsync=' || current_setting('fsync') || ', synchronous_commit=' || current_setting('synchronous_commit') || ', shared_buffers=' || current_setting('shared_buffers')"

            settings <- string shown
        }

    /// What the server is.
    member _.Description = description

    /// The server's version and durability settings.
    member _.Settings = settings

    /// How statements are counted on this server.
    member _.Counting = counting

    /// The server's CPU time.
    member _.Cpu = cpu

    /// A connection string to the server's maintenance database.
    member _.Admin = admin

    /// Creates a fresh database; returns its name and connection string.
    member _.CreateDatabaseAsync() : Task<string * string> =
        task {
            let name = "bench_" + Guid.NewGuid().ToString("N").Substring(0, 12)
            do! execute admin $"CREATE DATABASE %s{quote name}"
            let builder = NpgsqlConnectionStringBuilder(admin)
            builder.Database <- name
            builder.MaxPoolSize <- 100
            return name, builder.ConnectionString
        }

    /// Drops a database made by `CreateDatabaseAsync` (its connections are closed).
    member _.DropDatabaseAsync(name: string) : Task =
        task {
            NpgsqlConnection.ClearAllPools()
            do! execute admin $"DROP DATABASE IF EXISTS %s{quote name} WITH (FORCE)"
        }

    /// Statements (or transactions) executed so far in a database.
    member _.ExecutedAsync(database: string) : Task<int64> =
        task {
            use connection = new NpgsqlConnection(admin)
            do! connection.OpenAsync()

            let sql =
                match counting with
                | StatementCounting.Statements ->
                    "SELECT coalesce(sum(s.calls), 0)::bigint FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1"
                | StatementCounting.Transactions ->
                    "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = $1"

            use command = new NpgsqlCommand(sql, connection)
            command.Parameters.AddWithValue database |> ignore
            let! value = command.ExecuteScalarAsync()
            return Convert.ToInt64 value
        }

    /// The statements executed in a database, most total time first (pg_stat_statements only): text,
    /// calls, rows, total milliseconds.
    member _.StatementsAsync(database: string) : Task<(string * int64 * int64 * float) list> =
        task {
            match counting with
            | StatementCounting.Transactions -> return []
            | StatementCounting.Statements ->
                use connection = new NpgsqlConnection(admin)
                do! connection.OpenAsync()

                use command =
                    new NpgsqlCommand(
                        "SELECT s.query, s.calls, s.rows, s.total_exec_time FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1 ORDER BY s.total_exec_time DESC",
                        connection
                    )

                command.Parameters.AddWithValue database |> ignore
                use! reader = command.ExecuteReaderAsync()
                let rows = ResizeArray()
                let! more = reader.ReadAsync()
                let mutable more = more

                while more do
                    rows.Add(reader.GetString 0, reader.GetInt64 1, reader.GetInt64 2, reader.GetDouble 3)
                    let! next = reader.ReadAsync()
                    more <- next

                return List.ofSeq rows
        }

    /// Forgets the statement statistics (pg_stat_statements only).
    member _.ResetStatementsAsync() : Task =
        task {
            match counting with
            | StatementCounting.Transactions -> ()
            | StatementCounting.Statements -> do! execute admin "SELECT pg_stat_statements_reset()"
        }

    /// Stops a throwaway server and deletes it.
    member _.DisposeAsync() : ValueTask =
        match throwaway with
        | Some postgres ->
            NpgsqlConnection.ClearAllPools()
            postgres.DisposeAsync()
        | None -> ValueTask.CompletedTask

    interface IAsyncDisposable with
        member this.DisposeAsync() = this.DisposeAsync()

/// A short name for a statement of the store, Marten or the ceiling, for the profile tables.
let label (sql: string) =
    let has (part: string) =
        sql.Contains(part, StringComparison.OrdinalIgnoreCase)

    if has "ceiling_" then
        if has "expired" then
            "ceiling: recover requests"
        elif has "picked" && has "ceiling_requests" then
            "ceiling: claim requests"
        elif has "picked" then
            "ceiling: claim events"
        elif has "marked" then
            "ceiling: commit fan-out"
        elif has "completed_at =" then
            "ceiling: complete requests"
        elif has "insert into ceiling_events" then
            "ceiling: append events"
        else
            "ceiling: " + sql.Substring(0, min 40 sql.Length)
    elif has "pg_notify" && sql.Length < 60 then
        "notify"
    elif has "WITH expired" then
        "store: recover requests"
    elif has "WITH picked" && has "events_request" then
        "store: claim requests"
    elif has "WITH picked" then
        "store: claim events"
    elif has "marked AS" then
        "store: commit fan-out"
    elif has "written AS" then
        "store: record outcomes"
    elif has "mt_insert_events_event" || has "insert into public.mt_doc_events_event" then
        "Marten: insert event"
    elif has "LISTEN" then
        "LISTEN"
    elif sql.Trim() = "SELECT $1" || sql.Trim() = "SELECT 1" then
        "probe (SELECT 1)"
    else
        let flat = sql.Replace('\n', ' ').Replace('\r', ' ').Replace("|", "\\|")

        let flat = Text.RegularExpressions.Regex.Replace(flat, "\\s+", " ").Trim()

        "other: " + flat.Substring(0, min 70 flat.Length)

/// Counts the Npgsql commands (round trips) of this process while listening, with their total time,
/// by statement label. Listening makes Npgsql create an activity per command: a small cost.
[<Sealed>]
type CommandCounter() =
    let counts = ConcurrentDictionary<string, int64 * float>()
    let mutable total = 0L

    let listener =
        new ActivityListener(
            ShouldListenTo = (fun source -> source.Name = "Npgsql"),
            Sample = (fun _ -> ActivitySamplingResult.AllData),
            ActivityStopped =
                (fun activity ->
                    Threading.Interlocked.Increment &total |> ignore

                    let text =
                        match activity.GetTagItem "db.query.text" with
                        | :? string as text -> text
                        | _ ->
                            match activity.GetTagItem "db.statement" with
                            | :? string as text -> text
                            | _ -> activity.DisplayName

                    let key = label text
                    let milliseconds = activity.Duration.TotalMilliseconds

                    counts.AddOrUpdate(key, (1L, milliseconds), (fun _ (n, ms) -> n + 1L, ms + milliseconds))
                    |> ignore)
        )

    do ActivitySource.AddActivityListener listener

    /// Commands counted so far.
    member _.Total = Threading.Interlocked.Read &total

    /// Per label: commands and total milliseconds, most time first.
    member _.ByLabel =
        counts
        |> Seq.map (fun pair -> pair.Key, fst pair.Value, snd pair.Value)
        |> Seq.sortByDescending (fun (_, _, ms) -> ms)
        |> List.ofSeq

    interface IDisposable with
        member _.Dispose() = listener.Dispose()

/// Statements a database executed in a quiet window.
type IdleCount =
    {
        /// Statements (or transactions) the server executed for the database, per second.
        ServerPerSecond: float
        /// Npgsql commands (round trips) this process sent, per second.
        ClientPerSecond: float
        /// The statements, when pg_stat_statements counts them.
        Statements: (string * int64 * int64 * float) list
    }

/// Counts what a database executes during `seconds` while the caller's loops sit idle.
let idleStatements (server: Server) (database: string) (seconds: float) (label: string) =
    task {
        do! server.ResetStatementsAsync()
        let! before = server.ExecutedAsync database
        let counter = new CommandCounter()
        let watch = Stopwatch.StartNew()

        while watch.Elapsed.TotalSeconds < seconds do
            Console.Error.Write($"\r  %s{label}: %.0f{watch.Elapsed.TotalSeconds}/%.0f{seconds} s        ")
            do! Task.Delay 250

        let elapsed = watch.Elapsed.TotalSeconds
        let client = counter.Total
        (counter :> IDisposable).Dispose()
        Console.Error.Write "\r"
        let! after = server.ExecutedAsync database
        let! statements = server.StatementsAsync database

        return
            {
                ServerPerSecond = float (after - before) / elapsed
                ClientPerSecond = float client / elapsed
                Statements = statements
            }
    }
