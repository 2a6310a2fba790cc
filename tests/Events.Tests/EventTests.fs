module Events.Tests.EventTests

open System
open System.Threading.Tasks
open Expecto
open FsCheck
open FsCheck.FSharp
open Events.Core

let private id = Guid.Parse "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
let private timestamp = DateTimeOffset(2024, 5, 1, 12, 0, 0, TimeSpan.Zero)

let private entity = { Id = "42"; Name = "order" }

let private eventNamed (name: string) =
    Event.application id timestamp (EventName.Create name) EventData.Empty

let private examples =
    testList
        "examples"
        [
            testCase "an application event has no entity, no correlation, no trace and is not processed"
            <| fun () ->
                let data =
                    EventData.TryParse """{"a":1}"""
                    |> Result.defaultWith (fun _ -> failtest "the data is valid")

                let event = Event.application id timestamp (EventName.Create "user.signed-up") data
                Expect.equal event.Id id "the id given must be kept"
                Expect.equal event.Timestamp timestamp "the timestamp given must be kept"
                Expect.equal event.Name.Value "user.signed-up" "the name given must be kept"
                Expect.equal event.Data data "the data given must be kept"
                Expect.isNone event.Entity "an application event is about no entity"
                Expect.isNone event.CorrelationId "the store, not the caller, assigns the correlation id"
                Expect.isNone event.Trace "no trace context until the raiser sets one"
                Expect.isNone event.ProcessedAt "a new event is unprocessed"
                Expect.isFalse (Event.isProcessed event) "a new event is unprocessed"

            testCase "a domain event is an application event with its entity"
            <| fun () ->
                let name = EventName.Create "order.placed"
                let event = Event.domain id timestamp name entity EventData.Empty

                Expect.equal
                    event
                    { Event.application id timestamp name EventData.Empty with
                        Entity = Some entity
                    }
                    "a domain event differs from an application event only by its entity"

            testCase "an event is processed once it has a processing time"
            <| fun () ->
                let event =
                    { eventNamed "a" with
                        ProcessedAt = Some timestamp
                    }

                Expect.isTrue (Event.isProcessed event) "ProcessedAt set means the processor fanned it out"

            testCase "tryApplication accepts a valid name and serialisable object data"
            <| fun () ->
                match Event.tryApplication id timestamp "user.signed-up" {| UserId = 3 |} with
                | Ok event ->
                    Expect.equal event.Name.Value "user.signed-up" "the name must be kept"
                    Expect.equal event.Data.Json """{"UserId":3}""" "the data must be serialised to JSON"
                    Expect.isNone event.Entity "an application event has no entity"
                | Error error -> failtestf "valid inputs must make an event, got %A" error

            testCase "tryApplication refuses an empty name"
            <| fun () ->
                Expect.equal
                    (Event.tryApplication id timestamp "" EventData.Empty)
                    (Error(EventError.InvalidName NameError.Empty))
                    "an event needs a name, as in Go"

            testCase "tryApplication refuses data that is not an object"
            <| fun () ->
                Expect.equal
                    (Event.tryApplication id timestamp "a" [ 1 ])
                    (Error(EventError.InvalidData(DataError.NotAnObject Text.Json.JsonValueKind.Array)))
                    "event data must be a JSON object"

            testCase "tryApplication refuses null data"
            <| fun () ->
                Expect.equal
                    (Event.tryApplication id timestamp "a" null)
                    (Error(EventError.InvalidData DataError.Null))
                    "null is no data; EventData.Empty is the empty object"

            testCase "tryApplication reports the name before the data"
            <| fun () ->
                Expect.equal
                    (Event.tryApplication id timestamp " " null)
                    (Error(EventError.InvalidName NameError.Blank))
                    "when both are wrong the name's error comes first"

            testCase "tryDomain accepts a valid name, entity and data"
            <| fun () ->
                match Event.tryDomain id timestamp "order.placed" "42" "order" EventData.Empty with
                | Ok event -> Expect.equal event.Entity (Some entity) "the entity must be kept"
                | Error error -> failtestf "valid inputs must make an event, got %A" error

            testCase "tryDomain refuses an invalid entity id"
            <| fun () ->
                Expect.equal
                    (Event.tryDomain id timestamp "order.placed" "" "order" EventData.Empty)
                    (Error(EventError.InvalidEntityId NameError.Empty))
                    "a domain event's entity id follows the naming rules"

            testCase "tryDomain refuses an invalid entity name"
            <| fun () ->
                Expect.equal
                    (Event.tryDomain id timestamp "order.placed" "42" "or\nder" EventData.Empty)
                    (Error(EventError.InvalidEntityName(NameError.ControlCharacter 2)))
                    "a domain event's entity name follows the naming rules"

            testCase "tryDomain reports the name, then the entity id, then the entity name, then the data"
            <| fun () ->
                Expect.equal
                    (Event.tryDomain id timestamp "" "" "" null)
                    (Error(EventError.InvalidName NameError.Empty))
                    "the event name comes first"

                Expect.equal
                    (Event.tryDomain id timestamp "a" "" "" null)
                    (Error(EventError.InvalidEntityId NameError.Empty))
                    "the entity id comes second"

                Expect.equal
                    (Event.tryDomain id timestamp "a" "1" "" null)
                    (Error(EventError.InvalidEntityName NameError.Empty))
                    "the entity name comes third"

                Expect.equal
                    (Event.tryDomain id timestamp "a" "1" "b" null)
                    (Error(EventError.InvalidData DataError.Null))
                    "the data comes last"

            testCase "tryEntity refuses the id before the name"
            <| fun () ->
                Expect.equal
                    (Event.tryEntity " " "")
                    (Error(EventError.InvalidEntityId NameError.Blank))
                    "the id is checked first"

            testCase "an event error's message names what was wrong"
            <| fun () ->
                Expect.stringContains
                    (EventError.InvalidEntityId NameError.Empty).Message
                    "entity id"
                    "the message must say the entity id was wrong"

                Expect.equal
                    (EventError.InvalidData DataError.Null).Message
                    DataError.Null.Message
                    "a data error's message is the data's own message"

            testCase "a new raiser has no events"
            <| fun () -> Expect.isEmpty (EventRaiser().Events) "nothing was raised yet"

            testCase "a raiser gives back its events oldest first"
            <| fun () ->
                let raiser = EventRaiser()
                let events = [ eventNamed "a"; eventNamed "b"; eventNamed "c" ]
                events |> List.iter raiser.Raise
                Expect.equal raiser.Events events "events must come back in the order they were raised"

            testCase "clearing a raiser forgets its events"
            <| fun () ->
                let raiser = EventRaiser()
                raiser.Raise(eventNamed "a")
                raiser.Clear()
                Expect.isEmpty raiser.Events "after Clear (the events were saved) nothing is left"
                raiser.Raise(eventNamed "b")
                Expect.equal raiser.Events [ eventNamed "b" ] "a cleared raiser keeps raising"

            testCase "the events read from a raiser do not change when more are raised"
            <| fun () ->
                let raiser = EventRaiser()
                raiser.Raise(eventNamed "a")
                let before = raiser.Events
                raiser.Raise(eventNamed "b")
                raiser.Clear()
                Expect.equal before [ eventNamed "a" ] "Events is a snapshot, not a live view"

            testCase "events raised from many threads are all kept"
            <| fun () ->
                let raiser = EventRaiser()

                Parallel.For(0, 1000, fun i -> raiser.Raise(eventNamed $"e%d{i}")) |> ignore

                let names = raiser.Events |> List.map _.Name.Value |> set

                Expect.equal
                    names
                    (set [ for i in 0..999 -> $"e%d{i}" ])
                    "the raiser is thread safe: no event may be lost or doubled"

            testCase "an entity raises events through its raiser"
            <| fun () ->
                let order =
                    let raiser = EventRaiser()

                    { new IRaiseEvents with
                        member _.Raiser = raiser
                    }

                order.Raiser.Raise(eventNamed "order.placed")

                Expect.equal
                    (order.Raiser.Events |> List.map _.Name.Value)
                    [ "order.placed" ]
                    "a store reads an entity's events through IRaiseEvents"
        ]

let private properties =
    testList
        "laws"
        [
            Property.law "tryApplication with valid inputs makes the same event as application"
            <| fun (event: Event) ->
                Expect.equal
                    (Event.tryApplication event.Id event.Timestamp event.Name.Value event.Data)
                    (Ok(Event.application event.Id event.Timestamp event.Name event.Data))
                    "validating raw inputs that are valid must change nothing"

            Property.law "tryDomain with valid inputs makes the same event as domain"
            <| fun (event: Event) (entity: Entity) ->
                Expect.equal
                    (Event.tryDomain event.Id event.Timestamp event.Name.Value entity.Id entity.Name event.Data)
                    (Ok(Event.domain event.Id event.Timestamp event.Name entity event.Data))
                    "validating raw inputs that are valid must change nothing"

            Property.law "a raiser gives back exactly the events raised, in order, until cleared"
            <| Prop.forAll
                (Arb.fromGen (Gen.two (Gen.choose (0, 12) |> Gen.bind (fun n -> Gen.listOfLength n Gens.event))))
                (fun (events, later) ->
                    let raiser = EventRaiser()
                    events |> List.iter raiser.Raise
                    Expect.equal raiser.Events events "the raiser must keep every event in order"
                    raiser.Clear()
                    later |> List.iter raiser.Raise
                    Expect.equal raiser.Events later "after Clear only the events raised since are kept")
        ]

/// Events, their smart constructors and the event raiser.
let tests = testList "Event" [ examples; properties ]
