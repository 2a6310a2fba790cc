namespace Events.Core

open System
open System.Collections.Concurrent
open System.Collections.Generic
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging

/// An attempt whose handler runs: its request, its token, and what cancels the handler once a renewal
/// finds the claim lost.
[<Sealed>]
type internal HeldAttempt(request: HandlerRequest, token: Guid) =
    let lost = new CancellationTokenSource()

    member _.Request = request
    member _.Token = token

    /// Cancelled when the attempt lost its claim. Never disposed: it holds no timer, and the handler may
    /// still hold its token.
    member _.Lost = lost

/// Renews the leases of an executor's running attempts for the executor's whole life: one batch every
/// Lease/3 while any attempt is held (the beats stop while none is, and start again with the next).
/// A refused renewal means the attempt lost its claim: its handler is canceled.
[<Sealed>]
type internal LeaseKeeper(store: IEventStore, lease: TimeSpan, logger: ILogger, time: TimeProvider) =
    let held = ConcurrentDictionary<Guid, HeldAttempt>()
    let gate = obj ()
    let mutable beating = false
    let stopped = new CancellationTokenSource()

    // Lease/3, at least a millisecond (no busy loop) and at most a day (the timer's range); the leases
    // are renewed to a full Lease from each beat.
    let period =
        TimeSpan.FromTicks(Math.Clamp((lease / 3.0).Ticks, TimeSpan.TicksPerMillisecond, TimeSpan.TicksPerDay))

    let beat () =
        task {
            let attempts = held.Values |> List.ofSeq

            if not attempts.IsEmpty then
                let until = Backoff.addSaturating (time.GetUtcNow()) lease

                try
                    let! results =
                        store.RenewLeasesAsync(
                            [ for attempt in attempts -> attempt.Request.Id, attempt.Token ],
                            until,
                            CancellationToken.None
                        )

                    if results.Length <> attempts.Length then
                        invalidOp $"the store answered %d{results.Length} results for %d{attempts.Length} renewals"

                    for attempt, result in List.zip attempts results do
                        match result with
                        | Ok() -> ()
                        | Error refusal ->
                            // Only if its handler still runs: a handler that returned was dropped before its
                            // outcome was written, so a refusal caused by that outcome is not a lost claim.
                            if held.TryRemove(KeyValuePair(attempt.Request.Id, attempt)) then
                                use _ = Log.requestScope logger attempt.Request

                                logger.LogWarning(
                                    Log.ClaimLost,
                                    "the lease of request {RequestId} ({HandlerName}) could not be renewed: {Reason}; the attempt lost its claim, so its handler is canceled and its outcome will be refused",
                                    attempt.Request.Id,
                                    attempt.Request.HandlerName.Value,
                                    refusal.Message
                                )

                                attempt.Lost.Cancel()
                with error ->
                    logger.LogError(
                        Log.RenewalFailed,
                        error,
                        "error renewing the leases of {Count} running requests; retrying at the next beat",
                        attempts.Length
                    )
        }

    /// Beats while attempts are held; ends when none is (under the gate, so a new hold starts it again).
    let run () : Task =
        task {
            let mutable going = true

            while going do
                try
                    do! Task.Delay(period, time, stopped.Token)
                    do! beat ()
                with :? OperationCanceledException when stopped.IsCancellationRequested ->
                    ()

                going <-
                    lock gate (fun () ->
                        if held.IsEmpty || stopped.IsCancellationRequested then
                            beating <- false
                            false
                        else
                            true)
        }

    /// Renews the attempt's lease from now on; returns it, to be dropped when its handler returns.
    member _.Hold(request: HandlerRequest, token: Guid) : HeldAttempt =
        let attempt = HeldAttempt(request, token)

        lock gate (fun () ->
            held[request.Id] <- attempt

            if not beating && not stopped.IsCancellationRequested then
                beating <- true
                Task.Run<unit>(fun () -> task { do! run () }) |> ignore)

        attempt

    /// Stops renewing the attempt's lease.
    member _.Drop(attempt: HeldAttempt) =
        held.TryRemove(KeyValuePair(attempt.Request.Id, attempt)) |> ignore

    /// Stops the beats for good (a hard stop: handlers still running after it let their leases lapse).
    member _.Stop() = stopped.Cancel()
