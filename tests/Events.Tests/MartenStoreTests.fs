/// The Marten store against a real PostgreSQL: one throwaway server for the run, a fresh database per
/// test. Its SQL predicates are checked against the core's on random data.
module Events.Tests.MartenStoreTests

open System
open Events.Core
open System.Collections.Concurrent
open System.Collections.Generic
open System.Diagnostics
open System.Runtime.ExceptionServices
open System.Text.Json.Serialization
open System.Threading
open System.Threading.Tasks
open Expecto
open FsCheck
open FsCheck.FSharp
open global.Marten
open Npgsql
open global.Events
open Events.Marten
open Events.Testing

let private server = ThrowawayPostgresTests.server

let private none = CancellationToken.None

/// Options of a store that does not listen (most tests do not need the listener's connection), and
/// judges leases by the times the test passes (simulated time), not the database's clock.
let private quiet =
    { MartenEventStoreOptions.Default with
        ListenForWork = false
        DatabaseClock = false
    }

/// Runs a body, then an async cleanup whatever happened, then rethrows the body's failure.
let private finallyAsync (cleanup: unit -> Task) (body: unit -> Task<'T>) =
    task {
        let! outcome =
            task {
                try
                    let! value = body ()
                    return Ok value
                with error ->
                    return Error error
            }

        do! cleanup ()

        match outcome with
        | Ok value -> return value
        | Error error ->
            ExceptionDispatchInfo.Capture(error).Throw()
            return Unchecked.defaultof<'T>
    }

/// A store over a fresh database, disposed after the body.
let private withStoreUsing (options: MartenEventStoreOptions) (body: MartenEventStore -> Task<unit>) =
    task {
        let! connectionString = server.Value.CreateDatabaseAsync()
        let! store = MartenEventStore.CreateAsync(connectionString, options = options)
        do! finallyAsync (fun () -> store.DisposeAsync().AsTask()) (fun () -> body store)
    }

let private withStore body = withStoreUsing quiet body

let private port (store: MartenEventStore) = store :> IEventStore

let private t0 = DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero)

let private at (seconds: float) = t0.AddSeconds seconds

let private lease = TimeSpan.FromSeconds 30.0

let private applicationEvent (seconds: float) (name: string) =
    Event.application (Guid.CreateVersion7()) (at seconds) (EventName.Create name) EventData.Empty

let private settings maxErrors priority =
    { HandlerSettings.defaults with
        MaxErrors = maxErrors
        Priority = priority
    }

let private requestFor (event: Event) (handler: string) (settings: HandlerSettings) =
    HandlerRequest.create (Guid.CreateVersion7()) event (HandlerName.Create handler) settings

let private append (store: IEventStore) (events: Event list) = store.AppendAsync(events, none)

/// Writes requests in any state straight through Marten (its own write path fills the duplicated
/// columns), as a store of another version or process would have left them.
let private seedRequests (store: MartenEventStore) (requests: HandlerRequest list) =
    task {
        use session = store.DocumentStore.LightweightSession()
        session.Store(requests |> List.map Documents.ofRequest |> Array.ofList)
        do! session.SaveChangesAsync()
    }

/// Appends the events and fans each out to the handlers given, through the processor's path.
let private appendAndProcess (store: IEventStore) (events: Event list) (handlers: (string * HandlerSettings) list) =
    task {
        let! _ = append store events
        let! claims = store.ClaimEventsAsync(List.length events, at 0.0, lease, none)

        let processed =
            claims
            |> List.map (fun claim ->
                {
                    EventId = claim.Event.Id
                    Token = claim.Token
                    ProcessedAt = at 1.0
                    Requests =
                        handlers
                        |> List.map (fun (handler, settings) -> requestFor claim.Event handler settings)
                })

        let! results = store.CommitProcessingAsync(processed, none)
        Expect.allEqual results (Ok()) "every fan-out of a fresh claim must commit"
        return processed |> List.collect _.Requests
    }

/// Sessions of this database that sit inside an open transaction.
let private idleInTransaction (store: MartenEventStore) =
    task {
        use session = store.DocumentStore.QuerySession()

        let! count =
            session.QueryAsync<int64>(
                "select count(*) from pg_stat_activity where datname = current_database() "
                + "and state like 'idle in transaction%' and pid <> pg_backend_pid()"
            )

        return Seq.head count
    }

/// A document a handler writes in its own transaction.
[<CLIMutable>]
type Note = { Id: Guid; Text: string }

/// An entity that raises events, saved with them by the outbox listener.
type Order() =
    let raiser = EventRaiser()

    /// The order's id.
    member val Id = Guid.Empty with get, set

    /// The order's total.
    member val Total = 0 with get, set

    interface IRaiseEvents with
        [<JsonIgnore>]
        member _.Raiser = raiser

    [<JsonIgnore>]
    member _.Raised = raiser

let private claimAll (store: IEventStore) (now: DateTimeOffset) =
    task {
        let! claim = store.ClaimRequestsAsync(10_000, now, lease, none)
        return claim
    }

// ---------------------------------------------------------------------------------------------------
// Random requests in every state, for the SQL-versus-core properties. Times are whole seconds around
// t0 (PostgreSQL keeps microseconds), priorities and event times collide often, so ties are ordered by id.

let private genTime = Gen.choose (-5, 5) |> Gen.map (float >> at)

let private genGuid =
    Gen.arrayOfLength 16 (Gen.choose (0, 255) |> Gen.map byte)
    |> Gen.map (fun bytes -> Guid bytes)

let private genRequest: Gen<HandlerRequest> =
    gen {
        let! id = genGuid
        let! handler = Gen.elements [ "a"; "b"; "c" ]
        let! eventName = Gen.elements [ "x"; "y" ]
        let! eventTime = genTime
        let! priority = Gen.choose (0, 2)
        let! maxErrors = Gen.choose (1, 4)
        let! lastAttempt = Gen.optionOf genTime

        let! errors, state =
            Gen.oneof
                [
                    gen {
                        // Only a failure sets a backoff, so a request with no errors has none.
                        let! errors = Gen.choose (0, maxErrors - 1)

                        let! backoff =
                            if errors = 0 then
                                Gen.constant None
                            else
                                Gen.optionOf genTime

                        return errors, RequestState.Runnable backoff
                    }
                    gen {
                        let! errors = Gen.choose (0, maxErrors - 1)
                        let! token = genGuid
                        let! until = genTime
                        return errors, RequestState.Running { Token = token; Until = until }
                    }
                    gen {
                        // Only a running request completes, and it runs below max errors.
                        let! errors = Gen.choose (0, maxErrors - 1)
                        let! completed = genTime
                        return errors, RequestState.Completed completed
                    }
                    gen {
                        let! errors = Gen.choose (0, maxErrors)
                        let! canceled = genTime
                        return errors, RequestState.Canceled canceled
                    }
                    gen { return maxErrors, RequestState.Dead }
                ]

        let event =
            Event.application (Guid.CreateVersion7()) eventTime (EventName.Create eventName) EventData.Empty

        return
            { HandlerRequest.create id event (HandlerName.Create handler) (settings maxErrors priority) with
                Errors = errors
                LastAttemptAt = lastAttempt
                LastError = lastAttempt |> Option.map (fun _ -> "boom")
                State = state
            }
    }

let private genScenario =
    gen {
        let! requests = Gen.listOf genRequest |> Gen.resize 40
        let! now = genTime
        return requests |> List.distinctBy _.Id, now
    }

let private propertyConfig =
    { FsCheckConfig.defaultConfig with
        maxTest = 25
    }

/// Runs a property over random scenarios against one database, emptied before each scenario.
let private scenarioProperty
    (name: string)
    (check: MartenEventStore -> HandlerRequest list -> DateTimeOffset -> Task<unit>)
    =
    testCase name
    <| fun () ->
        (withStore (fun store ->
            task {
                let property =
                    Prop.forAll (Arb.fromGen genScenario) (fun (requests, now) ->
                        (task {
                            do! store.DocumentStore.Advanced.Clean.DeleteDocumentsByTypeAsync(typeof<RequestDocument>)
                            do! seedRequests store requests
                            do! check store requests now
                        })
                            .GetAwaiter()
                            .GetResult())

                Check.One(Config.QuickThrowOnFailure.WithMaxTest(propertyConfig.maxTest), property)
            }))
            .GetAwaiter()
            .GetResult()

let private equivalence =
    testList
        "SQL agrees with the core"
        [
            scenarioProperty
                "claims recover exactly the requests the core's isLeaseExpired picks, as its ExpireLease writes them"
            <| fun store requests now ->
                task {
                    let expected =
                        requests
                        |> List.filter (HandlerRequest.isLeaseExpired now)
                        |> List.map (fun request ->
                            match
                                HandlerRequest.transition
                                    BackoffPolicy.Default
                                    (RequestCommand.ExpireLease now)
                                    request
                            with
                            | Ok recovered -> recovered
                            | Error error -> failwith $"the core refused to expire a lapsed lease: %s{error.Message}")
                        |> List.sortBy HandlerRequest.runOrder

                    let! claim = (port store).ClaimRequestsAsync(0, now, lease, none)

                    Expect.equal
                        claim.Recovered
                        expected
                        "the recovered requests must be the core's ExpireLease results"

                    Expect.isEmpty claim.Claimed "a claim of limit 0 claims nothing"
                }

            scenarioProperty
                "claims hand out exactly the core's runnable requests, in its run order, as its Claim writes them"
            <| fun store requests now ->
                task {
                    let afterRecovery =
                        requests
                        |> List.map (fun request ->
                            if HandlerRequest.isLeaseExpired now request then
                                match
                                    HandlerRequest.transition
                                        BackoffPolicy.Default
                                        (RequestCommand.ExpireLease now)
                                        request
                                with
                                | Ok recovered -> recovered
                                | Error error -> failwith error.Message
                            else
                                request)

                    let runnable =
                        afterRecovery
                        |> List.filter (HandlerRequest.isRunnable now)
                        |> List.sortBy HandlerRequest.runOrder

                    let limit = max 1 (List.length runnable / 2)
                    let! claim = (port store).ClaimRequestsAsync(limit, now, lease, none)

                    Expect.equal
                        (claim.Claimed |> List.map _.Id)
                        (runnable |> List.truncate limit |> List.map _.Id)
                        "the claimed requests must be the first runnable ones in the core's run order"

                    for claimed in claim.Claimed do
                        let token =
                            match claimed.State with
                            | RequestState.Running lease -> lease.Token
                            | other -> failwith $"a claimed request must be running, not %A{other}"

                        let original = afterRecovery |> List.find (fun request -> request.Id = claimed.Id)

                        let expected =
                            HandlerRequest.transition
                                BackoffPolicy.Default
                                (RequestCommand.Claim(now, lease, token))
                                original

                        Expect.equal
                            (Ok claimed)
                            expected
                            "a claimed request must be the core's Claim of the stored one"
                }

            scenarioProperty "dead requests and the gauges match the core's isDead and isRunnable"
            <| fun store requests now ->
                task {
                    let! stats = (port store).StatsAsync(now, none)
                    let runnable = requests |> List.filter (HandlerRequest.isRunnable now)
                    let dead = requests |> List.filter HandlerRequest.isDead

                    Expect.equal stats.RunnableRequests (int64 runnable.Length) "runnable count must match isRunnable"
                    Expect.equal stats.DeadRequests (int64 dead.Length) "dead count must match isDead"

                    Expect.equal
                        stats.OldestRunnableRequest
                        (runnable |> List.map _.EventTimestamp |> List.sort |> List.tryHead)
                        "the oldest runnable request must be the core's"

                    let! page =
                        (TestSupport.adminOf (port store))
                            .DeadRequestsAsync(
                                { DeadRequestQuery.all with
                                    Limit = 1000
                                },
                                none
                            )

                    Expect.equal page.Total (int64 dead.Length) "the dead total must match isDead"

                    Expect.equal
                        page.Requests
                        (dead |> List.sortBy (fun request -> struct (request.EventTimestamp, request.Id)))
                        "the dead requests must be the core's, by event time then id"

                    let query =
                        { DeadRequestQuery.all with
                            EventNames = [ EventName.Create "x" ]
                            HandlerNames = [ HandlerName.Create "a"; HandlerName.Create "c" ]
                            Limit = 1000
                        }

                    let! filtered = (TestSupport.adminOf (port store)).DeadRequestsAsync(query, none)

                    Expect.equal
                        (filtered.Requests |> List.map _.Id)
                        (dead
                         |> List.filter (DeadRequestQuery.matches query)
                         |> List.sortBy (fun request -> struct (request.EventTimestamp, request.Id))
                         |> List.map _.Id)
                        "the filtered dead requests must be those DeadRequestQuery.matches accepts"
                }

            scenarioProperty "every stored state reads back as written (stateOfFields over Marten's columns)"
            <| fun store requests _ ->
                task {
                    let! stored = TestSupport.toList ((port store).RequestsAsync none)

                    Expect.equal
                        stored
                        (requests
                         |> List.sortBy (fun request -> struct (request.EventTimestamp, request.Id)))
                        "every request must read back equal, by event time then id"
                }
        ]

let private events =
    testList
        "events"
        [
            testTask "appended events read back equal, with a correlation id each, oldest first" {
                do!
                    withStore (fun store ->
                        task {
                            let later = applicationEvent 10.0 "later"

                            let given =
                                { applicationEvent 5.0 "earlier" with
                                    CorrelationId = Some(Guid.CreateVersion7())
                                    Trace =
                                        Some
                                            {
                                                TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                                                TraceState = Some "congo=t61rcWkgMzE"
                                            }
                                }

                            let domain =
                                Event.domain
                                    (Guid.CreateVersion7())
                                    (at 7.0)
                                    (EventName.Create "order.placed")
                                    { Id = "order-1"; Name = "order" }
                                    (match EventData.TryParse """{"total": 12.50, "lines": [1, 2]}""" with
                                     | Ok data -> data
                                     | Error error -> failwith error.Message)

                            let! stored = append (port store) [ later; given; domain ]

                            Expect.isTrue
                                (stored |> List.forall _.CorrelationId.IsSome)
                                "each event gets a correlation id"

                            Expect.equal
                                stored[1].CorrelationId
                                given.CorrelationId
                                "a correlation id the caller set is kept"

                            for event in stored do
                                let! found = (port store).FindEventAsync(event.Id, none)
                                Expect.equal found (Some event) "an event must read back as appended"

                            let! all = TestSupport.toList ((port store).EventsAsync none)

                            Expect.equal
                                (all |> List.map _.Id)
                                [ given.Id; domain.Id; later.Id ]
                                "events list oldest first"

                            let! missing = (port store).FindEventAsync(Guid.NewGuid(), none)
                            Expect.isNone missing "an unknown id finds nothing"
                        })
            }

            testTask "a batch holding an id twice, or an id already stored, is refused" {
                do!
                    withStore (fun store ->
                        task {
                            let event = applicationEvent 0.0 "once"

                            let! twice =
                                task {
                                    try
                                        let! _ = append (port store) [ event; event ]
                                        return false
                                    with :? ArgumentException ->
                                        return true
                                }

                            Expect.isTrue twice "a batch with an id twice must be refused"
                            let! _ = append (port store) [ event ]

                            let! again =
                                task {
                                    try
                                        let! _ = append (port store) [ event ]
                                        return false
                                    with :? ArgumentException ->
                                        return true
                                }

                            Expect.isTrue again "appending a stored id again must be refused"
                            let! all = TestSupport.toList ((port store).EventsAsync none)
                            Expect.equal all.Length 1 "the refused appends must store nothing"
                        })
            }

            testTask "event claims hand out the oldest unprocessed events once while the claim holds" {
                do!
                    withStore (fun store ->
                        task {
                            let events = [ for i in 1..5 -> applicationEvent (float (10 - i)) $"e%d{i}" ]
                            let! _ = append (port store) events
                            let! first = (port store).ClaimEventsAsync(3, at 0.0, lease, none)

                            Expect.equal
                                (first |> List.map _.Event.Id)
                                (events |> List.sortBy _.Timestamp |> List.take 3 |> List.map _.Id)
                                "the three oldest events are claimed, oldest first"

                            Expect.allEqual (first |> List.map _.Until) (at 30.0) "each claim lasts the lease"
                            let! second = (port store).ClaimEventsAsync(10, at 1.0, lease, none)

                            Expect.equal
                                second.Length
                                2
                                "claimed events are not handed out again while their claim holds"

                            let! none' = (port store).ClaimEventsAsync(10, at 2.0, lease, none)
                            Expect.isEmpty none' "nothing is left to claim"
                            do! (port store).ReleaseEventsAsync(first, none)
                            let! released = (port store).ClaimEventsAsync(10, at 3.0, lease, none)
                            Expect.equal released.Length 3 "released events can be claimed again"
                            let! lapsed = (port store).ClaimEventsAsync(10, at 31.0, lease, none)
                            Expect.equal lapsed.Length 2 "events whose claim lapsed can be claimed again"
                            let! zero = (port store).ClaimEventsAsync(0, at 100.0, lease, none)
                            Expect.isEmpty zero "a limit of 0 claims nothing"

                            Expect.throws
                                (fun () -> (port store).ClaimEventsAsync(-1, at 0.0, lease, none) |> ignore)
                                "a negative limit is refused"
                        })
            }

            testTask "a fan-out commits only under its claim: not found, processed already and stale claims are refused" {
                do!
                    withStore (fun store ->
                        task {
                            let a = applicationEvent 1.0 "a"
                            let b = applicationEvent 2.0 "b"
                            let c = applicationEvent 3.0 "c"
                            let! _ = append (port store) [ a; b; c ]
                            let! claims = (port store).ClaimEventsAsync(3, at 0.0, lease, none)

                            let claimOf (event: Event) =
                                claims |> List.find (fun claim -> claim.Event.Id = event.Id)
                            // c's claim lapses and another processor claims it.
                            let! reclaimed = (port store).ClaimEventsAsync(3, at 100.0, lease, none)

                            Expect.equal
                                (reclaimed |> List.map _.Event.Id)
                                [ a.Id; b.Id; c.Id ]
                                "lapsed claims are reclaimed"

                            let fanOut (claim: ClaimedEvent) handlers =
                                {
                                    EventId = claim.Event.Id
                                    Token = claim.Token
                                    ProcessedAt = at 101.0
                                    Requests =
                                        handlers
                                        |> List.map (fun handler -> requestFor claim.Event handler (settings 3 10))
                                }

                            let reclaimedOf (event: Event) =
                                reclaimed |> List.find (fun claim -> claim.Event.Id = event.Id)

                            let items =
                                [
                                    fanOut (reclaimedOf a) [ "h1"; "h2" ]
                                    fanOut (reclaimedOf b) []
                                    fanOut (claimOf c) [ "h1" ]
                                    { fanOut (reclaimedOf a) [ "h3" ] with
                                        EventId = Guid.NewGuid()
                                    }
                                ]

                            let! results = (port store).CommitProcessingAsync(items, none)

                            Expect.equal
                                results
                                [ Ok(); Ok(); Error ProcessError.StaleClaim; Error ProcessError.EventNotFound ]
                                "one result per item, in order"

                            let! again =
                                (port store).CommitProcessingAsync([ fanOut (reclaimedOf a) [ "h9" ] ], none)

                            Expect.equal again [ Error ProcessError.AlreadyProcessed ] "a processed event is refused"
                            let! requests = TestSupport.toList ((port store).RequestsAsync none)

                            Expect.equal
                                (requests
                                 |> List.map (fun request -> request.EventId, request.HandlerName.Value)
                                 |> List.sort)
                                ([ a.Id, "h1"; a.Id, "h2" ] |> List.sort)
                                "only the committed fan-outs' requests are stored"

                            Expect.equal
                                requests
                                (items[0].Requests |> List.sortBy (fun r -> struct (r.EventTimestamp, r.Id)))
                                "stored requests read back as created"

                            let! storedA = (port store).FindEventAsync(a.Id, none)

                            Expect.equal
                                (storedA |> Option.bind _.ProcessedAt)
                                (Some(at 101.0))
                                "a is processed at the commit's time"

                            let! storedB = (port store).FindEventAsync(b.Id, none)

                            Expect.isTrue
                                (storedB |> Option.exists Event.isProcessed)
                                "an event with no handler is processed too"

                            let! storedC = (port store).FindEventAsync(c.Id, none)

                            Expect.isFalse
                                (storedC |> Option.exists Event.isProcessed)
                                "a stale fan-out leaves its event unprocessed"

                            let! stats = (port store).StatsAsync(at 200.0, none)
                            Expect.equal stats.UnprocessedEvents 1L "one event is left unprocessed"
                            Expect.equal stats.OldestUnprocessedEvent (Some c.Timestamp) "the oldest unprocessed is c"
                            Expect.equal stats.RunnableRequests 2L "two requests are runnable"
                        })
            }

            testTask "a lapsed claim that nobody took since can still commit" {
                do!
                    withStore (fun store ->
                        task {
                            let event = applicationEvent 1.0 "slow"
                            let! _ = append (port store) [ event ]
                            let! claims = (port store).ClaimEventsAsync(1, at 0.0, lease, none)

                            let! results =
                                (port store)
                                    .CommitProcessingAsync(
                                        [
                                            {
                                                EventId = event.Id
                                                Token = claims.Head.Token
                                                ProcessedAt = at 500.0
                                                Requests = []
                                            }
                                        ],
                                        none
                                    )

                            Expect.equal results [ Ok() ] "the claim's token still names the event's claim"
                        })
            }
        ]

let private requests =
    testList
        "requests"
        [
            testTask "request claims follow priority, then event time, then id, and skip backoffs" {
                do!
                    withStore (fun store ->
                        task {
                            let e1 = applicationEvent 1.0 "e1"
                            let e2 = applicationEvent 2.0 "e2"

                            let! created =
                                appendAndProcess
                                    (port store)
                                    [ e1; e2 ]
                                    [ "low", settings 5 90; "high", settings 5 10 ]

                            let! claim = (port store).ClaimRequestsAsync(3, at 10.0, lease, none)

                            let expected =
                                created |> List.sortBy HandlerRequest.runOrder |> List.take 3 |> List.map _.Id

                            Expect.equal (claim.Claimed |> List.map _.Id) expected "claims follow the core's run order"

                            Expect.isTrue
                                (claim.Claimed
                                 |> List.forall (fun request ->
                                     HandlerRequest.lease request |> Option.exists (fun l -> l.Until = at 40.0)))
                                "each claimed request runs under a lease until now + lease"

                            let tokens = claim.Claimed |> List.choose HandlerRequest.lease |> List.map _.Token
                            Expect.equal (List.distinct tokens).Length tokens.Length "each claim has its own token"
                            let! rest = (port store).ClaimRequestsAsync(10, at 11.0, lease, none)
                            Expect.equal rest.Claimed.Length 1 "only the unclaimed request is left"
                        })
            }

            testTask "outcomes are written under their token; stale, completed and unclaimed ones are refused" {
                do!
                    withStore (fun store ->
                        task {
                            let! _ =
                                appendAndProcess
                                    (port store)
                                    [ applicationEvent 1.0 "e" ]
                                    [ "h", settings 2 50; "g", settings 2 50 ]

                            let! claim = (port store).ClaimRequestsAsync(2, at 10.0, lease, none)
                            let first, second = claim.Claimed[0], claim.Claimed[1]

                            let tokenOf request =
                                (HandlerRequest.lease request).Value.Token

                            let succeed request =
                                match
                                    HandlerRequest.transition
                                        BackoffPolicy.Default
                                        (RequestCommand.Succeed(tokenOf request, at 12.0))
                                        request
                                with
                                | Ok next -> next
                                | Error error -> failwith error.Message

                            let fail request =
                                match
                                    HandlerRequest.transition
                                        BackoffPolicy.Default
                                        (RequestCommand.Fail(tokenOf request, at 12.0, "it's \"broken\"", 0.5))
                                        request
                                with
                                | Ok next -> next
                                | Error error -> failwith error.Message

                            let write request token =
                                {
                                    Request = request
                                    Token = token
                                    Transaction = None
                                }

                            let! results =
                                (port store)
                                    .RecordOutcomesAsync(
                                        [
                                            write (succeed first) (tokenOf first)
                                            write (fail second) (Guid.NewGuid())
                                            write (fail second) (tokenOf second)
                                        ],
                                        none
                                    )

                            Expect.equal
                                results
                                [ Ok(); Error RequestError.StaleToken; Ok() ]
                                "the right tokens are written, the wrong one is refused as stale"

                            let! storedFirst = (port store).FindRequestAsync(first.Id, none)
                            Expect.equal storedFirst (Some(succeed first)) "the success is stored as the core made it"
                            let! storedSecond = (port store).FindRequestAsync(second.Id, none)
                            Expect.equal storedSecond (Some(fail second)) "the failure is stored as the core made it"

                            let! again =
                                (port store).RecordOutcomesAsync([ write (succeed first) (tokenOf first) ], none)

                            Expect.equal
                                again
                                [ Error RequestError.AlreadyCompleted ]
                                "a completed request refuses outcomes"

                            let! unclaimed =
                                (port store).RecordOutcomesAsync([ write (fail second) (tokenOf second) ], none)

                            Expect.equal
                                unclaimed
                                [ Error RequestError.NotRunning ]
                                "a request not running refuses outcomes"

                            let! missing =
                                (port store)
                                    .RecordOutcomesAsync([ write { first with Id = Guid.NewGuid() } Guid.Empty ], none)

                            Expect.equal
                                missing
                                [ Error RequestError.NotRunning ]
                                "an unknown request refuses outcomes"
                        })
            }

            testTask "a lapsed lease is recovered as a failed attempt, runnable at once, dead at max errors" {
                do!
                    withStore (fun store ->
                        task {
                            let! _ =
                                appendAndProcess
                                    (port store)
                                    [ applicationEvent 1.0 "e" ]
                                    [ "once", settings 1 50; "twice", settings 2 60 ]

                            let! claim = (port store).ClaimRequestsAsync(2, at 10.0, lease, none)
                            Expect.equal claim.Claimed.Length 2 "both are claimed"
                            let! early = (port store).ClaimRequestsAsync(2, at 39.0, lease, none)
                            Expect.isEmpty early.Recovered "a lease that holds is not recovered"
                            let! late = (port store).ClaimRequestsAsync(2, at 40.0, lease, none)
                            Expect.equal late.Recovered.Length 2 "both lapsed leases are recovered"

                            for recovered in late.Recovered do
                                Expect.equal recovered.Errors 1 "a lapsed lease counts one error"

                                Expect.equal
                                    recovered.LastError
                                    (Some HandlerRequest.LeaseExpiredError)
                                    "with the lease error"

                            Expect.equal
                                (late.Recovered
                                 |> List.map (fun request -> request.HandlerName.Value, HandlerRequest.isDead request))
                                [ "once", true; "twice", false ]
                                "the request at max errors is dead, the other runnable"

                            Expect.equal
                                (late.Claimed |> List.map _.HandlerName.Value)
                                [ "twice" ]
                                "the runnable one is claimed again at once"

                            let! stats = (port store).StatsAsync(at 40.0, none)
                            Expect.equal stats.DeadRequests 1L "one request is dead"
                        })
            }

            testTask
                "leases are judged by the database's clock: a process whose clock is 60 s ahead cannot take a live lease" {
                let! connectionString = server.Value.CreateDatabaseAsync()

                let onDatabaseClock = { quiet with DatabaseClock = true }

                let! (a: MartenEventStore) =
                    MartenEventStore.CreateAsync(connectionString, options = onDatabaseClock)

                let! (b: MartenEventStore) =
                    MartenEventStore.CreateAsync(connectionString, options = onDatabaseClock)

                let! (local: MartenEventStore) =
                    MartenEventStore.CreateAsync(connectionString, options = quiet)

                do!
                    finallyAsync
                        (fun () ->
                            task {
                                do! a.DisposeAsync()
                                do! b.DisposeAsync()
                                do! local.DisposeAsync()
                            })
                        (fun () ->
                            task {
                                let! _ =
                                    appendAndProcess (port a) [ applicationEvent 1.0 "skewed" ] [ "h", settings 5 50 ]

                                let leaseFor = TimeSpan.FromSeconds 30.0
                                let! held = (port a).ClaimRequestsAsync(1, DateTimeOffset.UtcNow, leaseFor, none)
                                let request = List.exactlyOne held.Claimed
                                let ahead = DateTimeOffset.UtcNow.AddSeconds 60.0
                                let! skewed = (port b).ClaimRequestsAsync(10, ahead, leaseFor, none)
                                Expect.isEmpty skewed.Recovered "the clock ahead does not see the live lease as lapsed"
                                Expect.isEmpty skewed.Claimed "nor claims the request"
                                let token = (HandlerRequest.lease request).Value.Token

                                let! renewed =
                                    (port a)
                                        .RenewLeasesAsync(
                                            [ request.Id, token ],
                                            DateTimeOffset.UtcNow + leaseFor,
                                            none
                                        )

                                Expect.equal renewed [ Ok() ] "the holder renews by the database's clock"
                                // A store judging by the caller's time shows what the skew did before.
                                let! taken = (port local).ClaimRequestsAsync(10, ahead, leaseFor, none)

                                Expect.equal
                                    (taken.Recovered |> List.map _.Id)
                                    [ request.Id ]
                                    "judged by a clock 60 s ahead, the live lease looks lapsed"
                            })
            }

            testTask "a concurrent mob of claimers never holds one request twice" {
                do!
                    withStore (fun store ->
                        task {
                            let events = [ for i in 1..60 -> applicationEvent (float i) "mob" ]
                            let handlers = [ for h in 1..5 -> $"h%d{h}", settings 5 (h % 3) ]
                            let! created = appendAndProcess (port store) events handlers
                            let held = ConcurrentDictionary<Guid, int>()
                            let claims = ConcurrentBag<Guid>()

                            let claimer () =
                                task {
                                    let mutable finished = false

                                    while not finished do
                                        let! claim =
                                            (port store).ClaimRequestsAsync(7, at 100.0, TimeSpan.FromHours 1.0, none)

                                        if claim.Claimed.IsEmpty then
                                            finished <- true
                                        else
                                            for request in claim.Claimed do
                                                claims.Add request.Id

                                                if not (held.TryAdd(request.Id, 1)) then
                                                    failtest $"request %O{request.Id} was handed to two claimers"
                                }

                            let! _ = Task.WhenAll [ for _ in 1..6 -> claimer () :> Task ]
                            Expect.equal claims.Count created.Length "every request is claimed exactly once"

                            Expect.equal
                                (Set.ofSeq claims)
                                (created |> List.map _.Id |> Set.ofList)
                                "the claimed requests are the created ones"
                        })
            }

            testTask "concurrent event claimers never share an event" {
                do!
                    withStore (fun store ->
                        task {
                            let events = [ for i in 1..200 -> applicationEvent (float i) "many" ]
                            let! _ = append (port store) events
                            let seen = ConcurrentDictionary<Guid, int>()

                            let claimer () =
                                task {
                                    let mutable finished = false

                                    while not finished do
                                        let! claims = (port store).ClaimEventsAsync(9, at 0.0, lease, none)

                                        if claims.IsEmpty then
                                            finished <- true
                                        else
                                            for claim in claims do
                                                if not (seen.TryAdd(claim.Event.Id, 1)) then
                                                    failtest $"event %O{claim.Event.Id} was claimed twice"
                                }

                            let! _ = Task.WhenAll [ for _ in 1..6 -> claimer () :> Task ]
                            Expect.equal seen.Count events.Length "every event is claimed once"
                        })
            }

            testTask "claims leave no transaction open while handlers run" {
                do!
                    withStore (fun store ->
                        task {
                            let! _ =
                                appendAndProcess (port store) [ applicationEvent 1.0 "e" ] [ "h", settings 5 50 ]

                            let! claim = (port store).ClaimRequestsAsync(1, at 10.0, lease, none)
                            let transaction = (port store).BeginHandlerTransaction claim.Claimed.Head

                            match transaction with
                            | Some(:? MartenHandlerTransaction as transaction) ->
                                transaction.Session.Store
                                    {
                                        Id = Guid.NewGuid()
                                        Text = "pending"
                                    }

                                let! open' = idleInTransaction store
                                Expect.equal open' 0L "no session may sit in a transaction while the handler runs"
                                do! (transaction :> IHandlerTransaction).DisposeAsync()
                            | Some other -> failtest $"unexpected transaction %A{other}"
                            | None -> failtest "the Marten store opens handler transactions"
                        })
            }
        ]

/// Counts the commands (single statements or batches: one round trip each) Npgsql sends to one
/// database while the body runs.
let private countCommands (database: string) (body: unit -> Task<unit>) =
    task {
        let count = ref 0

        // Statements only: the debounced wake-up NOTIFY of earlier work is sent beside the batch, in its
        // own transaction, and may make the pool open a connection (a CONNECT activity).
        let sees (activity: Activity) =
            activity.TagObjects
            |> Seq.exists (fun tag -> String.Equals(string tag.Value, database, StringComparison.Ordinal))
            && not (activity.DisplayName.StartsWith("CONNECT", StringComparison.Ordinal))
            && not (activity.TagObjects |> Seq.exists (fun tag -> string tag.Value = Sql.Notify))

        use listener =
            new ActivityListener(
                ShouldListenTo = (fun source -> source.Name = "Npgsql"),
                Sample = SampleActivity<ActivityContext>(fun _ -> ActivitySamplingResult.AllDataAndRecorded),
                ActivityStopped =
                    (fun activity ->
                        if sees activity && activity.Kind = ActivityKind.Client then
                            Interlocked.Increment count |> ignore)
            )

        ActivitySource.AddActivityListener listener
        do! body ()
        return count.Value
    }

let private roundTrips =
    testList
        "round trips"
        [
            testTask "claims, fan-outs, outcomes and gauges each take one round trip per batch" {
                do!
                    withStore (fun store ->
                        task {
                            use session = store.DocumentStore.QuerySession()
                            let! names = session.QueryAsync<string> "select current_database()"
                            let database = Seq.head names
                            let! _ = append (port store) [ for i in 1..20 -> applicationEvent (float i) "batch" ]
                            let claims = ref []

                            let! claimTrips =
                                countCommands database (fun () ->
                                    task {
                                        let! claimed = (port store).ClaimEventsAsync(10, at 0.0, lease, none)
                                        claims.Value <- claimed
                                    })

                            Expect.equal claimTrips 1 "claiming ten events is one round trip"

                            let processed =
                                claims.Value
                                |> List.map (fun claim ->
                                    {
                                        EventId = claim.Event.Id
                                        Token = claim.Token
                                        ProcessedAt = at 1.0
                                        Requests =
                                            [ for h in 1..3 -> requestFor claim.Event $"h%d{h}" (settings 5 50) ]
                                    })

                            let! commitTrips =
                                countCommands database (fun () ->
                                    task {
                                        let! results = (port store).CommitProcessingAsync(processed, none)
                                        Expect.allEqual results (Ok()) "the fan-outs commit"
                                    })

                            Expect.equal commitTrips 1 "committing ten fan-outs of three requests is one round trip"
                            let requests = ref []

                            let! requestTrips =
                                countCommands database (fun () ->
                                    task {
                                        let! claim = (port store).ClaimRequestsAsync(10, at 2.0, lease, none)
                                        requests.Value <- claim.Claimed
                                    })

                            Expect.equal requestTrips 1 "recovering and claiming ten requests is one round trip"

                            let outcomes =
                                requests.Value
                                |> List.map (fun request ->
                                    let token = (HandlerRequest.lease request).Value.Token

                                    match
                                        HandlerRequest.transition
                                            BackoffPolicy.Default
                                            (RequestCommand.Succeed(token, at 3.0))
                                            request
                                    with
                                    | Ok next ->
                                        {
                                            Request = next
                                            Token = token
                                            Transaction = None
                                        }
                                    | Error error -> failwith error.Message)

                            let! outcomeTrips =
                                countCommands database (fun () ->
                                    task {
                                        let! results = (port store).RecordOutcomesAsync(outcomes, none)
                                        Expect.allEqual results (Ok()) "the outcomes are written"
                                    })

                            Expect.equal outcomeTrips 1 "writing ten outcomes is one round trip"

                            let! statsTrips =
                                countCommands database (fun () ->
                                    task {
                                        let! _ = (port store).StatsAsync(at 4.0, none)
                                        ()
                                    })

                            Expect.equal statsTrips 1 "the gauges are one round trip"
                        })
            }
        ]

/// Through the engine: a handler's work in the Marten session commits with a success, and is
/// discarded with a failure.
let private engineTransactions =
    /// A handler that does its work in its Marten session, then returns `outcome`.
    let inSession (work: IDocumentSession -> HandlerContext -> unit) (outcome: HandlerResult) : Handler =
        fun context _ ->
            match context.Transaction with
            | Some(:? MartenHandlerTransaction as transaction) ->
                work transaction.Session context
                Task.FromResult outcome
            | Some _
            | None -> failwith "the Marten store gives handlers a Marten transaction"

    /// An engine on a fresh database with these handlers of "thing.happened"; runs the body, then
    /// disposes the store.
    let withEngine
        (handlers: (string * Handler) list)
        (executorOptions: ExecutorOptions)
        (body: TestSupport.Engine -> MartenEventStore -> Task<'T>)
        =
        task {
            let mutable made = None

            let makeStore () =
                task {
                    let! connectionString = server.Value.CreateDatabaseAsync()
                    let! store = MartenEventStore.CreateAsync(connectionString, options = quiet)
                    made <- Some store
                    return store :> IEventStore
                }

            let! (engine: TestSupport.Engine) =
                TestSupport.engineWith
                    makeStore
                    (TestSupport.configure [ for name, handler in handlers -> "thing.happened", name, handler, [] ])
                    ProcessorOptions.Default
                    executorOptions
                    ""

            let store: MartenEventStore = made.Value
            return! finallyAsync (fun () -> store.DisposeAsync().AsTask()) (fun () -> body engine store)
        }

    let run (outcome: HandlerResult) =
        let noteId = Guid.NewGuid()

        let handler =
            inSession
                (fun session _ ->
                    session.Store
                        {
                            Id = noteId
                            Text = "written by the handler"
                        })
                outcome

        withEngine [ "h", handler ] ExecutorOptions.Default (fun engine store ->
            task {
                let! _ = engine.Raise("thing.happened", {| |})
                do! engine.RoundAsync()
                use session = store.DocumentStore.QuerySession()
                let! note = session.LoadAsync<Note>(noteId)
                let! requests = engine.RequestsAsync()
                let request: HandlerRequest = List.exactlyOne requests
                return Option.ofObj (box note), request
            })

    testList
        "handler transactions through the engine"
        [
            testTask "a successful handler's session work commits with its completion" {
                let! (note: obj option), (request: HandlerRequest) = run HandlerResult.Succeeded
                Expect.isSome note "the handler's document was stored"
                Expect.isTrue (HandlerRequest.isTerminal request) "the request completed in the same transaction"
            }

            testTask "a failed handler's session work is discarded" {
                let! (note: obj option), (request: HandlerRequest) = run (HandlerResult.Failed "no")
                Expect.isNone note "a failed attempt's partial work is not committed"
                Expect.equal request.Errors 1 "the failure is recorded"
            }

            testTask "a handler whose own commit fails has the failure recorded at once, and its sibling completes" {
                // Both handlers insert the same document id: the second commit violates its key.
                let sameId = Guid.NewGuid()

                let handler =
                    inSession
                        (fun session context ->
                            session.Insert
                                {
                                    Id = sameId
                                    Text = context.Request.HandlerName.Value
                                })
                        HandlerResult.Succeeded

                do!
                    withEngine
                        [ "first", handler; "second", handler ]
                        { ExecutorOptions.Default with
                            Workers = 1
                        }
                        (fun engine _ ->
                            task {
                                let! _ = engine.Raise("thing.happened", {| |})
                                do! engine.RoundAsync()
                                let! (requests: HandlerRequest list) = engine.RequestsAsync()
                                let completed, failed = requests |> List.partition HandlerRequest.isTerminal
                                Expect.equal completed.Length 1 "one handler's commit went through"
                                let failed = List.exactlyOne failed
                                Expect.equal failed.Errors 1 "the other's failed commit is a failed attempt"

                                Expect.stringContains
                                    (failed.LastError |> Option.defaultValue "")
                                    "could not be committed"
                                    "with the commit's error"

                                Expect.isFalse
                                    (match failed.State with
                                     | RequestState.Running _ -> true
                                     | _ -> false)
                                    "its claim is released to the backoff, not left to lapse"
                            })
            }
        ]

let private transactions =
    let runHandler (store: MartenEventStore) (text: string) (staleToken: bool) =
        task {
            let! _ =
                appendAndProcess (port store) [ applicationEvent 1.0 "e" ] [ "h", settings 5 50 ]

            let! claim = (port store).ClaimRequestsAsync(1, at 10.0, lease, none)
            let request = claim.Claimed.Head
            let token = (HandlerRequest.lease request).Value.Token

            let transaction =
                match (port store).BeginHandlerTransaction request with
                | Some(:? MartenHandlerTransaction as transaction) -> transaction
                | Some _
                | None -> failwith "the Marten store opens handler transactions"

            let noteId = Guid.NewGuid()
            transaction.Session.Store { Id = noteId; Text = text }

            let outcomeEvent = applicationEvent 11.0 "handled"
            transaction.Session.AppendEvents [ outcomeEvent ] |> ignore

            Expect.isTrue (transaction :> IHandlerTransaction).HasChanges "the handler's session has changes"

            let next =
                match
                    HandlerRequest.transition BackoffPolicy.Default (RequestCommand.Succeed(token, at 12.0)) request
                with
                | Ok next -> next
                | Error error -> failwith error.Message

            let! results =
                (port store)
                    .RecordOutcomesAsync(
                        [
                            {
                                Request = next
                                Token = if staleToken then Guid.NewGuid() else token
                                Transaction = Some transaction
                            }
                        ],
                        none
                    )

            do! (transaction :> IHandlerTransaction).DisposeAsync()
            use session = store.DocumentStore.QuerySession()
            let! note = session.LoadAsync<Note>(noteId)
            let! stored = (port store).FindRequestAsync(request.Id, none)
            let! handled = (port store).FindEventAsync(outcomeEvent.Id, none)
            return results, Option.ofObj (box note), stored, handled, next
        }

    testList
        "handler transactions"
        [
            testTask "a handler's changes commit with its outcome" {
                do!
                    withStore (fun store ->
                        task {
                            let! results, note, stored, handled, next = runHandler store "kept" false
                            Expect.equal results [ Ok() ] "the outcome is written"
                            Expect.isSome note "the handler's document is committed"
                            Expect.isSome handled "the handler's appended event is committed"
                            Expect.equal stored (Some next) "the request is completed"
                        })
            }

            testTask "a handler's changes roll back when its outcome is stale" {
                do!
                    withStore (fun store ->
                        task {
                            let! results, note, stored, handled, _ = runHandler store "lost" true
                            Expect.equal results [ Error RequestError.StaleToken ] "the stale outcome is refused"
                            Expect.isNone note "the handler's document is rolled back"
                            Expect.isNone handled "the handler's appended event is rolled back"

                            Expect.isTrue
                                (stored |> Option.exists (fun request -> (HandlerRequest.lease request).IsSome))
                                "the request still runs under its claim"
                        })
            }
        ]

/// Saves a session the body filled, with a statement that fails its commit; whether the save failed.
let private saveFailing (store: MartenEventStore) (body: IDocumentSession -> unit) =
    task {
        use session = store.DocumentStore.LightweightSession()
        body session
        // Any failing statement fails the whole commit.
        session.QueueSqlCommand("select 1/0")

        try
            do! session.SaveChangesAsync()
            return false
        with _ ->
            return true
    }

let private outbox =
    testList
        "outbox"
        [
            testTask "events appended in an application's session commit with its changes, or not at all" {
                do!
                    withStore (fun store ->
                        task {
                            let kept = applicationEvent 1.0 "kept"
                            let dropped = applicationEvent 2.0 "dropped"

                            do!
                                task {
                                    use session = store.DocumentStore.LightweightSession()
                                    session.Store { Id = Guid.NewGuid(); Text = "order" }
                                    let stored = session.AppendEvents [ kept ]
                                    Expect.isTrue stored[0].CorrelationId.IsSome "the outbox assigns a correlation id"
                                    do! session.SaveChangesAsync()
                                }

                            do!
                                task {
                                    use session = store.DocumentStore.LightweightSession()
                                    session.AppendEvents [ dropped ] |> ignore
                                    // Disposed without saving: nothing is written.
                                }

                            let! all = TestSupport.toList ((port store).EventsAsync none)
                            Expect.equal (all |> List.map _.Id) [ kept.Id ] "only the saved session's event is stored"
                        })
            }

            testTask "a failed commit stores neither the application's change nor its events" {
                do!
                    withStore (fun store ->
                        task {
                            let noteId = Guid.NewGuid()
                            let event = applicationEvent 1.0 "never"

                            let! failed =
                                saveFailing store (fun session ->
                                    session.Store { Id = noteId; Text = "lost" }
                                    session.AppendEvents [ event ] |> ignore)

                            Expect.isTrue failed "the commit fails"
                            let! found = (port store).FindEventAsync(event.Id, none)
                            Expect.isNone found "the event rolls back with the failed commit"
                            use session = store.DocumentStore.QuerySession()
                            let! note = session.LoadAsync<Note> noteId
                            Expect.isNull (box note) "the application's change rolls back too"
                        })
            }

            testTask
                "with an engine's fan-out on append, a session stores its events processed with their requests, or nothing" {
                do!
                    withStore (fun store ->
                        task {
                            let configuration =
                                TestSupport.configure [ "note.taken", "index", TestSupport.succeed, [] ]

                            let instruments =
                                new Instruments("", (fun () -> None), (fun () -> DateTimeOffset.UtcNow))

                            let processor =
                                Processor(
                                    port store,
                                    configuration,
                                    ProcessorOptions.Default,
                                    instruments,
                                    Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance,
                                    TimeProvider.System
                                )

                            let told = ref 0

                            use _ =
                                processor.RequestsCreated.Subscribe(fun () -> Interlocked.Increment told |> ignore)

                            use _ =
                                (store :> IFanOutOnAppend).UseFanOut((processor.AppendFanOut(fun () -> true)).Value)

                            let lost = applicationEvent 1.0 "note.taken"

                            let! failed =
                                saveFailing store (fun session -> session.AppendEvents [ lost ] |> ignore)

                            Expect.isTrue failed "the commit fails"
                            let! found = (port store).FindEventAsync(lost.Id, none)
                            Expect.isNone found "the event rolls back"
                            let! requests = TestSupport.toList ((port store).RequestsAsync none)
                            Expect.isEmpty requests "its requests roll back with it"
                            Expect.equal told.Value 0 "no one is told of a rollback"
                            let kept = applicationEvent 2.0 "note.taken"

                            do!
                                task {
                                    use session = store.DocumentStore.LightweightSession()
                                    session.AppendEvents [ kept ] |> ignore
                                    do! session.SaveChangesAsync()
                                }

                            let! found = (port store).FindEventAsync(kept.Id, none)
                            Expect.isSome found.Value.ProcessedAt "stored processed by the session's commit"
                            let! requests = TestSupport.toList ((port store).RequestsAsync none)

                            Expect.equal
                                (requests |> List.map (fun r -> r.EventId, r.HandlerName.Value, r.State))
                                [ kept.Id, "index", RequestState.Runnable None ]
                                "its request is stored with it, runnable"

                            Expect.equal told.Value 1 "the executor is told once the commit is done"
                            let! claimed = (port store).ClaimEventsAsync(10, at 100.0, lease, none)
                            Expect.isEmpty claimed "nothing is left for the processor"
                        })
            }

            testTask "entities that raise events have them appended when saved, then cleared" {
                do!
                    withStore (fun store ->
                        task {
                            let order = Order(Id = Guid.NewGuid(), Total = 3)
                            let placed = applicationEvent 1.0 "order.placed"
                            order.Raised.Raise placed

                            do!
                                task {
                                    use session = store.DocumentStore.LightweightSession()
                                    session.Store order
                                    do! session.SaveChangesAsync()
                                }

                            let! found = (port store).FindEventAsync(placed.Id, none)
                            Expect.isSome found "the raised event is appended with the entity"
                            Expect.isEmpty order.Raised.Events "the raiser is cleared after the commit"

                            do!
                                task {
                                    use session = store.DocumentStore.LightweightSession()
                                    order.Total <- 4
                                    session.Store order
                                    do! session.SaveChangesAsync()
                                }

                            let! all = TestSupport.toList ((port store).EventsAsync none)
                            Expect.equal all.Length 1 "saving again appends nothing new"
                        })
            }
        ]

let private administration =
    testList
        "administration"
        [
            testTask "dead requests are listed, filtered, paged, named, re-executed and canceled" {
                do!
                    withStore (fun store ->
                        task {
                            let events =
                                [
                                    for i in 1..4 -> applicationEvent (float i) (if i % 2 = 0 then "even" else "odd")
                                ]

                            let! _ =
                                appendAndProcess (port store) events [ "h1", settings 1 50; "h2", settings 1 50 ]

                            let! claim = (port store).ClaimRequestsAsync(100, at 10.0, lease, none)
                            let! _ = (port store).ClaimRequestsAsync(0, at 100.0, lease, none)

                            let! all =
                                (TestSupport.adminOf (port store))
                                    .DeadRequestsAsync({ DeadRequestQuery.all with Limit = 3 }, none)

                            Expect.equal all.Total 8L "every request died"
                            Expect.equal all.Requests.Length 3 "one page of three"

                            let! next =
                                (TestSupport.adminOf (port store))
                                    .DeadRequestsAsync(
                                        { DeadRequestQuery.all with
                                            Limit = 3
                                            Offset = 6
                                        },
                                        none
                                    )

                            Expect.equal next.Requests.Length 2 "the last page holds the rest"

                            let! beyond =
                                (TestSupport.adminOf (port store))
                                    .DeadRequestsAsync(
                                        { DeadRequestQuery.all with
                                            Offset = 50
                                        },
                                        none
                                    )

                            Expect.equal
                                (beyond.Total, beyond.Requests)
                                (8L, [])
                                "a page beyond the end is empty but counts all"

                            let query =
                                { DeadRequestQuery.all with
                                    EventNames = [ EventName.Create "even" ]
                                    HandlerNames = [ HandlerName.Create "h2" ]
                                }

                            let! filtered = (TestSupport.adminOf (port store)).DeadRequestsAsync(query, none)
                            Expect.equal filtered.Total 2L "two dead requests of even events for h2"
                            let! names = (TestSupport.adminOf (port store)).DeadRequestNamesAsync none

                            Expect.equal
                                names
                                ([ EventName.Create "even"; EventName.Create "odd" ],
                                 [ HandlerName.Create "h1"; HandlerName.Create "h2" ])
                                "distinct names, sorted"

                            let target = filtered.Requests.Head

                            let! reExecuted =
                                (TestSupport.adminOf (port store))
                                    .UpdateRequestAsync(
                                        target.Id,
                                        HandlerRequest.transition BackoffPolicy.Default RequestCommand.ReExecute,
                                        none
                                    )

                            match reExecuted with
                            | Ok request ->
                                Expect.isTrue
                                    (HandlerRequest.isRunnable (at 0.0) request)
                                    "a re-executed request is runnable"
                            | Error error -> failtest error.Message

                            let! stored = (port store).FindRequestAsync(target.Id, none)
                            Expect.equal (Ok stored.Value) reExecuted "the update is stored"
                            let other = filtered.Requests[1]

                            let! canceled =
                                (TestSupport.adminOf (port store))
                                    .UpdateRequestAsync(
                                        other.Id,
                                        HandlerRequest.transition
                                            BackoffPolicy.Default
                                            (RequestCommand.Cancel(at 200.0)),
                                        none
                                    )

                            Expect.isOk canceled "a dead request can be canceled"

                            let! refused =
                                (TestSupport.adminOf (port store))
                                    .UpdateRequestAsync(
                                        other.Id,
                                        HandlerRequest.transition BackoffPolicy.Default RequestCommand.ReExecute,
                                        none
                                    )

                            Expect.equal
                                refused
                                (Error(AdminError.Refused RequestError.AlreadyCanceled))
                                "the core refuses"

                            let missingId = Guid.NewGuid()

                            let! missing =
                                (TestSupport.adminOf (port store))
                                    .UpdateRequestAsync(
                                        missingId,
                                        HandlerRequest.transition BackoffPolicy.Default RequestCommand.ReExecute,
                                        none
                                    )

                            Expect.equal
                                missing
                                (Error(AdminError.RequestNotFound missingId))
                                "an unknown id is not found"

                            let! after =
                                (TestSupport.adminOf (port store)).DeadRequestsAsync(DeadRequestQuery.all, none)

                            Expect.equal after.Total 6L "two fewer dead requests"
                            ignore claim
                        })
            }
        ]

/// Runs SQL on the store's database, as a person editing rows by hand would.
let private byHand (store: MartenEventStore) (sql: string) =
    task {
        use session = store.DocumentStore.LightweightSession()
        session.QueueSqlCommand sql
        do! session.SaveChangesAsync()
    }

let private setAside =
    testList
        "unreadable rows"
        [
            testTask "an event that cannot be read is set aside on its own; the events claimed beside it go on" {
                do!
                    withStore (fun store ->
                        task {
                            let seen = ConcurrentQueue<SetAsideItem>()
                            use _ = (store :> ISetAsideItems).ItemsSetAside.Subscribe(Seq.iter seen.Enqueue)
                            let events = [ for i in 1..30 -> applicationEvent (float i) "healthy" ]
                            let! _ = append (port store) events

                            do!
                                byHand
                                    store
                                    $"update mt_doc_events_event set data = jsonb_set(data, '{{name}}', '\"\"') where id = '%O{events.Head.Id}'"

                            // 100 levels of arrays: more than a default JSON reader reads back.
                            let deep = String.replicate 100 "[" + String.replicate 100 "]"

                            do!
                                byHand
                                    store
                                    $"update mt_doc_events_event set data = jsonb_set(data, '{{data}}', '{{\"a\": %s{deep}}}') where id = '%O{events[1].Id}'"

                            let! claims = (port store).ClaimEventsAsync(50, at 100.0, lease, none)

                            Expect.equal
                                (claims |> List.map _.Event.Id)
                                (events |> List.skip 2 |> List.map _.Id)
                                "the 28 healthy events are claimed, in order"

                            let! listed = (store :> ISetAsideItems).SetAsideAsync none

                            Expect.equal
                                (listed |> List.map (fun item -> item.Kind, item.Id) |> List.sort)
                                ([ for e in List.take 2 events -> StoredItemKind.Event, e.Id ] |> List.sort)
                                "the two unreadable events are listed"

                            Expect.all
                                listed
                                (fun item -> item.Reason <> "" && item.Stored <> "")
                                "with a reason and the stored text"

                            Expect.equal seen.Count 2 "and announced"
                            let! again = (port store).ClaimEventsAsync(50, at 1000.0, lease, none)

                            Expect.equal
                                (again |> List.map _.Event.Id)
                                (claims |> List.map _.Event.Id)
                                "after the lease only the healthy events are claimed again, never a set-aside one"

                            let! stats = (port store).StatsAsync(at 1000.0, none)
                            Expect.equal stats.UnprocessedEvents 28L "nor counted as unprocessed"
                        })
            }

            testTask "a request that cannot be read is set aside; the requests claimed beside it run" {
                do!
                    withStore (fun store ->
                        task {
                            let! created =
                                appendAndProcess
                                    (port store)
                                    [ for i in 1..20 -> applicationEvent (float i) "healthy" ]
                                    [ "h", settings 5 50 ]

                            let first = created |> List.minBy HandlerRequest.runOrder

                            do!
                                byHand
                                    store
                                    $"update mt_doc_events_request set data = jsonb_set(data, '{{handlerName}}', '\"\"') where id = '%O{first.Id}'"

                            let! claim = (port store).ClaimRequestsAsync(50, at 100.0, lease, none)
                            Expect.equal claim.Claimed.Length 19 "the 19 healthy requests are claimed"
                            Expect.isFalse (claim.Claimed |> List.exists (fun r -> r.Id = first.Id)) "not the bad one"
                            let! listed = (store :> ISetAsideItems).SetAsideAsync none

                            Expect.equal
                                (listed |> List.map (fun item -> item.Kind, item.Id))
                                [ StoredItemKind.Request, first.Id ]
                                "the bad one is listed"

                            let! later = (port store).ClaimRequestsAsync(50, at 10_000.0, lease, none)

                            Expect.isFalse
                                (later.Recovered |> List.exists (fun r -> r.Id = first.Id))
                                "it is never recovered as a lapsed lease"

                            Expect.isFalse (later.Claimed |> List.exists (fun r -> r.Id = first.Id)) "nor claimed"
                        })
            }
        ]

let private nasty =
    testList
        "bad input"
        [
            testTask "names and data with quotes, unicode and large payloads round-trip unchanged" {
                do!
                    withStore (fun store ->
                        task {
                            let names =
                                [
                                    "o'brien\"; DROP TABLE mt_doc_events_event; --"
                                    "ünïcödé ✓ 事件 🚀"
                                    "back\\slash $1 ? :name @p %s {0}"
                                    String('x', Name.MaxLength)
                                ]

                            let big = String('é', 100_000)

                            let data =
                                match
                                    EventData.TrySerialise(
                                        {|
                                            quote = "it's \"quoted\""
                                            unicode = "😀 \u0000 nul and \u2028 separators"
                                            number = 12345678901234567890.5
                                            big = big
                                        |}
                                    )
                                with
                                | Ok data -> data
                                | Error error -> failwith error.Message

                            let events =
                                names
                                |> List.mapi (fun i name ->
                                    Event.domain
                                        (Guid.CreateVersion7())
                                        (at (float i))
                                        (EventName.Create name)
                                        { Id = name; Name = name }
                                        data)

                            let! stored = append (port store) events

                            for event in stored do
                                let! found = (port store).FindEventAsync(event.Id, none)
                                Expect.equal found (Some event) "the event reads back unchanged"

                            let! requests = appendAndProcess (port store) [] []
                            Expect.isEmpty requests "nothing more to process"
                            let! claims = (port store).ClaimEventsAsync(10, at 0.0, lease, none)

                            let processed =
                                claims
                                |> List.map (fun claim ->
                                    {
                                        EventId = claim.Event.Id
                                        Token = claim.Token
                                        ProcessedAt = at 1.0
                                        Requests =
                                            [
                                                HandlerRequest.create
                                                    (Guid.CreateVersion7())
                                                    claim.Event
                                                    (HandlerName.Create claim.Event.Name.Value)
                                                    (settings 1 50)
                                            ]
                                    })

                            let! _ = (port store).CommitProcessingAsync(processed, none)
                            let! claim = (port store).ClaimRequestsAsync(10, at 2.0, lease, none)

                            let failed =
                                claim.Claimed
                                |> List.map (fun request ->
                                    let token = (HandlerRequest.lease request).Value.Token

                                    match
                                        HandlerRequest.transition
                                            BackoffPolicy.Default
                                            (RequestCommand.Fail(token, at 3.0, request.EventName.Value, 0.0))
                                            request
                                    with
                                    | Ok next ->
                                        {
                                            Request = next
                                            Token = token
                                            Transaction = None
                                        }
                                    | Error error -> failwith error.Message)

                            let! results = (port store).RecordOutcomesAsync(failed, none)
                            Expect.allEqual results (Ok()) "the failures are written"

                            for outcome in failed do
                                let! found = (port store).FindRequestAsync(outcome.Request.Id, none)
                                Expect.equal found (Some outcome.Request) "the request reads back unchanged"

                            let! deadNames = (TestSupport.adminOf (port store)).DeadRequestNamesAsync none

                            Expect.equal
                                (fst deadNames |> List.map _.Value)
                                (names |> List.sort)
                                "dead names read back unchanged"

                            let! filtered =
                                (TestSupport.adminOf (port store))
                                    .DeadRequestsAsync(
                                        { DeadRequestQuery.all with
                                            EventNames = [ EventName.Create names[0] ]
                                        },
                                        none
                                    )

                            Expect.equal filtered.Total 1L "a filter on a nasty name finds its request"
                        })
            }

            testTask "appending to a database that is down throws to the caller" {
                let builder = NpgsqlConnectionStringBuilder(server.Value.ConnectionString)
                builder.Port <- 1
                builder.Timeout <- 3

                use documentStore =
                    DocumentStore.For(fun (options: StoreOptions) ->
                        options.Connection builder.ConnectionString
                        options.UseEventsDocuments() |> ignore)

                use store = new MartenEventStore(documentStore, quiet)

                let! threw =
                    task {
                        try
                            let! _ = append (port store) [ applicationEvent 0.0 "lost" ]
                            return None
                        with error ->
                            return Some error
                    }

                Expect.isSome threw "the caller must get an exception when the database is down"
            }
        ]

let private waitFor (signal: WorkSignal) (store: MartenEventStore) =
    let arrived =
        TaskCompletionSource<unit>(TaskCreationOptions.RunContinuationsAsynchronously)

    let subscription =
        (port store)
            .WorkArrived.Subscribe(fun received ->
                if received = signal then
                    arrived.TrySetResult() |> ignore)

    arrived.Task, subscription

/// Waits for a task, failing (not hanging) after a generous bound: a liveness check, not a latency one.
let private within (pending: Task<unit>) (what: string) =
    task {
        let! finished = Task.WhenAny(pending, Task.Delay(TimeSpan.FromSeconds 60.0))

        if not (obj.ReferenceEquals(finished, pending)) then
            failtest $"%s{what} never arrived"
    }

let private notifications =
    testList
        "LISTEN/NOTIFY"
        [
            testTask "new work signals this process as soon as it is committed, without the listener" {
                do!
                    withStore (fun store ->
                        task {
                            let signals = ConcurrentQueue<WorkSignal>()
                            use _ = (port store).WorkArrived.Subscribe signals.Enqueue

                            let! created =
                                appendAndProcess (port store) [ applicationEvent 1.0 "local" ] [ "h", settings 1 50 ]

                            Expect.sequenceEqual
                                signals
                                [ WorkSignal.EventsAppended; WorkSignal.RequestsReady ]
                                "an append signals events, a fan-out with requests signals requests"

                            signals.Clear()
                            let! claim = (port store).ClaimRequestsAsync(1, at 10.0, lease, none)
                            let request = claim.Claimed.Head
                            let token = (HandlerRequest.lease request).Value.Token

                            // What the engine's Release command makes: the request given back unrun.
                            let released =
                                { request with
                                    State = RequestState.Runnable None
                                }

                            let! _ =
                                (port store)
                                    .RecordOutcomesAsync(
                                        [
                                            {
                                                Request = released
                                                Token = token
                                                Transaction = None
                                            }
                                        ],
                                        none
                                    )

                            Expect.sequenceEqual
                                signals
                                [ WorkSignal.RequestsReady ]
                                "a released request is ready again"

                            signals.Clear()
                            let! claim = (port store).ClaimRequestsAsync(1, at 11.0, lease, none)
                            let request = claim.Claimed.Head
                            let token = (HandlerRequest.lease request).Value.Token

                            let dead =
                                match
                                    HandlerRequest.transition
                                        BackoffPolicy.Default
                                        (RequestCommand.Fail(token, at 12.0, "no", 0.0))
                                        request
                                with
                                | Ok next -> next
                                | Error error -> failwith error.Message

                            let! _ =
                                (port store)
                                    .RecordOutcomesAsync(
                                        [
                                            {
                                                Request = dead
                                                Token = token
                                                Transaction = None
                                            }
                                        ],
                                        none
                                    )

                            Expect.isEmpty signals "a dead request signals nothing"

                            let! _ =
                                (TestSupport.adminOf (port store))
                                    .UpdateRequestAsync(
                                        created.Head.Id,
                                        HandlerRequest.transition BackoffPolicy.Default RequestCommand.ReExecute,
                                        none
                                    )

                            Expect.sequenceEqual signals [ WorkSignal.RequestsReady ] "a re-executed request is ready"
                        })
            }

            testTask "no statement of the hot path sends NOTIFY; notifications come after commit, debounced" {
                let tables: Sql.Tables = { Events = "e"; Requests = "r" }

                let statements =
                    [
                        Sql.claimEvents tables
                        Sql.releaseEvents tables
                        Sql.commitProcessing tables
                        Sql.recoverRequests tables
                        Sql.claimRequests tables
                        Sql.recordOutcomes tables
                        Sql.renewLeases tables
                        Sql.writeRequest tables
                    ]

                for statement in statements do
                    Expect.isFalse
                        (statement.Contains("notify", StringComparison.OrdinalIgnoreCase))
                        $"a writing statement must not notify: %s{statement}"

                do!
                    withStore (fun store ->
                        task {
                            let wakeups = Wakeups.For store.DocumentStore
                            let before = wakeups.Sent
                            let clock = Stopwatch.StartNew()
                            let appends = 200

                            do!
                                Parallel.ForEachAsync(
                                    [ 1..appends ],
                                    ParallelOptions(MaxDegreeOfParallelism = 8),
                                    fun index _ ->
                                        ValueTask(append (port store) [ applicationEvent (float index) "burst" ])
                                )

                            // The last append's notification is sent after its commit, within one window.
                            let deadline = Stopwatch.StartNew()

                            while wakeups.Sent = before && deadline.Elapsed < TimeSpan.FromSeconds 60.0 do
                                do! Task.Delay 10

                            do! Task.Delay(Wakeups.Window * 4.0)
                            let sent = wakeups.Sent - before
                            let windows = int (clock.Elapsed / Wakeups.Window) + 1
                            Expect.isGreaterThan sent 0L "the appends were notified"
                            Expect.equal wakeups.Failures 0L "every notification was sent"

                            Expect.isLessThanOrEqual
                                sent
                                (int64 windows)
                                $"at most one notification per window: %d{sent} for %d{appends} appends in %d{windows} windows"
                        })
            }

            testTask "appends and fan-outs wake listeners in other stores of the same database" {
                let! connectionString = server.Value.CreateDatabaseAsync()

                let! (writer: MartenEventStore) =
                    MartenEventStore.CreateAsync(connectionString, options = quiet)

                let! (listener: MartenEventStore) =
                    MartenEventStore.CreateAsync(
                        connectionString,
                        options =
                            { MartenEventStoreOptions.Default with
                                ListenerProbeInterval = TimeSpan.FromMilliseconds 50.0
                            }
                    )

                let failures = ref 0
                // Lives as long as the listener, which the test disposes.
                listener.ListenerFailed.Add(fun _ -> Interlocked.Increment failures |> ignore)

                do!
                    finallyAsync
                        (fun () ->
                            task {
                                do! writer.DisposeAsync()
                                do! listener.DisposeAsync()
                            })
                        (fun () ->
                            task {
                                do! listener.WhenListening
                                let appended, subscription = waitFor WorkSignal.EventsAppended listener
                                let clock = Stopwatch.StartNew()
                                let! _ = append (port writer) [ applicationEvent 0.0 "wake" ]
                                do! within appended "the events notification"
                                let eventLatency = clock.Elapsed
                                subscription.Dispose()
                                let ready, subscription = waitFor WorkSignal.RequestsReady listener
                                let! claims = (port writer).ClaimEventsAsync(1, at 0.0, lease, none)
                                clock.Restart()

                                let! _ =
                                    (port writer)
                                        .CommitProcessingAsync(
                                            [
                                                {
                                                    EventId = claims.Head.Event.Id
                                                    Token = claims.Head.Token
                                                    ProcessedAt = at 1.0
                                                    Requests = [ requestFor claims.Head.Event "h" (settings 5 50) ]
                                                }
                                            ],
                                            none
                                        )

                                do! within ready "the requests notification"
                                let requestLatency = clock.Elapsed
                                subscription.Dispose()

                                printfn
                                    $"LISTEN/NOTIFY wake-up after commit: events %.1f{eventLatency.TotalMilliseconds} ms, requests %.1f{requestLatency.TotalMilliseconds} ms"

                                let outbox, subscription = waitFor WorkSignal.EventsAppended listener
                                use session = writer.DocumentStore.LightweightSession()
                                session.AppendEvents [ applicationEvent 2.0 "outbox" ] |> ignore
                                do! session.SaveChangesAsync()
                                do! within outbox "the outbox's events notification"
                                subscription.Dispose()
                                Expect.equal failures.Value 0 "probing a live connection every 50 ms never fails"
                            })
            }

            testTask "the listener reconnects after the server restarts" {
                let! (postgres: ThrowawayPostgres) = ThrowawayPostgres.StartAsync()

                do!
                    finallyAsync (fun () -> postgres.DisposeAsync().AsTask()) (fun () ->
                        task {
                            let! (connectionString: string) = postgres.CreateDatabaseAsync()

                            let options =
                                { MartenEventStoreOptions.Default with
                                    ReconnectDelay = TimeSpan.FromMilliseconds 100.0
                                    MaxReconnectDelay = TimeSpan.FromMilliseconds 500.0
                                }

                            let! (listener: MartenEventStore) =
                                MartenEventStore.CreateAsync(connectionString, options = options)

                            do!
                                finallyAsync (fun () -> listener.DisposeAsync().AsTask()) (fun () ->
                                    task {
                                        do! listener.WhenListening
                                        let failures = ref 0

                                        use _ =
                                            listener.ListenerFailed.Subscribe(fun _ ->
                                                Interlocked.Increment failures |> ignore)

                                        do! postgres.RestartAsync()

                                        let! (writer: MartenEventStore) =
                                            MartenEventStore.CreateAsync(connectionString, options = quiet)

                                        do!
                                            finallyAsync (fun () -> writer.DisposeAsync().AsTask()) (fun () ->
                                                task {
                                                    let appended, subscription =
                                                        waitFor WorkSignal.EventsAppended listener

                                                    use _ = subscription
                                                    // Appends until the listener is back: notifications sent while it
                                                    // reconnects are lost, which is why it signals on reconnecting.
                                                    let mutable heard = false
                                                    let clock = Stopwatch.StartNew()

                                                    while not heard && clock.Elapsed < TimeSpan.FromSeconds 60.0 do
                                                        let! _ =
                                                            append (port writer) [ applicationEvent 0.0 "again" ]

                                                        let! finished = Task.WhenAny(appended, Task.Delay 200)
                                                        heard <- obj.ReferenceEquals(finished, appended)

                                                    Expect.isTrue
                                                        heard
                                                        "the listener hears notifications after the restart"

                                                    Expect.isGreaterThan
                                                        failures.Value
                                                        0
                                                        "the broken connection was reported"
                                                })
                                    })
                        })
            }
        ]

let private schema =
    testList
        "schema"
        [
            testTask "Marten sees no change to make after the store's schema is applied" {
                let! connectionString = server.Value.CreateDatabaseAsync()

                let! (store: MartenEventStore) =
                    MartenEventStore.CreateAsync(connectionString, "events_schema", quiet)

                do!
                    finallyAsync (fun () -> store.DisposeAsync().AsTask()) (fun () ->
                        task {
                            let! migration = store.DocumentStore.Storage.Database.CreateMigrationAsync()

                            let ddl =
                                migration.Deltas
                                |> Seq.filter (fun delta -> delta.Difference <> Weasel.Core.SchemaPatchDifference.None)
                                |> Seq.map (fun delta -> delta.SchemaObject.Identifier.QualifiedName)
                                |> List.ofSeq

                            Expect.isEmpty
                                ddl
                                "applying the schema twice must change nothing (partial indexes included)"

                            let! _ =
                                appendAndProcess (port store) [ applicationEvent 0.0 "schema" ] [ "h", settings 5 50 ]

                            let! all = TestSupport.toList ((port store).EventsAsync none)
                            Expect.equal all.Length 1 "the store works in its own schema"
                            let event = applicationEvent 1.0 "seeded"
                            do! seedRequests store [ requestFor event "h" (settings 5 50) ]
                            use session = store.DocumentStore.QuerySession()

                            let! types =
                                session.QueryAsync<string>(
                                    "select distinct mt_dotnet_type from events_schema.mt_doc_events_request"
                                )

                            Expect.equal
                                (List.ofSeq types)
                                [ typeof<RequestDocument>.FullName ]
                                "rows the store inserts carry the type name Marten writes"
                        })
            }

            testTask "a store over a document store whose schema nobody applied creates it on first use" {
                let! connectionString = server.Value.CreateDatabaseAsync()

                use documentStore =
                    DocumentStore.For(fun (options: StoreOptions) ->
                        options.Connection(connectionString: string)
                        options.UseEventsDocuments() |> ignore)

                use store = new MartenEventStore(documentStore, quiet)
                // Raw SQL first (the claims), before any Marten session made the tables.
                let! claim = (port store).ClaimRequestsAsync(10, at 0.0, lease, none)
                Expect.isEmpty claim.Claimed "no relation-does-not-exist: the tables were made on first use"

                let! _ =
                    appendAndProcess (port store) [ applicationEvent 0.0 "first" ] [ "h", settings 5 50 ]

                let! claim = (port store).ClaimRequestsAsync(10, at 1.0, lease, none)
                Expect.equal claim.Claimed.Length 1 "and the store works"
            }

            testCase "a connection pool too small to work is refused at once, with the setting to change"
            <| fun () ->
                use documentStore =
                    DocumentStore.For(fun (options: StoreOptions) ->
                        options.Connection("Host=127.0.0.1;Port=1;Username=nobody;Maximum Pool Size=1": string)
                        options.UseEventsDocuments() |> ignore)

                let message =
                    try
                        new MartenEventStore(documentStore, quiet) |> ignore
                        ""
                    with :? ArgumentException as error ->
                        error.Message

                Expect.stringContains message "Maximum Pool Size" "refused, the message naming the setting"
                Expect.stringContains message "allows 1" "and what it is"

            testTask "the listener's connection is its own: a pool of 2 keeps both connections for the work" {
                let! connectionString = server.Value.CreateDatabaseAsync()

                use documentStore =
                    DocumentStore.For(fun (options: StoreOptions) ->
                        options.Connection($"%s{connectionString};Maximum Pool Size=2;Timeout=3": string)
                        options.UseEventsDocuments() |> ignore)

                let store =
                    new MartenEventStore(
                        documentStore,
                        { MartenEventStoreOptions.Default with
                            ListenerProbeInterval = TimeSpan.FromMilliseconds 50.0
                        }
                    )

                do!
                    finallyAsync (fun () -> store.DisposeAsync().AsTask()) (fun () ->
                        task {
                            do! store.WhenListening
                            // Both of the pool's connections at once, while the listener listens.
                            use first = documentStore.Storage.Database.CreateConnection()
                            use second = documentStore.Storage.Database.CreateConnection()
                            do! Task.WhenAll(first.OpenAsync(), second.OpenAsync())
                            first.Close()
                            second.Close()
                            let appended, subscription = waitFor WorkSignal.EventsAppended store
                            use _ = subscription
                            // Another store's append is heard through the listener's own connection.
                            let! (writer: MartenEventStore) =
                                MartenEventStore.CreateAsync(connectionString, options = quiet)

                            do!
                                finallyAsync (fun () -> writer.DisposeAsync().AsTask()) (fun () ->
                                    task {
                                        let! _ = append (port writer) [ applicationEvent 0.0 "heard" ]
                                        do! within appended "the events notification"
                                    })
                        })
            }
        ]

/// A Marten store over a fresh database of the run's server, for suites that take a store factory
/// (the store contract). It does not listen (its own work still signals it), so that suites that never
/// dispose their stores leave no connection behind once the pool's idle connections are closed.
let freshStore () : Task<MartenEventStore> =
    task {
        let! connectionString = server.Value.CreateDatabaseAsync()
        return! MartenEventStore.CreateAsync(connectionString, options = quiet)
    }

/// As `freshStore`, judging leases by the database's clock (the default), for suites in real time.
let freshStoreOnDatabaseClock () : Task<MartenEventStore> =
    task {
        let! connectionString = server.Value.CreateDatabaseAsync()

        return! MartenEventStore.CreateAsync(connectionString, options = { quiet with DatabaseClock = true })
    }

/// The Marten store's tests.
let tests =
    testList
        "Marten"
        [
            equivalence
            events
            requests
            roundTrips
            transactions
            engineTransactions
            outbox
            administration
            nasty
            notifications
            setAside
            schema
        ]
