namespace Events.Core

open System

/// Why a name was refused.
[<RequireQualifiedAccess>]
type NameError =
    /// The name is null or has no characters.
    | Empty
    /// The name has only white space.
    | Blank
    /// The name is longer than `Name.MaxLength` characters.
    | TooLong of length: int
    /// The name holds a control character at this index.
    | ControlCharacter of index: int

    /// A sentence that says what is wrong with the name.
    member this.Message =
        match this with
        | Empty -> "a name must not be empty"
        | Blank -> "a name must not be only white space"
        | TooLong length -> $"a name must be at most %d{Name.MaxLength} characters long, this one has %d{length}"
        | ControlCharacter index -> $"a name must not hold control characters, this one has one at index %d{index}"

/// Rules shared by event names and handler names.
and [<AbstractClass; Sealed>] Name =
    /// The longest name accepted, in UTF-16 characters.
    static member MaxLength = 256

    /// Checks a raw name against the rules; returns it unchanged when it passes.
    static member Validate(raw: string) : Result<string, NameError> =
        if String.IsNullOrEmpty raw then
            Error NameError.Empty
        elif String.IsNullOrWhiteSpace raw then
            Error NameError.Blank
        elif raw.Length > Name.MaxLength then
            Error(NameError.TooLong raw.Length)
        else
            match Seq.tryFindIndex Char.IsControl raw with
            | Some index -> Error(NameError.ControlCharacter index)
            | None -> Ok raw

/// The name of an event, such as "order.placed". Made only through `EventName.TryCreate`.
[<Struct>]
type EventName =
    private
    | EventName of string

    /// The name as text.
    member this.Value =
        let (EventName value) = this
        value

    override this.ToString() = this.Value

    /// Makes an event name, refusing empty, blank, over-long names and names with control characters.
    static member TryCreate(raw: string) : Result<EventName, NameError> =
        Name.Validate raw |> Result.map EventName

    /// Makes an event name, throwing `ArgumentException` with the rule's message when it is refused.
    static member Create(raw: string) : EventName =
        match EventName.TryCreate raw with
        | Ok name -> name
        | Error error -> invalidArg (nameof raw) $"invalid event name: %s{error.Message}"

/// The name of an event handler, such as "send-welcome-email". Made only through `HandlerName.TryCreate`.
[<Struct>]
type HandlerName =
    private
    | HandlerName of string

    /// The name as text.
    member this.Value =
        let (HandlerName value) = this
        value

    override this.ToString() = this.Value

    /// Makes a handler name, refusing empty, blank, over-long names and names with control characters.
    static member TryCreate(raw: string) : Result<HandlerName, NameError> =
        Name.Validate raw |> Result.map HandlerName

    /// Makes a handler name, throwing `ArgumentException` with the rule's message when it is refused.
    static member Create(raw: string) : HandlerName =
        match HandlerName.TryCreate raw with
        | Ok name -> name
        | Error error -> invalidArg (nameof raw) $"invalid handler name: %s{error.Message}"
