module Events.Tests.HandlerRequestTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Events.Core

// ---------------------------------------------------------------------------------------------
// Fixtures: one request in each state, reached by transitions from `create`.

let private t0 = DateTimeOffset(2024, 5, 1, 12, 0, 0, TimeSpan.Zero)
let private at (minutes: float) = t0.AddMinutes minutes
let private leaseFor = TimeSpan.FromMinutes 5.0
let private tokenA = Guid.Parse "0190a1b2-0000-7000-8000-00000000000a"
let private tokenB = Guid.Parse "0190a1b2-0000-7000-8000-00000000000b"
let private policy = BackoffPolicy.Default

let private event =
    Event.application
        (Guid.Parse "0190a1b2-0000-7000-8000-000000000001")
        t0
        (EventName.Create "order.placed")
        EventData.Empty

let private newRequest (maxErrors: int) =
    HandlerRequest.create
        (Guid.Parse "0190a1b2-0000-7000-8000-000000000002")
        event
        (HandlerName.Create "send-mail")
        { HandlerSettings.defaults with
            MaxErrors = maxErrors
        }

let private transition command request =
    HandlerRequest.transition policy command request

let private apply (command: RequestCommand) (request: HandlerRequest) =
    match transition command request with
    | Ok request -> request
    | Error error -> failtestf "the fixture's command %A was refused in %A: %A" command request.State error

/// New, MaxErrors 3.
let private fresh = newRequest 3

/// Claimed at t0 with tokenA, lease until t0 + 5 min.
let private running = fresh |> apply (RequestCommand.Claim(t0, leaseFor, tokenA))

/// Failed once at t0 + 1 min with sample 0: r = 15, so backing off 1 × 2 × 15 s, until t0 + 1.5 min.
let private backingOff =
    running |> apply (RequestCommand.Fail(tokenA, at 1.0, "boom", 0.0))

/// Failed twice (MaxErrors 3), claimed again at t0 + 10 min with tokenB: its next failure is the last.
let private runningLastAttempt =
    backingOff
    |> apply (RequestCommand.Claim(at 2.0, leaseFor, tokenA))
    |> apply (RequestCommand.Fail(tokenA, at 3.0, "boom again", 0.0))
    |> apply (RequestCommand.Claim(at 10.0, leaseFor, tokenB))

/// Failed three times out of 3.
let private dead =
    runningLastAttempt
    |> apply (RequestCommand.Fail(tokenB, at 11.0, "third boom", 0.5))

/// Succeeded at t0 + 1 min.
let private completed = running |> apply (RequestCommand.Succeed(tokenA, at 1.0))

/// Canceled at t0 + 1 min while new.
let private canceled = fresh |> apply (RequestCommand.Cancel(at 1.0))

let private refused (expected: RequestError) (result: Result<HandlerRequest, RequestError>) (why: string) =
    Expect.equal result (Error expected) why

// ---------------------------------------------------------------------------------------------
// The transition table: one example per (state, command) row. docs/transitions.md links here.

let private claimRows =
    testList
        "Claim"
        [
            testCase "Runnable + Claim: runs under a lease until now + leaseFor"
            <| fun () ->
                Expect.equal
                    (transition (RequestCommand.Claim(at 1.0, leaseFor, tokenB)) fresh)
                    (Ok
                        { fresh with
                            State = RequestState.Running { Token = tokenB; Until = at 6.0 }
                        })
                    "a new request is claimed by the token given, until now + leaseFor; nothing else changes"

            testCase "Runnable with its backoff passed + Claim: runs under a lease"
            <| fun () ->
                let until = HandlerRequest.backoffUntil backingOff |> Option.get

                Expect.equal
                    (transition (RequestCommand.Claim(until, leaseFor, tokenB)) backingOff
                     |> Result.map _.State)
                    (Ok(
                        RequestState.Running
                            {
                                Token = tokenB
                                Until = until + leaseFor
                            }
                    ))
                    "at the very end of the backoff the request may run again"

            testCase "Runnable backing off + Claim: refused, BackingOff until the backoff's end"
            <| fun () ->
                let until = HandlerRequest.backoffUntil backingOff |> Option.get

                refused
                    (RequestError.BackingOff until)
                    (transition (RequestCommand.Claim(until.AddTicks -1L, leaseFor, tokenB)) backingOff)
                    "a tick before the backoff ends the request must wait"

            testCase "Running + Claim: refused, AlreadyClaimed until the lease's end, even after it"
            <| fun () ->
                refused
                    (RequestError.AlreadyClaimed(at 5.0))
                    (transition (RequestCommand.Claim(at 1.0, leaseFor, tokenB)) running)
                    "a running request runs at most once at a time"

                refused
                    (RequestError.AlreadyClaimed(at 5.0))
                    (transition (RequestCommand.Claim(at 60.0, leaseFor, tokenB)) running)
                    "a lapsed lease is recovered by ExpireLease (which counts the attempt), not by claiming over it"

            testCase "Dead + Claim: refused, ReachedMaxErrors"
            <| fun () ->
                refused
                    RequestError.ReachedMaxErrors
                    (transition (RequestCommand.Claim(at 20.0, leaseFor, tokenA)) dead)
                    "Go refuses to execute a request at max errors"

            testCase "Completed + Claim: refused, AlreadyCompleted"
            <| fun () ->
                refused
                    RequestError.AlreadyCompleted
                    (transition (RequestCommand.Claim(at 2.0, leaseFor, tokenB)) completed)
                    "a completed request never runs again"

            testCase "Canceled + Claim: refused, AlreadyCanceled"
            <| fun () ->
                refused
                    RequestError.AlreadyCanceled
                    (transition (RequestCommand.Claim(at 2.0, leaseFor, tokenB)) canceled)
                    "a canceled request never runs"

            testCase "any state + Claim with a lease not positive: refused, LeaseNotPositive"
            <| fun () ->
                for request in [ fresh; backingOff; running; dead; completed; canceled ] do
                    for lease in [ TimeSpan.Zero; TimeSpan.FromTicks -1L ] do
                        refused
                            (RequestError.LeaseNotPositive lease)
                            (transition (RequestCommand.Claim(at 30.0, lease, tokenB)) request)
                            $"a lease of %O{lease} is a caller's mistake, refused before the state is looked at (%A{request.State})"
        ]

let private succeedRows =
    testList
        "Succeed"
        [
            testCase "Running + Succeed with the current token: completed at that time, last error cleared"
            <| fun () ->
                let result = transition (RequestCommand.Succeed(tokenB, at 11.0)) runningLastAttempt

                Expect.equal
                    result
                    (Ok
                        { runningLastAttempt with
                            LastAttemptAt = Some(at 11.0)
                            LastError = None
                            State = RequestState.Completed(at 11.0)
                        })
                    "as in Go: last attempt and completed-at are the time, the last error is cleared, errors stay"

            testCase
                "Running + Succeed with the current token after the lease passed: completed (fencing, not time, decides)"
            <| fun () ->
                Expect.equal
                    (transition (RequestCommand.Succeed(tokenA, at 60.0)) running
                     |> Result.map _.State)
                    (Ok(RequestState.Completed(at 60.0)))
                    "no other attempt claimed the request, so the late outcome of the current one is the truth"

            testCase "Running + Succeed with another token: refused, StaleToken"
            <| fun () ->
                refused
                    RequestError.StaleToken
                    (transition (RequestCommand.Succeed(tokenA, at 11.0)) runningLastAttempt)
                    "tokenA's attempt lost its claim; tokenB's attempt holds the request now"

            testCase "Runnable + Succeed: refused, NotRunning"
            <| fun () ->
                refused
                    RequestError.NotRunning
                    (transition (RequestCommand.Succeed(tokenA, at 2.0)) backingOff)
                    "an outcome needs a running attempt"

            testCase "Dead + Succeed: refused, NotRunning"
            <| fun () ->
                refused
                    RequestError.NotRunning
                    (transition (RequestCommand.Succeed(tokenB, at 12.0)) dead)
                    "a dead request runs no attempt"

            testCase "Completed + Succeed: refused, AlreadyCompleted"
            <| fun () ->
                refused
                    RequestError.AlreadyCompleted
                    (transition (RequestCommand.Succeed(tokenA, at 2.0)) completed)
                    "completing twice is refused; completed-at stays the first"

            testCase "Canceled + Succeed: refused, AlreadyCanceled"
            <| fun () ->
                refused
                    RequestError.AlreadyCanceled
                    (transition (RequestCommand.Succeed(tokenA, at 2.0)) canceled)
                    "a canceled request takes no outcome"
        ]

let private failRows =
    testList
        "Fail"
        [
            testCase "Running + Fail with the current token below MaxErrors: runnable after the backoff, one more error"
            <| fun () ->
                Expect.equal
                    (transition (RequestCommand.Fail(tokenA, at 1.0, "boom", 0.0)) running)
                    (Ok
                        { fresh with
                            Errors = 1
                            LastAttemptAt = Some(at 1.0)
                            LastError = Some "boom"
                            State = RequestState.Runnable(Some((at 1.0).AddSeconds 30.0))
                        })
                    "1 of 3 errors: backoff-until is the time plus the Go default (1 × 2 × 15 s at sample 0)"

            testCase "Running + Fail with the current token at MaxErrors: dead, no backoff"
            <| fun () ->
                Expect.equal
                    (transition (RequestCommand.Fail(tokenB, at 11.0, "third boom", 0.5)) runningLastAttempt)
                    (Ok
                        { runningLastAttempt with
                            Errors = 3
                            LastAttemptAt = Some(at 11.0)
                            LastError = Some "third boom"
                            State = RequestState.Dead
                        })
                    "3 of 3 errors: dead, backoff cleared as in Go"

            testCase "Running + FailPermanently with the current token: dead at once, errors raised to MaxErrors"
            <| fun () ->
                Expect.equal
                    (transition (RequestCommand.FailPermanently(tokenA, at 1.0, "bad data")) running)
                    (Ok
                        { fresh with
                            Errors = 3
                            LastAttemptAt = Some(at 1.0)
                            LastError = Some "bad data"
                            State = RequestState.Dead
                        })
                    "0 of 3 errors: dead at once, no backoff, its count at MaxErrors"

            testCase "Running + FailPermanently with another token: refused, StaleToken"
            <| fun () ->
                refused
                    RequestError.StaleToken
                    (transition (RequestCommand.FailPermanently(tokenA, at 11.0, "late")) runningLastAttempt)
                    "a stale attempt cannot end the current one"

            testCase "Runnable, Dead, Completed or Canceled + FailPermanently: refused as Fail is"
            <| fun () ->
                for state, expected in
                    [
                        RequestState.Runnable None, RequestError.NotRunning
                        RequestState.Dead, RequestError.NotRunning
                        RequestState.Completed(at 1.0), RequestError.AlreadyCompleted
                        RequestState.Canceled(at 1.0), RequestError.AlreadyCanceled
                    ] do
                    refused
                        expected
                        (transition (RequestCommand.FailPermanently(tokenA, at 2.0, "x")) { fresh with State = state })
                        $"%A{state}"

            testCase "Running + Fail with another token: refused, StaleToken"
            <| fun () ->
                refused
                    RequestError.StaleToken
                    (transition (RequestCommand.Fail(tokenA, at 11.0, "late", 0.0)) runningLastAttempt)
                    "a stale attempt cannot count a failure against the current one"

            testCase "Runnable + Fail: refused, NotRunning"
            <| fun () ->
                refused
                    RequestError.NotRunning
                    (transition (RequestCommand.Fail(tokenA, at 1.0, "boom", 0.0)) fresh)
                    "an outcome needs a running attempt"

            testCase "Dead + Fail: refused, NotRunning"
            <| fun () ->
                refused
                    RequestError.NotRunning
                    (transition (RequestCommand.Fail(tokenB, at 12.0, "boom", 0.0)) dead)
                    "a dead request runs no attempt, so errors cannot pass MaxErrors"

            testCase "Completed + Fail: refused, AlreadyCompleted"
            <| fun () ->
                refused
                    RequestError.AlreadyCompleted
                    (transition (RequestCommand.Fail(tokenA, at 2.0, "boom", 0.0)) completed)
                    "a completed request stays completed"

            testCase "Canceled + Fail: refused, AlreadyCanceled"
            <| fun () ->
                refused
                    RequestError.AlreadyCanceled
                    (transition (RequestCommand.Fail(tokenA, at 2.0, "boom", 0.0)) canceled)
                    "a canceled request stays canceled"
        ]

let private expireLeaseRows =
    testList
        "ExpireLease"
        [
            testCase "Running + ExpireLease once the lease passed, below MaxErrors: runnable at once, one more error"
            <| fun () ->
                Expect.equal
                    (transition (RequestCommand.ExpireLease(at 5.0)) running)
                    (Ok
                        { fresh with
                            Errors = 1
                            LastAttemptAt = Some(at 5.0)
                            LastError = Some HandlerRequest.LeaseExpiredError
                            State = RequestState.Runnable(Some(at 5.0))
                        })
                    "the lost attempt counts as a failure, with no backoff: runnable from the expiry on"

            testCase "Running + ExpireLease once the lease passed, at MaxErrors: dead"
            <| fun () ->
                Expect.equal
                    (transition (RequestCommand.ExpireLease(at 20.0)) runningLastAttempt
                     |> Result.map (fun request -> request.Errors, request.State))
                    (Ok(3, RequestState.Dead))
                    "a lost last attempt makes the request dead like any last failure"

            testCase "Running + ExpireLease before the lease's end: refused, LeaseNotExpired"
            <| fun () ->
                refused
                    (RequestError.LeaseNotExpired(at 5.0))
                    (transition (RequestCommand.ExpireLease((at 5.0).AddTicks -1L)) running)
                    "a tick before its end the lease still holds"

            testCase "Runnable + ExpireLease: refused, NotRunning"
            <| fun () ->
                refused
                    RequestError.NotRunning
                    (transition (RequestCommand.ExpireLease(at 30.0)) backingOff)
                    "there is no lease to expire"

            testCase "Dead + ExpireLease: refused, NotRunning"
            <| fun () ->
                refused
                    RequestError.NotRunning
                    (transition (RequestCommand.ExpireLease(at 30.0)) dead)
                    "there is no lease to expire"

            testCase "Completed + ExpireLease: refused, AlreadyCompleted"
            <| fun () ->
                refused
                    RequestError.AlreadyCompleted
                    (transition (RequestCommand.ExpireLease(at 30.0)) completed)
                    "the attempt reported its outcome; its lease is gone"

            testCase "Canceled + ExpireLease: refused, AlreadyCanceled"
            <| fun () ->
                refused
                    RequestError.AlreadyCanceled
                    (transition (RequestCommand.ExpireLease(at 30.0)) canceled)
                    "a canceled request holds no lease"
        ]

let private releaseRows =
    testList
        "Release"
        [
            testCase "Running + Release with the current token: runnable at once, nothing counted"
            <| fun () ->
                Expect.equal
                    (transition (RequestCommand.Release tokenA) running)
                    (Ok
                        { fresh with
                            State = RequestState.Runnable None
                        })
                    "a claim given back unrun leaves the request as it was before the claim, with no backoff"

            testCase "Running + Release with another token: refused, StaleToken"
            <| fun () ->
                refused
                    RequestError.StaleToken
                    (transition (RequestCommand.Release tokenB) running)
                    "only the attempt holding the claim may give it back"

            testCase "Runnable + Release: refused, NotRunning"
            <| fun () ->
                refused
                    RequestError.NotRunning
                    (transition (RequestCommand.Release tokenA) backingOff)
                    "nothing is held"

            testCase "Dead + Release: refused, NotRunning"
            <| fun () ->
                refused RequestError.NotRunning (transition (RequestCommand.Release tokenA) dead) "nothing is held"

            testCase "Completed + Release: refused, AlreadyCompleted"
            <| fun () ->
                refused
                    RequestError.AlreadyCompleted
                    (transition (RequestCommand.Release tokenA) completed)
                    "a completed request stays completed"

            testCase "Canceled + Release: refused, AlreadyCanceled"
            <| fun () ->
                refused
                    RequestError.AlreadyCanceled
                    (transition (RequestCommand.Release tokenA) canceled)
                    "a canceled request stays canceled"
        ]

let private renewRows =
    testList
        "Renew"
        [
            testCase "Running + Renew with the current token: the lease runs until the new end, nothing else changes"
            <| fun () ->
                Expect.equal
                    (transition (RequestCommand.Renew(tokenA, at 8.0)) running)
                    (Ok
                        { running with
                            State = RequestState.Running { Token = tokenA; Until = at 8.0 }
                        })
                    "a heartbeat moves the lease's end later and keeps the token, the errors and the rest"

            testCase "Running + Renew with the current token to an earlier end: accepted, the lease never shortens"
            <| fun () ->
                Expect.equal
                    (transition (RequestCommand.Renew(tokenA, at 4.0)) running)
                    (Ok running)
                    "a late or repeated heartbeat leaves the lease until its later end (t0 + 5 min)"

                Expect.equal
                    (transition (RequestCommand.Renew(tokenA, at 5.0)) running)
                    (Ok running)
                    "a heartbeat to the lease's very end changes nothing either"

            testCase "Running + Renew with another token: refused, StaleToken"
            <| fun () ->
                refused
                    RequestError.StaleToken
                    (transition (RequestCommand.Renew(tokenB, at 8.0)) running)
                    "only the attempt holding the claim may renew it"

            testCase "Runnable + Renew: refused, NotRunning"
            <| fun () ->
                refused
                    RequestError.NotRunning
                    (transition (RequestCommand.Renew(tokenA, at 8.0)) backingOff)
                    "a recovered or failed attempt holds nothing to renew"

            testCase "Dead + Renew: refused, NotRunning"
            <| fun () ->
                refused
                    RequestError.NotRunning
                    (transition (RequestCommand.Renew(tokenB, at 20.0)) dead)
                    "nothing is held"

            testCase "Completed + Renew: refused, AlreadyCompleted"
            <| fun () ->
                refused
                    RequestError.AlreadyCompleted
                    (transition (RequestCommand.Renew(tokenA, at 8.0)) completed)
                    "a completed request holds no lease"

            testCase "Canceled + Renew: refused, AlreadyCanceled"
            <| fun () ->
                refused
                    RequestError.AlreadyCanceled
                    (transition (RequestCommand.Renew(tokenA, at 8.0)) canceled)
                    "a canceled request holds no lease"
        ]

let private cancelRows =
    testList
        "Cancel"
        [
            testCase "Runnable + Cancel: canceled at that time"
            <| fun () ->
                Expect.equal
                    (transition (RequestCommand.Cancel(at 1.0)) fresh)
                    (Ok
                        { fresh with
                            State = RequestState.Canceled(at 1.0)
                        })
                    "a person may cancel a waiting request; nothing else changes"

            testCase "Runnable backing off + Cancel: canceled, the backoff dropped"
            <| fun () ->
                let result = transition (RequestCommand.Cancel(at 1.2)) backingOff

                Expect.equal
                    (result |> Result.map (fun r -> r.State, r.Errors, r.LastError))
                    (Ok(RequestState.Canceled(at 1.2), 1, Some "boom"))
                    "the errors and last error stay; a canceled request will never run, so no backoff is kept"

            testCase "Dead + Cancel: canceled at that time"
            <| fun () ->
                Expect.equal
                    (transition (RequestCommand.Cancel(at 30.0)) dead
                     |> Result.map (fun r -> r.State, r.Errors))
                    (Ok(RequestState.Canceled(at 30.0), 3))
                    "canceling is how a person gives up on a dead request"

            testCase "Running + Cancel: refused, AlreadyClaimed"
            <| fun () ->
                refused
                    (RequestError.AlreadyClaimed(at 5.0))
                    (transition (RequestCommand.Cancel(at 1.0)) running)
                    "an attempt is running; its outcome comes first (Go's row lock makes a cancel wait likewise)"

            testCase "Completed + Cancel: refused, AlreadyCompleted"
            <| fun () ->
                refused
                    RequestError.AlreadyCompleted
                    (transition (RequestCommand.Cancel(at 2.0)) completed)
                    "a completed request is absorbing"

            testCase "Canceled + Cancel: refused, AlreadyCanceled, the first time kept"
            <| fun () ->
                refused
                    RequestError.AlreadyCanceled
                    (transition (RequestCommand.Cancel(at 2.0)) canceled)
                    "a canceled request is absorbing: canceled-at stays the first time"
        ]

let private reExecuteRows =
    testList
        "ReExecute"
        [
            testCase "Runnable + ReExecute: errors back to 0, backoff cleared"
            <| fun () ->
                Expect.equal
                    (transition RequestCommand.ReExecute backingOff)
                    (Ok
                        { backingOff with
                            Errors = 0
                            State = RequestState.Runnable None
                        })
                    "as in Go: errors 0, backoff-until cleared, last attempt and last error kept"

            testCase "Dead + ReExecute: runnable again with 0 errors, last error kept"
            <| fun () ->
                Expect.equal
                    (transition RequestCommand.ReExecute dead)
                    (Ok
                        { dead with
                            Errors = 0
                            State = RequestState.Runnable None
                        })
                    "re-executing is how a person gives a dead request another MaxErrors attempts"

            testCase "Running + ReExecute: refused, AlreadyClaimed"
            <| fun () ->
                refused
                    (RequestError.AlreadyClaimed(at 5.0))
                    (transition RequestCommand.ReExecute running)
                    "an attempt is running; resetting its errors under it would lose its outcome's count"

            testCase "Completed + ReExecute: refused, AlreadyCompleted"
            <| fun () ->
                refused
                    RequestError.AlreadyCompleted
                    (transition RequestCommand.ReExecute completed)
                    "terminal states are absorbing; in Go re-execute did not make a completed request runnable either"

            testCase "Canceled + ReExecute: refused, AlreadyCanceled"
            <| fun () ->
                refused
                    RequestError.AlreadyCanceled
                    (transition RequestCommand.ReExecute canceled)
                    "terminal states are absorbing; in Go re-execute did not make a canceled request runnable either"
        ]

let private transitionRows =
    testList
        "transitions"
        [
            claimRows
            succeedRows
            failRows
            expireLeaseRows
            releaseRows
            renewRows
            cancelRows
            reExecuteRows
        ]

// ---------------------------------------------------------------------------------------------
// Other examples.

let private otherExamples =
    testList
        "examples"
        [
            testCase "create copies the event and the settings and starts runnable with no errors"
            <| fun () ->
                Expect.equal
                    fresh
                    {
                        Id = Guid.Parse "0190a1b2-0000-7000-8000-000000000002"
                        HandlerName = HandlerName.Create "send-mail"
                        EventId = event.Id
                        EventName = event.Name
                        EventData = event.Data
                        EventTimestamp = event.Timestamp
                        EventEntity = None
                        CorrelationId = None
                        EventTrace = None
                        MaxErrors = 3
                        Priority = 50
                        Backoff = BackoffPolicy.Default
                        Timeout = None
                        Errors = 0
                        LastAttemptAt = None
                        LastError = None
                        State = RequestState.Runnable None
                    }
                    "as in Go: the event's fields, MaxErrors and Priority from the settings, no attempt yet"

            testCase "the fixtures are in the states their names say"
            <| fun () ->
                Expect.equal
                    ([ fresh; backingOff; running; runningLastAttempt; dead; completed; canceled ]
                     |> List.map (_.State >> Gens.stateKind))
                    [
                        "runnable"
                        "backing off"
                        "running"
                        "running"
                        "dead"
                        "completed"
                        "canceled"
                    ]
                    "the transition examples rely on each fixture's state"

            testCase "a request backing off is runnable exactly from the backoff's end"
            <| fun () ->
                let until = HandlerRequest.backoffUntil backingOff |> Option.get
                Expect.equal until ((at 1.0).AddSeconds 30.0) "sample 0 gives r = 15, so 30 s after the failure"

                Expect.isFalse
                    (HandlerRequest.isRunnable (until.AddTicks -1L) backingOff)
                    "a tick before the end it waits"

                Expect.isTrue
                    (HandlerRequest.isRunnable until backingOff)
                    "at the end it may run (Go: not in the future)"

            testCase "a lease is expired exactly from its end"
            <| fun () ->
                Expect.isFalse
                    (HandlerRequest.isLeaseExpired ((at 5.0).AddTicks -1L) running)
                    "a tick before its end the lease holds"

                Expect.isTrue (HandlerRequest.isLeaseExpired (at 5.0) running) "at its end the lease has run out"

            testCase "the predicates of each state"
            <| fun () ->
                let later = at 60.0

                let row request =
                    HandlerRequest.isRunnable later request,
                    HandlerRequest.isDead request,
                    HandlerRequest.isTerminal request,
                    HandlerRequest.isLeaseExpired later request

                Expect.equal
                    ([ fresh; backingOff; running; dead; completed; canceled ] |> List.map row)
                    [
                        true, false, false, false
                        true, false, false, false
                        false, false, false, true
                        false, true, false, false
                        false, false, true, false
                        false, false, true, false
                    ]
                    "runnable, dead, terminal and lease-expired an hour on, for each state in turn"

            testCase "a lease that would pass the end of time ends at the end of time"
            <| fun () ->
                Expect.equal
                    (transition (RequestCommand.Claim(t0, TimeSpan.MaxValue, tokenA)) fresh
                     |> Result.map HandlerRequest.lease)
                    (Ok(
                        Some
                            {
                                Token = tokenA
                                Until = DateTimeOffset.MaxValue
                            }
                    ))
                    "the lease's end saturates instead of overflowing"

            testCase "runOrder puts lower priority first, then earlier events"
            <| fun () ->
                let withPriority priority minutes =
                    { fresh with
                        Priority = priority
                        EventTimestamp = at minutes
                    }

                let requests =
                    [
                        withPriority 50 1.0
                        withPriority 10 5.0
                        withPriority 50 0.0
                        withPriority 10 9.0
                    ]

                Expect.equal
                    (requests |> List.sortBy HandlerRequest.runOrder)
                    [
                        withPriority 10 5.0
                        withPriority 10 9.0
                        withPriority 50 0.0
                        withPriority 50 1.0
                    ]
                    "as Go hands out unexecuted requests: priority ascending, then event time ascending"

            testCase "stateOfFields refuses a request both completed and canceled"
            <| fun () ->
                Expect.isError
                    (HandlerRequest.stateOfFields 0 3 None (Some t0) (Some t0) None)
                    "no transition leaves a terminal state"

            testCase "stateOfFields refuses a completed or canceled request holding a lease"
            <| fun () ->
                let lease = Some { Token = tokenA; Until = t0 }

                Expect.isError (HandlerRequest.stateOfFields 0 3 None (Some t0) None lease) "Succeed drops the lease"

                Expect.isError
                    (HandlerRequest.stateOfFields 0 3 None None (Some t0) lease)
                    "a running request cannot be canceled"

            testCase "stateOfFields refuses a lease at max errors"
            <| fun () ->
                Expect.isError
                    (HandlerRequest.stateOfFields 3 3 None None None (Some { Token = tokenA; Until = t0 }))
                    "a dead request cannot be claimed"

            testCase "stateOfFields refuses a backoff outside a runnable request that has failed"
            <| fun () ->
                let lease = Some { Token = tokenA; Until = t0 }

                for errors, completedAt, canceledAt, lease, why in
                    [
                        1, None, None, lease, "a claim ends the backoff"
                        3, None, None, None, "a last failure clears the backoff (Go too)"
                        1, Some t0, None, None, "a success clears the backoff (Go too)"
                        1, None, Some t0, None, "a canceled request keeps no backoff"
                        0, None, None, None, "only a failure sets a backoff, and re-execute clears it with the errors"
                    ] do
                    Expect.isError (HandlerRequest.stateOfFields errors 3 (Some t0) completedAt canceledAt lease) why

            testCase "stateOfFields refuses errors outside 0 to max errors, and max errors below 1"
            <| fun () ->
                Expect.isError (HandlerRequest.stateOfFields -1 3 None None None None) "errors count attempts"

                Expect.isError
                    (HandlerRequest.stateOfFields 4 3 None None None None)
                    "errors stop at max errors: a dead request runs no more"

                Expect.isError
                    (HandlerRequest.stateOfFields 0 0 None None None None)
                    "settings refuse MaxErrors below 1"

            testCase "stateOfFields refuses a completed request at max errors"
            <| fun () ->
                Expect.isError
                    (HandlerRequest.stateOfFields 3 3 None (Some t0) None None)
                    "only a running request completes, and a running request is below max errors"
        ]

/// A command in words, cheaply (%A on every step of every history is slow).
let private describe (command: RequestCommand) =
    match command with
    | RequestCommand.Claim(now, leaseFor, token) -> $"Claim(%O{now}, %O{leaseFor}, %O{token})"
    | RequestCommand.Succeed(token, at) -> $"Succeed(%O{token}, %O{at})"
    | RequestCommand.Fail(token, at, error, sample) -> $"Fail(%O{token}, %O{at}, %s{error}, %g{sample})"
    | RequestCommand.FailPermanently(token, at, error) -> $"FailPermanently(%O{token}, %O{at}, %s{error})"
    | RequestCommand.ExpireLease now -> $"ExpireLease %O{now}"
    | RequestCommand.Cancel at -> $"Cancel %O{at}"
    | RequestCommand.ReExecute -> "ReExecute"
    | RequestCommand.Release token -> $"Release %O{token}"
    | RequestCommand.Renew(token, until) -> $"Renew(%O{token}, %O{until})"

/// A Go operation in words, cheaply.
let private describeGo (operation: GoOperation) =
    match operation with
    | Execute(claimAt, endAt, _, Succeeded) -> $"execute from %O{claimAt} to %O{endAt}, succeeding"
    | Execute(claimAt, endAt, _, Failed(error, sample)) ->
        $"execute from %O{claimAt} to %O{endAt}, failing with %s{error} (sample %g{sample})"
    | Cancel at -> $"cancel at %O{at}"
    | Reexecute -> "re-execute"

// ---------------------------------------------------------------------------------------------
// A tiny model of the Go framework's handler request, from shared/reference/BEHAVIOUR.md.

type private GoRequest =
    {
        Errors: int
        MaxErrors: int
        LastAttemptAt: DateTimeOffset option
        LastError: string option
        BackoffUntil: DateTimeOffset option
        CompletedAt: DateTimeOffset option
        CanceledAt: DateTimeOffset option
    }

[<RequireQualifiedAccess>]
module private Go =

    let created (maxErrors: int) =
        {
            Errors = 0
            MaxErrors = maxErrors
            LastAttemptAt = None
            LastError = None
            BackoffUntil = None
            CompletedAt = None
            CanceledAt = None
        }

    /// The default backoff: errors * 2 * r seconds, r a whole number from 15 to 59.
    let backoff (errors: int) (sample: float) =
        let r = 15L + int64 (Math.Floor(sample * 45.0))
        TimeSpan.FromTicks(int64 errors * 2L * r * TimeSpan.TicksPerSecond)

    /// "Unexecuted": not completed, not canceled, errors below max, backoff absent or not in the future.
    let isUnexecuted (now: DateTimeOffset) (request: GoRequest) =
        request.CompletedAt.IsNone
        && request.CanceledAt.IsNone
        && request.Errors < request.MaxErrors
        && (request.BackoffUntil |> Option.forall (fun until -> until <= now))

    /// Dead: not completed, not canceled, errors at or above max.
    let isDead (request: GoRequest) =
        request.CompletedAt.IsNone
        && request.CanceledAt.IsNone
        && request.Errors >= request.MaxErrors

    /// Execute: refused at max errors or when completed; success and failure as BEHAVIOUR.md says.
    let execute (now: DateTimeOffset) (outcome: GoOutcome) (request: GoRequest) : GoRequest option =
        if request.Errors >= request.MaxErrors || request.CompletedAt.IsSome then
            None
        else
            match outcome with
            | Succeeded ->
                Some
                    { request with
                        LastAttemptAt = Some now
                        LastError = None
                        CompletedAt = Some now
                        BackoffUntil = None
                    }
            | Failed(error, sample) ->
                let errors = request.Errors + 1

                Some
                    { request with
                        LastAttemptAt = Some now
                        LastError = Some error
                        Errors = errors
                        BackoffUntil =
                            if errors < request.MaxErrors then
                                Some(now + backoff errors sample)
                            else
                                None
                    }

    /// Cancel sets canceled-at.
    let cancel (at: DateTimeOffset) (request: GoRequest) = { request with CanceledAt = Some at }

    /// Re-execute clears backoff-until and sets errors to 0.
    let reexecute (request: GoRequest) =
        { request with
            BackoffUntil = None
            Errors = 0
        }

let private goLease = TimeSpan.FromMinutes 5.0

/// Checks that the port and the Go model agree field by field.
let private agree (context: string) (now: DateTimeOffset) (port: HandlerRequest) (go: GoRequest) =
    Expect.equal port.Errors go.Errors $"%s{context}: Errors must be Go's"
    Expect.equal port.LastError go.LastError $"%s{context}: LastError must be Go's"
    Expect.equal port.LastAttemptAt go.LastAttemptAt $"%s{context}: LastAttemptAt must be Go's"
    Expect.equal (HandlerRequest.completedAt port) go.CompletedAt $"%s{context}: completed-at must be Go's"
    Expect.equal (HandlerRequest.canceledAt port) go.CanceledAt $"%s{context}: canceled-at must be Go's"

    // Departure: Go keeps a canceled request's backoff-until, which no query reads any more; the port
    // keeps none.
    if go.CanceledAt.IsNone then
        Expect.equal (HandlerRequest.backoffUntil port) go.BackoffUntil $"%s{context}: backoff-until must be Go's"

    Expect.equal (HandlerRequest.isDead port) (Go.isDead go) $"%s{context}: dead exactly when Go says dead"

    for later in [ now; now.AddMinutes 1.0; now.AddHours 1.0 ] do
        Expect.equal
            (HandlerRequest.isRunnable later port)
            (Go.isUnexecuted later go)
            $"%s{context}: runnable at %O{later} exactly when Go's executor would pick it"

/// Runs one Go operation on the port and on the model, checking every decision agrees.
let private stepBoth (port: HandlerRequest, go: GoRequest, now: DateTimeOffset) (operation: GoOperation) =
    let context = $"after %s{describeGo operation}"

    let port, go, now =
        match operation with
        | Execute(claimAt, endAt, token, outcome) ->
            let claim =
                HandlerRequest.transition policy (RequestCommand.Claim(claimAt, goLease, token)) port

            Expect.equal
                (Result.isOk claim)
                (Go.isUnexecuted claimAt go)
                $"%s{context}: the port claims exactly the requests Go's executor would pick"

            match claim with
            | Error _ -> port, go, endAt
            | Ok claimed ->
                let command =
                    match outcome with
                    | Succeeded -> RequestCommand.Succeed(token, endAt)
                    | Failed(error, sample) -> RequestCommand.Fail(token, endAt, error, sample)

                let port =
                    match HandlerRequest.transition policy command claimed with
                    | Ok port -> port
                    | Error error -> failtestf "%s: the claimed attempt's outcome was refused: %A" context error

                let go =
                    Go.execute endAt outcome go
                    |> Option.defaultWith (fun () -> failtestf "%s: Go refused to execute what it picked" context)

                port, go, endAt
        | Cancel at ->
            match HandlerRequest.transition policy (RequestCommand.Cancel at) port with
            | Ok port -> port, Go.cancel at go, at
            | Error error ->
                // Departure: canceling a completed or canceled request is refused. In Go it overwrote
                // canceled-at and changed neither runnability nor deadness.
                Expect.isTrue
                    (HandlerRequest.isTerminal port)
                    $"%s{context}: only a terminal request refuses a cancel between attempts, got %A{error}"

                let goCanceled = Go.cancel at go
                Expect.isFalse (Go.isUnexecuted DateTimeOffset.MaxValue goCanceled) "Go's cancel made it runnable"
                Expect.isFalse (Go.isDead goCanceled) "Go's cancel made it dead"
                port, go, at
        | Reexecute ->
            match HandlerRequest.transition policy RequestCommand.ReExecute port with
            | Ok port -> port, Go.reexecute go, now
            | Error error ->
                // Departure: re-executing a completed or canceled request is refused. In Go it reset the
                // errors and backoff but the request stayed completed or canceled: never picked again.
                Expect.isTrue
                    (HandlerRequest.isTerminal port)
                    $"%s{context}: only a terminal request refuses a re-execute between attempts, got %A{error}"

                let goReexecuted = Go.reexecute go

                Expect.isFalse
                    (Go.isUnexecuted DateTimeOffset.MaxValue goReexecuted)
                    "Go's re-execute made a terminal request runnable"

                Expect.isFalse (Go.isDead goReexecuted) "Go's re-execute made a terminal request dead"
                port, go, now

    agree context now port go
    port, go, now

// ---------------------------------------------------------------------------------------------
// Laws.

/// The invariants every reachable request keeps.
let private invariants (context: string) (request: HandlerRequest) =
    Expect.isGreaterThanOrEqual request.Errors 0 $"%s{context}: errors count attempts, never below 0"

    Expect.isLessThanOrEqual request.Errors request.MaxErrors $"%s{context}: errors never exceed MaxErrors"

    match request.State with
    | RequestState.Dead ->
        Expect.equal request.Errors request.MaxErrors $"%s{context}: a dead request has exactly MaxErrors errors"
    | RequestState.Runnable _
    | RequestState.Running _
    | RequestState.Completed _ ->
        Expect.isLessThan
            request.Errors
            request.MaxErrors
            $"%s{context}: only dead or canceled requests reach MaxErrors"
    | RequestState.Canceled _ -> ()

    match request.State with
    | RequestState.Runnable(Some _) ->
        Expect.isGreaterThan request.Errors 0 $"%s{context}: only a failure sets a backoff"
    | RequestState.Runnable None
    | RequestState.Running _
    | RequestState.Completed _
    | RequestState.Dead
    | RequestState.Canceled _ -> ()

let private fields (request: HandlerRequest) =
    HandlerRequest.stateOfFields
        request.Errors
        request.MaxErrors
        (HandlerRequest.backoffUntil request)
        (HandlerRequest.completedAt request)
        (HandlerRequest.canceledAt request)
        (HandlerRequest.lease request)

let private forAll (generator: Gen<'a>) (body: 'a -> unit) =
    Prop.forAll (Arb.fromGen generator) body

/// Raw columns a store might hold, most of them impossible.
type private Columns =
    {
        Errors: int
        MaxErrors: int
        BackoffUntil: DateTimeOffset option
        CompletedAt: DateTimeOffset option
        CanceledAt: DateTimeOffset option
        Lease: Lease option
    }

let private columns: Gen<Columns> =
    let time = Gen.elements [ t0; at 1.0 ]

    let lease =
        Gen.map2 (fun token until -> { Token = token; Until = until }) (Gen.elements [ tokenA; tokenB ]) time

    gen {
        let! maxErrors = Gen.choose (-1, 4)
        let! errors = Gen.choose (-1, 5)
        let! backoffUntil = Gen.optionOf time
        let! completedAt = Gen.optionOf time
        let! canceledAt = Gen.optionOf time
        let! lease = Gen.optionOf lease

        return
            {
                Errors = errors
                MaxErrors = maxErrors
                BackoffUntil = backoffUntil
                CompletedAt = completedAt
                CanceledAt = canceledAt
                Lease = lease
            }
    }

/// Whether some reachable request has these columns, written again from the invariants.
let private possible (c: Columns) =
    let inRange = c.MaxErrors >= 1 && c.Errors >= 0 && c.Errors <= c.MaxErrors
    let belowMax = c.Errors < c.MaxErrors

    inRange
    && match c.CompletedAt, c.CanceledAt, c.Lease with
       | Some _, None, None -> belowMax && c.BackoffUntil.IsNone
       | None, Some _, None -> c.BackoffUntil.IsNone
       | None, None, Some _ -> belowMax && c.BackoffUntil.IsNone
       | None, None, None ->
           match c.BackoffUntil with
           | Some _ -> belowMax && c.Errors > 0
           | None -> true
       | _ -> false

let private laws =
    testList
        "laws"
        [
            testCase "the request generator reaches every state"
            <| fun () ->
                let kinds =
                    Gen.sampleWithSeed (Rnd(20240501UL, 1UL)) 50 600 Gens.history
                    |> Array.countBy (fun history -> Gens.stateKind history.Request.State)
                    |> Map.ofArray

                for kind in Gens.stateKinds do
                    Expect.isGreaterThan
                        (kinds |> Map.tryFind kind |> Option.defaultValue 0)
                        50
                        $"histories must end %s{kind} often (in %A{kinds}), so the laws see every state"

            Property.law "replaying a history's commands from create gives the same request"
            <| fun (history: History) ->
                let replayed =
                    history.Steps
                    |> List.fold
                        (fun request step ->
                            request |> Result.bind (HandlerRequest.transition history.Policy step.Command))
                        (Ok history.Created)

                Expect.equal replayed (Ok history.Request) "the transition is a pure function of request and command"

            Property.lawWith 300 "every reachable request keeps the invariants, whatever command comes next"
            <| fun (probe: Probe) ->
                for step in probe.History.Steps do
                    invariants $"after %s{describe step.Command}" step.After

                match HandlerRequest.transition probe.History.Policy probe.Command probe.History.Request with
                | Ok after -> invariants $"after %s{describe probe.Command}" after
                | Error _ -> ()

            Property.lawWith 300 "errors never exceed MaxErrors"
            <| fun (probe: Probe) ->
                let errorsAfter =
                    HandlerRequest.transition probe.History.Policy probe.Command probe.History.Request
                    |> Result.map _.Errors
                    |> Result.defaultValue probe.History.Request.Errors

                Expect.isLessThanOrEqual
                    errorsAfter
                    probe.History.Request.MaxErrors
                    "no command takes errors past MaxErrors: a dead request runs no attempt"

            Property.lawWith 300 "completed and canceled requests refuse every command and stay so"
            <| forAll (Gens.probeWith Gens.anyCommand Gens.terminalHistory) (fun probe ->
                let request = probe.History.Request

                let expected =
                    match probe.Command, request.State with
                    | RequestCommand.Claim(_, leaseFor, _), _ when leaseFor <= TimeSpan.Zero ->
                        RequestError.LeaseNotPositive leaseFor
                    | _, RequestState.Completed _ -> RequestError.AlreadyCompleted
                    | _, RequestState.Canceled _ -> RequestError.AlreadyCanceled
                    | _, state -> failtestf "the terminal generator made a request in %A" state

                Expect.equal
                    (HandlerRequest.transition probe.History.Policy probe.Command request)
                    (Error expected)
                    "a terminal state is absorbing: every command is refused, re-execute and cancel included")

            Property.law "a request is never both runnable and dead"
            <| fun (history: History) ->
                for later in
                    [
                        history.Now
                        Backoff.addSaturating history.Now (TimeSpan.FromHours 1.0)
                        DateTimeOffset.MaxValue
                    ] do
                    Expect.isFalse
                        (HandlerRequest.isRunnable later history.Request
                         && HandlerRequest.isDead history.Request)
                        "dead requests wait for a person; runnable ones for a worker"

            Property.law
                "a request is dead exactly when its errors reached MaxErrors and it is neither completed nor canceled"
            <| fun (request: HandlerRequest) ->
                Expect.equal
                    (HandlerRequest.isDead request)
                    (request.Errors >= request.MaxErrors
                     && (HandlerRequest.completedAt request).IsNone
                     && (HandlerRequest.canceledAt request).IsNone)
                    "Go's definition of dead"

            Property.law "a request is runnable exactly when Go would hand it out and no attempt holds it"
            <| fun (history: History) ->
                let request = history.Request

                for later in
                    [
                        history.Now
                        Backoff.addSaturating history.Now (TimeSpan.FromMinutes 1.0)
                        Backoff.addSaturating history.Now (TimeSpan.FromHours 1.0)
                    ] do
                    Expect.equal
                        (HandlerRequest.isRunnable later request)
                        ((HandlerRequest.completedAt request).IsNone
                         && (HandlerRequest.canceledAt request).IsNone
                         && (HandlerRequest.lease request).IsNone
                         && request.Errors < request.MaxErrors
                         && (HandlerRequest.backoffUntil request
                             |> Option.forall (fun until -> until <= later)))
                        $"Go's unexecuted, plus no lease, at %O{later}"

            Property.law "a request is terminal exactly when completed or canceled"
            <| fun (request: HandlerRequest) ->
                Expect.equal
                    (HandlerRequest.isTerminal request)
                    ((HandlerRequest.completedAt request).IsSome
                     || (HandlerRequest.canceledAt request).IsSome)
                    "the absorbing states are the terminal ones"

            Property.lawWith 300 "a claim is accepted exactly when the request is runnable then and the lease positive"
            <| forAll (Gens.probeWith Gens.claimProbe Gens.history) (fun probe ->
                match probe.Command with
                | RequestCommand.Claim(now, leaseFor, token) ->
                    let request = probe.History.Request
                    let result = HandlerRequest.transition probe.History.Policy probe.Command request

                    Expect.equal
                        (Result.isOk result)
                        (leaseFor > TimeSpan.Zero && HandlerRequest.isRunnable now request)
                        "the executor claims what the runnable query returns, nothing else"

                    match result with
                    | Ok claimed ->
                        Expect.equal
                            (HandlerRequest.lease claimed)
                            (Some
                                {
                                    Token = token
                                    Until = Backoff.addSaturating now leaseFor
                                })
                            "the claim holds the token given until now + leaseFor"

                        Expect.equal { claimed with State = request.State } request "a claim changes the state only"
                    | Error _ -> ()
                | other -> failtestf "the claim generator made %A" other)

            Property.lawWith 300 "a lease expiry is accepted exactly when a lease has run out by then"
            <| forAll (Gens.probeWith Gens.expireProbe Gens.history) (fun probe ->
                match probe.Command with
                | RequestCommand.ExpireLease now ->
                    Expect.equal
                        (HandlerRequest.transition probe.History.Policy probe.Command probe.History.Request
                         |> Result.isOk)
                        (HandlerRequest.isLeaseExpired now probe.History.Request)
                        "the recovery query and the transition agree"
                | other -> failtestf "the expiry generator made %A" other)

            Property.lawWith 300 "a stale fencing token can neither complete nor fail a request"
            <| forAll
                (Gens.probeWith
                    (fun history -> Gen.oneof [ Gens.succeedProbe history; Gens.failProbe history ])
                    Gens.history)
                (fun probe ->
                    let request = probe.History.Request

                    let token =
                        match probe.Command with
                        | RequestCommand.Succeed(token, _)
                        | RequestCommand.Fail(token, _, _, _) -> token
                        | other -> failtestf "the outcome generator made %A" other

                    let current = HandlerRequest.lease request |> Option.map _.Token
                    let result = HandlerRequest.transition probe.History.Policy probe.Command request

                    if current = Some token then
                        Expect.isOk result "the current attempt's outcome is recorded, late or not"
                    else
                        Expect.isError result $"token %O{token} is not the running attempt's (%O{current})"

                        match request.State with
                        | RequestState.Running _ ->
                            Expect.equal
                                result
                                (Error RequestError.StaleToken)
                                "a running request names the stale token"
                        | RequestState.Runnable _
                        | RequestState.Completed _
                        | RequestState.Dead
                        | RequestState.Canceled _ -> ())

            Property.lawWith
                300
                "a renewal is accepted exactly when its token is the running attempt's, and never shortens the lease"
            <| forAll (Gens.probeWith Gens.renewProbe Gens.history) (fun probe ->
                let request = probe.History.Request

                match probe.Command with
                | RequestCommand.Renew(token, until) ->
                    let result = HandlerRequest.transition probe.History.Policy probe.Command request

                    match HandlerRequest.lease request with
                    | Some lease when lease.Token = token ->
                        Expect.equal
                            (result |> Result.map HandlerRequest.lease)
                            (Ok(
                                Some
                                    { lease with
                                        Until = max lease.Until until
                                    }
                            ))
                            "the current attempt's lease runs until the later of its end and the renewal's"

                        Expect.equal
                            (result |> Result.map (fun renewed -> { renewed with State = request.State }))
                            (Ok request)
                            "a renewal changes the lease only"
                    | Some _ -> Expect.equal result (Error RequestError.StaleToken) "another attempt holds the request"
                    | None ->
                        Expect.isError
                            result
                            $"a request that is not running (%A{request.State}) holds nothing to renew"
                | other -> failtestf "the renewal generator made %A" other)

            Property.lawWith 300 "ExpireLease counts one failed attempt and sets no backoff"
            <| forAll Gens.runningHistory (fun history ->
                let request = history.Request
                let lease = HandlerRequest.lease request |> Option.get
                let now = max history.Now lease.Until

                match HandlerRequest.transition history.Policy (RequestCommand.ExpireLease now) request with
                | Ok expired ->
                    Expect.equal expired.Errors (request.Errors + 1) "the lost attempt counts as one failure"
                    Expect.equal expired.LastAttemptAt (Some now) "the attempt ended when the lease was found expired"

                    Expect.equal
                        expired.LastError
                        (Some HandlerRequest.LeaseExpiredError)
                        "the last error says the lease expired"

                    if expired.Errors < expired.MaxErrors then
                        Expect.equal
                            expired.State
                            (RequestState.Runnable(Some now))
                            "below MaxErrors it is runnable again at once: no backoff beyond the expiry"

                        Expect.isTrue (HandlerRequest.isRunnable now expired) "runnable from the expiry on"
                    else
                        Expect.equal expired.State RequestState.Dead "at MaxErrors the request is dead"
                | Error error -> failtestf "an expired lease must be recoverable, got %A" error)

            Property.lawWith 300 "Fail with the current token counts the attempt and waits the policy's delay"
            <| forAll (Gen.zip3 Gens.runningHistory Gens.sample Gens.pause) (fun (history, sample, pause) ->
                let request = history.Request
                let lease = HandlerRequest.lease request |> Option.get
                let at = Backoff.addSaturating history.Now pause
                let command = RequestCommand.Fail(lease.Token, at, "boom", sample)

                match HandlerRequest.transition history.Policy command request with
                | Ok failed ->
                    let errors = request.Errors + 1
                    Expect.equal failed.Errors errors "one more error"
                    Expect.equal failed.LastAttemptAt (Some at) "the attempt ended then"
                    Expect.equal failed.LastError (Some "boom") "the error is kept"

                    Expect.equal
                        failed.State
                        (if errors < request.MaxErrors then
                             RequestState.Runnable(
                                 Some(Backoff.addSaturating at (Backoff.delay history.Policy errors sample))
                             )
                         else
                             RequestState.Dead)
                        "below MaxErrors: backoff-until = at + delay(errors); at MaxErrors: dead"
                | Error error -> failtestf "the current attempt's failure must be recorded, got %A" error)

            Property.lawWith 300 "Succeed with the current token completes at its time, even after the lease"
            <| forAll (Gen.zip Gens.runningHistory Gens.pause) (fun (history, pause) ->
                let request = history.Request
                let lease = HandlerRequest.lease request |> Option.get
                let at = Backoff.addSaturating (max history.Now lease.Until) pause

                Expect.equal
                    (HandlerRequest.transition history.Policy (RequestCommand.Succeed(lease.Token, at)) request)
                    (Ok
                        { request with
                            LastAttemptAt = Some at
                            LastError = None
                            State = RequestState.Completed at
                        })
                    "fencing, not time, decides: no one claimed the request since, so the outcome stands")

            Property.lawWith 300 "Cancel and ReExecute are accepted exactly on runnable and dead requests"
            <| forAll
                (Gens.probeWith
                    (fun history -> Gen.oneof [ Gens.cancelProbe history; Gens.reExecuteProbe history ])
                    Gens.history)
                (fun probe ->
                    let request = probe.History.Request
                    let result = HandlerRequest.transition probe.History.Policy probe.Command request

                    let waitingOrDead =
                        match request.State with
                        | RequestState.Runnable _
                        | RequestState.Dead -> true
                        | RequestState.Running _
                        | RequestState.Completed _
                        | RequestState.Canceled _ -> false

                    Expect.equal (Result.isOk result) waitingOrDead "a person acts on waiting or dead requests only"

                    match probe.Command, result with
                    | RequestCommand.Cancel at, Ok after ->
                        Expect.equal
                            after
                            { request with
                                State = RequestState.Canceled at
                            }
                            "cancel sets canceled-at and nothing else"
                    | RequestCommand.ReExecute, Ok after ->
                        Expect.equal
                            after
                            { request with
                                Errors = 0
                                State = RequestState.Runnable None
                            }
                            "re-execute clears errors and backoff and nothing else"
                    | _, Error _ -> ()
                    | other, Ok _ -> failtestf "the generator made %A" other)

            Property.lawWith 500 "the same history gives the same fields as the Go framework"
            <| fun (history: GoHistory) ->
                let start = Go.created history.Created.MaxErrors
                agree "when created" history.Created.EventTimestamp history.Created start

                history.Operations
                |> List.fold stepBoth (history.Created, start, history.Created.EventTimestamp)
                |> ignore

            Property.lawWith 300 "stateOfFields inverts the accessors for every reachable request"
            <| fun (history: History) ->
                for request in history.Created :: (history.Steps |> List.map _.After) do
                    Expect.equal
                        (fields request)
                        (Ok request.State)
                        "a store that writes the accessors' columns must read back the same state"

            Property.lawWith 500 "stateOfFields accepts exactly the columns some reachable request has"
            <| forAll columns (fun c ->
                let result =
                    HandlerRequest.stateOfFields c.Errors c.MaxErrors c.BackoffUntil c.CompletedAt c.CanceledAt c.Lease

                Expect.equal (Result.isOk result) (possible c) $"columns %A{c}"

                match result with
                | Ok state ->
                    let request = { fresh with State = state }

                    Expect.equal
                        (HandlerRequest.backoffUntil request,
                         HandlerRequest.completedAt request,
                         HandlerRequest.canceledAt request,
                         HandlerRequest.lease request)
                        (c.BackoffUntil, c.CompletedAt, c.CanceledAt, c.Lease)
                        "an accepted state gives back every column: nothing is silently dropped"
                | Error reason -> Expect.isNotEmpty reason "a refusal says why")

            Property.law "create copies the event and the settings and starts runnable with no errors"
            <| fun (id: Guid) (event: Event) (handler: HandlerName) (settings: HandlerSettings) ->
                let request = HandlerRequest.create id event handler settings

                Expect.equal
                    (request.Id,
                     request.HandlerName,
                     request.EventId,
                     request.EventName,
                     request.EventData,
                     request.EventTimestamp,
                     request.EventEntity,
                     request.CorrelationId,
                     request.EventTrace)
                    (id,
                     handler,
                     event.Id,
                     event.Name,
                     event.Data,
                     event.Timestamp,
                     event.Entity,
                     event.CorrelationId,
                     event.Trace)
                    "the request copies the event's fields, as in Go"

                Expect.equal
                    (request.MaxErrors, request.Priority)
                    (settings.MaxErrors, settings.Priority)
                    "MaxErrors and Priority come from the handler's settings"

                Expect.equal
                    (request.Errors, request.LastAttemptAt, request.LastError, request.State)
                    (0, None, None, RequestState.Runnable None)
                    "a new request has no attempt and may run at once"

            Property.law "runOrder sorts by priority, then event time"
            <| forAll (Gen.choose (0, 20) |> Gen.bind (fun n -> Gen.listOfLength n Gens.history)) (fun histories ->
                let requests = histories |> List.map _.Request
                let sorted = requests |> List.sortBy HandlerRequest.runOrder

                for a, b in List.pairwise sorted do
                    Expect.isTrue
                        (a.Priority < b.Priority
                         || a.Priority = b.Priority && a.EventTimestamp <= b.EventTimestamp)
                        "lower priority first, then earlier events")
        ]

/// The handler-request state machine, its predicates, and its agreement with the Go framework.
let tests = testList "HandlerRequest" [ transitionRows; otherExamples; laws ]
