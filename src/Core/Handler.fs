namespace Events.Core

open System
open System.Diagnostics
open System.Threading
open System.Threading.Tasks

/// What a handler returns: success, or an ordinary failure with its message. A handler that throws
/// fails too (the analogue of a Go panic): its exception and stack are kept and always reported.
[<RequireQualifiedAccess>]
type HandlerResult =
    /// The handler did its work.
    | Succeeded
    /// The handler could not do its work; the request is retried after its backoff, or dies.
    | Failed of error: string
    /// The handler could not do its work and never will (bad data, say): the request is dead at once.
    | FailedPermanently of error: string

/// What a handler is given: its request, and a transaction of the store's it may use for its own work.
[<Sealed>]
type HandlerContext internal (request: HandlerRequest, openTransaction: unit -> IHandlerTransaction option) =
    let mutable transaction: IHandlerTransaction option = None
    let mutable opened = false

    /// The request being executed (as the before-execute hook left it).
    member _.Request = request

    /// This attempt's number: 1 for the first.
    member _.Attempt = request.Errors + 1

    /// The store's transaction for the handler's own work, opened on first use and committed with the
    /// request's outcome (none when the store has no such thing).
    member _.Transaction: IHandlerTransaction option =
        if not opened then
            transaction <- openTransaction ()
            opened <- true

        transaction

    member internal _.OpenedTransaction = transaction

/// A handler: runs for one request; the token fires on the handler's timeout and on a hard shutdown.
type Handler = HandlerContext -> CancellationToken -> Task<HandlerResult>

/// A failure the error reporter is told about: every thrown exception, and every failure that makes a
/// request dead.
type ErrorReport =
    {
        /// The request after the failed attempt.
        Request: HandlerRequest
        /// The error message recorded on the request.
        Error: string
        /// The exception the handler threw, if it threw.
        Exception: exn option
        /// The stack of the thrown exception (none for an ordinary failure).
        StackTrace: string option
        /// Whether the request will be retried (false: it is dead).
        Retryable: bool
    }

/// Receives reported failures (to send them to an error tracker, say).
type IErrorReporter =
    /// Reports a failure; returns whether the reporter accepted it. Awaited on the attempt's task after its
    /// slot is freed; the token fires on a hard shutdown.
    abstract ReportAsync: report: ErrorReport * cancellationToken: CancellationToken -> Task<bool>

/// Error reporters from functions.
module ErrorReporter =
    /// A reporter that calls a synchronous function.
    let ofFunction (report: ErrorReport -> bool) =
        { new IErrorReporter with
            member _.ReportAsync(failure, _) = Task.FromResult(report failure)
        }

/// What a hook decided.
[<RequireQualifiedAccess>]
type HookResult<'T> =
    /// Go on, with this (possibly changed) value.
    | Continue of 'T
    /// Stop: the item is left for a later round, and the reason is logged as an error.
    | Refuse of reason: string

/// Runs before an event is fanned out; may change the event or refuse it.
type BeforeProcess = Event -> CancellationToken -> Task<HookResult<Event>>

/// Runs before a request's handler; may change the request the handler sees, or refuse to run it.
type BeforeExecute = HandlerRequest -> CancellationToken -> Task<HookResult<HandlerRequest>>

/// Makes events with the clock, a UUIDv7 id and the caller's trace context (the code that raises the
/// event), so processing and handling join the caller's trace.
[<Sealed>]
type EventFactory(timeProvider: TimeProvider) =

    /// An event factory on the system clock.
    new() = EventFactory(TimeProvider.System)

    /// The W3C trace context of the current activity, if any.
    static member CurrentTrace() : TraceContext option =
        match Activity.Current with
        | null -> None
        | activity when activity.IdFormat = ActivityIdFormat.W3C ->
            Some
                {
                    TraceParent = activity.Id
                    TraceState = Option.ofObj activity.TraceStateString
                }
        | _ -> None

    member private _.Stamp(event: Event) =
        { event with
            Trace = EventFactory.CurrentTrace()
        }

    member private _.Now = timeProvider.GetUtcNow()

    /// An application event; the data must serialise to a JSON object.
    member this.Application(name: string, data: obj) : Result<Event, EventError> =
        let now = this.Now

        Event.tryApplication (Guid.CreateVersion7 now) now name data
        |> Result.map this.Stamp

    /// A domain event about an entity; the data must serialise to a JSON object.
    member this.Domain(name: string, entityId: string, entityName: string, data: obj) : Result<Event, EventError> =
        let now = this.Now

        Event.tryDomain (Guid.CreateVersion7 now) now name entityId entityName data
        |> Result.map this.Stamp
