module Events.Tests.EventDataTests

open System
open System.Collections.Generic
open System.Text
open System.Text.Json
open Expecto
open Events.Core

/// A record that carries event data, as a store's document or a message would.
type Envelope = { Name: string; Data: EventData }

/// A record a caller might raise as event data.
type OrderPlaced =
    {
        OrderId: int
        Total: decimal
        Lines: string list
    }

/// An object graph with a cycle, which System.Text.Json refuses to serialise by default.
[<AllowNullLiteral>]
type Node(name: string) =
    member _.Name = name
    member val Next: Node = null with get, set

let private parsed (json: string) =
    match EventData.TryParse json with
    | Ok data -> data
    | Error error -> failtestf "%s should parse, but was refused: %A" json error

/// An object whose compact UTF-8 JSON is exactly `bytes` long: {"a":"xxx..."}.
let private objectOfSize (bytes: int) =
    let overhead = """{"a":""}""".Length
    "{\"a\":\"" + String('x', bytes - overhead) + "\"}"

let private deepEquals (expected: string) (data: EventData) =
    use document = JsonDocument.Parse expected
    JsonElement.DeepEquals(document.RootElement, data.ToJsonElement())

/// A JSON object nesting `depth` objects and arrays: an object holding arrays inside arrays.
let private nested (depth: int) =
    "{\"a\":"
    + String.replicate (depth - 1) "["
    + "0"
    + String.replicate (depth - 1) "]"
    + "}"

/// The element of JSON text parsed with a reader that allows any depth up to 10,000.
let private deepElement (json: string) =
    use document = JsonDocument.Parse(json, JsonDocumentOptions(MaxDepth = 10_000))
    document.RootElement.Clone()

let private examples =
    testList
        "examples"
        [
            testCase "data is accepted exactly when the default JSON reader can read it back: at most 64 deep"
            <| fun () ->
                for depth in [ 1; 2; 63; 64; 65; 100; 5_000 ] do
                    let readsBack =
                        try
                            use _ = JsonDocument.Parse(nested depth)
                            true
                        with :? JsonException ->
                            false

                    match EventData.TrySerialise(deepElement (nested depth)) with
                    | Ok data ->
                        Expect.isTrue readsBack $"%d{depth} deep was accepted, so it must read back"
                        use _ = JsonDocument.Parse data.Json
                        ()
                    | Error(DataError.TooDeep measured) ->
                        Expect.isFalse readsBack $"%d{depth} deep was refused, so it must not read back"
                        Expect.equal measured depth "the refusal names the depth"

                        Expect.stringContains
                            (DataError.TooDeep measured).Message
                            "at most 64 deep"
                            "the message names the limit"
                    | Error other -> failtest $"%d{depth} deep: unexpected refusal %A{other}"

            testCase "the empty data is an empty JSON object"
            <| fun () ->
                Expect.equal EventData.Empty.Json "{}" "Empty must be {} so an event with no data still holds an object"

            testCase "the default value of EventData is the empty object"
            <| fun () ->
                Expect.equal
                    Unchecked.defaultof<EventData>.Json
                    "{}"
                    "an uninitialised struct (for instance in an array) must read as {}, never as null"

                Expect.equal
                    Unchecked.defaultof<EventData>
                    EventData.Empty
                    "an uninitialised struct must equal Empty, since both hold {}"

            testCase "null text is refused as null"
            <| fun () -> Expect.equal (EventData.TryParse null) (Error DataError.Null) "null is no JSON at all"

            testCase "a null value is refused as null"
            <| fun () ->
                Expect.equal (EventData.TrySerialise null) (Error DataError.Null) "a null value has no JSON object"

            testCase "JSON that is not an object is refused with its kind"
            <| fun () ->
                for json, kind in
                    [
                        "[1,2]", JsonValueKind.Array
                        "42", JsonValueKind.Number
                        "\"text\"", JsonValueKind.String
                        "true", JsonValueKind.True
                        "null", JsonValueKind.Null
                    ] do
                    Expect.equal
                        (EventData.TryParse json)
                        (Error(DataError.NotAnObject kind))
                        $"%s{json} is valid JSON but not an object, so it must be refused as a %A{kind}"

            testCase "a value that serialises to something other than an object is refused with its kind"
            <| fun () ->
                Expect.equal
                    (EventData.TrySerialise [ 1; 2 ])
                    (Error(DataError.NotAnObject JsonValueKind.Array))
                    "an F# list serialises to an array"

                Expect.equal
                    (EventData.TrySerialise "text")
                    (Error(DataError.NotAnObject JsonValueKind.String))
                    "a string serialises to a JSON string"

                Expect.equal
                    (EventData.TrySerialise 3.5)
                    (Error(DataError.NotAnObject JsonValueKind.Number))
                    "a float serialises to a JSON number"

            testCase "invalid JSON is refused as invalid"
            <| fun () ->
                for json in [ ""; "{"; "{'a':1}"; "{} {}"; "{\"a\":}"; "{\"a\":01}"; "{\"a\":NaN}" ] do
                    match EventData.TryParse json with
                    | Error(DataError.InvalidJson reason) ->
                        Expect.isNotEmpty reason $"the refusal of %s{json} must say what the parser found"
                    | other -> failtestf "%s is not valid JSON and must be refused as invalid, got %A" json other

            testCase "a cycle is refused as not serialisable"
            <| fun () ->
                let node = Node "a"
                node.Next <- node

                match EventData.TrySerialise node with
                | Error(DataError.NotSerialisable(typeName, reason)) ->
                    Expect.equal
                        typeName
                        typeof<Node>.FullName
                        "the refusal must name the type that could not be serialised"

                    Expect.stringContains reason "cycle" "the refusal must give System.Text.Json's reason"
                | other -> failtestf "a cycle cannot be written as JSON and must be refused, got %A" other

            testCase "an unsupported type is refused as not serialisable"
            <| fun () ->
                for value: obj in [ box (nativeint 3); box typeof<int> ] do
                    match EventData.TrySerialise value with
                    | Error(DataError.NotSerialisable(typeName, _)) ->
                        Expect.equal
                            typeName
                            (value.GetType().FullName)
                            "the refusal must name the runtime type System.Text.Json refused"
                    | other -> failtestf "%O cannot be serialised and must be refused, got %A" (value.GetType()) other

            testCase "a cycle inside an object is refused as not serialisable"
            <| fun () ->
                let node = Node "a"
                node.Next <- Node "b"
                node.Next.Next <- node

                match EventData.TrySerialise {| Head = node |} with
                | Error(DataError.NotSerialisable _) -> ()
                | other ->
                    failtestf "a cycle under an anonymous record must be refused as not serialisable, got %A" other

            testCase "data of exactly 1 MiB is accepted"
            <| fun () ->
                let json = objectOfSize EventDataLimits.MaxBytes
                Expect.equal (Encoding.UTF8.GetByteCount json) (1024 * 1024) "the test object is 1 MiB"
                Expect.isOk (EventData.TryParse json) "the limit is inclusive: 1 MiB of JSON is allowed"

            testCase "data one byte over 1 MiB is refused as too large with its size"
            <| fun () ->
                Expect.equal
                    (EventData.TryParse(objectOfSize (EventDataLimits.MaxBytes + 1)))
                    (Error(DataError.TooLarge(EventDataLimits.MaxBytes + 1)))
                    "one byte over the limit must be refused, giving the size found"

            testCase "serialised data over 1 MiB is refused as too large"
            <| fun () ->
                match
                    EventData.TrySerialise
                        {|
                            Text = String('x', 2 * 1024 * 1024)
                        |}
                with
                | Error(DataError.TooLarge bytes) ->
                    Expect.isGreaterThan bytes EventDataLimits.MaxBytes "the size reported must be over the limit"
                | other -> failtestf "2 MiB of text must be refused as too large, got %A" other

            testCase "the limit counts the compact form, not the caller's spacing"
            <| fun () ->
                let compact = objectOfSize (EventDataLimits.MaxBytes - 100)
                let spaced = compact.Replace("{", "{" + String(' ', 200))
                Expect.isGreaterThan spaced.Length EventDataLimits.MaxBytes "the spaced text is over 1 MiB"

                Expect.isOk
                    (EventData.TryParse spaced)
                    "the data is kept compact, so spaces the caller wrote do not count against the limit"

            testCase "the too-large message gives the limit and the size"
            <| fun () ->
                let message = (DataError.TooLarge 2000000).Message
                Expect.stringContains message "1048576" "the message must give the limit in bytes"
                Expect.stringContains message "2000000" "the message must give the size found"

            testCase "parsed data is kept as compact JSON"
            <| fun () ->
                Expect.equal
                    (parsed """ { "a" : 1 , "b" : [ true , null ] } """).Json
                    """{"a":1,"b":[true,null]}"""
                    "spacing is dropped so equal data has equal text"

            testCase "numbers keep their exact digits"
            <| fun () ->
                let json =
                    """{"big":123456789012345678901234567890,"precise":0.1000000000000000055511151231257827,"e":1E+400}"""

                Expect.equal
                    (parsed json).Json
                    json
                    "numbers must not pass through a double: every digit and the exponent's spelling must stay"

            testCase "an F# record serialises to its fields and deserialises back"
            <| fun () ->
                let order =
                    {
                        OrderId = 7
                        Total = 12.50m
                        Lines = [ "book"; "pen" ]
                    }

                match EventData.TrySerialise order with
                | Ok data ->
                    Expect.equal
                        data.Json
                        """{"OrderId":7,"Total":12.50,"Lines":["book","pen"]}"""
                        "a record must serialise to an object of its fields, the decimal's digits kept"

                    Expect.equal (data.Deserialize<OrderPlaced>()) order "the data must read back as the same record"
                | Error error -> failtestf "a record must serialise, got %A" error

            testCase "serialising options are used"
            <| fun () ->
                let options =
                    JsonSerializerOptions(PropertyNamingPolicy = JsonNamingPolicy.CamelCase)

                Expect.equal
                    (EventData.TrySerialise({| OrderId = 7 |}, options) |> Result.map _.Json)
                    (Ok """{"orderId":7}""")
                    "the caller's options (here camel case) must shape the JSON"

            testCase "a dictionary with string keys serialises to an object"
            <| fun () ->
                let values = Dictionary<string, obj>()
                values["a"] <- box 1
                values["b"] <- box "two"

                Expect.equal
                    (EventData.TrySerialise values |> Result.map _.Json)
                    (Ok """{"a":1,"b":"two"}""")
                    "a dictionary is an object to System.Text.Json"

            testCase "event data given to TrySerialise is kept as it is"
            <| fun () ->
                let data = parsed """{"a":1}"""
                Expect.equal (EventData.TrySerialise data) (Ok data) "event data is already valid event data"

            testCase "a JSON element given to TrySerialise is taken as its JSON"
            <| fun () ->
                use document = JsonDocument.Parse """{ "a": 1.50 }"""

                Expect.equal
                    (EventData.TrySerialise document.RootElement |> Result.map _.Json)
                    (Ok """{"a":1.50}""")
                    "an element is written as it is, not serialised as a JsonElement object"

            testCase "a JSON element that is not an object is refused"
            <| fun () ->
                use document = JsonDocument.Parse "[1]"

                Expect.equal
                    (EventData.TrySerialise document.RootElement)
                    (Error(DataError.NotAnObject JsonValueKind.Array))
                    "an array element is not an object"

            testCase "reading JSON that is not an object as event data throws JsonException"
            <| fun () ->
                Thrown.by<JsonException> "a JSON array cannot be event data" (fun () ->
                    JsonSerializer.Deserialize<EventData> "[1,2]" |> ignore)
                |> ignore

            testCase "event data is written as the object it holds"
            <| fun () ->
                let envelope =
                    {
                        Name = "order.placed"
                        Data = parsed """{"a":[1,2.50]}"""
                    }

                Expect.equal
                    (JsonSerializer.Serialize envelope)
                    """{"Name":"order.placed","Data":{"a":[1,2.50]}}"""
                    "the data must be nested as a JSON object, not as a string of JSON"

            testCase "equal JSON text makes equal data with equal hash codes"
            <| fun () ->
                let a = parsed """{"a":1}"""
                let b = parsed """ {"a" : 1} """
                Expect.equal a b "the same compact text is the same data"
                Expect.equal (a.GetHashCode()) (b.GetHashCode()) "equal data must hash alike"
                Expect.notEqual a (parsed """{"a":1.0}""") "1 and 1.0 are different texts, so different data"
        ]

let private properties =
    testList
        "laws"
        [
            Property.law "any JSON object parses to data with the same meaning"
            <| fun (JsonObjectText json) ->
                let data = parsed json

                Expect.isTrue
                    (deepEquals json data)
                    $"the data %s{data.Json} must hold the same JSON as the text %s{json}"

            Property.law "parsing the data's own JSON gives the same data"
            <| fun (data: EventData) ->
                Expect.equal
                    (EventData.TryParse data.Json)
                    (Ok data)
                    "the compact form must be stable: parsing it again changes nothing"

            Property.law "spacing and escaping do not change the data"
            <| fun (JsonObjectText json) ->
                let data = parsed json
                use document = JsonDocument.Parse json

                let indented =
                    JsonSerializer.Serialize(document.RootElement, JsonSerializerOptions(WriteIndented = true))

                Expect.equal (parsed indented) data "the same JSON written with indentation must give the same data"

            Property.law "event data round-trips through System.Text.Json"
            <| fun (data: EventData) ->
                let json = JsonSerializer.Serialize data
                Expect.equal json data.Json "event data must be written as the JSON object it holds"

                Expect.equal
                    (JsonSerializer.Deserialize<EventData> json)
                    data
                    "event data read back must equal the data written"

            Property.law "an event's data round-trips through System.Text.Json inside a record"
            <| fun (event: Event) ->
                let envelope =
                    {
                        Name = event.Name.Value
                        Data = event.Data
                    }

                let json = JsonSerializer.Serialize envelope

                Expect.equal
                    (JsonSerializer.Deserialize<Envelope> json)
                    envelope
                    "a record holding an event's data must read back equal, data included"

            Property.law "numbers keep their exact digits at any depth"
            <| fun (JsonNumberText number) ->
                let json = $"""{{"n":%s{number},"inner":{{"list":[%s{number}]}}}}"""
                let data = parsed json
                let element = data.ToJsonElement()

                Expect.equal
                    (element.GetProperty("n").GetRawText())
                    number
                    "a number must keep its digits exactly as written"

                Expect.equal
                    (element.GetProperty("inner").GetProperty("list").[0].GetRawText())
                    number
                    "a nested number must keep its digits exactly as written"

            Property.law "data deserialises into a JSON element equal to it"
            <| fun (data: EventData) ->
                let element = data.Deserialize<JsonElement>()

                Expect.isTrue
                    (JsonElement.DeepEquals(element, data.ToJsonElement()))
                    "Deserialize and ToJsonElement must agree on the data"
        ]

/// Event data: JSON objects kept as compact text.
let tests = testList "EventData" [ examples; properties ]
