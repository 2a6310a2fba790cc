namespace Events.Core

open System
open System.Security.Cryptography
open System.Text
open System.Text.RegularExpressions

/// How a failed attempt ended, as far as its stored error text tells.
[<RequireQualifiedAccess>]
type FailureKind =
    /// The handler returned a failure.
    | Returned
    /// The handler threw (its text starts with `Attempt.PanicPrefix`).
    | Thrown
    /// The handler overran its timeout.
    | TimedOut
    /// The worker's lease ran out with no outcome (the process died or hung, say).
    | LeaseExpired

/// The cause of a failure with what varies from one occurrence to the next taken out: two dead
/// requests with the same fingerprint failed for the same reason.
type ErrorFingerprint =
    {
        /// How the attempt ended.
        Kind: FailureKind
        /// The exception's type, when the text names it (`Type: message`, as `Exception.ToString` writes).
        ExceptionType: string option
        /// The top stack frames of the application's own code (not System, Microsoft or FSharp), when the
        /// text holds a stack trace.
        Frames: string list
        /// The message with ids, numbers and quoted values replaced by placeholders.
        Pattern: string
        /// A short stable name of all of the above (12 hex digits), for a command line or a URL.
        Id: string
    }

/// The pure fingerprinting of stored error texts.
[<RequireQualifiedAccess>]
module ErrorFingerprint =

    /// Frames of the application's own code kept in a fingerprint.
    [<Literal>]
    let MaxFrames = 3

    /// Characters of the normalised message kept.
    [<Literal>]
    let MaxPattern = 300

    let private timeoutPrefix = "handler timed out after "

    let private guid =
        Regex(@"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}", RegexOptions.Compiled)

    let private quoted =
        Regex("\"[^\"]*\"|'[^']*'|`[^`]*`|«[^»]*»|“[^”]*”", RegexOptions.Compiled)

    let private hexRun =
        Regex(@"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{16,}\b", RegexOptions.Compiled)

    let private number = Regex(@"\d+(?:[.,:]\d+)*", RegexOptions.Compiled)

    let private spaces = Regex(@"\s+", RegexOptions.Compiled)

    // "Some.Namespace.SomeException: message" (a type name ending in Exception or Error).
    let private typed =
        Regex(
            @"^\s*((?:[A-Za-z_][A-Za-z0-9_`]*\.)*[A-Za-z_][A-Za-z0-9_`]*(?:Exception|Error))(?::\s*(.*))?$",
            RegexOptions.Compiled ||| RegexOptions.Singleline
        )

    // "   at Namespace.Type.Method(args) in file:line 12"
    let private frame = Regex(@"^\s+at\s+([^\(\s]+)", RegexOptions.Compiled)

    let private frameworkPrefixes =
        [
            "System."
            "Microsoft."
            "FSharp."
            "Events.Core."
            "Npgsql."
            "Marten."
            "Internal."
        ]

    /// The message with GUIDs and long hex runs as `<id>`, quoted values as `<value>`, numbers as `<n>`,
    /// runs of white space as one space, cut to `MaxPattern` characters.
    let normalise (message: string) : string =
        if isNull message then
            ""
        else
            let text = guid.Replace(message, "<id>")
            let text = quoted.Replace(text, "<value>")
            let text = hexRun.Replace(text, "<id>")
            let text = number.Replace(text, "<n>")
            let text = spaces.Replace(text, " ").Trim()

            if text.Length > MaxPattern then
                text.Substring(0, MaxPattern)
            else
                text

    let private idOf (kind: FailureKind) (exceptionType: string option) (frames: string list) (pattern: string) =
        let key =
            String.Join("\n", [ $"%A{kind}"; defaultArg exceptionType ""; String.Join("|", frames); pattern ])

        let hash = SHA256.HashData(Encoding.UTF8.GetBytes key)
        Convert.ToHexString(hash, 0, 6).ToLowerInvariant()

    let private isOwnFrame (name: string) =
        not (
            frameworkPrefixes
            |> List.exists (fun prefix -> name.StartsWith(prefix, StringComparison.Ordinal))
        )

    /// The fingerprint of a stored error text (`LastError`): a thrown handler's by its exception type and
    /// top frames of the application's own code when the text holds them, else by its normalised
    /// message; a returned failure's by its normalised message.
    let ofError (error: string) : ErrorFingerprint =
        let error = if isNull error then "" else error

        let kind, body =
            if error.StartsWith(Attempt.PanicPrefix, StringComparison.Ordinal) then
                FailureKind.Thrown, error.Substring Attempt.PanicPrefix.Length
            elif error.StartsWith(timeoutPrefix, StringComparison.Ordinal) then
                FailureKind.TimedOut, error
            elif error = HandlerRequest.LeaseExpiredError then
                FailureKind.LeaseExpired, error
            else
                FailureKind.Returned, error

        let lines = body.Replace("\r\n", "\n").Split '\n'

        // Stack lines come after the message, indented ("   at Type.Method(...)").
        let frames =
            lines
            |> Seq.skip 1
            |> Seq.choose (fun line ->
                let found = frame.Match line
                if found.Success then Some found.Groups[1].Value else None)
            |> Seq.filter isOwnFrame
            |> Seq.truncate MaxFrames
            |> List.ofSeq

        let messageLines = lines |> Array.filter (fun line -> not (frame.IsMatch line))

        let firstLine = String.Join(" ", messageLines)

        let exceptionType, message =
            let found = typed.Match(firstLine)

            if found.Success then
                Some found.Groups[1].Value, found.Groups[2].Value
            else
                None, firstLine

        let pattern = normalise message

        {
            Kind = kind
            ExceptionType = exceptionType
            Frames = frames
            Pattern = pattern
            Id = idOf kind exceptionType frames pattern
        }

    /// Whether two fingerprints name the same cause.
    let same (a: ErrorFingerprint) (b: ErrorFingerprint) =
        a.Kind = b.Kind
        && a.ExceptionType = b.ExceptionType
        && a.Frames = b.Frames
        && a.Pattern = b.Pattern

    /// The fingerprint of a request's last error; none when it has no error.
    let ofRequest (request: HandlerRequest) : ErrorFingerprint option = request.LastError |> Option.map ofError

    /// A line for a person: kind, type and pattern.
    let describe (fingerprint: ErrorFingerprint) =
        let kind =
            match fingerprint.Kind with
            | FailureKind.Returned -> "returned"
            | FailureKind.Thrown -> "thrown"
            | FailureKind.TimedOut -> "timed out"
            | FailureKind.LeaseExpired -> "lease expired"

        match fingerprint.ExceptionType with
        | Some name -> $"%s{kind} %s{name}: %s{fingerprint.Pattern}"
        | None -> $"%s{kind}: %s{fingerprint.Pattern}"
