namespace Events.Core

open System

/// Exponential backoff with full jitter: the wait after attempt n is a uniform sample from
/// [0, min(Cap, Base * 2^(n-1))).
type ExponentialBackoff =
    {
        /// The upper bound of the first wait.
        Base: TimeSpan
        /// The largest wait, whatever the attempt.
        Cap: TimeSpan
    }

/// How long a failed handler request waits before its next attempt.
[<RequireQualifiedAccess>]
type BackoffPolicy =
    /// The Go framework's default: `errors * 2 * r` seconds, r a whole number from 15 to 59 drawn
    /// from the sample (linear in the error count, despite its name there).
    | Default
    /// Exponential with a cap and full jitter.
    | Exponential of ExponentialBackoff

/// Pure backoff functions of (attempt number, random sample in [0, 1)). The caller draws the sample.
[<RequireQualifiedAccess>]
module Backoff =

    let private checkArguments (attempt: int) (sample: float) =
        if attempt < 1 then
            invalidArg (nameof attempt) $"the attempt number starts at 1, got %d{attempt}"

        if not (sample >= 0.0 && sample < 1.0) then
            invalidArg (nameof sample) $"the random sample must be in [0, 1), got %g{sample}"

    /// The Go default's whole-number factor r, from 15 to 59, for a sample in [0, 1).
    let defaultFactor (sample: float) : int =
        15 + min 44 (int (Math.Floor(sample * 45.0)))

    // In whole ticks: a double number of seconds is not exact past 2^53 ticks (attempts above about 8 million).
    let private defaultDelay (attempt: int) (factor: int) =
        TimeSpan.FromTicks(int64 attempt * 2L * int64 factor * TimeSpan.TicksPerSecond)

    /// The largest wait of an exponential policy at this attempt: min(Cap, Base * 2^(attempt-1)),
    /// computed in ticks without overflow for any attempt.
    let exponentialCeiling (policy: ExponentialBackoff) (attempt: int) : TimeSpan =
        let shift = attempt - 1
        let baseTicks = policy.Base.Ticks
        let capTicks = policy.Cap.Ticks

        // From a shift of 63 a positive base times 2^shift is past Int64.MaxValue, so past any cap (and
        // .NET masks a shift count to 6 bits, so 64 and above would wrap). Below 63, a base above
        // Cap >>> shift is exactly a product above the cap.
        if shift >= 63 || baseTicks > (capTicks >>> shift) then
            policy.Cap
        else
            TimeSpan.FromTicks(min capTicks (baseTicks <<< shift))

    /// The smallest and the largest wait the policy can give at this attempt.
    let bounds (policy: BackoffPolicy) (attempt: int) : TimeSpan * TimeSpan =
        checkArguments attempt 0.0

        match policy with
        | BackoffPolicy.Default ->
            // attempt * 2 * 59 s fits in a TimeSpan for every Int32 attempt (about 8,000 years at most).
            defaultDelay attempt 15, defaultDelay attempt 59
        | BackoffPolicy.Exponential exponential -> TimeSpan.Zero, exponentialCeiling exponential attempt

    /// How long to wait after the given failed attempt (1 for the first failure), for a random sample
    /// in [0, 1).
    let delay (policy: BackoffPolicy) (attempt: int) (sample: float) : TimeSpan =
        checkArguments attempt sample

        match policy with
        | BackoffPolicy.Default -> defaultDelay attempt (defaultFactor sample)
        | BackoffPolicy.Exponential exponential ->
            let ceiling = exponentialCeiling exponential attempt
            // min: for ceilings above 2^53 ticks the float product can round up past the ceiling.
            TimeSpan.FromTicks(min ceiling.Ticks (int64 (Math.Floor(sample * float ceiling.Ticks))))

    /// Adds a wait to a time, stopping at the largest representable time instead of overflowing. A sum
    /// that fits as an instant but not on the time's clock (at a positive offset) is given at offset zero.
    let addSaturating (time: DateTimeOffset) (wait: TimeSpan) : DateTimeOffset =
        if wait >= DateTimeOffset.MaxValue - time then
            DateTimeOffset.MaxValue
        elif wait > DateTime.MaxValue - time.DateTime then
            time.ToUniversalTime() + wait
        else
            time + wait
