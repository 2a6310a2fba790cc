/// The `dotnet events` tool: reads the command line, connects to the Events tables and runs one command
/// through the core's administration.
module Events.Cli.Program

open System
open System.Net.Sockets
open System.Threading
open System.Threading.Tasks
open Events.Core
open Events.Marten
open Npgsql

/// A command that found nothing or was refused (exit code 1).
exception private NotDoneException of string

let private ct = CancellationToken.None

let private print (text: string) = Console.Out.WriteLine text

let private connectAsync (invocation: Invocation) =
    match invocation.Connection with
    | None -> raise (UsageException "no connection string: pass --connection or set EVENTS_CONNECTION")
    | Some connection ->
        let schema = defaultArg invocation.Schema "public"
        MartenAdminStore.ConnectAsync(connection, schema, ct)

let private selection (invocation: Invocation) =
    let filter =
        if invocation.Filter.Statuses.IsEmpty then
            { invocation.Filter with
                Statuses = [ RequestStatus.Dead ]
            }
        else
            invocation.Filter

    {
        Filter = filter
        Fingerprint = invocation.Group
    }

let private bulkOptions (invocation: Invocation) =
    { Administration.defaultBulkOptions with
        ChunkSize = defaultArg invocation.Chunk Administration.defaultBulkOptions.ChunkSize
        DryRun = invocation.DryRun
        After = invocation.After
        Limit = invocation.Limit |> Option.map int64
    }

let private operandId (invocation: Invocation) (what: string) =
    match invocation.Operands with
    | [ text ] ->
        match Guid.TryParse text with
        | true, id -> id
        | _ -> raise (UsageException $"%s{what} takes a GUID, got \"%s{text}\"")
    | [] -> raise (UsageException $"%s{what} needs an id")
    | _ -> raise (UsageException $"%s{what} takes one id")

let private statsAsync (admin: MartenAdminStore) (invocation: Invocation) =
    task {
        let now = DateTimeOffset.UtcNow

        use eventStore =
            new MartenEventStore(
                admin.DocumentStore,
                { MartenEventStoreOptions.Default with
                    ListenForWork = false
                }
            )

        let! stats = (eventStore :> IEventStore).StatsAsync(now, ct)
        let! counts = (admin :> IAdminStore).CountByHandlerAsync(now, true, ct)

        let age (oldest: DateTimeOffset option) =
            oldest
            |> Option.map (fun t -> max 0.0 (now - t).TotalSeconds)
            |> Option.defaultValue 0.0

        if invocation.Json then
            print (
                Output.json (fun writer ->
                    writer.WriteStartObject()
                    writer.WriteString("at", now)
                    writer.WriteNumber("unprocessedEvents", stats.UnprocessedEvents)
                    writer.WriteNumber("oldestUnprocessedEventAgeSeconds", age stats.OldestUnprocessedEvent)
                    writer.WriteNumber("runnableRequests", stats.RunnableRequests)
                    writer.WriteNumber("oldestRunnableRequestAgeSeconds", age stats.OldestRunnableRequest)
                    writer.WriteNumber("deadRequests", stats.DeadRequests)
                    writer.WriteStartArray "byHandler"

                    for count in counts do
                        writer.WriteStartObject()
                        writer.WriteString("handlerName", count.HandlerName.Value)
                        writer.WriteString("status", RequestStatus.name count.Status)
                        writer.WriteNumber("count", count.Count)
                        writer.WriteEndObject()

                    writer.WriteEndArray()
                    writer.WriteEndObject())
            )
        else
            print $"unprocessed events  %d{stats.UnprocessedEvents} (oldest %.1f{age stats.OldestUnprocessedEvent}s)"
            print $"runnable requests   %d{stats.RunnableRequests} (oldest %.1f{age stats.OldestRunnableRequest}s)"
            print $"dead requests       %d{stats.DeadRequests}"
            print ""

            let header =
                RequestStatus.all
                |> List.map (fun s -> $"%12s{RequestStatus.name s}")
                |> String.concat ""

            print ((sprintf "%-24s" "handler") + header)

            for handler, rows in counts |> List.groupBy _.HandlerName do
                let cells =
                    RequestStatus.all
                    |> List.map (fun status ->
                        let count =
                            rows
                            |> List.tryFind (fun r -> r.Status = status)
                            |> Option.map _.Count
                            |> Option.defaultValue 0L

                        $"%12d{count}")
                    |> String.concat ""

                print $"%-24s{handler.Value}%s{cells}"

        return 0
    }

let private listAsync (admin: IAdminStore) (invocation: Invocation) =
    task {
        let now = DateTimeOffset.UtcNow
        let limit = defaultArg invocation.Limit 50

        let! page =
            Administration.queryAsync admin invocation.Filter now invocation.After limit ct

        if invocation.Json then
            print (
                Output.json (fun writer ->
                    writer.WriteStartObject()
                    writer.WriteStartArray "requests"

                    for request in page.Requests do
                        Output.writeRequest now writer request

                    writer.WriteEndArray()

                    match page.Next with
                    | Some cursor -> writer.WriteString("next", RequestCursor.format cursor)
                    | None -> writer.WriteNull "next"

                    writer.WriteEndObject())
            )
        else
            for request in page.Requests do
                print (Output.requestLine now request)

            match page.Next with
            | Some cursor -> print $"next page: --after %s{RequestCursor.format cursor}"
            | None -> print $"(%d{page.Requests.Length} requests, last page)"

        return 0
    }

let private showAsync (admin: IAdminStore) (invocation: Invocation) =
    task {
        let id = operandId invocation "show"
        let now = DateTimeOffset.UtcNow

        match! admin.FindRequestsAsync([ id ], ct) with
        | [ request ] ->
            if invocation.Json then
                print (Output.json (fun writer -> Output.writeRequest now writer request))
            else
                print (Output.requestText now request)

            return 0
        | _ -> return raise (NotDoneException $"no handler request has id %O{id}")
    }

let private eventAsync (admin: IAdminStore) (invocation: Invocation) =
    task {
        let id = operandId invocation "event"
        let now = DateTimeOffset.UtcNow

        match! Administration.eventDetailsAsync admin id now ct with
        | None -> return raise (NotDoneException $"no event has id %O{id}")
        | Some details ->
            if invocation.Json then
                print (
                    Output.json (fun writer ->
                        writer.WriteStartObject()
                        writer.WriteString("id", details.Event.Id)
                        writer.WriteString("name", details.Event.Name.Value)
                        writer.WriteString("timestamp", details.Event.Timestamp)
                        writer.WritePropertyName "data"
                        writer.WriteRawValue details.Event.Data.Json
                        writer.WriteBoolean("fullyHandled", details.FullyHandled)
                        writer.WriteStartArray "requests"

                        for request, _ in details.Requests do
                            Output.writeRequest now writer request

                        writer.WriteEndArray()
                        writer.WriteEndObject())
                )
            else
                let processed =
                    details.Event.ProcessedAt
                    |> Option.map (fun t -> t.ToString "u")
                    |> Option.defaultValue "not yet"

                print $"event %O{details.Event.Id} %s{details.Event.Name.Value}, processed %s{processed}"
                print $"data  %s{details.Event.Data.Json}"

                for request, _ in details.Requests do
                    print ("  " + Output.requestLine now request)

                print (
                    if details.FullyHandled then
                        "fully handled"
                    else
                        "not fully handled"
                )

            return 0
    }

let private triageAsync (admin: IAdminStore) (invocation: Invocation) =
    task {
        let now = DateTimeOffset.UtcNow
        let! groups = Administration.triageAsync admin invocation.Filter now ct

        if invocation.Json then
            print (
                Output.json (fun writer ->
                    writer.WriteStartArray()

                    for group in groups do
                        Output.writeGroup now writer group

                    writer.WriteEndArray())
            )
        else
            for group in groups do
                print (Output.groupText group)

            print $"(%d{groups.Length} groups, %d{groups |> List.sumBy _.Count} dead requests)"

        return 0
    }

let private bulkAsync (admin: IAdminStore) (command: BulkCommand) (invocation: Invocation) =
    task {
        let now = DateTimeOffset.UtcNow

        let report (progress: BulkProgress) =
            if not invocation.Json && not progress.Finished then
                Console.Error.WriteLine(Output.progressText false progress)

        let! result =
            Administration.bulkAsync admin (selection invocation) command now (bulkOptions invocation) report ct

        if invocation.Json then
            print (Output.json (fun writer -> Output.writeProgress writer result))
        else
            print (Output.progressText invocation.DryRun result)

        return 0
    }

let private canaryAsync (admin: IAdminStore) (invocation: Invocation) =
    task {
        let canaries = defaultArg invocation.Canaries 10
        let wait = defaultArg invocation.Wait (TimeSpan.FromMinutes 2.0)

        let! outcome =
            Administration.canaryAsync
                admin
                (selection invocation)
                canaries
                wait
                (TimeSpan.FromMilliseconds 500.0)
                (fun () -> DateTimeOffset.UtcNow)
                (fun delay token -> Task.Delay(delay, token))
                (bulkOptions invocation)
                ignore
                ct

        match outcome with
        | CanaryOutcome.Succeeded(ids, rest) ->
            print $"%d{ids.Length} canaries completed; the rest: %s{Output.progressText false rest}"
            return 0
        | CanaryOutcome.Failed requests ->
            print $"a canary failed again; the rest were left dead:"

            for request in requests do
                print ("  " + Output.requestLine DateTimeOffset.UtcNow request)

            return 1
        | CanaryOutcome.Undecided requests ->
            print $"the %d{requests.Length} canaries had not finished in %O{wait}; the rest were left dead"
            return 1
        | CanaryOutcome.NothingSelected ->
            print "nothing matched the selection"
            return 1
    }

let private runAsync (invocation: Invocation) : Task<int> =
    task {
        match invocation.Command with
        | "help" ->
            print Arguments.usage
            return 0
        | "stats"
        | "list"
        | "show"
        | "event"
        | "triage"
        | "re-execute"
        | "cancel"
        | "canary" as command ->
            use! admin = connectAsync invocation
            let port = admin :> IAdminStore

            match command with
            | "stats" -> return! statsAsync admin invocation
            | "list" -> return! listAsync port invocation
            | "show" -> return! showAsync port invocation
            | "event" -> return! eventAsync port invocation
            | "triage" -> return! triageAsync port invocation
            | "re-execute" -> return! bulkAsync port BulkCommand.ReExecute invocation
            | "cancel" -> return! bulkAsync port BulkCommand.Cancel invocation
            | _ -> return! canaryAsync port invocation
        | other -> return raise (UsageException $"unknown command \"%s{other}\"")
    }

let private fail (code: int) (message: string) =
    Console.Error.WriteLine $"error: %s{message}"
    code

let rec private classify (error: exn) : int =
    match error with
    | :? AggregateException as aggregate when aggregate.InnerExceptions.Count = 1 -> classify aggregate.InnerException
    | UsageException message -> fail 2 $"%s{message} (dotnet events help shows the usage)"
    | NotDoneException message -> fail 1 message
    | :? MissingSchemaException as missing -> fail 4 missing.Message
    | :? PostgresException as postgres when postgres.SqlState = "3D000" ->
        fail 3 $"cannot connect: the database does not exist (%s{postgres.MessageText})"
    | :? PostgresException as postgres when postgres.SqlState.StartsWith "28" ->
        fail 3 $"cannot connect: the server refused the login (%s{postgres.MessageText})"
    | :? NpgsqlException as npgsql -> fail 3 $"cannot connect to PostgreSQL: %s{npgsql.Message}"
    | :? SocketException as socket -> fail 3 $"cannot connect to PostgreSQL: %s{socket.Message}"
    | :? ArgumentException as argument when argument.StackTrace <> null && argument.StackTrace.Contains "Npgsql" ->
        fail 3 $"the connection string is not valid: %s{argument.Message}"
    | :? ArgumentException as argument -> fail 2 argument.Message
    | other -> fail 1 $"%s{other.GetType().Name}: %s{other.Message}"

[<EntryPoint>]
let main argv =
    try
        let invocation =
            Arguments.parse (fun name -> Environment.GetEnvironmentVariable name |> Option.ofObj) (List.ofArray argv)

        (runAsync invocation).GetAwaiter().GetResult()
    with error ->
        classify error
