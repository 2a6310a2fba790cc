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

    member private this.Flush() : Task =
        task {
            try
                while not pending.IsEmpty do
                    let batch = ResizeArray()
                    let mutable item = Unchecked.defaultof<_>

                    while batch.Count < maxBatch && pending.TryDequeue(&item) do
                        batch.Add item

                    try
                        try
                            let! results =
                                store.RecordOutcomesAsync(
                                    [ for struct (outcome, _) in batch -> outcome ],
                                    CancellationToken.None
                                )

                            if results.Length <> batch.Count then
                                invalidOp $"the store answered %d{results.Length} results for %d{batch.Count} outcomes"

                            Seq.iter2
                                (fun struct (_, promise: TaskCompletionSource<_>) result ->
                                    promise.TrySetResult result |> ignore)
                                batch
                                results
                        with error ->
                            for struct (_, promise) in batch do
                                promise.TrySetException error |> ignore
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
