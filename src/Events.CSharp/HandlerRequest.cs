using System.Text.Json;
using Events.Core;
using CoreRequest = Events.Core.HandlerRequest;
using CoreRequestModule = Events.Core.HandlerRequestModule;

namespace Events.CSharp;

/// <summary>Where a handler request is in its life.</summary>
public enum HandlerRequestState
{
    /// <summary>Waiting to run: new, or waiting out a backoff (see <see cref="HandlerRequest.BackoffUntil"/>).</summary>
    Runnable,

    /// <summary>Claimed by a worker that is running the handler.</summary>
    Running,

    /// <summary>The handler succeeded. Final.</summary>
    Completed,

    /// <summary>Failed <see cref="HandlerRequest.MaxErrors"/> times; waits for a person to re-execute or cancel it.</summary>
    Dead,

    /// <summary>Canceled by a person. Final.</summary>
    Canceled,
}

/// <summary>The work of running one handler for one event, as the store holds it.</summary>
public sealed class HandlerRequest
{
    internal HandlerRequest(CoreRequest core) => Core = core;

    internal CoreRequest Core { get; }

    /// <summary>The request's id (a UUIDv7).</summary>
    public Guid Id => Core.Id;

    /// <summary>The handler to run.</summary>
    public string HandlerName => Core.HandlerName.Value;

    /// <summary>The event's id.</summary>
    public Guid EventId => Core.EventId;

    /// <summary>The event's name.</summary>
    public string EventName => Core.EventName.Value;

    /// <summary>The event's data as compact JSON text (always a JSON object).</summary>
    public string EventDataJson => Core.EventData.Json;

    /// <summary>When the event happened.</summary>
    public DateTimeOffset EventTimestamp => Core.EventTimestamp;

    /// <summary>The id of the entity of a domain event; <see langword="null"/> for an application event.</summary>
    public string? EntityId => Core.EventEntity.ToNullableReference()?.Id;

    /// <summary>The kind of the entity of a domain event; <see langword="null"/> for an application event.</summary>
    public string? EntityName => Core.EventEntity.ToNullableReference()?.Name;

    /// <summary>The event's correlation id.</summary>
    public Guid? CorrelationId => Core.CorrelationId.ToNullable();

    /// <summary>Failed attempts after which the request is dead.</summary>
    public int MaxErrors => Core.MaxErrors;

    /// <summary>Lower runs first.</summary>
    public int Priority => Core.Priority;

    /// <summary>Failed attempts so far.</summary>
    public int Errors => Core.Errors;

    /// <summary>When an attempt last ended.</summary>
    public DateTimeOffset? LastAttemptAt => Core.LastAttemptAt.ToNullable();

    /// <summary>The error of the last failed attempt; cleared by a success.</summary>
    public string? LastError => Core.LastError.ToNullableReference();

    /// <summary>The W3C <c>traceparent</c> of the code that raised the event; <see langword="null"/> when it was raised outside a trace.</summary>
    public string? EventTraceParent => Core.EventTrace.ToNullableReference()?.TraceParent;

    /// <summary>Where the request is in its life.</summary>
    public HandlerRequestState State => Core.State.Tag switch
    {
        RequestState.Tags.Runnable => HandlerRequestState.Runnable,
        RequestState.Tags.Running => HandlerRequestState.Running,
        RequestState.Tags.Completed => HandlerRequestState.Completed,
        RequestState.Tags.Dead => HandlerRequestState.Dead,
        RequestState.Tags.Canceled => HandlerRequestState.Canceled,
        var tag => throw new InvalidOperationException($"unknown request state {tag}"),
    };

    /// <summary>Until when a runnable request waits out its backoff, if it does.</summary>
    public DateTimeOffset? BackoffUntil => CoreRequestModule.backoffUntil(Core).ToNullable();

    /// <summary>When the request completed, if it did.</summary>
    public DateTimeOffset? CompletedAt => CoreRequestModule.completedAt(Core).ToNullable();

    /// <summary>When the request was canceled, if it was.</summary>
    public DateTimeOffset? CanceledAt => CoreRequestModule.canceledAt(Core).ToNullable();

    /// <summary>
    /// Until when a running request's claim holds, if it is running: as claimed (the executor renews it
    /// while the handler runs, so the stored end moves later).
    /// </summary>
    public DateTimeOffset? LeaseUntil => CoreRequestModule.lease(Core).ToNullableReference()?.Until;

    /// <summary>The event's data parsed as a read-only JSON element.</summary>
    /// <returns>The data's JSON object.</returns>
    public JsonElement GetEventData() => Core.EventData.ToJsonElement();

    /// <summary>The event's data deserialised with System.Text.Json.</summary>
    /// <typeparam name="T">The type to deserialise into.</typeparam>
    /// <param name="options">Serializer options, or <see langword="null"/> for the defaults.</param>
    /// <returns>The deserialised data.</returns>
    public T? GetEventData<T>(JsonSerializerOptions? options = null) =>
        Core.EventData.Deserialize<T>(options.ToOption());

    /// <inheritdoc/>
    public override string ToString() => $"{HandlerName} for {EventName} {EventId}: {State}";
}
