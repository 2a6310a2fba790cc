/// Engine settings: every error reported at once, and telemetry prefixes OpenTelemetry accepts.
module Events.Tests.EngineOptionsTests

open System
open System.Collections.Generic
open Microsoft.Extensions.Logging.Abstractions
open Expecto
open OpenTelemetry
open OpenTelemetry.Metrics
open Events.Core

/// The message of the ArgumentException a scheduler with these settings is refused with, if refused.
let private refusal (processor: ProcessorOptions) (executor: ExecutorOptions) (scheduler: SchedulerOptions) =
    try
        new Scheduler(
            InMemoryStore(),
            Configuration.empty,
            processor,
            executor,
            scheduler,
            NullLogger.Instance,
            TimeProvider.System
        )
        |> ignore

        None
    with :? ArgumentException as error ->
        Some error.Message

/// The names of the metrics exported for instruments made with this prefix.
let private exportedNames (prefix: string) =
    let metrics = List<Metric>()

    use provider =
        Sdk.CreateMeterProviderBuilder().AddMeter(Telemetry.SourceName).AddInMemoryExporter(metrics).Build()

    use instruments =
        new Instruments(prefix, (fun () -> None), (fun () -> DateTimeOffset.UtcNow))

    instruments.EventsProcessed.Add(1L)
    provider.ForceFlush() |> ignore

    metrics
    |> Seq.map _.Name
    |> Seq.filter (fun name -> name.StartsWith(prefix + ".events.processed"))
    |> List.ofSeq

let tests =
    testList
        "EngineOptions"
        [
            testCase "every invalid engine setting is reported at once: workers, limits and the interval"
            <| fun () ->
                let message =
                    refusal
                        { ProcessorOptions.Default with
                            Workers = 0
                            Limit = -1
                        }
                        { ExecutorOptions.Default with
                            Workers = 0
                            Limit = -1
                        }
                        { SchedulerOptions.Default with
                            Interval = TimeSpan.Zero
                        }

                Expect.isSome message "the settings are refused"

                for part in
                    [
                        "processor Workers must be at least 1, got 0"
                        "processor Limit must be at least 1, got -1"
                        "executor Workers must be at least 1, got 0"
                        "executor Limit must be at least 1, got -1"
                        "scheduler Interval must be positive"
                    ] do
                    Expect.stringContains message.Value part $"the one message names %s{part}"

            testCase "a telemetry prefix OpenTelemetry would refuse is refused with a message that says why"
            <| fun () ->
                for prefix, why in
                    [
                        "bad prefix!", "character 3 (U+0020)"
                        "1app", "must start with an ASCII letter"
                        "app.é", "character 4 (U+00E9)"
                        String('a', 226), "at most 225"
                    ] do
                    match
                        refusal
                            ProcessorOptions.Default
                            ExecutorOptions.Default
                            { SchedulerOptions.Default with
                                TelemetryPrefix = prefix
                            }
                    with
                    | Some message ->
                        Expect.stringContains message "telemetry prefix" $"%A{prefix} is refused as a telemetry prefix"
                        Expect.stringContains message why $"the message says why %A{prefix} is refused"
                    | None -> failtest $"%A{prefix} was accepted"

            testCase "the prefixes the rule accepts make instruments OpenTelemetry exports, up to the longest"
            <| fun () ->
                for prefix in [ "app"; "my.app-1/x_y"; "A"; String('a', 225) ] do
                    Expect.isNone (EngineOptions.prefixProblem prefix) $"%A{prefix} is accepted"

                    Expect.equal
                        (exportedNames prefix)
                        [ prefix + ".events.processed.successes" ]
                        $"with %A{prefix} the counter is exported"

                Expect.isNone (EngineOptions.prefixProblem "") "no prefix is accepted"
                Expect.isSome (EngineOptions.prefixProblem null) "a null prefix is refused"

            testCase "a refused prefix is one OpenTelemetry drops: the rule matches the SDK"
            <| fun () ->
                for prefix in [ "bad prefix!"; "1app" ] do
                    Expect.isSome (EngineOptions.prefixProblem prefix) $"%A{prefix} is refused by the rule"
                    Expect.isEmpty (exportedNames prefix) $"and the SDK exports nothing under %A{prefix}"
        ]
