namespace Events.Marten

open Events.Core

/// The SQL of the administration port: keyset-paged queries over the requests table, counts, and the
/// chunked bulk write. Statements take positional parameters ($1, $2 ...), always; filters are built
/// from the core's `RequestFilter` with one parameter per value, never with values in the text.
[<RequireQualifiedAccess>]
module internal AdminSql =

    /// The expression of a request's event id in its document (indexed as written here).
    [<Literal>]
    let EventIdExpression = "(data ->> 'eventId')"

    /// Indexes for the administration queries: (name, columns, included columns, predicate). Every
    /// filter pages by (event time, id), so each index ends with those.
    module Indexes =
        let requests: (string * string[] * string[] * string) list =
            [
                "ix_events_request_time", [| "event_timestamp"; "id" |], [||], null
                "ix_events_request_handler", [| "handler_name"; "event_timestamp"; "id" |], [||], null
                "ix_events_request_event_name", [| "event_name"; "event_timestamp"; "id" |], [||], null
                "ix_events_request_event_id", [| EventIdExpression |], [||], null
                "ix_events_request_backing_off",
                [| "event_timestamp"; "id" |],
                [| "backoff_until" |],
                Sql.Predicates.Waiting + " AND backoff_until IS NOT NULL"
                "ix_events_request_canceled", [| "event_timestamp"; "id" |], [||], "canceled_at IS NOT NULL"
                "ix_events_request_running_time", [| "event_timestamp"; "id" |], [||], Sql.Predicates.Running
                "ix_events_request_completed_at", [| "completed_at" |], [||], "completed_at IS NOT NULL"
            ]

    /// The SQL predicate of a status at the parameter `now`.
    let status (now: string) (status: RequestStatus) =
        match status with
        | RequestStatus.Runnable -> Sql.Predicates.runnableAt now
        | RequestStatus.BackingOff -> $"%s{Sql.Predicates.Waiting} AND backoff_until > %s{now}"
        | RequestStatus.Running -> Sql.Predicates.Running
        | RequestStatus.Completed -> "completed_at IS NOT NULL"
        | RequestStatus.Canceled -> "canceled_at IS NOT NULL"
        | RequestStatus.Dead -> Sql.Predicates.Dead

    /// A filter's WHERE clause and its parameter values in order, numbered from $2 ($1 is `now`).
    /// Values are (kind, value) pairs the store turns into typed parameters.
    type Clause =
        {
            Where: string
            Values: FilterValue list
        }

    /// A parameter value of a filter.
    and [<RequireQualifiedAccess>] FilterValue =
        | Texts of string[]
        | Text of string
        | Time of System.DateTimeOffset
        | Id of System.Guid

    /// Builds the WHERE clause of a filter after an optional cursor.
    let where (filter: RequestFilter) (after: RequestCursor option) : Clause =
        let values = ResizeArray<FilterValue>()

        let next value =
            values.Add value
            $"$%d{values.Count + 1}"

        let parts = ResizeArray<string>()

        match filter.Statuses |> List.distinct with
        | [] -> ()
        | statuses ->
            let any =
                statuses
                |> List.map (fun s -> "(" + status "$1" s + ")")
                |> String.concat " OR "

            parts.Add("(" + any + ")")

        match filter.HandlerNames with
        | [] -> ()
        | names ->
            parts.Add($"handler_name = ANY(%s{next (FilterValue.Texts(names |> List.map _.Value |> Array.ofList))})")

        match filter.EventNames with
        | [] -> ()
        | names ->
            parts.Add($"event_name = ANY(%s{next (FilterValue.Texts(names |> List.map _.Value |> Array.ofList))})")

        match filter.EventId with
        | None -> ()
        | Some id -> parts.Add($"%s{EventIdExpression} = %s{next (FilterValue.Text(id.ToString()))}")

        match filter.From with
        | None -> ()
        | Some from -> parts.Add($"event_timestamp >= %s{next (FilterValue.Time from)}")

        match filter.Until with
        | None -> ()
        | Some until -> parts.Add($"event_timestamp < %s{next (FilterValue.Time until)}")

        match filter.ErrorContains with
        | None -> ()
        | Some text -> parts.Add($"strpos(lower(data ->> 'lastError'), lower(%s{next (FilterValue.Text text)})) > 0")

        match after with
        | None -> ()
        | Some cursor ->
            let time = next (FilterValue.Time cursor.EventTimestamp)
            let id = next (FilterValue.Id cursor.Id)
            parts.Add($"(event_timestamp, id) > (%s{time}, %s{id})")

        {
            Where =
                if parts.Count = 0 then
                    "TRUE"
                else
                    String.concat " AND " parts
            Values = List.ofSeq values
        }

    /// One page: the documents matching the clause, by event time then id, at most the limit (the
    /// parameter after the clause's).
    let page (tables: Sql.Tables) (clause: Clause) =
        $"""
SELECT data::text FROM %s{tables.Requests}
WHERE %s{clause.Where}
ORDER BY event_timestamp, id
LIMIT $%d{clause.Values.Length + 2}"""

    /// The count of the requests matching the clause.
    let count (tables: Sql.Tables) (clause: Clause) =
        $"SELECT count(*) FROM %s{tables.Requests} WHERE %s{clause.Where}"

    let private statusCase =
        """CASE
         WHEN completed_at IS NOT NULL THEN 3
         WHEN canceled_at IS NOT NULL THEN 5
         WHEN lease_until IS NOT NULL THEN 2
         WHEN errors >= max_errors THEN 4
         WHEN backoff_until IS NOT NULL AND backoff_until > $1 THEN 1
         ELSE 0
       END"""

    /// Live requests (runnable, backing off, running, dead) per handler and status at $1: each branch of
    /// the OR is the predicate of a partial index (runnable, dead, running), so only live rows are read.
    let countLiveByHandler (tables: Sql.Tables) =
        $"""
SELECT handler_name, %s{statusCase}, count(*)
FROM %s{tables.Requests}
WHERE (%s{Sql.Predicates.Waiting}) OR (%s{Sql.Predicates.Dead}) OR (%s{Sql.Predicates.Running})
GROUP BY 1, 2"""

    /// Requests per handler and status at $1; the status as its index in `RequestStatus.all`.
    let countByHandler (tables: Sql.Tables) =
        $"""
SELECT handler_name, %s{statusCase}, count(*)
FROM %s{tables.Requests}
GROUP BY 1, 2"""

    /// Per handler: runnable, backing off, running and dead requests at $1, those completed at or after $2,
    /// and the event time of the oldest runnable one. Each branch of the OR is the predicate of a partial
    /// index (waiting, dead, running, completed), so only live and recently completed rows are read.
    let overview (tables: Sql.Tables) =
        let runnable = Sql.Predicates.runnableAt "$1"

        $"""
SELECT handler_name,
       count(*) FILTER (WHERE %s{runnable}),
       count(*) FILTER (WHERE %s{Sql.Predicates.Waiting} AND backoff_until > $1),
       count(*) FILTER (WHERE %s{Sql.Predicates.Running}),
       count(*) FILTER (WHERE %s{Sql.Predicates.Dead}),
       count(*) FILTER (WHERE completed_at >= $2),
       min(event_timestamp) FILTER (WHERE %s{runnable})
FROM %s{tables.Requests}
WHERE (%s{Sql.Predicates.Waiting}) OR (%s{Sql.Predicates.Dead}) OR (%s{Sql.Predicates.Running})
   OR (completed_at IS NOT NULL AND completed_at >= $2)
GROUP BY handler_name"""

    /// The documents of the requests with ids in $1.
    let findMany (tables: Sql.Tables) =
        $"SELECT data::text FROM %s{tables.Requests} WHERE id = ANY($1)"

    /// Locks, in id order, the requests with ids in $1 that no other transaction holds (skipping the
    /// others, never waiting), and returns their documents; then `existing` tells skipped from missing.
    let lockMany (tables: Sql.Tables) =
        $"SELECT data::text FROM %s{tables.Requests} WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED"

    /// The ids among $1 that exist.
    let existing (tables: Sql.Tables) =
        $"SELECT id FROM %s{tables.Requests} WHERE id = ANY($1)"

    /// Overwrites requests (the request columns as arrays, $1 ids, $2 documents ... $13 claim tokens),
    /// rows this transaction locked.
    let writeMany (tables: Sql.Tables) =
        $"""
UPDATE %s{tables.Requests} AS r
SET data = input.doc::jsonb,
    %s{Sql.requestColumnsFromInput},
    mt_last_modified = transaction_timestamp()
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::int[], $7::int[], $8::int[],
            $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], $12::timestamptz[], $13::uuid[])
    AS input(id, doc, handler_name, event_name, event_timestamp, priority, errors, max_errors, backoff_until,
             completed_at, canceled_at, lease_until, claim_token)
WHERE r.id = input.id"""

    /// Whether the table exists (the schema was applied): $1 the qualified table name.
    [<Literal>]
    let TableExists = "SELECT to_regclass($1) IS NOT NULL"
