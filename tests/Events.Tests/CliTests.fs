/// The `dotnet events` tool run as a process against a throwaway PostgreSQL: its commands, its JSON, its
/// errors and its exit codes.
module Events.Tests.CliTests

open System
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices
open System.Text.Json
open System.Threading
open System.Threading.Tasks
open Expecto
open Events.Core
open Events.Marten
open Events.Tests.StoreContractTests

let private server = ThrowawayPostgresTests.server
let private ct = CancellationToken.None

/// The tool's assembly, whose path the test project's build writes beside the tests.
let private cliAssembly =
    lazy
        (let pathFile = Path.Combine(AppContext.BaseDirectory, "events-cli.path")

         if not (File.Exists pathFile) then
             failwith $"%s{pathFile} is missing: build the tests with their project file, which builds the tool"

         File.ReadAllText(pathFile).Trim())

let private dotnetHost =
    lazy
        (let beside =
            Path.GetFullPath(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", "..", "dotnet"))

         if File.Exists beside then beside else "dotnet")

/// Runs the tool with the arguments; its exit code, standard output and standard error.
let private run (arguments: string list) =
    task {
        let info = ProcessStartInfo(dotnetHost.Value)
        info.ArgumentList.Add cliAssembly.Value

        for argument in arguments do
            info.ArgumentList.Add argument

        info.UseShellExecute <- false
        info.RedirectStandardOutput <- true
        info.RedirectStandardError <- true
        info.Environment.Remove "EVENTS_CONNECTION" |> ignore
        use child = Process.Start info
        let output = child.StandardOutput.ReadToEndAsync()
        let error = child.StandardError.ReadToEndAsync()
        do! child.WaitForExitAsync()
        let! output = output
        let! error = error
        return child.ExitCode, output, error
    }

/// A database with the Events schema and dead requests of two causes: `perCause` each.
let private seeded (perCause: int) =
    task {
        let! connectionString = server.Value.CreateDatabaseAsync()

        let! store =
            MartenEventStore.CreateAsync(
                connectionString,
                options =
                    { MartenEventStoreOptions.Default with
                        ListenForWork = false
                    }
            )

        let port = store :> IEventStore

        let items =
            [
                for i in 0 .. 2 * perCause - 1 ->
                    newEvent (t0 + TimeSpan.FromSeconds(float i)) "order.placed",
                    [ handler (if i % 2 = 0 then "charge" else "ship") 10 1 ]
            ]

        let! requests = fanOut port t0 items
        let indexOf = requests |> List.mapi (fun i r -> r.Id, i) |> Map.ofList
        let at = t0 + TimeSpan.FromMinutes 1.0
        let! claim = port.ClaimRequestsAsync(10000, at, TimeSpan.FromMinutes 1.0, ct)

        let outcomes =
            claim.Claimed
            |> List.map (fun claimed ->
                let error =
                    if indexOf[claimed.Id] % 2 = 0 then
                        $"card %O{Guid.NewGuid()} declined"
                    else
                        Attempt.PanicPrefix
                        + $"System.TimeoutException: carrier {indexOf[claimed.Id]} did not answer"

                outcomeOf (RequestCommand.Fail(tokenOf claimed, at, error, 0.5)) claimed)

        let! _ = port.RecordOutcomesAsync(outcomes, ct)
        do! store.DisposeAsync()
        return connectionString
    }

let tests =
    testSequenced
    <| testList
        "CLI"
        [
            testCaseTask "stats, list, show, event and triage read the database, as text and as JSON" (fun () ->
                task {
                    let! connection = seeded 5
                    let! code, output, error = run [ "stats"; "--connection"; connection ]
                    Expect.equal code 0 $"stats succeeds: %s{error}"
                    Expect.stringContains output "dead requests       10" "the dead count"
                    Expect.stringContains output "charge" "the per-handler table"

                    let! code, output, _ = run [ "stats"; "--connection"; connection; "--json" ]
                    Expect.equal code 0 "stats --json succeeds"
                    use stats = JsonDocument.Parse output

                    Expect.equal
                        (stats.RootElement.GetProperty("deadRequests").GetInt64())
                        10L
                        "the dead count in JSON"

                    let! code, output, _ =
                        run
                            [
                                "list"
                                "--connection"
                                connection
                                "--status"
                                "dead"
                                "--handler"
                                "charge"
                                "--limit"
                                "3"
                                "--json"
                            ]

                    Expect.equal code 0 "list succeeds"
                    use page = JsonDocument.Parse output
                    let requests = page.RootElement.GetProperty("requests")
                    Expect.equal (requests.GetArrayLength()) 3 "one page of 3"
                    let next = page.RootElement.GetProperty("next").GetString()

                    let! code, output, _ =
                        run
                            [
                                "list"
                                "--connection"
                                connection
                                "--status"
                                "dead"
                                "--handler"
                                "charge"
                                "--after"
                                next
                                "--json"
                            ]

                    Expect.equal code 0 "the next page"
                    use rest = JsonDocument.Parse output
                    Expect.equal (rest.RootElement.GetProperty("requests").GetArrayLength()) 2 "the rest"

                    let id = requests[0].GetProperty("id").GetString()
                    let! code, output, _ = run [ "show"; id; "--connection"; connection ]
                    Expect.equal code 0 "show succeeds"
                    Expect.stringContains output "declined" "the last error"

                    let eventId = requests[0].GetProperty("eventId").GetString()
                    let! code, output, _ = run [ "event"; eventId; "--connection"; connection ]
                    Expect.equal code 0 "event succeeds"
                    Expect.stringContains output "not fully handled" "its request is dead"

                    let! code, output, _ = run [ "triage"; "--connection"; connection; "--json" ]
                    Expect.equal code 0 "triage succeeds"
                    use groups = JsonDocument.Parse output
                    Expect.equal (groups.RootElement.GetArrayLength()) 2 "two causes"

                    let! code, _, error =
                        run [ "show"; string (Guid.NewGuid()); "--connection"; connection ]

                    Expect.equal code 1 "an unknown id exits 1"
                    Expect.stringContains error "no handler request" "and says so"
                })

            testCaseTask "re-execute and cancel by triage group, with a dry run first" (fun () ->
                task {
                    let! connection = seeded 4
                    let! _, output, _ = run [ "triage"; "--connection"; connection; "--json" ]
                    use groups = JsonDocument.Parse output

                    let timeout =
                        groups.RootElement.EnumerateArray()
                        |> Seq.find (fun g -> g.GetProperty("exceptionType").ValueKind = JsonValueKind.String)

                    let group = timeout.GetProperty("id").GetString()

                    let! code, output, _ =
                        run [ "cancel"; "--group"; group; "--dry-run"; "--connection"; connection ]

                    Expect.equal code 0 "the dry run succeeds"
                    Expect.stringContains output "dry run: 4 requests would change" "it counts the group"

                    let! code, output, _ =
                        run
                            [
                                "cancel"
                                "--group"
                                group
                                "--chunk"
                                "2"
                                "--connection"
                                connection
                                "--json"
                            ]

                    Expect.equal code 0 "the cancel succeeds"
                    use result = JsonDocument.Parse output
                    Expect.equal (result.RootElement.GetProperty("updated").GetInt64()) 4L "the group is canceled"

                    let! code, output, _ = run [ "re-execute"; "--connection"; connection; "--json" ]
                    Expect.equal code 0 "the re-execute succeeds"
                    use result = JsonDocument.Parse output

                    Expect.equal
                        (result.RootElement.GetProperty("updated").GetInt64())
                        4L
                        "the other dead ones run again"

                    let! _, output, _ = run [ "stats"; "--connection"; connection; "--json" ]
                    use stats = JsonDocument.Parse output
                    Expect.equal (stats.RootElement.GetProperty("deadRequests").GetInt64()) 0L "none is dead"
                    Expect.equal (stats.RootElement.GetProperty("runnableRequests").GetInt64()) 4L "four are runnable"
                })

            testCaseTask
                "a bad command line, connection string or schema gets a clear error and its exit code"
                (fun () ->
                    task {
                        let! code, _, error = run [ "frobnicate"; "--connection"; "Host=localhost" ]
                        Expect.equal code 2 "an unknown command exits 2"
                        Expect.stringContains error "unknown command" "and says so"

                        let! code, _, error = run [ "stats" ]
                        Expect.equal code 2 "no connection string exits 2"
                        Expect.stringContains error "no connection string" "and says so"

                        let! code, _, error =
                            run [ "stats"; "--connection"; "this is not a connection string" ]

                        Expect.equal code 3 "an unreadable connection string exits 3"
                        Expect.stringContains error "connection string is not valid" "and says so"

                        let! empty = server.Value.CreateDatabaseAsync()
                        let! code, _, error = run [ "stats"; "--connection"; empty ]
                        Expect.equal code 4 "a database without the schema exits 4"
                        Expect.stringContains error "apply the Events schema" "and says what to do"

                        let! connection = seeded 1

                        let! code, _, error =
                            run [ "stats"; "--connection"; connection; "--schema"; "elsewhere" ]

                        Expect.equal code 4 "the wrong schema exits 4"
                        Expect.stringContains error "elsewhere" "and names it"

                        let builder = Npgsql.NpgsqlConnectionStringBuilder(connection)
                        builder.Database <- "no_such_database"
                        let! code, _, error = run [ "stats"; "--connection"; builder.ConnectionString ]
                        Expect.equal code 3 "a missing database exits 3"
                        Expect.stringContains error "does not exist" "and says so"
                    })
        ]
