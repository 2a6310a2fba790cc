/// The pure decisions of an attempt: whether a claimed request starts, and what its handler's result means.
module Events.Tests.AttemptTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Events.Core

/// Every kind of handler result, with arbitrary contents.
let private results: Gen<AttemptResult> =
    Gen.oneof
        [
            Gen.constant AttemptResult.Succeeded
            ArbMap.defaults
            |> ArbMap.generate<NonNull<string>>
            |> Gen.map (fun e -> AttemptResult.Failed e.Get)
            ArbMap.defaults
            |> ArbMap.generate<NonNull<string>>
            |> Gen.map (fun message -> AttemptResult.Threw(InvalidOperationException message.Get))
            ArbMap.defaults
            |> ArbMap.generate<NonNull<string>>
            |> Gen.map (fun e -> AttemptResult.FailedPermanently e.Get)
            ArbMap.defaults
            |> ArbMap.generate<NonNull<string>>
            |> Gen.map (fun message -> AttemptResult.ThrewPermanently(ArgumentException message.Get))
            Gen.choose (1, 100_000)
            |> Gen.map (fun ms -> AttemptResult.TimedOut(TimeSpan.FromMilliseconds(float ms)))
            Gen.constant AttemptResult.Interrupted
            Gen.constant AttemptResult.LostClaim
        ]

type private Case =
    {
        History: History
        Result: AttemptResult
        Sample: float
        Later: TimeSpan
    }

let private cases =
    gen {
        let! history = Gens.runningHistory
        let! result = results
        let! sample = Gens.sample
        let! later = Gen.choose (0, 3_600_000)

        return
            {
                History = history
                Result = result
                Sample = sample
                Later = TimeSpan.FromMilliseconds(float later)
            }
    }
    |> Arb.fromGen

let private config =
    { FsCheckConfig.defaultConfig with
        maxTest = 300
    }

let private law name body =
    testPropertyWithConfig config name (Prop.forAll cases body)

let private tokenOf (request: HandlerRequest) =
    (HandlerRequest.lease request).Value.Token

let tests =
    testList
        "Attempt"
        [
            law "the handler's own transaction commits exactly when the handler succeeded"
            <| fun case ->
                let decision =
                    Attempt.decide (tokenOf case.History.Request) case.History.Now case.Sample case.Result

                let commits =
                    match decision with
                    | AttemptDecision.Record(_, commit) -> commit
                    | AttemptDecision.GiveBack _
                    | AttemptDecision.Abandon -> false

                commits = (case.Result = AttemptResult.Succeeded)

            law "a recorded outcome always applies to the running attempt it belongs to"
            <| fun case ->
                let request = case.History.Request
                let at = Backoff.addSaturating case.History.Now case.Later

                match Attempt.decide (tokenOf request) at case.Sample case.Result with
                | AttemptDecision.Record(command, _) ->
                    HandlerRequest.transition case.History.Policy command request |> Result.isOk
                | AttemptDecision.GiveBack _ ->
                    HandlerRequest.transition case.History.Policy (RequestCommand.Release(tokenOf request)) request
                    |> Result.isOk
                | AttemptDecision.Abandon -> true

            law "a failure, a throw and a timeout record one failed attempt with their error; a success none"
            <| fun case ->
                let request = case.History.Request

                match Attempt.decide (tokenOf request) case.History.Now case.Sample case.Result with
                | AttemptDecision.Record(command, _) ->
                    let next =
                        HandlerRequest.transition case.History.Policy command request
                        |> Result.defaultWith (fun error -> failwith error.Message)

                    match case.Result with
                    | AttemptResult.Succeeded -> next.Errors = request.Errors && next.LastError = None
                    | AttemptResult.Failed _
                    | AttemptResult.Threw _
                    | AttemptResult.TimedOut _ ->
                        // Stored as every store can keep it (U+0000 replaced), as the state machine records it.
                        next.Errors = request.Errors + 1
                        && next.LastError = (Attempt.error case.Result |> Option.map HandlerRequest.storable)
                    | AttemptResult.FailedPermanently _
                    | AttemptResult.ThrewPermanently _ ->
                        next.State = RequestState.Dead
                        && next.Errors = max (request.Errors + 1) request.MaxErrors
                        && next.LastError = (Attempt.error case.Result |> Option.map HandlerRequest.storable)
                    | AttemptResult.Interrupted
                    | AttemptResult.LostClaim -> false
                | AttemptDecision.GiveBack _ -> case.Result = AttemptResult.Interrupted
                | AttemptDecision.Abandon -> case.Result = AttemptResult.LostClaim

            law "giving a claim back counts no error and leaves the request runnable at once"
            <| fun case ->
                let request = case.History.Request

                match Attempt.decide (tokenOf request) case.History.Now case.Sample AttemptResult.Interrupted with
                | AttemptDecision.GiveBack _ ->
                    match
                        HandlerRequest.transition case.History.Policy (RequestCommand.Release(tokenOf request)) request
                    with
                    | Ok released -> released.Errors = request.Errors && released.State = RequestState.Runnable None
                    | Error _ -> false
                | AttemptDecision.Record _
                | AttemptDecision.Abandon -> false

            testCase
                "a thrown handler's error is the Go framework's recovered panic, with the exception's type and stack"
            <| fun () ->
                Expect.equal
                    (Attempt.error (AttemptResult.Threw(InvalidOperationException "boom")))
                    (Some "recovered panic while executing handler request: System.InvalidOperationException: boom")
                    "the Go text, then the exception's type and message (a never-thrown exception has no stack)"

                let thrown =
                    try
                        raise (ArgumentException "bad argument")
                    with error ->
                        error

                let recorded = Attempt.error (AttemptResult.Threw thrown) |> Option.defaultValue ""

                Expect.stringStarts
                    recorded
                    "recovered panic while executing handler request: System.ArgumentException: bad argument\n   at "
                    "a thrown one keeps its stack, as .NET prints it"

                let fingerprint = ErrorFingerprint.ofError recorded
                Expect.equal fingerprint.ExceptionType (Some "System.ArgumentException") "triage reads the type"
                Expect.isNonEmpty fingerprint.Frames "and the application's own frames"

            testCase "a timed-out handler's error names its timeout"
            <| fun () ->
                Expect.equal
                    (Attempt.error (AttemptResult.TimedOut(TimeSpan.FromSeconds 3.0)))
                    (Some "handler timed out after 00:00:03")
                    "the timeout is named"

            testCase "a claimed request starts only with enough of its lease left and not while stopping"
            <| fun () ->
                let lease = TimeSpan.FromMinutes 5.0
                let needed = Attempt.leaseNeeded None lease
                Expect.equal needed (TimeSpan.FromMinutes 2.5) "without a timeout, half the lease is needed"

                Expect.equal
                    (Attempt.leaseNeeded (Some(TimeSpan.FromSeconds 10.0)) lease)
                    (TimeSpan.FromSeconds 10.0)
                    "with a timeout, the timeout is needed"

                Expect.equal (Attempt.admit false lease needed) AttemptStart.Run "a fresh claim runs"
                Expect.equal (Attempt.admit false needed needed) AttemptStart.Run "exactly what is needed runs"

                Expect.equal
                    (Attempt.admit false (needed - TimeSpan.FromTicks 1L) needed)
                    (AttemptStart.GiveBack "too little of its lease is left to run it")
                    "a tick less is given back"

                Expect.equal
                    (Attempt.admit true lease needed)
                    (AttemptStart.GiveBack "the executor is shutting down")
                    "nothing starts while stopping"
        ]
