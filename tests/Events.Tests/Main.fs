module Events.Tests.Main

open System
open System.IO
open Expecto
open Expecto.Impl

let all =
    testList "Events" [ NamesTests.tests; ThrowawayPostgresTests.tests; MartenStoreTests.tests ]

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
