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

/// The store port on Marten and PostgreSQL: events and handler requests are Marten documents (see
/// `UseEventsDocuments`); the hot paths (claims, fan-out commits, outcomes) are single SQL statements
/// over their duplicated columns and partial indexes, safe for many processes sharing the database
/// (`FOR UPDATE SKIP LOCKED`, fencing tokens). New work raises `WorkArrived` in this process as soon as
/// it is committed, and in every process through LISTEN/NOTIFY sent after the commit, debounced (see
/// `Wakeups`; this process may hear it twice).
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

        if isNull (box options.Time) then
            invalidArg (nameof options) "Time must be a TimeProvider (TimeProvider.System by default)"

        // A pool too small to work is refused now, not found by a store that stalls.
        let poolSize =
            try
                use connection = store.Storage.Database.CreateConnection()
                let settings = NpgsqlConnectionStringBuilder(connection.ConnectionString)
                if settings.Pooling then Some settings.MaxPoolSize else None
            with _ ->
                None

        match poolSize with
        | Some size when size < MartenEventStore.MinimumPoolSize ->
            invalidArg
                (nameof store)
                $"the connection pool allows %d{size} connection(s) (Maximum Pool Size): the Events store needs at least %d{MartenEventStore.MinimumPoolSize} at once (a claim and an outcome write; its listener has a connection of its own); raise Maximum Pool Size"
        | _ -> ()

    let layout = StoreLayout.ofOptions store.Options
    let tables = layout.Tables
    let requestType = typeof<RequestDocument>.FullName
    let workArrived = Event<WorkSignal>()
    let itemsSetAside = Event<SetAsideItem list>()
    let wakeups = Wakeups.For store
    let heard = wakeups.Local.Subscribe workArrived.Trigger

    let mutable disposed = 0
    let mutable schemaReady = false
    let schemaGate = new SemaphoreSlim(1, 1)

    /// The Events tables, created on first use as Marten creates any document's tables (under the
    /// document store's AutoCreateSchemaObjects), on every path: with or without the generic host. A
    /// failure (the database is down) is retried by the next use.
    let ensureSchema (cancellationToken: CancellationToken) =
        task {
            if not (Volatile.Read(&schemaReady)) then
                do! schemaGate.WaitAsync cancellationToken

                try
                    if not schemaReady then
                        do! store.Storage.Database.EnsureStorageExistsAsync(typeof<EventDocument>, cancellationToken)
                        do! store.Storage.Database.EnsureStorageExistsAsync(typeof<RequestDocument>, cancellationToken)
                        Volatile.Write(&schemaReady, true)
                finally
                    schemaGate.Release() |> ignore
        }

    // The store's own SQL, built once.
    let claimEventsSql = Sql.claimEvents tables
    let releaseEventsSql = Sql.releaseEvents tables
    let commitProcessingSql = Sql.commitProcessing tables
    let recoverRequestsSql = Sql.recoverRequests tables
    let claimRequestsSql = Sql.claimRequests tables
    let recordOutcomesSql = Sql.recordOutcomes tables
    let renewLeasesSql = Sql.renewLeases tables
    let statsSql = Sql.stats tables
    let selectByKeysSql = Deduplication.selectByKeys tables.Events
    let eventPageSql = Sql.pageAfter tables.Events
    let requestPageSql = Sql.pageAfter tables.Requests

    let openConnection (cancellationToken: CancellationToken) =
        task {
            do! ensureSchema cancellationToken
            return! Db.openAsync store cancellationToken
        }

    /// The time a claim judges leases by: the caller's, or none (the database's clock).
    let clockNow (now: DateTimeOffset) =
        if options.DatabaseClock then
            Db.parameter NpgsqlDbType.TimestampTz null
        else
            Db.timestamp now

    let setAsideEventsSql = Sql.setAsideEvents tables
    let setAsideRequestsSql = Sql.setAsideRequests tables

    let toEvent json =
        Documents.toEvent (Documents.ofJson<EventDocument> json)

    let toRequest json =
        Documents.toRequest (Documents.ofJson<RequestDocument> json)

    /// Reads claimed rows of (id, document); a row that cannot be read is set aside on its own (see
    /// `ISetAsideItems`) on the claim's connection, so the rows beside it go on.
    let readOrSetAside
        (connection: NpgsqlConnection)
        (kind: StoredItemKind)
        (rows: (Guid * string) list)
        (read': string -> 'item)
        (cancellationToken: CancellationToken)
        =
        task {
            let read = ResizeArray<'item>()
            let unreadable = ResizeArray<SetAsideItem>()

            for id, json in rows do
                try
                    read.Add(read' json)
                with error ->
                    unreadable.Add
                        {
                            Kind = kind
                            Id = id
                            Reason = HandlerRequest.storable error.Message
                            Stored = json
                        }

            if unreadable.Count > 0 then
                let sql =
                    match kind with
                    | StoredItemKind.Event -> setAsideEventsSql
                    | StoredItemKind.Request -> setAsideRequestsSql

                use command =
                    Db.command
                        connection
                        sql
                        [
                            Db.array NpgsqlDbType.Uuid (unreadable |> Seq.map _.Id |> Array.ofSeq)
                            Db.array NpgsqlDbType.Text (unreadable |> Seq.map _.Reason |> Array.ofSeq)
                        ]

                let! _ = command.ExecuteNonQueryAsync cancellationToken
                itemsSetAside.Trigger(List.ofSeq unreadable)

            return List.ofSeq read
        }

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
                :: Db.outcomeArrays [ Documents.ofRequest outcome.Request ]

            use command = Db.command session.Connection recordOutcomesSql parameters
            let! reader = command.ExecuteReaderAsync cancellationToken
            let! _ = reader.ReadAsync cancellationToken
            let written = reader.GetBoolean 0
            let shape = reader.GetInt32 1
            let ready = reader.GetBoolean 2
            do! reader.DisposeAsync()

            if written then
                let! committed =
                    task {
                        try
                            do! session.SaveChangesAsync cancellationToken
                            return Ok()
                        with error ->
                            // Disposing the session rolls its transaction back, with the fenced write.
                            do! (transaction :> IHandlerTransaction).DisposeAsync()
                            return Error(RequestError.CommitFailed(HandlerRequest.storable error.Message))
                    }

                if committed.IsOk && ready then
                    wakeups.Signal WorkSignal.RequestsReady

                return committed
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
                    :: Db.outcomeArrays (outcomes |> List.map (fun outcome -> Documents.ofRequest outcome.Request))

                use command = Db.command connection recordOutcomesSql parameters
                use! reader = command.ExecuteReaderAsync cancellationToken
                let ready = ref false

                let! results =
                    readResults reader (fun row -> ready.Value <- ready.Value || row.GetBoolean 2) cancellationToken

                if ready.Value then
                    wakeups.Signal WorkSignal.RequestsReady

                return results
        }

    /// The listener's connection is its own, outside the pool the work uses.
    let openListenerConnection (cancellationToken: CancellationToken) =
        task {
            do! ensureSchema cancellationToken
            return! Db.openUnpooledAsync store cancellationToken
        }

    let listener =
        new WorkListener(openListenerConnection, layout.Channel, options, workArrived.Trigger)

    do
        if options.ListenForWork then
            listener.Start()

    /// The fewest pooled connections the store works with: a claim's and an outcome write's at once
    /// (the listener's connection is outside the pool).
    static member MinimumPoolSize = 2

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
    member _.WhenListening: Task =
        if options.ListenForWork then
            listener.WhenListening
        else
            Task.CompletedTask

    /// Raised when the work listener's connection fails (it reconnects after a wait).
    [<CLIEvent>]
    member _.ListenerFailed: IEvent<exn> = listener.Failed

    /// Stops the listener, and disposes the document store if this store built it.
    member _.DisposeAsync() : ValueTask =
        if Interlocked.Exchange(&disposed, 1) = 1 then
            ValueTask.CompletedTask
        else
            ValueTask(
                task {
                    heard.Dispose()
                    do! listener.StopAsync()

                    if ownsStore then
                        store.Dispose()
                }
            )

    interface IAsyncDisposable with
        member this.DisposeAsync() = this.DisposeAsync()

    interface IDisposable with
        member this.Dispose() =
            this.DisposeAsync().AsTask().GetAwaiter().GetResult()

    interface ISetAsideItems with
        member _.SetAsideAsync cancellationToken =
            task {
                use! connection = openConnection cancellationToken
                let items = ResizeArray<SetAsideItem>()

                for kind, table in [ StoredItemKind.Event, tables.Events; StoredItemKind.Request, tables.Requests ] do
                    use command = Db.command connection (Sql.setAsideRows table) []
                    use! reader = command.ExecuteReaderAsync cancellationToken
                    let! more = reader.ReadAsync cancellationToken
                    let mutable more = more

                    while more do
                        items.Add
                            {
                                Kind = kind
                                Id = reader.GetGuid 0
                                Reason = reader.GetString 1
                                Stored = reader.GetString 2
                            }

                        let! next = reader.ReadAsync cancellationToken
                        more <- next

                return List.ofSeq items
            }

        member _.SetItemAsideAsync(kind, id, reason, cancellationToken) =
            task {
                use! connection = openConnection cancellationToken

                let table, sql =
                    match kind with
                    | StoredItemKind.Event -> tables.Events, setAsideEventsSql
                    | StoredItemKind.Request -> tables.Requests, setAsideRequestsSql

                let reason = HandlerRequest.storable reason

                use read =
                    Db.command connection (Sql.findNotSetAside table) [ Db.parameter NpgsqlDbType.Uuid id ]

                let! stored = read.ExecuteScalarAsync cancellationToken

                match stored with
                | :? string as stored ->
                    use command =
                        Db.command
                            connection
                            sql
                            [ Db.array NpgsqlDbType.Uuid [| id |]; Db.array NpgsqlDbType.Text [| reason |] ]

                    let! changed = command.ExecuteNonQueryAsync cancellationToken

                    if changed > 0 then
                        itemsSetAside.Trigger
                            [
                                {
                                    Kind = kind
                                    Id = id
                                    Reason = reason
                                    Stored = stored
                                }
                            ]

                    return changed > 0
                | _ -> return false
            }

        member _.RestoreAsync(kind, id, cancellationToken) =
            task {
                use! connection = openConnection cancellationToken

                let table =
                    match kind with
                    | StoredItemKind.Event -> tables.Events
                    | StoredItemKind.Request -> tables.Requests

                use command =
                    Db.command connection (Sql.restore table) [ Db.parameter NpgsqlDbType.Uuid id ]

                let! changed = command.ExecuteNonQueryAsync cancellationToken
                return changed > 0
            }

        [<CLIEvent>]
        member _.ItemsSetAside = itemsSetAside.Publish

    interface IFanOutOnAppend with
        member _.UseFanOut fanOut =
            if isNull (box fanOut) then
                nullArg (nameof fanOut)

            Outbox.useFanOut store fanOut

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

                    // The session's commit signalled the events (see RaisedEventsListener).
                    let keys = stored |> List.choose _.DeduplicationKey |> List.distinct |> Array.ofList

                    if keys.Length = 0 then
                        return stored
                    else
                        // After the commit: a key another transaction held is committed by now.
                        use! connection = openConnection cancellationToken

                        use command =
                            Db.command connection selectByKeysSql [ Db.array NpgsqlDbType.Text keys ]

                        let storedByKey = Dictionary<string, Event>(StringComparer.Ordinal)

                        use! reader = command.ExecuteReaderAsync cancellationToken
                        let! more = reader.ReadAsync cancellationToken
                        let mutable more = more

                        while more do
                            storedByKey[reader.GetString 0] <- toEvent (reader.GetString 1)
                            let! next = reader.ReadAsync cancellationToken
                            more <- next

                        return Deduplication.resolve storedByKey stored
            }

        member _.ClaimEventsAsync(limit, now, leaseFor, cancellationToken) =
            StoreArguments.checkClaim limit leaseFor

            task {
                if limit = 0 then
                    return []
                else
                    use! connection = openConnection cancellationToken

                    use command =
                        Db.command
                            connection
                            claimEventsSql
                            [ clockNow now; Db.interval leaseFor; Db.parameter NpgsqlDbType.Integer limit ]

                    let! rows =
                        task {
                            use! reader = command.ExecuteReaderAsync cancellationToken
                            return! Db.readIdTexts reader cancellationToken
                        }

                    let! claims =
                        readOrSetAside
                            connection
                            StoredItemKind.Event
                            rows
                            (fun json ->
                                let document = Documents.ofJson<EventDocument> json

                                {
                                    Event = Documents.toEvent document
                                    Token = document.ClaimToken.Value
                                    Until = document.ClaimUntil.Value
                                })
                            cancellationToken

                    return
                        claims
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
                                    wakeups.Signal WorkSignal.RequestsReady

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
                use! connection = openConnection cancellationToken
                use batch = new NpgsqlBatch(connection)

                Db.batchCommand
                    recoverRequestsSql
                    [
                        clockNow now
                        Db.parameter NpgsqlDbType.Integer options.MaxRecoveredPerClaim
                        Db.parameter NpgsqlDbType.Text HandlerRequest.LeaseExpiredError
                    ]
                |> batch.BatchCommands.Add

                Db.batchCommand
                    claimRequestsSql
                    [ clockNow now; Db.interval leaseFor; Db.parameter NpgsqlDbType.Integer limit ]
                |> batch.BatchCommands.Add

                let! recovered, claimed =
                    task {
                        use! reader = batch.ExecuteReaderAsync cancellationToken
                        let! recovered = Db.readIdTexts reader cancellationToken
                        let! _ = reader.NextResultAsync cancellationToken
                        let! claimed = Db.readIdTexts reader cancellationToken
                        return recovered, claimed
                    }

                let! claimed =
                    readOrSetAside connection StoredItemKind.Request claimed toRequest cancellationToken

                let! recovered =
                    readOrSetAside connection StoredItemKind.Request recovered toRequest cancellationToken

                return
                    {
                        Claimed = claimed |> List.sortBy HandlerRequest.runOrder
                        Recovered = recovered |> List.sortBy HandlerRequest.runOrder
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
                                if options.DatabaseClock then
                                    Db.parameter NpgsqlDbType.TimestampTz null
                                else
                                    Db.timestamp until
                                Db.interval (max TimeSpan.Zero (until - options.Time.GetUtcNow()))
                            ]

                    use! reader = command.ExecuteReaderAsync cancellationToken
                    return! readResults reader ignore cancellationToken
            }

        member _.BeginHandlerTransaction _request =
            Some(new MartenHandlerTransaction(store) :> IHandlerTransaction)

        member _.FindEventAsync(id, cancellationToken) =
            Db.findAsync store Documents.toEvent id cancellationToken

        member _.FindRequestAsync(id, cancellationToken) =
            Db.findAsync store Documents.toRequest id cancellationToken

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
