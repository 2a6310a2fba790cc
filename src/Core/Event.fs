namespace Events.Core

open System

/// The entity a domain event is about.
type Entity =
    {
        /// The entity's id, such as an order number.
        Id: string
        /// The entity's kind, such as "order".
        Name: string
    }

/// The W3C trace context of the code that raised an event, so that processing and handling link
/// back to it.
type TraceContext =
    {
        /// The `traceparent` header value.
        TraceParent: string
        /// The `tracestate` header value, if any.
        TraceState: string option
    }

/// Why an event could not be made.
[<RequireQualifiedAccess>]
type EventError =
    /// The event name was refused.
    | InvalidName of NameError
    /// The entity id of a domain event was refused.
    | InvalidEntityId of NameError
    /// The entity name of a domain event was refused.
    | InvalidEntityName of NameError
    /// The data was refused.
    | InvalidData of DataError

    /// A sentence that says what is wrong.
    member this.Message =
        match this with
        | InvalidName error -> $"invalid event name: %s{error.Message}"
        | InvalidEntityId error -> $"invalid entity id: %s{error.Message}"
        | InvalidEntityName error -> $"invalid entity name: %s{error.Message}"
        | InvalidData error -> error.Message

/// Something that happened: an application event, or a domain event about an entity.
type Event =
    {
        /// A UUIDv7, so ids sort by creation time.
        Id: Guid
        /// What happened.
        Name: EventName
        /// The data, a JSON object.
        Data: EventData
        /// When it happened.
        Timestamp: DateTimeOffset
        /// The entity a domain event is about; none for an application event.
        Entity: Entity option
        /// Set by the store when the event is appended, unless the caller set one.
        CorrelationId: Guid option
        /// The trace context of the code that raised the event.
        Trace: TraceContext option
        /// When the processor fanned the event out to its handler requests.
        ProcessedAt: DateTimeOffset option
        /// Makes raising idempotent: while an event with this key is stored (until retention removes
        /// it), appending another with the same key stores nothing and returns the stored one.
        DeduplicationKey: string option
    }

/// Functions on events. None reads the clock or draws an id: callers pass them in.
[<RequireQualifiedAccess>]
module Event =

    /// An application event (one without an entity).
    let application (id: Guid) (timestamp: DateTimeOffset) (name: EventName) (data: EventData) : Event =
        {
            Id = id
            Name = name
            Data = data
            Timestamp = timestamp
            Entity = None
            CorrelationId = None
            Trace = None
            ProcessedAt = None
            DeduplicationKey = None
        }

    /// A domain event, about the entity given.
    let domain (id: Guid) (timestamp: DateTimeOffset) (name: EventName) (entity: Entity) (data: EventData) : Event =
        { application id timestamp name data with
            Entity = Some entity
        }

    /// Makes an entity reference, refusing an id or a name that breaks the naming rules.
    let tryEntity (entityId: string) (entityName: string) : Result<Entity, EventError> =
        match Name.Validate entityId, Name.Validate entityName with
        | Ok id, Ok name -> Ok { Id = id; Name = name }
        | Error error, _ -> Error(EventError.InvalidEntityId error)
        | _, Error error -> Error(EventError.InvalidEntityName error)

    /// Makes an application event from raw inputs, validating the name and serialising the data.
    let tryApplication (id: Guid) (timestamp: DateTimeOffset) (name: string) (data: obj) : Result<Event, EventError> =
        match EventName.TryCreate name, EventData.TrySerialise data with
        | Ok name, Ok data -> Ok(application id timestamp name data)
        | Error error, _ -> Error(EventError.InvalidName error)
        | _, Error error -> Error(EventError.InvalidData error)

    /// Makes a domain event from raw inputs, validating the name and entity and serialising the data.
    let tryDomain
        (id: Guid)
        (timestamp: DateTimeOffset)
        (name: string)
        (entityId: string)
        (entityName: string)
        (data: obj)
        : Result<Event, EventError> =
        match EventName.TryCreate name with
        | Error error -> Error(EventError.InvalidName error)
        | Ok name ->
            match tryEntity entityId entityName, EventData.TrySerialise data with
            | Ok entity, Ok data -> Ok(domain id timestamp name entity data)
            | Error error, _ -> Error error
            | _, Error error -> Error(EventError.InvalidData error)

    /// Whether the processor has fanned the event out.
    let isProcessed (event: Event) = event.ProcessedAt.IsSome

    /// The longest deduplication key accepted, in characters.
    [<Literal>]
    let MaxDeduplicationKeyLength = 200

    /// Refuses a deduplication key that is null, empty, longer than `MaxDeduplicationKeyLength` or holds
    /// a NUL character (which PostgreSQL text cannot store), with an `ArgumentException`.
    let checkDeduplicationKey (key: string) =
        if isNull key then
            nullArg "deduplicationKey"

        if key.Length = 0 then
            invalidArg "deduplicationKey" "a deduplication key must not be empty"

        if key.Length > MaxDeduplicationKeyLength then
            invalidArg
                "deduplicationKey"
                $"a deduplication key must be at most %d{MaxDeduplicationKeyLength} characters, got %d{key.Length}"

        if key.Contains '\000' then
            invalidArg "deduplicationKey" "a deduplication key must not hold a NUL character"

    /// The event with a deduplication key (see `Event.DeduplicationKey`); refuses a bad key (see
    /// `checkDeduplicationKey`).
    let withDeduplicationKey (key: string) (event: Event) : Event =
        checkDeduplicationKey key

        { event with
            DeduplicationKey = Some key
        }

    /// Whether the event an append returned in the place of `raised` is another one, stored before with
    /// the same deduplication key (so nothing was stored for `raised`).
    let isDuplicateOf (raised: Event) (returned: Event) = raised.Id <> returned.Id

    /// Refuses a batch to append whose events carry a bad deduplication key.
    let checkDeduplicationKeys (events: Event list) =
        for event in events do
            event.DeduplicationKey |> Option.iter checkDeduplicationKey

/// The events an entity has raised and not yet had saved: raise, read, clear. Safe to use from
/// several threads.
[<Sealed>]
type EventRaiser() =
    let events = ResizeArray<Event>()

    /// Records an event.
    member _.Raise(event: Event) =
        lock events (fun () -> events.Add event)

    /// The events raised so far, oldest first.
    member _.Events: Event list = lock events (fun () -> List.ofSeq events)

    /// Forgets the events raised so far (after they were saved).
    member _.Clear() = lock events (fun () -> events.Clear())

/// An entity that raises events, so a store can save them with it.
type IRaiseEvents =
    /// The entity's raised events.
    abstract Raiser: EventRaiser
