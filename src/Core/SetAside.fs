namespace Events.Core

open System
open System.Threading
open System.Threading.Tasks

/// What kind of stored item was set aside.
[<RequireQualifiedAccess>]
type StoredItemKind =
    /// An event.
    | Event
    /// A handler request.
    | Request

/// A stored item the store could not read (a hand-edited row, a document of an unknown shape), set
/// aside on its own so that the items claimed beside it go on: it is in no claim, gauge or page after
/// that, and keeps its stored text and the reason for a person to look at.
type SetAsideItem =
    {
        /// An event or a request.
        Kind: StoredItemKind
        /// Its id.
        Id: Guid
        /// Why it could not be read.
        Reason: string
        /// Its stored text, as found.
        Stored: string
    }

/// A store that sets unreadable items aside instead of failing the batch they were claimed in.
type ISetAsideItems =
    /// The items set aside so far, oldest first.
    abstract SetAsideAsync: cancellationToken: CancellationToken -> Task<SetAsideItem list>

    /// Sets one stored item aside with a reason (the processor does, for an event whose processing
    /// keeps failing); whether it was found and not set aside already. Raises `ItemsSetAside`.
    abstract SetItemAsideAsync:
        kind: StoredItemKind * id: Guid * reason: string * cancellationToken: CancellationToken -> Task<bool>

    /// Puts a set-aside item back where it was (a person fixed what was wrong): claimable again;
    /// whether it was set aside.
    abstract RestoreAsync: kind: StoredItemKind * id: Guid * cancellationToken: CancellationToken -> Task<bool>

    /// Raised with the items the store set aside, once they are.
    [<CLIEvent>]
    abstract ItemsSetAside: IEvent<SetAsideItem list>
