namespace Events.Core

open System
open System.IO
open System.Text
open System.Text.Json
open System.Text.Json.Serialization

/// Why event data was refused.
[<RequireQualifiedAccess>]
type DataError =
    /// The data is null; use `EventData.Empty` for an event with no data.
    | Null
    /// The data serialised to JSON that is not an object (an array, a string, a number ...).
    | NotAnObject of kind: JsonValueKind
    /// The data could not be serialised to JSON.
    | NotSerialisable of typeName: string * reason: string
    /// The text is not valid JSON.
    | InvalidJson of reason: string
    /// The data's JSON is larger than `EventData.MaxBytes`.
    | TooLarge of bytes: int
    /// The data nests objects and arrays deeper than `EventDataLimits.MaxDepth`: it could not be read
    /// back with the default JSON reader settings.
    | TooDeep of depth: int

    /// A sentence that says what is wrong with the data.
    member this.Message =
        match this with
        | Null -> "event data must not be null (use an empty object for no data)"
        | NotAnObject kind -> $"event data must serialise to a JSON object, not to a JSON %A{kind}"
        | NotSerialisable(typeName, reason) ->
            $"event data of type %s{typeName} cannot be serialised to JSON: %s{reason}"
        | InvalidJson reason -> $"event data is not valid JSON: %s{reason}"
        | TooLarge bytes ->
            $"event data must be at most %d{EventDataLimits.MaxBytes} bytes of UTF-8 JSON, this one has %d{bytes}"
        | TooDeep depth ->
            $"event data must nest objects and arrays at most %d{EventDataLimits.MaxDepth} deep (as JSON readers allow by default), this one is %d{depth} deep"

/// Limits on event data.
and [<AbstractClass; Sealed>] EventDataLimits =
    /// The largest event data accepted: 1 MiB of UTF-8 JSON.
    static member MaxBytes = 1024 * 1024

    /// The deepest nesting of objects and arrays accepted: 64, the default of System.Text.Json's readers
    /// (and so of the stores that read the data back).
    static member MaxDepth = 64

/// The data of an event: a JSON object, kept as compact JSON text so that it round-trips through
/// System.Text.Json and a document store without loss (numbers keep their exact digits).
[<Struct; CustomEquality; NoComparison; JsonConverter(typeof<EventDataJsonConverter>)>]
type EventData =
    private
    | EventData of string

    /// The data as compact JSON text (always a JSON object).
    member this.Json =
        let (EventData json) = this
        if isNull json then "{}" else json

    /// The data parsed as a read-only JSON element.
    member this.ToJsonElement() : JsonElement =
        use document = JsonDocument.Parse this.Json
        document.RootElement.Clone()

    /// The data deserialised into a type of the caller's choosing.
    member this.Deserialize<'T>(?options: JsonSerializerOptions) : 'T =
        JsonSerializer.Deserialize<'T>(this.Json, defaultArg options null)

    override this.ToString() = this.Json

    override this.Equals other =
        match other with
        | :? EventData as data -> String.Equals(this.Json, data.Json, StringComparison.Ordinal)
        | _ -> false

    override this.GetHashCode() =
        StringComparer.Ordinal.GetHashCode this.Json

    /// An empty JSON object.
    static member Empty = EventData "{}"

    /// The deepest nesting of objects and arrays in an element (1 for an object of plain values), counted
    /// without recursion, so any depth a parser allowed is measured.
    static member private DepthOf(element: JsonElement) =
        let pending = System.Collections.Generic.Stack<struct (JsonElement * int)>()
        pending.Push(struct (element, 1))
        let mutable deepest = 0

        while pending.Count > 0 do
            let struct (current, depth) = pending.Pop()

            match current.ValueKind with
            | JsonValueKind.Object ->
                deepest <- max deepest depth

                for property in current.EnumerateObject() do
                    pending.Push(struct (property.Value, depth + 1))
            | JsonValueKind.Array ->
                deepest <- max deepest depth

                for item in current.EnumerateArray() do
                    pending.Push(struct (item, depth + 1))
            | _ -> ()

        deepest

    static member private OfElement(element: JsonElement) =
        let depth =
            if element.ValueKind = JsonValueKind.Object then
                EventData.DepthOf element
            else
                0

        if element.ValueKind <> JsonValueKind.Object then
            Error(DataError.NotAnObject element.ValueKind)
        elif depth > EventDataLimits.MaxDepth then
            Error(DataError.TooDeep depth)
        else
            use buffer = new MemoryStream()

            do
                use writer = new Utf8JsonWriter(buffer)
                element.WriteTo writer

            if buffer.Length > int64 EventDataLimits.MaxBytes then
                Error(DataError.TooLarge(int buffer.Length))
            else
                Ok(EventData(Encoding.UTF8.GetString(buffer.GetBuffer(), 0, int buffer.Length)))

    /// Makes event data from JSON text, which must hold one JSON object.
    static member TryParse(json: string) : Result<EventData, DataError> =
        if isNull json then
            Error DataError.Null
        else
            // Parsing is how JSON is validated; a JsonException is the parser's verdict, not a fault.
            let parsed =
                try
                    Ok(JsonDocument.Parse json)
                with :? JsonException as e ->
                    Error(DataError.InvalidJson e.Message)

            parsed
            |> Result.bind (fun document ->
                use document = document
                EventData.OfElement document.RootElement)

    /// Makes event data by serialising a value with System.Text.Json; the value must serialise to a
    /// JSON object (a record, a class, a dictionary with string keys, an anonymous object).
    static member TrySerialise(value: obj, ?options: JsonSerializerOptions) : Result<EventData, DataError> =
        match value with
        | null -> Error DataError.Null
        | :? EventData as data -> Ok data
        | :? JsonElement as element -> EventData.OfElement element
        | _ ->
            let serialised =
                try
                    Ok(JsonSerializer.SerializeToElement(value, value.GetType(), defaultArg options null))
                with
                | :? NotSupportedException as e -> Error(DataError.NotSerialisable(value.GetType().FullName, e.Message))
                | :? JsonException as e -> Error(DataError.NotSerialisable(value.GetType().FullName, e.Message))
                | :? InvalidOperationException as e ->
                    Error(DataError.NotSerialisable(value.GetType().FullName, e.Message))

            serialised |> Result.bind EventData.OfElement

/// Writes event data as the JSON object it holds, and reads it back without loss.
and EventDataJsonConverter() =
    inherit JsonConverter<EventData>()

    override _.Read(reader, _typeToConvert, _options) =
        use document = JsonDocument.ParseValue(&reader)

        match EventData.TrySerialise(document.RootElement) with
        | Ok data -> data
        | Error error -> raise (JsonException error.Message)

    override _.Write(writer, value, _options) =
        writer.WriteRawValue(value.Json, skipInputValidation = true)
