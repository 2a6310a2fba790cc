namespace Events.Marten

open System
open System.Collections.Generic
open Events.Core
open global.Marten

/// Idempotent raises on PostgreSQL: a partial unique index holds one event per deduplication key, and
/// an event with a key is inserted with `ON CONFLICT DO NOTHING` against that index, in the session's
/// transaction. A concurrent insert of the same key waits for the transaction that holds it: when that
/// one commits, this insert stores nothing; when it rolls back, this one stores its event. No read
/// decides whether to insert; the stored event is read afterwards, to return it.
[<RequireQualifiedAccess>]
module internal Deduplication =

    /// The unique index over the events' deduplication keys.
    [<Literal>]
    let IndexName = "ux_events_deduplication_key"

    /// The index's predicate, spelled as the inserts' conflict target spells it.
    [<Literal>]
    let HasKey = "deduplication_key IS NOT NULL"

    /// Inserts the events of a JSON array of event documents (the one `?` parameter after the .NET type
    /// name), skipping each whose key is stored already (or committed meanwhile by another
    /// transaction). The duplicated columns are read from the documents, so they always agree.
    let private insertSql (events: string) =
        $"""
INSERT INTO %s{events} (id, data, event_timestamp, processed_at, deduplication_key, mt_last_modified, mt_dotnet_type)
SELECT (doc ->> 'id')::uuid, doc, (doc ->> 'timestamp')::timestamptz, (doc ->> 'processedAt')::timestamptz,
       doc ->> 'deduplicationKey', transaction_timestamp(), ?
FROM jsonb_array_elements(?::jsonb) AS input(doc)
ON CONFLICT (deduplication_key) WHERE %s{HasKey} DO NOTHING"""

    /// The documents of the events stored with any of the keys $1, as (key, document).
    let selectByKeys (events: string) =
        $"SELECT deduplication_key, data::text FROM %s{events} WHERE deduplication_key = ANY($1)"

    let private eventType = typeof<EventDocument>.FullName

    /// The sessions that queued keyed inserts, so their commit signals the new events.
    let private queued =
        System.Runtime.CompilerServices.ConditionalWeakTable<IDocumentSession, obj>()

    /// The batch as placed (the first event of each deduplication key in the place of the later ones
    /// with its key; unkeyed events as they are), and the events to store (all but those later ones).
    let firstOfEachKey (events: Event list) : Event list * Event list =
        let first = Dictionary<string, Event>(StringComparer.Ordinal)

        let placed =
            events
            |> List.map (fun event ->
                match event.DeduplicationKey with
                | None -> event, true
                | Some key ->
                    match first.TryGetValue key with
                    | true, earlier -> earlier, false
                    | false, _ ->
                        first.Add(key, event)
                        event, true)

        List.map fst placed, placed |> List.filter snd |> List.map fst

    /// Queues the inserts of keyed events (each key once) in the session's unit of work.
    let queue (session: IDocumentSession) (eventsTable: string) (events: Event list) =
        if not events.IsEmpty then
            let documents =
                events |> List.map (Documents.ofEvent >> Documents.toJson) |> String.concat ","

            session.QueueSqlCommand(insertSql eventsTable, eventType, "[" + documents + "]")
            queued.AddOrUpdate(session, box true)

    /// Whether the session queued keyed inserts since last asked (and forgets it).
    let takeQueued (session: IDocumentSession) =
        match queued.TryGetValue session with
        | true, _ -> queued.Remove session
        | false, _ -> false

    /// The events as returned to the raiser: each keyed one replaced by the event stored with its key
    /// (itself when it was stored; kept when none is stored any more).
    let resolve (storedByKey: IReadOnlyDictionary<string, Event>) (events: Event list) : Event list =
        events
        |> List.map (fun event ->
            match event.DeduplicationKey with
            | Some key ->
                match storedByKey.TryGetValue key with
                | true, stored when stored.Id <> event.Id -> stored
                | _ -> event
            | None -> event)
