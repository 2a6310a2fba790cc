namespace Events.Marten

open System
open Events.Core
open global.Marten

/// Where the store's documents live and how they are signalled, read back from a built Marten store.
type internal StoreLayout =
    {
        /// The qualified table names.
        Tables: Sql.Tables
        /// The LISTEN/NOTIFY channel of this schema's events and requests.
        Channel: string
    }

/// Reading the layout of a Marten store configured by `UseEventsDocuments`.
[<RequireQualifiedAccess>]
module internal StoreLayout =

    /// The channel of a schema: letters, digits and underscores only, so it is safe in SQL text.
    let channelOf (schema: string) =
        let safe =
            schema.ToLowerInvariant()
            |> String.map (fun c -> if Char.IsAsciiLetterOrDigit c then c else '_')

        let channel = "events_work_" + safe

        if channel.Length > 63 then
            channel.Substring(0, 63)
        else
            channel

    /// The layout of the store's documents in a built Marten store.
    let ofOptions (options: IReadOnlyStoreOptions) =
        let table (documentType: Type) =
            options.FindOrResolveDocumentType(documentType).TableName

        let events = table typeof<EventDocument>

        {
            Tables =
                {
                    Events = events.QualifiedName
                    Requests = (table typeof<RequestDocument>).QualifiedName
                }
            Channel = channelOf events.Schema
        }
