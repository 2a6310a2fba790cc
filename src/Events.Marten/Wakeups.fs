namespace Events.Marten

open System
open System.Runtime.CompilerServices
open System.Threading
open System.Threading.Tasks
open Events.Core
open global.Marten
open Npgsql
open NpgsqlTypes

/// The wake-ups of one Marten document store: new work is signalled in this process at once, and to
/// every other process by NOTIFY, sent after the writing transaction committed and never inside it,
/// in a transaction of its own. A transaction that sends NOTIFY takes a database-wide lock at commit,
/// so NOTIFY inside every commit flushes the commits of concurrent writers one by one. Notifications
/// are debounced: the first is sent at once, the ones that follow within `Window` are sent together
/// when it ends (at most one per payload and window for this process). A notification that cannot be
/// sent (the database is down) is dropped: the listeners' polling interval finds the work.
[<Sealed>]
type internal Wakeups(store: IDocumentStore) =
    let local = Event<WorkSignal>()
    let mutable channel: string = null
    let mutable pendingEvents = 0
    let mutable pendingRequests = 0
    let mutable draining = 0
    let mutable sent = 0L
    let mutable failures = 0L

    static let registry = ConditionalWeakTable<IDocumentStore, Wakeups>()

    /// The shortest time between two notifications of one payload from this process.
    static member Window = TimeSpan.FromMilliseconds 5.0

    /// The wake-ups of a document store, shared by every store and session on it in this process.
    static member For(store: IDocumentStore) : Wakeups =
        registry.GetValue(store, (fun store -> Wakeups store))

    member private _.Channel =
        if isNull channel then
            channel <- (StoreLayout.ofOptions store.Options).Channel

        channel

    member private this.SendAsync(payloads: string[]) =
        task {
            try
                use connection = store.Storage.Database.CreateConnection()
                do! connection.OpenAsync()
                use command = new NpgsqlCommand(Sql.Notify, connection)
                command.Parameters.Add(NpgsqlParameter(Value = this.Channel)) |> ignore

                command.Parameters.Add(
                    NpgsqlParameter(NpgsqlDbType = (NpgsqlDbType.Array ||| NpgsqlDbType.Text), Value = payloads)
                )
                |> ignore

                let! _ = command.ExecuteNonQueryAsync()
                Interlocked.Increment(&sent) |> ignore
            with _ ->
                Interlocked.Increment(&failures) |> ignore
        }

    /// Sends what is pending, then waits out the window; ends when nothing came in during the window.
    member private this.DrainAsync() : Task =
        task {
            let mutable more = true

            while more do
                let events = Interlocked.Exchange(&pendingEvents, 0) = 1
                let requests = Interlocked.Exchange(&pendingRequests, 0) = 1

                if events || requests then
                    let payloads =
                        [|
                            if events then
                                Sql.EventsPayload
                            if requests then
                                Sql.RequestsPayload
                        |]

                    do! this.SendAsync payloads
                    do! Task.Delay Wakeups.Window
                else
                    Volatile.Write(&draining, 0)
                    // A signal between the exchange and the write above started no drain: take it here.
                    more <-
                        (Volatile.Read(&pendingEvents) = 1 || Volatile.Read(&pendingRequests) = 1)
                        && Interlocked.CompareExchange(&draining, 1, 0) = 0
        }

    /// Signals new work: at once to this process's subscribers, and to other processes by a debounced
    /// NOTIFY. Call it only after the work is committed.
    member this.Signal(signal: WorkSignal) =
        local.Trigger signal

        match signal with
        | WorkSignal.EventsAppended -> Volatile.Write(&pendingEvents, 1)
        | WorkSignal.RequestsReady -> Volatile.Write(&pendingRequests, 1)

        if Interlocked.CompareExchange(&draining, 1, 0) = 0 then
            Task.Run<unit>(fun () -> task { do! this.DrainAsync() }) |> ignore

    /// Work signalled in this process.
    member _.Local: IEvent<WorkSignal> = local.Publish

    /// Notifications sent to other processes.
    member _.Sent = Volatile.Read(&sent)

    /// Notifications that could not be sent.
    member _.Failures = Volatile.Read(&failures)
