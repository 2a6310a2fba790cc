namespace Events.Core

/// Where a scheduler is in its life.
[<RequireQualifiedAccess>]
type SchedulerStatus =
    /// Made, not started.
    | NotStarted
    /// Processing and executing on every tick.
    | Running
    /// Started, but skipping ticks until resumed.
    | Paused
    /// Shut down. Absorbing.
    | Shutdown

/// What may be asked of a scheduler.
[<RequireQualifiedAccess>]
type SchedulerCommand =
    /// Start ticking.
    | Start
    /// Skip ticks.
    | Pause
    /// Tick again.
    | Resume
    /// Stop for good.
    | Shutdown

/// Why a scheduler command was refused.
[<RequireQualifiedAccess>]
type SchedulerError =
    /// Start is allowed only once, from NotStarted.
    | AlreadyStarted of SchedulerStatus
    /// Shutdown is allowed only when running or paused.
    | NotRunning of SchedulerStatus

    /// A sentence that says why.
    member this.Message =
        match this with
        | AlreadyStarted status ->
            $"scheduler is already started: it can start only when not started, and it is %A{status}"
        | NotRunning status ->
            $"scheduler is not operational: it can shut down only when running or paused, and it is %A{status}"

/// The scheduler's pure status machine.
[<RequireQualifiedAccess>]
module Scheduling =

    /// The status after a command, or why it is refused. Pause and resume are ignored (the status is
    /// unchanged) where they do not apply, as in the Go framework.
    let transition (command: SchedulerCommand) (status: SchedulerStatus) : Result<SchedulerStatus, SchedulerError> =
        match command, status with
        | SchedulerCommand.Start, SchedulerStatus.NotStarted -> Ok SchedulerStatus.Running
        | SchedulerCommand.Start, (SchedulerStatus.Running | SchedulerStatus.Paused | SchedulerStatus.Shutdown) ->
            Error(SchedulerError.AlreadyStarted status)
        | SchedulerCommand.Pause, SchedulerStatus.Running -> Ok SchedulerStatus.Paused
        | SchedulerCommand.Pause, (SchedulerStatus.NotStarted | SchedulerStatus.Paused | SchedulerStatus.Shutdown) ->
            Ok status
        | SchedulerCommand.Resume, SchedulerStatus.Paused -> Ok SchedulerStatus.Running
        | SchedulerCommand.Resume, (SchedulerStatus.NotStarted | SchedulerStatus.Running | SchedulerStatus.Shutdown) ->
            Ok status
        | SchedulerCommand.Shutdown, (SchedulerStatus.Running | SchedulerStatus.Paused) -> Ok SchedulerStatus.Shutdown
        | SchedulerCommand.Shutdown, (SchedulerStatus.NotStarted | SchedulerStatus.Shutdown) ->
            Error(SchedulerError.NotRunning status)

    /// The value of the status up-down counter's "state" attribute for a status that is counted.
    let gaugeState (status: SchedulerStatus) : string option =
        match status with
        | SchedulerStatus.Running -> Some "running"
        | SchedulerStatus.Paused -> Some "paused"
        | SchedulerStatus.NotStarted
        | SchedulerStatus.Shutdown -> None
