/// The throwaway PostgreSQL the store tests run on, and its own tests.
module Events.Tests.ThrowawayPostgresTests

open System
open System.IO
open System.Threading.Tasks
open Expecto
open Npgsql
open Events.Testing

/// One throwaway server for the whole run, started on first use and stopped when the process exits.
let server =
    lazy
        (let postgres = ThrowawayPostgres.StartAsync().GetAwaiter().GetResult()

         AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> postgres.DisposeAsync().AsTask().GetAwaiter().GetResult())

         postgres)

let private scalar (connectionString: string) (sql: string) =
    task {
        use connection = new NpgsqlConnection(connectionString)
        do! connection.OpenAsync()
        use command = new NpgsqlCommand(sql, connection)
        let! value = command.ExecuteScalarAsync()
        return value
    }

let private databaseExists (serverConnectionString: string) (name: string) =
    task {
        let! count =
            scalar serverConnectionString $"select count(*) from pg_database where datname = '%s{name}'"

        return unbox<int64> count = 1L
    }

/// The ThrowawayPostgres tests.
let tests =
    testList
        "ThrowawayPostgres"
        [
            testCase "without server binaries the failure says how to install them"
            <| fun () ->
                let missing =
                    Path.Combine(Path.GetTempPath(), "no-postgres-" + Guid.NewGuid().ToString "N")

                let error =
                    Expect.throwsC (fun () -> Processes.findBinariesIn "" missing |> ignore) (fun error ->
                        error.Message)

                Expect.stringContains error "apt-get install postgresql" "the message must say what to install"

            testCase "the newest installed version is picked"
            <| fun () ->
                let root = Directory.CreateTempSubdirectory "pg-versions-"

                try
                    for version in [ "9.6"; "15"; "16"; "not-a-version" ] do
                        let bin = Directory.CreateDirectory(Path.Combine(root.FullName, version, "bin"))
                        File.WriteAllText(Path.Combine(bin.FullName, "initdb"), "")
                        File.WriteAllText(Path.Combine(bin.FullName, "pg_ctl"), "")

                    let binaries = Processes.findBinariesIn "" root.FullName

                    Expect.equal
                        binaries.PgCtl
                        (Path.Combine(root.FullName, "16", "bin", "pg_ctl"))
                        "version 16 is the newest"
                finally
                    root.Delete true

            testTask "a server named by EVENTS_TEST_POSTGRES gets a fresh database, dropped on disposal" {
                let serverConnectionString = server.Value.ConnectionString

                let! (external: ThrowawayPostgres) =
                    ThrowawayPostgres.StartAsync serverConnectionString

                let name = NpgsqlConnectionStringBuilder(external.ConnectionString).Database
                Expect.stringStarts name "events_test_" "a fresh database is made"
                let! exists = databaseExists serverConnectionString name
                Expect.isTrue exists "the database exists while in use"
                let! (other: string) = external.CreateDatabaseAsync "events_other \"quoted\""
                let! answer = scalar other "select 42"
                Expect.equal (unbox<int> answer) 42 "a created database answers"
                do! external.DisposeAsync()
                let! stillThere = databaseExists serverConnectionString name
                Expect.isFalse stillThere "the database is dropped on disposal"
            }

            testTask "an own server restarts on the same port with its data, and is deleted on disposal" {
                let! (postgres: ThrowawayPostgres) = ThrowawayPostgres.StartAsync(null: string)
                let port = postgres.Port
                let! database = postgres.CreateDatabaseAsync "kept"
                let! _ = scalar database "create table t (x int); insert into t values (7); select 1"
                NpgsqlConnection.ClearAllPools()
                do! postgres.RestartAsync()
                Expect.equal postgres.Port port "the port is kept"
                let! value = scalar database "select x from t"
                Expect.equal (unbox<int> value) 7 "the data is kept"
                do! postgres.DisposeAsync()

                let! refused =
                    task {
                        try
                            let! _ = scalar database "select 1"
                            return false
                        with :? NpgsqlException ->
                            return true
                    }

                Expect.isTrue refused "the server is stopped on disposal"
            }
        ]
