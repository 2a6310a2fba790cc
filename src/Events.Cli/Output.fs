namespace Events.Cli

open System
open System.IO
open System.Text
open System.Text.Json
open Events.Core

/// Writes results as text for a person or as JSON for a script.
[<RequireQualifiedAccess>]
module Output =

    let private time (value: DateTimeOffset) =
        value.ToString("yyyy-MM-dd HH:mm:ss.fff'Z'")

    let private optionTime (value: DateTimeOffset option) =
        value |> Option.map time |> Option.defaultValue "-"

    let private status (now: DateTimeOffset) (request: HandlerRequest) =
        RequestStatus.name (RequestStatus.ofRequest now request)

    /// Writes JSON with a writer made for the caller, to text.
    let json (write: Utf8JsonWriter -> unit) =
        use stream = new MemoryStream()

        do
            use writer = new Utf8JsonWriter(stream, JsonWriterOptions(Indented = true))
            write writer

        Encoding.UTF8.GetString(stream.ToArray())

    let private writeTime (writer: Utf8JsonWriter) (name: string) (value: DateTimeOffset option) =
        match value with
        | Some value -> writer.WriteString(name, value)
        | None -> writer.WriteNull name

    let private writeText (writer: Utf8JsonWriter) (name: string) (value: string option) =
        match value with
        | Some value -> writer.WriteString(name, value)
        | None -> writer.WriteNull name

    /// A request as a JSON object.
    let writeRequest (now: DateTimeOffset) (writer: Utf8JsonWriter) (request: HandlerRequest) =
        writer.WriteStartObject()
        writer.WriteString("id", request.Id)
        writer.WriteString("handlerName", request.HandlerName.Value)
        writer.WriteString("eventId", request.EventId)
        writer.WriteString("eventName", request.EventName.Value)
        writer.WriteString("eventTimestamp", request.EventTimestamp)
        writer.WritePropertyName "eventData"
        writer.WriteRawValue request.EventData.Json
        writer.WriteString("status", status now request)
        writer.WriteNumber("errors", request.Errors)
        writer.WriteNumber("maxErrors", request.MaxErrors)
        writer.WriteNumber("priority", request.Priority)
        writeTime writer "lastAttemptAt" request.LastAttemptAt
        writeText writer "lastError" request.LastError
        writeTime writer "backoffUntil" (HandlerRequest.backoffUntil request)
        writeTime writer "completedAt" (HandlerRequest.completedAt request)
        writeTime writer "canceledAt" (HandlerRequest.canceledAt request)
        writer.WriteEndObject()

    /// One line per request.
    let requestLine (now: DateTimeOffset) (request: HandlerRequest) =
        let error =
            match request.LastError with
            | Some error ->
                let line = error.Replace('\n', ' ')

                if line.Length > 80 then
                    " " + line.Substring(0, 80) + "..."
                else
                    " " + line
            | None -> ""

        $"%O{request.Id}  %-11s{status now request} %s{time request.EventTimestamp}  %s{request.EventName.Value} -> %s{request.HandlerName.Value}  errors %d{request.Errors}/%d{request.MaxErrors}%s{error}"

    /// A request in full, for a person.
    let requestText (now: DateTimeOffset) (request: HandlerRequest) =
        String.Join(
            "\n",
            [
                $"request    %O{request.Id}"
                $"status     %s{status now request}"
                $"handler    %s{request.HandlerName.Value} (priority %d{request.Priority})"
                $"event      %s{request.EventName.Value} %O{request.EventId} at %s{time request.EventTimestamp}"
                $"errors     %d{request.Errors} of %d{request.MaxErrors}, last attempt %s{optionTime request.LastAttemptAt}"
                $"backoff    %s{optionTime (HandlerRequest.backoffUntil request)}"
                $"completed  %s{optionTime (HandlerRequest.completedAt request)}"
                $"canceled   %s{optionTime (HandlerRequest.canceledAt request)}"
                $"data       %s{request.EventData.Json}"
                "last error " + defaultArg request.LastError "-"
            ]
        )

    /// A triage group as a JSON object.
    let writeGroup (now: DateTimeOffset) (writer: Utf8JsonWriter) (group: TriageGroup) =
        writer.WriteStartObject()
        writer.WriteString("id", group.Fingerprint.Id)
        writer.WriteString("kind", $"%A{group.Fingerprint.Kind}")
        writeText writer "exceptionType" group.Fingerprint.ExceptionType
        writer.WriteStartArray "frames"

        for frame in group.Fingerprint.Frames do
            writer.WriteStringValue frame

        writer.WriteEndArray()
        writer.WriteString("pattern", group.Fingerprint.Pattern)
        writer.WriteNumber("count", group.Count)
        writer.WriteStartArray "handlerNames"

        for name in group.HandlerNames do
            writer.WriteStringValue name.Value

        writer.WriteEndArray()
        writer.WriteStartArray "eventNames"

        for name in group.EventNames do
            writer.WriteStringValue name.Value

        writer.WriteEndArray()
        writer.WriteString("firstSeen", group.FirstSeen)
        writer.WriteString("lastSeen", group.LastSeen)
        writer.WritePropertyName "sample"
        writeRequest now writer group.Sample
        writer.WriteEndObject()

    /// A triage group, for a person.
    let groupText (group: TriageGroup) =
        let handlers = group.HandlerNames |> List.map _.Value |> String.concat ", "

        $"%s{group.Fingerprint.Id}  %6d{group.Count}  %s{ErrorFingerprint.describe group.Fingerprint}\n"
        + $"              handlers: %s{handlers}; first %s{time group.FirstSeen}, last %s{time group.LastSeen}; sample %O{group.Sample.Id}"

    /// Bulk progress as a JSON object.
    let writeProgress (writer: Utf8JsonWriter) (progress: BulkProgress) =
        writer.WriteStartObject()
        writer.WriteNumber("selected", progress.Selected)
        writer.WriteNumber("updated", progress.Updated)
        writer.WriteNumber("refused", progress.Refused)
        writer.WriteNumber("locked", progress.Locked)
        writeText writer "cursor" (progress.Cursor |> Option.map RequestCursor.format)
        writer.WriteBoolean("finished", progress.Finished)
        writer.WriteEndObject()

    /// Bulk progress, for a person.
    let progressText (dryRun: bool) (progress: BulkProgress) =
        if dryRun then
            $"dry run: %d{progress.Selected} requests would change"
        else
            let cursor =
                match progress.Cursor with
                | _ when progress.Finished -> ", done"
                | Some cursor -> $", resume with --after %s{RequestCursor.format cursor}"
                | None -> ""

            $"selected %d{progress.Selected}, updated %d{progress.Updated}, refused %d{progress.Refused}, locked by executors %d{progress.Locked}%s{cursor}"
