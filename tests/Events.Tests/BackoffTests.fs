module Events.Tests.BackoffTests

open System
open System.Numerics
open Expecto
open Events.Core

/// The Go formula, written again in whole ticks: attempt * 2 * r seconds, r = 15 + floor(sample * 45).
let private goDefault (attempt: int) (sample: float) : TimeSpan =
    let r = 15L + int64 (Math.Floor(sample * 45.0))
    TimeSpan.FromTicks(int64 attempt * 2L * r * TimeSpan.TicksPerSecond)

/// min(Cap, Base * 2^(attempt-1)), written again with big integers.
let private exponentialCeiling (policy: ExponentialBackoff) (attempt: int) : TimeSpan =
    // Base is at least one tick, so from 2^63 on the product is past any cap.
    if attempt - 1 >= 64 then
        policy.Cap
    else
        let product = BigInteger policy.Base.Ticks * BigInteger.Pow(2I, attempt - 1)

        if product >= BigInteger policy.Cap.Ticks then
            policy.Cap
        else
            TimeSpan.FromTicks(int64 product)

let private exponential (baseDelay: TimeSpan) (cap: TimeSpan) =
    BackoffPolicy.Exponential { Base = baseDelay; Cap = cap }

let private largestSample = Math.BitDecrement 1.0

let private examples =
    testList
        "examples"
        [
            testCase "the default waits attempt × 2 × 15 seconds for the smallest sample"
            <| fun () ->
                Expect.equal
                    (Backoff.delay BackoffPolicy.Default 1 0.0)
                    (TimeSpan.FromSeconds 30.0)
                    "r is 15 at sample 0, so the first failure waits 1 × 2 × 15 s"

            testCase "the default waits attempt × 2 × 59 seconds for the largest sample"
            <| fun () ->
                Expect.equal
                    (Backoff.delay BackoffPolicy.Default 3 largestSample)
                    (TimeSpan.FromSeconds(3.0 * 2.0 * 59.0))
                    "r is 59 just below sample 1, so the third failure waits 3 × 2 × 59 s"

            testCase "every factor from 15 to 59 is drawn by its own share of samples"
            <| fun () ->
                for r in 15..59 do
                    let middle = (float (r - 15) + 0.5) / 45.0

                    Expect.equal
                        (Backoff.defaultFactor middle)
                        r
                        $"the sample %g{middle} is in the middle of r = %d{r}'s 1/45 of [0, 1)"

            testCase "the default's bounds are attempt × 30 s and attempt × 118 s"
            <| fun () ->
                Expect.equal
                    (Backoff.bounds BackoffPolicy.Default 4)
                    (TimeSpan.FromSeconds 120.0, TimeSpan.FromSeconds 472.0)
                    "r runs from 15 to 59, so the wait runs from 4 × 30 s to 4 × 118 s"

            testCase "the default does not overflow at Int32.MaxValue attempts"
            <| fun () ->
                let attempt = Int32.MaxValue

                Expect.equal
                    (Backoff.delay BackoffPolicy.Default attempt largestSample)
                    (TimeSpan.FromTicks(int64 attempt * 118L * TimeSpan.TicksPerSecond))
                    "the largest wait, about 8,000 years, fits a TimeSpan and must be exact to the tick"

                Expect.equal
                    (Backoff.bounds BackoffPolicy.Default attempt)
                    (TimeSpan.FromTicks(int64 attempt * 30L * TimeSpan.TicksPerSecond),
                     TimeSpan.FromTicks(int64 attempt * 118L * TimeSpan.TicksPerSecond))
                    "the bounds at the largest attempt must be exact to the tick"

            // Regression: the default was computed through a double number of seconds, which is not
            // exact past 2^53 ticks; at Int32.MaxValue attempts and the largest r it was 256 ticks short.
            testCase "the default is exact to the tick for huge attempts"
            <| fun () ->
                Expect.equal
                    (Backoff.delay BackoffPolicy.Default Int32.MaxValue 0.99)
                    (TimeSpan.FromTicks 2534030703460000000L)
                    "2147483647 × 2 × 59 s is 2534030703460000000 ticks exactly"

            testCase "the exponential's ceiling starts at the base and doubles up to the cap"
            <| fun () ->
                let policy =
                    {
                        Base = TimeSpan.FromSeconds 1.0
                        Cap = TimeSpan.FromSeconds 10.0
                    }

                Expect.equal
                    [ for attempt in 1..6 -> Backoff.exponentialCeiling policy attempt ]
                    ([ 1.0; 2.0; 4.0; 8.0; 10.0; 10.0 ] |> List.map TimeSpan.FromSeconds)
                    "1 s, 2 s, 4 s, 8 s, then the 10 s cap"

            testCase "the exponential's bounds are zero and the ceiling (full jitter)"
            <| fun () ->
                Expect.equal
                    (Backoff.bounds (exponential (TimeSpan.FromSeconds 1.0) (TimeSpan.FromMinutes 1.0)) 3)
                    (TimeSpan.Zero, TimeSpan.FromSeconds 4.0)
                    "full jitter draws from zero up to min(cap, base × 2^(n-1))"

            testCase "the exponential waits the sample's share of the ceiling"
            <| fun () ->
                let policy = exponential (TimeSpan.FromSeconds 1.0) (TimeSpan.FromMinutes 1.0)
                Expect.equal (Backoff.delay policy 3 0.0) TimeSpan.Zero "sample 0 waits nothing"
                Expect.equal (Backoff.delay policy 3 0.5) (TimeSpan.FromSeconds 2.0) "sample 0.5 waits half of 4 s"

            testCase "the exponential does not overflow at Int32.MaxValue attempts"
            <| fun () ->
                for baseDelay, cap in
                    [
                        TimeSpan.FromTicks 1L, TimeSpan.MaxValue
                        TimeSpan.FromSeconds 1.0, TimeSpan.FromHours 1.0
                        TimeSpan.MaxValue, TimeSpan.MaxValue
                    ] do
                    let policy = exponential baseDelay cap

                    Expect.equal
                        (Backoff.bounds policy Int32.MaxValue)
                        (TimeSpan.Zero, cap)
                        $"at the largest attempt the ceiling is the cap (base %O{baseDelay}, cap %O{cap})"

                    let delay = Backoff.delay policy Int32.MaxValue largestSample

                    Expect.isTrue
                        (delay >= TimeSpan.Zero && delay <= cap)
                        $"the largest sample must wait between zero and the cap, got %O{delay}"

            testCase "the exponential's shift is exact next to 64 bits"
            <| fun () ->
                let policy =
                    {
                        Base = TimeSpan.FromTicks 1L
                        Cap = TimeSpan.MaxValue
                    }

                for attempt in 60..66 do
                    Expect.equal
                        (Backoff.exponentialCeiling policy attempt)
                        (exponentialCeiling policy attempt)
                        $"attempt %d{attempt}: the ceiling must be min(cap, 2^(attempt-1) ticks)"

            // Regression: the ceiling gave the cap from a shift of 62 on, so a one-tick base with a cap
            // above 2^62 ticks gave the cap instead of 2^62 ticks at attempt 63.
            testCase "a one-tick base reaches 2^62 ticks at attempt 63"
            <| fun () ->
                Expect.equal
                    (Backoff.exponentialCeiling
                        {
                            Base = TimeSpan.FromTicks 1L
                            Cap = TimeSpan.MaxValue
                        }
                        63)
                    (TimeSpan.FromTicks(1L <<< 62))
                    "2^62 ticks is below the cap, so it is the ceiling"

            testCase "attempt numbers below 1 are refused with ArgumentException"
            <| fun () ->
                for attempt in [ 0; -1; Int32.MinValue ] do
                    for policy in
                        [
                            BackoffPolicy.Default
                            exponential (TimeSpan.FromSeconds 1.0) (TimeSpan.FromSeconds 2.0)
                        ] do
                        Thrown.by<ArgumentException> $"delay must refuse attempt %d{attempt}" (fun () ->
                            Backoff.delay policy attempt 0.5 |> ignore)
                        |> ignore

                        Thrown.by<ArgumentException> $"bounds must refuse attempt %d{attempt}" (fun () ->
                            Backoff.bounds policy attempt |> ignore)
                        |> ignore

            testCase "samples outside [0, 1) are refused with ArgumentException"
            <| fun () ->
                for sample in
                    [
                        1.0
                        -0.1
                        Math.BitDecrement 0.0
                        Double.NaN
                        Double.PositiveInfinity
                        Double.NegativeInfinity
                    ] do
                    for policy in
                        [
                            BackoffPolicy.Default
                            exponential (TimeSpan.FromSeconds 1.0) (TimeSpan.FromSeconds 2.0)
                        ] do
                        let error =
                            Thrown.by<ArgumentException> $"delay must refuse sample %g{sample}" (fun () ->
                                Backoff.delay policy 1 sample |> ignore)

                        Expect.equal error.ParamName "sample" "the exception must name the sample argument"

            testCase "adding a wait to the largest time stays at the largest time"
            <| fun () ->
                Expect.equal
                    (Backoff.addSaturating DateTimeOffset.MaxValue TimeSpan.MaxValue)
                    DateTimeOffset.MaxValue
                    "a wait past the end of time saturates"

            testCase "adding a small wait is plain addition"
            <| fun () ->
                let time = DateTimeOffset(2024, 1, 1, 0, 0, 0, TimeSpan.FromHours 2.0)

                Expect.equal
                    (Backoff.addSaturating time (TimeSpan.FromMinutes 5.0))
                    (time.AddMinutes 5.0)
                    "a wait that fits is added exactly"

            // Regression: a time at a positive offset has less room on its clock than in UTC, and adding a
            // wait that fit in UTC but not on the clock threw ArgumentOutOfRangeException.
            testCase "adding a wait to a time at a positive offset does not throw near the end of time"
            <| fun () ->
                let time = DateTimeOffset(2024, 1, 1, 0, 0, 0, TimeSpan.FromHours 5.0)
                let wait = (DateTimeOffset.MaxValue - time) - TimeSpan.FromHours 1.0
                let sum = Backoff.addSaturating time wait

                Expect.equal
                    sum.UtcDateTime
                    (time.UtcDateTime + wait)
                    "the instant one hour before the end of time is representable and must be given exactly"
        ]

let private properties =
    testList
        "laws"
        [
            Property.law "a delay is never negative"
            <| fun (policy: BackoffPolicy) (Attempt attempt) (Sample sample) ->
                Expect.isGreaterThanOrEqual
                    (Backoff.delay policy attempt sample)
                    TimeSpan.Zero
                    "a wait back in time makes no sense"

            Property.lawWith 500 "a delay lies within the policy's bounds at that attempt"
            <| fun (policy: BackoffPolicy) (Attempt attempt) (Sample sample) ->
                let low, high = Backoff.bounds policy attempt
                let delay = Backoff.delay policy attempt sample
                Expect.isLessThanOrEqual low delay "the delay must not be below the smallest wait"
                Expect.isLessThanOrEqual delay high "the delay must not be above the largest wait"

            Property.law "bounds never decrease as the attempt grows"
            <| fun (policy: BackoffPolicy) (Attempt a) (Attempt b) ->
                let earlier, later = min a b, max a b
                let low1, high1 = Backoff.bounds policy earlier
                let low2, high2 = Backoff.bounds policy later

                Expect.isLessThanOrEqual
                    low1
                    low2
                    $"the smallest wait at attempt %d{later} must not be below the one at %d{earlier}"

                Expect.isLessThanOrEqual
                    high1
                    high2
                    $"the largest wait at attempt %d{later} must not be below the one at %d{earlier}"

            Property.law "an exponential delay never exceeds the cap"
            <| fun (policy: ExponentialBackoff) (Attempt attempt) (Sample sample) ->
                Expect.isLessThanOrEqual
                    (Backoff.delay (BackoffPolicy.Exponential policy) attempt sample)
                    policy.Cap
                    "the cap bounds every wait"

            Property.lawWith 500 "the exponential's ceiling is min(cap, base × 2^(attempt-1))"
            <| fun (policy: ExponentialBackoff) (Attempt attempt) ->
                Expect.equal
                    (Backoff.exponentialCeiling policy attempt)
                    (exponentialCeiling policy attempt)
                    "the ceiling must match the formula computed with big integers"

                Expect.equal
                    (Backoff.bounds (BackoffPolicy.Exponential policy) attempt)
                    (TimeSpan.Zero, exponentialCeiling policy attempt)
                    "the bounds are zero and the ceiling"

            Property.law "a larger sample never gives a shorter delay"
            <| fun (policy: BackoffPolicy) (Attempt attempt) (Sample a) (Sample b) ->
                let smaller, larger = min a b, max a b

                Expect.isLessThanOrEqual
                    (Backoff.delay policy attempt smaller)
                    (Backoff.delay policy attempt larger)
                    "the delay grows with the sample"

            Property.lawWith 500 "the default delay is exactly attempt × 2 × r seconds, r = 15 + floor(sample × 45)"
            <| fun (Attempt attempt) (Sample sample) ->
                Expect.equal
                    (Backoff.delay BackoffPolicy.Default attempt sample)
                    (goDefault attempt sample)
                    "the default must be the Go framework's formula, to the tick, at every attempt"

            Property.law "the default's factor is a whole number from 15 to 59"
            <| fun (Sample sample) ->
                let r = Backoff.defaultFactor sample
                Expect.isTrue (r >= 15 && r <= 59) $"Go draws r from 15 to 59, got %d{r}"

            Property.law "the default's bounds are exactly attempt × 30 s and attempt × 118 s"
            <| fun (Attempt attempt) ->
                Expect.equal
                    (Backoff.bounds BackoffPolicy.Default attempt)
                    (goDefault attempt 0.0, goDefault attempt largestSample)
                    "the bounds are the formula at the smallest and the largest r"

            Property.lawWith
                500
                "adding a wait never throws: it is exact when the sum fits and the largest time when not"
            <| fun (case: TimeAndWait) ->
                let time = case.Time
                let wait = case.Wait
                let sum = Backoff.addSaturating time wait
                let exact = BigInteger time.UtcTicks + BigInteger wait.Ticks

                if exact >= BigInteger DateTimeOffset.MaxValue.UtcTicks then
                    Expect.equal sum DateTimeOffset.MaxValue "a sum past the end of time must give the largest time"
                else
                    Expect.equal sum.UtcTicks (int64 exact) "a sum that fits must be the exact instant"

                    if
                        BigInteger time.Ticks + BigInteger wait.Ticks
                        <= BigInteger DateTime.MaxValue.Ticks
                    then
                        Expect.equal sum.Offset time.Offset "a sum that fits on the time's clock keeps its offset"
        ]

/// Backoff policies and saturating time arithmetic.
let tests = testList "Backoff" [ examples; properties ]
