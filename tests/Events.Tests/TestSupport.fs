/// Test doubles that are real parts: a settable clock, a logger provider that keeps what it is given,
/// and a small engine builder.
module Events.Tests.TestSupport

open System
open System.Collections.Concurrent
open System.Collections.Generic
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Logging
open Events.Core

/// A clock the test moves by hand. Delays and timers still run on real time.
type ManualTime(start: DateTimeOffset) =
    inherit TimeProvider()
    let mutable now = start

    new() = ManualTime(DateTimeOffset(2026, 11, 27, 12, 0, 0, TimeSpan.Zero))

    override _.GetUtcNow() = now

    member _.Advance(by: TimeSpan) = now <- now + by

    member _.Set(value: DateTimeOffset) = now <- value

/// One log entry as a provider received it: level, category, message, structured fields, scopes, exception.
type LogEntry =
    {
        Level: LogLevel
        EventId: EventId
        Category: string
        Message: string
        Fields: Map<string, obj>
        Scopes: Map<string, obj>
        Exception: exn option
    }

    member this.Field(key: string) =
        match this.Fields.TryFind key with
        | Some value -> Some value
        | None -> this.Scopes.TryFind key

let private pairs (state: obj) =
    match state with
    | :? IEnumerable<KeyValuePair<string, obj>> as pairs ->
        pairs |> Seq.map (fun pair -> pair.Key, pair.Value) |> List.ofSeq
    | _ -> []

/// A logger provider that records every entry with its structured state and active scopes.
type LogSink() =
    let entries = ConcurrentQueue<LogEntry>()
    let scopes = new LoggerExternalScopeProvider()

    member _.Entries = List.ofSeq entries

    member this.Factory =
        LoggerFactory.Create(fun builder -> builder.SetMinimumLevel(LogLevel.Trace).AddProvider(this) |> ignore)

    member this.Logger = this.Factory.CreateLogger "Events"

    interface ILoggerProvider with
        member _.CreateLogger(category) =
            { new ILogger with
                member _.BeginScope(state) = scopes.Push state
                member _.IsEnabled _ = true

                member _.Log(level, eventId, state, error, formatter) =
                    let scoped = ResizeArray()

                    scopes.ForEachScope(
                        (fun scope (acc: ResizeArray<string * obj>) -> acc.AddRange(pairs scope)),
                        scoped
                    )

                    entries.Enqueue
                        {
                            Level = level
                            EventId = eventId
                            Category = category
                            Message = formatter.Invoke(state, error)
                            Fields = Map.ofList (pairs (box state))
                            Scopes = Map.ofSeq scoped
                            Exception = Option.ofObj error
                        }
            }

        member _.Dispose() = ()

/// Every item of an async sequence, in order.
let toList (items: IAsyncEnumerable<'item>) : Task<'item list> =
    task {
        let enumerator = items.GetAsyncEnumerator()
        let result = ResizeArray()
        let mutable more = true

        while more do
            let! next = enumerator.MoveNextAsync()

            if next then
                result.Add enumerator.Current
            else
                more <- false

        do! enumerator.DisposeAsync()
        return List.ofSeq result
    }

/// A store that passes everything to a real store, but fails the next processing commit when asked:
/// a database fault, injected.
type FaultyStore(inner: IEventStore) =
    let mutable failNextCommit = false
    let poisoned = Collections.Concurrent.ConcurrentDictionary<Guid, unit>()
    let commitBytes = Collections.Concurrent.ConcurrentQueue<int64>()

    /// The store it passes everything to.
    member _.Inner = inner

    /// Makes the next CommitProcessingAsync throw, as a broken connection would.
    member _.FailNextCommit() = failNextCommit <- true

    /// Makes every fan-out commit and outcome write that holds this event (or a request of it) throw, as
    /// a row the database refuses would.
    member _.Poison(eventId: Guid) = poisoned[eventId] <- ()

    /// Lets the batches holding this event through again.
    member _.Heal(eventId: Guid) = poisoned.TryRemove eventId |> ignore

    /// The bytes of event data each fan-out commit carried (summed over its requests), in order.
    member _.CommitBytes = List.ofSeq commitBytes

    interface ISetAsideItems with
        member _.SetAsideAsync cancellationToken =
            (inner :?> ISetAsideItems).SetAsideAsync cancellationToken

        member _.SetItemAsideAsync(kind, id, reason, cancellationToken) =
            (inner :?> ISetAsideItems).SetItemAsideAsync(kind, id, reason, cancellationToken)

        member _.RestoreAsync(kind, id, cancellationToken) =
            (inner :?> ISetAsideItems).RestoreAsync(kind, id, cancellationToken)

        [<CLIEvent>]
        member _.ItemsSetAside = (inner :?> ISetAsideItems).ItemsSetAside

    interface IEventStore with
        member _.AppendAsync(events, cancellationToken) =
            inner.AppendAsync(events, cancellationToken)

        member _.ClaimEventsAsync(limit, now, leaseFor, cancellationToken) =
            inner.ClaimEventsAsync(limit, now, leaseFor, cancellationToken)

        member _.CommitProcessingAsync(processed, cancellationToken) =
            processed
            |> List.sumBy (fun item -> item.Requests |> List.sumBy (fun request -> int64 request.EventData.Json.Length))
            |> commitBytes.Enqueue

            if processed |> List.exists (fun item -> poisoned.ContainsKey item.EventId) then
                Task.FromException<_>(InvalidOperationException "injected: the database refuses a row")
            elif failNextCommit then
                failNextCommit <- false
                Task.FromException<_>(InvalidOperationException "injected: the database went away")
            else
                inner.CommitProcessingAsync(processed, cancellationToken)

        member _.ReleaseEventsAsync(claims, cancellationToken) =
            inner.ReleaseEventsAsync(claims, cancellationToken)

        member _.ClaimRequestsAsync(limit, now, leaseFor, cancellationToken) =
            inner.ClaimRequestsAsync(limit, now, leaseFor, cancellationToken)

        member _.RecordOutcomesAsync(outcomes, cancellationToken) =
            if
                outcomes
                |> List.exists (fun outcome -> poisoned.ContainsKey outcome.Request.EventId)
            then
                Task.FromException<_>(InvalidOperationException "injected: the database refuses a row")
            else
                inner.RecordOutcomesAsync(outcomes, cancellationToken)

        member _.RenewLeasesAsync(renewals, until, cancellationToken) =
            inner.RenewLeasesAsync(renewals, until, cancellationToken)

        member _.BeginHandlerTransaction request = inner.BeginHandlerTransaction request

        member _.FindEventAsync(id, cancellationToken) =
            inner.FindEventAsync(id, cancellationToken)

        member _.FindRequestAsync(id, cancellationToken) =
            inner.FindRequestAsync(id, cancellationToken)

        member _.EventsAsync cancellationToken = inner.EventsAsync cancellationToken
        member _.RequestsAsync cancellationToken = inner.RequestsAsync cancellationToken

        member _.StatsAsync(now, cancellationToken) =
            inner.StatsAsync(now, cancellationToken)

        [<CLIEvent>]
        member _.WorkArrived = inner.WorkArrived

/// The administration port over the same data as a store the tests made.
let rec adminOf (store: IEventStore) : IAdminStore =
    match store with
    | :? IAdminStore as admin -> admin
    | :? FaultyStore as faulty -> adminOf faulty.Inner
    | :? Events.Marten.MartenEventStore as marten -> new Events.Marten.MartenAdminStore(marten)
    | other -> failwith $"no administration port for %s{other.GetType().Name}"

/// An engine over one store, driven round by round by the test.
type Engine =
    {
        Store: IEventStore
        Time: ManualTime
        Logs: LogSink
        Instruments: Instruments
        Processor: Processor
        Executor: Executor
        Factory: EventFactory
    }

    /// Appends an application event with the data given.
    member this.Raise(name: string, data: obj) =
        task {
            let event =
                match this.Factory.Application(name, data) with
                | Ok event -> event
                | Error error -> failwith error.Message

            let! stored = this.Store.AppendAsync([ event ], CancellationToken.None)
            return List.exactlyOne stored
        }

    /// One processor round, never stopped; the number of events claimed.
    member this.ProcessAsync() =
        this.Processor.ProcessAsync CancellationToken.None

    /// One executor round, never stopped; the number of requests claimed.
    member this.ExecuteAsync() =
        this.Executor.ExecuteAsync(CancellationToken.None, CancellationToken.None)

    /// One processor round then one executor round.
    member this.RoundAsync() =
        task {
            let! _ = this.ProcessAsync()
            let! _ = this.ExecuteAsync()
            return ()
        }

    /// Every request in the store.
    member this.RequestsAsync() =
        toList (this.Store.RequestsAsync CancellationToken.None)

/// Makes a handler configuration from (event, handler, code, options) rows, failing on invalid rows.
let configure (rows: (string * string * Handler * HandlerOption list) list) : Configuration<Handler> =
    rows
    |> List.fold
        (fun configuration (eventName, handlerName, handler, options) ->
            match Configuration.tryAdd eventName handlerName handler options configuration with
            | Ok configuration -> configuration
            | Error errors -> failwithf "invalid test configuration: %A" errors)
        Configuration.empty

/// A handler that always succeeds.
let succeed: Handler = fun _ _ -> Task.FromResult HandlerResult.Succeeded

/// A handler that always fails with the message given.
let failWith (message: string) : Handler =
    fun _ _ -> Task.FromResult(HandlerResult.Failed message)

/// Builds an engine over a store made by the factory.
let engineWith
    (makeStore: unit -> Task<IEventStore>)
    (configuration: Configuration<Handler>)
    (processorOptions: ProcessorOptions)
    (executorOptions: ExecutorOptions)
    (prefix: string)
    =
    task {
        let! store = makeStore ()
        let time = ManualTime()
        let logs = new LogSink()

        let instruments =
            new Instruments(
                prefix,
                (fun () -> Some(store.StatsAsync(time.GetUtcNow(), CancellationToken.None).GetAwaiter().GetResult())),
                (fun () -> time.GetUtcNow())
            )

        return
            {
                Store = store
                Time = time
                Logs = logs
                Instruments = instruments
                Processor = Processor(store, configuration, processorOptions, instruments, logs.Logger, time)
                Executor = Executor(store, configuration, executorOptions, instruments, logs.Logger, time)
                Factory = EventFactory time
            }
    }

/// Waits until the condition holds, polling; fails with the message after the timeout.
let waitUntil (timeout: TimeSpan) (message: string) (condition: unit -> Task<bool>) =
    task {
        let deadline = DateTime.UtcNow + timeout
        let mutable holds = false

        while not holds && DateTime.UtcNow < deadline do
            let! now = condition ()
            holds <- now

            if not holds then
                do! Task.Delay 10

        if not holds then
            failwith $"timed out after %O{timeout} waiting until %s{message}"
    }
