namespace Events.Marten

open System
open System.Collections.Generic
open System.Threading
open System.Threading.Tasks
open Events.Core
open global.Marten
open global.Marten.Storage
open Npgsql
open NpgsqlTypes

/// Parameters and readers for the store's SQL.
[<RequireQualifiedAccess>]
module internal Db =

    /// Opens a pooled read-write connection of the document store's database (disposed if opening fails).
    let openAsync (store: IDocumentStore) (cancellationToken: CancellationToken) =
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

    /// Opens a connection of the document store's database outside its pool (same server, credentials
    /// and TLS settings, `Pooling=false`): a connection held for as long as the store lives, as the
    /// listener's is, would otherwise take one of the pool's connections from the work.
    let openUnpooledAsync (store: IDocumentStore) (cancellationToken: CancellationToken) =
        task {
            use pooled = store.Storage.Database.CreateConnection ConnectionUsage.ReadWrite
            let settings = NpgsqlConnectionStringBuilder(pooled.ConnectionString)
            settings.Pooling <- false
            let connection = pooled.CloneWith(settings.ConnectionString)
            let mutable opened = false

            try
                do! connection.OpenAsync cancellationToken
                opened <- true
                return connection
            finally
                if not opened then
                    connection.Dispose()
        }

    /// The document with this id through a Marten query session, read as the core's type; none when absent.
    let findAsync
        (store: IDocumentStore)
        (read: 'document -> 'item)
        (id: Guid)
        (cancellationToken: CancellationToken)
        : Task<'item option> =
        task {
            use session = store.QuerySession()
            let! document = session.LoadAsync<'document>(id, cancellationToken)

            return
                match box document with
                | null -> None
                | _ -> Some(read document)
        }

    let parameter (dbType: NpgsqlDbType) (value: obj) =
        NpgsqlParameter(NpgsqlDbType = dbType, Value = (if isNull value then box DBNull.Value else value))

    let array (dbType: NpgsqlDbType) (values: 'T[]) =
        parameter (NpgsqlDbType.Array ||| dbType) values

    let timestamp (value: DateTimeOffset) =
        parameter NpgsqlDbType.TimestampTz (Documents.utc value)

    let interval (value: TimeSpan) = parameter NpgsqlDbType.Interval value

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

    /// Rows of (id, text), in order.
    let readIdTexts (reader: NpgsqlDataReader) (cancellationToken: CancellationToken) =
        task {
            let rows = ResizeArray<Guid * string>()

            let! more = reader.ReadAsync cancellationToken
            let mutable more = more

            while more do
                rows.Add(reader.GetGuid 0, reader.GetString 1)
                let! next = reader.ReadAsync cancellationToken
                more <- next

            return List.ofSeq rows
        }

    /// The columns a request write sets, for one request, as arrays (one element per request).
    /// The columns of request writes as arrays; `json` gives each row's JSON (its whole document for an
    /// insert, its changed fields for an outcome).
    let requestArraysWith (json: RequestDocument -> string) (documents: RequestDocument list) : NpgsqlParameter list =
        let column f = documents |> Seq.map f |> Array.ofSeq

        [
            array NpgsqlDbType.Uuid (column _.Id)
            array NpgsqlDbType.Text (column json)
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

    /// The columns of request inserts, whole documents, as arrays.
    let requestArrays (documents: RequestDocument list) =
        requestArraysWith Documents.toJson documents

    /// The columns of outcome writes, only the changed fields of each document, as arrays.
    let outcomeArrays (documents: RequestDocument list) =
        requestArraysWith Documents.outcomePatch documents

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
type internal PagedEnumerable<'item>
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
