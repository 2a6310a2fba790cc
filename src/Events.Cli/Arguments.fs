namespace Events.Cli

open System
open System.Globalization
open Events.Core

/// A command line the tool cannot run: the message says why (exit code 2).
exception UsageException of string

/// What the command line asks for.
type Invocation =
    {
        /// The command: stats, list, show, event, triage, re-execute, cancel, canary, help.
        Command: string
        /// Words after the command that are not options.
        Operands: string list
        /// The PostgreSQL connection string.
        Connection: string option
        /// The schema of the Events tables.
        Schema: string option
        /// JSON output.
        Json: bool
        /// The filter.
        Filter: RequestFilter
        /// Page size or bulk limit.
        Limit: int option
        /// A cursor to start after.
        After: RequestCursor option
        /// A triage group's id.
        Group: string option
        /// Only count.
        DryRun: bool
        /// Requests per transaction.
        Chunk: int option
        /// Canaries of a canary redrive.
        Canaries: int option
        /// How long a canary redrive waits.
        Wait: TimeSpan option
    }

/// Reading the command line by hand: `dotnet events [options] <command> [operands]`, options anywhere.
[<RequireQualifiedAccess>]
module Arguments =

    /// The usage text.
    let usage =
        """usage: dotnet events <command> [options]

commands:
  stats                      gauges, and requests per handler and status
  list                       requests matching the filters, one page (--limit, --after)
  show <request-id>          one request
  event <event-id>           an event with all its requests: is it fully handled?
  triage                     dead requests grouped by the cause of their error
  re-execute                 re-execute the selected requests (default: dead ones) in chunks
  cancel                     cancel the selected requests (default: dead ones) in chunks
  canary                     re-execute --canaries N of the selection, the rest only if they complete

connection:
  --connection <string>      PostgreSQL connection string (or EVENTS_CONNECTION)
  --schema <name>            schema of the Events tables (or EVENTS_SCHEMA; default public)

filters:
  --status <s>               runnable, backing-off, running, completed, dead, canceled (repeatable)
  --handler <name>           (repeatable)        --event <name>     (repeatable)
  --event-id <id>            --from <time>       --until <time>     --error <text>

options:
  --limit <n>  --after <cursor>  --group <id>  --dry-run  --chunk <n>  --canaries <n>  --wait <seconds>
  --json                     machine-readable output

exit codes: 0 done, 1 not found or refused, 2 bad command line, 3 cannot connect, 4 no Events schema"""

    let private empty =
        {
            Command = "help"
            Operands = []
            Connection = None
            Schema = None
            Json = false
            Filter = RequestFilter.all
            Limit = None
            After = None
            Group = None
            DryRun = false
            Chunk = None
            Canaries = None
            Wait = None
        }

    let private fail message = raise (UsageException message)

    let private positive (option: string) (text: string) =
        match Int32.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture) with
        | true, n when n > 0 -> n
        | _ -> fail $"%s{option} takes a whole number above 0, got \"%s{text}\""

    let private time (option: string) (text: string) =
        match DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal) with
        | true, t -> t
        | _ -> fail $"%s{option} takes a time such as 2026-01-31T12:00:00Z, got \"%s{text}\""

    let private name (option: string) (create: string -> Result<'name, NameError>) (text: string) =
        match create text with
        | Ok value -> value
        | Error error -> fail $"%s{option} \"%s{text}\": %s{error.Message}"

    let private valueOptions =
        set
            [
                "--connection"
                "--schema"
                "--status"
                "--handler"
                "--event"
                "--event-id"
                "--from"
                "--until"
                "--error"
                "--limit"
                "--chunk"
                "--canaries"
                "--wait"
                "--group"
                "--after"
            ]

    let private apply (acc: Invocation) (option: string, value: string) : Invocation =
        let filter = acc.Filter

        match option with
        | "--json" -> { acc with Json = true }
        | "--dry-run" -> { acc with DryRun = true }
        | "--help" -> { acc with Command = "help" }
        | "--connection" -> { acc with Connection = Some value }
        | "--schema" -> { acc with Schema = Some value }
        | "--status" ->
            match RequestStatus.tryParse value with
            | Some status ->
                { acc with
                    Filter =
                        { filter with
                            Statuses = filter.Statuses @ [ status ]
                        }
                }
            | None ->
                fail
                    $"--status \"%s{value}\" is not a status (runnable, backing-off, running, completed, dead, canceled)"
        | "--handler" ->
            { acc with
                Filter =
                    { filter with
                        HandlerNames = filter.HandlerNames @ [ name option HandlerName.TryCreate value ]
                    }
            }
        | "--event" ->
            { acc with
                Filter =
                    { filter with
                        EventNames = filter.EventNames @ [ name option EventName.TryCreate value ]
                    }
            }
        | "--event-id" ->
            match Guid.TryParse value with
            | true, id ->
                { acc with
                    Filter = { filter with EventId = Some id }
                }
            | _ -> fail $"--event-id takes a GUID, got \"%s{value}\""
        | "--from" ->
            { acc with
                Filter =
                    { filter with
                        From = Some(time option value)
                    }
            }
        | "--until" ->
            { acc with
                Filter =
                    { filter with
                        Until = Some(time option value)
                    }
            }
        | "--error" ->
            if value = "" then
                fail "--error takes a non-empty text"

            { acc with
                Filter =
                    { filter with
                        ErrorContains = Some value
                    }
            }
        | "--limit" ->
            { acc with
                Limit = Some(positive option value)
            }
        | "--chunk" ->
            { acc with
                Chunk = Some(positive option value)
            }
        | "--canaries" ->
            { acc with
                Canaries = Some(positive option value)
            }
        | "--wait" ->
            { acc with
                Wait = Some(TimeSpan.FromSeconds(float (positive option value)))
            }
        | "--group" -> { acc with Group = Some value }
        | "--after" ->
            match RequestCursor.tryParse value with
            | Some cursor -> { acc with After = Some cursor }
            | None -> fail $"--after takes a cursor the tool printed, got \"%s{value}\""
        | other -> fail $"unknown option %s{other}"

    /// Reads the command line (and the environment's defaults for the connection): the first word that is
    /// not an option nor an option's value is the command, the other such words its operands.
    let parse (environment: string -> string option) (argv: string list) : Invocation =
        let rec split (options: (string * string) list) (words: string list) (argv: string list) =
            match argv with
            | [] -> List.rev options, List.rev words
            | option :: rest when option.StartsWith "--" && valueOptions.Contains option ->
                match rest with
                | value :: rest -> split ((option, value) :: options) words rest
                | [] -> fail $"%s{option} needs a value"
            | option :: rest when option.StartsWith "--" -> split ((option, "") :: options) words rest
            | word :: rest -> split options (word :: words) rest

        let options, words = split [] [] argv

        let start =
            match words with
            | command :: operands ->
                { empty with
                    Command = command
                    Operands = operands
                }
            | [] -> empty

        let parsed = List.fold apply start options

        { parsed with
            Connection = parsed.Connection |> Option.orElse (environment "EVENTS_CONNECTION")
            Schema = parsed.Schema |> Option.orElse (environment "EVENTS_SCHEMA")
        }
