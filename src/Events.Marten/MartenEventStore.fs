namespace Events.Marten

open System
open Events.Core
open System.Collections.Generic
open System.Threading
open System.Threading.Tasks
open global.Marten
open global.Marten.Storage
open Npgsql
open NpgsqlTypes
open global.Events

/// Settings of a Marten event store.
type MartenEventStoreOptions =
    {
        /// The most lapsed leases one request claim recovers; the rest are recovered by the next claims
        /// (default 1000).
        MaxRecoveredPerClaim: int
        /// Whether to keep a connection listening for other processes' work notifications, raising
        /// `WorkArrived` (default true).
        ListenForWork: bool
        /// The first wait before the listener reconnects after a failure; it doubles on each failure
        /// up to `MaxReconnectDelay` (default 1 s).
        ReconnectDelay: TimeSpan
        /// The longest wait before the listener reconnects (default 30 s).
        MaxReconnectDelay: TimeSpan
        /// How long the listener waits for a notification before it checks that its connection is alive
        /// (a connection dropped without a reset would otherwise wait forever; default 30 s).
        ListenerProbeInterval: TimeSpan
    }

    /// Recovers at most 1000 lapsed leases per claim, listens (probing its connection every 30 s),
    /// reconnects after 1 s doubling to 30 s.
    static member Default =
        {
            MaxRecoveredPerClaim = 1000
            ListenForWork = true
            ReconnectDelay = TimeSpan.FromSeconds 1.0
            MaxReconnectDelay = TimeSpan.FromSeconds 30.0
            ListenerProbeInterval = TimeSpan.FromSeconds 30.0
        }

/// A handler's own work in a lightweight Marten session, opened on first use, committed in the same
/// database transaction as the request's outcome, and discarded when the outcome is refused.
[<Sealed>]
type MartenHandlerTransaction internal (store: IDocumentStore) =
    let mutable session: IDocumentSession = null
    let mutable disposed = false

    /// The session for the handler's work: store and delete documents, append events
    /// (`AppendEvents`); do not call SaveChanges, the store commits it with the outcome.
    member _.Session: IDocumentSession =
        if disposed then
            raise (ObjectDisposedException(nameof MartenHandlerTransaction))

        if isNull session then
            session <- store.LightweightSession()

        session

    /// The session if it was opened.
    member internal _.Opened: IDocumentSession option = Option.ofObj session

    interface IHandlerTransaction with
        member _.HasChanges =
            not (isNull session)
            && not disposed
            && not (Seq.isEmpty (session.PendingChanges.Operations()))

        member _.DisposeAsync() =
            if disposed || isNull session then
                disposed <- true
                ValueTask.CompletedTask
            else
                disposed <- true
                session.DisposeAsync()

/// Parameters and readers for the store's SQL.
[<RequireQualifiedAccess>]
module internal Db =

    let parameter (dbType: NpgsqlDbType) (value: obj) =
        NpgsqlParameter(NpgsqlDbType = dbType, Value = (if isNull value then box DBNull.Value else value))

    let array (dbType: NpgsqlDbType) (values: 'T[]) =
        parameter (NpgsqlDbType.Array ||| dbType) values

    let timestamp (value: DateTimeOffset) =
        parameter NpgsqlDbType.TimestampTz (Documents.utc value)

    /// A time as the JSON the documents hold (so SQL writes the same text as the serialiser).
    let jsonTimestamp (value: DateTimeOffset) =
        parameter NpgsqlDbType.Text (Documents.toJson (Documents.utc value))

    let command (connection: NpgsqlConnection) (sql: string) (parameters: NpgsqlParameter list) =
        let command = new NpgsqlCommand(sql, connection)

        for p in parameters do
            command.Parameters.Add p |> ignore

        command

    let batchCommand (sql: string) (parameters: NpgsqlParameter list) =
        let command = NpgsqlBatchCommand(sql)

        for p in parameters do
            command.Parameters.Add p |> ignore

        command

    /// The rows' first column, read as text, in order.
    let readTexts (reader: NpgsqlDataReader) (cancellationToken: CancellationToken) =
        task {
            let rows = ResizeArray<string>()

            let! more = reader.ReadAsync cancellationToken
            let mutable more = more

            while more do
                rows.Add(reader.GetString 0)
                let! next = reader.ReadAsync cancellationToken
                more <- next

            return List.ofSeq rows
        }

    /// The columns a request write sets, for one request, as arrays (one element per request).
    let requestArrays (documents: RequestDocument list) : NpgsqlParameter list =
        let column f = documents |> Seq.map f |> Array.ofSeq

        [
            array NpgsqlDbType.Uuid (column _.Id)
            array NpgsqlDbType.Text (column Documents.toJson)
            array NpgsqlDbType.Text (column _.HandlerName)
            array NpgsqlDbType.Text (column _.EventName)
            array NpgsqlDbType.TimestampTz (column _.EventTimestamp)
            array NpgsqlDbType.Integer (column _.Priority)
            array NpgsqlDbType.Integer (column _.Errors)
            array NpgsqlDbType.Integer (column _.MaxErrors)
            array NpgsqlDbType.TimestampTz (column _.BackoffUntil)
            array NpgsqlDbType.TimestampTz (column _.CompletedAt)
            array NpgsqlDbType.TimestampTz (column _.CanceledAt)
            array NpgsqlDbType.TimestampTz (column _.LeaseUntil)
            array NpgsqlDbType.Uuid (column _.ClaimToken)
        ]

    /// The columns a request write sets, for one request, as scalars.
    let requestValues (document: RequestDocument) : NpgsqlParameter list =
        let nullable (value: Nullable<'T>) =
            if value.HasValue then box value.Value else null

        [
            parameter NpgsqlDbType.Text (Documents.toJson document)
            parameter NpgsqlDbType.Text document.HandlerName
            parameter NpgsqlDbType.Text document.EventName
            parameter NpgsqlDbType.TimestampTz document.EventTimestamp
            parameter NpgsqlDbType.Integer document.Priority
            parameter NpgsqlDbType.Integer document.Errors
            parameter NpgsqlDbType.Integer document.MaxErrors
            parameter NpgsqlDbType.TimestampTz (nullable document.BackoffUntil)
            parameter NpgsqlDbType.TimestampTz (nullable document.CompletedAt)
            parameter NpgsqlDbType.TimestampTz (nullable document.CanceledAt)
            parameter NpgsqlDbType.TimestampTz (nullable document.LeaseUntil)
            parameter NpgsqlDbType.Uuid (nullable document.ClaimToken)
        ]

    /// Why a stored request refused an outcome or a renewal, from the shape code `Sql.recordOutcomes` and
    /// `Sql.renewLeases` return.
    let refusal (shape: int) : RequestError =
        match shape with
        | 1 -> RequestError.AlreadyCompleted
        | 2 -> RequestError.AlreadyCanceled
        | 4 -> RequestError.StaleToken
        | 0
        | 3 -> RequestError.NotRunning
        | other -> invalidOp $"unknown request shape %d{other} from the outcome statement"

/// Enumerates a table page by page in (event time, id) order, each page read when needed.
[<Sealed>]
type private PagedEnumerable<'item>
    (
        fetch: (DateTimeOffset * Guid) option -> CancellationToken -> Task<('item * DateTimeOffset * Guid) list>,
        pageSize: int,
        cancellationToken: CancellationToken
    ) =
    interface IAsyncEnumerable<'item> with
        member _.GetAsyncEnumerator(enumeratorToken) =
            let buffer = Queue<'item>()
            let key = ref None
            let finished = ref false
            let current = ref Unchecked.defaultof<'item>

            let token =
                CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, enumeratorToken)

            { new IAsyncEnumerator<'item> with
                member _.Current = current.Value

                member _.MoveNextAsync() =
                    ValueTask<bool>(
                        task {
                            if buffer.Count = 0 && not finished.Value then
                                let! page = fetch key.Value token.Token

                                for item, timestamp, id in page do
                                    buffer.Enqueue item
                                    key.Value <- Some(timestamp, id)

                                if List.length page < pageSize then
                                    finished.Value <- true

                            if buffer.Count = 0 then
                                return false
                            else
                                current.Value <- buffer.Dequeue()
                                return true
                        }
                    )

                member _.DisposeAsync() =
                    token.Dispose()
                    ValueTask.CompletedTask
            }

/// The store port on Marten and PostgreSQL: events and handler requests are Marten documents (see
/// `UseEventsDocuments`); the hot paths (claims, fan-out commits, outcomes) are single SQL statements
/// over their duplicated columns and partial indexes, safe for many processes sharing the database
/// (`FOR UPDATE SKIP LOCKED`, fencing tokens). New work raises `WorkArrived` in this process as soon as
/// it is committed, and in every process through LISTEN/NOTIFY (so this process may hear it twice).
/// Times are compared by PostgreSQL to the microsecond; documents keep them to the tick.
[<Sealed>]
type MartenEventStore private (store: IDocumentStore, options: MartenEventStoreOptions, ownsStore: bool) =

    do
        if isNull store then
            nullArg (nameof store)

        if options.MaxRecoveredPerClaim < 1 then
            invalidArg (nameof options) $"MaxRecoveredPerClaim must be at least 1, got %d{options.MaxRecoveredPerClaim}"

        if
            options.ReconnectDelay <= TimeSpan.Zero
            || options.MaxReconnectDelay < options.ReconnectDelay
        then
            invalidArg (nameof options) "ReconnectDelay must be positive and not above MaxReconnectDelay"

        if options.ListenerProbeInterval <= TimeSpan.Zero then
            invalidArg (nameof options) "ListenerProbeInterval must be positive"

    let layout = StoreLayout.ofOptions store.Options
    let tables = layout.Tables
    let requestType = typeof<RequestDocument>.FullName
    let workArrived = Event<WorkSignal>()
    let listenerFailed = Event<exn>()
    let stopping = new CancellationTokenSource()

    let mutable listening =
        TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)

    let mutable listener: Task = Task.CompletedTask
    let mutable disposed = 0

    // The store's own SQL, built once.
    let claimEventsSql = Sql.claimEvents tables
    let releaseEventsSql = Sql.releaseEvents tables
    let commitProcessingSql = Sql.commitProcessing tables layout.Channel
    let recoverRequestsSql = Sql.recoverRequests tables
    let claimRequestsSql = Sql.claimRequests tables
    let recordOutcomesSql = Sql.recordOutcomes tables layout.Channel
    let renewLeasesSql = Sql.renewLeases tables
    let statsSql = Sql.stats tables
    let eventPageSql = Sql.pageAfter tables.Events
    let requestPageSql = Sql.pageAfter tables.Requests

    let openConnection (cancellationToken: CancellationToken) =
        task {
            let connection = store.Storage.Database.CreateConnection ConnectionUsage.ReadWrite
            let mutable opened = false

            try
                do! connection.OpenAsync cancellationToken
                opened <- true
                return connection
            finally
                if not opened then
                    connection.Dispose()
        }

    let toEvent json =
        Documents.toEvent (Documents.ofJson<EventDocument> json)

    let toRequest json =
        Documents.toRequest (Documents.ofJson<RequestDocument> json)

    /// Writes one outcome with the handler's session in the same transaction: the fenced write first,
    /// the session's changes only if it was written.
    /// Every row of a keyset-paged query (ordered by timestamp then id), 500 per round trip.
    let pages (sql: string) (read: string -> 'item) (cancellationToken: CancellationToken) =
        let pageSize = 500

        PagedEnumerable<'item>(
            (fun after token ->
                task {
                    use! connection = openConnection token

                    let timestamp, id =
                        match after with
                        | Some(timestamp, id) -> Db.timestamp timestamp, Db.parameter NpgsqlDbType.Uuid id
                        | None -> Db.parameter NpgsqlDbType.TimestampTz null, Db.parameter NpgsqlDbType.Uuid null

                    use command =
                        Db.command connection sql [ timestamp; id; Db.parameter NpgsqlDbType.Integer pageSize ]

                    use! reader = command.ExecuteReaderAsync token
                    let rows = ResizeArray()
                    let! more = reader.ReadAsync token
                    let mutable more = more

                    while more do
                        rows.Add(read (reader.GetString 0), reader.GetFieldValue<DateTimeOffset> 1, reader.GetGuid 2)
                        let! next = reader.ReadAsync token
                        more <- next

                    return List.ofSeq rows
                }),
            pageSize,
            cancellationToken
        )
        :> IAsyncEnumerable<'item>

    /// Reads one row per item, in order: accepted, or the refusal code; `onRow` sees each row for its
    /// other columns.
    let readResults
        (reader: NpgsqlDataReader)
        (onRow: NpgsqlDataReader -> unit)
        (cancellationToken: CancellationToken)
        =
        task {
            let results = ResizeArray()
            let! more = reader.ReadAsync cancellationToken
            let mutable more = more

            while more do
                results.Add(
                    if reader.GetBoolean 0 then
                        Ok()
                    else
                        Error(Db.refusal (reader.GetInt32 1))
                )

                onRow reader
                let! next = reader.ReadAsync cancellationToken
                more <- next

            return List.ofSeq results
        }

    let recordInTransaction
        (outcome: OutcomeWrite)
        (transaction: MartenHandlerTransaction)
        (session: IDocumentSession)
        (cancellationToken: CancellationToken)
        =
        task {
            let! _ = session.BeginTransactionAsync cancellationToken

            let parameters =
                Db.array NpgsqlDbType.Uuid [| outcome.Token |]
                :: Db.requestArrays [ Documents.ofRequest outcome.Request ]

            use command = Db.command session.Connection recordOutcomesSql parameters
            let! reader = command.ExecuteReaderAsync cancellationToken
            let! _ = reader.ReadAsync cancellationToken
            let written = reader.GetBoolean 0
            let shape = reader.GetInt32 1
            let ready = reader.GetBoolean 2
            do! reader.DisposeAsync()

            if written then
                do! session.SaveChangesAsync cancellationToken

                if ready then
                    workArrived.Trigger WorkSignal.RequestsReady

                return Ok()
            else
                // Disposing the session rolls its transaction back, with the handler's changes.
                do! (transaction :> IHandlerTransaction).DisposeAsync()
                return Error(Db.refusal shape)
        }

    let recordPlain (outcomes: OutcomeWrite list) (cancellationToken: CancellationToken) =
        task {
            if outcomes.IsEmpty then
                return []
            else
                use! connection = openConnection cancellationToken

                let parameters =
                    Db.array NpgsqlDbType.Uuid (outcomes |> Seq.map _.Token |> Array.ofSeq)
                    :: Db.requestArrays (outcomes |> List.map (fun outcome -> Documents.ofRequest outcome.Request))

                use command = Db.command connection recordOutcomesSql parameters
                use! reader = command.ExecuteReaderAsync cancellationToken
                let ready = ref false

                let! results =
                    readResults reader (fun row -> ready.Value <- ready.Value || row.GetBoolean 2) cancellationToken

                if ready.Value then
                    workArrived.Trigger WorkSignal.RequestsReady

                return results
        }

    let listen () =
        task {
            let token = stopping.Token
            let mutable delay = options.ReconnectDelay
            let mutable connectedBefore = false

            while not token.IsCancellationRequested do
                try
                    use! connection = openConnection token

                    connection.Notification.Add(fun notification ->
                        match notification.Payload with
                        | Sql.EventsPayload -> workArrived.Trigger WorkSignal.EventsAppended
                        | Sql.RequestsPayload -> workArrived.Trigger WorkSignal.RequestsReady
                        | _ -> ())

                    use command = Db.command connection (Sql.listen layout.Channel) []
                    let! _ = command.ExecuteNonQueryAsync token

                    if connectedBefore then
                        // Work may have arrived while no one listened.
                        workArrived.Trigger WorkSignal.EventsAppended
                        workArrived.Trigger WorkSignal.RequestsReady

                    connectedBefore <- true
                    delay <- options.ReconnectDelay
                    listening.TrySetResult() |> ignore

                    use probe = Db.command connection Sql.Probe []

                    while true do
                        let! notified = connection.WaitAsync(options.ListenerProbeInterval, token)

                        if not notified then
                            // Quiet for a while: a query fails if the connection is gone.
                            let! _ = probe.ExecuteScalarAsync token
                            ()
                with
                | :? OperationCanceledException when token.IsCancellationRequested -> ()
                | error ->
                    // Any failure of the connection (the server restarted, the network dropped): wait,
                    // then connect again. The caller learns of it through ListenerFailed.
                    if listening.Task.IsCompleted then
                        listening <- TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)

                    listenerFailed.Trigger error

                    try
                        do! Task.Delay(delay, token)
                    with :? OperationCanceledException ->
                        ()

                    delay <- min (delay * 2.0) options.MaxReconnectDelay
        }

    do
        if options.ListenForWork then
            listener <- Task.Run<unit>(fun () -> listen ())
        else
            listening.TrySetResult() |> ignore

    /// A store over a Marten document store configured with `UseEventsDocuments` (whose schema the
    /// application applies). The document store stays the caller's.
    new(store: IDocumentStore, ?options: MartenEventStoreOptions) =
        new MartenEventStore(store, defaultArg options MartenEventStoreOptions.Default, false)

    /// Builds a Marten document store for the connection string with the Events documents (in
    /// `schemaName`, default "public"), applies its schema with Marten's schema tools, and returns a
    /// store that owns it (disposing the store disposes it).
    static member CreateAsync
        (connectionString: string, ?schemaName: string, ?options: MartenEventStoreOptions)
        : Task<MartenEventStore> =
        if String.IsNullOrWhiteSpace connectionString then
            nullArg (nameof connectionString)

        task {
            let documentStore =
                DocumentStore.For(fun (marten: StoreOptions) ->
                    marten.Connection connectionString

                    match schemaName with
                    | Some schema -> marten.DatabaseSchemaName <- schema
                    | None -> ()

                    marten.UseEventsDocuments() |> ignore)

            let mutable built = false

            try
                do! documentStore.Storage.ApplyAllConfiguredChangesToDatabaseAsync()

                let eventStore =
                    new MartenEventStore(documentStore, defaultArg options MartenEventStoreOptions.Default, true)

                built <- true
                return eventStore
            finally
                if not built then
                    documentStore.Dispose()
        }

    /// Makes sure the Events tables exist in the document store's database, as far as its
    /// `AutoCreateSchemaObjects` allows (with `AutoCreate.None` it only checks: apply the schema with
    /// Marten's own tools then).
    member _.EnsureStorageAsync(cancellationToken: CancellationToken) : Task =
        task {
            do! store.Storage.Database.EnsureStorageExistsAsync(typeof<EventDocument>, cancellationToken)
            do! store.Storage.Database.EnsureStorageExistsAsync(typeof<RequestDocument>, cancellationToken)
        }

    /// `CreateAsync`, blocking until the schema is applied: for tests and scripts.
    static member Create
        (connectionString: string, ?schemaName: string, ?options: MartenEventStoreOptions)
        : MartenEventStore =
        let options = defaultArg options MartenEventStoreOptions.Default

        match schemaName with
        | Some schema -> MartenEventStore.CreateAsync(connectionString, schema, options)
        | None -> MartenEventStore.CreateAsync(connectionString, options = options)
        |> _.GetAwaiter().GetResult()

    /// The Marten document store the store works in.
    member _.DocumentStore = store

    /// The store's settings.
    member _.Options = options

    /// Raises `WorkArrived` in this process (for the administration store's changes over the same documents).
    member internal _.Signal(signal: WorkSignal) = workArrived.Trigger signal

    /// Completes when the work listener is connected and listening; after a failure, the task read then
    /// completes once it listens again. Completed at once when the store does not listen.
    member _.WhenListening: Task = listening.Task

    /// Raised when the work listener's connection fails (it reconnects after a wait).
    [<CLIEvent>]
    member _.ListenerFailed: IEvent<exn> = listenerFailed.Publish

    /// Stops the listener, and disposes the document store if this store built it.
    member _.DisposeAsync() : ValueTask =
        if Interlocked.Exchange(&disposed, 1) = 1 then
            ValueTask.CompletedTask
        else
            ValueTask(
                task {
                    stopping.Cancel()
                    do! listener
                    stopping.Dispose()

                    if ownsStore then
                        store.Dispose()
                }
            )

    interface IAsyncDisposable with
        member this.DisposeAsync() = this.DisposeAsync()

    interface IDisposable with
        member this.Dispose() =
            this.DisposeAsync().AsTask().GetAwaiter().GetResult()

    interface IEventStore with

        member _.AppendAsync(events, cancellationToken) =
            StoreArguments.checkList (nameof events) events

            task {
                if events.IsEmpty then
                    return []
                else
                    use session = store.LightweightSession()
                    let stored = Outbox.append session events

                    try
                        do! session.SaveChangesAsync cancellationToken
                    with :? JasperFx.DocumentAlreadyExistsException as error ->
                        raise (
                            ArgumentException(
                                $"an event of the batch is already stored: %s{error.Message}",
                                nameof events,
                                error
                            )
                        )

                    workArrived.Trigger WorkSignal.EventsAppended
                    return stored
            }

        member _.ClaimEventsAsync(limit, now, leaseFor, cancellationToken) =
            StoreArguments.checkClaim limit leaseFor

            task {
                if limit = 0 then
                    return []
                else
                    let until = Backoff.addSaturating now leaseFor
                    use! connection = openConnection cancellationToken

                    use command =
                        Db.command
                            connection
                            claimEventsSql
                            [
                                Db.timestamp now
                                Db.timestamp until
                                Db.parameter NpgsqlDbType.Integer limit
                                Db.jsonTimestamp until
                            ]

                    use! reader = command.ExecuteReaderAsync cancellationToken
                    let! rows = Db.readTexts reader cancellationToken

                    return
                        rows
                        |> List.map (fun json ->
                            let document = Documents.ofJson<EventDocument> json

                            {
                                Event = Documents.toEvent document
                                Token = document.ClaimToken.Value
                                Until = document.ClaimUntil.Value
                            })
                        |> List.sortBy (fun claim -> struct (claim.Event.Timestamp, claim.Event.Id))
            }

        member _.CommitProcessingAsync(processed, cancellationToken) =
            StoreArguments.checkList (nameof processed) processed

            task {
                if processed.IsEmpty then
                    return []
                else
                    let requests =
                        processed
                        |> List.collect (fun item -> item.Requests |> List.map (fun request -> item.EventId, request))

                    let requestIds = HashSet<Guid>()

                    for _, request in requests do
                        if not (requestIds.Add request.Id) then
                            invalidArg (nameof processed) $"the batch holds request id %O{request.Id} more than once"

                    let parameters =
                        [
                            Db.array NpgsqlDbType.Uuid (processed |> Seq.map _.EventId |> Array.ofSeq)
                            Db.array NpgsqlDbType.Uuid (processed |> Seq.map _.Token |> Array.ofSeq)
                            Db.array
                                NpgsqlDbType.TimestampTz
                                (processed |> Seq.map (fun item -> Documents.utc item.ProcessedAt) |> Array.ofSeq)
                            Db.array
                                NpgsqlDbType.Text
                                (processed
                                 |> Seq.map (fun item -> Documents.toJson (Documents.utc item.ProcessedAt))
                                 |> Array.ofSeq)
                            Db.array NpgsqlDbType.Uuid (requests |> Seq.map fst |> Array.ofSeq)
                        ]
                        @ Db.requestArrays (requests |> List.map (snd >> Documents.ofRequest))
                        @ [ Db.parameter NpgsqlDbType.Varchar requestType ]

                    use! connection = openConnection cancellationToken
                    use command = Db.command connection commitProcessingSql parameters

                    let! results =
                        task {
                            try
                                use! reader = command.ExecuteReaderAsync cancellationToken
                                let results = ResizeArray()
                                let mutable ready = false
                                let! more = reader.ReadAsync cancellationToken
                                let mutable more = more

                                while more do
                                    ready <- ready || reader.GetBoolean 1

                                    results.Add(
                                        match reader.GetInt32 0 with
                                        | 0 -> Ok()
                                        | 1 -> Error ProcessError.EventNotFound
                                        | 2 -> Error ProcessError.AlreadyProcessed
                                        | 3 -> Error ProcessError.StaleClaim
                                        | other -> invalidOp $"unknown result %d{other} from the commit statement"
                                    )

                                    let! next = reader.ReadAsync cancellationToken
                                    more <- next

                                if ready then
                                    workArrived.Trigger WorkSignal.RequestsReady

                                return List.ofSeq results
                            with :? PostgresException as error when error.SqlState = PostgresErrorCodes.UniqueViolation ->
                                return
                                    raise (
                                        ArgumentException(
                                            $"a request of the batch is already stored: %s{error.MessageText}",
                                            nameof processed,
                                            error
                                        )
                                    )
                        }

                    return results
            }

        member _.ReleaseEventsAsync(claims, cancellationToken) =
            StoreArguments.checkList (nameof claims) claims

            task {
                if not claims.IsEmpty then
                    use! connection = openConnection cancellationToken

                    use command =
                        Db.command
                            connection
                            releaseEventsSql
                            [
                                Db.array NpgsqlDbType.Uuid (claims |> Seq.map _.Event.Id |> Array.ofSeq)
                                Db.array NpgsqlDbType.Uuid (claims |> Seq.map _.Token |> Array.ofSeq)
                            ]

                    let! _ = command.ExecuteNonQueryAsync cancellationToken
                    ()
            }

        member _.ClaimRequestsAsync(limit, now, leaseFor, cancellationToken) =
            StoreArguments.checkClaim limit leaseFor

            task {
                let until = Backoff.addSaturating now leaseFor
                use! connection = openConnection cancellationToken
                use batch = new NpgsqlBatch(connection)

                Db.batchCommand
                    recoverRequestsSql
                    [
                        Db.timestamp now
                        Db.jsonTimestamp now
                        Db.parameter NpgsqlDbType.Integer options.MaxRecoveredPerClaim
                        Db.parameter NpgsqlDbType.Text HandlerRequest.LeaseExpiredError
                    ]
                |> batch.BatchCommands.Add

                Db.batchCommand
                    claimRequestsSql
                    [
                        Db.timestamp now
                        Db.timestamp until
                        Db.jsonTimestamp until
                        Db.parameter NpgsqlDbType.Integer limit
                    ]
                |> batch.BatchCommands.Add

                use! reader = batch.ExecuteReaderAsync cancellationToken
                let! recovered = Db.readTexts reader cancellationToken
                let! _ = reader.NextResultAsync cancellationToken
                let! claimed = Db.readTexts reader cancellationToken

                return
                    {
                        Claimed = claimed |> List.map toRequest |> List.sortBy HandlerRequest.runOrder
                        Recovered = recovered |> List.map toRequest |> List.sortBy HandlerRequest.runOrder
                    }
            }

        member _.RecordOutcomesAsync(outcomes, cancellationToken) =
            StoreArguments.checkList (nameof outcomes) outcomes

            task {
                let indexed = List.indexed outcomes

                let inTransaction (outcome: OutcomeWrite) =
                    match outcome.Transaction with
                    | Some(:? MartenHandlerTransaction as transaction) when
                        (transaction :> IHandlerTransaction).HasChanges
                        ->
                        transaction.Opened |> Option.map (fun session -> transaction, session)
                    | Some(:? MartenHandlerTransaction) -> None
                    | Some other ->
                        invalidArg
                            (nameof outcomes)
                            $"a transaction of another store (%s{other.GetType().FullName}) cannot be committed here"
                    | None -> None

                let transactional, plain =
                    indexed
                    |> List.map (fun (index, outcome) -> index, outcome, inTransaction outcome)
                    |> List.partition (fun (_, _, session) -> session.IsSome)

                let! plainResults =
                    recordPlain (plain |> List.map (fun (_, outcome, _) -> outcome)) cancellationToken

                let results = Array.zeroCreate<Result<unit, RequestError>> outcomes.Length

                for (index, _, _), result in List.zip plain plainResults do
                    results[index] <- result

                for index, outcome, session in transactional do
                    match session with
                    | Some(transaction, session) ->
                        let! result = recordInTransaction outcome transaction session cancellationToken
                        results[index] <- result
                    | None -> ()

                return List.ofArray results
            }

        member _.RenewLeasesAsync(renewals, until, cancellationToken) =
            StoreArguments.checkList (nameof renewals) renewals

            task {
                if renewals.IsEmpty then
                    return []
                else
                    use! connection = openConnection cancellationToken

                    use command =
                        Db.command
                            connection
                            renewLeasesSql
                            [
                                Db.array NpgsqlDbType.Uuid (renewals |> Seq.map fst |> Array.ofSeq)
                                Db.array NpgsqlDbType.Uuid (renewals |> Seq.map snd |> Array.ofSeq)
                                Db.timestamp until
                                Db.jsonTimestamp until
                            ]

                    use! reader = command.ExecuteReaderAsync cancellationToken
                    return! readResults reader ignore cancellationToken
            }

        member _.BeginHandlerTransaction _request =
            Some(new MartenHandlerTransaction(store) :> IHandlerTransaction)

        member _.FindEventAsync(id, cancellationToken) =
            task {
                use session = store.QuerySession()
                let! document = session.LoadAsync<EventDocument>(id, cancellationToken)

                return
                    match box document with
                    | null -> None
                    | _ -> Some(Documents.toEvent document)
            }

        member _.FindRequestAsync(id, cancellationToken) =
            task {
                use session = store.QuerySession()
                let! document = session.LoadAsync<RequestDocument>(id, cancellationToken)

                return
                    match box document with
                    | null -> None
                    | _ -> Some(Documents.toRequest document)
            }

        member _.EventsAsync cancellationToken =
            pages eventPageSql toEvent cancellationToken

        member _.RequestsAsync cancellationToken =
            pages requestPageSql toRequest cancellationToken

        member _.StatsAsync(now, cancellationToken) =
            task {
                use! connection = openConnection cancellationToken
                use command = Db.command connection statsSql [ Db.timestamp now ]
                use! reader = command.ExecuteReaderAsync cancellationToken
                let! _ = reader.ReadAsync cancellationToken

                let time (ordinal: int) =
                    if reader.IsDBNull ordinal then
                        None
                    else
                        Some(reader.GetFieldValue<DateTimeOffset> ordinal)

                return
                    {
                        UnprocessedEvents = reader.GetInt64 0
                        OldestUnprocessedEvent = time 1
                        RunnableRequests = reader.GetInt64 2
                        OldestRunnableRequest = time 3
                        DeadRequests = reader.GetInt64 4
                    }
            }

        [<CLIEvent>]
        member _.WorkArrived = workArrived.Publish
