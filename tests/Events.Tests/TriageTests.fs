/// Laws of error fingerprints: what varies between occurrences of one cause is normalised away, and
/// what tells causes apart is kept.
module Events.Tests.TriageTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open Events.Core

/// One part of a message template: a fixed word, or a slot that each occurrence fills differently.
type private Part =
    | Word of string
    | Number
    | Decimal
    | Id
    | Quoted

let private word =
    gen {
        let! length = Gen.choose (1, 10)
        let! letters = Gen.arrayOfLength length (Gen.elements [ 'a' .. 'z' ])
        return String letters
    }

let private part =
    Gen.frequency
        [
            4, word |> Gen.map Word
            1, Gen.constant Number
            1, Gen.constant Decimal
            1, Gen.constant Id
            1, Gen.constant Quoted
        ]

let private template = Gen.nonEmptyListOf part

/// A message from a template, its slots filled from `values`.
let private fill (values: Gen<int>) (parts: Part list) =
    gen {
        let! texts =
            parts
            |> List.map (fun part ->
                match part with
                | Word text -> Gen.constant text
                | Number -> values |> Gen.map string
                | Decimal -> Gen.map2 (fun whole cents -> $"%d{whole}.%02d{cents}") values (Gen.choose (0, 99))
                | Id -> Gen.constant (Guid.NewGuid().ToString())
                | Quoted ->
                    gen {
                        let! inner = Gen.listOf word
                        let! n = values
                        return "'" + String.Join(" ", inner) + $" %d{n}'"
                    })
            |> Gen.sequenceToList

        return String.Join(" ", texts)
    }

let private typeName =
    gen {
        let! parts =
            Gen.nonEmptyListOf (word |> Gen.map (fun w -> string (Char.ToUpperInvariant w[0]) + w.Substring 1))

        return String.Join(".", parts |> List.truncate 4) + "Exception"
    }

let private twoOccurrences =
    gen {
        let! parts = template
        let! thrown = Gen.elements [ false; true ]
        let! first = fill (Gen.choose (0, Int32.MaxValue)) parts
        let! second = fill (Gen.choose (0, Int32.MaxValue)) parts
        let prefix = if thrown then Attempt.PanicPrefix else ""
        return prefix + first, prefix + second
    }
    |> Arb.fromGen

let private twoTypes =
    gen {
        let! a = typeName
        let! b = typeName |> Gen.filter (fun b -> b <> a)
        let! parts = template
        let! message = fill (Gen.choose (0, 1000)) parts
        let! frames = Gen.elements [ ""; "\n   at Shop.Orders.Place(Order order)" ]
        return a, b, message, frames
    }
    |> Arb.fromGen

let private config =
    { FsCheckConfig.defaultConfig with
        maxTest = 300
    }

let tests =
    testList
        "Triage"
        [
            testPropertyWithConfig
                config
                "errors that differ only in ids, numbers and quoted values share a fingerprint"
            <| Prop.forAll twoOccurrences (fun (first, second) ->
                let a = ErrorFingerprint.ofError first
                let b = ErrorFingerprint.ofError second
                ErrorFingerprint.same a b && a.Id = b.Id)

            testPropertyWithConfig config "errors of different exception types never share a fingerprint"
            <| Prop.forAll twoTypes (fun (a, b, message, frames) ->
                let first =
                    ErrorFingerprint.ofError (Attempt.PanicPrefix + $"%s{a}: %s{message}%s{frames}")

                let second =
                    ErrorFingerprint.ofError (Attempt.PanicPrefix + $"%s{b}: %s{message}%s{frames}")

                first.ExceptionType = Some a
                && second.ExceptionType = Some b
                && first.Id <> second.Id)

            testCase "a thrown error's fingerprint keeps its type and own top frames, not the framework's"
            <| fun () ->
                let fingerprint =
                    ErrorFingerprint.ofError (
                        Attempt.PanicPrefix
                        + "System.InvalidOperationException: Sequence contains no elements\n"
                        + "   at System.Linq.ThrowHelper.ThrowNoElementsException()\n"
                        + "   at Shop.Orders.Place(Order order) in /src/Orders.cs:line 42\n"
                        + "   at Shop.Api.Post()"
                    )

                Expect.equal fingerprint.Kind FailureKind.Thrown "a thrown handler"
                Expect.equal fingerprint.ExceptionType (Some "System.InvalidOperationException") "its type"

                Expect.equal
                    fingerprint.Frames
                    [ "Shop.Orders.Place"; "Shop.Api.Post" ]
                    "the application's frames, top first"

                Expect.equal fingerprint.Pattern "Sequence contains no elements" "the message"

            testCase "a returned failure is fingerprinted by its normalised message"
            <| fun () ->
                let fingerprint =
                    ErrorFingerprint.ofError
                        "order 0190a6f2-0c3b-7d5e-9a1b-2c3d4e5f6a7b of 12.50 EUR for \"ada\" was declined"

                Expect.equal fingerprint.Kind FailureKind.Returned "a returned failure"
                Expect.isNone fingerprint.ExceptionType "no type"

                Expect.equal
                    fingerprint.Pattern
                    "order <id> of <n> EUR for <value> was declined"
                    "ids, numbers and quoted values normalised"

            testCase "timeouts and expired leases are their own kinds"
            <| fun () ->
                Expect.equal
                    (ErrorFingerprint.ofError "handler timed out after 00:00:05").Kind
                    FailureKind.TimedOut
                    "a timeout"

                Expect.equal
                    (ErrorFingerprint.ofError HandlerRequest.LeaseExpiredError).Kind
                    FailureKind.LeaseExpired
                    "an expired lease"

                Expect.equal
                    (ErrorFingerprint.ofError "handler timed out after 00:00:05").Id
                    (ErrorFingerprint.ofError "handler timed out after 00:01:30").Id
                    "timeouts of different lengths are one cause"
        ]
