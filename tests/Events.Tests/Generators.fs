namespace Events.Tests

open FsCheck
open FsCheck.FSharp
open Events

/// Generators of valid values, by construction.
type Generators =
    static member EventName() : Arbitrary<EventName> =
        Gen.elements [ 'a' .. 'z' ]
        |> Gen.arrayOfLength 8
        |> Gen.map (System.String >> EventName.Create)
        |> Arb.fromGen
