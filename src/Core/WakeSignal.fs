namespace Events.Core

open System
open System.Threading
open System.Threading.Tasks

/// A wake-up a loop can wait on; a signal that arrives while the loop works is kept until the loop
/// takes it.
[<Sealed>]
type internal WakeSignal() =
    let mutable promise =
        TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)

    /// Signals the waiting loop (or the next wait).
    member _.Set() =
        Volatile.Read(&promise).TrySetResult() |> ignore

    /// Completes once signalled (the signal is kept until taken).
    member _.Signalled: Task = Volatile.Read(&promise).Task

    /// Whether a signal is waiting; takes it.
    member _.Take() : bool =
        let current = Volatile.Read(&promise)

        if current.Task.IsCompleted then
            Interlocked.CompareExchange(
                &promise,
                TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously),
                current
            )
            |> ignore

            true
        else
            false

/// Waiting on several wake-ups at once.
[<RequireQualifiedAccess>]
module internal Wake =

    /// Returns when any of the tasks completes, when `interval` passes (on `time`) or when the token
    /// fires; never throws for the token.
    let anyAsync (tasks: Task list) (interval: TimeSpan) (time: TimeProvider) (cancellationToken: CancellationToken) =
        task {
            if
                not (tasks |> List.exists _.IsCompleted)
                && not cancellationToken.IsCancellationRequested
            then
                use sleeping = CancellationTokenSource.CreateLinkedTokenSource cancellationToken

                let delay =
                    if interval = Timeout.InfiniteTimeSpan then
                        Task.Delay(Timeout.InfiniteTimeSpan, sleeping.Token)
                    else
                        Task.Delay(interval, time, sleeping.Token)

                let! _ = Task.WhenAny(delay :: tasks)
                sleeping.Cancel()
        }
