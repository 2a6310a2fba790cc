/// The ceiling: the database work the framework does per event, written by hand as batched SQL through
/// Npgsql on tables of its own. Append event rows (with a notification); claim a batch of events
/// (FOR UPDATE SKIP LOCKED, a lease and a token); in one statement, mark them processed (fenced by the
/// token) and insert one request row per handler, carrying the event's data, with a notification;
/// recover lapsed request leases and claim a batch of runnable requests (FOR UPDATE SKIP LOCKED), in
/// one round trip; mark them completed (fenced by the token). The same indexes the claims need
/// (partial, in claim order), plus the lease index recovery needs; no JSON documents.
module Events.Benchmarks.Ceiling

open System
open System.Diagnostics
open System.Threading
open System.Threading.Tasks
open Npgsql
open NpgsqlTypes
open Events.Core
open Events.Benchmarks.Profile

/// The channel of the ceiling's notifications.
[<Literal>]
let Channel = "ceiling_work"

let private schema =
    """
CREATE TABLE ceiling_events (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    data jsonb NOT NULL,
    event_timestamp timestamptz NOT NULL,
    correlation_id uuid,
    processed_at timestamptz,
    claim_token uuid,
    claim_until timestamptz);
CREATE INDEX ceiling_events_unprocessed ON ceiling_events (event_timestamp, id) WHERE processed_at IS NULL;
CREATE TABLE ceiling_requests (
    id uuid PRIMARY KEY,
    event_id uuid NOT NULL,
    event_name text NOT NULL,
    handler_name text NOT NULL,
    event_data jsonb NOT NULL,
    event_timestamp timestamptz NOT NULL,
    correlation_id uuid,
    priority int NOT NULL,
    errors int NOT NULL DEFAULT 0,
    max_errors int NOT NULL,
    backoff_until timestamptz,
    completed_at timestamptz,
    canceled_at timestamptz,
    lease_until timestamptz,
    claim_token uuid);
CREATE INDEX ceiling_requests_runnable ON ceiling_requests (priority, event_timestamp, id) INCLUDE (backoff_until)
    WHERE completed_at IS NULL AND canceled_at IS NULL AND lease_until IS NULL AND errors < max_errors;
CREATE INDEX ceiling_requests_running ON ceiling_requests (lease_until, id) WHERE lease_until IS NOT NULL;
"""

let private appendSql =
    """
INSERT INTO ceiling_events (id, name, data, event_timestamp, correlation_id)
SELECT r.id, r.name, r.data::jsonb, r.event_timestamp, r.correlation_id
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::uuid[])
    AS r(id, name, data, event_timestamp, correlation_id)"""

let private notifySql (payload: string) =
    $"SELECT pg_notify('%s{Channel}', '%s{payload}')"

let private claimEventsSql =
    """
WITH picked AS MATERIALIZED (
    SELECT id FROM ceiling_events
    WHERE processed_at IS NULL AND (claim_until IS NULL OR claim_until <= $1)
    ORDER BY event_timestamp, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED)
UPDATE ceiling_events AS e SET claim_token = $4, claim_until = $2
FROM picked WHERE e.id = picked.id
RETURNING e.id, e.name, e.data::text, e.event_timestamp, e.correlation_id"""

let private commitSql =
    $"""
WITH marked AS (
    UPDATE ceiling_events SET processed_at = $3, claim_token = NULL, claim_until = NULL
    WHERE id = ANY($1) AND claim_token = $2 AND processed_at IS NULL
    RETURNING id),
inserted AS (
    INSERT INTO ceiling_requests (id, event_id, event_name, handler_name, event_data, event_timestamp,
                                  correlation_id, priority, max_errors)
    SELECT r.id, r.event_id, r.event_name, r.handler_name, r.event_data::jsonb, r.event_timestamp,
           r.correlation_id, 0, 5
    FROM unnest($4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::uuid[])
        AS r(id, event_id, event_name, handler_name, event_data, event_timestamp, correlation_id)
    WHERE r.event_id IN (SELECT id FROM marked)
    RETURNING 1)
SELECT (SELECT count(*) FROM marked),
       (SELECT count(*) FROM (SELECT pg_notify('%s{Channel}', 'requests') FROM (SELECT 1 FROM inserted LIMIT 1) AS any_inserted) AS notified)"""

let private recoverSql =
    """
WITH expired AS MATERIALIZED (
    SELECT id FROM ceiling_requests
    WHERE lease_until IS NOT NULL AND lease_until <= $1
    ORDER BY lease_until, id
    LIMIT 1000
    FOR UPDATE SKIP LOCKED)
UPDATE ceiling_requests AS r
SET errors = r.errors + 1,
    backoff_until = CASE WHEN r.errors + 1 < r.max_errors THEN $1 END,
    lease_until = NULL,
    claim_token = NULL
FROM expired WHERE r.id = expired.id
RETURNING r.id"""

let private claimRequestsSql =
    """
WITH picked AS MATERIALIZED (
    SELECT id FROM ceiling_requests
    WHERE completed_at IS NULL AND canceled_at IS NULL AND lease_until IS NULL AND errors < max_errors
      AND (backoff_until IS NULL OR backoff_until <= $1)
    ORDER BY priority, event_timestamp, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED)
UPDATE ceiling_requests AS r SET lease_until = $2, claim_token = $4, backoff_until = NULL
FROM picked WHERE r.id = picked.id
RETURNING r.id, r.event_id, r.handler_name, r.event_data::text"""

let private completeSql =
    """
UPDATE ceiling_requests SET completed_at = $3, lease_until = NULL, claim_token = NULL
WHERE id = ANY($1) AND claim_token = $2"""

let private parameter (dbType: NpgsqlDbType) (value: obj) =
    NpgsqlParameter(NpgsqlDbType = dbType, Value = value)

let private array (dbType: NpgsqlDbType) (values: 'T[]) =
    parameter (NpgsqlDbType.Array ||| dbType) values

let private utcNow () = DateTimeOffset.UtcNow

/// A claimed event: id, name, data, timestamp, correlation id.
type Claimed =
    {
        Id: Guid
        Name: string
        Data: string
        Timestamp: DateTimeOffset
        CorrelationId: Guid
    }

/// A claimed request: id, event id, handler name.
[<Struct>]
type ClaimedRequest =
    {
        RequestId: Guid
        EventId: Guid
        Handler: string
    }

/// The ceiling's SQL on one database.
[<Sealed>]
type Ceiling private (dataSource: NpgsqlDataSource) =
    let mutable tally: Tally option = None

    let record (operation: string) (items: int) (started: int64) =
        tally |> Option.iter (fun tally -> tally.Record(operation, items, started))

    /// Makes the ceiling's tables in the database.
    static member CreateAsync(connectionString: string) : Task<Ceiling> =
        task {
            let dataSource = NpgsqlDataSource.Create(connectionString)
            use! connection = dataSource.OpenConnectionAsync()
            use command = new NpgsqlCommand(schema, connection)
            let! _ = command.ExecuteNonQueryAsync()
            return new Ceiling(dataSource)
        }

    /// The data source (for the listener).
    member _.DataSource = dataSource

    /// Where the calls are timed, if anywhere.
    member _.Tally
        with get () = tally
        and set value = tally <- value

    /// Appends events and notifies, in one round trip and one transaction.
    member _.AppendAsync(events: Event list) : Task =
        task {
            let started = Stopwatch.GetTimestamp()
            use! connection = dataSource.OpenConnectionAsync()
            use batch = new NpgsqlBatch(connection)
            let insert = NpgsqlBatchCommand(appendSql)
            let events = Array.ofList events

            insert.Parameters.Add(array NpgsqlDbType.Uuid (events |> Array.map _.Id))
            |> ignore

            insert.Parameters.Add(array NpgsqlDbType.Text (events |> Array.map _.Name.Value))
            |> ignore

            insert.Parameters.Add(array NpgsqlDbType.Text (events |> Array.map _.Data.Json))
            |> ignore

            insert.Parameters.Add(array NpgsqlDbType.TimestampTz (events |> Array.map _.Timestamp.ToUniversalTime()))
            |> ignore

            insert.Parameters.Add(
                array
                    NpgsqlDbType.Uuid
                    (events
                     |> Array.map (fun event ->
                         event.CorrelationId |> Option.defaultWith (fun () -> Guid.CreateVersion7())))
            )
            |> ignore

            batch.BatchCommands.Add insert
            batch.BatchCommands.Add(NpgsqlBatchCommand(notifySql "events"))
            let! _ = batch.ExecuteNonQueryAsync()
            record "append" events.Length started
        }

    /// Claims up to `limit` unprocessed events for `leaseFor`; returns the claim's token and the events.
    member _.ClaimEventsAsync(limit: int, leaseFor: TimeSpan) : Task<Guid * Claimed[]> =
        task {
            let started = Stopwatch.GetTimestamp()
            let token = Guid.NewGuid()
            let now = utcNow ()
            use! connection = dataSource.OpenConnectionAsync()
            use command = new NpgsqlCommand(claimEventsSql, connection)
            command.Parameters.Add(parameter NpgsqlDbType.TimestampTz now) |> ignore

            command.Parameters.Add(parameter NpgsqlDbType.TimestampTz (now + leaseFor))
            |> ignore

            command.Parameters.Add(parameter NpgsqlDbType.Integer limit) |> ignore
            command.Parameters.Add(parameter NpgsqlDbType.Uuid token) |> ignore
            use! reader = command.ExecuteReaderAsync()
            let rows = ResizeArray()
            let! more = reader.ReadAsync()
            let mutable more = more

            while more do
                rows.Add
                    {
                        Id = reader.GetGuid 0
                        Name = reader.GetString 1
                        Data = reader.GetString 2
                        Timestamp = reader.GetFieldValue<DateTimeOffset> 3
                        CorrelationId = reader.GetGuid 4
                    }

                let! next = reader.ReadAsync()
                more <- next

            record "claim events" rows.Count started
            return token, rows.ToArray()
        }

    /// Marks the claimed events processed and inserts one request per handler for each, in one
    /// statement (so one transaction), fenced by the token; notifies. Returns the events marked.
    member _.CommitAsync(token: Guid, events: Claimed[], handlers: string list) : Task<int64> =
        task {
            let started = Stopwatch.GetTimestamp()

            let requests =
                [|
                    for event in events do
                        for handler in handlers -> event, handler
                |]

            use! connection = dataSource.OpenConnectionAsync()
            use command = new NpgsqlCommand(commitSql, connection)
            let add (p: NpgsqlParameter) = command.Parameters.Add p |> ignore
            add (array NpgsqlDbType.Uuid (events |> Array.map _.Id))
            add (parameter NpgsqlDbType.Uuid token)
            add (parameter NpgsqlDbType.TimestampTz (utcNow ()))
            add (array NpgsqlDbType.Uuid (requests |> Array.map (fun _ -> Guid.CreateVersion7())))
            add (array NpgsqlDbType.Uuid (requests |> Array.map (fun (event, _) -> event.Id)))
            add (array NpgsqlDbType.Text (requests |> Array.map (fun (event, _) -> event.Name)))
            add (array NpgsqlDbType.Text (requests |> Array.map snd))
            add (array NpgsqlDbType.Text (requests |> Array.map (fun (event, _) -> event.Data)))
            add (array NpgsqlDbType.TimestampTz (requests |> Array.map (fun (event, _) -> event.Timestamp)))
            add (array NpgsqlDbType.Uuid (requests |> Array.map (fun (event, _) -> event.CorrelationId)))
            let! marked = command.ExecuteScalarAsync()
            record "commit fan-out" events.Length started
            return Convert.ToInt64 marked
        }

    /// Recovers lapsed leases and claims up to `limit` runnable requests for `leaseFor`, in one round
    /// trip; returns the claim's token and the requests.
    member _.ClaimRequestsAsync(limit: int, leaseFor: TimeSpan) : Task<Guid * ClaimedRequest[]> =
        task {
            let started = Stopwatch.GetTimestamp()
            let token = Guid.NewGuid()
            let now = utcNow ()
            use! connection = dataSource.OpenConnectionAsync()
            use batch = new NpgsqlBatch(connection)
            let recover = NpgsqlBatchCommand(recoverSql)
            recover.Parameters.Add(parameter NpgsqlDbType.TimestampTz now) |> ignore
            let claim = NpgsqlBatchCommand(claimRequestsSql)
            claim.Parameters.Add(parameter NpgsqlDbType.TimestampTz now) |> ignore

            claim.Parameters.Add(parameter NpgsqlDbType.TimestampTz (now + leaseFor))
            |> ignore

            claim.Parameters.Add(parameter NpgsqlDbType.Integer limit) |> ignore
            claim.Parameters.Add(parameter NpgsqlDbType.Uuid token) |> ignore
            batch.BatchCommands.Add recover
            batch.BatchCommands.Add claim
            use! reader = batch.ExecuteReaderAsync()
            // Recovered requests would be retried by the next claim; none lapse in the benchmark.
            let! more = reader.ReadAsync()
            let mutable more = more

            while more do
                let! next = reader.ReadAsync()
                more <- next

            let! _ = reader.NextResultAsync()
            let rows = ResizeArray()
            let! more = reader.ReadAsync()
            let mutable more = more

            while more do
                // The handler would get the event's data: read it, as a store hands it over.
                reader.GetString 3 |> ignore

                rows.Add
                    {
                        RequestId = reader.GetGuid 0
                        EventId = reader.GetGuid 1
                        Handler = reader.GetString 2
                    }

                let! next = reader.ReadAsync()
                more <- next

            record "recover + claim requests" rows.Count started
            return token, rows.ToArray()
        }

    /// Marks claimed requests completed, fenced by the claim's token.
    member _.CompleteAsync(token: Guid, ids: Guid[]) : Task =
        task {
            let started = Stopwatch.GetTimestamp()
            use! connection = dataSource.OpenConnectionAsync()
            use command = new NpgsqlCommand(completeSql, connection)
            command.Parameters.Add(array NpgsqlDbType.Uuid ids) |> ignore
            command.Parameters.Add(parameter NpgsqlDbType.Uuid token) |> ignore
            command.Parameters.Add(parameter NpgsqlDbType.TimestampTz (utcNow ())) |> ignore
            let! _ = command.ExecuteNonQueryAsync()
            record "complete requests" ids.Length started
        }

    /// Runs a statement on the ceiling's database.
    member _.ExecuteAsync(sql: string) : Task =
        task {
            use! connection = dataSource.OpenConnectionAsync()
            use command = new NpgsqlCommand(sql, connection)
            command.CommandTimeout <- 0
            let! _ = command.ExecuteNonQueryAsync()
            ()
        }

    interface IAsyncDisposable with
        member _.DisposeAsync() = dataSource.DisposeAsync()

/// A wake-up that a loop waits on with a timeout; a signal sent while the loop works is kept.
[<Sealed>]
type Wake() =
    let semaphore = new SemaphoreSlim(0, 1)

    member _.Set() =
        try
            semaphore.Release() |> ignore
        with :? SemaphoreFullException ->
            ()

    member _.WaitAsync(timeout: TimeSpan, cancellationToken: CancellationToken) : Task =
        task {
            try
                let! _ = semaphore.WaitAsync(timeout, cancellationToken)
                ()
            with :? OperationCanceledException ->
                ()
        }

/// The ceiling's engine: a processing loop and an executing loop, each draining while its rounds come
/// back full, then waiting for a wake-up or `interval`; no-op handlers (a claimed request is "started",
/// then completed). `started` is told each claimed batch as its handlers start; `completed` each
/// completed count.
[<Sealed>]
type Pipeline
    (
        ceiling: Ceiling,
        limit: int,
        interval: TimeSpan,
        handlers: string list,
        started: ClaimedRequest[] -> unit,
        completed: int -> unit
    ) =
    let stopping = new CancellationTokenSource()
    let processWake = Wake()
    let executeWake = Wake()
    let mutable error: exn option = None
    let mutable loops: Task[] = [||]

    let processRound () =
        task {
            let! token, events = ceiling.ClaimEventsAsync(limit, TimeSpan.FromMinutes 1.0)

            if events.Length > 0 then
                let! _ = ceiling.CommitAsync(token, events, handlers)
                executeWake.Set()

            return events.Length
        }

    let executeRound () =
        task {
            let! token, requests = ceiling.ClaimRequestsAsync(limit, TimeSpan.FromMinutes 5.0)

            if requests.Length > 0 then
                started requests
                do! ceiling.CompleteAsync(token, requests |> Array.map _.RequestId)
                completed requests.Length

            return requests.Length
        }

    let loop (wake: Wake) (round: unit -> Task<int>) =
        Task.Run<unit>(fun () ->
            task {
                try
                    while not stopping.IsCancellationRequested do
                        let mutable full = true

                        while full && not stopping.IsCancellationRequested do
                            let! claimed = round ()
                            full <- claimed >= limit

                        do! wake.WaitAsync(interval, stopping.Token)
                with failure ->
                    error <- Some failure
            })
        :> Task

    let listen (ready: TaskCompletionSource) =
        Task.Run<unit>(fun () ->
            task {
                try
                    use! connection = ceiling.DataSource.OpenConnectionAsync()

                    connection.Notification.Add(fun notification ->
                        if notification.Payload = "events" then
                            processWake.Set()
                        else
                            executeWake.Set())

                    use command = new NpgsqlCommand($"LISTEN %s{Channel}", connection)
                    let! _ = command.ExecuteNonQueryAsync()
                    ready.TrySetResult() |> ignore
                    use probe = new NpgsqlCommand("SELECT 1", connection)

                    while not stopping.IsCancellationRequested do
                        let! notified = connection.WaitAsync(TimeSpan.FromSeconds 30.0, stopping.Token)

                        if not notified then
                            let! _ = probe.ExecuteScalarAsync stopping.Token
                            ()
                with
                | :? OperationCanceledException -> ()
                | failure ->
                    error <- Some failure
                    ready.TrySetResult() |> ignore
            })
        :> Task

    /// The failure that stopped a loop, if any.
    member _.Error = error

    /// Starts the loops, and a listener when `listening`; completes when the listener listens.
    member _.StartAsync(listening: bool) : Task =
        let ready = TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)

        if not listening then
            ready.TrySetResult() |> ignore

        loops <-
            [|
                loop processWake processRound
                loop executeWake executeRound
                if listening then
                    listen ready
            |]

        ready.Task

    /// Stops the loops and waits for them.
    member _.StopAsync() : Task =
        task {
            stopping.Cancel()
            processWake.Set()
            executeWake.Set()

            try
                do! Task.WhenAll loops
            with _ ->
                ()
        }
