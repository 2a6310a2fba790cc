module Events.Tests.Main

open System
open System.IO
open Expecto
open Expecto.Impl

/// Makes a fresh in-memory store.
let private inMemory () =
    System.Threading.Tasks.Task.FromResult(new Events.Core.InMemoryStore() :> Events.Core.IEventStore)

/// Makes a Marten store over a fresh database of the run's throwaway PostgreSQL.
let private marten () =
    task {
        let! store = MartenStoreTests.freshStore ()
        return store :> Events.Core.IEventStore
    }

/// Makes a Marten store judging leases by the database's clock, for suites in real time.
let private martenOnDatabaseClock () =
    task {
        let! store = MartenStoreTests.freshStoreOnDatabaseClock ()
        return store :> Events.Core.IEventStore
    }

/// The store contract works PostgreSQL less hard than memory: each model case makes a database.
let private martenContract =
    { StoreContractTests.defaultConfig with
        ModelCases = 40
        ConcurrentRequests = 1000
        ConcurrentEvents = 600
    }

let all =
    testList
        "Events"
        [
            NamesTests.tests
            EventDataTests.tests
            EventTests.tests
            BackoffTests.tests
            ConfigurationTests.tests
            HandlerRequestTests.tests
            AttemptTests.tests
            TriageTests.tests
            EngineOptionsTests.tests
            InMemoryStoreTests.tests
            DeduplicationTests.contract "memory" inMemory
            AdminStoreContractTests.adminContract "Admin contract on memory" inMemory
            EngineTests.engineSuite "memory" inMemory
            SchedulerTests.statusMachine
            SchedulerTests.schedulerSuite "memory" inMemory
            TelemetryTests.telemetrySuite "memory" inMemory
            ThrowawayPostgresTests.tests
            MartenStoreTests.tests
            DeduplicationTests.contract "marten" marten
            DeduplicationTests.martenTests
            StoreContractTests.storeContractWith martenContract "Store contract on marten" marten
            AdminStoreContractTests.adminContract "Admin contract on marten" marten
            AdminStoreContractTests.martenLockTests marten
            AdminStoreContractTests.martenIndexTests marten
            EngineTests.engineSuite "marten" marten
            SchedulerTests.schedulerSuite "marten" martenOnDatabaseClock
            TelemetryTests.telemetrySuite "marten" marten
            MultiProcessTests.tests
            CliTests.tests
        ]

/// Writes "passed failed" to the file named by EVENTS_TEST_COUNTS, for the test script to sum.
let private recordCounts (summary: TestRunSummary) =
    match Environment.GetEnvironmentVariable "EVENTS_TEST_COUNTS" with
    | null
    | "" -> ()
    | path ->
        let failed = summary.failed.Length + summary.errored.Length
        File.WriteAllText(path, $"%d{summary.passed.Length} %d{failed}")

[<EntryPoint>]
let main argv =
    let printer =
        { TestPrinters.defaultPrinter with
            summary =
                fun config summary ->
                    async {
                        recordCounts summary
                        do! TestPrinters.defaultPrinter.summary config summary
                    }
        }

    runTestsWithCLIArgs
        [
            CLIArguments.Printer printer
            CLIArguments.Colours 0
            CLIArguments.No_Spinner
        ]
        argv
        all
