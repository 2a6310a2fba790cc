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

    /// The events as stored: each given a correlation id (a UUIDv7) unless it has one, and each keyed
    /// one after the first of its key replaced by that first. Refuses a bad deduplication key, and a
    /// batch that holds an id twice among the events it would store.
    let prepare (events: Event list) : Event list * Event list =
        Event.checkDeduplicationKeys events

        let placed, stored =
            events |> List.map StoredEvent.withCorrelationId |> Deduplication.firstOfEachKey

        let ids = HashSet<Guid>()

        for event in stored do
            if not (ids.Add event.Id) then
                invalidArg (nameof events) $"the batch holds event id %O{event.Id} more than once"

        placed, stored

    /// The events table of each document store, read once.
    let private eventTables = ConditionalWeakTable<IDocumentStore, string>()

    let private eventsTable (store: IDocumentStore) =
        eventTables.GetValue(store, (fun store -> (StoreLayout.ofOptions store.Options).Tables.Events))

    /// The fan-outs on append registered per document store in this process (the latest one is used).
    let private fanOuts =
        ConditionalWeakTable<IDocumentStore, ResizeArray<IAppendFanOut>>()

    /// The events a session fanned out on append, told to their fan-out once the session commits.
    let private pending =
        ConditionalWeakTable<IDocumentSession, ResizeArray<IAppendFanOut * Event * AppendedFanOut>>()

    /// Registers a fan-out on append for a document store, until disposed.
    let useFanOut (store: IDocumentStore) (fanOut: IAppendFanOut) : IDisposable =
        let registered = fanOuts.GetValue(store, (fun _ -> ResizeArray()))
        lock registered (fun () -> registered.Add fanOut)

        { new IDisposable with
            member _.Dispose() =
                lock registered (fun () -> registered.Remove fanOut |> ignore)
        }

    let private fanOutOf (store: IDocumentStore) =
        match fanOuts.TryGetValue store with
        | true, registered -> lock registered (fun () -> Seq.tryLast registered)
        | false, _ -> None

    /// Queues the events' inserts (an id already stored fails the session's commit). When this process's
    /// engine registered a fan-out on append for the store, each unkeyed event it fans out is stored
    /// processed with its requests, in the same transaction. An event with a deduplication key is
    /// inserted only if its key is not stored when the session commits (see `Deduplication`), and is
    /// left to the processor: requests stored with it would be stored for nothing when the insert
    /// skips it. Once the session commits, `RaisedEventsListener` signals the new work (see
    /// `Wakeups`). Returns the events as they will be stored if their keys are new (the first of each
    /// key in the place of the later ones).
    let append (session: IDocumentSession) (events: Event list) : Event list =
        let placed, stored = prepare events
        let keyed, unkeyed = stored |> List.partition _.DeduplicationKey.IsSome

        if not keyed.IsEmpty then
            Deduplication.queue session (eventsTable session.DocumentStore) keyed

        if not unkeyed.IsEmpty then
            let fanOut = fanOutOf session.DocumentStore

            for event in unkeyed do
                let decided =
                    match fanOut with
                    | Some fanOut when not (Event.isProcessed event) ->
                        fanOut.FanOut event |> Option.map (fun decision -> fanOut, decision)
                    | _ -> None

                match decided with
                | Some(fanOut, decision) ->
                    session.Insert<EventDocument>(
                        Documents.ofEvent
                            { event with
                                ProcessedAt = Some decision.ProcessedAt
                            }
                    )

                    session.Insert<RequestDocument>(decision.Requests |> Seq.map Documents.ofRequest)
                    let fanned = pending.GetValue(session, (fun _ -> ResizeArray()))
                    lock fanned (fun () -> fanned.Add(fanOut, event, decision))
                | None -> session.Insert<EventDocument>(Documents.ofEvent event)

        placed

    /// Tells the fan-outs of the events a session stored fanned out that its commit happened.
    let committed (session: IDocumentSession) =
        match pending.TryGetValue session with
        | true, fanned ->
            let taken =
                lock fanned (fun () ->
                    let taken = List.ofSeq fanned
                    fanned.Clear()
                    taken)

            for fanOut, group in taken |> List.groupBy (fun (fanOut, _, _) -> fanOut) do
                fanOut.Committed [ for _, event, decision in group -> event, decision ]

            not taken.IsEmpty
        | false, _ -> false

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

        let fannedOut = Outbox.committed session
        let keyed = Deduplication.takeQueued session

        let unprocessed =
            keyed
            || commit.Inserted
               |> Seq.exists (fun document ->
                   match document with
                   | :? EventDocument as event -> not event.ProcessedAt.HasValue
                   | _ -> false)

        if unprocessed then
            (Wakeups.For session.DocumentStore).Signal WorkSignal.EventsAppended

        if fannedOut then
            (Wakeups.For session.DocumentStore).Signal WorkSignal.RequestsReady

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
