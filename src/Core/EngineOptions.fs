namespace Events.Core

open System
open FsToolkit.ErrorHandling

/// Settings of the processor, which fans events out to handler requests.
type ProcessorOptions =
    {
        /// Events fanned out at once (default 1).
        Workers: int
        /// Events claimed per round (default 50).
        Limit: int
        /// How long a round holds its claimed events before another processor may take them (default 1 min).
        ClaimLease: TimeSpan
        /// Runs before each event is fanned out; may change or refuse it.
        BeforeProcess: BeforeProcess option
    }

    /// Workers 1, Limit 50, ClaimLease 1 minute, no hook: the Go framework's defaults.
    static member Default =
        {
            Workers = 1
            Limit = 50
            ClaimLease = TimeSpan.FromMinutes 1.0
            BeforeProcess = None
        }

/// Settings of the executor, which runs handlers.
type ExecutorOptions =
    {
        /// Handlers run at once: the executor's slots (default 16). It claims only as many requests as it
        /// has free slots, and starts each at once.
        Workers: int
        /// Requests claimed at most per claim (default 50).
        Limit: int
        /// How long a claimed request is held before another executor may recover it, counting one failed
        /// attempt (default 5 min). While a handler runs, its lease is renewed every Lease/3 to Lease from
        /// then.
        Lease: TimeSpan
        /// Runs before each handler; may change the request it sees or refuse to run it.
        BeforeExecute: BeforeExecute option
        /// Told about every thrown exception and every failure that makes a request dead.
        ErrorReporter: IErrorReporter option
    }

    /// Workers 16, Limit 50, Lease 5 minutes, no hook, no reporter. The Go framework's defaults, but for
    /// Workers (2 there): its executor claimed Limit requests per round and ran them 2 at a time, while
    /// this one claims only for its free slots, so with 2 slots every claim would fetch at most 2 requests
    /// and fast handlers would wait on claim round trips; 16 async slots cost little.
    static member Default =
        {
            Workers = 16
            Limit = 50
            Lease = TimeSpan.FromMinutes 5.0
            BeforeExecute = None
            ErrorReporter = None
        }

/// How a scheduler drives the processor and the executor.
[<RequireQualifiedAccess>]
type SchedulerKind =
    /// One loop that alternates: process, then claim requests for the executor's free slots. Running
    /// handlers never hold it up.
    | Cooperative
    /// Two loops, one processing, one claiming for the executor.
    | Concurrent

/// Settings of a scheduler.
type SchedulerOptions =
    {
        /// Cooperative (default) or concurrent.
        Kind: SchedulerKind
        /// The polling interval: the longest a loop waits when no wake-up signal arrives (default 1 s).
        Interval: TimeSpan
        /// Prefixes every metric, span attribute and log key (default none). Empty, or an ASCII letter
        /// followed by letters, digits, `_`, `.`, `-` or `/`, as OpenTelemetry's instrument names allow.
        TelemetryPrefix: string
        /// After the caller's shutdown deadline cancels running handlers, how long shutdown waits for them
        /// to return (default 5 s).
        ShutdownGrace: TimeSpan
    }

    /// Cooperative, 1 s, no prefix, 5 s grace.
    static member Default =
        {
            Kind = SchedulerKind.Cooperative
            Interval = TimeSpan.FromSeconds 1.0
            TelemetryPrefix = ""
            ShutdownGrace = TimeSpan.FromSeconds 5.0
        }

/// Why engine options were refused.
[<RequireQualifiedAccess>]
type OptionsError =
    /// A worker count below 1.
    | WorkersBelowOne of owner: string * value: int
    /// A limit below 1.
    | LimitBelowOne of owner: string * value: int
    /// A lease or interval that is zero or negative.
    | NotPositive of setting: string * value: TimeSpan
    /// A time that is negative.
    | Negative of setting: string * value: TimeSpan
    /// A handler's timeout that does not end before the executor's lease: its attempts could outlive
    /// their claim and run again elsewhere at the same time.
    | TimeoutNotBelowLease of eventName: string * handlerName: string * timeout: TimeSpan * lease: TimeSpan
    /// A telemetry prefix that would make instrument names OpenTelemetry refuses (every metric would be
    /// dropped without a word).
    | InvalidTelemetryPrefix of prefix: string * reason: string

    /// A sentence that says what is wrong.
    member this.Message =
        match this with
        | WorkersBelowOne(owner, value) -> $"%s{owner} Workers must be at least 1, got %d{value}"
        | LimitBelowOne(owner, value) -> $"%s{owner} Limit must be at least 1, got %d{value}"
        | NotPositive(setting, value) -> $"%s{setting} must be positive, got %O{value}"
        | Negative(setting, value) -> $"%s{setting} must not be negative, got %O{value}"
        | TimeoutNotBelowLease(eventName, handlerName, timeout, lease) ->
            $"handler %s{handlerName} of event %s{eventName} has Timeout %O{timeout}, which must be shorter than the executor Lease %O{lease}"
        | InvalidTelemetryPrefix(prefix, reason) -> $"the telemetry prefix %A{prefix} is invalid: %s{reason}"

/// Checks on engine options, reporting every error at once.
[<RequireQualifiedAccess>]
module EngineOptions =

    let private check condition error : Validation<unit, OptionsError> =
        if condition then
            Validation.ok ()
        else
            Validation.error error

    /// The longest instrument name OpenTelemetry accepts.
    [<Literal>]
    let MaxInstrumentName = 255

    /// The longest unprefixed instrument name the engine publishes.
    [<Literal>]
    let LongestInstrumentKey = 29 // "event_handlers.execution_time"

    /// Why a telemetry prefix cannot start instrument names, if it cannot: OpenTelemetry's rule for
    /// instrument names is an ASCII letter, then up to 254 ASCII letters, digits, `_`, `.`, `-` and `/`.
    let prefixProblem (prefix: string) : string option =
        let allowed (c: char) =
            Char.IsAsciiLetterOrDigit c || c = '_' || c = '.' || c = '-' || c = '/'

        if isNull prefix then
            Some "it is null (use an empty string for none)"
        elif prefix = "" then
            None
        elif not (Char.IsAsciiLetter prefix[0]) then
            Some "it must start with an ASCII letter"
        else
            match prefix |> Seq.tryFindIndex (allowed >> not) with
            | Some index ->
                Some
                    $"character %d{index} (U+%04X{int prefix[index]}) is not an ASCII letter, digit, '_', '.', '-' or '/'"
            | None when prefix.Length + 1 + LongestInstrumentKey > MaxInstrumentName ->
                Some
                    $"it is %d{prefix.Length} characters long; prefixed instrument names must fit in %d{MaxInstrumentName}, so at most %d{MaxInstrumentName - 1 - LongestInstrumentKey}"
            | None -> None

    /// Validates processor options.
    let validateProcessor (options: ProcessorOptions) : Validation<ProcessorOptions, OptionsError> =
        validation {
            let! () =
                check (options.Workers >= 1) (OptionsError.WorkersBelowOne("processor", options.Workers))

            and! () =
                check (options.Limit >= 1) (OptionsError.LimitBelowOne("processor", options.Limit))

            and! () =
                check
                    (options.ClaimLease > TimeSpan.Zero)
                    (OptionsError.NotPositive("processor ClaimLease", options.ClaimLease))

            return options
        }

    /// Validates executor options.
    let validateExecutor (options: ExecutorOptions) : Validation<ExecutorOptions, OptionsError> =
        validation {
            let! () =
                check (options.Workers >= 1) (OptionsError.WorkersBelowOne("executor", options.Workers))

            and! () =
                check (options.Limit >= 1) (OptionsError.LimitBelowOne("executor", options.Limit))

            and! () =
                check (options.Lease > TimeSpan.Zero) (OptionsError.NotPositive("executor Lease", options.Lease))

            return options
        }

    /// Validates executor options against the handlers they will run: every handler's timeout must end
    /// before the lease.
    let validateExecutorFor
        (configuration: Configuration<'handler>)
        (options: ExecutorOptions)
        : Validation<ExecutorOptions, OptionsError> =
        let timeouts =
            Configuration.entries configuration
            |> List.choose (fun (eventName, entry) ->
                match entry.Settings.Timeout with
                | Some timeout when timeout >= options.Lease ->
                    Some(OptionsError.TimeoutNotBelowLease(eventName.Value, entry.Name.Value, timeout, options.Lease))
                | Some _
                | None -> None)

        match validateExecutor options, timeouts with
        | Ok options, [] -> Ok options
        | Ok _, errors -> Error errors
        | Error errors, more -> Error(errors @ more)

    /// Validates a scheduler interval.
    let validateInterval (interval: TimeSpan) : Validation<TimeSpan, OptionsError> =
        check (interval > TimeSpan.Zero) (OptionsError.NotPositive("scheduler Interval", interval))
        |> Validation.map (fun () -> interval)

    /// Validates scheduler options: the interval, the grace and the telemetry prefix.
    let validateScheduler (options: SchedulerOptions) : Validation<SchedulerOptions, OptionsError> =
        validation {
            let! _ = validateInterval options.Interval

            and! () =
                check
                    (options.ShutdownGrace >= TimeSpan.Zero)
                    (OptionsError.Negative("scheduler ShutdownGrace", options.ShutdownGrace))

            and! () =
                match prefixProblem options.TelemetryPrefix with
                | None -> Validation.ok ()
                | Some reason -> Validation.error (OptionsError.InvalidTelemetryPrefix(options.TelemetryPrefix, reason))

            return options
        }

    /// Validates every setting of an engine at once: processor, executor (against the handlers) and
    /// scheduler.
    let validateAll
        (configuration: Configuration<'handler>)
        (processor: ProcessorOptions)
        (executor: ExecutorOptions)
        (scheduler: SchedulerOptions)
        : Validation<ProcessorOptions * ExecutorOptions * SchedulerOptions, OptionsError> =
        validation {
            let! processor = validateProcessor processor
            and! executor = validateExecutorFor configuration executor
            and! scheduler = validateScheduler scheduler
            return processor, executor, scheduler
        }

    /// Throws ArgumentException listing every error, or returns the value.
    let orThrow (paramName: string) (validated: Validation<'T, OptionsError>) : 'T =
        match validated with
        | Ok value -> value
        | Error errors ->
            let messages = errors |> List.map _.Message |> String.concat "; "
            invalidArg paramName $"invalid options: %s{messages}"
