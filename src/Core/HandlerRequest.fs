namespace Events.Core

open System

/// A claim on a running request: who holds it (the fencing token of this attempt) and until when.
type Lease =
    {
        /// Names this attempt; an outcome must carry it to be recorded.
        Token: Guid
        /// When the claim lapses; after this the request may be recovered by another worker.
        Until: DateTimeOffset
    }

/// Where a handler request is in its life. Each case carries only what is valid in it.
[<RequireQualifiedAccess>]
type RequestState =
    /// Waiting to run: new, or waiting out a backoff until the time given.
    | Runnable of backoffUntil: DateTimeOffset option
    /// Claimed by a worker that is running the handler.
    | Running of Lease
    /// The handler succeeded. Absorbing.
    | Completed of completedAt: DateTimeOffset
    /// Failed MaxErrors times; waits for a person to re-execute or cancel it.
    | Dead
    /// Canceled by a person. Absorbing.
    | Canceled of canceledAt: DateTimeOffset

/// The work of running one handler for one event: the Go framework's fields, plus the lease.
type HandlerRequest =
    {
        /// The request's id (a UUIDv7).
        Id: Guid
        /// The handler to run.
        HandlerName: HandlerName
        /// The event's id.
        EventId: Guid
        /// The event's name.
        EventName: EventName
        /// The event's data.
        EventData: EventData
        /// When the event happened.
        EventTimestamp: DateTimeOffset
        /// The entity of a domain event.
        EventEntity: Entity option
        /// The event's correlation id.
        CorrelationId: Guid option
        /// The trace context of the code that raised the event.
        EventTrace: TraceContext option
        /// Failed attempts after which the request is dead.
        MaxErrors: int
        /// Lower runs first.
        Priority: int
        /// The wait after a failed attempt, as the handler was configured when the event was fanned out.
        Backoff: BackoffPolicy
        /// How long one attempt may run, as the handler was configured when the event was fanned out.
        Timeout: TimeSpan option
        /// Failed attempts so far.
        Errors: int
        /// When an attempt last ended.
        LastAttemptAt: DateTimeOffset option
        /// The error of the last failed attempt, cleared by a success.
        LastError: string option
        /// Where the request is in its life.
        State: RequestState
    }

/// What may happen to a handler request.
[<RequireQualifiedAccess>]
type RequestCommand =
    /// A worker claims the request at `now` for `leaseFor`, naming its attempt with `token`.
    | Claim of now: DateTimeOffset * leaseFor: TimeSpan * token: Guid
    /// The attempt named by `token` succeeded at `at`.
    | Succeed of token: Guid * at: DateTimeOffset
    /// The attempt named by `token` failed at `at` with `error`; `backoffSample` in [0, 1) draws its wait.
    | Fail of token: Guid * at: DateTimeOffset * error: string * backoffSample: float
    /// The attempt named by `token` failed at `at` with `error` for good (the handler said so, or threw
    /// an exception its options name as permanent): dead at once, its error count raised to MaxErrors.
    | FailPermanently of token: Guid * at: DateTimeOffset * error: string
    /// The claim's lease ran out at `now` with no outcome: counts as one failed attempt.
    | ExpireLease of now: DateTimeOffset
    /// A person cancels the request at `at`.
    | Cancel of at: DateTimeOffset
    /// A person asks for the request to run again from zero errors.
    | ReExecute
    /// The attempt named by `token` gives the request back without running it (a hook refused it,
    /// or the worker is shutting down): runnable again at once, no error counted.
    | Release of token: Guid
    /// The attempt named by `token` is still running and renews its claim until `until` (a heartbeat),
    /// so that no other worker recovers it meanwhile. A lease only ever grows: an `until` not later than
    /// the lease's end changes nothing.
    | Renew of token: Guid * until: DateTimeOffset

/// Why a command was refused.
[<RequireQualifiedAccess>]
type RequestError =
    /// The request already completed.
    | AlreadyCompleted
    /// The request was canceled.
    | AlreadyCanceled
    /// The request has reached MaxErrors ("reached max errors").
    | ReachedMaxErrors
    /// The request waits out a backoff until this time.
    | BackingOff of until: DateTimeOffset
    /// Another attempt holds the request until this time.
    | AlreadyClaimed of until: DateTimeOffset
    /// The outcome names no running attempt: the request is not running.
    | NotRunning
    /// The outcome's token is not the current attempt's: another worker claimed the request since.
    | StaleToken
    /// The lease has not run out yet.
    | LeaseNotExpired of until: DateTimeOffset
    /// A claim's lease must be positive.
    | LeaseNotPositive of TimeSpan
    /// The store could not commit the handler's own changes with the outcome (a unique key the
    /// handler's session violated, say): nothing of the outcome was written.
    | CommitFailed of error: string

    /// A sentence that says why the command was refused.
    member this.Message =
        match this with
        | AlreadyCompleted -> "handler request is already completed"
        | AlreadyCanceled -> "handler request is canceled"
        | ReachedMaxErrors -> "handler request has reached max errors"
        | BackingOff until -> $"handler request is backing off until %O{until}"
        | AlreadyClaimed until -> $"handler request is claimed by another attempt until %O{until}"
        | NotRunning -> "handler request is not running"
        | StaleToken -> "the attempt's fencing token is stale: the request was claimed again since"
        | LeaseNotExpired until -> $"the lease holds until %O{until}"
        | LeaseNotPositive lease -> $"a lease must be positive, got %O{lease}"
        | CommitFailed error -> $"the handler's own changes could not be committed: %s{error}"

/// The pure state machine of handler requests and the predicates every store must agree with.
[<RequireQualifiedAccess>]
module HandlerRequest =

    /// The error recorded when a lease runs out with no outcome.
    [<Literal>]
    let LeaseExpiredError = "the lease expired before the attempt reported an outcome"

    /// A new runnable request for an event and a configured handler.
    let create (id: Guid) (event: Event) (handlerName: HandlerName) (settings: HandlerSettings) : HandlerRequest =
        {
            Id = id
            HandlerName = handlerName
            EventId = event.Id
            EventName = event.Name
            EventData = event.Data
            EventTimestamp = event.Timestamp
            EventEntity = event.Entity
            CorrelationId = event.CorrelationId
            EventTrace = event.Trace
            MaxErrors = settings.MaxErrors
            Priority = settings.Priority
            Backoff = settings.Backoff
            Timeout = settings.Timeout
            Errors = 0
            LastAttemptAt = None
            LastError = None
            State = RequestState.Runnable None
        }

    /// Error text every store can keep: U+0000, which PostgreSQL's text and jsonb cannot hold, becomes
    /// U+FFFD (the replacement character), in memory as in the database.
    let storable (text: string) : string =
        if isNull text || not (text.Contains '\u0000') then
            text
        else
            text.Replace('\u0000', '\uFFFD')

    let private failed (at: DateTimeOffset) (error: string) (backoff: int -> TimeSpan) (request: HandlerRequest) =
        let errors = request.Errors + 1

        let state =
            if errors < request.MaxErrors then
                RequestState.Runnable(Some(Backoff.addSaturating at (backoff errors)))
            else
                RequestState.Dead

        { request with
            Errors = errors
            LastAttemptAt = Some at
            LastError = Some(storable error)
            State = state
        }

    /// Whether an outcome carrying `token` may be recorded on the request as stored: only while the
    /// request runs under the attempt that token names (the fencing check every store applies).
    let checkToken (token: Guid) (request: HandlerRequest) : Result<unit, RequestError> =
        match request.State with
        | RequestState.Running lease when lease.Token = token -> Ok()
        | RequestState.Running _ -> Error RequestError.StaleToken
        | RequestState.Runnable _
        | RequestState.Dead -> Error RequestError.NotRunning
        | RequestState.Completed _ -> Error RequestError.AlreadyCompleted
        | RequestState.Canceled _ -> Error RequestError.AlreadyCanceled

    let private outcome (token: Guid) (request: HandlerRequest) (record: unit -> HandlerRequest) =
        checkToken token request |> Result.map record

    /// The one transition function: the request after the command, or why it is refused.
    /// `policy` is the handler's backoff policy, used by `Fail`.
    let transition
        (policy: BackoffPolicy)
        (command: RequestCommand)
        (request: HandlerRequest)
        : Result<HandlerRequest, RequestError> =
        match command, request.State with
        | RequestCommand.Claim(_, leaseFor, _), _ when leaseFor <= TimeSpan.Zero ->
            Error(RequestError.LeaseNotPositive leaseFor)
        | RequestCommand.Claim(now, _, _), RequestState.Runnable(Some until) when until > now ->
            Error(RequestError.BackingOff until)
        | RequestCommand.Claim(now, leaseFor, token), RequestState.Runnable _ ->
            Ok
                { request with
                    State =
                        RequestState.Running
                            {
                                Token = token
                                Until = Backoff.addSaturating now leaseFor
                            }
                }
        | RequestCommand.Claim _, RequestState.Running lease -> Error(RequestError.AlreadyClaimed lease.Until)
        | RequestCommand.Claim _, RequestState.Dead -> Error RequestError.ReachedMaxErrors
        | RequestCommand.Claim _, RequestState.Completed _ -> Error RequestError.AlreadyCompleted
        | RequestCommand.Claim _, RequestState.Canceled _ -> Error RequestError.AlreadyCanceled

        | RequestCommand.Succeed(token, at), _ ->
            outcome token request (fun () ->
                { request with
                    LastAttemptAt = Some at
                    LastError = None
                    State = RequestState.Completed at
                })

        | RequestCommand.Fail(token, at, error, sample), _ ->
            outcome token request (fun () ->
                failed at error (fun attempt -> Backoff.delay policy attempt sample) request)

        | RequestCommand.FailPermanently(token, at, error), _ ->
            outcome token request (fun () ->
                { request with
                    Errors = max (request.Errors + 1) request.MaxErrors
                    LastAttemptAt = Some at
                    LastError = Some(storable error)
                    State = RequestState.Dead
                })

        | RequestCommand.Release token, _ ->
            outcome token request (fun () ->
                { request with
                    State = RequestState.Runnable None
                })

        | RequestCommand.Renew(token, until), RequestState.Running lease when lease.Token = token ->
            if until > lease.Until then
                Ok
                    { request with
                        State = RequestState.Running { lease with Until = until }
                    }
            else
                Ok request
        | RequestCommand.Renew _, RequestState.Running _ -> Error RequestError.StaleToken
        | RequestCommand.Renew _, (RequestState.Runnable _ | RequestState.Dead) -> Error RequestError.NotRunning
        | RequestCommand.Renew _, RequestState.Completed _ -> Error RequestError.AlreadyCompleted
        | RequestCommand.Renew _, RequestState.Canceled _ -> Error RequestError.AlreadyCanceled

        | RequestCommand.ExpireLease now, RequestState.Running lease when lease.Until > now ->
            Error(RequestError.LeaseNotExpired lease.Until)
        | RequestCommand.ExpireLease now, RequestState.Running _ ->
            Ok(failed now LeaseExpiredError (fun _ -> TimeSpan.Zero) request)
        | RequestCommand.ExpireLease _, (RequestState.Runnable _ | RequestState.Dead) -> Error RequestError.NotRunning
        | RequestCommand.ExpireLease _, RequestState.Completed _ -> Error RequestError.AlreadyCompleted
        | RequestCommand.ExpireLease _, RequestState.Canceled _ -> Error RequestError.AlreadyCanceled

        | RequestCommand.Cancel at, (RequestState.Runnable _ | RequestState.Dead) ->
            Ok
                { request with
                    State = RequestState.Canceled at
                }
        | RequestCommand.Cancel _, RequestState.Running lease -> Error(RequestError.AlreadyClaimed lease.Until)
        | RequestCommand.Cancel _, RequestState.Completed _ -> Error RequestError.AlreadyCompleted
        | RequestCommand.Cancel _, RequestState.Canceled _ -> Error RequestError.AlreadyCanceled

        | RequestCommand.ReExecute, (RequestState.Runnable _ | RequestState.Dead) ->
            Ok
                { request with
                    Errors = 0
                    State = RequestState.Runnable None
                }
        | RequestCommand.ReExecute, RequestState.Running lease -> Error(RequestError.AlreadyClaimed lease.Until)
        | RequestCommand.ReExecute, RequestState.Completed _ -> Error RequestError.AlreadyCompleted
        | RequestCommand.ReExecute, RequestState.Canceled _ -> Error RequestError.AlreadyCanceled

    /// Runnable at `now`: waiting, and any backoff has passed (the Go framework's "unexecuted").
    let isRunnable (now: DateTimeOffset) (request: HandlerRequest) : bool =
        match request.State with
        | RequestState.Runnable None -> true
        | RequestState.Runnable(Some until) -> until <= now
        | RequestState.Running _
        | RequestState.Completed _
        | RequestState.Dead
        | RequestState.Canceled _ -> false

    /// Held by a worker whose lease ran out by `now`: to be recovered with `ExpireLease`.
    let isLeaseExpired (now: DateTimeOffset) (request: HandlerRequest) : bool =
        match request.State with
        | RequestState.Running lease -> lease.Until <= now
        | RequestState.Runnable _
        | RequestState.Completed _
        | RequestState.Dead
        | RequestState.Canceled _ -> false

    /// Dead: failed MaxErrors times, neither completed nor canceled.
    let isDead (request: HandlerRequest) : bool =
        match request.State with
        | RequestState.Dead -> true
        | RequestState.Runnable _
        | RequestState.Running _
        | RequestState.Completed _
        | RequestState.Canceled _ -> false

    /// Completed or canceled: nothing will happen to the request any more.
    let isTerminal (request: HandlerRequest) : bool =
        match request.State with
        | RequestState.Completed _
        | RequestState.Canceled _ -> true
        | RequestState.Runnable _
        | RequestState.Running _
        | RequestState.Dead -> false

    /// The order runnable requests are handed out in: priority ascending, then event time, then id.
    let runOrder (request: HandlerRequest) =
        struct (request.Priority, request.EventTimestamp, request.Id)

    /// When the request's backoff ends, if it waits out one.
    let backoffUntil (request: HandlerRequest) : DateTimeOffset option =
        match request.State with
        | RequestState.Runnable until -> until
        | RequestState.Running _
        | RequestState.Completed _
        | RequestState.Dead
        | RequestState.Canceled _ -> None

    /// When the request completed, if it did.
    let completedAt (request: HandlerRequest) : DateTimeOffset option =
        match request.State with
        | RequestState.Completed at -> Some at
        | RequestState.Runnable _
        | RequestState.Running _
        | RequestState.Dead
        | RequestState.Canceled _ -> None

    /// When the request was canceled, if it was.
    let canceledAt (request: HandlerRequest) : DateTimeOffset option =
        match request.State with
        | RequestState.Canceled at -> Some at
        | RequestState.Runnable _
        | RequestState.Running _
        | RequestState.Completed _
        | RequestState.Dead -> None

    /// The running attempt's lease, if the request is running.
    let lease (request: HandlerRequest) : Lease option =
        match request.State with
        | RequestState.Running lease -> Some lease
        | RequestState.Runnable _
        | RequestState.Completed _
        | RequestState.Dead
        | RequestState.Canceled _ -> None

    /// Rebuilds the state from a store's flat columns (the Go framework's fields plus the lease),
    /// refusing combinations no transition can produce.
    let stateOfFields
        (errors: int)
        (maxErrors: int)
        (backoffUntil: DateTimeOffset option)
        (completedAt: DateTimeOffset option)
        (canceledAt: DateTimeOffset option)
        (lease: Lease option)
        : Result<RequestState, string> =
        if maxErrors < 1 then
            Error "max errors must be at least 1"
        elif errors < 0 || errors > maxErrors then
            Error "errors must be from 0 to max errors"
        elif
            backoffUntil.IsSome
            && (errors = 0
                || errors = maxErrors
                || completedAt.IsSome
                || canceledAt.IsSome
                || lease.IsSome)
        then
            // Only a failure below max errors sets a backoff; a claim, a success, a cancel and
            // re-execute drop it. Accepting it elsewhere would silently lose it.
            Error "only a runnable request that has failed can wait out a backoff"
        else
            match completedAt, canceledAt, lease with
            | Some _, Some _, _ -> Error "a request cannot be both completed and canceled"
            | Some _, None, Some _
            | None, Some _, Some _ -> Error "a completed or canceled request cannot hold a lease"
            | Some at, None, None ->
                if errors < maxErrors then
                    Ok(RequestState.Completed at)
                else
                    Error "a request at max errors cannot have completed"
            | None, Some at, None -> Ok(RequestState.Canceled at)
            | None, None, Some lease ->
                if errors < maxErrors then
                    Ok(RequestState.Running lease)
                else
                    Error "a request at max errors cannot hold a lease"
            | None, None, None ->
                if errors >= maxErrors then
                    Ok RequestState.Dead
                else
                    Ok(RequestState.Runnable backoffUntil)
