namespace Events.Marten

open System
open System.Threading
open System.Threading.Tasks
open Events.Core
open Npgsql

/// The store's one listening connection: LISTEN on the store's channel, the work other processes
/// notify passed to `heard`; after any failure of the connection it waits (from `ReconnectDelay`,
/// doubling to `MaxReconnectDelay`) and connects again, telling `Failed`; a quiet connection is probed
/// every `ListenerProbeInterval`. Once reconnected, it signals both kinds of work, since some may have
/// arrived while no one listened.
[<Sealed>]
type internal WorkListener
    (
        openConnection: CancellationToken -> Task<NpgsqlConnection>,
        channel: string,
        options: MartenEventStoreOptions,
        heard: WorkSignal -> unit
    ) =
    let failed = Event<exn>()
    let stopping = new CancellationTokenSource()

    let mutable listening =
        TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)

    let mutable loop: Task = Task.CompletedTask

    let listen () =
        task {
            let token = stopping.Token
            let mutable delay = options.ReconnectDelay
            let mutable connectedBefore = false

            while not token.IsCancellationRequested do
                try
                    use! connection = openConnection token

                    connection.Notification.Add(fun notification ->
                        match notification.Payload with
                        | Sql.EventsPayload -> heard WorkSignal.EventsAppended
                        | Sql.RequestsPayload -> heard WorkSignal.RequestsReady
                        | _ -> ())

                    use command = Db.command connection (Sql.listen channel) []
                    let! _ = command.ExecuteNonQueryAsync token

                    if connectedBefore then
                        // Work may have arrived while no one listened.
                        heard WorkSignal.EventsAppended
                        heard WorkSignal.RequestsReady

                    connectedBefore <- true
                    delay <- options.ReconnectDelay
                    listening.TrySetResult() |> ignore

                    use probe = Db.command connection Sql.Probe []

                    while true do
                        let! notified = connection.WaitAsync(options.ListenerProbeInterval, token)

                        if not notified then
                            // Quiet for a while: a query fails if the connection is gone.
                            let! _ = probe.ExecuteScalarAsync token
                            ()
                with
                | :? OperationCanceledException when token.IsCancellationRequested -> ()
                | error ->
                    // Any failure of the connection (the server restarted, the network dropped): wait,
                    // then connect again. The caller learns of it through ListenerFailed.
                    if listening.Task.IsCompleted then
                        listening <- TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)

                    failed.Trigger error

                    try
                        do! Task.Delay(delay, token)
                    with :? OperationCanceledException ->
                        ()

                    delay <- min (delay * 2.0) options.MaxReconnectDelay
        }

    /// Starts listening in the background.
    member _.Start() =
        loop <- Task.Run<unit>(fun () -> listen ())

    /// Completes when the connection is listening; after a failure, the task read then completes on
    /// the next successful connection.
    member _.WhenListening: Task = listening.Task

    /// Raised when the connection fails (it reconnects after a wait).
    member _.Failed: IEvent<exn> = failed.Publish

    /// Stops listening and waits for the loop to end.
    member _.StopAsync() : Task =
        task {
            stopping.Cancel()
            do! loop
            stopping.Dispose()
        }
