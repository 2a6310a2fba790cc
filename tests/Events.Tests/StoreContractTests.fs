/// The contract of the store port, written once against a factory so every store (in memory,
/// PostgreSQL) runs the same laws: each member's contract, concurrent claimers, and a model-based
/// property comparing the store with a model built from the pure core after every step.
module Events.Tests.StoreContractTests

open System
open System.Collections.Concurrent
open System.Collections.Generic
open System.Threading
open System.Threading.Tasks
open Expecto
open FsCheck
open FsCheck.FSharp
open Events.Core

/// How hard the contract works a store.
type ContractConfig =
    {
        /// Cases of the model-based property.
        ModelCases: int
        /// Requests the concurrent workers share.
        ConcurrentRequests: int
        /// Events the concurrent processors share.
        ConcurrentEvents: int
        /// Concurrent workers (and processors).
        Workers: int
    }

/// 200 model cases, 3,000 requests and 2,000 events over 8 workers.
let defaultConfig =
    {
        ModelCases = 200
        ConcurrentRequests = 3000
        ConcurrentEvents = 2000
        Workers = 8
    }

let private ct = CancellationToken.None

/// A UTC time with whole milliseconds, so every store keeps it exactly.
let t0 = DateTimeOffset(2025, 1, 1, 12, 0, 0, TimeSpan.Zero)

let private seconds (n: float) = TimeSpan.FromSeconds n
let private minutes (n: float) = TimeSpan.FromMinutes n

/// The policy the tests' workers fail requests with.
let policy =
    BackoffPolicy.Exponential
        {
            Base = seconds 10.0
            Cap = seconds 60.0
        }

/// An application event with a fresh UUIDv7.
let newEvent (timestamp: DateTimeOffset) (name: string) =
    Event.application (Guid.CreateVersion7()) timestamp (EventName.Create name) EventData.Empty

/// A handler to fan events out to.
let handler (name: string) (priority: int) (maxErrors: int) =
    HandlerName.Create name,
    { HandlerSettings.defaults with
        Priority = priority
        MaxErrors = maxErrors
    }

/// The fan-out of a claimed event to the handlers given, each request with a fresh UUIDv7.
let fanOutOf (now: DateTimeOffset) (claim: ClaimedEvent) (handlers: (HandlerName * HandlerSettings) list) =
    {
        EventId = claim.Event.Id
        Token = claim.Token
        ProcessedAt = now
        Requests =
            handlers
            |> List.map (fun (name, settings) ->
                HandlerRequest.create (Guid.CreateVersion7()) claim.Event name settings)
    }

/// Appends the events, claims them and commits each with one request per handler; returns the
/// requests created, in the order given. The store must hold no other unprocessed event.
let fanOut
    (store: IEventStore)
    (now: DateTimeOffset)
    (items: (Event * (HandlerName * HandlerSettings) list) list)
    : Task<HandlerRequest list> =
    task {
        let! _ = store.AppendAsync(List.map fst items, ct)
        let! claims = store.ClaimEventsAsync(items.Length, now, minutes 5.0, ct)

        let claimsById =
            claims |> List.map (fun claim -> claim.Event.Id, claim) |> Map.ofList

        let processed =
            items
            |> List.map (fun (event, handlers) ->
                match Map.tryFind event.Id claimsById with
                | Some claim -> fanOutOf now claim handlers
                | None -> failtestf "event %O was appended but not claimed" event.Id)

        let! results = store.CommitProcessingAsync(processed, ct)

        Expect.equal results (List.replicate processed.Length (Ok())) "every fan-out of a freshly claimed event commits"

        return processed |> List.collect _.Requests
    }

/// The token of a running request's lease.
let tokenOf (request: HandlerRequest) =
    match HandlerRequest.lease request with
    | Some lease -> lease.Token
    | None -> failtestf "request %O is not running: %A" request.Id request.State

/// The core's transition, which the test expects to accept the command.
let decide (command: RequestCommand) (request: HandlerRequest) =
    match HandlerRequest.transition policy command request with
    | Ok next -> next
    | Error error -> failtestf "the core refused %A on %A: %s" command request.State error.Message

/// The outcome a worker holding this claim writes for the command.
let outcomeOf (command: RequestCommand) (claimed: HandlerRequest) =
    {
        Request = decide command claimed
        Token = tokenOf claimed
        Transaction = None
    }

/// A success of the claimed attempt at `at`.
let succeeded (at: DateTimeOffset) (claimed: HandlerRequest) =
    outcomeOf (RequestCommand.Succeed(tokenOf claimed, at)) claimed

/// A failure of the claimed attempt at `at`.
let failed (at: DateTimeOffset) (claimed: HandlerRequest) =
    outcomeOf (RequestCommand.Fail(tokenOf claimed, at, "boom", 0.5)) claimed

/// Reads an async sequence to the end.
let toList (items: IAsyncEnumerable<'item>) : Task<'item list> = TestSupport.toList items

/// Collects the signals a store raises.
let recordSignals (store: IEventStore) =
    let signals = ConcurrentQueue<WorkSignal>()
    store.WorkArrived.Add signals.Enqueue
    signals

/// Waits up to five seconds for a signal (a database store may deliver it from another connection).
let expectSignal (signals: ConcurrentQueue<WorkSignal>) (signal: WorkSignal) (message: string) =
    task {
        let deadline = DateTime.UtcNow.AddSeconds 5.0

        while not (Seq.contains signal signals) && DateTime.UtcNow < deadline do
            do! Task.Delay 10

        Expect.contains signals signal message
    }

/// Runs the call and returns the ArgumentException it threw or faulted with, if any.
let argumentErrorOf (call: unit -> Task<'result>) : Task<ArgumentException option> =
    task {
        try
            let! _ = call ()
            return None
        with :? ArgumentException as error ->
            return Some error
    }

let private deadQuery eventNames handlerNames limit offset =
    {
        EventNames = eventNames
        HandlerNames = handlerNames
        Limit = limit
        Offset = offset
    }

/// Claims every runnable request at `now` and fails each, `times` times, advancing a minute each
/// time so backoffs pass; returns the requests as last written.
let private failAll (store: IEventStore) (now: DateTimeOffset) (times: int) =
    task {
        let mutable last = []

        for attempt in 1..times do
            let at = now + minutes (float attempt)
            let! claim = store.ClaimRequestsAsync(1000, at, minutes 1.0, ct)
            let outcomes = claim.Claimed |> List.map (failed at)
            let! results = store.RecordOutcomesAsync(outcomes, ct)

            Expect.equal results (List.replicate outcomes.Length (Ok())) "outcomes of current claims are recorded"

            last <- outcomes |> List.map _.Request

        return last
    }

let private appendTests (makeStore: unit -> Task<IEventStore>) =
    [
        testCaseTask "appending assigns a correlation id to an event without one and keeps one given" (fun () ->
            task {
                let! store = makeStore ()
                let given = Guid.CreateVersion7()
                let without = newEvent t0 "order.placed"

                let withOne =
                    { newEvent t0 "order.placed" with
                        CorrelationId = Some given
                    }

                let! stored = store.AppendAsync([ without; withOne ], ct)

                Expect.equal
                    (stored |> List.map _.Id)
                    [ without.Id; withOne.Id ]
                    "the events come back in the order given"

                Expect.isSome stored[0].CorrelationId "an event appended without a correlation id is given one"
                Expect.equal stored[1].CorrelationId (Some given) "a correlation id the caller set is kept"

                Expect.equal
                    { stored[0] with CorrelationId = None }
                    without
                    "appending changes nothing but the correlation id"
            })

        testCaseTask "an appended event is found by its id, unprocessed, as it was returned" (fun () ->
            task {
                let! store = makeStore ()
                let! stored = store.AppendAsync([ newEvent t0 "order.placed" ], ct)
                let! found = store.FindEventAsync(stored[0].Id, ct)
                Expect.equal found (Some stored[0]) "the event is found as stored"
                Expect.isNone stored[0].ProcessedAt "a new event is unprocessed"
                let! missing = store.FindEventAsync(Guid.CreateVersion7(), ct)
                Expect.isNone missing "an unknown id finds nothing"
            })

        testCaseTask "a batch holding an id already stored is refused whole, with an ArgumentException" (fun () ->
            task {
                let! store = makeStore ()
                let first = newEvent t0 "order.placed"
                let! _ = store.AppendAsync([ first ], ct)
                let fresh = newEvent t0 "order.placed"
                let! error = argumentErrorOf (fun () -> store.AppendAsync([ fresh; first ], ct))
                Expect.isSome error "a duplicate id is refused with an ArgumentException"
                let! found = store.FindEventAsync(fresh.Id, ct)
                Expect.isNone found "nothing of a refused batch is appended"
            })

        testCaseTask "a batch holding one id twice is refused whole, with an ArgumentException" (fun () ->
            task {
                let! store = makeStore ()
                let event = newEvent t0 "order.placed"
                let! error = argumentErrorOf (fun () -> store.AppendAsync([ event; event ], ct))
                Expect.isSome error "an id twice in one batch is refused with an ArgumentException"
                let! found = store.FindEventAsync(event.Id, ct)
                Expect.isNone found "nothing of a refused batch is appended"
            })

        testCaseTask "appending signals that events arrived" (fun () ->
            task {
                let! store = makeStore ()
                let signals = recordSignals store
                let! _ = store.AppendAsync([ newEvent t0 "order.placed" ], ct)
                do! expectSignal signals WorkSignal.EventsAppended "appending raises EventsAppended"
            })

        testCaseTask "events are listed oldest first, by timestamp then id" (fun () ->
            task {
                let! store = makeStore ()

                let events =
                    [
                        newEvent (t0 + seconds 2.0) "b"
                        newEvent t0 "a"
                        newEvent (t0 + seconds 1.0) "c"
                        newEvent t0 "d"
                    ]

                let! stored = store.AppendAsync(events, ct)
                let! listed = store.EventsAsync ct |> toList

                Expect.equal
                    (listed |> List.map _.Id)
                    (stored |> List.sortBy (fun event -> event.Timestamp, event.Id) |> List.map _.Id)
                    "EventsAsync lists every event by timestamp then id"
            })
    ]

let private eventClaimTests (makeStore: unit -> Task<IEventStore>) =
    [
        testCaseTask "events are claimed oldest first, by timestamp then id, up to the limit" (fun () ->
            task {
                let! store = makeStore ()

                let events =
                    [
                        newEvent (t0 + seconds 3.0) "a"
                        newEvent (t0 + seconds 1.0) "b"
                        newEvent (t0 + seconds 1.0) "c"
                        newEvent (t0 + seconds 2.0) "d"
                    ]

                let! _ = store.AppendAsync(events, ct)
                let! claims = store.ClaimEventsAsync(3, t0, minutes 1.0, ct)

                let expected =
                    events
                    |> List.sortBy (fun event -> event.Timestamp, event.Id)
                    |> List.truncate 3
                    |> List.map _.Id

                Expect.equal (claims |> List.map _.Event.Id) expected "the three oldest events, in order"

                Expect.equal
                    (claims |> List.map _.Until)
                    (List.replicate 3 (t0 + minutes 1.0))
                    "each claim holds for the lease from now"

                Expect.equal
                    (claims |> List.map _.Token |> List.distinct |> List.length)
                    3
                    "each claim has its own token"
            })

        testCaseTask "a claimed event is not claimed again while its claim holds" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = store.AppendAsync([ newEvent t0 "a" ], ct)
                let! first = store.ClaimEventsAsync(10, t0, minutes 1.0, ct)
                let! second = store.ClaimEventsAsync(10, t0 + seconds 59.0, minutes 1.0, ct)
                Expect.hasLength first 1 "the event is claimed"
                Expect.isEmpty second "a held event is not handed out again"
            })

        testCaseTask "an event whose claim lapsed is claimable again, under a new token" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = store.AppendAsync([ newEvent t0 "a" ], ct)
                let! first = store.ClaimEventsAsync(10, t0, minutes 1.0, ct)
                let! second = store.ClaimEventsAsync(10, t0 + minutes 1.0, minutes 1.0, ct)
                Expect.hasLength second 1 "the event is claimed again once its claim lapsed"
                Expect.notEqual second[0].Token first[0].Token "the new claim has a new token"
            })

        testCaseTask "a released event is claimable again at once" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = store.AppendAsync([ newEvent t0 "a" ], ct)
                let! first = store.ClaimEventsAsync(10, t0, minutes 1.0, ct)
                do! store.ReleaseEventsAsync(first, ct)
                let! second = store.ClaimEventsAsync(10, t0, minutes 1.0, ct)
                Expect.hasLength second 1 "a released event is handed out again before its claim would have lapsed"
            })

        testCaseTask "releasing a lapsed claim leaves the newer claim alone" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = store.AppendAsync([ newEvent t0 "a" ], ct)
                let! first = store.ClaimEventsAsync(10, t0, minutes 1.0, ct)
                let! second = store.ClaimEventsAsync(10, t0 + minutes 2.0, minutes 1.0, ct)
                do! store.ReleaseEventsAsync(first, ct)
                let! third = store.ClaimEventsAsync(10, t0 + minutes 2.0, minutes 1.0, ct)
                Expect.isEmpty third "the event stays held by the newer claim"

                let! results =
                    store.CommitProcessingAsync([ fanOutOf (t0 + minutes 2.0) second[0] [] ], ct)

                Expect.equal results [ Ok() ] "the newer claim still commits"
            })
    ]

let private commitTests (makeStore: unit -> Task<IEventStore>) =
    [
        testCaseTask "committing creates the requests and marks the event processed" (fun () ->
            task {
                let! store = makeStore ()
                let event = newEvent t0 "order.placed"
                let! _ = store.AppendAsync([ event ], ct)
                let! claims = store.ClaimEventsAsync(1, t0, minutes 1.0, ct)

                let item =
                    fanOutOf (t0 + seconds 1.0) claims[0] [ handler "a" 50 5; handler "b" 10 5 ]

                let! results = store.CommitProcessingAsync([ item ], ct)
                Expect.equal results [ Ok() ] "a held claim commits"
                let! found = store.FindEventAsync(event.Id, ct)

                Expect.equal
                    (found |> Option.bind _.ProcessedAt)
                    (Some(t0 + seconds 1.0))
                    "the event is marked processed at the time given"

                for request in item.Requests do
                    let! stored = store.FindRequestAsync(request.Id, ct)
                    Expect.equal stored (Some request) "each request is stored as given"

                let! stats = store.StatsAsync(t0 + seconds 1.0, ct)
                Expect.equal stats.UnprocessedEvents 0L "a processed event is not counted as unprocessed"
                Expect.equal stats.RunnableRequests 2L "both new requests are runnable"
            })

        testCaseTask "an event with no handlers is marked processed with no requests" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = store.AppendAsync([ newEvent t0 "unhandled" ], ct)
                let! claims = store.ClaimEventsAsync(1, t0, minutes 1.0, ct)
                let! results = store.CommitProcessingAsync([ fanOutOf t0 claims[0] [] ], ct)
                Expect.equal results [ Ok() ] "a fan-out to no handler commits"
                let! requests = store.RequestsAsync ct |> toList
                Expect.isEmpty requests "no request is created"
                let! stats = store.StatsAsync(t0, ct)
                Expect.equal stats.UnprocessedEvents 0L "the event is processed"
            })

        testCaseTask "committing an event twice is refused as AlreadyProcessed, creating nothing" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = store.AppendAsync([ newEvent t0 "a" ], ct)
                let! claims = store.ClaimEventsAsync(1, t0, minutes 1.0, ct)

                let! _ =
                    store.CommitProcessingAsync([ fanOutOf t0 claims[0] [ handler "h" 50 5 ] ], ct)

                let again = fanOutOf t0 claims[0] [ handler "h" 50 5 ]
                let! results = store.CommitProcessingAsync([ again ], ct)
                Expect.equal results [ Error ProcessError.AlreadyProcessed ] "a second commit is refused"
                let! found = store.FindRequestAsync(again.Requests[0].Id, ct)
                Expect.isNone found "a refused commit creates no request"
            })

        testCaseTask "committing an unknown event is refused as EventNotFound" (fun () ->
            task {
                let! store = makeStore ()

                let item =
                    {
                        EventId = Guid.CreateVersion7()
                        Token = Guid.NewGuid()
                        ProcessedAt = t0
                        Requests = []
                    }

                let! results = store.CommitProcessingAsync([ item ], ct)

                Expect.equal
                    results
                    [ Error ProcessError.EventNotFound ]
                    "an event not in the store cannot be committed"
            })

        testCaseTask "a claim that lapsed and was claimed again is refused as StaleClaim, creating nothing" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = store.AppendAsync([ newEvent t0 "a" ], ct)
                let! first = store.ClaimEventsAsync(1, t0, minutes 1.0, ct)
                let! _ = store.ClaimEventsAsync(1, t0 + minutes 2.0, minutes 1.0, ct)
                let stale = fanOutOf (t0 + minutes 2.0) first[0] [ handler "h" 50 5 ]
                let! results = store.CommitProcessingAsync([ stale ], ct)
                Expect.equal results [ Error ProcessError.StaleClaim ] "the old claim's commit is refused"
                let! found = store.FindRequestAsync(stale.Requests[0].Id, ct)
                Expect.isNone found "a refused commit creates no request"
                let! event = store.FindEventAsync(first[0].Event.Id, ct)
                Expect.isNone (event |> Option.bind _.ProcessedAt) "the event stays unprocessed"
            })

        testCaseTask "a claim that lapsed but was not claimed again still commits" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = store.AppendAsync([ newEvent t0 "a" ], ct)
                let! first = store.ClaimEventsAsync(1, t0, minutes 1.0, ct)

                let! results =
                    store.CommitProcessingAsync([ fanOutOf (t0 + minutes 5.0) first[0] [] ], ct)

                Expect.equal results [ Ok() ] "nobody else holds the event, so the late commit is safe"
            })

        testCaseTask "a released claim no longer commits" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = store.AppendAsync([ newEvent t0 "a" ], ct)
                let! first = store.ClaimEventsAsync(1, t0, minutes 1.0, ct)
                do! store.ReleaseEventsAsync(first, ct)
                let! results = store.CommitProcessingAsync([ fanOutOf t0 first[0] [] ], ct)
                Expect.equal results [ Error ProcessError.StaleClaim ] "a claim given back holds nothing"
            })

        testCaseTask "a batch commits item by item, one result per item in order" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = store.AppendAsync([ newEvent t0 "a"; newEvent (t0 + seconds 1.0) "b" ], ct)
                let! claims = store.ClaimEventsAsync(2, t0, minutes 1.0, ct)

                let unknown =
                    {
                        EventId = Guid.CreateVersion7()
                        Token = Guid.NewGuid()
                        ProcessedAt = t0
                        Requests = []
                    }

                let! results =
                    store.CommitProcessingAsync(
                        [
                            fanOutOf t0 claims[0] [ handler "h" 50 5 ]
                            unknown
                            fanOutOf t0 claims[1] [ handler "h" 50 5 ]
                        ],
                        ct
                    )

                Expect.equal
                    results
                    [ Ok(); Error ProcessError.EventNotFound; Ok() ]
                    "a refused item does not stop the others"
            })

        testCaseTask "committing requests signals that requests are ready" (fun () ->
            task {
                let! store = makeStore ()
                let signals = recordSignals store
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                do! expectSignal signals WorkSignal.RequestsReady "committing new requests raises RequestsReady"
            })
    ]

let private requestClaimTests (makeStore: unit -> Task<IEventStore>) =
    [
        testCaseTask "requests are claimed in run order: priority, then event time, then id" (fun () ->
            task {
                let! store = makeStore ()

                let! requests =
                    fanOut
                        store
                        t0
                        [
                            newEvent (t0 + seconds 2.0) "a", [ handler "late-urgent" 1 5; handler "late-normal" 50 5 ]
                            newEvent t0 "b", [ handler "early-normal" 50 5; handler "early-lazy" 90 5 ]
                            newEvent t0 "c", [ handler "tie" 50 5 ]
                        ]

                let! claim = store.ClaimRequestsAsync(4, t0, minutes 1.0, ct)

                let expected =
                    requests
                    |> List.sortBy HandlerRequest.runOrder
                    |> List.truncate 4
                    |> List.map _.Id

                Expect.equal (claim.Claimed |> List.map _.Id) expected "the four first in run order"
                Expect.isEmpty claim.Recovered "nothing had lapsed"

                for claimed in claim.Claimed do
                    Expect.equal
                        (HandlerRequest.lease claimed |> Option.map _.Until)
                        (Some(t0 + minutes 1.0))
                        "each claimed request is running under a lease from now"

                Expect.equal
                    (claim.Claimed |> List.map tokenOf |> List.distinct |> List.length)
                    4
                    "each claim has its own token"

                let! rest = store.ClaimRequestsAsync(10, t0, minutes 1.0, ct)

                Expect.equal
                    (rest.Claimed |> List.map _.Id)
                    [ (List.sortBy HandlerRequest.runOrder requests |> List.last).Id ]
                    "a second claim gets only the request left"
            })

        testCaseTask "a claimed request is stored as it was handed out" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                let! claim = store.ClaimRequestsAsync(1, t0, minutes 1.0, ct)
                let! stored = store.FindRequestAsync(claim.Claimed[0].Id, ct)
                Expect.equal stored (Some claim.Claimed[0]) "the store holds the running request handed out"
            })

        testCaseTask "a claimed request is not claimed again while its lease holds" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                let! first = store.ClaimRequestsAsync(10, t0, minutes 1.0, ct)
                let! second = store.ClaimRequestsAsync(10, t0 + seconds 59.0, minutes 1.0, ct)
                Expect.hasLength first.Claimed 1 "the request is claimed"
                Expect.isEmpty second.Claimed "a running request is not handed out again"
                Expect.isEmpty second.Recovered "a lease that holds is not recovered"
            })

        testCaseTask "a request waiting out a backoff is claimed only once the backoff ends" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                let! written = failAll store t0 1

                let until =
                    HandlerRequest.backoffUntil written[0]
                    |> Option.defaultWith (fun () -> failtest "a failed request below MaxErrors backs off")

                let! early = store.ClaimRequestsAsync(10, until - seconds 1.0, minutes 1.0, ct)
                Expect.isEmpty early.Claimed "a request is not claimed before its backoff ends"
                let! due = store.ClaimRequestsAsync(10, until, minutes 1.0, ct)
                Expect.hasLength due.Claimed 1 "a request is claimed once its backoff ends"
            })

        testCaseTask "a lapsed lease is recovered as a failed attempt, and the request is claimable at once" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                let! first = store.ClaimRequestsAsync(10, t0, minutes 1.0, ct)
                let later = t0 + minutes 2.0
                let! second = store.ClaimRequestsAsync(10, later, minutes 1.0, ct)

                Expect.equal
                    second.Recovered
                    [ decide (RequestCommand.ExpireLease later) first.Claimed[0] ]
                    "the lapsed lease is recorded by the core's ExpireLease"

                Expect.equal second.Recovered[0].Errors 1 "the lapsed attempt counts as one error"

                Expect.equal
                    (second.Claimed |> List.map _.Id)
                    [ first.Claimed[0].Id ]
                    "the recovered request is claimed again in the same call"

                Expect.notEqual
                    (tokenOf second.Claimed[0])
                    (tokenOf first.Claimed[0])
                    "the new attempt has a new token"
            })

        testCaseTask "a lapsed lease on the last allowed attempt makes the request dead" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 1 ] ]
                let! _ = store.ClaimRequestsAsync(10, t0, minutes 1.0, ct)
                let! second = store.ClaimRequestsAsync(10, t0 + minutes 2.0, minutes 1.0, ct)
                Expect.hasLength second.Recovered 1 "the lapsed lease is recovered"
                Expect.isTrue (HandlerRequest.isDead second.Recovered[0]) "at MaxErrors the recovered request is dead"
                Expect.isEmpty second.Claimed "a dead request is not claimed"
                let! stats = store.StatsAsync(t0 + minutes 2.0, ct)
                Expect.equal stats.DeadRequests 1L "the dead request is counted"
            })

        testCaseTask "a claim with a limit of zero claims nothing" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                let! claim = store.ClaimRequestsAsync(0, t0, minutes 1.0, ct)
                Expect.isEmpty claim.Claimed "a zero limit claims nothing"
            })
    ]

let private outcomeTests (makeStore: unit -> Task<IEventStore>) =
    [
        testCaseTask "an outcome carrying the current token is written" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5; handler "i" 50 5 ] ]
                let! claim = store.ClaimRequestsAsync(2, t0, minutes 1.0, ct)
                let success = succeeded (t0 + seconds 1.0) claim.Claimed[0]
                let failure = failed (t0 + seconds 1.0) claim.Claimed[1]
                let! results = store.RecordOutcomesAsync([ success; failure ], ct)
                Expect.equal results [ Ok(); Ok() ] "both outcomes are recorded"
                let! completed = store.FindRequestAsync(success.Request.Id, ct)
                Expect.equal completed (Some success.Request) "the success is stored as given"
                let! backingOff = store.FindRequestAsync(failure.Request.Id, ct)
                Expect.equal backingOff (Some failure.Request) "the failure is stored as given"
            })

        testCaseTask "an outcome carrying a stale token is refused as StaleToken and changes nothing" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                let! first = store.ClaimRequestsAsync(1, t0, minutes 1.0, ct)
                let! second = store.ClaimRequestsAsync(1, t0 + minutes 2.0, minutes 1.0, ct)

                let! results =
                    store.RecordOutcomesAsync([ succeeded (t0 + minutes 2.0) first.Claimed[0] ], ct)

                Expect.equal results [ Error RequestError.StaleToken ] "the lapsed attempt's outcome is refused"
                let! stored = store.FindRequestAsync(first.Claimed[0].Id, ct)
                Expect.equal stored (Some second.Claimed[0]) "the request stays with the newer attempt"
            })

        testCaseTask "an outcome for a request no longer running is refused as the core would" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                let! claim = store.ClaimRequestsAsync(1, t0, minutes 1.0, ct)
                let success = succeeded t0 claim.Claimed[0]
                let! _ = store.RecordOutcomesAsync([ success ], ct)
                let! again = store.RecordOutcomesAsync([ success ], ct)
                Expect.equal again [ Error RequestError.AlreadyCompleted ] "a completed request takes no other outcome"
            })

        testCaseTask "an outcome after the lease was recovered is refused as NotRunning" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                let! first = store.ClaimRequestsAsync(1, t0, minutes 1.0, ct)
                // Recovered (errors 1, runnable) but not claimed again: the limit is zero.
                let! _ = store.ClaimRequestsAsync(0, t0 + minutes 2.0, minutes 1.0, ct)

                let! results =
                    store.RecordOutcomesAsync([ succeeded (t0 + minutes 2.0) first.Claimed[0] ], ct)

                Expect.equal results [ Error RequestError.NotRunning ] "a recovered request is no longer running"
            })
    ]

/// The request with a running lease until `until` (what a renewal writes).
let private renewedTo (until: DateTimeOffset) (claimed: HandlerRequest) =
    decide (RequestCommand.Renew(tokenOf claimed, until)) claimed

let private renewTests (makeStore: unit -> Task<IEventStore>) =
    [
        testCaseTask
            "a renewal extends the lease: a claim after the old end but before the new one recovers nothing"
            (fun () ->
                task {
                    let! store = makeStore ()
                    let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                    let! first = store.ClaimRequestsAsync(1, t0, minutes 1.0, ct)
                    let claimed = first.Claimed[0]
                    let until = t0 + minutes 3.0

                    let! results = store.RenewLeasesAsync([ claimed.Id, tokenOf claimed ], until, ct)
                    Expect.equal results [ Ok() ] "the attempt holding the claim renews it"
                    let! stored = store.FindRequestAsync(claimed.Id, ct)

                    Expect.equal
                        stored
                        (Some(renewedTo until claimed))
                        "the stored lease runs until the new end, token kept"

                    let! during = store.ClaimRequestsAsync(10, t0 + minutes 2.0, minutes 1.0, ct)
                    Expect.isEmpty during.Recovered "a lease renewed past the claim's time is not recovered"
                    Expect.isEmpty during.Claimed "nor handed out again"

                    let! after = store.ClaimRequestsAsync(0, until, minutes 1.0, ct)

                    Expect.equal
                        after.Recovered
                        [ decide (RequestCommand.ExpireLease until) (renewedTo until claimed) ]
                        "once the new end passes, the lease lapses as any other"
                })

        testCaseTask "a renewal to an end not later than the lease's changes nothing" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                let! claim = store.ClaimRequestsAsync(1, t0, minutes 1.0, ct)
                let claimed = claim.Claimed[0]

                let! results =
                    store.RenewLeasesAsync([ claimed.Id, tokenOf claimed ], t0 + seconds 30.0, ct)

                Expect.equal results [ Ok() ] "the attempt still holds its claim"
                let! stored = store.FindRequestAsync(claimed.Id, ct)
                Expect.equal stored (Some claimed) "a lease never shortens"
            })

        testCaseTask "a renewal carrying a stale token is refused as StaleToken and changes nothing" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                let! first = store.ClaimRequestsAsync(1, t0, minutes 1.0, ct)
                let! second = store.ClaimRequestsAsync(1, t0 + minutes 2.0, minutes 1.0, ct)
                Expect.hasLength second.Claimed 1 "the lapsed request was recovered and claimed again"

                let! results =
                    store.RenewLeasesAsync([ first.Claimed[0].Id, tokenOf first.Claimed[0] ], t0 + minutes 10.0, ct)

                Expect.equal results [ Error RequestError.StaleToken ] "the lapsed attempt lost its claim"
                let! stored = store.FindRequestAsync(first.Claimed[0].Id, ct)
                Expect.equal stored (Some second.Claimed[0]) "the newer attempt's lease is left as it was"
            })

        testCaseTask "a renewal of a request not running is refused as the core would" (fun () ->
            task {
                let! store = makeStore ()

                let! requests =
                    fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5; handler "i" 50 5 ] ]

                let! claim = store.ClaimRequestsAsync(1, t0, minutes 1.0, ct)
                let claimed = claim.Claimed[0]
                let waiting = requests |> List.find (fun request -> request.Id <> claimed.Id)
                let! _ = store.RecordOutcomesAsync([ succeeded t0 claimed ], ct)
                let later = t0 + minutes 10.0

                let! results =
                    store.RenewLeasesAsync(
                        [
                            claimed.Id, tokenOf claimed
                            waiting.Id, Guid.NewGuid()
                            Guid.NewGuid(), Guid.NewGuid()
                        ],
                        later,
                        ct
                    )

                Expect.equal
                    results
                    [
                        Error RequestError.AlreadyCompleted
                        Error RequestError.NotRunning
                        Error RequestError.NotRunning
                    ]
                    "a completed request holds no lease, a runnable one holds none either, an unknown one is not running"

                let! stored = store.FindRequestAsync(waiting.Id, ct)
                Expect.equal stored (Some waiting) "the runnable request is left as it was"
            })

        testCaseTask "a batch renews item by item, one result per item in order" (fun () ->
            task {
                let! store = makeStore ()

                let! _ =
                    fanOut
                        store
                        t0
                        [
                            newEvent t0 "a", [ handler "h" 10 5; handler "i" 20 5; handler "j" 30 5; handler "k" 40 5 ]
                        ]

                let! claim = store.ClaimRequestsAsync(4, t0, minutes 1.0, ct)
                let held = claim.Claimed

                // The second is recovered (its lease lapses first) and claimed again: its first token is stale.
                let! renewed =
                    store.RenewLeasesAsync([ held[0].Id, tokenOf held[0] ], t0 + minutes 5.0, ct)

                Expect.equal renewed [ Ok() ] "the first is renewed ahead"
                let! completed = store.RecordOutcomesAsync([ succeeded t0 held[2] ], ct)
                Expect.equal completed [ Ok() ] "the third completes"

                let! _ =
                    store.RenewLeasesAsync([ held[3].Id, tokenOf held[3] ], t0 + minutes 5.0, ct)

                let! again = store.ClaimRequestsAsync(1, t0 + minutes 2.0, minutes 1.0, ct)
                Expect.equal (again.Claimed |> List.map _.Id) [ held[1].Id ] "the second is claimed again"
                let until = t0 + minutes 6.0

                let! results =
                    store.RenewLeasesAsync(
                        [
                            held[3].Id, tokenOf held[3]
                            held[1].Id, tokenOf held[1]
                            Guid.NewGuid(), Guid.NewGuid()
                            held[2].Id, tokenOf held[2]
                            held[0].Id, tokenOf held[0]
                            held[3].Id, tokenOf held[3]
                            again.Claimed[0].Id, tokenOf again.Claimed[0]
                        ],
                        until,
                        ct
                    )

                Expect.equal
                    results
                    [
                        Ok()
                        Error RequestError.StaleToken
                        Error RequestError.NotRunning
                        Error RequestError.AlreadyCompleted
                        Ok()
                        Ok()
                        Ok()
                    ]
                    "each item is answered in its place; one named twice is renewed (once) and answered twice"

                let! empty = store.RenewLeasesAsync([], until, ct)
                Expect.isEmpty empty "an empty batch renews nothing"

                for expected in
                    [
                        renewedTo until held[0]
                        renewedTo until held[3]
                        renewedTo until again.Claimed[0]
                    ] do
                    let! stored = store.FindRequestAsync(expected.Id, ct)
                    Expect.equal stored (Some expected) "each current attempt's lease runs until the batch's end"
            })
    ]

let private queryTests (makeStore: unit -> Task<IEventStore>) =
    [
        testCaseTask "an empty store has zero gauges" (fun () ->
            task {
                let! store = makeStore ()
                let! stats = store.StatsAsync(t0, ct)

                Expect.equal
                    stats
                    {
                        UnprocessedEvents = 0L
                        OldestUnprocessedEvent = None
                        RunnableRequests = 0L
                        OldestRunnableRequest = None
                        DeadRequests = 0L
                    }
                    "an empty store counts nothing"
            })

        testCaseTask
            "the gauges count unprocessed events, runnable and dead requests, and the oldest of each"
            (fun () ->
                task {
                    let! store = makeStore ()

                    let! _ =
                        fanOut
                            store
                            t0
                            [
                                newEvent (t0 + seconds 5.0) "a", [ handler "dies" 1 1 ]
                                newEvent (t0 + seconds 7.0) "b", [ handler "waits" 50 5 ]
                                newEvent (t0 + seconds 9.0) "c", [ handler "backs-off" 2 5 ]
                            ]

                    // The two urgent ones fail: one dies, one backs off.
                    let! claim = store.ClaimRequestsAsync(2, t0, minutes 1.0, ct)
                    let! _ = store.RecordOutcomesAsync(claim.Claimed |> List.map (failed t0), ct)
                    let held = claim.Claimed |> List.map _.Id
                    Expect.hasLength held 2 "the two most urgent requests are claimed"

                    let! _ =
                        store.AppendAsync([ newEvent (t0 + seconds 1.0) "x"; newEvent (t0 + seconds 3.0) "y" ], ct)

                    let! stats = store.StatsAsync(t0 + seconds 1.0, ct)

                    Expect.equal
                        stats
                        {
                            UnprocessedEvents = 2L
                            OldestUnprocessedEvent = Some(t0 + seconds 1.0)
                            RunnableRequests = 1L
                            OldestRunnableRequest = Some(t0 + seconds 7.0)
                            DeadRequests = 1L
                        }
                        "the gauges at a time when the backoff has not ended"

                    let! later = store.StatsAsync(t0 + minutes 5.0, ct)
                    Expect.equal later.RunnableRequests 2L "once the backoff ends the request is runnable again"

                    Expect.equal
                        later.OldestRunnableRequest
                        (Some(t0 + seconds 7.0))
                        "the oldest runnable goes by event time"
                })

        testCaseTask "claimed events still count as unprocessed" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = store.AppendAsync([ newEvent t0 "a"; newEvent (t0 + seconds 1.0) "b" ], ct)
                let! _ = store.ClaimEventsAsync(1, t0, minutes 1.0, ct)
                let! stats = store.StatsAsync(t0, ct)
                Expect.equal stats.UnprocessedEvents 2L "a claimed event is still unprocessed"
                Expect.equal stats.OldestUnprocessedEvent (Some t0) "the claimed event is still the oldest"
            })

        testCaseTask "requests are listed by event time then id" (fun () ->
            task {
                let! store = makeStore ()

                let! requests =
                    fanOut
                        store
                        t0
                        [
                            newEvent (t0 + seconds 2.0) "a", [ handler "h" 1 5 ]
                            newEvent t0 "b", [ handler "h" 90 5; handler "i" 10 5 ]
                        ]

                let! listed = store.RequestsAsync ct |> toList

                Expect.equal
                    (listed |> List.map _.Id)
                    (requests
                     |> List.sortBy (fun request -> request.EventTimestamp, request.Id)
                     |> List.map _.Id)
                    "RequestsAsync lists every request by event time then id"
            })

        testCaseTask
            "dead requests are listed by event time then id, filtered and paged, with the total of all matches"
            (fun () ->
                task {
                    let! store = makeStore ()

                    let! requests =
                        fanOut
                            store
                            t0
                            [
                                newEvent (t0 + seconds 3.0) "x", [ handler "h" 50 1; handler "i" 50 1 ]
                                newEvent (t0 + seconds 1.0) "y", [ handler "h" 50 1 ]
                                newEvent (t0 + seconds 2.0) "x", [ handler "i" 50 1; handler "h" 50 1 ]
                            ]

                    let! dead = failAll store t0 1
                    Expect.isTrue (List.forall HandlerRequest.isDead dead) "every request failed its only attempt"
                    Expect.hasLength dead requests.Length "every request is dead"

                    let ordered =
                        dead |> List.sortBy (fun request -> request.EventTimestamp, request.Id)

                    let! all = (TestSupport.adminOf store).DeadRequestsAsync(DeadRequestQuery.all, ct)
                    Expect.equal all.Requests ordered "every dead request, by event time then id"
                    Expect.equal all.Total 5L "the total counts every dead request"
                    let! page = (TestSupport.adminOf store).DeadRequestsAsync(deadQuery [] [] 2 1, ct)
                    Expect.equal page.Requests (ordered |> List.skip 1 |> List.truncate 2) "the page skips and takes"
                    Expect.equal page.Total 5L "the total counts every match, not the page"

                    let query = deadQuery [ EventName.Create "x" ] [ HandlerName.Create "h" ] 1 1

                    let matching = ordered |> List.filter (DeadRequestQuery.matches query)
                    let! filtered = (TestSupport.adminOf store).DeadRequestsAsync(query, ct)

                    Expect.equal
                        filtered.Requests
                        (matching |> List.skip 1 |> List.truncate 1)
                        "the filter keeps requests of those events and handlers"

                    Expect.equal filtered.Total 2L "the total counts every match of the filter"

                    let! beyond =
                        (TestSupport.adminOf store).DeadRequestsAsync(deadQuery [] [] 10 10, ct)

                    Expect.isEmpty beyond.Requests "a page past the end is empty"
                    Expect.equal beyond.Total 5L "a page past the end still has the total"
                })

        testCaseTask "a negative limit or offset is refused" (fun () ->
            task {
                let! store = makeStore ()

                let! negativeLimit =
                    argumentErrorOf (fun () -> (TestSupport.adminOf store).DeadRequestsAsync(deadQuery [] [] -1 0, ct))

                Expect.isSome negativeLimit "a negative limit is refused with an ArgumentException"

                let! negativeOffset =
                    argumentErrorOf (fun () -> (TestSupport.adminOf store).DeadRequestsAsync(deadQuery [] [] 1 -1, ct))

                Expect.isSome negativeOffset "a negative offset is refused with an ArgumentException"
            })

        testCaseTask "the names of dead requests are distinct and sorted" (fun () ->
            task {
                let! store = makeStore ()

                let! _ =
                    fanOut
                        store
                        t0
                        [
                            newEvent t0 "zeta", [ handler "b" 50 1; handler "a" 50 1 ]
                            newEvent t0 "alpha", [ handler "b" 50 1; handler "alive" 50 5 ]
                        ]

                let! _ = failAll store t0 1
                let! eventNames, handlerNames = (TestSupport.adminOf store).DeadRequestNamesAsync ct

                Expect.equal
                    eventNames
                    [ EventName.Create "alpha"; EventName.Create "zeta" ]
                    "each event name with a dead request, once, sorted"

                Expect.equal
                    handlerNames
                    [ HandlerName.Create "a"; HandlerName.Create "b" ]
                    "each handler name with a dead request, once, sorted; not those of live requests"
            })
    ]

let private updateTests (makeStore: unit -> Task<IEventStore>) =
    [
        testCaseTask "re-executing a dead request makes it runnable from zero errors, and signals it" (fun () ->
            task {
                let! store = makeStore ()
                let signals = recordSignals store
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 1 ] ]
                let! dead = failAll store t0 1
                signals.Clear()

                let! result =
                    (TestSupport.adminOf store)
                        .UpdateRequestAsync(dead[0].Id, HandlerRequest.transition policy RequestCommand.ReExecute, ct)

                let expected = decide RequestCommand.ReExecute dead[0]
                Expect.equal result (Ok expected) "the request as the core's ReExecute wrote it"
                let! stored = store.FindRequestAsync(dead[0].Id, ct)
                Expect.equal stored (Some expected) "the store holds the re-executed request"
                let! stats = store.StatsAsync(t0 + minutes 2.0, ct)
                Expect.equal (stats.DeadRequests, stats.RunnableRequests) (0L, 1L) "it moved from dead to runnable"
                do! expectSignal signals WorkSignal.RequestsReady "re-executing raises RequestsReady"
                let! claim = store.ClaimRequestsAsync(1, t0 + minutes 2.0, minutes 1.0, ct)
                Expect.hasLength claim.Claimed 1 "a re-executed request is claimed again"
            })

        testCaseTask "a canceled request is never claimed" (fun () ->
            task {
                let! store = makeStore ()
                let! requests = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]

                let! result =
                    (TestSupport.adminOf store)
                        .UpdateRequestAsync(
                            requests[0].Id,
                            HandlerRequest.transition policy (RequestCommand.Cancel t0),
                            ct
                        )

                Expect.equal
                    (result |> Result.map HandlerRequest.canceledAt)
                    (Ok(Some t0))
                    "the request is canceled at the time given"

                let! claim = store.ClaimRequestsAsync(10, t0 + minutes 1.0, minutes 1.0, ct)
                Expect.isEmpty claim.Claimed "a canceled request is not handed out"
                let! stats = store.StatsAsync(t0, ct)
                Expect.equal stats.RunnableRequests 0L "a canceled request is not runnable"
            })

        testCaseTask "a transition the core refuses changes nothing" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                let! claim = store.ClaimRequestsAsync(1, t0, minutes 1.0, ct)

                let! result =
                    (TestSupport.adminOf store)
                        .UpdateRequestAsync(
                            claim.Claimed[0].Id,
                            HandlerRequest.transition policy (RequestCommand.Cancel t0),
                            ct
                        )

                Expect.equal
                    result
                    (Error(AdminError.Refused(RequestError.AlreadyClaimed(t0 + minutes 1.0))))
                    "a running request cannot be canceled"

                let! stored = store.FindRequestAsync(claim.Claimed[0].Id, ct)
                Expect.equal stored (Some claim.Claimed[0]) "the refused change wrote nothing"
            })

        testCaseTask "updating an unknown request is refused as RequestNotFound" (fun () ->
            task {
                let! store = makeStore ()
                let id = Guid.CreateVersion7()

                let! result =
                    (TestSupport.adminOf store)
                        .UpdateRequestAsync(id, HandlerRequest.transition policy RequestCommand.ReExecute, ct)

                Expect.equal result (Error(AdminError.RequestNotFound id)) "no request has this id"
            })
    ]

let private concurrencyTests (config: ContractConfig) (makeStore: unit -> Task<IEventStore>) =
    [
        testCaseTask
            "workers claiming and recording at once never share a request, and lose or repeat nothing"
            (fun () ->
                task {
                    let! store = makeStore ()
                    let handlers = [ for index in 1..10 -> handler $"h%d{index}" (index % 3) 3 ]
                    let eventCount = config.ConcurrentRequests / handlers.Length

                    let! requests =
                        fanOut
                            store
                            t0
                            [
                                for index in 1..eventCount -> newEvent (t0 + seconds (float index)) "load", handlers
                            ]

                    let total = requests.Length
                    // A shared fake clock: a millisecond per reading, so backoffs (1 to 4 ms) pass quickly and
                    // workers' times interleave out of order, as real clocks read by several threads do.
                    let clock = ref 0L

                    let now () =
                        t0 + TimeSpan.FromMilliseconds(float (Interlocked.Increment &clock.contents))

                    let fastPolicy =
                        BackoffPolicy.Exponential
                            {
                                Base = TimeSpan.FromMilliseconds 1.0
                                Cap = TimeSpan.FromMilliseconds 4.0
                            }

                    let held = ConcurrentDictionary<Guid, Guid>()
                    let problems = ConcurrentQueue<string>()
                    let successes = ConcurrentDictionary<Guid, int>()
                    let settled = ref 0
                    let attempts = ref 0

                    let worker (seed: int) =
                        task {
                            let random = Random seed
                            let deadline = DateTime.UtcNow.AddSeconds 60.0

                            while Volatile.Read &settled.contents < total && DateTime.UtcNow < deadline do
                                let! claim = store.ClaimRequestsAsync(5, now (), TimeSpan.FromHours 1.0, ct)

                                if List.isEmpty claim.Claimed then
                                    do! Task.Delay 1

                                for request in claim.Claimed do
                                    Interlocked.Increment &attempts.contents |> ignore

                                    if not (held.TryAdd(request.Id, tokenOf request)) then
                                        problems.Enqueue $"request %O{request.Id} was handed to two workers at once"

                                let outcomes =
                                    claim.Claimed
                                    |> List.map (fun request ->
                                        let token = tokenOf request

                                        let command =
                                            if random.NextDouble() < 0.6 then
                                                RequestCommand.Succeed(token, now ())
                                            else
                                                RequestCommand.Fail(token, now (), "boom", random.NextDouble())

                                        match HandlerRequest.transition fastPolicy command request with
                                        | Ok next ->
                                            {
                                                Request = next
                                                Token = token
                                                Transaction = None
                                            }
                                        | Error error ->
                                            failtestf "a worker's own claim refused its outcome: %s" error.Message)

                                for request in claim.Claimed do
                                    held.TryRemove(KeyValuePair(request.Id, tokenOf request)) |> ignore

                                let! results = store.RecordOutcomesAsync(outcomes, ct)

                                for (outcome, result) in List.zip outcomes results do
                                    match result, outcome.Request.State with
                                    | Ok(), RequestState.Completed _ ->
                                        successes.AddOrUpdate(outcome.Request.Id, 1, (fun _ count -> count + 1))
                                        |> ignore

                                        Interlocked.Increment &settled.contents |> ignore
                                    | Ok(), RequestState.Dead -> Interlocked.Increment &settled.contents |> ignore
                                    | Ok(), RequestState.Runnable _ -> ()
                                    | Ok(), (RequestState.Running _ | RequestState.Canceled _) ->
                                        problems.Enqueue
                                            $"a worker wrote an unexpected state %A{outcome.Request.State}"
                                    | Error error, _ ->
                                        problems.Enqueue
                                            $"an outcome under a lease that holds was refused: %s{error.Message}"
                        }

                    do! Task.WhenAll [| for seed in 1 .. config.Workers -> Task.Run(fun () -> worker seed :> Task) |]
                    Expect.isEmpty problems "no request is held twice and no current outcome is refused"
                    Expect.equal settled.Value total "every request completed or died"
                    let! stored = store.RequestsAsync ct |> toList

                    Expect.equal
                        (stored |> List.map _.Id |> List.sort)
                        (requests |> List.map _.Id |> List.sort)
                        "every request is still there, once"

                    let completed = stored |> List.filter (HandlerRequest.completedAt >> Option.isSome)
                    let dead = stored |> List.filter HandlerRequest.isDead

                    Expect.equal
                        (completed.Length + dead.Length)
                        total
                        "every request ended completed or dead, none left running or runnable"

                    Expect.equal successes.Count completed.Length "each completed request took one recorded success"

                    Expect.isTrue (successes.Values |> Seq.forall ((=) 1)) "no request was completed twice"

                    Expect.isGreaterThan attempts.Value total "some requests failed and were retried"
                    let! stats = store.StatsAsync(now (), ct)
                    Expect.equal stats.RunnableRequests 0L "nothing is left to run"
                    Expect.equal stats.DeadRequests (int64 dead.Length) "the dead gauge agrees with the requests"
                })

        testCaseTask "processors claiming, releasing and committing at once fan each event out exactly once" (fun () ->
            task {
                let! store = makeStore ()

                let events =
                    [
                        for index in 1 .. config.ConcurrentEvents ->
                            newEvent (t0 + seconds (float (index % 97))) "load"
                    ]

                let! _ = store.AppendAsync(events, ct)
                let held = ConcurrentDictionary<Guid, Guid>()
                let problems = ConcurrentQueue<string>()
                let committed = ref 0

                let processor (seed: int) =
                    task {
                        let random = Random seed
                        let deadline = DateTime.UtcNow.AddSeconds 60.0

                        while Volatile.Read &committed.contents < events.Length && DateTime.UtcNow < deadline do
                            let! claims = store.ClaimEventsAsync(20, t0, TimeSpan.FromHours 1.0, ct)

                            if List.isEmpty claims then
                                do! Task.Delay 1

                            for claim in claims do
                                if not (held.TryAdd(claim.Event.Id, claim.Token)) then
                                    problems.Enqueue $"event %O{claim.Event.Id} was handed to two processors at once"

                            let released, kept = claims |> List.partition (fun _ -> random.NextDouble() < 0.1)

                            for claim in claims do
                                held.TryRemove(KeyValuePair(claim.Event.Id, claim.Token)) |> ignore

                            do! store.ReleaseEventsAsync(released, ct)

                            let! results =
                                store.CommitProcessingAsync(
                                    kept |> List.map (fun claim -> fanOutOf t0 claim [ handler "h" 50 5 ]),
                                    ct
                                )

                            for result in results do
                                match result with
                                | Ok() -> Interlocked.Increment &committed.contents |> ignore
                                | Error error ->
                                    problems.Enqueue
                                        $"a commit under a claim that holds was refused: %s{error.Message}"
                    }

                do!
                    Task.WhenAll
                        [|
                            for seed in 1 .. config.Workers -> Task.Run(fun () -> processor seed :> Task)
                        |]

                Expect.isEmpty problems "no event is held twice and no current commit is refused"
                Expect.equal committed.Value events.Length "every event was committed once"
                let! requests = store.RequestsAsync ct |> toList

                Expect.equal
                    (requests |> List.map _.EventId |> List.sort)
                    (events |> List.map _.Id |> List.sort)
                    "each event has exactly one request"

                let! stats = store.StatsAsync(t0, ct)
                Expect.equal stats.UnprocessedEvents 0L "no event is left unprocessed"
            })
    ]

/// A step of the model-based property; picks are indexes into what exists, taken modulo its size.
type ModelOp =
    /// Appends events (seconds before now, name index).
    | Append of events: (int * int) list
    /// Claims events.
    | ClaimEvents of limit: int * leaseSeconds: int
    /// Commits a claim handed out (current or stale) with requests for (handler, priority, max errors).
    | Commit of pick: int * handlers: (int * int * int) list
    /// Commits an event the store never had.
    | CommitUnknown
    /// Claims events and commits each claim with requests for (handler, priority, max errors).
    | Process of limit: int * handlers: (int * int * int) list
    /// Gives a claim back.
    | Release of pick: int
    /// Claims requests.
    | ClaimRequests of limit: int * leaseSeconds: int
    /// Records an outcome of an attempt handed out (current or stale): success, or failure with a sample.
    | Outcome of pick: int * succeed: bool * sample: int
    /// Renews, in one batch, the leases of attempts handed out (current or stale) for a lease from now.
    | Renew of picks: int list * leaseSeconds: int
    /// Moves the clock on.
    | Advance of seconds: int
    /// Re-executes a request by id.
    | ReExecute of pick: int
    /// Cancels a request by id.
    | Cancel of pick: int
    /// Updates a request the store never had.
    | UpdateUnknown
    /// Reads a page of dead requests (event name indexes, handler name indexes, limit, offset).
    | DeadPage of eventNames: int list * handlerNames: int list * limit: int * offset: int

/// The model: the pure core's requests in a map, and events in a map with their claims.
type private Model =
    {
        Now: DateTimeOffset
        Events: Map<Guid, Event>
        /// The claim holding each unprocessed event (token, end), lapsed or not, until replaced or released.
        EventClaims: Map<Guid, Guid * DateTimeOffset>
        /// Every event claim handed out, newest first.
        IssuedClaims: ClaimedEvent list
        Requests: Map<Guid, HandlerRequest>
        /// Every request claim handed out (the worker's copy), newest first.
        Attempts: HandlerRequest list
    }

let private eventNames =
    [| "alpha"; "beta"; "gamma" |] |> Array.map EventName.Create

let private handlerNames = [| "h1"; "h2"; "h3" |] |> Array.map HandlerName.Create

let private genPick = Gen.frequency [ 3, Gen.choose (0, 2); 1, Gen.choose (0, 100) ]

let private genOp: Gen<ModelOp> =
    let genHandler =
        Gen.zip3 (Gen.choose (0, 2)) (Gen.choose (0, 2)) (Gen.choose (1, 4))

    let genHandlers =
        Gen.frequency
            [
                1, Gen.constant []
                4, Gen.choose (1, 3) |> Gen.bind (fun count -> Gen.listOfLength count genHandler)
            ]

    let genNames = Gen.listOf (Gen.choose (0, 2)) |> Gen.resize 2

    Gen.frequency
        [
            3,
            Gen.choose (1, 3)
            |> Gen.bind (fun count -> Gen.listOfLength count (Gen.zip (Gen.choose (0, 5)) (Gen.choose (0, 2))))
            |> Gen.map Append
            1, Gen.zip (Gen.choose (1, 4)) (Gen.choose (5, 60)) |> Gen.map ClaimEvents
            2, Gen.zip genPick genHandlers |> Gen.map Commit
            2, Gen.zip (Gen.choose (1, 4)) genHandlers |> Gen.map Process
            1, Gen.constant CommitUnknown
            1, genPick |> Gen.map Release
            4, Gen.zip (Gen.choose (1, 5)) (Gen.choose (5, 60)) |> Gen.map ClaimRequests
            3,
            Gen.zip3 genPick (Gen.elements [ true; false ]) (Gen.choose (0, 99))
            |> Gen.map Outcome
            2,
            Gen.zip (Gen.choose (0, 3) |> Gen.bind (fun count -> Gen.listOfLength count genPick)) (Gen.choose (5, 60))
            |> Gen.map Renew
            3, Gen.choose (1, 90) |> Gen.map Advance
            1, Gen.choose (0, 100) |> Gen.map ReExecute
            1, Gen.choose (0, 100) |> Gen.map Cancel
            1, Gen.constant UpdateUnknown
            1,
            Gen.zip (Gen.zip genNames genNames) (Gen.zip (Gen.choose (0, 4)) (Gen.choose (0, 3)))
            |> Gen.map (fun ((events, handlers), (limit, offset)) -> DeadPage(events, handlers, limit, offset))
        ]

/// Lists of steps, shrunk by dropping steps.
let modelOps: Arbitrary<ModelOp list> =
    let shrink (ops: ModelOp list) =
        seq { for index in 0 .. ops.Length - 1 -> List.removeAt index ops }

    // Most cases start with events fanned out to requests, and have twenty steps at least even when
    // small: a lapse, a re-claim and a stale outcome take several steps after that.
    let genPrelude =
        Gen.frequency
            [
                1, Gen.constant []
                3, Gen.constant [ Append [ 0, 0; 1, 1; 2, 2; 1, 0 ]; Process(4, [ 0, 1, 2; 1, 0, 3 ]) ]
            ]

    let genOps =
        Gen.sized (fun size ->
            Gen.zip
                genPrelude
                (Gen.choose (20, 20 + size)
                 |> Gen.bind (fun length -> Gen.listOfLength length genOp))
            |> Gen.map (fun (prelude, ops) -> prelude @ ops))

    Arb.fromGenShrink (genOps, shrink)

let private tryMin (items: 'item list) =
    if List.isEmpty items then None else Some(List.min items)

let private wait (task: Task<'result>) = task.GetAwaiter().GetResult()

let private pick (index: int) (items: 'item list) = items[index % items.Length]

let private modelDeadPage (model: Model) (query: DeadRequestQuery) =
    let matching =
        model.Requests.Values
        |> Seq.filter (DeadRequestQuery.matches query)
        |> Seq.sortBy (fun request -> request.EventTimestamp, request.Id)
        |> List.ofSeq

    {
        Total = int64 matching.Length
        Requests =
            matching
            |> List.skip (min query.Offset matching.Length)
            |> List.truncate query.Limit
    }

/// Compares everything the store answers with the model.
let private check (store: IEventStore) (model: Model) (context: string) =
    let now = model.Now
    let requests = List.ofSeq model.Requests.Values

    let unprocessed =
        model.Events.Values |> Seq.filter (Event.isProcessed >> not) |> List.ofSeq

    let runnable = requests |> List.filter (HandlerRequest.isRunnable now)
    let stats = wait (store.StatsAsync(now, ct))

    let expected =
        {
            UnprocessedEvents = int64 unprocessed.Length
            OldestUnprocessedEvent = unprocessed |> List.map _.Timestamp |> tryMin
            RunnableRequests = int64 runnable.Length
            OldestRunnableRequest = runnable |> List.map _.EventTimestamp |> tryMin
            DeadRequests = requests |> List.filter HandlerRequest.isDead |> List.length |> int64
        }

    Expect.equal stats expected $"%s{context}: the gauges agree with the core's predicates on the model"

    for request in requests do
        Expect.equal
            (wait (store.FindRequestAsync(request.Id, ct)))
            (Some request)
            $"%s{context}: request %O{request.Id} is stored as the model holds it"

    for event in model.Events.Values do
        Expect.equal
            (wait (store.FindEventAsync(event.Id, ct)))
            (Some event)
            $"%s{context}: event %O{event.Id} is stored as the model holds it"

    let all =
        { DeadRequestQuery.all with
            Limit = 1000
        }

    Expect.equal
        (wait ((TestSupport.adminOf store).DeadRequestsAsync(all, ct)))
        (modelDeadPage model all)
        $"%s{context}: the dead requests agree with the model"

    let deadRequests = requests |> List.filter HandlerRequest.isDead

    Expect.equal
        (wait ((TestSupport.adminOf store).DeadRequestNamesAsync ct))
        (deadRequests |> List.map _.EventName |> List.distinct |> List.sort,
         deadRequests |> List.map _.HandlerName |> List.distinct |> List.sort)
        $"%s{context}: the dead requests' names agree with the model"

    Expect.equal
        (wait (store.RequestsAsync ct |> toList) |> List.map _.Id)
        (requests
         |> List.sortBy (fun request -> request.EventTimestamp, request.Id)
         |> List.map _.Id)
        $"%s{context}: every request is listed by event time then id"

/// Applies a command to a request by id, in the store and in the model.
let private updateById (store: IEventStore) (model: Model) (context: string) (index: int) (command: RequestCommand) =
    if model.Requests.IsEmpty then
        model
    else
        let request = model.Requests.Values |> List.ofSeq |> pick index
        let expected = HandlerRequest.transition policy command request

        let result =
            wait (
                (TestSupport.adminOf store).UpdateRequestAsync(request.Id, HandlerRequest.transition policy command, ct)
            )

        Expect.equal
            result
            (expected |> Result.mapError AdminError.Refused)
            $"%s{context}: an update by id writes what the core decides"

        match expected with
        | Ok next ->
            { model with
                Requests = Map.add next.Id next model.Requests
            }
        | Error _ -> model

/// Runs one step against the store and the model; returns the model after it.
let rec private step (store: IEventStore) (model: Model) (context: string) (op: ModelOp) : Model =
    let now = model.Now

    match op with
    | Append items ->
        let events =
            items
            |> List.map (fun (back, name) ->
                Event.application (Guid.NewGuid()) (now - seconds (float back)) eventNames[name] EventData.Empty)

        let stored = wait (store.AppendAsync(events, ct))

        Expect.equal
            (stored |> List.map (fun event -> { event with CorrelationId = None }))
            events
            $"%s{context}: appending returns the events given"

        Expect.isTrue
            (stored |> List.forall _.CorrelationId.IsSome)
            $"%s{context}: every appended event has a correlation id"

        { model with
            Events =
                stored
                |> List.fold (fun events event -> Map.add event.Id event events) model.Events
        }

    | ClaimEvents(limit, leaseSeconds) ->
        let claimable (event: Event) =
            not (Event.isProcessed event)
            && (match Map.tryFind event.Id model.EventClaims with
                | None -> true
                | Some(_, until) -> until <= now)

        let expected =
            model.Events.Values
            |> Seq.filter claimable
            |> Seq.sortBy (fun event -> event.Timestamp, event.Id)
            |> Seq.truncate limit
            |> List.ofSeq

        let claims =
            wait (store.ClaimEventsAsync(limit, now, seconds (float leaseSeconds), ct))

        Expect.equal
            (claims |> List.map _.Event)
            expected
            $"%s{context}: the claimable events are claimed oldest first, up to the limit"

        Expect.isTrue
            (claims
             |> List.forall (fun claim -> claim.Until = now + seconds (float leaseSeconds)))
            $"%s{context}: each claim holds for the lease"

        { model with
            EventClaims =
                claims
                |> List.fold
                    (fun held claim -> Map.add claim.Event.Id (claim.Token, claim.Until) held)
                    model.EventClaims
            IssuedClaims = List.rev claims @ model.IssuedClaims
        }

    | Process(limit, handlers) ->
        let claimed = step store model context (ClaimEvents(limit, 60))
        // The new claims are the newest, at the head of the list; commits add no claims.
        let count = claimed.IssuedClaims.Length - model.IssuedClaims.Length

        [ 0 .. count - 1 ]
        |> List.fold (fun model index -> step store model context (Commit(index, handlers))) claimed

    | Commit(_, _) when List.isEmpty model.IssuedClaims -> model
    | Commit(index, handlers) ->
        let claim = pick index model.IssuedClaims

        let item =
            handlers
            |> List.distinctBy (fun (name, _, _) -> name)
            |> List.map (fun (name, priority, maxErrors) ->
                handlerNames[name],
                { HandlerSettings.defaults with
                    Priority = priority
                    MaxErrors = maxErrors
                })
            |> fanOutOf now claim

        let event = model.Events[claim.Event.Id]

        let expected =
            match event.ProcessedAt, Map.tryFind event.Id model.EventClaims with
            | Some _, _ -> Error ProcessError.AlreadyProcessed
            | None, Some(token, _) when token = claim.Token -> Ok()
            | None, Some _
            | None, None -> Error ProcessError.StaleClaim

        let results = wait (store.CommitProcessingAsync([ item ], ct))
        Expect.equal results [ expected ] $"%s{context}: the commit is accepted only under the current claim"

        match expected with
        | Ok() ->
            { model with
                Events = Map.add event.Id { event with ProcessedAt = Some now } model.Events
                EventClaims = Map.remove event.Id model.EventClaims
                Requests =
                    item.Requests
                    |> List.fold (fun requests request -> Map.add request.Id request requests) model.Requests
            }
        | Error _ -> model

    | CommitUnknown ->
        let item =
            {
                EventId = Guid.NewGuid()
                Token = Guid.NewGuid()
                ProcessedAt = now
                Requests = []
            }

        let results = wait (store.CommitProcessingAsync([ item ], ct))
        Expect.equal results [ Error ProcessError.EventNotFound ] $"%s{context}: an unknown event is not found"
        model

    | Release _ when List.isEmpty model.IssuedClaims -> model
    | Release index ->
        let claim = pick index model.IssuedClaims
        wait (store.ReleaseEventsAsync([ claim ], ct))

        match Map.tryFind claim.Event.Id model.EventClaims with
        | Some(token, _) when token = claim.Token ->
            { model with
                EventClaims = Map.remove claim.Event.Id model.EventClaims
            }
        | Some _
        | None -> model

    | ClaimRequests(limit, leaseSeconds) ->
        let leaseFor = seconds (float leaseSeconds)

        let lapsed =
            model.Requests.Values
            |> Seq.filter (HandlerRequest.isLeaseExpired now)
            |> Seq.map (decide (RequestCommand.ExpireLease now))
            |> List.ofSeq

        let recovered =
            lapsed
            |> List.fold (fun requests request -> Map.add request.Id request requests) model.Requests

        let expected =
            recovered.Values
            |> Seq.filter (HandlerRequest.isRunnable now)
            |> Seq.sortBy HandlerRequest.runOrder
            |> Seq.truncate limit
            |> List.ofSeq

        let claim = wait (store.ClaimRequestsAsync(limit, now, leaseFor, ct))

        Expect.equal
            (claim.Recovered |> List.sortBy _.Id)
            (lapsed |> List.sortBy _.Id)
            $"%s{context}: every lapsed lease is recovered by the core's ExpireLease"

        Expect.equal
            (claim.Claimed |> List.map _.Id)
            (expected |> List.map _.Id)
            $"%s{context}: the runnable requests are claimed in run order, up to the limit"

        let claimed =
            claim.Claimed
            |> List.map (fun request ->
                let expected =
                    decide (RequestCommand.Claim(now, leaseFor, tokenOf request)) recovered[request.Id]

                Expect.equal request expected $"%s{context}: a claimed request is the core's Claim of the model's"
                request)

        { model with
            Requests =
                claimed
                |> List.fold (fun requests request -> Map.add request.Id request requests) recovered
            Attempts = List.rev claimed @ model.Attempts
        }

    | Outcome(_, _, _) when List.isEmpty model.Attempts -> model
    | Outcome(index, succeed, sample) ->
        let attempt = pick index model.Attempts
        let token = tokenOf attempt

        let command =
            if succeed then
                RequestCommand.Succeed(token, now)
            else
                RequestCommand.Fail(token, now, "boom", float sample / 100.0)

        let write = outcomeOf command attempt

        let expected =
            HandlerRequest.transition policy command model.Requests[attempt.Id]
            |> Result.map ignore

        let results = wait (store.RecordOutcomesAsync([ write ], ct))

        Expect.equal
            results
            [ expected ]
            $"%s{context}: the outcome is recorded exactly when the core accepts its token"

        match expected with
        | Ok() ->
            { model with
                Requests = Map.add write.Request.Id write.Request model.Requests
            }
        | Error _ -> model

    | Renew(_, _) when List.isEmpty model.Attempts -> model
    | Renew(picks, leaseSeconds) ->
        let until = now + seconds (float leaseSeconds)
        let attempts = picks |> List.map (fun index -> pick index model.Attempts)

        // The core's Renew, item after item, on the model's requests.
        let expected, requests =
            attempts
            |> List.mapFold
                (fun (requests: Map<Guid, HandlerRequest>) attempt ->
                    match
                        HandlerRequest.transition
                            policy
                            (RequestCommand.Renew(tokenOf attempt, until))
                            requests[attempt.Id]
                    with
                    | Ok next -> Ok(), Map.add next.Id next requests
                    | Error error -> Error error, requests)
                model.Requests

        let results =
            wait (store.RenewLeasesAsync(attempts |> List.map (fun attempt -> attempt.Id, tokenOf attempt), until, ct))

        Expect.equal
            results
            expected
            $"%s{context}: each lease is renewed exactly when the core accepts its token, never shortened"

        { model with Requests = requests }

    | Advance by ->
        { model with
            Now = now + seconds (float by)
        }

    | ReExecute index -> updateById store model context index RequestCommand.ReExecute
    | Cancel index -> updateById store model context index (RequestCommand.Cancel now)

    | UpdateUnknown ->
        let id = Guid.NewGuid()

        let result =
            wait (
                (TestSupport.adminOf store)
                    .UpdateRequestAsync(id, HandlerRequest.transition policy RequestCommand.ReExecute, ct)
            )

        Expect.equal result (Error(AdminError.RequestNotFound id)) $"%s{context}: an unknown request is not found"
        model

    | DeadPage(events, handlers, limit, offset) ->
        let query =
            deadQuery
                (events |> List.distinct |> List.map (fun index -> eventNames[index]))
                (handlers |> List.distinct |> List.map (fun index -> handlerNames[index]))
                limit
                offset

        Expect.equal
            (wait ((TestSupport.adminOf store).DeadRequestsAsync(query, ct)))
            (modelDeadPage model query)
            $"%s{context}: a filtered page of dead requests agrees with the model"

        model

/// Runs the steps against a fresh store and the model, checking after each.
let private runModel (makeStore: unit -> Task<IEventStore>) (ops: ModelOp list) =
    let store = wait (makeStore ())

    let initial =
        {
            Now = t0
            Events = Map.empty
            EventClaims = Map.empty
            IssuedClaims = []
            Requests = Map.empty
            Attempts = []
        }

    ops
    |> List.indexed
    |> List.fold
        (fun model (index, op) ->
            let context = $"step %d{index} %A{op}"
            let next = step store model context op
            check store next context
            next)
        initial
    |> ignore

    true

let private modelTests (config: ContractConfig) (makeStore: unit -> Task<IEventStore>) =
    [
        testPropertyWithConfig
            { FsCheckConfig.defaultConfig with
                maxTest = config.ModelCases
            }
            "after every step of any sequence of operations the store agrees with a model built from the core"
        <| Prop.forAll modelOps (runModel makeStore)
    ]

/// The contract of the store port, for a store made fresh by `makeStore` for each test, with the
/// effort given.
let storeContractWith (config: ContractConfig) (name: string) (makeStore: unit -> Task<IEventStore>) =
    testList
        name
        [
            testList "append" (appendTests makeStore)
            testList "claim events" (eventClaimTests makeStore)
            testList "commit processing" (commitTests makeStore)
            testList "claim requests" (requestClaimTests makeStore)
            testList "record outcomes" (outcomeTests makeStore)
            testList "renew leases" (renewTests makeStore)
            testList "queries" (queryTests makeStore)
            testList "update by id" (updateTests makeStore)
            testSequenced (testList "concurrency" (concurrencyTests config makeStore))
            testList "model" (modelTests config makeStore)
        ]

/// The contract of the store port with the default effort.
let storeContract (name: string) (makeStore: unit -> Task<IEventStore>) =
    storeContractWith defaultConfig name makeStore
