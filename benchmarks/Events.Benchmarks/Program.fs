/// The benchmark program: throughput, latency, backlog scaling and memory, on each store.
module Events.Benchmarks.Program

open System
open System.Diagnostics
open Events

let private usage =
    """Usage: dotnet run -c Release --project benchmarks/Events.Benchmarks -- [--million]
  --million   also measure 1,000,000 events (slow)"""

[<EntryPoint>]
let main argv =
    if argv |> Array.exists (fun a -> a = "--help" || a = "-h") then
        printfn "%s" usage
        0
    else
        let million = argv |> Array.contains "--million"
        let sizes = [ 10_000; 100_000 ] @ (if million then [ 1_000_000 ] else [])

        printfn
            "# Events benchmark (%d cores, %s)"
            Environment.ProcessorCount
            (Runtime.InteropServices.RuntimeInformation.FrameworkDescription)

        printfn ""
        printfn "## In-memory store"
        printfn ""
        printfn "| measure | value |"
        printfn "|---|---|"

        for size in sizes do
            let store = InMemoryStore()

            let seconds =
                (Measure.throughput $"memory %d{size}" store size).GetAwaiter().GetResult()

            printfn "| throughput, %d events x 2 handlers | %.0f events/s |" size (float size / seconds)

        let latencies =
            (Measure.latency "memory latency" (InMemoryStore()) 500 200.0).GetAwaiter().GetResult()

        printfn
            "| latency append -> handler start, 200 events/s | p50 %.2f ms, p99 %.2f ms |"
            (Measure.percentile latencies 50.0)
            (Measure.percentile latencies 99.0)

        for size in sizes do
            let cost =
                (Measure.backlogCost (InMemoryStore()) size 10_000).GetAwaiter().GetResult()

            printfn "| claim+complete cost at a backlog of %d requests | %.2f us/request |" (size * 2) cost

        printfn "| peak working set | %.0f MiB |" (float (Process.GetCurrentProcess().PeakWorkingSet64) / 1048576.0)
        0
