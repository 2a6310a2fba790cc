/// Client-side timings of the store calls of a run: calls, items, time, per operation.
module Events.Benchmarks.Profile

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.Threading.Tasks
open Events.Core

/// Calls, items and elapsed ticks per operation.
[<Sealed>]
type Tally() =
    let entries = ConcurrentDictionary<string, int64 * int64 * int64>()

    /// Records one call that handled `items` and started at `started` (a Stopwatch timestamp).
    member _.Record(operation: string, items: int, started: int64) =
        let elapsed = Stopwatch.GetTimestamp() - started

        entries.AddOrUpdate(
            operation,
            (1L, int64 items, elapsed),
            fun _ (calls, total, ticks) -> calls + 1L, total + int64 items, ticks + elapsed
        )
        |> ignore

    /// Per operation: calls, items, total milliseconds; most time first.
    member _.Rows =
        entries
        |> Seq.map (fun pair ->
            let calls, items, ticks = pair.Value
            pair.Key, calls, items, float ticks * 1000.0 / float Stopwatch.Frequency)
        |> Seq.sortByDescending (fun (_, _, _, ms) -> ms)
        |> List.ofSeq

/// A store that times its hot calls into a tally and passes everything to `inner`.
[<Sealed>]
type TimedStore(inner: IEventStore, tally: Tally) =
    let mutable recorded = 0L

    let timed (operation: string) (items: 'T -> int) (call: unit -> Task<'T>) =
        task {
            let started = Stopwatch.GetTimestamp()
            let! result = call ()
            tally.Record(operation, items result, started)
            return result
        }

    /// Outcomes written so far (not refused).
    member _.Recorded = Threading.Interlocked.Read &recorded

    interface IEventStore with
        member _.AppendAsync(events, token) =
            timed "append" List.length (fun () -> inner.AppendAsync(events, token))

        member _.ClaimEventsAsync(limit, now, leaseFor, token) =
            timed "claim events" List.length (fun () -> inner.ClaimEventsAsync(limit, now, leaseFor, token))

        member _.CommitProcessingAsync(processed, token) =
            timed "commit fan-out" List.length (fun () -> inner.CommitProcessingAsync(processed, token))

        member _.ReleaseEventsAsync(claims, token) =
            timed "release events" (fun () -> claims.Length) (fun () -> inner.ReleaseEventsAsync(claims, token))

        member _.ClaimRequestsAsync(limit, now, leaseFor, token) =
            timed "recover + claim requests" (fun claim -> claim.Claimed.Length) (fun () ->
                inner.ClaimRequestsAsync(limit, now, leaseFor, token))

        member _.RenewLeasesAsync(renewals, until, token) =
            timed "renew leases" List.length (fun () -> inner.RenewLeasesAsync(renewals, until, token))

        member _.RecordOutcomesAsync(outcomes, token) =
            task {
                let! results =
                    timed "record outcomes" List.length (fun () -> inner.RecordOutcomesAsync(outcomes, token))

                let written =
                    results
                    |> List.sumBy (fun result ->
                        match result with
                        | Ok() -> 1L
                        | Error _ -> 0L)

                Threading.Interlocked.Add(&recorded, written) |> ignore
                return results
            }

        member _.BeginHandlerTransaction request = inner.BeginHandlerTransaction request
        member _.FindEventAsync(id, token) = inner.FindEventAsync(id, token)
        member _.FindRequestAsync(id, token) = inner.FindRequestAsync(id, token)
        member _.EventsAsync token = inner.EventsAsync token
        member _.RequestsAsync token = inner.RequestsAsync token
        member _.StatsAsync(now, token) = inner.StatsAsync(now, token)

        [<CLIEvent>]
        member _.WorkArrived = inner.WorkArrived
