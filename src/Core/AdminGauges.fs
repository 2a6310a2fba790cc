namespace Events.Core

open System
open System.Collections.Generic
open System.Diagnostics.Metrics
open System.Threading

/// Gauges read from the administration port, beside the engine's `Instruments`: requests waiting out a
/// backoff (`requests.backing_off.count`, which the engine's runnable gauge leaves out) and live requests
/// per handler and status (`requests.count`, tagged `handler` and `status`: runnable, backing-off,
/// running, dead; completed and canceled ones are left out, so that a reading touches only live rows).
/// Names take the prefix as the engine's do. The counts are read at most once per `refresh` (default
/// 30 s) whatever the number of readers.
[<Sealed>]
type AdminGauges(prefix: string, admin: IAdminStore, now: unit -> DateTimeOffset, refresh: TimeSpan) =
    do
        if isNull (box admin) then
            nullArg (nameof admin)

        if refresh < TimeSpan.Zero then
            invalidArg (nameof refresh) $"the refresh interval must not be negative, got %O{refresh}"

    let name (key: string) =
        if String.IsNullOrEmpty prefix then
            key
        else
            $"%s{prefix}.%s{key}"

    let meter = new Meter(Telemetry.SourceName)
    let gate = obj ()
    let mutable last: (DateTimeOffset * HandlerStatusCount list) option = None

    let counts () =
        let at = now ()

        let fresh =
            lock gate (fun () ->
                match last with
                | Some(readAt, counts) when at - readAt < refresh && at >= readAt -> Some counts
                | _ -> None)

        match fresh with
        | Some counts -> Some counts
        | None ->
            try
                let counts =
                    admin.CountByHandlerAsync(at, false, CancellationToken.None).GetAwaiter().GetResult()

                lock gate (fun () -> last <- Some(at, counts))
                Some counts
            with _ ->
                // A gauge that cannot be read reports nothing this time; the engine's gauges log the store's faults.
                None

    do
        meter.CreateObservableGauge<int64>(
            name "requests.backing_off.count",
            (fun () ->
                match counts () with
                | Some counts ->
                    let waiting =
                        counts
                        |> List.filter (fun c -> c.Status = RequestStatus.BackingOff)
                        |> List.sumBy _.Count

                    Seq.singleton (Measurement<int64>(waiting))
                | None -> Seq.empty),
            "{request}",
            "The number of requests waiting out a backoff after a failed attempt."
        )
        |> ignore

        meter.CreateObservableGauge<int64>(
            name "requests.count",
            (fun () ->
                match counts () with
                | Some counts ->
                    counts
                    |> Seq.map (fun c ->
                        Measurement<int64>(
                            c.Count,
                            [|
                                KeyValuePair<string, obj>(name "handler", box c.HandlerName.Value)
                                KeyValuePair<string, obj>(name "status", box (RequestStatus.name c.Status))
                            |]
                        ))
                    |> Array.ofSeq
                    :> seq<_>
                | None -> Seq.empty),
            "{request}",
            "The number of requests per handler and status."
        )
        |> ignore

    /// Gauges over the administration port, read at most every 30 seconds.
    new(prefix: string, admin: IAdminStore, now: unit -> DateTimeOffset) =
        new AdminGauges(prefix, admin, now, TimeSpan.FromSeconds 30.0)

    interface IDisposable with
        member _.Dispose() = meter.Dispose()
