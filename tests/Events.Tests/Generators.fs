namespace Events.Tests

open System
open System.Text
open System.Text.Encodings.Web
open System.Text.Json
open Expecto
open FsCheck
open FsCheck.FSharp
open Events.Core

/// A raw name that passes the naming rules: 1 to 256 UTF-16 characters, not only white space, no
/// control characters; ASCII and other scripts mixed.
type ValidName = ValidName of string

/// A random sample in [0, 1), as the shell draws one for backoff jitter; 0, the largest double
/// below 1 and the edges of the Go factor's buckets come often.
type Sample = Sample of float

/// An attempt number anywhere from 1 to Int32.MaxValue; small numbers, powers of two, the edge of
/// the exponential's shift and Int32.MaxValue itself come often.
type Attempt = Attempt of int

/// The text of one JSON object as a caller might write it: spacing or none, escaped or raw
/// non-ASCII, numbers with more digits than a double keeps, nested arrays and objects.
type JsonObjectText = JsonObjectText of string

/// The text of one JSON number, often with more digits than a double keeps.
type JsonNumberText = JsonNumberText of string

/// A time (any offset, the largest times included) and a non-negative wait that often lands next
/// to the edge of what DateTimeOffset can hold.
type TimeAndWait =
    { Time: DateTimeOffset; Wait: TimeSpan }

/// One accepted command and the request it produced.
type Step =
    {
        Command: RequestCommand
        After: HandlerRequest
    }

/// A handler request made by `HandlerRequest.create`, then a random sequence of commands the state
/// machine accepted, with non-decreasing times. Its policy is the handler's backoff policy.
type History =
    {
        Policy: BackoffPolicy
        Created: HandlerRequest
        Steps: Step list
        /// The latest time a command used; a next command is not earlier.
        Now: DateTimeOffset
        /// Every fencing token claimed so far, latest first.
        Tokens: Guid list
    }

    /// The request at the end of the history.
    member this.Request =
        match List.tryLast this.Steps with
        | Some step -> step.After
        | None -> this.Created

/// A reachable request (with its history) and any command at or after the history's latest time,
/// accepted or not: tokens current, stale or unknown; times next to the lease's or backoff's end;
/// leases sometimes not positive.
type Probe =
    {
        History: History
        Command: RequestCommand
    }

/// How an attempt of Go's executor ended.
type GoOutcome =
    | Succeeded
    | Failed of error: string * sample: float

/// One operation of the Go framework on a handler request.
type GoOperation =
    /// The executor picks the request at `claimAt` (only if it is unexecuted then) and records the
    /// outcome at `endAt`; `token` names the attempt in the port.
    | Execute of claimAt: DateTimeOffset * endAt: DateTimeOffset * token: Guid * outcome: GoOutcome
    /// A person cancels the request.
    | Cancel of at: DateTimeOffset
    /// A person re-executes the request.
    | Reexecute

/// A request as created (the Go default backoff, MaxErrors 1 to 6), and operations with
/// non-decreasing times.
type GoHistory =
    {
        Created: HandlerRequest
        Operations: GoOperation list
    }

/// The generators behind the Arbitrary members, for tests that compose their own.
[<RequireQualifiedAccess>]
module Gens =

    let private byte' = Gen.choose (0, 255) |> Gen.map byte

    /// Any GUID.
    let guid: Gen<Guid> =
        Gen.arrayOfLength 16 byte' |> Gen.map (fun bytes -> Guid bytes)

    let private letters = [ 'a' .. 'z' ] @ [ 'A' .. 'Z' ] |> List.map string

    // Text elements of names: one or two UTF-16 characters, never a control character, so a cut at
    // an element boundary never splits a surrogate pair.
    let private nameElements =
        letters
        @ [
            "0"
            "7"
            "."
            "-"
            "_"
            " "
            "/"
            "é"
            "ß"
            "Ω"
            "日"
            "本"
            "😀"
            "e\u0301"
            "\u00A0"
            "\u200D"
        ]

    let private fill (length: int) (first: string) (elements: string list) =
        let builder = StringBuilder first

        for element in elements do
            if builder.Length + element.Length <= length then
                builder.Append element |> ignore

        while builder.Length < length do
            builder.Append 'x' |> ignore

        builder.ToString()

    /// A raw name that passes the naming rules (see `ValidName`).
    let validName: Gen<string> =
        gen {
            let! length =
                Gen.frequency
                    [
                        8, Gen.choose (1, 24)
                        1, Gen.choose (25, Name.MaxLength)
                        1, Gen.constant Name.MaxLength
                    ]

            let! first = Gen.elements letters
            let! rest = Gen.listOfLength (length - 1) (Gen.elements nameElements)
            return fill length first rest
        }

    /// A sample in [0, 1) (see `Sample`).
    let sample: Gen<float> =
        let uniform =
            Gen.choose64 (0L, (1L <<< 53) - 1L)
            |> Gen.map (fun n -> float n / 9007199254740992.0)

        let edges =
            [ 0.0; Math.BitDecrement 1.0 ]
            @ [ for k in 1..44 -> float k / 45.0 ]
            @ [ for k in 1..44 -> Math.BitDecrement(float k / 45.0) ]

        Gen.frequency [ 8, uniform; 2, Gen.elements edges ]

    /// An attempt number in 1 .. Int32.MaxValue (see `Attempt`).
    let attempt: Gen<int> =
        let nearPowersOfTwo =
            Gen.choose (0, 30)
            |> Gen.bind (fun k ->
                let power = 1 <<< k
                Gen.elements [ max 1 (power - 1); power; power + 1 ])

        Gen.frequency
            [
                4, Gen.choose (1, 20)
                3, Gen.choose (1, Int32.MaxValue)
                2, nearPowersOfTwo
                1, Gen.choose (58, 66)
                1, Gen.elements [ Int32.MaxValue - 1; Int32.MaxValue ]
            ]

    let private ticks (low: int64) (high: int64) = Gen.choose64 (low, high)

    let private year2000 = DateTimeOffset(2000, 1, 1, 0, 0, 0, TimeSpan.Zero)
    let private year2100 = DateTimeOffset(2100, 1, 1, 0, 0, 0, TimeSpan.Zero)

    /// A time between 2000 and 2100, at offset zero mostly, else at any offset the type allows.
    let ordinaryTime: Gen<DateTimeOffset> =
        gen {
            let! utcTicks = ticks year2000.UtcTicks year2100.UtcTicks

            let! offsetMinutes =
                Gen.frequency [ 3, Gen.constant 0; 1, Gen.choose (-14 * 60, 14 * 60) ]

            return
                DateTimeOffset(DateTime(utcTicks, DateTimeKind.Utc)).ToOffset(TimeSpan.FromMinutes(float offsetMinutes))
        }

    /// A non-negative wait between two commands: none, seconds, or up to an hour.
    let pause: Gen<TimeSpan> =
        Gen.frequency
            [
                2, Gen.constant TimeSpan.Zero
                4, ticks 1L (TimeSpan.TicksPerSecond * 120L) |> Gen.map TimeSpan.FromTicks
                3, ticks 1L TimeSpan.TicksPerHour |> Gen.map TimeSpan.FromTicks
            ]

    /// A time at or after `now`.
    let laterThan (now: DateTimeOffset) : Gen<DateTimeOffset> =
        pause |> Gen.map (Backoff.addSaturating now)

    /// A positive lease: a tick, seconds to minutes, or the largest TimeSpan (the lease saturates).
    let lease: Gen<TimeSpan> =
        Gen.frequency
            [
                1, Gen.constant (TimeSpan.FromTicks 1L)
                8,
                ticks TimeSpan.TicksPerSecond (TimeSpan.TicksPerMinute * 10L)
                |> Gen.map TimeSpan.FromTicks
                1, Gen.constant TimeSpan.MaxValue
            ]

    /// The text of a failure.
    let errorText: Gen<string> =
        Gen.elements [ "boom"; "oh noes"; "timeout after 30 s"; ""; "ünïcödé ⚠" ]

    /// A valid exponential policy: a positive base and a cap not below it, extremes included.
    let exponential: Gen<ExponentialBackoff> =
        gen {
            let! baseTicks =
                Gen.frequency
                    [
                        6, ticks 1L TimeSpan.TicksPerMinute
                        2, ticks 1L Int64.MaxValue
                        1, Gen.constant 1L
                        1, Gen.constant Int64.MaxValue
                    ]

            let thousandTimes =
                if baseTicks > Int64.MaxValue / 1000L then
                    Int64.MaxValue
                else
                    baseTicks * 1000L

            let! capTicks =
                Gen.frequency
                    [
                        1, Gen.constant baseTicks
                        5, ticks baseTicks thousandTimes
                        2, ticks baseTicks Int64.MaxValue
                        1, Gen.constant Int64.MaxValue
                    ]

            return
                {
                    Base = TimeSpan.FromTicks baseTicks
                    Cap = TimeSpan.FromTicks capTicks
                }
        }

    /// Any valid backoff policy.
    let policy: Gen<BackoffPolicy> =
        Gen.frequency
            [
                1, Gen.constant BackoffPolicy.Default
                2, exponential |> Gen.map BackoffPolicy.Exponential
            ]

    /// A priority: mostly 0 to 100, sometimes any int.
    let priority: Gen<int> =
        Gen.frequency
            [
                5, Gen.choose (0, 100)
                1, Gen.choose (Int32.MinValue, Int32.MaxValue)
                1, Gen.elements [ Int32.MinValue; Int32.MaxValue ]
            ]

    /// MaxErrors: mostly small, so that requests die within short histories.
    let maxErrors: Gen<int> =
        Gen.frequency [ 8, Gen.choose (1, 6); 1, Gen.choose (7, 100) ]

    /// A handler option that passes validation.
    let option: Gen<HandlerOption> =
        Gen.oneof
            [
                maxErrors |> Gen.map HandlerOption.MaxErrors
                priority |> Gen.map HandlerOption.Priority
                policy |> Gen.map HandlerOption.Backoff
                ticks 1L TimeSpan.TicksPerDay
                |> Gen.map (TimeSpan.FromTicks >> HandlerOption.Timeout)
                Gen.elements [ typeof<ArgumentException>; typeof<FormatException>; typeof<exn> ]
                |> Gen.map HandlerOption.PermanentOn
            ]

    /// A list of valid handler options, perhaps repeating a setting.
    let options: Gen<HandlerOption list> =
        Gen.choose (0, 6) |> Gen.bind (fun n -> Gen.listOfLength n option)

    /// Settings made from valid options by `HandlerSettings.create`.
    let settings: Gen<HandlerSettings> =
        options
        |> Gen.map (fun options ->
            match HandlerSettings.create options with
            | Ok settings -> settings
            | Error errors -> failwithf "valid options were refused: %A %A" options errors)

    // JSON, as a tree, rendered to text in several styles.
    type private Json =
        | JNull
        | JBool of bool
        | JNumber of string
        | JString of string
        | JArray of Json list
        | JObject of (string * Json) list

    let private digits (low: int) (high: int) =
        Gen.choose (low, high)
        |> Gen.bind (fun n -> Gen.arrayOfLength n (Gen.elements [ '0' .. '9' ]))
        |> Gen.map String

    /// The text of a JSON number: sign, integer part up to 40 digits, fraction, exponent.
    let numberText: Gen<string> =
        gen {
            let! sign = Gen.elements [ ""; "-" ]

            let! integer =
                Gen.frequency
                    [
                        1, Gen.constant "0"
                        4,
                        Gen.map2
                            (fun (first: char) rest -> string first + rest)
                            (Gen.elements [ '1' .. '9' ])
                            (digits 0 39)
                    ]

            let! fraction = Gen.optionOf (digits 1 30 |> Gen.map (fun d -> "." + d))

            let! exponent =
                Gen.optionOf (
                    Gen.map3
                        (fun e s d -> e + s + d)
                        (Gen.elements [ "e"; "E" ])
                        (Gen.elements [ ""; "+"; "-" ])
                        (digits 1 3)
                )

            return
                sign
                + integer
                + Option.defaultValue "" fraction
                + Option.defaultValue "" exponent
        }

    let private stringElements =
        letters
        @ [
            " "
            "\""
            "\\"
            "/"
            "\n"
            "\t"
            "\u0001"
            "é"
            "日"
            "😀"
            "<"
            "&"
            "'"
            "+"
        ]

    let private jsonString: Gen<string> =
        Gen.choose (0, 12)
        |> Gen.bind (fun n -> Gen.listOfLength n (Gen.elements stringElements))
        |> Gen.map (String.concat "")

    let rec private value (depth: int) : Gen<Json> =
        let leaf =
            Gen.oneof
                [
                    Gen.constant JNull
                    Gen.elements [ true; false ] |> Gen.map JBool
                    numberText |> Gen.map JNumber
                    jsonString |> Gen.map JString
                ]

        if depth <= 0 then
            leaf
        else
            Gen.frequency
                [
                    5, leaf
                    1,
                    Gen.choose (0, 4)
                    |> Gen.bind (fun n -> Gen.listOfLength n (value (depth - 1)))
                    |> Gen.map JArray
                    1, jsonObject (depth - 1)
                ]

    and private jsonObject (depth: int) : Gen<Json> =
        gen {
            let! n = Gen.choose (0, 5)
            let! keys = Gen.listOfLength n jsonString
            let keys = List.distinct keys
            let! values = Gen.listOfLength keys.Length (value depth)
            return JObject(List.zip keys values)
        }

    let private render (escapeNonAscii: bool) (spaced: bool) (json: Json) =
        let options =
            if escapeNonAscii then
                JsonSerializerOptions.Default
            else
                JsonSerializerOptions(Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping)

        let builder = StringBuilder()
        let text (s: string) = builder.Append s |> ignore

        let quoted (s: string) =
            text (JsonSerializer.Serialize(s, options))

        let separator = if spaced then ", " else ","
        let colon = if spaced then " : " else ":"

        let rec write json =
            match json with
            | JNull -> text "null"
            | JBool true -> text "true"
            | JBool false -> text "false"
            | JNumber number -> text number
            | JString s -> quoted s
            | JArray items ->
                text "["

                items
                |> List.iteri (fun i item ->
                    if i > 0 then
                        text separator

                    write item)

                text "]"
            | JObject members ->
                text (if spaced then "{ " else "{")

                members
                |> List.iteri (fun i (key, item) ->
                    if i > 0 then
                        text separator

                    quoted key
                    text colon
                    write item)

                text (if spaced then " }" else "}")

        write json
        builder.ToString()

    /// The text of a JSON object (see `JsonObjectText`).
    let jsonObjectText: Gen<string> =
        Gen.map3 render (Gen.elements [ true; false ]) (Gen.elements [ true; false ]) (jsonObject 2)

    /// Event data parsed from a generated JSON object.
    let eventData: Gen<EventData> =
        jsonObjectText
        |> Gen.map (fun json ->
            match EventData.TryParse json with
            | Ok data -> data
            | Error error -> failwithf "a generated JSON object was refused: %s %A" json error)

    /// An entity with valid id and name.
    let entity: Gen<Entity> =
        Gen.map2 (fun id name -> { Id = id; Name = name }) validName validName

    /// A W3C trace context.
    let trace: Gen<TraceContext> =
        Gen.map3
            (fun (traceId: Guid) (spanId: Guid) state ->
                {
                    TraceParent = $"""00-%s{traceId.ToString "N"}-%s{(spanId.ToString "N").Substring(0, 16)}-01"""
                    TraceState = state
                })
            guid
            guid
            (Gen.optionOf (Gen.elements [ "vendor=1"; "a=b,c=d" ]))

    /// Any valid event, application or domain, perhaps correlated, traced and processed.
    let event: Gen<Event> =
        gen {
            let! id = guid
            let! timestamp = ordinaryTime
            let! name = validName |> Gen.map EventName.Create
            let! data = eventData
            let! entity = Gen.optionOf entity
            let! correlationId = Gen.optionOf guid
            let! trace = Gen.optionOf trace
            let! processedAt = Gen.optionOf ordinaryTime

            let event =
                match entity with
                | Some entity -> Event.domain id timestamp name entity data
                | None -> Event.application id timestamp name data

            return
                { event with
                    CorrelationId = correlationId
                    Trace = trace
                    ProcessedAt = processedAt
                }
        }

    /// A new request for a generated event and handler, with the settings given.
    let createdWith (settings: HandlerSettings) : Gen<HandlerRequest> =
        Gen.map3
            (fun id event handler -> HandlerRequest.create id event (HandlerName.Create handler) settings)
            guid
            event
            validName

    let private leaseLength = lease

    /// A command the request accepts, and the time it uses; none when the request is terminal. With
    /// `ending` false, never a command that ends the request (Succeed, Cancel).
    let acceptedCommand
        (ending: bool)
        (request: HandlerRequest)
        (now: DateTimeOffset)
        : Gen<(RequestCommand * DateTimeOffset) option> =
        let weight value = if ending then value else 0

        let cancel = laterThan now |> Gen.map (fun at -> Some(RequestCommand.Cancel at, at))

        let reExecute = Gen.constant (Some(RequestCommand.ReExecute, now))

        match request.State with
        | RequestState.Runnable until ->
            let claimFrom =
                match until with
                | Some until when until > now -> until
                | Some _
                | None -> now

            let claim =
                Gen.map3
                    (fun at leaseFor token -> Some(RequestCommand.Claim(at, leaseFor, token), at))
                    (laterThan claimFrom)
                    lease
                    guid

            Gen.frequency [ 12, claim; weight 1, cancel; 1, reExecute ]
        | RequestState.Running lease ->
            let succeed =
                laterThan now
                |> Gen.map (fun at -> Some(RequestCommand.Succeed(lease.Token, at), at))

            let fail =
                Gen.map3
                    (fun at error sample -> Some(RequestCommand.Fail(lease.Token, at, error, sample), at))
                    (laterThan now)
                    errorText
                    sample

            let failForGood =
                Gen.map2
                    (fun at error -> Some(RequestCommand.FailPermanently(lease.Token, at, error), at))
                    (laterThan now)
                    errorText

            let expire =
                laterThan (max now lease.Until)
                |> Gen.map (fun at -> Some(RequestCommand.ExpireLease at, at))

            let release = Gen.constant (Some(RequestCommand.Release lease.Token, now))

            // A heartbeat at a later time, renewing for a lease from then (perhaps not past the old end).
            let renew =
                Gen.map2
                    (fun at leaseFor -> Some(RequestCommand.Renew(lease.Token, Backoff.addSaturating at leaseFor), at))
                    (laterThan now)
                    leaseLength

            Gen.frequency [ weight 1, succeed; 6, fail; 1, failForGood; 2, expire; 1, release; 1, renew ]
        | RequestState.Dead -> Gen.frequency [ 3, reExecute; weight 1, cancel ]
        | RequestState.Completed _
        | RequestState.Canceled _ -> Gen.constant None

    /// The history with one more command, which the request must accept.
    let extend (history: History) (command: RequestCommand, at: DateTimeOffset) : History =
        match HandlerRequest.transition history.Policy command history.Request with
        | Ok after ->
            let tokens =
                match command with
                | RequestCommand.Claim(_, _, token) -> token :: history.Tokens
                | RequestCommand.Succeed _
                | RequestCommand.Fail _
                | RequestCommand.FailPermanently _
                | RequestCommand.ExpireLease _
                | RequestCommand.Cancel _
                | RequestCommand.ReExecute
                | RequestCommand.Release _
                | RequestCommand.Renew _ -> history.Tokens

            { history with
                Steps = history.Steps @ [ { Command = command; After = after } ]
                Now = max history.Now at
                Tokens = tokens
            }
        | Error error ->
            failwithf
                "the generator made a command the request refused: %A in %A: %A"
                command
                history.Request.State
                error

    /// The kinds of state a history can end in, as labels.
    let stateKinds =
        [ "runnable"; "backing off"; "running"; "dead"; "completed"; "canceled" ]

    /// The label of a state's kind.
    let stateKind (state: RequestState) : string =
        match state with
        | RequestState.Runnable None -> "runnable"
        | RequestState.Runnable(Some _) -> "backing off"
        | RequestState.Running _ -> "running"
        | RequestState.Dead -> "dead"
        | RequestState.Completed _ -> "completed"
        | RequestState.Canceled _ -> "canceled"

    let rec private walk (ending: bool) (remaining: int) (stop: History -> bool) (history: History) : Gen<History> =
        if remaining = 0 || stop history then
            Gen.constant history
        else
            acceptedCommand ending history.Request history.Now
            |> Gen.bind (fun next ->
                match next with
                | None -> Gen.constant history
                | Some next -> walk ending (remaining - 1) stop (extend history next))

    /// A request created and moved by accepted commands (see `History`): the walk aims at a kind of
    /// state drawn at random and stops when it reaches it after at least a random number of steps
    /// (up to `maxSteps`), when the request is terminal, or after 2 * `maxSteps` steps; so every
    /// kind of state ends histories often, after short and long lives.
    let historyOf (maxSteps: int) : Gen<History> =
        gen {
            let! settings = settings
            let! created = createdWith settings
            let! start = ordinaryTime
            let! minimum = Gen.choose (0, maxSteps)
            let! target = Gen.elements stateKinds

            let stop (history: History) =
                history.Steps.Length >= minimum && stateKind history.Request.State = target

            // A request that ends non-terminal never saw Succeed or Cancel: leave them out then.
            let ending = target = "completed" || target = "canceled"

            return!
                walk
                    ending
                    (2 * maxSteps)
                    stop
                    {
                        Policy = settings.Backoff
                        Created = created
                        Steps = []
                        Now = start
                        Tokens = []
                    }
        }

    /// A history of up to 30 accepted commands.
    let history: Gen<History> = historyOf 30

    let private claimAfter (history: History) =
        let from =
            match history.Request.State with
            | RequestState.Runnable(Some until) when until > history.Now -> until
            | RequestState.Runnable _
            | RequestState.Running _
            | RequestState.Completed _
            | RequestState.Dead
            | RequestState.Canceled _ -> history.Now

        Gen.map3 (fun at leaseFor token -> RequestCommand.Claim(at, leaseFor, token), at) (laterThan from) lease guid

    /// A history that ends with the request running (earlier attempts may have failed).
    let runningHistory: Gen<History> =
        history
        |> Gen.where (fun history -> not (HandlerRequest.isTerminal history.Request))
        |> Gen.bind (fun history ->
            match history.Request.State with
            | RequestState.Running _ -> Gen.constant history
            | RequestState.Dead ->
                let history = extend history (RequestCommand.ReExecute, history.Now)
                claimAfter history |> Gen.map (extend history)
            | RequestState.Runnable _ -> claimAfter history |> Gen.map (extend history)
            | RequestState.Completed _
            | RequestState.Canceled _ -> failwith "terminal histories were filtered out")

    /// A history that ends with the request completed or canceled.
    let terminalHistory: Gen<History> =
        history
        |> Gen.bind (fun history ->
            let request = history.Request

            match request.State with
            | RequestState.Completed _
            | RequestState.Canceled _ -> Gen.constant history
            | RequestState.Running lease ->
                laterThan history.Now
                |> Gen.map (fun at -> extend history (RequestCommand.Succeed(lease.Token, at), at))
            | RequestState.Runnable _
            | RequestState.Dead ->
                laterThan history.Now
                |> Gen.map (fun at -> extend history (RequestCommand.Cancel at, at)))

    /// A token for an outcome: the running attempt's (often), a stale one, or an unknown one.
    let probeToken (history: History) : Gen<Guid> =
        let current =
            match history.Request.State with
            | RequestState.Running lease -> [ 4, Gen.constant lease.Token ]
            | RequestState.Runnable _
            | RequestState.Completed _
            | RequestState.Dead
            | RequestState.Canceled _ -> []

        let stale =
            match history.Tokens with
            | [] -> []
            | tokens -> [ 2, Gen.elements tokens ]

        Gen.frequency (current @ stale @ [ 1, guid ])

    /// A time at or after the history's latest, often a tick before, at or a tick after the end of
    /// the lease or of the backoff.
    let probeTime (history: History) : Gen<DateTimeOffset> =
        let now = history.Now

        let edge =
            match history.Request.State with
            | RequestState.Runnable(Some until) -> Some until
            | RequestState.Running lease -> Some lease.Until
            | RequestState.Runnable None
            | RequestState.Completed _
            | RequestState.Dead
            | RequestState.Canceled _ -> None

        match edge with
        | Some edge ->
            Gen.frequency
                [
                    3, laterThan now
                    2,
                    Gen.elements
                        [
                            max now (if edge > now then edge.AddTicks -1L else edge)
                            edge
                            Backoff.addSaturating edge (TimeSpan.FromTicks 1L)
                        ]
                ]
        | None -> laterThan now

    /// A claim at a probe time, with a lease that is sometimes not positive.
    let claimProbe (history: History) : Gen<RequestCommand> =
        let leaseFor =
            Gen.frequency
                [
                    5, lease
                    1, Gen.elements [ TimeSpan.Zero; TimeSpan.FromTicks -1L; TimeSpan.MinValue ]
                ]

        Gen.map3 (fun at leaseFor token -> RequestCommand.Claim(at, leaseFor, token)) (probeTime history) leaseFor guid

    /// A success with a probe token at a probe time.
    let succeedProbe (history: History) : Gen<RequestCommand> =
        Gen.map2 (fun token at -> RequestCommand.Succeed(token, at)) (probeToken history) (probeTime history)

    /// A failure with a probe token at a probe time.
    let failProbe (history: History) : Gen<RequestCommand> =
        gen {
            let! token = probeToken history
            let! at = probeTime history
            let! error = errorText
            let! sample = sample
            return RequestCommand.Fail(token, at, error, sample)
        }

    /// A lease expiry at a probe time.
    let expireProbe (history: History) : Gen<RequestCommand> =
        probeTime history |> Gen.map RequestCommand.ExpireLease

    /// A renewal with a probe token until a probe time (so sometimes before, at or just after the
    /// lease's end).
    let renewProbe (history: History) : Gen<RequestCommand> =
        Gen.map2 (fun token until -> RequestCommand.Renew(token, until)) (probeToken history) (probeTime history)

    /// A cancelation at a probe time.
    let cancelProbe (history: History) : Gen<RequestCommand> =
        probeTime history |> Gen.map RequestCommand.Cancel

    /// A re-execution.
    let reExecuteProbe (_: History) : Gen<RequestCommand> = Gen.constant RequestCommand.ReExecute

    /// Any command at or after the history's latest time, accepted or not (see `Probe`).
    let anyCommand (history: History) : Gen<RequestCommand> =
        Gen.oneof
            [
                claimProbe history
                succeedProbe history
                failProbe history
                expireProbe history
                renewProbe history
                cancelProbe history
                reExecuteProbe history
            ]

    /// Probes made of the histories and commands given.
    let probeWith (command: History -> Gen<RequestCommand>) (histories: Gen<History>) : Gen<Probe> =
        histories
        |> Gen.bind (fun history ->
            command history
            |> Gen.map (fun command -> { History = history; Command = command }))

    /// A reachable request and any command (see `Probe`).
    let probe: Gen<Probe> = probeWith anyCommand history

    let rec private goOperations (remaining: int) (now: DateTimeOffset) : Gen<GoOperation list> =
        if remaining = 0 then
            Gen.constant []
        else
            let execute =
                gen {
                    let! claimAt = laterThan now
                    let! took = ticks 0L (TimeSpan.TicksPerSecond * 5L)
                    let endAt = claimAt.AddTicks took
                    let! token = guid

                    let! outcome =
                        Gen.frequency
                            [
                                2, Gen.constant Succeeded
                                7, Gen.map2 (fun error sample -> Failed(error, sample)) errorText sample
                            ]

                    return Execute(claimAt, endAt, token, outcome), endAt
                }

            let cancel = laterThan now |> Gen.map (fun at -> Cancel at, at)
            let reexecute = Gen.constant (Reexecute, now)

            Gen.frequency [ 10, execute; 1, cancel; 2, reexecute ]
            |> Gen.bind (fun (operation, now) ->
                goOperations (remaining - 1) now |> Gen.map (fun rest -> operation :: rest))

    /// A Go history (see `GoHistory`).
    let goHistory: Gen<GoHistory> =
        gen {
            let! maxErrors = Gen.choose (1, 6)

            let! created =
                createdWith
                    { HandlerSettings.defaults with
                        MaxErrors = maxErrors
                    }

            let! start = ordinaryTime
            let! length = Gen.choose (0, 30)
            let! operations = goOperations length start

            return
                {
                    Created = created
                    Operations = operations
                }
        }

    /// A time and a wait (see `TimeAndWait`).
    let timeAndWait: Gen<TimeAndWait> =
        gen {
            let! offsetMinutes =
                Gen.frequency
                    [
                        2, Gen.constant 0
                        2, Gen.choose (-14 * 60, 14 * 60)
                        1, Gen.elements [ -14 * 60; 14 * 60 ]
                    ]

            let offset = TimeSpan.FromMinutes(float offsetMinutes)
            // The UTC time must leave room for the offset on both sides of DateTime's range.
            let lowest = max 0L (-offset.Ticks)
            let highest = min DateTime.MaxValue.Ticks (DateTime.MaxValue.Ticks - offset.Ticks)

            let! utcTicks =
                Gen.frequency
                    [
                        3, ticks lowest highest
                        2, ticks (highest - TimeSpan.TicksPerDay) highest
                        1, Gen.constant highest
                        1, Gen.constant lowest
                    ]

            let time = DateTimeOffset(DateTime(utcTicks, DateTimeKind.Utc)).ToOffset offset

            let roomInUtc = (DateTimeOffset.MaxValue - time).Ticks
            let roomOnClock = (DateTime.MaxValue - time.DateTime).Ticks

            let nextTo (room: int64) =
                Gen.choose64 (-2L, 2L)
                |> Gen.map (fun delta -> min Int64.MaxValue (max 0L (room + delta)))

            let! waitTicks =
                Gen.frequency
                    [
                        1, Gen.constant 0L
                        3, ticks 0L Int64.MaxValue
                        2, ticks 0L TimeSpan.TicksPerDay
                        2, nextTo roomInUtc
                        2, nextTo roomOnClock
                        1, Gen.constant Int64.MaxValue
                    ]

            return
                {
                    Time = time
                    Wait = TimeSpan.FromTicks waitTicks
                }
        }

/// The Arbitrary members FsCheck uses for the types of a property's arguments.
type Generators =
    /// Valid raw names.
    static member ValidName() : Arbitrary<ValidName> =
        Gens.validName |> Gen.map ValidName |> Arb.fromGen

    /// Valid event names.
    static member EventName() : Arbitrary<EventName> =
        Gens.validName |> Gen.map EventName.Create |> Arb.fromGen

    /// Valid handler names.
    static member HandlerName() : Arbitrary<HandlerName> =
        Gens.validName |> Gen.map HandlerName.Create |> Arb.fromGen

    /// Samples in [0, 1).
    static member Sample() : Arbitrary<Sample> =
        Gens.sample |> Gen.map Sample |> Arb.fromGen

    /// Attempt numbers in 1 .. Int32.MaxValue.
    static member Attempt() : Arbitrary<Attempt> =
        Gens.attempt |> Gen.map Attempt |> Arb.fromGen

    /// Valid exponential policies.
    static member ExponentialBackoff() : Arbitrary<ExponentialBackoff> = Arb.fromGen Gens.exponential

    /// Valid backoff policies.
    static member BackoffPolicy() : Arbitrary<BackoffPolicy> = Arb.fromGen Gens.policy

    /// Valid handler options.
    static member HandlerOption() : Arbitrary<HandlerOption> = Arb.fromGen Gens.option

    /// Settings made from valid options.
    static member HandlerSettings() : Arbitrary<HandlerSettings> = Arb.fromGen Gens.settings

    /// JSON object texts.
    static member JsonObjectText() : Arbitrary<JsonObjectText> =
        Gens.jsonObjectText |> Gen.map JsonObjectText |> Arb.fromGen

    /// JSON number texts.
    static member JsonNumberText() : Arbitrary<JsonNumberText> =
        Gens.numberText |> Gen.map JsonNumberText |> Arb.fromGen

    /// Valid event data.
    static member EventData() : Arbitrary<EventData> = Arb.fromGen Gens.eventData

    /// Valid entities.
    static member Entity() : Arbitrary<Entity> = Arb.fromGen Gens.entity

    /// Valid events.
    static member Event() : Arbitrary<Event> = Arb.fromGen Gens.event

    /// Histories of accepted commands.
    static member History() : Arbitrary<History> = Arb.fromGen Gens.history

    /// Requests in every reachable state (the ends of histories).
    static member HandlerRequest() : Arbitrary<HandlerRequest> =
        Gens.history |> Gen.map _.Request |> Arb.fromGen

    /// Reachable requests with any command.
    static member Probe() : Arbitrary<Probe> = Arb.fromGen Gens.probe

    /// Go histories.
    static member GoHistory() : Arbitrary<GoHistory> = Arb.fromGen Gens.goHistory

    /// Times and waits at the edges of DateTimeOffset.
    static member TimeAndWait() : Arbitrary<TimeAndWait> = Arb.fromGen Gens.timeAndWait

/// How the properties run.
[<RequireQualifiedAccess>]
module Property =

    // When EVENTS_PROPERTY_COUNTS names a file, each property appends "cases<TAB>name" to it, so a
    // run can show how many cases each law was checked on.
    let private recordCases (name: string) (data: FsCheckTestData) =
        async {
            match Environment.GetEnvironmentVariable "EVENTS_PROPERTY_COUNTS" with
            | null
            | "" -> ()
            | path ->
                lock typeof<Generators> (fun () -> IO.File.AppendAllText(path, $"%d{data.NumberOfTests}\t%s{name}\n"))
        }

    /// 100 cases, the generators above.
    let config =
        { FsCheckConfig.defaultConfig with
            maxTest = 100
            arbitrary = [ typeof<Generators> ]
            finishedTest = fun _ name data -> recordCases name data
        }

    /// A property law, run on 100 cases.
    let law name (body: 'a) = testPropertyWithConfig config name body

    /// A property law, run on `cases` cases (for the laws over whole histories).
    let lawWith cases name (body: 'a) =
        testPropertyWithConfig { config with maxTest = cases } name body

/// The exception an action throws, for tests that look into it.
[<RequireQualifiedAccess>]
module Thrown =

    /// The exception of type 'e that `action` throws; the test fails with `message` when nothing is
    /// thrown, and errs when another exception is.
    let by<'e when 'e :> exn> (message: string) (action: unit -> unit) : 'e =
        let thrown =
            try
                action ()
                None
            with :? 'e as e ->
                Some e

        match thrown with
        | Some e -> e
        | None -> failtestf "%s: nothing was thrown" message
