namespace Events.Core

open System
open FsToolkit.ErrorHandling

/// One setting of a handler under an event. Settings given later win over earlier ones.
[<RequireQualifiedAccess>]
type HandlerOption =
    /// Failed attempts after which a request is dead (at least 1; default 5).
    | MaxErrors of int
    /// Lower runs first (default 50).
    | Priority of int
    /// The wait before a failed request is tried again (default: the Go framework's formula).
    | Backoff of BackoffPolicy
    /// How long one attempt may run before it is canceled and counted as failed (default: none).
    | Timeout of TimeSpan
    /// A thrown exception of this type (or one derived from it) is a permanent failure: the request is
    /// dead at once, with no retry. The types are the code's: a request keeps none of them.
    | PermanentOn of exceptionType: Type

/// Why a configuration was refused.
[<RequireQualifiedAccess>]
type ConfigError =
    /// An event name broke the naming rules.
    | InvalidEventName of raw: string * NameError
    /// A handler name broke the naming rules.
    | InvalidHandlerName of raw: string * NameError
    /// MaxErrors was below 1.
    | MaxErrorsBelowOne of int
    /// A timeout was zero or negative.
    | TimeoutNotPositive of TimeSpan
    /// An exponential backoff's base was zero or negative.
    | BackoffBaseNotPositive of TimeSpan
    /// An exponential backoff's cap was below its base.
    | BackoffCapBelowBase of baseDelay: TimeSpan * cap: TimeSpan
    /// A permanent-failure type that is not an exception type (its full name).
    | NotAnExceptionType of typeName: string

    /// A sentence that says what is wrong.
    member this.Message =
        let quote (raw: string) =
            if isNull raw then "null" else $"\"%s{raw}\""

        match this with
        | InvalidEventName(raw, error) -> $"event name %s{quote raw} is invalid: %s{error.Message}"
        | InvalidHandlerName(raw, error) -> $"handler name %s{quote raw} is invalid: %s{error.Message}"
        | MaxErrorsBelowOne value -> $"MaxErrors must be at least 1, got %d{value}"
        | TimeoutNotPositive value -> $"Timeout must be positive, got %O{value}"
        | BackoffBaseNotPositive value -> $"an exponential backoff's base must be positive, got %O{value}"
        | BackoffCapBelowBase(baseDelay, cap) ->
            $"an exponential backoff's cap (%O{cap}) must not be below its base (%O{baseDelay})"
        | NotAnExceptionType name -> $"a permanent failure must name an exception type, got %s{name}"

/// The validated settings of one handler under one event.
type HandlerSettings =
    {
        /// Failed attempts after which a request is dead.
        MaxErrors: int
        /// Lower runs first.
        Priority: int
        /// The wait before a failed request is tried again.
        Backoff: BackoffPolicy
        /// How long one attempt may run; none for no limit.
        Timeout: TimeSpan option
        /// Exception types that fail a request permanently when thrown (none by default).
        PermanentOn: Type list
    }

/// Functions on handler settings.
[<RequireQualifiedAccess>]
module HandlerSettings =

    /// MaxErrors 5, Priority 50, the default backoff, no timeout: the Go framework's defaults.
    let defaults =
        {
            MaxErrors = 5
            Priority = 50
            Backoff = BackoffPolicy.Default
            Timeout = None
            PermanentOn = []
        }

    let private validateOption option : Validation<HandlerOption, ConfigError> =
        match option with
        | HandlerOption.MaxErrors value when value < 1 -> Validation.error (ConfigError.MaxErrorsBelowOne value)
        | HandlerOption.Timeout value when value <= TimeSpan.Zero ->
            Validation.error (ConfigError.TimeoutNotPositive value)
        | HandlerOption.PermanentOn value when isNull value || not (typeof<exn>.IsAssignableFrom value) ->
            Validation.error (ConfigError.NotAnExceptionType(if isNull value then "null" else value.FullName))
        | HandlerOption.Backoff(BackoffPolicy.Exponential exponential) ->
            let baseError =
                if exponential.Base <= TimeSpan.Zero then
                    [ ConfigError.BackoffBaseNotPositive exponential.Base ]
                else
                    []

            let capError =
                if exponential.Cap < exponential.Base then
                    [ ConfigError.BackoffCapBelowBase(exponential.Base, exponential.Cap) ]
                else
                    []

            match baseError @ capError with
            | [] -> Validation.ok option
            | errors -> Error errors
        | HandlerOption.MaxErrors _
        | HandlerOption.Priority _
        | HandlerOption.Timeout _
        | HandlerOption.PermanentOn _
        | HandlerOption.Backoff BackoffPolicy.Default -> Validation.ok option

    let private applyOption settings option =
        match option with
        | HandlerOption.MaxErrors value -> { settings with MaxErrors = value }
        | HandlerOption.Priority value -> { settings with Priority = value }
        | HandlerOption.Backoff value -> { settings with Backoff = value }
        | HandlerOption.Timeout value -> { settings with Timeout = Some value }
        | HandlerOption.PermanentOn value ->
            { settings with
                PermanentOn = settings.PermanentOn @ [ value ]
            }

    /// Applies options in order to existing settings (later options win), reporting every invalid
    /// option at once.
    let apply (options: HandlerOption seq) (settings: HandlerSettings) : Validation<HandlerSettings, ConfigError> =
        options
        |> List.ofSeq
        |> List.traverseValidationA validateOption
        |> Validation.map (List.fold applyOption settings)

    /// Settings from the defaults and the options given.
    let create (options: HandlerOption seq) : Validation<HandlerSettings, ConfigError> = apply options defaults

/// A handler as configured under an event.
type HandlerEntry<'handler> =
    {
        /// The handler's name, unique under its event.
        Name: HandlerName
        /// Its settings.
        Settings: HandlerSettings
        /// The code that runs it.
        Handler: 'handler
    }

/// Which handlers run for which events. Immutable: adding returns a new configuration.
type Configuration<'handler> =
    private
        {
            Events: Map<EventName, Map<HandlerName, HandlerEntry<'handler>>>
        }

/// Functions on configurations.
[<RequireQualifiedAccess>]
module Configuration =

    /// No events, no handlers.
    let empty<'handler> : Configuration<'handler> = { Events = Map.empty }

    /// Adds a handler under an event, or updates it if the event has a handler of that name already
    /// (its earlier settings stay unless an option replaces them, and the code is replaced).
    let add
        (eventName: EventName)
        (handlerName: HandlerName)
        (handler: 'handler)
        (options: HandlerOption seq)
        (configuration: Configuration<'handler>)
        : Validation<Configuration<'handler>, ConfigError> =
        let handlers =
            configuration.Events |> Map.tryFind eventName |> Option.defaultValue Map.empty

        let existing =
            handlers
            |> Map.tryFind handlerName
            |> Option.map _.Settings
            |> Option.defaultValue HandlerSettings.defaults

        HandlerSettings.apply options existing
        |> Validation.map (fun settings ->
            let entry =
                {
                    Name = handlerName
                    Settings = settings
                    Handler = handler
                }

            {
                Events =
                    configuration.Events
                    |> Map.add eventName (handlers |> Map.add handlerName entry)
            })

    /// `add` from raw names: every error (names and options) is reported at once.
    let tryAdd
        (eventName: string)
        (handlerName: string)
        (handler: 'handler)
        (options: HandlerOption seq)
        (configuration: Configuration<'handler>)
        : Validation<Configuration<'handler>, ConfigError> =
        validation {
            let! event =
                EventName.TryCreate eventName
                |> Result.mapError (fun error -> ConfigError.InvalidEventName(eventName, error))

            and! handlerName' =
                HandlerName.TryCreate handlerName
                |> Result.mapError (fun error -> ConfigError.InvalidHandlerName(handlerName, error))

            and! settings = HandlerSettings.create options

            return event, handlerName', settings
        }
        |> Validation.bind (fun (event, handlerName', _) -> add event handlerName' handler options configuration)

    /// The handlers configured for an event, in priority order then by name.
    let handlersFor (eventName: EventName) (configuration: Configuration<'handler>) : HandlerEntry<'handler> list =
        configuration.Events
        |> Map.tryFind eventName
        |> Option.map (
            Map.values
            >> List.ofSeq
            >> List.sortBy (fun entry -> entry.Settings.Priority, entry.Name)
        )
        |> Option.defaultValue []

    /// The handler configured under an event with this name, if any.
    let tryFind
        (eventName: EventName)
        (handlerName: HandlerName)
        (configuration: Configuration<'handler>)
        : HandlerEntry<'handler> option =
        configuration.Events
        |> Map.tryFind eventName
        |> Option.bind (Map.tryFind handlerName)

    /// Every handler under every event, by event name then priority.
    let entries (configuration: Configuration<'handler>) : (EventName * HandlerEntry<'handler>) list =
        configuration.Events
        |> Map.toList
        |> List.collect (fun (eventName, _) ->
            handlersFor eventName configuration |> List.map (fun entry -> eventName, entry))

    /// The event names that have at least one handler.
    let eventNames (configuration: Configuration<'handler>) : EventName list =
        configuration.Events |> Map.keys |> List.ofSeq
