module Events.Tests.ConfigurationTests

open System
open Expecto
open Events.Core

let private seconds (value: float) = TimeSpan.FromSeconds value

let private exponential (baseDelay: TimeSpan) (cap: TimeSpan) =
    HandlerOption.Backoff(BackoffPolicy.Exponential { Base = baseDelay; Cap = cap })

let private valid (result: Result<'a, ConfigError list>) : 'a =
    match result with
    | Ok value -> value
    | Error errors -> failtestf "valid configuration was refused: %A" errors

let private eventName = EventName.Create "order.placed"
let private otherEvent = EventName.Create "order.shipped"
let private handler (name: string) = HandlerName.Create name

/// The settings options give, written again: each setting is the defaults' unless an option sets
/// it, and the last option of a kind wins.
let private expectedSettings (start: HandlerSettings) (options: HandlerOption list) : HandlerSettings =
    let last pick =
        options |> List.choose pick |> List.tryLast

    {
        MaxErrors =
            last (function
                | HandlerOption.MaxErrors value -> Some value
                | _ -> None)
            |> Option.defaultValue start.MaxErrors
        Priority =
            last (function
                | HandlerOption.Priority value -> Some value
                | _ -> None)
            |> Option.defaultValue start.Priority
        Backoff =
            last (function
                | HandlerOption.Backoff value -> Some value
                | _ -> None)
            |> Option.defaultValue start.Backoff
        Timeout =
            match
                last (function
                    | HandlerOption.Timeout value -> Some value
                    | _ -> None)
            with
            | Some timeout -> Some timeout
            | None -> start.Timeout
        PermanentOn =
            start.PermanentOn
            @ (options
               |> List.choose (function
                   | HandlerOption.PermanentOn value -> Some value
                   | _ -> None))
    }

let private settingsExamples =
    testList
        "settings"
        [
            testCase "the defaults are MaxErrors 5, Priority 50, the Go backoff and no timeout"
            <| fun () ->
                Expect.equal
                    HandlerSettings.defaults
                    {
                        MaxErrors = 5
                        Priority = 50
                        Backoff = BackoffPolicy.Default
                        Timeout = None
                        PermanentOn = []
                    }
                    "the defaults must be the Go framework's, with no timeout (which Go did not have)"

            testCase "no options give the defaults"
            <| fun () ->
                Expect.equal (HandlerSettings.create []) (Ok HandlerSettings.defaults) "nothing set means every default"

            testCase "MaxErrors below 1 is refused"
            <| fun () ->
                for value in [ 0; -1; Int32.MinValue ] do
                    Expect.equal
                        (HandlerSettings.create [ HandlerOption.MaxErrors value ])
                        (Error [ ConfigError.MaxErrorsBelowOne value ])
                        $"MaxErrors %d{value} would make a request dead before it ran"

            testCase "MaxErrors of 1 is accepted"
            <| fun () ->
                Expect.equal
                    (HandlerSettings.create [ HandlerOption.MaxErrors 1 ] |> Result.map _.MaxErrors)
                    (Ok 1)
                    "one attempt and no retry is a valid choice"

            testCase "a zero or negative timeout is refused"
            <| fun () ->
                for value in [ TimeSpan.Zero; TimeSpan.FromTicks -1L; TimeSpan.MinValue ] do
                    Expect.equal
                        (HandlerSettings.create [ HandlerOption.Timeout value ])
                        (Error [ ConfigError.TimeoutNotPositive value ])
                        $"a timeout of %O{value} would cancel every attempt at once"

            testCase "a one-tick timeout is accepted"
            <| fun () ->
                Expect.equal
                    (HandlerSettings.create [ HandlerOption.Timeout(TimeSpan.FromTicks 1L) ]
                     |> Result.map _.Timeout)
                    (Ok(Some(TimeSpan.FromTicks 1L)))
                    "any positive timeout is allowed"

            testCase "an exponential base of zero or less is refused"
            <| fun () ->
                Expect.equal
                    (HandlerSettings.create [ exponential TimeSpan.Zero (seconds 1.0) ])
                    (Error [ ConfigError.BackoffBaseNotPositive TimeSpan.Zero ])
                    "a zero base makes every wait zero"

            testCase "an exponential cap below its base is refused"
            <| fun () ->
                Expect.equal
                    (HandlerSettings.create [ exponential (seconds 2.0) (seconds 1.0) ])
                    (Error [ ConfigError.BackoffCapBelowBase(seconds 2.0, seconds 1.0) ])
                    "a cap below the base contradicts itself"

            testCase "an exponential with a negative base and a cap below it reports both"
            <| fun () ->
                // FsToolkit's List.traverseValidationA reverses the errors of one item, so the order of
                // two faults of the same option is not part of the contract; the order of options is.
                match HandlerSettings.create [ exponential (seconds -2.0) (seconds -3.0) ] with
                | Error errors ->
                    Expect.equal
                        (set errors)
                        (set
                            [
                                ConfigError.BackoffBaseNotPositive(seconds -2.0)
                                ConfigError.BackoffCapBelowBase(seconds -2.0, seconds -3.0)
                            ])
                        "both faults of the one option must be reported"

                    Expect.hasLength errors 2 "each fault exactly once"
                | Ok settings -> failtestf "a negative base with a cap below it must be refused, got %A" settings

            testCase "an exponential cap equal to its base is accepted"
            <| fun () ->
                Expect.isOk
                    (HandlerSettings.create [ exponential (seconds 1.0) (seconds 1.0) ])
                    "a cap equal to the base is a constant upper bound"

            testCase "any priority is accepted"
            <| fun () ->
                for value in [ Int32.MinValue; -1; 0; Int32.MaxValue ] do
                    Expect.equal
                        (HandlerSettings.create [ HandlerOption.Priority value ] |> Result.map _.Priority)
                        (Ok value)
                        $"priority %d{value} only orders handlers, so any value is fine"

            testCase "every invalid option is reported at once, in the order given"
            <| fun () ->
                Expect.equal
                    (HandlerSettings.create
                        [
                            HandlerOption.MaxErrors 0
                            HandlerOption.Priority 1
                            HandlerOption.Timeout TimeSpan.Zero
                            exponential TimeSpan.Zero (seconds 1.0)
                            exponential (seconds 2.0) (seconds 1.0)
                        ])
                    (Error
                        [
                            ConfigError.MaxErrorsBelowOne 0
                            ConfigError.TimeoutNotPositive TimeSpan.Zero
                            ConfigError.BackoffBaseNotPositive TimeSpan.Zero
                            ConfigError.BackoffCapBelowBase(seconds 2.0, seconds 1.0)
                        ])
                    "a caller must see every mistake in one go, not one per attempt"

            testCase "later options win"
            <| fun () ->
                Expect.equal
                    (HandlerSettings.create
                        [
                            HandlerOption.MaxErrors 3
                            HandlerOption.Timeout(seconds 1.0)
                            HandlerOption.MaxErrors 7
                            HandlerOption.Timeout(seconds 2.0)
                        ])
                    (Ok
                        { HandlerSettings.defaults with
                            MaxErrors = 7
                            Timeout = Some(seconds 2.0)
                        })
                    "the last value given for a setting is the one kept"

            testCase "one invalid option refuses the whole set"
            <| fun () ->
                Expect.isError
                    (HandlerSettings.apply
                        [ HandlerOption.Priority 1; HandlerOption.MaxErrors 0 ]
                        HandlerSettings.defaults)
                    "settings are never half applied"

            testCase "a configuration error's message quotes the raw name, or says null"
            <| fun () ->
                Expect.stringContains
                    (ConfigError.InvalidEventName(null, NameError.Empty)).Message
                    "event name null"
                    "a null name must be shown as null"

                Expect.stringContains
                    (ConfigError.InvalidHandlerName(" ", NameError.Blank)).Message
                    "handler name \" \""
                    "a raw name must be shown quoted"
        ]

let private configurationExamples =
    testList
        "configuration"
        [
            testCase "the empty configuration has no handlers"
            <| fun () ->
                Expect.isEmpty
                    (Configuration.handlersFor eventName Configuration.empty<string>)
                    "no event has handlers yet"

                Expect.isEmpty (Configuration.eventNames Configuration.empty<string>) "no event names yet"

            testCase "an added handler is found with its settings and code"
            <| fun () ->
                let configuration =
                    Configuration.empty
                    |> Configuration.add eventName (handler "mail") "send mail" [ HandlerOption.Priority 10 ]
                    |> valid

                Expect.equal
                    (Configuration.tryFind eventName (handler "mail") configuration)
                    (Some
                        {
                            Name = handler "mail"
                            Settings =
                                { HandlerSettings.defaults with
                                    Priority = 10
                                }
                            Handler = "send mail"
                        })
                    "the entry must hold the name, the settings and the code given"

            testCase "a handler is found only under its own event"
            <| fun () ->
                let configuration =
                    Configuration.empty
                    |> Configuration.add eventName (handler "mail") "send mail" []
                    |> valid

                Expect.isNone
                    (Configuration.tryFind otherEvent (handler "mail") configuration)
                    "the handler is configured for order.placed only"

                Expect.isNone
                    (Configuration.tryFind eventName (handler "sms") configuration)
                    "no handler named sms was added"

            testCase "adding a handler twice updates its one entry: later options win, earlier ones stay"
            <| fun () ->
                let configuration =
                    Configuration.empty
                    |> Configuration.add
                        eventName
                        (handler "mail")
                        "first"
                        [ HandlerOption.MaxErrors 3; HandlerOption.Priority 10 ]
                    |> Result.bind (Configuration.add eventName (handler "mail") "second" [ HandlerOption.Priority 20 ])
                    |> valid

                Expect.equal
                    (Configuration.handlersFor eventName configuration)
                    [
                        {
                            Name = handler "mail"
                            Settings =
                                { HandlerSettings.defaults with
                                    MaxErrors = 3
                                    Priority = 20
                                }
                            Handler = "second"
                        }
                    ]
                    "one entry: MaxErrors 3 kept from the first add, Priority 20 and the code from the second"

            testCase "the same handler name under two events makes two entries"
            <| fun () ->
                let configuration =
                    Configuration.empty
                    |> Configuration.add eventName (handler "mail") "placed" [ HandlerOption.Priority 1 ]
                    |> Result.bind (Configuration.add otherEvent (handler "mail") "shipped" [])
                    |> valid

                Expect.equal
                    (Configuration.tryFind eventName (handler "mail") configuration
                     |> Option.map (fun entry -> entry.Handler, entry.Settings.Priority))
                    (Some("placed", 1))
                    "the first event's handler keeps its own code and settings"

                Expect.equal
                    (Configuration.tryFind otherEvent (handler "mail") configuration
                     |> Option.map (fun entry -> entry.Handler, entry.Settings.Priority))
                    (Some("shipped", 50))
                    "the second event's handler has its own code and the default priority"

            testCase "handlersFor orders by priority, then by name"
            <| fun () ->
                let configuration =
                    [
                        "b", [ HandlerOption.Priority 10 ]
                        "a", [ HandlerOption.Priority 10 ]
                        "d", []
                        "c", [ HandlerOption.Priority 5 ]
                        "B", [ HandlerOption.Priority 10 ]
                    ]
                    |> List.fold
                        (fun configuration (name, options) ->
                            configuration
                            |> Result.bind (Configuration.add eventName (handler name) name options))
                        (Ok Configuration.empty)
                    |> valid

                Expect.equal
                    (Configuration.handlersFor eventName configuration |> List.map _.Handler)
                    [ "c"; "B"; "a"; "b"; "d" ]
                    "lower priority first (c at 5, d at the default 50 last); ties by name, ordinally"

            testCase "eventNames lists the events with handlers"
            <| fun () ->
                let configuration =
                    Configuration.empty
                    |> Configuration.add otherEvent (handler "a") "" []
                    |> Result.bind (Configuration.add eventName (handler "b") "" [])
                    |> Result.bind (Configuration.add eventName (handler "c") "" [])
                    |> valid

                Expect.equal
                    (Configuration.eventNames configuration)
                    [ eventName; otherEvent ]
                    "each event once, in name order"

            testCase "a refused update leaves the earlier configuration as it was"
            <| fun () ->
                let configuration =
                    Configuration.empty
                    |> Configuration.add eventName (handler "mail") "first" [ HandlerOption.MaxErrors 3 ]
                    |> valid

                Expect.equal
                    (configuration
                     |> Configuration.add eventName (handler "mail") "second" [ HandlerOption.MaxErrors 0 ])
                    (Error [ ConfigError.MaxErrorsBelowOne 0 ])
                    "an invalid option refuses the update"

                Expect.equal
                    (Configuration.tryFind eventName (handler "mail") configuration
                     |> Option.map (fun entry -> entry.Handler, entry.Settings.MaxErrors))
                    (Some("first", 3))
                    "configurations are immutable: the earlier one still holds the first handler"

            testCase "tryAdd refuses an invalid event name"
            <| fun () ->
                Expect.equal
                    (Configuration.tryAdd "" "mail" () [] Configuration.empty)
                    (Error [ ConfigError.InvalidEventName("", NameError.Empty) ])
                    "the event name follows the naming rules"

            testCase "tryAdd refuses an invalid handler name"
            <| fun () ->
                Expect.equal
                    (Configuration.tryAdd "order.placed" " " () [] Configuration.empty)
                    (Error [ ConfigError.InvalidHandlerName(" ", NameError.Blank) ])
                    "the handler name follows the naming rules"

            testCase "tryAdd reports every error at once: names, then options"
            <| fun () ->
                Expect.equal
                    (Configuration.tryAdd
                        ""
                        "a\tb"
                        ()
                        [ HandlerOption.MaxErrors 0; HandlerOption.Timeout(TimeSpan.FromTicks -1L) ]
                        Configuration.empty)
                    (Error
                        [
                            ConfigError.InvalidEventName("", NameError.Empty)
                            ConfigError.InvalidHandlerName("a\tb", NameError.ControlCharacter 1)
                            ConfigError.MaxErrorsBelowOne 0
                            ConfigError.TimeoutNotPositive(TimeSpan.FromTicks -1L)
                        ])
                    "a caller must see all four mistakes in one go"
        ]

let private properties =
    testList
        "laws"
        [
            Property.law "settings are the defaults with each option applied, the last of each kind winning"
            <| fun (options: HandlerOption list) ->
                Expect.equal
                    (HandlerSettings.create options)
                    (Ok(expectedSettings HandlerSettings.defaults options))
                    "valid options must be applied in order over the defaults"

            Property.law "applying options to settings keeps what no option sets"
            <| fun (settings: HandlerSettings) (options: HandlerOption list) ->
                Expect.equal
                    (HandlerSettings.apply options settings)
                    (Ok(expectedSettings settings options))
                    "an update must only change what its options set"

            Property.law "adding a handler twice equals adding it once with both option lists"
            <| fun (event: EventName) (name: HandlerName) (first: HandlerOption list) (second: HandlerOption list) ->
                let twice =
                    Configuration.empty
                    |> Configuration.add event name 1 first
                    |> Result.bind (Configuration.add event name 2 second)
                    |> valid

                let once =
                    Configuration.empty |> Configuration.add event name 2 (first @ second) |> valid

                Expect.equal
                    (Configuration.handlersFor event twice)
                    (Configuration.handlersFor event once)
                    "the second add updates the one entry as if all options had come together"

            Property.law "handlersFor lists every handler of the event once, by priority then name"
            <| fun (event: EventName) (handlers: (HandlerName * HandlerSettings) list) ->
                let handlers = handlers |> List.distinctBy fst

                let configuration =
                    handlers
                    |> List.fold
                        (fun configuration (name, settings) ->
                            configuration
                            |> Result.bind (
                                Configuration.add
                                    event
                                    name
                                    name.Value
                                    [
                                        HandlerOption.MaxErrors settings.MaxErrors
                                        HandlerOption.Priority settings.Priority
                                        HandlerOption.Backoff settings.Backoff
                                    ]
                            ))
                        (Ok Configuration.empty)
                    |> valid

                let expected =
                    handlers
                    |> List.sortWith (fun (n1, s1) (n2, s2) ->
                        match compare s1.Priority s2.Priority with
                        | 0 -> String.CompareOrdinal(n1.Value, n2.Value)
                        | order -> order)
                    |> List.map (fun (name, _) -> name.Value)

                Expect.equal
                    (Configuration.handlersFor event configuration |> List.map _.Handler)
                    expected
                    "each handler once, lower priority first, ties by ordinal name"

            Property.law "tryAdd with valid raw names is add with the names made from them"
            <| fun (event: EventName) (name: HandlerName) (options: HandlerOption list) ->
                Expect.equal
                    (Configuration.tryAdd event.Value name.Value "code" options Configuration.empty
                     |> Result.map (Configuration.tryFind event name))
                    (Configuration.add event name "code" options Configuration.empty
                     |> Result.map (Configuration.tryFind event name))
                    "validating raw names that are valid must change nothing"

            Property.law "an added handler is found by its event and name with the settings create gives"
            <| fun (event: EventName) (name: HandlerName) (options: HandlerOption list) ->
                let configuration =
                    Configuration.empty |> Configuration.add event name "code" options |> valid

                Expect.equal
                    (Configuration.tryFind event name configuration |> Option.map _.Settings)
                    (Some(valid (HandlerSettings.create options)))
                    "the entry's settings must be the defaults with the options applied"

                Expect.equal
                    (Configuration.eventNames configuration)
                    [ event ]
                    "the event now has a handler, and it is the only one"
        ]

/// Handler settings and the configuration of handlers per event.
let tests =
    testList "Configuration" [ settingsExamples; configurationExamples; properties ]
