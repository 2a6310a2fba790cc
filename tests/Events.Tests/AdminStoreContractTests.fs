/// The contract of the administration port and of the core's administration over it, written once
/// against a store factory so that every store (in memory, PostgreSQL) runs the same laws: each query
/// equals the core's filter over every request, pages cover each match once, bulk changes go through
/// the core's transitions, and a canary redrive only goes on when its canaries succeed.
module Events.Tests.AdminStoreContractTests

open System
open System.Threading
open System.Threading.Tasks
open Expecto
open Events.Core
open Events.Tests.TestSupport
open Events.Tests.StoreContractTests

let private ct = CancellationToken.None
let private seconds (n: float) = TimeSpan.FromSeconds n
let private minutes (n: float) = TimeSpan.FromMinutes n

/// Claims every runnable request at `at` and fails each with the error `errorOf` gives it.
let private failEach (store: IEventStore) (at: DateTimeOffset) (errorOf: HandlerRequest -> string) =
    task {
        let! claim = store.ClaimRequestsAsync(10000, at, minutes 1.0, ct)

        let outcomes =
            claim.Claimed
            |> List.map (fun claimed ->
                outcomeOf (RequestCommand.Fail(tokenOf claimed, at, errorOf claimed, 0.5)) claimed)

        let! results = store.RecordOutcomesAsync(outcomes, ct)
        Expect.allEqual results (Ok()) "outcomes of current claims are recorded"
        return outcomes |> List.map _.Request
    }

/// Every page of a query, followed by its cursors.
let private allPages (admin: IAdminStore) (filter: RequestFilter) (now: DateTimeOffset) (size: int) =
    task {
        let pages = ResizeArray<HandlerRequest list>()
        let mutable cursor = None
        let mutable going = true

        while going do
            let! page = admin.QueryRequestsAsync(filter, now, cursor, size, ct)
            pages.Add page.Requests
            cursor <- page.Next
            going <- page.Next.IsSome

        return List.ofSeq pages
    }

/// A store with requests in every status: 12 events of two names, three handlers (a: dead on the
/// first failure, b: five tries, c: always succeeds) and their requests failed, completed, canceled,
/// backing off, running and runnable. Returns the store and every request as stored.
let private populated (makeStore: unit -> Task<IEventStore>) =
    task {
        let! store = makeStore ()

        let items =
            [
                for i in 0..11 ->
                    newEvent (t0 + seconds (float i)) (if i % 2 = 0 then "order.placed" else "user.joined"),
                    [ handler "a" 10 1; handler "b" 20 5; handler "c" 30 5 ]
            ]

        let! _ = fanOut store t0 items
        let now = t0 + minutes 1.0

        // Every "a" and "b" fails once with a message that names its event: all "a" are dead, "b" back off.
        let! claim = store.ClaimRequestsAsync(10000, now, minutes 1.0, ct)

        let outcomes =
            claim.Claimed
            |> List.map (fun claimed ->
                match claimed.HandlerName.Value with
                | "c" when claimed.EventTimestamp < t0 + seconds 6.0 -> succeeded now claimed
                | "c" -> outcomeOf (RequestCommand.Release(tokenOf claimed)) claimed
                | _ ->
                    outcomeOf
                        (RequestCommand.Fail(
                            tokenOf claimed,
                            now,
                            $"order %O{claimed.EventId} failed after %d{claimed.EventTimestamp.Second} tries",
                            0.5
                        ))
                        claimed)

        let! results = store.RecordOutcomesAsync(outcomes, ct)
        Expect.allEqual results (Ok()) "the outcomes are recorded"

        // One runnable "c" canceled, one claimed and left running.
        let! all = toList (store.RequestsAsync ct)

        let runnableC =
            all
            |> List.filter (fun r -> r.HandlerName.Value = "c" && HandlerRequest.isRunnable now r)

        let! canceled =
            (adminOf store)
                .UpdateRequestAsync(runnableC[0].Id, HandlerRequest.transition policy (RequestCommand.Cancel now), ct)

        Expect.isOk canceled "a runnable request can be canceled"
        let! _ = store.ClaimRequestsAsync(1, now, minutes 10.0, ct)
        let! all = toList (store.RequestsAsync ct)
        return store, all, now
    }

let private filters (all: HandlerRequest list) =
    let someEvent = all[3].EventId

    let byStatus =
        RequestStatus.all
        |> List.map (fun status ->
            $"status %s{RequestStatus.name status}",
            { RequestFilter.all with
                Statuses = [ status ]
            })

    let others =
        [
            "every request", RequestFilter.all
            "dead or canceled",
            { RequestFilter.all with
                Statuses = [ RequestStatus.Dead; RequestStatus.Canceled ]
            }
            "handler b",
            { RequestFilter.all with
                HandlerNames = [ HandlerName.Create "b" ]
            }
            "event name user.joined and handler a or c",
            { RequestFilter.all with
                EventNames = [ EventName.Create "user.joined" ]
                HandlerNames = [ HandlerName.Create "a"; HandlerName.Create "c" ]
            }
            "one event",
            { RequestFilter.all with
                EventId = Some someEvent
            }
            "a time range",
            { RequestFilter.all with
                From = Some(t0 + seconds 2.0)
                Until = Some(t0 + seconds 7.0)
            }
            "error text, ignoring case",
            { RequestFilter.all with
                ErrorContains = Some "AFTER 3 TRIES"
            }
            "dead with an error text",
            { RequestFilter.all with
                Statuses = [ RequestStatus.Dead ]
                ErrorContains = Some "failed"
            }
        ]

    byStatus @ others

let private queryTests (makeStore: unit -> Task<IEventStore>) =
    [
        testCaseTask "every filter selects what the core's filter selects, paged by keyset, each once" (fun () ->
            task {
                let! store, all, now = populated makeStore
                let admin = adminOf store
                let ordered = all |> List.sortBy (fun r -> r.EventTimestamp, r.Id)

                for name, filter in filters all do
                    let expected = ordered |> List.filter (RequestFilter.matches now filter)
                    let! pages = allPages admin filter now 4
                    let got = List.concat pages

                    Expect.equal
                        (got |> List.map _.Id)
                        (expected |> List.map _.Id)
                        $"%s{name}: the pages hold every match once, in order"

                    Expect.isTrue
                        (pages |> List.forall (fun page -> page.Length <= 4))
                        $"%s{name}: no page is over its limit"

                    let! count = admin.CountRequestsAsync(filter, now, ct)
                    Expect.equal count (int64 expected.Length) $"%s{name}: the count is the core's"
            })

        testCaseTask "the fixture holds every status" (fun () ->
            task {
                let! _, all, now = populated makeStore

                let statuses =
                    all |> List.map (RequestStatus.ofRequest now) |> List.distinct |> List.sort

                Expect.equal
                    statuses
                    (List.sort RequestStatus.all)
                    "each status is present, so each filter is exercised"
            })

        testCaseTask "counts per handler and status are the core's, with or without the finished ones" (fun () ->
            task {
                let! store, all, now = populated makeStore

                for includeFinished in [ true; false ] do
                    let! counts = (adminOf store).CountByHandlerAsync(now, includeFinished, ct)

                    let expected =
                        all
                        |> List.filter (fun r -> includeFinished || not (HandlerRequest.isTerminal r))
                        |> List.countBy (fun r -> r.HandlerName, RequestStatus.ofRequest now r)
                        |> List.map (fun ((handlerName, status), count) ->
                            {
                                HandlerName = handlerName
                                Status = status
                                Count = int64 count
                            })
                        |> List.sortBy (fun c -> c.HandlerName, List.findIndex ((=) c.Status) RequestStatus.all)

                    Expect.equal
                        counts
                        expected
                        $"one row per handler and status present, by handler then status (finished included: %b{includeFinished})"
            })

        testCaseTask "the overview per handler counts live requests and recent completions as the core does" (fun () ->
            task {
                let! store, all, now = populated makeStore
                let! overview = (adminOf store).OverviewAsync(now, now - minutes 1.0, ct)
                Expect.equal overview (HandlerOverview.ofRequests now (now - minutes 1.0) all) "the core's overview"

                let row name =
                    overview |> List.find (fun o -> o.HandlerName = HandlerName.Create name)

                Expect.equal ((row "a").Dead, (row "a").CompletedSince) (12L, 0L) "every a is dead"
                Expect.equal ((row "b").BackingOff, (row "b").Runnable) (12L, 0L) "every b backs off"
                Expect.isNone (row "b").OldestRunnable "no b is runnable"

                Expect.equal
                    ((row "c").Runnable, (row "c").Running, (row "c").CompletedSince)
                    (4L, 1L, 6L)
                    "c: four runnable, one running, six completed"

                let oldestC =
                    all
                    |> List.filter (fun r ->
                        r.HandlerName.Value = "c"
                        && RequestStatus.ofRequest now r = RequestStatus.Runnable)
                    |> List.map _.EventTimestamp
                    |> List.min

                Expect.equal (row "c").OldestRunnable (Some oldestC) "the oldest runnable c"

                let! later = (adminOf store).OverviewAsync(now, now + seconds 1.0, ct)

                Expect.equal
                    (later |> List.map (fun o -> o.HandlerName.Value, o.CompletedSince))
                    [ "a", 0L; "b", 0L; "c", 0L ]
                    "no completion after the window starts"
            })

        testCaseTask "a zero limit gives an empty last page, a negative one is refused" (fun () ->
            task {
                let! store, _, now = populated makeStore
                let! page = (adminOf store).QueryRequestsAsync(RequestFilter.all, now, None, 0, ct)
                Expect.isEmpty page.Requests "no request in a page of 0"
                Expect.isNone page.Next "a page of 0 has no next page"

                let! refused =
                    argumentErrorOf (fun () ->
                        (adminOf store).QueryRequestsAsync(RequestFilter.all, now, None, -1, ct))

                Expect.isSome refused "a negative limit is refused with an ArgumentException"

                let! empty =
                    argumentErrorOf (fun () ->
                        (adminOf store)
                            .QueryRequestsAsync(
                                { RequestFilter.all with
                                    ErrorContains = Some ""
                                },
                                now,
                                None,
                                1,
                                ct
                            ))

                Expect.isSome empty "an empty error text is refused"
            })

        testCaseTask "an event's details list its requests and whether it is fully handled" (fun () ->
            task {
                let! store = makeStore ()
                let event = newEvent t0 "order.placed"
                let! requests = fanOut store t0 [ event, [ handler "a" 10 1; handler "b" 10 1 ] ]
                let admin = adminOf store
                let! details = Administration.eventDetailsAsync admin event.Id t0 ct
                let details = Expect.wantSome details "the event is found"

                Expect.equal
                    (details.Requests |> List.map (fst >> _.Id) |> List.sort)
                    (requests |> List.map _.Id |> List.sort)
                    "both requests"

                Expect.isFalse details.FullyHandled "requests still to run: not fully handled"
                let! claim = store.ClaimRequestsAsync(10, t0, minutes 1.0, ct)
                let! _ = store.RecordOutcomesAsync(claim.Claimed |> List.map (succeeded t0), ct)
                let! after = Administration.eventDetailsAsync admin event.Id t0 ct
                let after = Expect.wantSome after "the event is found"
                Expect.isTrue after.FullyHandled "every request completed: fully handled"
                Expect.allEqual (after.Requests |> List.map snd) RequestStatus.Completed "both completed"
                let! missing = Administration.eventDetailsAsync admin (Guid.CreateVersion7()) t0 ct
                Expect.isNone missing "an unknown event has no details"
            })
    ]

/// A store with dead requests of three causes: `perCause` each of a returned failure naming an order id
/// and an amount, a thrown InvalidOperationException, and a thrown TimeoutException.
let private withCauses (makeStore: unit -> Task<IEventStore>) (perCause: int) =
    task {
        let! store = makeStore ()

        let items =
            [
                for i in 0 .. (3 * perCause - 1) ->
                    newEvent (t0 + seconds (float i)) "order.placed", [ handler (if i % 2 = 0 then "h" else "k") 10 1 ]
            ]

        let! requests = fanOut store t0 items
        let indexOf = requests |> List.mapi (fun i r -> r.Id, i) |> Map.ofList

        let! _ =
            failEach store (t0 + minutes 1.0) (fun request ->
                let i = indexOf[request.Id]

                match i % 3 with
                | 0 -> $"payment for order %O{request.EventId} of {i * 7}.50 EUR was declined"
                | 1 ->
                    Attempt.PanicPrefix
                    + $"System.InvalidOperationException: Sequence {i} contains no elements\n   at Shop.Orders.Place(Order order)\n   at System.Linq.Enumerable.First()"
                | _ ->
                    Attempt.PanicPrefix
                    + $"System.TimeoutException: the call to 'inventory-{i}' timed out")

        return store
    }

let private triageTests (makeStore: unit -> Task<IEventStore>) =
    [
        testCaseTask "dead requests group by the cause of their error" (fun () ->
            task {
                let! store = withCauses makeStore 5

                let! groups =
                    Administration.triageAsync (adminOf store) RequestFilter.all (t0 + minutes 2.0) ct

                Expect.hasLength groups 3 "three causes, three groups"
                Expect.allEqual (groups |> List.map _.Count) 5L "five requests per cause"

                let types = groups |> List.map _.Fingerprint.ExceptionType |> List.sort

                Expect.equal
                    types
                    [
                        None
                        Some "System.InvalidOperationException"
                        Some "System.TimeoutException"
                    ]
                    "the thrown ones by exception type, the returned one by its message"

                for group in groups do
                    Expect.equal
                        group.HandlerNames
                        [ HandlerName.Create "h"; HandlerName.Create "k" ]
                        "both handlers are named"

                    Expect.isTrue (group.FirstSeen <= group.LastSeen) "first seen is not after last seen"

                    Expect.equal
                        (ErrorFingerprint.ofError group.Sample.LastError.Value).Id
                        group.Fingerprint.Id
                        "the sample is of the group"
            })
    ]

let private bulkTests (makeStore: unit -> Task<IEventStore>) =
    [
        testCaseTask "a dry run counts, a run re-executes in chunks through the core, reporting progress" (fun () ->
            task {
                let! store = withCauses makeStore 4
                let admin = adminOf store
                let now = t0 + minutes 2.0

                let selection =
                    {
                        Filter = RequestFilter.dead
                        Fingerprint = None
                    }

                let options =
                    { Administration.defaultBulkOptions with
                        ChunkSize = 5
                        DryRun = true
                    }

                let! dry =
                    Administration.bulkAsync admin selection BulkCommand.ReExecute now options ignore ct

                Expect.equal dry.Selected 12L "the dry run counts every dead request"
                Expect.equal dry.Updated 0L "the dry run changes nothing"
                let! stillDead = admin.CountRequestsAsync(RequestFilter.dead, now, ct)
                Expect.equal stillDead 12L "nothing changed"

                let reports = ResizeArray<BulkProgress>()

                let! run =
                    Administration.bulkAsync
                        admin
                        selection
                        BulkCommand.ReExecute
                        now
                        { options with DryRun = false }
                        reports.Add
                        ct

                Expect.equal run.Updated 12L "every dead request is re-executed"
                Expect.isTrue run.Finished "the run finished"
                Expect.isGreaterThanOrEqual reports.Count 3 "progress after each chunk of 5"
                let! all = toList (store.RequestsAsync ct)

                Expect.isTrue
                    (all
                     |> List.forall (fun r -> r.Errors = 0 && r.State = RequestState.Runnable None))
                    "re-executed: runnable from zero errors, as the core's ReExecute makes them"
            })

        testCaseTask "a bulk change by triage group changes that group only, and resumes from its cursor" (fun () ->
            task {
                let! store = withCauses makeStore 4
                let admin = adminOf store
                let now = t0 + minutes 2.0
                let! groups = Administration.triageAsync admin RequestFilter.all now ct

                let group =
                    groups
                    |> List.find (fun g -> g.Fingerprint.ExceptionType = Some "System.TimeoutException")

                let selection =
                    {
                        Filter = RequestFilter.dead
                        Fingerprint = Some group.Fingerprint.Id
                    }

                let options =
                    { Administration.defaultBulkOptions with
                        ChunkSize = 1
                    }

                let! dry =
                    Administration.bulkAsync
                        admin
                        selection
                        BulkCommand.Cancel
                        now
                        { options with DryRun = true }
                        ignore
                        ct

                Expect.equal dry.Selected 4L "the dry run counts the group"

                let! first =
                    Administration.bulkAsync
                        admin
                        selection
                        BulkCommand.Cancel
                        now
                        { options with Limit = Some 1L }
                        ignore
                        ct

                Expect.equal first.Updated 1L "a limited run stops at its limit"

                let! rest =
                    Administration.bulkAsync
                        admin
                        selection
                        BulkCommand.Cancel
                        now
                        { options with After = first.Cursor }
                        ignore
                        ct

                Expect.equal rest.Updated 3L "resumed from the cursor, the run does the rest"

                let! canceled =
                    admin.CountRequestsAsync(
                        { RequestFilter.all with
                            Statuses = [ RequestStatus.Canceled ]
                        },
                        now,
                        ct
                    )

                Expect.equal canceled 4L "the group is canceled"
                let! dead = admin.CountRequestsAsync(RequestFilter.dead, now, ct)
                Expect.equal dead 8L "the other groups are still dead"
            })

        testCaseTask "a bulk change refuses what the core refuses" (fun () ->
            task {
                let! store, all, now = populated makeStore
                let admin = adminOf store
                let completed = all |> List.filter (fun r -> (HandlerRequest.completedAt r).IsSome)

                let! results =
                    admin.UpdateRequestsAsync(
                        (completed |> List.map _.Id) @ [ Guid.CreateVersion7() ],
                        Administration.transition now BulkCommand.ReExecute,
                        ct
                    )

                Expect.allEqual
                    (List.truncate completed.Length results)
                    (BulkItemResult.Refused RequestError.AlreadyCompleted)
                    "a completed request is not re-executed"

                Expect.equal (List.last results) BulkItemResult.NotFound "an unknown id is not found"
            })

        testCaseTask "a canary redrive goes on only when its canaries succeed" (fun () ->
            task {
                let mutable healthy = false

                let flaky: Handler =
                    fun _ _ ->
                        Task.FromResult(
                            if healthy then
                                HandlerResult.Succeeded
                            else
                                HandlerResult.Failed "down for order 17"
                        )

                let configuration =
                    configure [ "order.placed", "flaky", flaky, [ HandlerOption.MaxErrors 1 ] ]

                let! engine =
                    engineWith makeStore configuration ProcessorOptions.Default ExecutorOptions.Default ""

                for i in 1..6 do
                    let! _ = engine.Raise("order.placed", {| n = i |})
                    ()

                do! engine.RoundAsync()
                let admin = adminOf engine.Store
                let now () = engine.Time.GetUtcNow()
                let! dead = admin.CountRequestsAsync(RequestFilter.dead, now (), ct)
                Expect.equal dead 6L "every request died"

                let selection =
                    {
                        Filter = RequestFilter.dead
                        Fingerprint = None
                    }

                // The executor runs a round whenever the canary waits.
                let delay _ _ = engine.ExecuteAsync() :> Task

                let! failedCanary =
                    Administration.canaryAsync
                        admin
                        selection
                        2
                        (minutes 1.0)
                        (seconds 1.0)
                        now
                        delay
                        Administration.defaultBulkOptions
                        ignore
                        ct

                match failedCanary with
                | CanaryOutcome.Failed canaries -> Expect.hasLength canaries 2 "both canaries failed again"
                | other -> failtestf "expected the canaries to fail, got %A" other

                let! stillDead = admin.CountRequestsAsync(RequestFilter.dead, now (), ct)
                Expect.equal stillDead 6L "the rest were not touched"

                healthy <- true

                let! succeeded =
                    Administration.canaryAsync
                        admin
                        selection
                        2
                        (minutes 1.0)
                        (seconds 1.0)
                        now
                        delay
                        Administration.defaultBulkOptions
                        ignore
                        ct

                match succeeded with
                | CanaryOutcome.Succeeded(canaries, rest) ->
                    Expect.hasLength canaries 2 "two canaries"
                    Expect.equal rest.Updated 4L "then the other four"
                | other -> failtestf "expected the canaries to succeed, got %A" other

                do! engine.RoundAsync()

                let! completed =
                    admin.CountRequestsAsync(
                        { RequestFilter.all with
                            Statuses = [ RequestStatus.Completed ]
                        },
                        now (),
                        ct
                    )

                Expect.equal completed 6L "every request completed after the redrive"
            })
    ]

let private gaugeTests (makeStore: unit -> Task<IEventStore>) =
    [
        testCaseTask "the gauges count backing-off requests and requests per handler and status" (fun () ->
            task {
                let! store, all, now = populated makeStore
                let prefix = "gauges" + Guid.NewGuid().ToString "N"
                use _gauges = new AdminGauges(prefix, adminOf store, (fun () -> now), TimeSpan.Zero)

                let seen =
                    System.Collections.Concurrent.ConcurrentBag<string * int64 * (string * string) list>()

                use listener = new System.Diagnostics.Metrics.MeterListener()

                listener.InstrumentPublished <-
                    fun instrument listener ->
                        if instrument.Name.StartsWith prefix then
                            listener.EnableMeasurementEvents instrument

                listener.SetMeasurementEventCallback<int64>(
                    System.Diagnostics.Metrics.MeasurementCallback<int64>(fun instrument value tags _ ->
                        let tags =
                            tags.ToArray()
                            |> Array.map (fun tag -> tag.Key.Substring(prefix.Length + 1), string tag.Value)
                            |> List.ofArray

                        seen.Add(instrument.Name.Substring(prefix.Length + 1), value, tags))
                )

                listener.Start()
                listener.RecordObservableInstruments()

                let backingOff =
                    all
                    |> List.filter (fun r -> RequestStatus.ofRequest now r = RequestStatus.BackingOff)
                    |> List.length
                    |> int64

                Expect.isGreaterThan backingOff 0L "the fixture has requests backing off"

                Expect.contains
                    (seen |> Seq.map (fun (n, v, _) -> n, v))
                    ("requests.backing_off.count", backingOff)
                    "the backing-off gauge counts them"

                let deadA =
                    seen
                    |> Seq.tryFind (fun (n, _, tags) ->
                        n = "requests.count" && tags = [ "handler", "a"; "status", "dead" ])

                let _, value, _ =
                    Expect.wantSome deadA "a per-handler measurement of a's dead requests"

                Expect.equal value 12L "every request of handler a is dead"
            })
    ]

/// On PostgreSQL: every index the store declares exists, with its predicate (several share their
/// columns and differ by predicate only).
let martenIndexTests (makeStore: unit -> Task<IEventStore>) =
    testList
        "Admin on marten: indexes"
        [
            testCaseTask "every declared index of the requests table is in the database" (fun () ->
                task {
                    let! store = makeStore ()
                    let marten = store :?> Events.Marten.MartenEventStore

                    use connection =
                        marten.DocumentStore.Storage.Database.CreateConnection(
                            Marten.Storage.ConnectionUsage.ReadWrite
                        )

                    do! connection.OpenAsync()

                    use command =
                        new Npgsql.NpgsqlCommand(
                            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'mt_doc_events_request'",
                            connection
                        )

                    use! reader = command.ExecuteReaderAsync()
                    let found = Collections.Generic.Dictionary<string, string>()
                    let! more = reader.ReadAsync()
                    let mutable more = more

                    while more do
                        found[reader.GetString 0] <- reader.GetString 1
                        let! next = reader.ReadAsync()
                        more <- next

                    for name, _, _, predicate in
                        Events.Marten.Sql.Indexes.requests @ Events.Marten.AdminSql.Indexes.requests do
                        Expect.isTrue
                            (found.ContainsKey name)
                            $"index %s{name} exists (found: %A{List.ofSeq found.Keys})"

                        if not (isNull predicate) then
                            Expect.stringContains found[name] "WHERE" $"index %s{name} is partial"
                })
        ]

/// On PostgreSQL: a bulk change skips a row another transaction holds (an executor writing its outcome,
/// say), never waiting for it, and changes the others.
let martenLockTests (makeStore: unit -> Task<IEventStore>) =
    testList
        "Admin on marten: locks"
        [
            testCaseTask "a bulk change skips rows another transaction holds, and a later run changes them" (fun () ->
                task {
                    let! store = withCauses makeStore 2
                    let marten = store :?> Events.Marten.MartenEventStore
                    let admin = adminOf store
                    let now = t0 + minutes 2.0
                    let! page = admin.QueryRequestsAsync(RequestFilter.dead, now, None, 100, ct)
                    let held = page.Requests[0]

                    use connection =
                        marten.DocumentStore.Storage.Database.CreateConnection(
                            Marten.Storage.ConnectionUsage.ReadWrite
                        )

                    do! connection.OpenAsync()
                    use! transaction = connection.BeginTransactionAsync()

                    use lockRow =
                        new Npgsql.NpgsqlCommand(
                            "SELECT id FROM "
                            + marten.DocumentStore.Options
                                .FindOrResolveDocumentType(typeof<Events.Marten.RequestDocument>)
                                .TableName.QualifiedName
                            + " WHERE id = $1 FOR UPDATE",
                            connection
                        )

                    lockRow.Parameters.Add(Npgsql.NpgsqlParameter(Value = held.Id)) |> ignore
                    let! _ = lockRow.ExecuteScalarAsync()

                    let selection =
                        {
                            Filter = RequestFilter.dead
                            Fingerprint = None
                        }

                    let! first =
                        Administration.bulkAsync
                            admin
                            selection
                            BulkCommand.ReExecute
                            now
                            Administration.defaultBulkOptions
                            ignore
                            ct

                    Expect.equal first.Locked 1L "the held row is skipped, not waited for"
                    Expect.equal first.Updated (int64 page.Requests.Length - 1L) "the others are re-executed"
                    do! transaction.RollbackAsync()

                    let! second =
                        Administration.bulkAsync
                            admin
                            selection
                            BulkCommand.ReExecute
                            now
                            Administration.defaultBulkOptions
                            ignore
                            ct

                    Expect.equal second.Updated 1L "once released, a later run re-executes it"
                    let! dead = admin.CountRequestsAsync(RequestFilter.dead, now, ct)
                    Expect.equal dead 0L "no dead request is left"
                })
        ]

/// The administration contract over a store factory.
let adminContract (name: string) (makeStore: unit -> Task<IEventStore>) =
    testList
        name
        [
            testList "queries" (queryTests makeStore)
            testList "triage" (triageTests makeStore)
            testList "bulk" (bulkTests makeStore)
            testList "gauges" (gaugeTests makeStore)
        ]
