namespace Events.Testing

open System
open System.Diagnostics
open System.IO
open System.Net
open System.Net.Sockets
open System.Runtime.InteropServices
open System.Threading.Tasks
open Npgsql

/// The PostgreSQL server programs a throwaway server runs.
type internal ServerBinaries = { InitDb: string; PgCtl: string }

/// Starting and stopping processes, and finding the server's programs.
module internal Processes =

    [<DllImport("libc", EntryPoint = "geteuid")>]
    extern uint32 private geteuid()

    /// Whether this process runs as root (PostgreSQL refuses to run as root).
    let isRoot () =
        not (OperatingSystem.IsWindows()) && geteuid () = 0u

    /// Runs a program to its end; throws with its output when it fails.
    let run (program: string) (arguments: string list) : Task<string> =
        task {
            let info = ProcessStartInfo(program)

            for argument in arguments do
                info.ArgumentList.Add argument

            info.RedirectStandardOutput <- true
            info.RedirectStandardError <- true
            info.UseShellExecute <- false
            use proc = Process.Start info
            let output = proc.StandardOutput.ReadToEndAsync()
            let errors = proc.StandardError.ReadToEndAsync()
            do! proc.WaitForExitAsync()
            let! output = output
            let! errors = errors

            if proc.ExitCode <> 0 then
                let command = String.Join(" ", program :: arguments)
                failwith $"`%s{command}` exited with code %d{proc.ExitCode}:\n%s{output}\n%s{errors}"

            return output
        }

    /// Runs a program as the `postgres` OS user when this process is root, else as this user.
    let runAsServerUser (program: string) (arguments: string list) : Task<string> =
        if isRoot () then
            run "runuser" ([ "-u"; "postgres"; "--"; program ] @ arguments)
        else
            run program arguments

    let private onPath (path: string) (name: string) =
        match path with
        | null -> None
        | path ->
            path.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            |> Array.map (fun folder -> Path.Combine(folder, name))
            |> Array.tryFind File.Exists

    let private versionOf (folder: string) =
        let name = Path.GetFileName folder

        match Version.TryParse(if name.Contains '.' then name else name + ".0") with
        | true, version -> version
        | false, _ -> Version(0, 0)

    /// The message of the failure to find server binaries: what to install.
    [<Literal>]
    let MissingBinaries =
        "No PostgreSQL server binaries found (initdb and pg_ctl, on PATH or in "
        + "/usr/lib/postgresql/VERSION/bin). Install them (Debian: apt-get install postgresql), "
        + "or set EVENTS_TEST_POSTGRES to the connection string of a server to use."

    /// initdb and pg_ctl from the folders of `path` (a PATH value), else from the newest
    /// `root`/VERSION/bin; throws `InvalidOperationException` saying what to install when neither has them.
    let findBinariesIn (path: string) (root: string) : ServerBinaries =
        match onPath path "initdb", onPath path "pg_ctl" with
        | Some initDb, Some pgCtl -> { InitDb = initDb; PgCtl = pgCtl }
        | _ ->
            let installed =
                if Directory.Exists root then
                    Directory.GetDirectories root
                    |> Array.filter (fun folder ->
                        File.Exists(Path.Combine(folder, "bin", "initdb"))
                        && File.Exists(Path.Combine(folder, "bin", "pg_ctl")))
                    |> Array.sortByDescending versionOf
                else
                    [||]

            match Array.tryHead installed with
            | Some folder ->
                {
                    InitDb = Path.Combine(folder, "bin", "initdb")
                    PgCtl = Path.Combine(folder, "bin", "pg_ctl")
                }
            | None -> invalidOp MissingBinaries

    /// initdb and pg_ctl from PATH, else from the newest /usr/lib/postgresql/VERSION/bin.
    let findBinaries () =
        findBinariesIn (Environment.GetEnvironmentVariable "PATH") "/usr/lib/postgresql"

    /// A TCP port on the loopback address that nothing listens on right now.
    let freeLoopbackPort () =
        let listener = new TcpListener(IPAddress.Loopback, 0)
        listener.Start()
        let port = (listener.LocalEndpoint :?> IPEndPoint).Port
        listener.Stop()
        port

/// Where a throwaway server runs: a server of its own, or a database in a server named by
/// EVENTS_TEST_POSTGRES.
type internal Hosting =
    | Own of binaries: ServerBinaries * folder: string * port: int * durable: bool
    | External of serverConnectionString: string

/// A PostgreSQL server for tests and demos, thrown away when disposed.
///
/// When the environment variable EVENTS_TEST_POSTGRES holds a connection string, that server is used
/// and a fresh database is created in it (and dropped on disposal). Otherwise a server of its own is
/// made from the machine's server binaries (initdb and pg_ctl on PATH or in
/// /usr/lib/postgresql/VERSION/bin, the newest version): a data folder under the temp folder, a free
/// loopback port, fsync off (see `StartDurableAsync`), its unix socket inside the folder, run as the `postgres` OS user when
/// this process is root.
[<Sealed>]
type ThrowawayPostgres private (hosting: Hosting, connectionString: string) =
    let created = Collections.Concurrent.ConcurrentBag<string>()

    static let quoteIdentifier (name: string) =
        "\"" + name.Replace("\"", "\"\"") + "\""

    /// The connection string of a database: pooled connections idle for 10 s are closed, so that tests
    /// that leave many short-lived pools behind do not use up the server's connections.
    static let connectionStringFor (baseConnectionString: string) (database: string) =
        let builder = NpgsqlConnectionStringBuilder(baseConnectionString)
        builder.Database <- database
        builder.ConnectionIdleLifetime <- 10
        builder.ConnectionPruningInterval <- 5
        builder.ConnectionString

    static let dataFolder folder = Path.Combine(folder, "data")

    static let logFile folder = Path.Combine(folder, "server.log")

    static let startServer (binaries: ServerBinaries) (folder: string) (port: int) (durable: bool) =
        let socketFolder = Path.Combine(folder, "socket")

        let options =
            String.Join(
                " ",
                [
                    $"-p %d{port}"
                    $"-k {socketFolder}"
                    "-c listen_addresses=127.0.0.1"
                    if durable then
                        "-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
                    else
                        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                    "-c max_connections=500"
                ]
            )

        Processes.runAsServerUser
            binaries.PgCtl
            [
                "start"
                "--wait"
                "--timeout=60"
                "-D"
                dataFolder folder
                "-l"
                logFile folder
                "-o"
                options
            ]

    static let stopServer (binaries: ServerBinaries) (folder: string) (mode: string) =
        Processes.runAsServerUser binaries.PgCtl [ "stop"; "--wait"; "-D"; dataFolder folder; "-m"; mode ]

    static let createDatabase (serverConnectionString: string) (name: string) =
        task {
            use connection = new NpgsqlConnection(serverConnectionString)
            do! connection.OpenAsync()
            use command = connection.CreateCommand()
            command.CommandText <- $"CREATE DATABASE %s{quoteIdentifier name}"
            let! _ = command.ExecuteNonQueryAsync()
            return connectionStringFor serverConnectionString name
        }

    static let startOwn (durable: bool) =
        task {
            let binaries = Processes.findBinaries ()

            let folder =
                Path.Combine(Path.GetTempPath(), "events-pg-" + Guid.NewGuid().ToString("N").Substring(0, 12))

            Directory.CreateDirectory(Path.Combine(folder, "socket")) |> ignore

            try
                if Processes.isRoot () then
                    let! _ = Processes.run "chown" [ "-R"; "postgres:postgres"; folder ]
                    ()

                let! _ =
                    Processes.runAsServerUser
                        binaries.InitDb
                        [
                            "-D"
                            dataFolder folder
                            "-U"
                            "postgres"
                            "-A"
                            "trust"
                            "-E"
                            "UTF8"
                            "--locale=C"
                            "--no-sync"
                        ]

                // The port is free when picked but another process may take it before the server binds
                // it: try a few.
                let mutable port = 0
                let mutable attempt = 1

                while port = 0 do
                    let candidate = Processes.freeLoopbackPort ()

                    try
                        let! _ = startServer binaries folder candidate durable
                        port <- candidate
                    with _ when attempt < 3 ->
                        attempt <- attempt + 1

                let connectionString =
                    connectionStringFor
                        (NpgsqlConnectionStringBuilder(Host = "127.0.0.1", Port = port, Username = "postgres")
                            .ConnectionString)
                        "postgres"

                return new ThrowawayPostgres(Own(binaries, folder, port, durable), connectionString)
            with e ->
                let log = logFile folder

                let detail =
                    if File.Exists log then
                        "\nserver log:\n" + File.ReadAllText log
                    else
                        ""

                try
                    Directory.Delete(folder, true)
                with
                | :? IOException
                | :? UnauthorizedAccessException -> ()

                return
                    raise (
                        InvalidOperationException($"could not start a throwaway PostgreSQL: %s{e.Message}%s{detail}", e)
                    )
        }

    /// The variable that names an existing server to use instead of starting one.
    static member EnvironmentVariable = "EVENTS_TEST_POSTGRES"

    /// Starts a throwaway server (or, with EVENTS_TEST_POSTGRES set, creates a fresh database in that
    /// server). Throws when no server binaries are installed, saying how to install them.
    static member StartAsync() : Task<ThrowawayPostgres> =
        ThrowawayPostgres.StartAsync(Environment.GetEnvironmentVariable ThrowawayPostgres.EnvironmentVariable)

    /// Starts a throwaway server of its own with durable settings (fsync, synchronous_commit and
    /// full_page_writes on, as in production), for measurements; EVENTS_TEST_POSTGRES is not read.
    static member StartDurableAsync() : Task<ThrowawayPostgres> = startOwn true

    /// Starts as `StartAsync` does, with the value of EVENTS_TEST_POSTGRES given.
    static member internal StartAsync(serverConnectionString: string) : Task<ThrowawayPostgres> =
        match serverConnectionString with
        | null
        | "" -> startOwn false
        | serverConnectionString ->
            task {
                let name = "events_test_" + Guid.NewGuid().ToString("N").Substring(0, 12)
                let! connectionString = createDatabase serverConnectionString name

                let postgres: ThrowawayPostgres =
                    new ThrowawayPostgres(External serverConnectionString, connectionString)

                postgres.Created.Add name
                return postgres
            }

    member private _.Created: Collections.Concurrent.ConcurrentBag<string> = created

    /// The connection string of the server's default database (a superuser, over loopback TCP).
    member _.ConnectionString = connectionString

    /// The TCP port the server listens on.
    member _.Port = NpgsqlConnectionStringBuilder(connectionString).Port

    /// Creates an empty database with this name and returns its connection string.
    member _.CreateDatabaseAsync(name: string) : Task<string> =
        if String.IsNullOrWhiteSpace name then
            nullArg (nameof name)

        task {
            let! databaseConnectionString = createDatabase connectionString name
            created.Add name
            return databaseConnectionString
        }

    /// Creates an empty database with a fresh unique name and returns its connection string.
    member this.CreateDatabaseAsync() : Task<string> =
        this.CreateDatabaseAsync("events_" + Guid.NewGuid().ToString("N").Substring(0, 16))

    /// Stops the server (fast shutdown: open connections are closed) and leaves it stopped.
    member _.StopAsync() : Task =
        task {
            match hosting with
            | Own(binaries, folder, _, _) ->
                let! _ = stopServer binaries folder "fast"
                ()
            | External _ -> invalidOp "a server named by EVENTS_TEST_POSTGRES cannot be stopped by the tests"
        }

    /// Starts the server again after `StopAsync`, on the same port with the same data.
    member _.StartAgainAsync() : Task =
        task {
            match hosting with
            | Own(binaries, folder, port, durable) ->
                let! _ = startServer binaries folder port durable
                ()
            | External _ -> invalidOp "a server named by EVENTS_TEST_POSTGRES cannot be started by the tests"
        }

    /// Stops the server then starts it again, on the same port with the same data. Connections open
    /// before are broken; pooled connections fail once and are replaced.
    member this.RestartAsync() : Task =
        task {
            do! this.StopAsync()
            do! this.StartAgainAsync()
        }

    /// Stops the server at once and deletes its folder (or drops the databases made in an external server).
    member _.DisposeAsync() : ValueTask =
        ValueTask(
            task {
                match hosting with
                | Own(binaries, folder, _, _) ->
                    try
                        let! _ = stopServer binaries folder "immediate"
                        ()
                    with e ->
                        // Already stopped (by a test), or never fully started: nothing left to stop.
                        Trace.TraceWarning $"stopping the throwaway PostgreSQL: %s{e.Message}"

                    if Directory.Exists folder then
                        Directory.Delete(folder, true)
                | External serverConnectionString ->
                    use connection = new NpgsqlConnection(serverConnectionString)
                    do! connection.OpenAsync()

                    for name in created do
                        use command = connection.CreateCommand()
                        command.CommandText <- $"DROP DATABASE IF EXISTS %s{quoteIdentifier name} WITH (FORCE)"
                        let! _ = command.ExecuteNonQueryAsync()
                        ()
            }
        )

    interface IAsyncDisposable with
        member this.DisposeAsync() = this.DisposeAsync()
