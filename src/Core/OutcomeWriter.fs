namespace Events.Core

open System.Collections.Concurrent
open System.Threading
open System.Threading.Tasks

/// Writes attempts' outcomes continuously, for the executor's whole life: a flush starts as soon as the
/// previous one ends and takes up to `maxBatch` of the outcomes queued meanwhile (group commit), so many
/// workers cost few round trips. At most `capacity` outcomes wait or are in flight: past that, queuing
/// waits, which holds the executor's slots (back-pressure when writes fall behind).
[<Sealed>]
type internal OutcomeWriter(store: IEventStore, maxBatch: int, capacity: int) =
    let pending =
        ConcurrentQueue<struct (OutcomeWrite * TaskCompletionSource<Result<unit, RequestError>>)>()

    let room = new SemaphoreSlim(capacity, capacity)
    let mutable flushing = 0

    /// About what an outcome weighs in a write: the request's data and error, and its other fields.
    static let weight (outcome: OutcomeWrite) =
        int64 outcome.Request.EventData.Json.Length
        + int64 (outcome.Request.LastError |> Option.map _.Length |> Option.defaultValue 0)
        + 512L

    /// Writes a batch; when the store throws, writes its halves, down to single outcomes, so that one
    /// outcome the store cannot write never fails the others written with it.
    let rec write (batch: struct (OutcomeWrite * TaskCompletionSource<Result<unit, RequestError>>) list) : Task =
        task {
            try
                let! results =
                    store.RecordOutcomesAsync([ for struct (outcome, _) in batch -> outcome ], CancellationToken.None)

                if results.Length <> batch.Length then
                    invalidOp $"the store answered %d{results.Length} results for %d{batch.Length} outcomes"

                List.iter2
                    (fun struct (_, promise: TaskCompletionSource<_>) result -> promise.TrySetResult result |> ignore)
                    batch
                    results
            with error ->
                match batch with
                | []
                | [ _ ] ->
                    for struct (_, promise) in batch do
                        promise.TrySetException error |> ignore
                | _ ->
                    let left, right = List.splitAt (batch.Length / 2) batch
                    do! write left
                    do! write right
        }

    /// The most a write carries, roughly, in bytes: a batch stops growing past it (one outcome always goes).
    static member MaxBatchBytes = 8L * 1024L * 1024L

    member private this.Flush() : Task =
        task {
            try
                while not pending.IsEmpty do
                    let batch = ResizeArray()
                    let mutable bytes = 0L
                    let mutable item = Unchecked.defaultof<_>

                    while batch.Count < maxBatch
                          && (batch.Count = 0 || bytes < OutcomeWriter.MaxBatchBytes)
                          && pending.TryDequeue(&item) do
                        let struct (outcome, _) = item
                        bytes <- bytes + weight outcome
                        batch.Add item

                    try
                        do! write (List.ofSeq batch)
                    finally
                        room.Release batch.Count |> ignore
            finally
                Volatile.Write(&flushing, 0)

            if not pending.IsEmpty then
                this.Start()
        }

    member private this.Start() =
        if Interlocked.CompareExchange(&flushing, 1, 0) = 0 then
            Task.Run<unit>(fun () -> task { do! this.Flush() }) |> ignore

    /// Queues an outcome once there is room; the task returned completes when it is queued, and the task
    /// it holds when the outcome is written (or refused).
    member this.QueueAsync(outcome: OutcomeWrite) : Task<Task<Result<unit, RequestError>>> =
        task {
            do! room.WaitAsync()

            let promise =
                TaskCompletionSource<Result<unit, RequestError>>(TaskCreationOptions.RunContinuationsAsynchronously)

            pending.Enqueue(struct (outcome, promise))
            this.Start()
            return promise.Task
        }

    /// Queues an outcome; completes when it is written (or refused).
    member this.WriteAsync(outcome: OutcomeWrite) : Task<Result<unit, RequestError>> =
        task {
            let! written = this.QueueAsync outcome
            return! written
        }
