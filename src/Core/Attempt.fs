namespace Events.Core

open System

/// What became of one run of a handler.
[<RequireQualifiedAccess>]
type AttemptResult =
    /// The handler returned success.
    | Succeeded
    /// The handler returned an ordinary failure.
    | Failed of error: string
    /// The handler returned a permanent failure: no retry.
    | FailedPermanently of error: string
    /// The handler threw (the analogue of a Go panic).
    | Threw of exn
    /// The handler threw an exception its options name as permanent: no retry.
    | ThrewPermanently of exn
    /// The handler overran its timeout.
    | TimedOut of TimeSpan
    /// A hard shutdown canceled the handler.
    | Interrupted
    /// A lease renewal was refused: another attempt holds the request now, and the handler was canceled.
    | LostClaim

/// Whether a claimed request may start its handler now.
[<RequireQualifiedAccess>]
type AttemptStart =
    /// Run the handler.
    | Run
    /// Give the claim back unrun, for this reason.
    | GiveBack of reason: string

/// What the executor does with an attempt once its handler returned.
[<RequireQualifiedAccess>]
type AttemptDecision =
    /// Apply the command through the state machine and write the result, fenced by the attempt's token;
    /// the handler's own transaction commits with it only when `commit`.
    | Record of command: RequestCommand * commit: bool
    /// Give the claim back unrun (no error counted); the handler's own work is discarded.
    | GiveBack of reason: string
    /// Record nothing: the attempt lost its claim; the handler's own work is discarded.
    | Abandon

/// The pure decisions of an attempt: whether a claimed request starts, and what its handler's result
/// means. The executor reads the clock and draws the backoff sample, then only runs what these say.
[<RequireQualifiedAccess>]
module Attempt =

    /// How a thrown handler's error starts, as in the Go framework.
    [<Literal>]
    let PanicPrefix = "recovered panic while executing handler request: "

    /// The most of a thrown exception's stack an error keeps, in characters.
    [<Literal>]
    let MaxStack = 8192

    /// A thrown exception as an error keeps it, as .NET prints one: its type and message, then its
    /// stack (at most `MaxStack` characters), so that a person and the triage can read the type and the
    /// frames (the Go framework's recovered panic keeps its stack too).
    let describe (error: exn) =
        let head = $"%s{error.GetType().FullName}: %s{error.Message}"

        match error.StackTrace with
        | null
        | "" -> head
        | stack when stack.Length > MaxStack -> head + "\n" + stack.Substring(0, MaxStack)
        | stack -> head + "\n" + stack

    /// The error recorded for a failed result; none for the results that record no failure.
    let error (result: AttemptResult) : string option =
        match result with
        | AttemptResult.Failed error
        | AttemptResult.FailedPermanently error -> Some error
        | AttemptResult.Threw error
        | AttemptResult.ThrewPermanently error -> Some(PanicPrefix + describe error)
        | AttemptResult.TimedOut timeout -> Some $"handler timed out after %O{timeout}"
        | AttemptResult.Succeeded
        | AttemptResult.Interrupted
        | AttemptResult.LostClaim -> None

    /// Whether the handler's run counts as an error in the handler metrics.
    let isError (result: AttemptResult) =
        match result with
        | AttemptResult.Succeeded -> false
        | AttemptResult.Failed _
        | AttemptResult.FailedPermanently _
        | AttemptResult.Threw _
        | AttemptResult.ThrewPermanently _
        | AttemptResult.TimedOut _
        | AttemptResult.Interrupted
        | AttemptResult.LostClaim -> true

    /// How much of its lease a request must still hold to start: its timeout, or half the lease for a
    /// handler without one. Its lease is renewed from its start on (every Lease/3), so with less, its
    /// claim could lapse before the first renewal and another process run it at the same time.
    let leaseNeeded (timeout: TimeSpan option) (lease: TimeSpan) : TimeSpan =
        match timeout with
        | Some timeout -> timeout
        | None -> lease / 2.0

    /// Whether a claimed request starts: not while the executor is stopping, nor with too little lease left.
    let admit (stopping: bool) (leaseLeft: TimeSpan) (needed: TimeSpan) : AttemptStart =
        if stopping then
            AttemptStart.GiveBack "the executor is shutting down"
        elif leaseLeft < needed then
            AttemptStart.GiveBack "too little of its lease is left to run it"
        else
            AttemptStart.Run

    /// What a handler's result means for the attempt named by `token`, ended at `at`, with `sample` in
    /// [0, 1) drawing a failure's backoff. A success records `Succeed` and commits the handler's own
    /// transaction; a failure, a throw and a timeout record `Fail` with their error and discard it (a
    /// permanent failure or throw records `FailPermanently`); a hard
    /// shutdown gives the claim back; a lost claim records nothing.
    let decide (token: Guid) (at: DateTimeOffset) (sample: float) (result: AttemptResult) : AttemptDecision =
        match result with
        | AttemptResult.Succeeded -> AttemptDecision.Record(RequestCommand.Succeed(token, at), true)
        | AttemptResult.Failed _
        | AttemptResult.Threw _
        | AttemptResult.TimedOut _ ->
            let error = error result |> Option.defaultValue ""
            AttemptDecision.Record(RequestCommand.Fail(token, at, error, sample), false)
        | AttemptResult.FailedPermanently _
        | AttemptResult.ThrewPermanently _ ->
            let error = error result |> Option.defaultValue ""
            AttemptDecision.Record(RequestCommand.FailPermanently(token, at, error), false)
        | AttemptResult.Interrupted -> AttemptDecision.GiveBack "the handler was canceled by a hard shutdown"
        | AttemptResult.LostClaim -> AttemptDecision.Abandon
