namespace Events.Marten

open System
open Events.Core
open System.Text.Json
open System.Text.Json.Serialization
open global.Events

/// A stored form failed the core's rules (a name, a state): the database holds a row no version of
/// this store writes. Keeps the document's id.
type CorruptDocumentException(documentId: Guid, message: string) =
    inherit Exception($"stored document %O{documentId} is not valid: %s{message}")

    /// The id of the document that failed.
    member _.DocumentId = documentId

/// Writes event data as a JSON string that holds its JSON text, so that it reads back byte for byte:
/// PostgreSQL's jsonb reorders an object's keys, drops duplicate keys and refuses the escape \u0000,
/// so data stored as a jsonb object would not equal the event's `EventData` when read back.
type EventDataTextConverter() =
    inherit JsonConverter<EventData>()

    /// Reads the JSON text back into event data (a JSON object, for documents written otherwise).
    override _.Read(reader, _typeToConvert, _options) =
        let parsed =
            match reader.TokenType with
            | JsonTokenType.String -> EventData.TryParse(reader.GetString())
            | _ ->
                use document = JsonDocument.ParseValue(&reader)
                EventData.TrySerialise(document.RootElement.Clone())

        match parsed with
        | Ok data -> data
        | Error error -> raise (JsonException error.Message)

    /// Writes the data's JSON text as a JSON string.
    override _.Write(writer, value, _options) = writer.WriteStringValue value.Json

/// The stored form of an event: a Marten document with one flat field per field of the core's
/// `Event`, plus the processor's claim. JSON names are pinned so the store's SQL can address them
/// whatever casing the application's Marten serialiser uses.
[<CLIMutable>]
type EventDocument =
    {
        /// The event's id (a UUIDv7).
        [<JsonPropertyName("id")>]
        Id: Guid
        /// The event's name.
        [<JsonPropertyName("name")>]
        Name: string
        /// The event's data, written as its JSON text (see `EventDataTextConverter`).
        [<JsonPropertyName("data"); JsonConverter(typeof<EventDataTextConverter>)>]
        Data: EventData
        /// When the event happened (UTC).
        [<JsonPropertyName("timestamp")>]
        Timestamp: DateTimeOffset
        /// The entity id of a domain event; null for an application event.
        [<JsonPropertyName("entityId")>]
        EntityId: string
        /// The entity name of a domain event; null for an application event.
        [<JsonPropertyName("entityName")>]
        EntityName: string
        /// The correlation id.
        [<JsonPropertyName("correlationId")>]
        CorrelationId: Nullable<Guid>
        /// The W3C traceparent of the code that raised the event, if any.
        [<JsonPropertyName("traceParent")>]
        TraceParent: string
        /// The W3C tracestate, if any.
        [<JsonPropertyName("traceState")>]
        TraceState: string
        /// When the processor fanned the event out (UTC).
        [<JsonPropertyName("processedAt")>]
        ProcessedAt: Nullable<DateTimeOffset>
        /// The token of the processor's claim, while one is held.
        [<JsonPropertyName("claimToken")>]
        ClaimToken: Nullable<Guid>
        /// When the processor's claim lapses (UTC).
        [<JsonPropertyName("claimUntil")>]
        ClaimUntil: Nullable<DateTimeOffset>
        /// Why the store set the row aside (it could not read it); null for a healthy row. Written only
        /// by the store's SQL, into its column; a set-aside row is in no claim, gauge or page.
        [<JsonPropertyName("setAside")>]
        SetAside: string
        /// The event's deduplication key; null for none.
        [<JsonPropertyName("deduplicationKey")>]
        DeduplicationKey: string
    }

/// The stored form of a handler request: a Marten document with one flat field per field of the Go
/// framework's request (the core's `HandlerRequest` with its state spread over nullable fields), plus
/// the lease and its fencing token.
[<CLIMutable>]
type RequestDocument =
    {
        /// The request's id (a UUIDv7).
        [<JsonPropertyName("id")>]
        Id: Guid
        /// The handler to run.
        [<JsonPropertyName("handlerName")>]
        HandlerName: string
        /// The event's id.
        [<JsonPropertyName("eventId")>]
        EventId: Guid
        /// The event's name.
        [<JsonPropertyName("eventName")>]
        EventName: string
        /// The event's data, written as its JSON text (see `EventDataTextConverter`).
        [<JsonPropertyName("eventData"); JsonConverter(typeof<EventDataTextConverter>)>]
        EventData: EventData
        /// When the event happened (UTC).
        [<JsonPropertyName("eventTimestamp")>]
        EventTimestamp: DateTimeOffset
        /// The entity id of a domain event; null otherwise.
        [<JsonPropertyName("entityId")>]
        EntityId: string
        /// The entity name of a domain event; null otherwise.
        [<JsonPropertyName("entityName")>]
        EntityName: string
        /// The event's correlation id.
        [<JsonPropertyName("correlationId")>]
        CorrelationId: Nullable<Guid>
        /// The W3C traceparent of the code that raised the event, if any.
        [<JsonPropertyName("traceParent")>]
        TraceParent: string
        /// The W3C tracestate, if any.
        [<JsonPropertyName("traceState")>]
        TraceState: string
        /// Failed attempts after which the request is dead.
        [<JsonPropertyName("maxErrors")>]
        MaxErrors: int
        /// Lower runs first.
        [<JsonPropertyName("priority")>]
        Priority: int
        /// The exponential backoff's base; null (with the cap) for the default backoff.
        [<JsonPropertyName("backoffBase")>]
        BackoffBase: Nullable<TimeSpan>
        /// The exponential backoff's cap; null (with the base) for the default backoff.
        [<JsonPropertyName("backoffCap")>]
        BackoffCap: Nullable<TimeSpan>
        /// The handler's timeout when the event was fanned out; null for none.
        [<JsonPropertyName("timeout")>]
        Timeout: Nullable<TimeSpan>
        /// Failed attempts so far.
        [<JsonPropertyName("errors")>]
        Errors: int
        /// When an attempt last ended (UTC).
        [<JsonPropertyName("lastAttemptAt")>]
        LastAttemptAt: Nullable<DateTimeOffset>
        /// The error of the last failed attempt.
        [<JsonPropertyName("lastError")>]
        LastError: string
        /// When a backoff ends (UTC).
        [<JsonPropertyName("backoffUntil")>]
        BackoffUntil: Nullable<DateTimeOffset>
        /// When the request completed (UTC).
        [<JsonPropertyName("completedAt")>]
        CompletedAt: Nullable<DateTimeOffset>
        /// When the request was canceled (UTC).
        [<JsonPropertyName("canceledAt")>]
        CanceledAt: Nullable<DateTimeOffset>
        /// When the running attempt's lease lapses (UTC); null unless running.
        [<JsonPropertyName("leaseUntil")>]
        LeaseUntil: Nullable<DateTimeOffset>
        /// The running attempt's fencing token; null unless running.
        [<JsonPropertyName("claimToken")>]
        ClaimToken: Nullable<Guid>
        /// Why the store set the row aside; null for a healthy row (see `EventDocument.SetAside`).
        [<JsonPropertyName("setAside")>]
        SetAside: string
    }

/// Conversions between the core's types and their stored forms. Times are stored in UTC (the same
/// instant, so equal by `DateTimeOffset` equality); PostgreSQL compares them to the microsecond.
[<RequireQualifiedAccess>]
module internal Documents =

    let utc (value: DateTimeOffset) = value.ToUniversalTime()

    let nullableUtc (value: DateTimeOffset option) =
        match value with
        | Some value -> Nullable(utc value)
        | None -> Nullable()

    let ofNullable (value: Nullable<'T>) : 'T option =
        if value.HasValue then Some value.Value else None

    let private orNull (value: string option) =
        match value with
        | Some value -> value
        | None -> null

    let private ofNull (value: string) =
        match value with
        | null -> None
        | value -> Some value

    let private trace (traceParent: string) (traceState: string) : TraceContext option =
        match traceParent with
        | null -> None
        | traceParent ->
            Some
                {
                    TraceParent = traceParent
                    TraceState = ofNull traceState
                }

    let private entity (id: Guid) (entityId: string) (entityName: string) : Entity option =
        match entityId, entityName with
        | null, null -> None
        | null, _
        | _, null -> raise (CorruptDocumentException(id, "an entity needs both an id and a name"))
        | entityId, entityName -> Some { Id = entityId; Name = entityName }

    let private checkName (id: Guid) (what: string) (result: Result<'T, NameError>) =
        match result with
        | Ok value -> value
        | Error error -> raise (CorruptDocumentException(id, $"%s{what}: %s{error.Message}"))

    /// The stored form of an event, with no claim.
    let ofEvent (event: Event) : EventDocument =
        {
            Id = event.Id
            Name = event.Name.Value
            Data = event.Data
            Timestamp = utc event.Timestamp
            EntityId = event.Entity |> Option.map _.Id |> orNull
            EntityName = event.Entity |> Option.map _.Name |> orNull
            CorrelationId = Option.toNullable event.CorrelationId
            TraceParent = event.Trace |> Option.map _.TraceParent |> orNull
            TraceState = event.Trace |> Option.bind _.TraceState |> orNull
            ProcessedAt = nullableUtc event.ProcessedAt
            ClaimToken = Nullable()
            ClaimUntil = Nullable()
            SetAside = null
            DeduplicationKey = event.DeduplicationKey |> orNull
        }

    /// The event a stored form holds; throws `CorruptDocumentException` when it breaks the core's rules.
    let toEvent (document: EventDocument) : Event =
        {
            Id = document.Id
            Name = EventName.TryCreate document.Name |> checkName document.Id "event name"
            Data = document.Data
            Timestamp = document.Timestamp
            Entity = entity document.Id document.EntityId document.EntityName
            CorrelationId = ofNullable document.CorrelationId
            Trace = trace document.TraceParent document.TraceState
            ProcessedAt = ofNullable document.ProcessedAt
            DeduplicationKey = Option.ofObj document.DeduplicationKey
        }

    /// The stored form of a request: its state spread over the flat fields.
    let ofRequest (request: HandlerRequest) : RequestDocument =
        let lease = HandlerRequest.lease request

        {
            Id = request.Id
            HandlerName = request.HandlerName.Value
            EventId = request.EventId
            EventName = request.EventName.Value
            EventData = request.EventData
            EventTimestamp = utc request.EventTimestamp
            EntityId = request.EventEntity |> Option.map _.Id |> orNull
            EntityName = request.EventEntity |> Option.map _.Name |> orNull
            CorrelationId = Option.toNullable request.CorrelationId
            TraceParent = request.EventTrace |> Option.map _.TraceParent |> orNull
            TraceState = request.EventTrace |> Option.bind _.TraceState |> orNull
            MaxErrors = request.MaxErrors
            Priority = request.Priority
            BackoffBase =
                match request.Backoff with
                | BackoffPolicy.Default -> Nullable()
                | BackoffPolicy.Exponential exponential -> Nullable exponential.Base
            BackoffCap =
                match request.Backoff with
                | BackoffPolicy.Default -> Nullable()
                | BackoffPolicy.Exponential exponential -> Nullable exponential.Cap
            Timeout = Option.toNullable request.Timeout
            Errors = request.Errors
            LastAttemptAt = nullableUtc request.LastAttemptAt
            LastError = orNull request.LastError
            BackoffUntil = nullableUtc (HandlerRequest.backoffUntil request)
            CompletedAt = nullableUtc (HandlerRequest.completedAt request)
            CanceledAt = nullableUtc (HandlerRequest.canceledAt request)
            LeaseUntil = lease |> Option.map (fun lease -> utc lease.Until) |> Option.toNullable
            ClaimToken = lease |> Option.map _.Token |> Option.toNullable
            SetAside = null
        }

    /// The request a stored form holds, its state rebuilt by the core's `stateOfFields`; throws
    /// `CorruptDocumentException` when the fields make no state.
    let toRequest (document: RequestDocument) : HandlerRequest =
        let lease =
            match ofNullable document.ClaimToken, ofNullable document.LeaseUntil with
            | Some token, Some until -> Some { Token = token; Until = until }
            | None, None -> None
            | Some _, None
            | None, Some _ -> raise (CorruptDocumentException(document.Id, "a lease needs both a token and an end"))

        let state =
            HandlerRequest.stateOfFields
                document.Errors
                document.MaxErrors
                (ofNullable document.BackoffUntil)
                (ofNullable document.CompletedAt)
                (ofNullable document.CanceledAt)
                lease

        match state with
        | Error reason -> raise (CorruptDocumentException(document.Id, reason))
        | Ok state ->
            {
                Id = document.Id
                HandlerName =
                    HandlerName.TryCreate document.HandlerName
                    |> checkName document.Id "handler name"
                EventId = document.EventId
                EventName = EventName.TryCreate document.EventName |> checkName document.Id "event name"
                EventData = document.EventData
                EventTimestamp = document.EventTimestamp
                EventEntity = entity document.Id document.EntityId document.EntityName
                CorrelationId = ofNullable document.CorrelationId
                EventTrace = trace document.TraceParent document.TraceState
                MaxErrors = document.MaxErrors
                Priority = document.Priority
                Backoff =
                    match ofNullable document.BackoffBase, ofNullable document.BackoffCap with
                    | None, None -> BackoffPolicy.Default
                    | Some baseWait, Some cap -> BackoffPolicy.Exponential { Base = baseWait; Cap = cap }
                    | Some _, None
                    | None, Some _ ->
                        raise (
                            CorruptDocumentException(document.Id, "an exponential backoff needs both a base and a cap")
                        )
                Timeout = ofNullable document.Timeout
                Errors = document.Errors
                LastAttemptAt = ofNullable document.LastAttemptAt
                LastError = ofNull document.LastError
                State = state
            }

    /// The options the store's own SQL paths read and write documents with (names are pinned by
    /// attributes, so they agree with Marten's serialiser).
    let jsonOptions = JsonSerializerOptions(JsonSerializerDefaults.General)

    /// A value as JSON text.
    let toJson (value: 'T) =
        JsonSerializer.Serialize(value, jsonOptions)

    /// A document from JSON text.
    /// The fields of a request document an outcome can change (its state, errors and last attempt), as
    /// a JSON object to merge into the stored document: an outcome never sends the event's data again.
    let outcomePatch (document: RequestDocument) : string =
        let changed = Collections.Generic.Dictionary<string, obj>()
        changed["errors"] <- box document.Errors
        changed["lastAttemptAt"] <- box document.LastAttemptAt
        changed["lastError"] <- box document.LastError
        changed["backoffUntil"] <- box document.BackoffUntil
        changed["completedAt"] <- box document.CompletedAt
        changed["canceledAt"] <- box document.CanceledAt
        changed["leaseUntil"] <- box document.LeaseUntil
        changed["claimToken"] <- box document.ClaimToken
        JsonSerializer.Serialize(changed, jsonOptions)

    let ofJson<'T> (json: string) : 'T =
        JsonSerializer.Deserialize<'T>(json, jsonOptions)
