namespace Events.Marten

/// The names of the store's tables, columns and indexes, and every SQL statement the store runs
/// itself (Marten writes the rest). Statements take positional parameters ($1, $2 ...), always.
[<RequireQualifiedAccess>]
module internal Sql =

    /// Marten's document alias of events (its table is mt_doc_{alias}).
    [<Literal>]
    let EventAlias = "events_event"

    /// Marten's document alias of handler requests.
    [<Literal>]
    let RequestAlias = "events_request"

    /// Columns duplicated out of the documents' JSON, so the hot queries read plain indexed columns.
    /// Each is written with its JSON field, in the same statement, by Marten and by this module.
    module Columns =
        // events
        [<Literal>]
        let EventTimestamp = "event_timestamp"

        [<Literal>]
        let ProcessedAt = "processed_at"

        [<Literal>]
        let ClaimToken = "claim_token"

        [<Literal>]
        let ClaimUntil = "claim_until"

        [<Literal>]
        let DeduplicationKey = "deduplication_key"

        // requests (also EventTimestamp and ClaimToken)
        [<Literal>]
        let HandlerName = "handler_name"

        [<Literal>]
        let EventName = "event_name"

        [<Literal>]
        let Priority = "priority"

        [<Literal>]
        let Errors = "errors"

        [<Literal>]
        let MaxErrors = "max_errors"

        [<Literal>]
        let BackoffUntil = "backoff_until"

        [<Literal>]
        let CompletedAt = "completed_at"

        [<Literal>]
        let CanceledAt = "canceled_at"

        [<Literal>]
        let LeaseUntil = "lease_until"

        // both
        [<Literal>]
        let SetAside = "set_aside"

    /// Predicates shared by the partial indexes and the queries, spelled the same in both so that the
    /// planner matches them. Each is the SQL form of a core predicate over `stateOfFields`.
    module Predicates =
        /// Not processed: `Event.isProcessed` is false (and not set aside).
        [<Literal>]
        let Unprocessed = "processed_at IS NULL AND set_aside IS NULL"

        /// The shape of a Runnable state: no end, no lease, errors below max (backoff aside); not set
        /// aside.
        [<Literal>]
        let Waiting =
            "completed_at IS NULL AND canceled_at IS NULL AND lease_until IS NULL AND errors < max_errors AND set_aside IS NULL"

        /// The Dead state (`HandlerRequest.isDead`); not set aside.
        [<Literal>]
        let Dead =
            "completed_at IS NULL AND canceled_at IS NULL AND lease_until IS NULL AND errors >= max_errors AND set_aside IS NULL"

        /// The Running state: a lease is held.
        [<Literal>]
        let Running = "lease_until IS NOT NULL"

        /// Runnable at $1 (`HandlerRequest.isRunnable`): waiting and any backoff passed.
        let runnableAt (nowParameter: string) =
            $"%s{Waiting} AND (backoff_until IS NULL OR backoff_until <= %s{nowParameter})"

    /// The store's indexes: (name, columns, included columns, predicate).
    module Indexes =
        /// Events: unprocessed ones, oldest first (claims, the unprocessed gauges).
        let events: (string * string[] * string[] * string) list =
            [
                "ix_events_unprocessed", [| "event_timestamp"; "id" |], [||], Predicates.Unprocessed
            ]

        /// Requests: runnable in the core's run order (claims); runnable by event time (the gauges); dead
        /// by event time (the admin page) and by names (filters, distinct names); running by lease end
        /// (recovery).
        let requests: (string * string[] * string[] * string) list =
            [
                "ix_events_request_runnable",
                [| "priority"; "event_timestamp"; "id" |],
                [| "backoff_until" |],
                Predicates.Waiting
                "ix_events_request_runnable_age", [| "event_timestamp" |], [| "backoff_until" |], Predicates.Waiting
                "ix_events_request_dead", [| "event_timestamp"; "id" |], [||], Predicates.Dead
                "ix_events_request_dead_names", [| "event_name"; "handler_name" |], [||], Predicates.Dead
                "ix_events_request_running", [| "lease_until"; "id" |], [||], Predicates.Running
            ]

    /// The store's qualified table names.
    type Tables = { Events: string; Requests: string }

    /// The columns every request write sets from a document, in the order of `requestValues`.
    let private requestFieldColumns =
        [
            "handler_name"
            "event_name"
            "event_timestamp"
            "priority"
            "errors"
            "max_errors"
            "backoff_until"
            "completed_at"
            "canceled_at"
            "lease_until"
            "claim_token"
        ]

    let private requestColumns = String.concat ", " ("data" :: requestFieldColumns)

    /// The request columns but data, each set from the column of the same name of a row `input`.
    let requestColumnsFromInput =
        requestFieldColumns
        |> List.map (fun column -> $"%s{column} = input.%s{column}")
        |> String.concat ",\n    "

    /// The time leases are judged by: the caller's $1, or the database's clock when $1 is null.
    [<Literal>]
    let private Now = "COALESCE($1::timestamptz, clock_timestamp())"

    /// Claims up to $3 unprocessed events whose claim is absent or lapsed at `Now`, oldest first, each
    /// with a fresh token, for $2 (an interval). Returns (id, document) of the claimed ones.
    let claimEvents (tables: Tables) =
        $"""
WITH clock AS MATERIALIZED (SELECT %s{Now} AS now),
picked AS MATERIALIZED (
    SELECT id, gen_random_uuid() AS token
    FROM %s{tables.Events}
    WHERE %s{Predicates.Unprocessed} AND (claim_until IS NULL OR claim_until <= (SELECT now FROM clock))
    ORDER BY event_timestamp, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED)
UPDATE %s{tables.Events} AS e
SET claim_token = picked.token,
    claim_until = clock.now + $2::interval,
    data = e.data || jsonb_build_object('claimToken', picked.token, 'claimUntil', to_jsonb(clock.now + $2::interval)),
    mt_last_modified = transaction_timestamp()
FROM picked, clock
WHERE e.id = picked.id
RETURNING e.id, e.data::text"""

    /// Gives back the claims ($1 ids, $2 tokens) that still hold their events.
    let releaseEvents (tables: Tables) =
        $"""
UPDATE %s{tables.Events} AS e
SET claim_token = NULL,
    claim_until = NULL,
    data = e.data || jsonb_build_object('claimToken', NULL, 'claimUntil', NULL),
    mt_last_modified = transaction_timestamp()
FROM unnest($1::uuid[], $2::uuid[]) AS released(id, token)
WHERE e.id = released.id AND e.claim_token = released.token AND e.%s{Predicates.Unprocessed}"""

    /// Commits fan-outs in one statement. Events: $1 ids, $2 tokens, $3 processed-at, $4 processed-at as
    /// JSON. Requests: $5 event ids, then the request columns ($6 ids, $7 documents ... $18 claim tokens).
    /// An event is marked processed, and its requests inserted, only while unprocessed and claimed by
    /// its token. Returns one row per event, in input order: 0 committed, 1 not found, 2 processed
    /// already, 3 claimed by another token (or unclaimed); and whether requests were inserted.
    let commitProcessing (tables: Tables) =
        $"""
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[])
        WITH ORDINALITY AS t(id, token, processed_at, processed_json, ord)),
marked AS (
    UPDATE %s{tables.Events} AS e
    SET processed_at = input.processed_at,
        claim_token = NULL,
        claim_until = NULL,
        data = e.data || jsonb_build_object(
            'processedAt', input.processed_json::jsonb, 'claimToken', NULL, 'claimUntil', NULL),
        mt_last_modified = transaction_timestamp()
    FROM input
    WHERE e.id = input.id AND e.%s{Predicates.Unprocessed} AND e.claim_token = input.token
    RETURNING e.id, input.ord),
inserted AS (
    INSERT INTO %s{tables.Requests} (id, %s{requestColumns}, mt_last_modified, mt_dotnet_type)
    SELECT r.id, r.doc::jsonb, r.handler_name, r.event_name, r.event_timestamp, r.priority, r.errors,
           r.max_errors, r.backoff_until, r.completed_at, r.canceled_at, r.lease_until, r.claim_token,
           transaction_timestamp(), $19
    FROM unnest($5::uuid[], $6::uuid[], $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::int[],
                $12::int[], $13::int[], $14::timestamptz[], $15::timestamptz[], $16::timestamptz[],
                $17::timestamptz[], $18::uuid[])
        AS r(event_id, id, doc, handler_name, event_name, event_timestamp, priority, errors, max_errors,
             backoff_until, completed_at, canceled_at, lease_until, claim_token)
    WHERE r.event_id IN (SELECT id FROM marked)
    RETURNING id)
SELECT CASE
         WHEN marked.id IS NOT NULL THEN 0
         WHEN stored.id IS NULL THEN 1
         WHEN stored.processed_at IS NOT NULL THEN 2
         ELSE 3
       END,
       EXISTS (SELECT 1 FROM inserted)
FROM input
LEFT JOIN marked ON marked.ord = input.ord
LEFT JOIN %s{tables.Events} AS stored ON stored.id = input.id
ORDER BY input.ord"""

    /// Recovers up to $2 requests whose lease lapsed by `Now`, the core's `ExpireLease`: one more
    /// error, the last attempt at `Now` with `LeaseExpiredError` ($3), and runnable at once
    /// (backoff until `Now`) below max errors, else dead. Returns (id, document) of the recovered ones.
    let recoverRequests (tables: Tables) =
        $"""
WITH clock AS MATERIALIZED (SELECT %s{Now} AS now),
expired AS MATERIALIZED (
    SELECT id
    FROM %s{tables.Requests}
    WHERE %s{Predicates.Running} AND lease_until <= (SELECT now FROM clock)
    ORDER BY lease_until, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED)
UPDATE %s{tables.Requests} AS r
SET errors = r.errors + 1,
    backoff_until = CASE WHEN r.errors + 1 < r.max_errors THEN clock.now END,
    lease_until = NULL,
    claim_token = NULL,
    data = r.data || jsonb_build_object(
        'errors', r.errors + 1,
        'lastAttemptAt', to_jsonb(clock.now),
        'lastError', $3::text,
        'backoffUntil', CASE WHEN r.errors + 1 < r.max_errors THEN to_jsonb(clock.now) END,
        'leaseUntil', NULL,
        'claimToken', NULL),
    mt_last_modified = transaction_timestamp()
FROM expired, clock
WHERE r.id = expired.id
RETURNING r.id, r.data::text"""

    /// Claims up to $3 requests runnable at `Now` in the core's run order, each with a fresh token, for
    /// $2 (an interval); the backoff they waited out is cleared, as the core's `Claim` does.
    /// Returns (id, document) of the claimed ones.
    let claimRequests (tables: Tables) =
        $"""
WITH clock AS MATERIALIZED (SELECT %s{Now} AS now),
picked AS MATERIALIZED (
    SELECT id, gen_random_uuid() AS token
    FROM %s{tables.Requests}
    WHERE %s{Predicates.runnableAt "(SELECT now FROM clock)"}
    ORDER BY priority, event_timestamp, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED)
UPDATE %s{tables.Requests} AS r
SET lease_until = clock.now + $2::interval,
    claim_token = picked.token,
    backoff_until = NULL,
    data = r.data || jsonb_build_object(
        'leaseUntil', to_jsonb(clock.now + $2::interval), 'claimToken', picked.token, 'backoffUntil', NULL),
    mt_last_modified = transaction_timestamp()
FROM picked, clock
WHERE r.id = picked.id
RETURNING r.id, r.data::text"""

    /// Writes outcomes in one statement: $1 the fencing tokens, then the request columns ($2 ids, $3
    /// the changed fields of each document, merged into it ... $14 claim tokens). A row is written only
    /// while its stored token is the outcome's.
    /// The rows are locked in id order first, as `renewLeases` locks them, so that an outcome batch and
    /// a lease renewal of the same executor, over the same running requests, never deadlock.
    /// Returns one row per outcome, in input order: whether it was written, and the stored state's
    /// shape before the statement (0 missing, 1 completed, 2 canceled, 3 not running, 4 other token).
    let recordOutcomes (tables: Tables) =
        $"""
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                         $7::int[], $8::int[], $9::int[], $10::timestamptz[], $11::timestamptz[],
                         $12::timestamptz[], $13::timestamptz[], $14::uuid[])
        WITH ORDINALITY AS t(token, id, doc, handler_name, event_name, event_timestamp, priority, errors,
                             max_errors, backoff_until, completed_at, canceled_at, lease_until, claim_token, ord)),
locked AS MATERIALIZED (
    SELECT r.id
    FROM %s{tables.Requests} AS r
    JOIN input ON r.id = input.id AND r.claim_token = input.token
    ORDER BY r.id
    FOR UPDATE OF r),
written AS (
    UPDATE %s{tables.Requests} AS r
    SET data = r.data || input.doc::jsonb,
    %s{requestColumnsFromInput},
        mt_last_modified = transaction_timestamp()
    FROM input
    WHERE r.id = input.id AND r.claim_token = input.token AND r.id IN (SELECT id FROM locked)
    RETURNING input.ord, r.completed_at IS NULL AND r.canceled_at IS NULL AND r.lease_until IS NULL
                    AND r.errors < r.max_errors AND r.backoff_until IS NULL AS ready)
SELECT written.ord IS NOT NULL,
       CASE
         WHEN stored.id IS NULL THEN 0
         WHEN stored.completed_at IS NOT NULL THEN 1
         WHEN stored.canceled_at IS NOT NULL THEN 2
         WHEN stored.claim_token IS NULL THEN 3
         ELSE 4
       END,
       EXISTS (SELECT 1 FROM written WHERE ready)
FROM input
LEFT JOIN written ON written.ord = input.ord
LEFT JOIN %s{tables.Requests} AS stored ON stored.id = input.id
ORDER BY input.ord"""

    /// Renews leases in one statement, the core's `Renew` for each ($1 request ids, $2 their attempts'
    /// tokens) until $3, or, when $3 is null, for $4 (an interval) from the database's clock. A lease is
    /// renewed only while its stored token is the attempt's, and only ever grows: one already ending at or
    /// after the new end keeps its end. The column and
    /// the document's `leaseUntil` are written together. The rows are locked in id order, as
    /// `recordOutcomes` locks them. Returns one row per item, in input order: whether the attempt
    /// still held its claim (renewed, or already renewed as far), and the stored state's shape before
    /// the statement (as `recordOutcomes`).
    let renewLeases (tables: Tables) =
        $"""
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS t(id, token, ord)),
held AS MATERIALIZED (
    SELECT r.id, r.claim_token AS token
    FROM %s{tables.Requests} AS r
    JOIN (SELECT DISTINCT id, token FROM input) AS i ON r.id = i.id AND r.claim_token = i.token
    ORDER BY r.id
    FOR UPDATE OF r),
clock AS MATERIALIZED (SELECT COALESCE($3::timestamptz, clock_timestamp() + $4::interval) AS until),
renewed AS (
    UPDATE %s{tables.Requests} AS r
    SET lease_until = clock.until,
        data = r.data || jsonb_build_object('leaseUntil', to_jsonb(clock.until)),
        mt_last_modified = transaction_timestamp()
    FROM held, clock
    WHERE r.id = held.id AND r.lease_until < clock.until)
-- A data-modifying WITH runs to completion even though nothing reads it.
SELECT held.id IS NOT NULL,
       CASE
         WHEN stored.id IS NULL THEN 0
         WHEN stored.completed_at IS NOT NULL THEN 1
         WHEN stored.canceled_at IS NOT NULL THEN 2
         WHEN stored.claim_token IS NULL THEN 3
         ELSE 4
       END
FROM input
LEFT JOIN held ON held.id = input.id AND held.token = input.token
LEFT JOIN %s{tables.Requests} AS stored ON stored.id = input.id
ORDER BY input.ord"""

    /// Locks the request with id $1 and returns its document.
    let lockRequest (tables: Tables) =
        $"SELECT data::text FROM %s{tables.Requests} WHERE id = $1 FOR UPDATE"

    /// Overwrites the request with id $1 (the request columns from $2 on, as `recordOutcomes`).
    let writeRequest (tables: Tables) =
        $"""
UPDATE %s{tables.Requests}
SET data = $2::jsonb, handler_name = $3, event_name = $4, event_timestamp = $5, priority = $6, errors = $7,
    max_errors = $8, backoff_until = $9, completed_at = $10, canceled_at = $11, lease_until = $12,
    claim_token = $13, mt_last_modified = transaction_timestamp()
WHERE id = $1"""

    /// Sets rows the store could not read aside ($1 ids, $2 reasons): out of every claim, gauge and page,
    /// their claim or lease (`held`, the column of its end) dropped, kept with the reason for a person.
    let private setAside (table: string) (held: string) =
        $"""
UPDATE %s{table} AS t
SET set_aside = aside.reason, claim_token = NULL, %s{held} = NULL, mt_last_modified = transaction_timestamp()
FROM unnest($1::uuid[], $2::text[]) AS aside(id, reason)
WHERE t.id = aside.id"""

    /// Sets events aside (see `setAside`).
    let setAsideEvents (tables: Tables) =
        setAside tables.Events Columns.ClaimUntil

    /// Sets requests aside (see `setAside`).
    let setAsideRequests (tables: Tables) =
        setAside tables.Requests Columns.LeaseUntil

    /// Puts the row with id $1 back if it is set aside; the count of rows changed.
    let restore (table: string) =
        $"UPDATE %s{table} SET set_aside = NULL, mt_last_modified = transaction_timestamp() WHERE id = $1 AND set_aside IS NOT NULL"

    /// The rows set aside in a table, oldest first: id, reason, raw document.
    let setAsideRows (table: string) =
        $"SELECT id, set_aside, data::text FROM %s{table} WHERE set_aside IS NOT NULL ORDER BY mt_last_modified, id"

    /// Tells every listening process about new work, in a transaction of its own that writes nothing
    /// (so no writing transaction ever waits on the commit lock that NOTIFY takes): $1 the channel, $2
    /// the payloads.
    [<Literal>]
    let Notify =
        "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payloads(payload)"

    /// The payload of an events notification.
    [<Literal>]
    let EventsPayload = "events"

    /// The payload of a requests notification.
    [<Literal>]
    let RequestsPayload = "requests"

    /// A query that fails when the connection is gone.
    [<Literal>]
    let Probe = "SELECT 1"

    /// Listens on the channel.
    let listen (channel: string) = $"LISTEN \"%s{channel}\""

    /// The gauges at $1: unprocessed count and oldest, runnable count and oldest, dead count.
    let stats (tables: Tables) =
        $"""
SELECT (SELECT count(*) FROM %s{tables.Events} WHERE %s{Predicates.Unprocessed}),
       (SELECT min(event_timestamp) FROM %s{tables.Events} WHERE %s{Predicates.Unprocessed}),
       (SELECT count(*) FROM %s{tables.Requests} WHERE %s{Predicates.runnableAt "$1"}),
       (SELECT min(event_timestamp) FROM %s{tables.Requests} WHERE %s{Predicates.runnableAt "$1"}),
       (SELECT count(*) FROM %s{tables.Requests} WHERE %s{Predicates.Dead})"""

    let private deadFilter =
        $"%s{Predicates.Dead} AND (cardinality($1::text[]) = 0 OR event_name = ANY($1)) "
        + "AND (cardinality($2::text[]) = 0 OR handler_name = ANY($2))"

    /// The count of dead requests whose event name is in $1 and handler name in $2 (an empty array: any).
    let deadCount (tables: Tables) =
        $"SELECT count(*) FROM %s{tables.Requests} WHERE %s{deadFilter}"

    /// One page ($3 rows after $4) of the dead requests filtered as `deadCount`, by event time then id.
    let deadPage (tables: Tables) =
        $"""
SELECT data::text FROM %s{tables.Requests}
WHERE %s{deadFilter}
ORDER BY event_timestamp, id
LIMIT $3 OFFSET $4"""

    /// The distinct event names among dead requests.
    let deadEventNames (tables: Tables) =
        $"SELECT DISTINCT event_name FROM %s{tables.Requests} WHERE %s{Predicates.Dead}"

    /// The distinct handler names among dead requests.
    let deadHandlerNames (tables: Tables) =
        $"SELECT DISTINCT handler_name FROM %s{tables.Requests} WHERE %s{Predicates.Dead}"

    /// A page of $3 documents of a table after the key ($1 event time, $2 id), by event time then id; the
    /// first page passes NULL keys.
    let pageAfter (table: string) =
        $"""
SELECT data::text, event_timestamp, id FROM %s{table}
WHERE $1::timestamptz IS NULL OR (event_timestamp, id) > ($1, $2::uuid)
ORDER BY event_timestamp, id
LIMIT $3"""

    /// The document with id $1, unless it is set aside.
    let findNotSetAside (table: string) =
        $"SELECT data::text FROM %s{table} WHERE id = $1 AND set_aside IS NULL"
