namespace Events.Core

open System

/// An event's fan-out decided where it is appended: when it counts as processed, and its requests.
type AppendedFanOut =
    {
        /// When the event is processed (its fan-out's time).
        ProcessedAt: DateTimeOffset
        /// One request per configured handler.
        Requests: HandlerRequest list
    }

/// Fans events out in the transaction that appends them, in a process whose engine knows the
/// configuration: the requests are stored with the event, the event is stored processed, and once the
/// transaction commits this process's executor is told at once (no claim of the event, no second commit).
type IAppendFanOut =
    /// The fan-out of an event, as the processor would make it now; None leaves the event to the
    /// processor (no handler is mapped, so it logs that, say).
    abstract FanOut: event: Event -> AppendedFanOut option

    /// Told once the transaction that stored these events, fanned out, committed.
    abstract Committed: events: (Event * AppendedFanOut) list -> unit

/// A store that can fan events out where they are appended (see `IAppendFanOut`).
type IFanOutOnAppend =
    /// Fans out the events appended in this process from now on, until the registration is disposed.
    /// With several registrations, the latest one still registered is used.
    abstract UseFanOut: fanOut: IAppendFanOut -> IDisposable

/// The fan-out of one event: the rule shared by the processor and the fan-out on append.
[<RequireQualifiedAccess>]
module FanOut =

    /// One runnable request per handler configured for the event's name, created at `now` with the
    /// handler's settings then (the snapshot rule).
    let requests (configuration: Configuration<'handler>) (event: Event) (now: DateTimeOffset) : HandlerRequest list =
        Configuration.handlersFor event.Name configuration
        |> List.map (fun entry -> HandlerRequest.create (Guid.CreateVersion7 now) event entry.Name entry.Settings)
