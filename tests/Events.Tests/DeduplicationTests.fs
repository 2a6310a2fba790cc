/// Idempotent raises: an event with a deduplication key already stored is not stored again, and the
/// stored one is returned in its place; on every store, and on PostgreSQL through an application's
/// session too.
module Events.Tests.DeduplicationTests

open System
open System.Threading
open System.Threading.Tasks
open Expecto
open Events.Core
open Events.Marten

let private ct = CancellationToken.None

let private t0 = DateTimeOffset(2025, 1, 1, 12, 0, 0, TimeSpan.Zero)

let private keyed (key: string) (name: string) =
    Event.application (Guid.CreateVersion7()) t0 (EventName.Create name) EventData.Empty
    |> Event.withDeduplicationKey key

let private plain (name: string) =
    Event.application (Guid.CreateVersion7()) t0 (EventName.Create name) EventData.Empty

let private all (store: IEventStore) =
    TestSupport.toList (store.EventsAsync ct)

let private refused (call: unit -> Task<'result>) : Task<ArgumentException option> =
    task {
        try
            let! _ = call ()
            return None
        with :? ArgumentException as error ->
            return Some error
    }

/// The deduplication contract, run against every store.
let contract (name: string) (makeStore: unit -> Task<IEventStore>) =
    testList
        $"Deduplication on %s{name}"
        [
            testCaseTask "a second event with a stored key stores nothing and returns the first" (fun () ->
                task {
                    let! store = makeStore ()
                    let first = keyed "order-1" "order.placed"
                    let! storedFirst = store.AppendAsync([ first ], ct)
                    Expect.equal storedFirst[0].Id first.Id "the first event is stored"
                    Expect.isFalse (Event.isDuplicateOf first storedFirst[0]) "the first is not a duplicate"
                    let second = keyed "order-1" "order.placed"
                    let! storedSecond = store.AppendAsync([ second ], ct)
                    Expect.equal storedSecond[0].Id first.Id "the first event is returned in the second's place"
                    Expect.isTrue (Event.isDuplicateOf second storedSecond[0]) "the second is a duplicate"
                    Expect.equal storedSecond[0].DeduplicationKey (Some "order-1") "the key is kept"
                    let! events = all store
                    Expect.equal (events |> List.map _.Id) [ first.Id ] "one event is stored"
                    let! missing = store.FindEventAsync(second.Id, ct)
                    Expect.isNone missing "the duplicate is not stored"
                })

            testCaseTask "the same key twice in one batch stores the first, returned in both places" (fun () ->
                task {
                    let! store = makeStore ()
                    let first = keyed "k" "order.placed"
                    let other = plain "order.paid"
                    let again = keyed "k" "order.placed"
                    let! stored = store.AppendAsync([ first; other; again ], ct)

                    Expect.equal
                        (stored |> List.map _.Id)
                        [ first.Id; other.Id; first.Id ]
                        "one result per event, the first in the duplicate's place"

                    let! events = all store

                    Expect.equal
                        (events |> List.map _.Id |> List.sort)
                        (List.sort [ first.Id; other.Id ])
                        "the duplicate is not stored"
                })

            testCaseTask "raising the very same keyed event again returns it and refuses nothing" (fun () ->
                task {
                    let! store = makeStore ()
                    let event = keyed "retry" "order.placed"
                    let! _ = store.AppendAsync([ event ], ct)
                    let! again = store.AppendAsync([ event ], ct)
                    Expect.equal again[0].Id event.Id "the stored event comes back"
                    let! events = all store
                    Expect.equal events.Length 1 "it is stored once"
                })

            testCaseTask "events without a key or with other keys are all stored" (fun () ->
                task {
                    let! store = makeStore ()
                    let events = [ plain "a"; plain "a"; keyed "x" "a"; keyed "y" "a"; keyed "X" "a" ]
                    let! stored = store.AppendAsync(events, ct)
                    Expect.equal (stored |> List.map _.Id) (events |> List.map _.Id) "each is stored as itself"
                    let! found = all store
                    Expect.equal found.Length 5 "keys are compared exactly (case matters)"
                })

            testCaseTask "a bad key refuses the whole batch with an ArgumentException" (fun () ->
                task {
                    let! store = makeStore ()
                    let fine = plain "a"

                    for bad in [ ""; String('k', Event.MaxDeduplicationKeyLength + 1); "a\000b" ] do
                        let badEvent =
                            { plain "a" with
                                DeduplicationKey = Some bad
                            }

                        let! error = refused (fun () -> store.AppendAsync([ fine; badEvent ], ct))
                        Expect.isSome error $"the key %A{bad} is refused"

                    let! events = all store
                    Expect.isEmpty events "nothing of a refused batch is stored"
                    let longest = String('k', Event.MaxDeduplicationKeyLength)
                    let! stored = store.AppendAsync([ keyed longest "a" ], ct)
                    Expect.equal stored.Length 1 "the longest key accepted is stored"
                })

            testCaseTask "concurrent raises of one key store one event, and every raiser gets it" (fun () ->
                task {
                    let! store = makeStore ()
                    let raisers = 16

                    let! results =
                        Task.WhenAll(
                            [
                                for _ in 1..raisers ->
                                    Task.Run<Event list>(fun () ->
                                        store.AppendAsync([ keyed "race" "order.placed" ], ct))
                            ]
                        )

                    let ids = results |> Array.map (fun stored -> stored[0].Id) |> Array.distinct
                    Expect.equal ids.Length 1 "every raiser gets the same event"
                    let! events = all store
                    Expect.equal (events |> List.map _.Id) (List.ofArray ids) "exactly that one event is stored"
                })
        ]

let private withStore (body: MartenEventStore -> Task<unit>) =
    task {
        let! store = MartenStoreTests.freshStore ()

        try
            do! body store
        finally
            store.DisposeAsync().AsTask().Wait()
    }

/// PostgreSQL only: keys through an application's Marten session.
let martenTests =
    testList
        "Deduplication in a Marten session"
        [
            testTask "a session's keyed event is stored once, whichever path raised the key first" {
                do!
                    withStore (fun store ->
                        task {
                            let port = store :> IEventStore
                            let first = keyed "session-key" "note.taken"

                            do!
                                task {
                                    use session = store.DocumentStore.LightweightSession()
                                    session.AppendEvents [ first ] |> ignore
                                    do! session.SaveChangesAsync()
                                }

                            let second = keyed "session-key" "note.taken"

                            do!
                                task {
                                    use session = store.DocumentStore.LightweightSession()
                                    session.AppendEvents [ second ] |> ignore
                                    // The duplicate stores nothing; the session's commit succeeds.
                                    do! session.SaveChangesAsync()
                                }

                            let! returned = port.AppendAsync([ keyed "session-key" "note.taken" ], ct)
                            Expect.equal returned[0].Id first.Id "the store returns the session's event"
                            let! events = all port
                            Expect.equal (events |> List.map _.Id) [ first.Id ] "one event is stored"
                        })
            }

            testTask "a key raised in a session that rolls back is free for the next raise" {
                do!
                    withStore (fun store ->
                        task {
                            let port = store :> IEventStore
                            let lost = keyed "rolled-back" "note.taken"

                            let! failed =
                                task {
                                    use session = store.DocumentStore.LightweightSession()
                                    session.AppendEvents [ lost ] |> ignore
                                    // A failing statement fails the whole commit.
                                    session.QueueSqlCommand("select 1/0")

                                    try
                                        do! session.SaveChangesAsync()
                                        return false
                                    with _ ->
                                        return true
                                }

                            Expect.isTrue failed "the session's commit fails"

                            let next = keyed "rolled-back" "note.taken"
                            let! stored = port.AppendAsync([ next ], ct)
                            Expect.equal stored[0].Id next.Id "the next raise stores its own event"
                            let! events = all port
                            Expect.equal (events |> List.map _.Id) [ next.Id ] "the rolled-back event is not stored"
                        })
            }

            testTask "a keyed event is processed by the processor and fanned out once" {
                do!
                    withStore (fun store ->
                        task {
                            let port = store :> IEventStore
                            let first = keyed "fan" "note.taken"
                            let! _ = port.AppendAsync([ first; keyed "fan" "note.taken" ], ct)
                            let! claimed = port.ClaimEventsAsync(10, t0, TimeSpan.FromMinutes 1.0, ct)
                            Expect.equal (claimed |> List.map _.Event.Id) [ first.Id ] "one event to process"
                        })
            }
        ]
