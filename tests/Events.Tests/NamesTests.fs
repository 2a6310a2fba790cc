module Events.Tests.NamesTests

open System
open Expecto
open Events.Core

/// The rules, written again independently: the first rule a raw name breaks, in the order the
/// rules are documented (empty, blank, too long, control character).
let private expectedVerdict (raw: string) : Result<string, NameError> =
    if isNull raw || raw.Length = 0 then
        Error NameError.Empty
    elif raw |> Seq.forall Char.IsWhiteSpace then
        Error NameError.Blank
    elif raw.Length > 256 then
        Error(NameError.TooLong raw.Length)
    else
        match raw |> Seq.indexed |> Seq.tryFind (snd >> Char.IsControl) with
        | Some(index, _) -> Error(NameError.ControlCharacter index)
        | None -> Ok raw

let private examples =
    testList
        "examples"
        [
            testCase "an empty event name is refused"
            <| fun () ->
                Expect.equal (EventName.TryCreate "") (Error NameError.Empty) "an empty name must be refused as empty"

            testCase "an empty handler name is refused"
            <| fun () ->
                Expect.equal
                    (HandlerName.TryCreate "")
                    (Error NameError.Empty)
                    "an empty handler name must be refused as empty, as Go refuses it"

            testCase "a null name is refused as empty"
            <| fun () ->
                Expect.equal
                    (EventName.TryCreate null)
                    (Error NameError.Empty)
                    "null has no characters, so it must be refused as empty rather than throw"

            testCase "a name of only spaces is refused as blank"
            <| fun () ->
                Expect.equal (EventName.TryCreate "   ") (Error NameError.Blank) "three spaces are only white space"

            testCase "a name of only white space, control white space included, is refused as blank"
            <| fun () ->
                Expect.equal
                    (HandlerName.TryCreate " \t\r\n\u0085\u00A0")
                    (Error NameError.Blank)
                    "tabs, line breaks and NEL are white space; the blank rule comes before the control-character rule"

            testCase "a control character is refused with its index"
            <| fun () ->
                Expect.equal
                    (EventName.TryCreate "ab\u0001c")
                    (Error(NameError.ControlCharacter 2))
                    "U+0001 is at index 2 and must be reported there"

            testCase "a line break inside a name is refused with its index"
            <| fun () ->
                Expect.equal
                    (HandlerName.TryCreate "send\nmail")
                    (Error(NameError.ControlCharacter 4))
                    "a line feed is a control character at index 4"

            testCase "the first of several control characters is the one reported"
            <| fun () ->
                Expect.equal
                    (EventName.TryCreate "a\u007Fb\u0000")
                    (Error(NameError.ControlCharacter 1))
                    "DEL at index 1 comes before NUL at index 3"

            testCase "a C1 control character is refused"
            <| fun () ->
                Expect.equal
                    (EventName.TryCreate "order\u0085placed")
                    (Error(NameError.ControlCharacter 5))
                    "NEL (U+0085) is a control character, even though it is also white space"

            testCase "a name of 257 characters is refused as too long"
            <| fun () ->
                Expect.equal
                    (EventName.TryCreate(String('a', 257)))
                    (Error(NameError.TooLong 257))
                    "257 characters is one more than the limit, and the length must be reported"

            testCase "a name of 256 characters is accepted"
            <| fun () ->
                let raw = String('a', 256)

                Expect.equal
                    (EventName.TryCreate raw |> Result.map _.Value)
                    (Ok raw)
                    "256 characters is exactly the limit, so it must be accepted unchanged"

            testCase "the limit counts UTF-16 characters"
            <| fun () ->
                let raw = String.replicate 128 "😀"
                Expect.equal raw.Length 256 "128 emoji are 256 UTF-16 characters"
                Expect.isOk (HandlerName.TryCreate raw) "256 UTF-16 characters is within the limit"

                Expect.equal
                    (HandlerName.TryCreate(raw + "a"))
                    (Error(NameError.TooLong 257))
                    "one more character is over the limit"

            testCase "a too-long name of only spaces is refused as blank"
            <| fun () ->
                Expect.equal
                    (EventName.TryCreate(String(' ', 300)))
                    (Error NameError.Blank)
                    "the blank rule is checked before the length rule"

            testCase "a too-long name with a control character is refused as too long"
            <| fun () ->
                Expect.equal
                    (EventName.TryCreate(String('a', 300) + "\u0001"))
                    (Error(NameError.TooLong 301))
                    "the length rule is checked before the control-character rule"

            testCase "unicode names are accepted unchanged"
            <| fun () ->
                for raw in [ "commande.passée"; "注文.確定"; "заказ"; "🚀.launched"; "e\u0301"; "a\u200Db" ] do
                    Expect.equal
                        (EventName.TryCreate raw |> Result.map _.Value)
                        (Ok raw)
                        $"%s{raw} has no control character and must be accepted as it is"

            testCase "leading and trailing spaces are kept"
            <| fun () ->
                Expect.equal
                    (HandlerName.TryCreate " mail " |> Result.map _.Value)
                    (Ok " mail ")
                    "names are taken as given, never trimmed"

            testCase "Create throws ArgumentException with the rule's message"
            <| fun () ->
                let error =
                    Thrown.by<ArgumentException> "an empty name must throw" (fun () -> EventName.Create "" |> ignore)

                Expect.stringContains
                    error.Message
                    NameError.Empty.Message
                    "the exception must say which rule the name broke"

            testCase "HandlerName.Create throws ArgumentException with the rule's message"
            <| fun () ->
                let error =
                    Thrown.by<ArgumentException> "a name with a tab must throw" (fun () ->
                        HandlerName.Create "a\tb" |> ignore)

                Expect.stringContains
                    error.Message
                    (NameError.ControlCharacter 1).Message
                    "the exception must give the control character's index"

            testCase "the too-long message gives the limit and the length"
            <| fun () ->
                let message = (NameError.TooLong 300).Message
                Expect.stringContains message "256" "the message must give the limit"
                Expect.stringContains message "300" "the message must give the name's length"

            testCase "ToString is the name's text"
            <| fun () ->
                Expect.equal
                    (string (EventName.Create "order.placed"))
                    "order.placed"
                    "an event name prints as its text, for logs and telemetry attributes"

                Expect.equal (string (HandlerName.Create "mail")) "mail" "a handler name prints as its text"

            testCase "names with the same text are equal and order by their text"
            <| fun () ->
                Expect.equal (EventName.Create "a") (EventName.Create "a") "equal texts make equal names"

                Expect.isLessThan
                    (HandlerName.Create "B")
                    (HandlerName.Create "a")
                    "names compare ordinally, so upper case sorts first"
        ]

let private properties =
    testList
        "laws"
        [
            Property.law "a valid name is accepted unchanged as an event name and as a handler name"
            <| fun (ValidName raw) ->
                Expect.equal
                    (EventName.TryCreate raw |> Result.map _.Value)
                    (Ok raw)
                    "a name that breaks no rule must be accepted and keep its text"

                Expect.equal
                    (HandlerName.TryCreate raw |> Result.map _.Value)
                    (Ok raw)
                    "handler names follow the same rules as event names"

            Property.law "any string is refused for the first rule it breaks, or accepted unchanged"
            <| fun (raw: string) ->
                let expected = expectedVerdict raw

                Expect.equal (Name.Validate raw) expected "the verdict must follow the rules in their documented order"

                Expect.equal
                    (EventName.TryCreate raw |> Result.map _.Value)
                    expected
                    "EventName.TryCreate must give the same verdict as the rules"

                Expect.equal
                    (HandlerName.TryCreate raw |> Result.map _.Value)
                    expected
                    "HandlerName.TryCreate must give the same verdict as the rules"

            Property.law "a control character put into a valid name is refused at its index"
            <| fun (ValidName raw) (position: int) (code: byte) ->
                let control =
                    if code < 128uy then
                        char (int code % 32)
                    else
                        char (0x7F + int code % 33)

                let index = abs (position % (raw.Length + 1))
                let candidate = raw.Insert(index, string control)
                let firstControl = candidate |> Seq.findIndex Char.IsControl

                let expected =
                    if candidate.Length > Name.MaxLength then
                        Error(NameError.TooLong candidate.Length)
                    else
                        Error(NameError.ControlCharacter firstControl)

                Expect.equal firstControl index "the valid name has no control character of its own"

                Expect.equal
                    (EventName.TryCreate candidate)
                    expected
                    "the control character must be reported at the index it was put in (unless the name is too long)"

            Property.law "a valid name made longer than 256 characters is refused with its length"
            <| fun (ValidName raw) (extra: byte) ->
                let candidate = raw + String('x', 257 - raw.Length + int extra)

                Expect.equal
                    (HandlerName.TryCreate candidate)
                    (Error(NameError.TooLong candidate.Length))
                    "a name over the limit must be refused with its length"
        ]

/// The naming rules of event and handler names.
let tests = testList "Names" [ examples; properties ]
