namespace Events.Marten

open System
open Events.Core
open System.Runtime.CompilerServices
open System.Runtime.InteropServices
open global.Marten
open Marten.Schema
open Marten.Services

/// Configures Marten for the Events store.
[<Extension; AbstractClass; Sealed>]
type MartenConfiguration =

    static member private Duplicate
        (mapping: DocumentMapping)
        (property: string)
        (pgType: string)
        (column: string)
        (notNull: bool)
        =
        let member' = mapping.DocumentType.GetProperty property

        if isNull member' then
            invalidOp $"%s{mapping.DocumentType.Name} has no property %s{property}"

        mapping.DuplicateField([| member' :> Reflection.MemberInfo |], pgType, column, notNull, false)
        |> ignore

    static member private AddIndexes (mapping: DocumentMapping) indexes =
        for (name: string, columns: string[], included: string[], predicate: string) in indexes do
            // A new definition for each: AddIndex would hand back an index already declared on the same
            // columns (a partial one with another predicate), and the later settings would replace it.
            let index = DocumentIndex(mapping, columns)
            mapping.Indexes.Add index
            index.Name <- name
            index.IncludeColumns <- included
            index.Predicate <- predicate

    static member private MapEvents(mapping: DocumentMapping) =
        let duplicate = MartenConfiguration.Duplicate mapping
        duplicate "Timestamp" "timestamp with time zone" Sql.Columns.EventTimestamp true
        duplicate "ProcessedAt" "timestamp with time zone" Sql.Columns.ProcessedAt false
        duplicate "ClaimToken" "uuid" Sql.Columns.ClaimToken false
        duplicate "ClaimUntil" "timestamp with time zone" Sql.Columns.ClaimUntil false
        duplicate "SetAside" "text" Sql.Columns.SetAside false
        duplicate "DeduplicationKey" "text" Sql.Columns.DeduplicationKey false
        MartenConfiguration.AddIndexes mapping Sql.Indexes.events
        // One stored event per deduplication key: the arbiter of the keyed inserts' ON CONFLICT.
        let unique = DocumentIndex(mapping, [| Sql.Columns.DeduplicationKey |])
        mapping.Indexes.Add unique
        unique.Name <- Deduplication.IndexName
        unique.IsUnique <- true
        unique.Predicate <- Deduplication.HasKey

    static member private MapRequests(mapping: DocumentMapping) =
        let duplicate = MartenConfiguration.Duplicate mapping
        duplicate "HandlerName" "text" Sql.Columns.HandlerName true
        duplicate "EventName" "text" Sql.Columns.EventName true
        duplicate "EventTimestamp" "timestamp with time zone" Sql.Columns.EventTimestamp true
        duplicate "Priority" "integer" Sql.Columns.Priority true
        duplicate "Errors" "integer" Sql.Columns.Errors true
        duplicate "MaxErrors" "integer" Sql.Columns.MaxErrors true
        duplicate "BackoffUntil" "timestamp with time zone" Sql.Columns.BackoffUntil false
        duplicate "CompletedAt" "timestamp with time zone" Sql.Columns.CompletedAt false
        duplicate "CanceledAt" "timestamp with time zone" Sql.Columns.CanceledAt false
        duplicate "LeaseUntil" "timestamp with time zone" Sql.Columns.LeaseUntil false
        duplicate "ClaimToken" "uuid" Sql.Columns.ClaimToken false
        duplicate "SetAside" "text" Sql.Columns.SetAside false
        MartenConfiguration.AddIndexes mapping Sql.Indexes.requests
        MartenConfiguration.AddIndexes mapping AdminSql.Indexes.requests

    /// Registers the Events documents (events and handler requests, with their duplicated columns and
    /// partial indexes) and the listener that appends the events raised by saved `IRaiseEvents`
    /// entities. Events needs System.Text.Json: when another serialiser is configured, this switches
    /// to Marten's System.Text.Json serialiser (the documents pin their own JSON names, so the casing
    /// chosen does not matter). `schemaName` puts the two tables in a schema of their own (default: the
    /// store's schema).
    [<Extension>]
    static member UseEventsDocuments
        (options: StoreOptions, [<Optional; DefaultParameterValue(null: string)>] schemaName: string)
        : StoreOptions =
        if isNull options then
            nullArg (nameof options)

        // Configured already: the listener is the mark.
        if
            not (
                options.Listeners
                |> Seq.exists (fun listener -> listener :? RaisedEventsListener)
            )
        then
            MartenConfiguration.Configure options schemaName

        options

    static member private Configure (options: StoreOptions) (schemaName: string) =
        match options.Serializer() with
        | :? SystemTextJsonSerializer -> ()
        | _ -> options.UseSystemTextJsonForSerialization()

        let events = options.Schema.For<EventDocument>().DocumentAlias(Sql.EventAlias)
        let requests = options.Schema.For<RequestDocument>().DocumentAlias(Sql.RequestAlias)

        if not (String.IsNullOrWhiteSpace schemaName) then
            events.DatabaseSchemaName schemaName |> ignore
            requests.DatabaseSchemaName schemaName |> ignore

        options.Listeners.Add(RaisedEventsListener())

        options.Policies.ForAllDocuments(fun mapping ->
            if mapping.DocumentType = typeof<EventDocument> then
                MartenConfiguration.MapEvents mapping
            elif mapping.DocumentType = typeof<RequestDocument> then
                MartenConfiguration.MapRequests mapping)
        |> ignore
