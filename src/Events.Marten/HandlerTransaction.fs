namespace Events.Marten

open System
open System.Threading.Tasks
open Events.Core
open global.Marten

/// A handler's own work in a lightweight Marten session, opened on first use, committed in the same
/// database transaction as the request's outcome, and discarded when the outcome is refused.
[<Sealed>]
type MartenHandlerTransaction internal (store: IDocumentStore) =
    let mutable session: IDocumentSession = null
    let mutable disposed = false

    /// The session for the handler's work: store and delete documents, append events
    /// (`AppendEvents`); do not call SaveChanges, the store commits it with the outcome.
    member _.Session: IDocumentSession =
        if disposed then
            raise (ObjectDisposedException(nameof MartenHandlerTransaction))

        if isNull session then
            session <- store.LightweightSession()

        session

    /// The session if it was opened.
    member internal _.Opened: IDocumentSession option = Option.ofObj session

    interface IHandlerTransaction with
        member _.HasChanges =
            not (isNull session)
            && not disposed
            && not (Seq.isEmpty (session.PendingChanges.Operations()))

        member _.DisposeAsync() =
            if disposed || isNull session then
                disposed <- true
                ValueTask.CompletedTask
            else
                disposed <- true
                session.DisposeAsync()
