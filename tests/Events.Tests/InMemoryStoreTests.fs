module Events.Tests.InMemoryStoreTests

open System
open System.Collections.Concurrent
open System.Threading
open System.Threading.Tasks
open Expecto
open Events.Core
open Events.Tests.StoreContractTests

let private ct = CancellationToken.None
let private seconds (n: float) = TimeSpan.FromSeconds n
let private minutes (n: float) = TimeSpan.FromMinutes n

let private makeStore () =
    Task.FromResult(InMemoryStore() :> IEventStore)

/// Whether another thread can read the store within five seconds: it cannot while the lock is held.
let private readableFromAnotherThread (store: IEventStore) =
    Task.Run<StoreStats>(Func<Task<StoreStats>>(fun () -> store.StatsAsync(t0, ct))).Wait(seconds 5.0)

let private emptyIndexes =
    {
        UnprocessedEvents = 0
        UnclaimedEvents = 0
        EventClaims = 0
        RunnableRequests = 0
        RunnableByEventTime = 0
        BackingOffRequests = 0
        RunningRequests = 0
        DeadRequests = 0
        DeadEventNames = 0
        DeadHandlerNames = 0
    }

let private fourHandlers =
    [ handler "a" 10 5; handler "b" 20 5; handler "c" 30 5; handler "d" 40 5 ]

/// A store holding `size` runnable requests (four per event).
let private requestBacklog (size: int) =
    task {
        let store = InMemoryStore()

        let! _ =
            fanOut
                store
                t0
                [
                    for index in 1 .. size / 4 ->
                        newEvent (t0 + TimeSpan.FromMilliseconds(float index)) "load", fourHandlers
                ]

        return store
    }

/// Comparisons per request claimed, claiming ten from the store.
let private requestClaimCost (store: InMemoryStore) =
    task {
        let before = store.Comparisons
        let! claim = (store :> IEventStore).ClaimRequestsAsync(10, t0, minutes 1.0, ct)
        Expect.hasLength claim.Claimed 10 "the backlog gives ten requests"
        return float (store.Comparisons - before) / 10.0
    }

/// Comparisons per event claimed, claiming ten from a backlog of `size` unprocessed events.
let private eventClaimCost (size: int) =
    task {
        let store = InMemoryStore()

        let! _ =
            (store :> IEventStore)
                .AppendAsync(
                    [
                        for index in 1..size -> newEvent (t0 + TimeSpan.FromMilliseconds(float index)) "load"
                    ],
                    ct
                )

        let before = store.Comparisons
        let! claims = (store :> IEventStore).ClaimEventsAsync(10, t0, minutes 1.0, ct)
        Expect.hasLength claims 10 "the backlog gives ten events"
        return float (store.Comparisons - before) / 10.0
    }

let private costTests =
    [
        testCaseTask "claiming a request from a backlog costs O(log N) comparisons, not a scan" (fun () ->
            task {
                let! small = requestBacklog 1024
                let! large = requestBacklog 65536
                let! smallCost = requestClaimCost small
                let! largeCost = requestClaimCost large

                Expect.isLessThanOrEqual
                    largeCost
                    (2.5 * smallCost)
                    $"64 times the backlog costs at most 2.5 times the comparisons per claim (log ratio 1.6, a scan's 64): %.1f{smallCost} then %.1f{largeCost}"

                Expect.isLessThanOrEqual
                    largeCost
                    (12.0 * 16.0)
                    $"a claim from 65,536 requests costs at most 12 log2 N comparisons: %.1f{largeCost}"
            })

        testCaseTask "claiming an event from a backlog costs O(log N) comparisons, not a scan" (fun () ->
            task {
                let! smallCost = eventClaimCost 1024
                let! largeCost = eventClaimCost 65536

                Expect.isLessThanOrEqual
                    largeCost
                    (2.5 * smallCost)
                    $"64 times the backlog costs at most 2.5 times the comparisons per claim: %.1f{smallCost} then %.1f{largeCost}"

                Expect.isLessThanOrEqual
                    largeCost
                    (8.0 * 16.0)
                    $"a claim from 65,536 events costs at most 8 log2 N comparisons: %.1f{largeCost}"
            })

        testCaseTask "renewing a lease among 65,536 running requests costs O(log N) comparisons" (fun () ->
            task {
                let! store = requestBacklog 65536
                let port = store :> IEventStore
                let! claim = port.ClaimRequestsAsync(65536, t0, minutes 1.0, ct)
                Expect.hasLength claim.Claimed 65536 "every request runs"

                let renewals =
                    claim.Claimed
                    |> List.take 10
                    |> List.map (fun request -> request.Id, tokenOf request)

                let before = store.Comparisons
                let! results = port.RenewLeasesAsync(renewals, t0 + minutes 2.0, ct)
                let perRenewal = float (store.Comparisons - before) / 10.0
                Expect.equal results (List.replicate 10 (Ok())) "every attempt holds its claim"

                Expect.isLessThanOrEqual
                    perRenewal
                    (4.0 * 16.0)
                    $"a renewal moves one request in the running index, at most 4 log2 N comparisons: %.1f{perRenewal}"

                Expect.equal store.IndexSizes.RunningRequests 65536 "the running index holds each request once"
            })

        testCaseTask "the gauges cost O(log N) comparisons whatever the backlog" (fun () ->
            task {
                let! store = requestBacklog 65536
                let before = store.Comparisons
                let! stats = (store :> IEventStore).StatsAsync(t0, ct)
                Expect.equal stats.RunnableRequests 65536L "every request is runnable"

                Expect.isLessThanOrEqual
                    (store.Comparisons - before)
                    (4L * 16L)
                    "reading the gauges of 65,536 requests costs at most 4 log2 N comparisons"
            })

        testCaseTask "requests whose backoff ended are made runnable once each, at O(log N)" (fun () ->
            task {
                let store = InMemoryStore()
                let port = store :> IEventStore

                let! _ =
                    fanOut
                        port
                        t0
                        [
                            for index in 1..1024 ->
                                newEvent (t0 + TimeSpan.FromMilliseconds(float index)) "load", fourHandlers
                        ]

                let! claim = port.ClaimRequestsAsync(4096, t0, minutes 1.0, ct)
                let! _ = port.RecordOutcomesAsync(claim.Claimed |> List.map (failed t0), ct)
                let before = store.Comparisons
                let! stats = port.StatsAsync(t0 + minutes 10.0, ct)
                Expect.equal stats.RunnableRequests 4096L "every backoff ended"
                let perRequest = float (store.Comparisons - before) / 4096.0

                Expect.isLessThanOrEqual
                    perRequest
                    (8.0 * 12.0)
                    $"moving 4,096 requests out of backoff costs at most 8 log2 N comparisons each: %.1f{perRequest}"

                let again = store.Comparisons
                let! _ = port.StatsAsync(t0 + minutes 10.0, ct)
                Expect.isLessThanOrEqual (store.Comparisons - again) 48L "a second look moves nothing"
            })
    ]

let private memoryTests =
    [
        testCaseTask
            "once every event is processed and every request completed or canceled, every index is empty"
            (fun () ->
                task {
                    let store = InMemoryStore()
                    let port = store :> IEventStore

                    let! requests =
                        fanOut
                            port
                            t0
                            [
                                for index in 1..100 ->
                                    newEvent (t0 + seconds (float index)) "load",
                                    [ handler "ok" 10 1; handler "ko" 20 1 ]
                            ]

                    let! claim = port.ClaimRequestsAsync(1000, t0, minutes 1.0, ct)

                    let outcomes =
                        claim.Claimed
                        |> List.map (fun request ->
                            if request.HandlerName = HandlerName.Create "ok" then
                                succeeded t0 request
                            else
                                failed t0 request)

                    let! _ = port.RecordOutcomesAsync(outcomes, ct)

                    Expect.equal
                        { store.IndexSizes with
                            DeadRequests = 0
                            DeadEventNames = 0
                            DeadHandlerNames = 0
                        }
                        emptyIndexes
                        "completed requests and processed events leave every index; only the dead remain"

                    Expect.equal
                        (store.IndexSizes.DeadRequests,
                         store.IndexSizes.DeadEventNames,
                         store.IndexSizes.DeadHandlerNames)
                        (100, 1, 1)
                        "a dead request is in the dead index, and its names are counted once"

                    for request in requests do
                        if request.HandlerName = HandlerName.Create "ko" then
                            let! _ =
                                (TestSupport.adminOf port)
                                    .UpdateRequestAsync(
                                        request.Id,
                                        HandlerRequest.transition policy (RequestCommand.Cancel t0),
                                        ct
                                    )

                            ()

                    Expect.equal store.IndexSizes emptyIndexes "canceled requests leave every index, names counts too"
                    let! all = port.RequestsAsync ct |> toList
                    Expect.hasLength all 200 "the requests themselves are kept, by id"
                })

        testCaseTask "every live item is in exactly the indexes of its state" (fun () ->
            task {
                let store = InMemoryStore()
                let port = store :> IEventStore

                let! _ =
                    fanOut
                        port
                        t0
                        [
                            for index in 1..10 -> newEvent (t0 + seconds (float index)) "load", [ handler "h" 10 5 ]
                        ]

                let! _ = port.AppendAsync([ newEvent t0 "a"; newEvent t0 "b"; newEvent t0 "c" ], ct)
                let! _ = port.ClaimEventsAsync(1, t0, minutes 1.0, ct)
                let! claim = port.ClaimRequestsAsync(4, t0, minutes 1.0, ct)

                let! _ =
                    port.RecordOutcomesAsync(claim.Claimed |> List.take 2 |> List.map (failed t0), ct)

                Expect.equal
                    store.IndexSizes
                    { emptyIndexes with
                        UnprocessedEvents = 3
                        UnclaimedEvents = 2
                        EventClaims = 1
                        RunnableRequests = 6
                        RunnableByEventTime = 6
                        BackingOffRequests = 2
                        RunningRequests = 2
                    }
                    "3 unprocessed events (1 claimed), 6 runnable, 2 backing off, 2 running requests"
            })
    ]

let private signalTests =
    [
        testCaseTask
            "appending raises EventsAppended once per batch, before it returns; an empty batch raises nothing"
            (fun () ->
                task {
                    let! store = makeStore ()
                    let signals = recordSignals store
                    let! _ = store.AppendAsync([ newEvent t0 "a"; newEvent t0 "b" ], ct)
                    let! _ = store.AppendAsync([], ct)

                    Expect.equal
                        (List.ofSeq signals)
                        [ WorkSignal.EventsAppended ]
                        "one signal for one non-empty batch"
                })

        testCaseTask
            "committing raises RequestsReady once per batch that created requests, and nothing otherwise"
            (fun () ->
                task {
                    let! store = makeStore ()
                    let! _ = store.AppendAsync([ newEvent t0 "a"; newEvent t0 "b"; newEvent t0 "c" ], ct)
                    let! claims = store.ClaimEventsAsync(3, t0, minutes 1.0, ct)
                    let signals = recordSignals store

                    let! _ =
                        store.CommitProcessingAsync(
                            [
                                fanOutOf t0 claims[0] [ handler "h" 50 5 ]
                                fanOutOf t0 claims[1] [ handler "h" 50 5 ]
                            ],
                            ct
                        )

                    let! _ = store.CommitProcessingAsync([ fanOutOf t0 claims[2] [] ], ct)

                    Expect.equal
                        (List.ofSeq signals)
                        [ WorkSignal.RequestsReady ]
                        "one signal for the batch that created requests"
                })

        testCaseTask
            "re-executing raises RequestsReady; canceling, claiming and recording outcomes raise nothing"
            (fun () ->
                task {
                    let! store = makeStore ()

                    let! requests =
                        fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 1; handler "i" 50 5 ] ]

                    let signals = recordSignals store
                    let! claim = store.ClaimRequestsAsync(1, t0, minutes 1.0, ct)
                    let! _ = store.RecordOutcomesAsync([ failed t0 claim.Claimed[0] ], ct)

                    let! _ =
                        (TestSupport.adminOf store)
                            .UpdateRequestAsync(
                                requests[1].Id,
                                HandlerRequest.transition policy (RequestCommand.Cancel t0),
                                ct
                            )

                    Expect.isEmpty signals "claims, outcomes and cancellations signal nothing"

                    let! _ =
                        (TestSupport.adminOf store)
                            .UpdateRequestAsync(
                                requests[0].Id,
                                HandlerRequest.transition policy RequestCommand.ReExecute,
                                ct
                            )

                    Expect.equal (List.ofSeq signals) [ WorkSignal.RequestsReady ] "a re-execution signals once"
                })

        testCaseTask "subscribers run outside the store's lock" (fun () ->
            task {
                let! store = makeStore ()
                let answered = ref false

                store.WorkArrived.Add(fun _ -> answered.Value <- readableFromAnotherThread store)

                let! _ = store.AppendAsync([ newEvent t0 "a" ], ct)
                Expect.isTrue answered.Value "another thread could use the store while a subscriber ran"
            })
    ]

let private updateTests =
    [
        testCaseTask "the transition runs outside the store's lock" (fun () ->
            task {
                let! store = makeStore ()
                let! requests = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                let answered = ref false

                let transition request =
                    answered.Value <- readableFromAnotherThread store
                    HandlerRequest.transition policy (RequestCommand.Cancel t0) request

                let! result =
                    (TestSupport.adminOf store).UpdateRequestAsync(requests[0].Id, transition, ct)

                Expect.isOk result "the cancellation is written"
                Expect.isTrue answered.Value "another thread could use the store while the transition ran"
            })

        testCaseTask "a transition is run again on the newer request when the request changed while it ran" (fun () ->
            task {
                let! store = makeStore ()
                let! requests = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 1 ] ]
                let id = requests[0].Id
                let! _ = store.ClaimRequestsAsync(1, t0, minutes 1.0, ct)
                // Dead: the lapsed lease was its only allowed attempt.
                let! recovery = store.ClaimRequestsAsync(0, t0 + minutes 2.0, minutes 1.0, ct)
                Expect.isTrue (HandlerRequest.isDead recovery.Recovered[0]) "the request is dead"
                let seen = ConcurrentQueue<HandlerRequest>()

                let transition request =
                    seen.Enqueue request

                    if seen.Count = 1 then
                        // Someone else re-executes the request meanwhile.
                        let reExecuted =
                            Task
                                .Run<Result<HandlerRequest, AdminError>>(fun () ->
                                    (TestSupport.adminOf store)
                                        .UpdateRequestAsync(
                                            id,
                                            HandlerRequest.transition policy RequestCommand.ReExecute,
                                            ct
                                        ))
                                .Result

                        Expect.isOk reExecuted "the concurrent re-execution is written"

                    HandlerRequest.transition policy (RequestCommand.Cancel t0) request

                let! result = (TestSupport.adminOf store).UpdateRequestAsync(id, transition, ct)
                Expect.equal seen.Count 2 "the transition ran again after the concurrent change"

                Expect.equal
                    (result |> Result.map _.Errors)
                    (Ok 0)
                    "the cancellation was applied to the re-executed request, not to the stale one"
            })
    ]

let private otherTests =
    [
        testCaseTask "the in-memory store opens no handler transactions" (fun () ->
            task {
                let! store = makeStore ()
                let! requests = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                Expect.isNone (store.BeginHandlerTransaction requests[0]) "there is no transaction to open"
            })

        testCaseTask "an outcome carrying a handler transaction is refused with an ArgumentException" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                let! claim = store.ClaimRequestsAsync(1, t0, minutes 1.0, ct)

                let transaction =
                    { new IHandlerTransaction with
                        member _.HasChanges = true
                        member _.DisposeAsync() = ValueTask.CompletedTask
                    }

                let outcome =
                    { succeeded t0 claim.Claimed[0] with
                        Transaction = Some transaction
                    }

                let! error = argumentErrorOf (fun () -> store.RecordOutcomesAsync([ outcome ], ct))
                Expect.isSome error "another store's transaction cannot be committed here"
                let! stored = store.FindRequestAsync(claim.Claimed[0].Id, ct)
                Expect.equal stored (Some claim.Claimed[0]) "nothing was written"
            })

        testCaseTask "an outcome for a request the store never had is refused as NotRunning" (fun () ->
            task {
                let! store = makeStore ()

                let stranger =
                    HandlerRequest.create
                        (Guid.CreateVersion7())
                        (newEvent t0 "a")
                        (HandlerName.Create "h")
                        HandlerSettings.defaults

                let claimed =
                    decide (RequestCommand.Claim(t0, minutes 1.0, Guid.NewGuid())) stranger

                let! results = store.RecordOutcomesAsync([ succeeded t0 claimed ], ct)
                Expect.equal results [ Error RequestError.NotRunning ] "no stored request is running this attempt"
            })

        testCaseTask "a request found due by a later look is still not claimed before its backoff ends" (fun () ->
            task {
                let! store = makeStore ()
                let! _ = fanOut store t0 [ newEvent t0 "a", [ handler "h" 50 5 ] ]
                let! claim = store.ClaimRequestsAsync(1, t0, minutes 1.0, ct)
                let failure = failed t0 claim.Claimed[0]
                let! _ = store.RecordOutcomesAsync([ failure ], ct)

                let until =
                    HandlerRequest.backoffUntil failure.Request
                    |> Option.defaultWith (fun () -> failtest "the failed request backs off")

                let! _ = store.StatsAsync(until + minutes 1.0, ct)
                let! early = store.ClaimRequestsAsync(1, until - seconds 1.0, minutes 1.0, ct)
                Expect.isEmpty early.Claimed "a claimer whose clock is behind does not get a request still backing off"
                let! due = store.ClaimRequestsAsync(1, until, minutes 1.0, ct)
                Expect.hasLength due.Claimed 1 "once due for the claimer too, the request is claimed"
            })

        testCaseTask
            "a claim recovers at most MaxRecoveredPerClaim lapsed leases, oldest first; later claims recover the rest"
            (fun () ->
                task {
                    let store = InMemoryStore { MaxRecoveredPerClaim = 2 } :> IEventStore

                    let! _ =
                        fanOut
                            store
                            t0
                            [
                                for index in 1..5 -> newEvent (t0 + seconds (float index)) "load", [ handler "h" 50 5 ]
                            ]

                    let leases = [ 1.0; 5.0; 2.0; 4.0; 3.0 ]
                    let mutable claimed = []

                    for lease in leases do
                        let! claim = store.ClaimRequestsAsync(1, t0, minutes lease, ct)
                        claimed <- claimed @ claim.Claimed

                    let later = t0 + minutes 10.0
                    let! first = store.ClaimRequestsAsync(0, later, minutes 1.0, ct)
                    let! second = store.ClaimRequestsAsync(0, later, minutes 1.0, ct)
                    let! third = store.ClaimRequestsAsync(0, later, minutes 1.0, ct)

                    let byLeaseEnd =
                        claimed
                        |> List.sortBy (fun request -> (HandlerRequest.lease request).Value.Until)
                        |> List.map _.Id

                    Expect.equal
                        ([ first; second; third ] |> List.map (_.Recovered >> List.map _.Id))
                        [ List.take 2 byLeaseEnd; byLeaseEnd[2..3]; [ byLeaseEnd[4] ] ]
                        "two, two, then one, by lease end"
                })

        test "options recovering fewer than one lease per claim are refused" {
            Expect.throwsT<ArgumentException>
                (fun () -> InMemoryStore { MaxRecoveredPerClaim = 0 } |> ignore)
                "MaxRecoveredPerClaim must be at least 1"
        }

        test "a call with a canceled token gives a canceled task and changes nothing" {
            let store = InMemoryStore() :> IEventStore
            use canceled = new CancellationTokenSource()
            canceled.Cancel()
            let event = newEvent t0 "a"
            let appended = store.AppendAsync([ event ], canceled.Token)
            Expect.isTrue appended.IsCanceled "the task is canceled"

            Expect.isNone (store.FindEventAsync(event.Id, ct).Result) "nothing was appended"
        }

        test "claims with a negative limit or a lease that is not positive are refused" {
            let store = InMemoryStore() :> IEventStore

            Expect.throwsT<ArgumentException>
                (fun () -> store.ClaimRequestsAsync(-1, t0, minutes 1.0, ct) |> ignore)
                "a negative limit is a programming fault"

            Expect.throwsT<ArgumentException>
                (fun () -> store.ClaimEventsAsync(1, t0, TimeSpan.Zero, ct) |> ignore)
                "a lease must be positive"
        }
    ]

let tests =
    testList
        "InMemoryStore"
        [
            storeContract "contract" makeStore
            testList "cost" costTests
            testList "memory" memoryTests
            testList "signals" signalTests
            testList "update by id" updateTests
            testList "details" otherTests
        ]
