namespace Events.Marten

open System
open System.Threading
open System.Threading.Tasks
open Events.Core
open global.Marten
open Npgsql
open NpgsqlTypes
open global.Marten.Storage
open JasperFx

/// The database has no Events tables in the schema asked for (the schema was never applied, or the
/// schema name is wrong).
type MissingSchemaException(table: string) =
    inherit Exception($"the database has no table %s{table}: apply the Events schema first (or check the schema name)")

    /// The qualified table name looked for.
    member _.Table = table

/// The administration port on Marten and PostgreSQL, over the same documents as `MartenEventStore`:
/// keyset-paged queries with an index for each filter, counts, and bulk changes in short transactions
/// that lock only rows no executor holds (`FOR UPDATE SKIP LOCKED`), so that they are safe while
/// executors run in other processes. A change that makes requests runnable notifies waiting workers
/// after its commit (through the database, and in this process through the event store it was made
/// from, if any).
[<Sealed>]
type MartenAdminStore private (store: IDocumentStore, ownsStore: bool, signal: WorkSignal -> unit) =

    do
        if isNull store then
            nullArg (nameof store)

    let layout = StoreLayout.ofOptions store.Options
    let tables = layout.Tables
    let lockRequestSql = Sql.lockRequest tables
    let writeRequestSql = Sql.writeRequest tables
    let deadCountSql = Sql.deadCount tables
    let deadPageSql = Sql.deadPage tables
    let deadEventNamesSql = Sql.deadEventNames tables
    let deadHandlerNamesSql = Sql.deadHandlerNames tables
    let countByHandlerSql = AdminSql.countByHandler tables
    let countLiveByHandlerSql = AdminSql.countLiveByHandler tables
    let overviewSql = AdminSql.overview tables
    let findManySql = AdminSql.findMany tables
    let lockManySql = AdminSql.lockMany tables
    let existingSql = AdminSql.existing tables
    let writeManySql = AdminSql.writeMany tables

    let openConnection (cancellationToken: CancellationToken) = Db.openAsync store cancellationToken

    let toRequest json =
        Documents.toRequest (Documents.ofJson<RequestDocument> json)

    let filterParameter (value: AdminSql.FilterValue) =
        match value with
        | AdminSql.FilterValue.Texts texts -> Db.array NpgsqlDbType.Text texts
        | AdminSql.FilterValue.Text text -> Db.parameter NpgsqlDbType.Text text
        | AdminSql.FilterValue.Time time -> Db.timestamp time
        | AdminSql.FilterValue.Id id -> Db.parameter NpgsqlDbType.Uuid id

    let clauseParameters (now: DateTimeOffset) (clause: AdminSql.Clause) =
        Db.timestamp now :: (clause.Values |> List.map filterParameter)

    let notifyAfterCommit (connection: NpgsqlConnection) (written: HandlerRequest list) cancellationToken =
        task {
            let runnable =
                written
                |> List.exists (fun request ->
                    match request.State with
                    | RequestState.Runnable _ -> true
                    | RequestState.Running _
                    | RequestState.Completed _
                    | RequestState.Dead
                    | RequestState.Canceled _ -> false)

            if runnable then
                // Sent at once, not debounced: a command-line process may exit right after.
                use notify =
                    Db.command
                        connection
                        Sql.Notify
                        [
                            Db.parameter NpgsqlDbType.Text layout.Channel
                            Db.array NpgsqlDbType.Text [| Sql.RequestsPayload |]
                        ]

                let! _ = notify.ExecuteNonQueryAsync(cancellationToken: CancellationToken)
                signal WorkSignal.RequestsReady
        }

    /// An administration store over a Marten document store configured with `UseEventsDocuments`. The
    /// document store stays the caller's.
    new(store: IDocumentStore) = new MartenAdminStore(store, false, ignore)

    /// An administration store over the same documents as an event store.
    new(eventStore: MartenEventStore) =
        if isNull (box eventStore) then
            nullArg (nameof eventStore)

        new MartenAdminStore(eventStore.DocumentStore, false, eventStore.Signal)

    /// Connects to the database of the connection string, checks that the Events tables exist in
    /// `schemaName` (default "public") without changing anything, and returns a store that owns its
    /// document store. Fails with `MissingSchemaException` when the tables are missing, and with
    /// `ArgumentException` for a connection string Npgsql cannot read.
    static member ConnectAsync
        (connectionString: string, schemaName: string, cancellationToken: CancellationToken)
        : Task<MartenAdminStore> =
        if String.IsNullOrWhiteSpace connectionString then
            nullArg (nameof connectionString)

        // Refuses an unreadable connection string here, with Npgsql's reason.
        NpgsqlConnectionStringBuilder(connectionString) |> ignore

        task {
            let documentStore =
                DocumentStore.For(fun (marten: StoreOptions) ->
                    marten.Connection connectionString
                    marten.AutoCreateSchemaObjects <- AutoCreate.None

                    if not (String.IsNullOrWhiteSpace schemaName) then
                        marten.DatabaseSchemaName <- schemaName

                    marten.UseEventsDocuments() |> ignore)

            let admin = new MartenAdminStore(documentStore, true, ignore)
            let mutable ok = false

            try
                do! admin.CheckSchemaAsync cancellationToken
                ok <- true
                return admin
            finally
                if not ok then
                    (admin :> IDisposable).Dispose()
        }

    /// Fails with `MissingSchemaException` unless both Events tables exist.
    member _.CheckSchemaAsync(cancellationToken: CancellationToken) : Task =
        task {
            use! connection = openConnection cancellationToken

            for table in [ tables.Events; tables.Requests ] do
                use command =
                    Db.command connection AdminSql.TableExists [ Db.parameter NpgsqlDbType.Text table ]

                let! exists = command.ExecuteScalarAsync cancellationToken

                match exists with
                | :? bool as true -> ()
                | _ -> raise (MissingSchemaException table)
        }

    /// Runs `SELECT 1`: fails when the database cannot be reached.
    member _.ProbeAsync(cancellationToken: CancellationToken) : Task =
        task {
            use! connection = openConnection cancellationToken
            use command = Db.command connection Sql.Probe []
            let! _ = command.ExecuteScalarAsync cancellationToken
            ()
        }

    /// The document store the administration store works in.
    member _.DocumentStore = store

    interface IDisposable with
        member _.Dispose() =
            if ownsStore then
                store.Dispose()

    interface IAdminStore with
        member _.QueryRequestsAsync(filter, now, after, limit, cancellationToken) =
            let filter = RequestFilter.validate filter
            RequestFilter.checkLimit limit

            task {
                if limit = 0 then
                    return { Requests = []; Next = None }
                else
                    let clause = AdminSql.where filter after
                    use! connection = openConnection cancellationToken

                    use command =
                        Db.command
                            connection
                            (AdminSql.page tables clause)
                            (clauseParameters now clause @ [ Db.parameter NpgsqlDbType.Integer (limit + 1) ])

                    use! reader = command.ExecuteReaderAsync cancellationToken
                    let! texts = Db.readTexts reader cancellationToken
                    let rows = texts |> List.map toRequest
                    let page = List.truncate limit rows

                    return
                        {
                            Requests = page
                            Next =
                                if rows.Length > limit then
                                    Some(RequestCursor.ofRequest (List.last page))
                                else
                                    None
                        }
            }

        member _.CountRequestsAsync(filter, now, cancellationToken) =
            let filter = RequestFilter.validate filter

            task {
                let clause = AdminSql.where filter None
                use! connection = openConnection cancellationToken

                use command =
                    Db.command connection (AdminSql.count tables clause) (clauseParameters now clause)

                let! count = command.ExecuteScalarAsync cancellationToken
                return Convert.ToInt64 count
            }

        member _.CountByHandlerAsync(now, includeFinished, cancellationToken) =
            task {
                use! connection = openConnection cancellationToken

                use command =
                    Db.command
                        connection
                        (if includeFinished then
                             countByHandlerSql
                         else
                             countLiveByHandlerSql)
                        [ Db.timestamp now ]

                use! reader = command.ExecuteReaderAsync cancellationToken
                let rows = ResizeArray()
                let! more = reader.ReadAsync cancellationToken
                let mutable more = more

                while more do
                    let raw = reader.GetString 0

                    let name =
                        match HandlerName.TryCreate raw with
                        | Ok name -> name
                        | Error error ->
                            raise (CorruptDocumentException(Guid.Empty, $"a request's handler name: %s{error.Message}"))

                    rows.Add
                        {
                            HandlerName = name
                            Status = RequestStatus.all[reader.GetInt32 1]
                            Count = reader.GetInt64 2
                        }

                    let! next = reader.ReadAsync cancellationToken
                    more <- next

                return
                    rows
                    |> Seq.sortBy (fun count -> count.HandlerName, List.findIndex ((=) count.Status) RequestStatus.all)
                    |> List.ofSeq
            }

        member _.OverviewAsync(now, since, cancellationToken) =
            task {
                use! connection = openConnection cancellationToken

                use command =
                    Db.command connection overviewSql [ Db.timestamp now; Db.timestamp since ]

                use! reader = command.ExecuteReaderAsync cancellationToken
                let rows = ResizeArray()
                let! more = reader.ReadAsync cancellationToken
                let mutable more = more

                while more do
                    let name =
                        match HandlerName.TryCreate(reader.GetString 0) with
                        | Ok name -> name
                        | Error error ->
                            raise (CorruptDocumentException(Guid.Empty, $"a request's handler name: %s{error.Message}"))

                    let row =
                        {
                            HandlerName = name
                            Runnable = reader.GetInt64 1
                            BackingOff = reader.GetInt64 2
                            Running = reader.GetInt64 3
                            Dead = reader.GetInt64 4
                            CompletedSince = reader.GetInt64 5
                            OldestRunnable =
                                if reader.IsDBNull 6 then
                                    None
                                else
                                    Some(reader.GetFieldValue<DateTimeOffset> 6)
                        }

                    if row.Runnable + row.BackingOff + row.Running + row.Dead + row.CompletedSince > 0L then
                        rows.Add row

                    let! next = reader.ReadAsync cancellationToken
                    more <- next

                return rows |> Seq.sortBy _.HandlerName |> List.ofSeq
            }

        member _.FindRequestsAsync(ids, cancellationToken) =
            StoreArguments.checkList (nameof ids) ids

            task {
                use! connection = openConnection cancellationToken

                use command =
                    Db.command connection findManySql [ Db.array NpgsqlDbType.Uuid (Array.ofList ids) ]

                use! reader = command.ExecuteReaderAsync cancellationToken
                let! texts = Db.readTexts reader cancellationToken
                let found = texts |> List.map toRequest |> List.map (fun r -> r.Id, r) |> Map.ofList
                return ids |> List.distinct |> List.choose (fun id -> Map.tryFind id found)
            }

        member _.FindEventAsync(id, cancellationToken) =
            Db.findAsync store Documents.toEvent id cancellationToken

        member _.UpdateRequestsAsync(ids, transition, cancellationToken) =
            StoreArguments.checkList (nameof ids) ids

            if isNull (box transition) then
                nullArg (nameof transition)

            task {
                let idArray = ids |> List.distinct |> Array.ofList
                use! connection = openConnection cancellationToken
                let results = Collections.Generic.Dictionary<Guid, BulkItemResult>()
                let written = ResizeArray<HandlerRequest>()

                do!
                    task {
                        use! transaction = connection.BeginTransactionAsync cancellationToken

                        use lockCommand =
                            Db.command connection lockManySql [ Db.array NpgsqlDbType.Uuid idArray ]

                        let! locked =
                            task {
                                use! reader = lockCommand.ExecuteReaderAsync cancellationToken
                                return! Db.readTexts reader cancellationToken
                            }

                        for json in locked do
                            let request = toRequest json

                            match transition request with
                            | Error error -> results[request.Id] <- BulkItemResult.Refused error
                            | Ok next when next.Id <> request.Id ->
                                invalidOp $"the transition changed the request's id from %O{request.Id} to %O{next.Id}"
                            | Ok next ->
                                results[request.Id] <- BulkItemResult.Updated next
                                written.Add next

                        if written.Count > 0 then
                            use write =
                                Db.command
                                    connection
                                    writeManySql
                                    (Db.requestArrays (written |> Seq.map Documents.ofRequest |> List.ofSeq))

                            let! _ = write.ExecuteNonQueryAsync cancellationToken
                            ()

                        // Which of the others exist (held by another transaction) and which do not.
                        if results.Count < idArray.Length then
                            use existing =
                                Db.command connection existingSql [ Db.array NpgsqlDbType.Uuid idArray ]

                            use! reader = existing.ExecuteReaderAsync cancellationToken
                            let! more = reader.ReadAsync cancellationToken
                            let mutable more = more

                            while more do
                                let id = reader.GetGuid 0

                                if not (results.ContainsKey id) then
                                    results[id] <- BulkItemResult.Locked

                                let! next = reader.ReadAsync cancellationToken
                                more <- next

                        do! transaction.CommitAsync cancellationToken
                    }

                // After the commit: no NOTIFY inside a writing transaction.
                do! notifyAfterCommit connection (List.ofSeq written) cancellationToken

                return
                    ids
                    |> List.map (fun id ->
                        match results.TryGetValue id with
                        | true, result -> result
                        | false, _ -> BulkItemResult.NotFound)
            }

        member _.DeadRequestsAsync(query, cancellationToken) =
            let query = DeadRequestQuery.validate query

            task {
                let filters () =
                    [
                        Db.array NpgsqlDbType.Text (query.EventNames |> Seq.map _.Value |> Array.ofSeq)
                        Db.array NpgsqlDbType.Text (query.HandlerNames |> Seq.map _.Value |> Array.ofSeq)
                    ]

                use! connection = openConnection cancellationToken
                use batch = new NpgsqlBatch(connection)
                batch.BatchCommands.Add(Db.batchCommand deadCountSql (filters ()))

                batch.BatchCommands.Add(
                    Db.batchCommand
                        deadPageSql
                        (filters ()
                         @ [
                             Db.parameter NpgsqlDbType.Integer query.Limit
                             Db.parameter NpgsqlDbType.Integer query.Offset
                         ])
                )

                use! reader = batch.ExecuteReaderAsync cancellationToken
                let! _ = reader.ReadAsync cancellationToken
                let total = reader.GetInt64 0
                let! _ = reader.NextResultAsync cancellationToken
                let! page = Db.readTexts reader cancellationToken

                return
                    {
                        Total = total
                        Requests = page |> List.map toRequest
                    }
            }

        member _.DeadRequestNamesAsync cancellationToken =
            task {
                use! connection = openConnection cancellationToken
                use batch = new NpgsqlBatch(connection)
                batch.BatchCommands.Add(Db.batchCommand deadEventNamesSql [])
                batch.BatchCommands.Add(Db.batchCommand deadHandlerNamesSql [])
                use! reader = batch.ExecuteReaderAsync cancellationToken
                let! eventNames = Db.readTexts reader cancellationToken
                let! _ = reader.NextResultAsync cancellationToken
                let! handlerNames = Db.readTexts reader cancellationToken

                let check (make: string -> Result<'T, NameError>) (raw: string) =
                    match make raw with
                    | Ok name -> name
                    | Error error ->
                        raise (CorruptDocumentException(Guid.Empty, $"a dead request's name: %s{error.Message}"))

                return
                    eventNames |> List.map (check EventName.TryCreate) |> List.sort,
                    handlerNames |> List.map (check HandlerName.TryCreate) |> List.sort
            }

        member _.UpdateRequestAsync(id, transition, cancellationToken) =
            if isNull (box transition) then
                nullArg (nameof transition)

            task {
                use! connection = openConnection cancellationToken
                use! transaction = connection.BeginTransactionAsync cancellationToken

                use read =
                    Db.command connection lockRequestSql [ Db.parameter NpgsqlDbType.Uuid id ]

                let! json = read.ExecuteScalarAsync cancellationToken

                match json with
                | :? string as json ->
                    match transition (toRequest json) with
                    | Error error -> return Error(AdminError.Refused error)
                    | Ok next when next.Id <> id ->
                        return invalidOp $"the transition changed the request's id from %O{id} to %O{next.Id}"
                    | Ok next ->
                        use write =
                            Db.command
                                connection
                                writeRequestSql
                                (Db.parameter NpgsqlDbType.Uuid id :: Db.requestValues (Documents.ofRequest next))

                        let! _ = write.ExecuteNonQueryAsync cancellationToken
                        do! transaction.CommitAsync cancellationToken
                        // After the commit: no NOTIFY inside a writing transaction.
                        do! notifyAfterCommit connection [ next ] cancellationToken
                        return Ok next
                | _ -> return Error(AdminError.RequestNotFound id)
            }
