namespace Events.Marten

open System
open Events.Core
open System.Collections.Generic
open System.Runtime.CompilerServices
open System.Threading
open System.Threading.Tasks
open global.Marten
open global.Events

/// Storing events in a Marten session, so they commit or roll back with the session's other changes.
[<RequireQualifiedAccess>]
module internal Outbox =

    /// The events as stored: each given a correlation id (a UUIDv7) unless it has one. Refuses a batch
    /// that holds an id twice.
    let prepare (events: Event list) : Event list =
        let ids = HashSet<Guid>()

        events
        |> List.map (fun event ->
            if not (ids.Add event.Id) then
                invalidArg (nameof events) $"the batch holds event id %O{event.Id} more than once"

            match event.CorrelationId with
            | Some _ -> event
            | None ->
                { event with
                    CorrelationId = Some(Guid.CreateVersion7())
                })

    /// Queues the events' inserts (an id already stored fails the session's commit). Once the session
    /// commits, `RaisedEventsListener` signals the new events (see `Wakeups`). Returns the events as stored.
    let append (session: IDocumentSession) (events: Event list) : Event list =
        let stored = prepare events

        if not stored.IsEmpty then
            session.Insert<EventDocument>(stored |> Seq.map Documents.ofEvent)

        stored

/// Appends the events raised by saved `IRaiseEvents` entities in the same session, signals every event
/// a session stored once it commits, and clears the entities' raised events then (all of them: an event raised on the entity while
/// the commit runs is cleared too, so raise events before saving). The entity's `Raiser` should be
/// marked `[JsonIgnore]` so it is not stored in the entity's document. Registered by
/// `UseEventsDocuments`.
[<Sealed>]
type RaisedEventsListener() =
    inherit DocumentSessionListenerBase()

    static let raisers (documents: seq<obj>) =
        let seen = HashSet<obj>(ReferenceEqualityComparer.Instance)

        documents
        |> Seq.choose (fun document ->
            match document with
            | :? IRaiseEvents as entity when seen.Add entity -> Some entity
            | _ -> None)
        |> List.ofSeq

    /// Queues the inserts of the events raised by the entities the session is about to save.
    override _.BeforeSaveChangesAsync(session: IDocumentSession, _token: CancellationToken) : Task =
        let pending = session.PendingChanges

        for entity in raisers (Seq.append (pending.Inserts()) (pending.Updates())) do
            match entity.Raiser.Events with
            | [] -> ()
            | events -> Outbox.append session events |> ignore

        Task.CompletedTask

    /// Clears the raised events of the entities the session saved, and signals the events it stored:
    /// after the commit, so no NOTIFY is sent inside the application's transaction.
    override _.AfterCommitAsync
        (session: IDocumentSession, commit: Services.IChangeSet, _token: CancellationToken)
        : Task =
        for entity in raisers (Seq.append commit.Inserted commit.Updated) do
            entity.Raiser.Clear()

        if commit.Inserted |> Seq.exists (fun document -> document :? EventDocument) then
            (Wakeups.For session.DocumentStore).Signal WorkSignal.EventsAppended

        Task.CompletedTask

/// Appending events in an application's own Marten session (the transactional outbox).
[<Extension; AbstractClass; Sealed>]
type DocumentSessionExtensions =

    /// Stores the events in the session: they are appended when the session saves its changes, in the
    /// same transaction as the application's own changes, and not at all if it rolls back. Each gets a
    /// correlation id (a UUIDv7) unless it has one. Returns the events as they will be stored. The
    /// session's store must be configured with `UseEventsDocuments`.
    [<Extension>]
    static member AppendEvents(session: IDocumentSession, events: IEnumerable<Event>) : IReadOnlyList<Event> =
        if isNull session then
            nullArg (nameof session)

        if isNull events then
            nullArg (nameof events)

        Outbox.append session (List.ofSeq events)
