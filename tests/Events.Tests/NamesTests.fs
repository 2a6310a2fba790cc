module Events.Tests.NamesTests

open Expecto
open Events

let tests =
    testList
        "Names"
        [
            testCase "an empty event name is refused"
            <| fun () ->
                Expect.equal (EventName.TryCreate "") (Error NameError.Empty) "an empty name must be refused as empty"
        ]
