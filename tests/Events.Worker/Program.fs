/// A worker process for the multi-process tests: a concurrent scheduler over a Marten store on the
/// database named on the command line, with one event whose handlers record every run (request, attempt,
/// the error the attempt before left, process id, start and end) in the table `worker_runs`, the tests'
/// evidence. It prints "ready" once it
/// works, and shuts down gracefully on SIGTERM or SIGINT, when stdin closes (if asked) or after a
/// duration.
module Events.Worker.Program

open System
open System.Runtime.InteropServices
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging
open Npgsql
open Events.Core
open Events.Marten

/// What the worker runs, from the command line.
type Settings =
    {
        ConnectionString: string
        EventName: string
        Handlers: string list
        HandlerDelay: TimeSpan
        HandlerTimeout: TimeSpan option
        Lease: TimeSpan
        ClaimLease: TimeSpan option
        Workers: int
        Limit: int option
        Interval: TimeSpan
        MaxErrors: int
        Backoff: TimeSpan option
        Duration: TimeSpan option
        StopOnStdinClose: bool
        ShutdownTimeout: TimeSpan
        LogLevel: LogLevel
        /// Raise events with this deduplication key when told "raise" on stdin.
        RaiseKey: string option
        /// How many events to raise (at once) with the key.
        Raises: int
    }

let private defaults =
    {
        ConnectionString = ""
        EventName = "multiprocess.work"
        Handlers = [ "first"; "second" ]
        HandlerDelay = TimeSpan.Zero
        HandlerTimeout = None
        Lease = TimeSpan.FromSeconds 30.0
        ClaimLease = None
        Workers = 4
        Limit = None
        Interval = TimeSpan.FromMilliseconds 100.0
        MaxErrors = 5
        Backoff = None
        Duration = None
        StopOnStdinClose = false
        ShutdownTimeout = TimeSpan.FromSeconds 10.0
        LogLevel = LogLevel.Warning
        RaiseKey = None
        Raises = 1
    }

let private usage =
    """usage: Events.Worker --connection <connection string> [options]
  --event <name>                the event the handlers run for (default multiprocess.work)
  --handlers <a,b,...>          the handlers' names (default first,second)
  --handler-delay-ms <n>        how long each handler run takes (default 0)
  --handler-timeout-ms <n>      the handlers' timeout (default none)
  --lease-ms <n>                the executor's lease (default 30000)
  --claim-lease-ms <n>          the processor's claim lease (default: the executor's lease)
  --workers <n>                 handlers run at once (default 4)
  --limit <n>                   requests claimed per round (default: the worker count)
  --interval-ms <n>             the scheduler's polling interval (default 100)
  --max-errors <n>              the handlers' MaxErrors (default 5)
  --backoff-ms <n>              exponential backoff from n ms, capped at 4n (default: the framework's)
  --duration-s <n>              stop after n seconds (default: run until stopped)
  --stop-on-stdin-close         stop when stdin reaches its end
  --shutdown-timeout-ms <n>     how long running handlers may finish on shutdown (default 10000)
  --log-level <level>           Trace, Debug, Information, Warning (default), Error
  --raise-key <key>             on the line "raise" on stdin (with --stop-on-stdin-close), raise events
                                with this deduplication key, printing "raised <id> <duplicate>" for each
                                and then "raises done"
  --raises <n>                  how many events to raise at once with the key (default 1)"""

let private (|Count|_|) (text: string) =
    match Int32.TryParse text with
    | true, value when value >= 0 -> Some value
    | _ -> None

let private (|Millis|_|) (text: string) =
    match text with
    | Count value -> Some(TimeSpan.FromMilliseconds(float value))
    | _ -> None

let rec private parse (settings: Settings) (arguments: string list) : Result<Settings, string> =
    match arguments with
    | [] when String.IsNullOrWhiteSpace settings.ConnectionString -> Error "--connection is required"
    | [] -> Ok settings
    | "--connection" :: value :: rest ->
        parse
            { settings with
                ConnectionString = value
            }
            rest
    | "--event" :: value :: rest -> parse { settings with EventName = value } rest
    | "--handlers" :: value :: rest ->
        let names =
            value.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
            |> List.ofArray

        parse { settings with Handlers = names } rest
    | "--handler-delay-ms" :: Millis value :: rest -> parse { settings with HandlerDelay = value } rest
    | "--handler-timeout-ms" :: Millis value :: rest ->
        parse
            { settings with
                HandlerTimeout = Some value
            }
            rest
    | "--lease-ms" :: Millis value :: rest -> parse { settings with Lease = value } rest
    | "--claim-lease-ms" :: Millis value :: rest ->
        parse
            { settings with
                ClaimLease = Some value
            }
            rest
    | "--workers" :: Count value :: rest -> parse { settings with Workers = value } rest
    | "--limit" :: Count value :: rest -> parse { settings with Limit = Some value } rest
    | "--interval-ms" :: Millis value :: rest -> parse { settings with Interval = value } rest
    | "--max-errors" :: Count value :: rest -> parse { settings with MaxErrors = value } rest
    | "--backoff-ms" :: Millis value :: rest -> parse { settings with Backoff = Some value } rest
    | "--duration-s" :: Count value :: rest ->
        parse
            { settings with
                Duration = Some(TimeSpan.FromSeconds(float value))
            }
            rest
    | "--stop-on-stdin-close" :: rest ->
        parse
            { settings with
                StopOnStdinClose = true
            }
            rest
    | "--shutdown-timeout-ms" :: Millis value :: rest ->
        parse
            { settings with
                ShutdownTimeout = value
            }
            rest
    | "--raise-key" :: value :: rest -> parse { settings with RaiseKey = Some value } rest
    | "--raises" :: Count value :: rest -> parse { settings with Raises = value } rest
    | "--log-level" :: value :: rest ->
        match Enum.TryParse<LogLevel>(value, true) with
        | true, level -> parse { settings with LogLevel = level } rest
        | _ -> Error $"unknown log level %s{value}"
    | argument :: _ -> Error $"unknown argument, or a missing or invalid value: %s{argument}"

/// Writes log entries at or above a level to stderr, one line each.
type private StderrLogger(category: string, minimum: LogLevel) =
    interface ILogger with
        member _.BeginScope _ = null
        member _.IsEnabled level = level >= minimum

        member _.Log(level, _eventId, state, error, formatter) =
            if level >= minimum then
                let message = formatter.Invoke(state, error)

                let detail =
                    match error with
                    | null -> ""
                    | error -> $" (%s{error.GetType().Name}: %s{error.Message})"

                eprintfn
                    "%s %s %s: %s%s"
                    (DateTime.UtcNow.ToString "HH:mm:ss.fff")
                    (string level)
                    category
                    message
                    detail

/// The evidence table: one row per handler run, written by the handler itself.
module Evidence =

    /// Creates the table if it is missing, under an advisory lock so that workers starting together on
    /// a fresh database do not race.
    let createSql =
        """
SELECT pg_advisory_xact_lock(hashtext('events-worker-evidence'));
CREATE TABLE IF NOT EXISTS worker_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id uuid NOT NULL,
    event_id uuid NOT NULL,
    handler_name text NOT NULL,
    attempt integer NOT NULL,
    last_error text,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at timestamptz);"""

    let startSql =
        """
INSERT INTO worker_runs (request_id, event_id, handler_name, attempt, last_error, pid, started_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id"""

    let endSql = "UPDATE worker_runs SET ended_at = $2 WHERE id = $1"

    let create (dataSource: NpgsqlDataSource) =
        task {
            use! connection = dataSource.OpenConnectionAsync()
            use! transaction = connection.BeginTransactionAsync()
            use command = new NpgsqlCommand(createSql, connection, transaction)
            let! _ = command.ExecuteNonQueryAsync()
            do! transaction.CommitAsync()
        }

/// A handler that records its run's start, waits the delay, and records its end, then succeeds. A run
/// whose end is not recorded did not return (its process died, or a database error failed it).
let private recordingHandler (runs: NpgsqlDataSource) (delay: TimeSpan) : Handler =
    fun context cancellationToken ->
        task {
            let started = DateTimeOffset.UtcNow
            let request = context.Request
            use start = runs.CreateCommand Evidence.startSql
            start.Parameters.AddWithValue request.Id |> ignore
            start.Parameters.AddWithValue request.EventId |> ignore
            start.Parameters.AddWithValue request.HandlerName.Value |> ignore
            start.Parameters.AddWithValue context.Attempt |> ignore

            // The error of the attempt before, as this attempt was handed the request.
            start.Parameters.Add(
                NpgsqlParameter(
                    NpgsqlDbType = NpgsqlTypes.NpgsqlDbType.Text,
                    Value =
                        match request.LastError with
                        | Some error -> box error
                        | None -> box DBNull.Value
                )
            )
            |> ignore

            start.Parameters.AddWithValue Environment.ProcessId |> ignore
            start.Parameters.AddWithValue started |> ignore
            let! id = start.ExecuteScalarAsync cancellationToken

            if delay > TimeSpan.Zero then
                do! Task.Delay(delay, cancellationToken)

            use finish = runs.CreateCommand Evidence.endSql
            finish.Parameters.AddWithValue id |> ignore
            finish.Parameters.AddWithValue DateTimeOffset.UtcNow |> ignore
            let! _ = finish.ExecuteNonQueryAsync cancellationToken
            return HandlerResult.Succeeded
        }

let private configuration (settings: Settings) (runs: NpgsqlDataSource) =
    let options =
        [
            yield HandlerOption.MaxErrors settings.MaxErrors
            match settings.HandlerTimeout with
            | Some timeout -> yield HandlerOption.Timeout timeout
            | None -> ()
            match settings.Backoff with
            | Some backoff ->
                yield HandlerOption.Backoff(BackoffPolicy.Exponential { Base = backoff; Cap = backoff * 4.0 })
            | None -> ()
        ]

    settings.Handlers
    |> List.fold
        (fun configuration name ->
            match
                Configuration.tryAdd
                    settings.EventName
                    name
                    (recordingHandler runs settings.HandlerDelay)
                    options
                    configuration
            with
            | Ok configuration -> configuration
            | Error errors ->
                let messages = errors |> List.map _.Message |> String.concat "; "
                invalidArg "settings" $"invalid handler configuration: %s{messages}")
        Configuration.empty

/// Applies the store's schema under a session advisory lock, so workers starting together on a fresh
/// database do not race to create the same tables.
let private createStore (settings: Settings) (runs: NpgsqlDataSource) =
    task {
        use! connection = runs.OpenConnectionAsync()

        use lockCommand =
            new NpgsqlCommand("SELECT pg_advisory_lock(hashtext('events-worker-schema'))", connection)

        let! _ = lockCommand.ExecuteNonQueryAsync()

        try
            return! MartenEventStore.CreateAsync settings.ConnectionString
        finally
            use unlock =
                new NpgsqlCommand("SELECT pg_advisory_unlock(hashtext('events-worker-schema'))", connection)

            unlock.ExecuteNonQuery() |> ignore
    }

let private run (settings: Settings) : Task<int> =
    task {
        use stop = new CancellationTokenSource()

        let requestStop () =
            try
                stop.Cancel()
            with :? ObjectDisposedException ->
                ()

        let onSignal (context: PosixSignalContext) =
            context.Cancel <- true
            requestStop ()

        use _ = PosixSignalRegistration.Create(PosixSignal.SIGTERM, onSignal)
        use _ = PosixSignalRegistration.Create(PosixSignal.SIGINT, onSignal)

        let raiseTold =
            TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)

        if settings.StopOnStdinClose then
            let watcher =
                Thread(
                    (fun () ->
                        let mutable line = Console.In.ReadLine()

                        while not (isNull line) do
                            if line = "raise" then
                                raiseTold.TrySetResult() |> ignore

                            line <- Console.In.ReadLine()

                        requestStop ()),
                    IsBackground = true
                )

            watcher.Start()

        settings.Duration |> Option.iter stop.CancelAfter
        let logger = StderrLogger($"worker %d{Environment.ProcessId}", settings.LogLevel)
        use runs = NpgsqlDataSource.Create settings.ConnectionString
        do! Evidence.create runs
        let! store = createStore settings runs

        let! _ = Task.WhenAny(store.WhenListening, Task.Delay(TimeSpan.FromSeconds 30.0))

        if not store.WhenListening.IsCompleted then
            (logger :> ILogger).LogWarning "the work listener is not connected yet; polling only"

        use scheduler =
            new Scheduler(
                store,
                configuration settings runs,
                { ProcessorOptions.Default with
                    ClaimLease = defaultArg settings.ClaimLease settings.Lease
                },
                { ExecutorOptions.Default with
                    Workers = settings.Workers
                    Limit = defaultArg settings.Limit settings.Workers
                    Lease = settings.Lease
                },
                { SchedulerOptions.Default with
                    Kind = SchedulerKind.Concurrent
                    Interval = settings.Interval
                },
                logger,
                TimeProvider.System
            )

        scheduler.Start()
        printfn "ready pid=%d" Environment.ProcessId

        match settings.RaiseKey with
        | Some key ->
            do! raiseTold.Task

            let raised =
                [
                    for _ in 1 .. settings.Raises ->
                        let now = DateTimeOffset.UtcNow

                        Event.application
                            (Guid.CreateVersion7 now)
                            now
                            (EventName.Create settings.EventName)
                            EventData.Empty
                        |> Event.withDeduplicationKey key
                ]

            let! results =
                Task.WhenAll(
                    raised
                    |> List.map (fun event ->
                        task {
                            let! stored = (store :> IEventStore).AppendAsync([ event ], CancellationToken.None)
                            return event, stored.Head
                        })
                )

            for event, stored in results do
                printfn "raised %O %b" stored.Id (Event.isDuplicateOf event stored)

            printfn "raises done pid=%d" Environment.ProcessId
        | None -> ()

        let stopped =
            TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)

        use _ = stop.Token.Register(fun () -> stopped.TrySetResult() |> ignore)
        do! stopped.Task
        printfn "stopping pid=%d" Environment.ProcessId
        use deadline = new CancellationTokenSource(settings.ShutdownTimeout)
        do! scheduler.ShutdownAsync deadline.Token
        do! store.DisposeAsync()
        printfn "stopped pid=%d" Environment.ProcessId
        return 0
    }

[<EntryPoint>]
let main argv =
    match parse defaults (List.ofArray argv) with
    | Error message ->
        eprintfn "%s\n%s" message usage
        2
    | Ok settings ->
        try
            (run settings).GetAwaiter().GetResult()
        with error ->
            eprintfn "worker %d failed: %O" Environment.ProcessId error
            1
