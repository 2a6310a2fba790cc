using Events.Core;
using Microsoft.FSharp.Core;
using CoreBulkCommand = Events.Core.BulkCommand;
using CoreBulkProgress = Events.Core.BulkProgress;
using CoreFilter = Events.Core.RequestFilter;
using CoreStatus = Events.Core.RequestStatus;
using CoreTriageGroup = Events.Core.TriageGroup;

namespace Events.CSharp;

/// <summary>Where a handler request stands, as a person asks for it.</summary>
public enum RequestStatus
{
    /// <summary>Waiting to run, and any backoff has passed.</summary>
    Runnable,

    /// <summary>Waiting out a backoff after a failed attempt.</summary>
    BackingOff,

    /// <summary>A worker holds it and runs its handler.</summary>
    Running,

    /// <summary>Its handler succeeded.</summary>
    Completed,

    /// <summary>It failed MaxErrors times and waits for a person.</summary>
    Dead,

    /// <summary>A person canceled it.</summary>
    Canceled,
}

/// <summary>What a bulk change does to each request it selects.</summary>
public enum BulkCommand
{
    /// <summary>Runs the request again from zero errors.</summary>
    ReExecute,

    /// <summary>Cancels the request: it will not run again.</summary>
    Cancel,
}

/// <summary>A filter over handler requests; every property set narrows the selection.</summary>
public sealed record RequestFilter
{
    /// <summary>Only requests in one of these statuses (any when empty).</summary>
    public IReadOnlyCollection<RequestStatus> Statuses { get; init; } = [];

    /// <summary>Only requests of these handlers (any when empty).</summary>
    public IReadOnlyCollection<string> HandlerNames { get; init; } = [];

    /// <summary>Only requests of events with these names (any when empty).</summary>
    public IReadOnlyCollection<string> EventNames { get; init; } = [];

    /// <summary>Only the requests of this event.</summary>
    public Guid? EventId { get; init; }

    /// <summary>Only requests whose event happened at or after this time.</summary>
    public DateTimeOffset? From { get; init; }

    /// <summary>Only requests whose event happened before this time.</summary>
    public DateTimeOffset? Until { get; init; }

    /// <summary>Only requests whose last error contains this text, ignoring case.</summary>
    public string? ErrorContains { get; init; }

    /// <summary>Every dead request.</summary>
    public static RequestFilter Dead { get; } = new() { Statuses = [RequestStatus.Dead] };
}

/// <summary>A page of requests matching a filter, in event time then id order.</summary>
public sealed class RequestPage
{
    internal RequestPage(IReadOnlyList<HandlerRequest> requests, string? next)
    {
        Requests = requests;
        Next = next;
    }

    /// <summary>This page.</summary>
    public IReadOnlyList<HandlerRequest> Requests { get; }

    /// <summary>The cursor of the next page (pass it as <c>after</c>); <see langword="null"/> on the last page.</summary>
    public string? Next { get; }
}

/// <summary>How many requests of one handler are in one status.</summary>
/// <param name="HandlerName">The handler.</param>
/// <param name="Status">The status.</param>
/// <param name="Count">The count.</param>
public sealed record HandlerStatusCount(string HandlerName, RequestStatus Status, long Count);

/// <summary>A request and its status.</summary>
/// <param name="Request">The request.</param>
/// <param name="Status">Its status when read.</param>
public sealed record RequestWithStatus(HandlerRequest Request, RequestStatus Status);

/// <summary>An event with all its requests.</summary>
/// <param name="Event">The event.</param>
/// <param name="Requests">Its requests, by handler name.</param>
/// <param name="FullyHandled">Whether it is processed and every request completed or canceled.</param>
public sealed record EventDetails(Event Event, IReadOnlyList<RequestWithStatus> Requests, bool FullyHandled);

/// <summary>Dead requests that failed for one cause.</summary>
public sealed class TriageGroup
{
    internal TriageGroup(CoreTriageGroup core)
    {
        Id = core.Fingerprint.Id;
        Kind = core.Fingerprint.Kind.ToString();
        ExceptionType = core.Fingerprint.ExceptionType.ToNullableReference();
        Frames = [.. core.Fingerprint.Frames];
        Pattern = core.Fingerprint.Pattern;
        Description = ErrorFingerprintModule.describe(core.Fingerprint);
        Count = core.Count;
        HandlerNames = [.. core.HandlerNames.Select(name => name.Value)];
        EventNames = [.. core.EventNames.Select(name => name.Value)];
        FirstSeen = core.FirstSeen;
        LastSeen = core.LastSeen;
        Sample = new HandlerRequest(core.Sample);
    }

    /// <summary>The cause's fingerprint id (12 hex digits): select the group with it.</summary>
    public string Id { get; }

    /// <summary>How the attempts ended: Returned, Thrown, TimedOut or LeaseExpired.</summary>
    public string Kind { get; }

    /// <summary>The exception's type, when the error text names it.</summary>
    public string? ExceptionType { get; }

    /// <summary>The top stack frames of the application's own code, when the error text holds them.</summary>
    public IReadOnlyList<string> Frames { get; }

    /// <summary>The message with ids, numbers and quoted values replaced by placeholders.</summary>
    public string Pattern { get; }

    /// <summary>One line for a person.</summary>
    public string Description { get; }

    /// <summary>How many dead requests failed for this cause.</summary>
    public long Count { get; }

    /// <summary>The handlers among them.</summary>
    public IReadOnlyList<string> HandlerNames { get; }

    /// <summary>The event names among them.</summary>
    public IReadOnlyList<string> EventNames { get; }

    /// <summary>When the earliest of them last failed.</summary>
    public DateTimeOffset FirstSeen { get; }

    /// <summary>When the latest of them last failed.</summary>
    public DateTimeOffset LastSeen { get; }

    /// <summary>One of them.</summary>
    public HandlerRequest Sample { get; }
}

/// <summary>A bulk change: which requests, and how it runs.</summary>
public sealed record BulkRequest
{
    /// <summary>The requests (default: every dead request).</summary>
    public RequestFilter Filter { get; init; } = RequestFilter.Dead;

    /// <summary>Only those of this triage group (its <see cref="TriageGroup.Id"/>).</summary>
    public string? Group { get; init; }

    /// <summary>Only count what would change.</summary>
    public bool DryRun { get; init; }

    /// <summary>Requests changed per transaction (default 500).</summary>
    public int ChunkSize { get; init; } = Administration.defaultBulkOptions.ChunkSize;

    /// <summary>Start after this cursor (a previous result's <see cref="BulkResult.Cursor"/>), to resume.</summary>
    public string? After { get; init; }

    /// <summary>Change at most this many.</summary>
    public long? Limit { get; init; }
}

/// <summary>Where a bulk change stands.</summary>
public sealed class BulkResult
{
    internal BulkResult(CoreBulkProgress core)
    {
        Selected = core.Selected;
        Updated = core.Updated;
        Refused = core.Refused;
        Locked = core.Locked;
        Cursor = core.Cursor.ToNullableReference() is { } cursor ? RequestCursorModule.format(cursor) : null;
        Finished = core.Finished;
    }

    /// <summary>Requests selected (on a dry run: all that would change).</summary>
    public long Selected { get; }

    /// <summary>Requests changed.</summary>
    public long Updated { get; }

    /// <summary>Requests the core refused to change (they changed since they were selected).</summary>
    public long Refused { get; }

    /// <summary>Requests an executor held at the time: left alone; run again to retry them.</summary>
    public long Locked { get; }

    /// <summary>Everything up to here was looked at: pass it as <see cref="BulkRequest.After"/> to resume.</summary>
    public string? Cursor { get; }

    /// <summary>Whether the run got to the end of its selection.</summary>
    public bool Finished { get; }
}

/// <summary>How a canary redrive ended.</summary>
public enum CanaryOutcome
{
    /// <summary>Every canary completed, and the rest were re-executed.</summary>
    Succeeded,

    /// <summary>A canary failed again; the rest were left dead.</summary>
    Failed,

    /// <summary>The canaries had not finished in time; the rest were left dead.</summary>
    Undecided,

    /// <summary>Nothing matched.</summary>
    NothingSelected,
}

/// <summary>The result of a canary redrive.</summary>
/// <param name="Outcome">How it ended.</param>
/// <param name="Canaries">The canaries as last read.</param>
/// <param name="Rest">The re-execution of the rest, when the canaries succeeded.</param>
public sealed record CanaryResult(CanaryOutcome Outcome, IReadOnlyList<HandlerRequest> Canaries, BulkResult? Rest);

/// <summary>Translations between the facade's operations types and the core's.</summary>
internal static class OperationsInterop
{
    public static CoreStatus ToCore(this RequestStatus status) => status switch
    {
        RequestStatus.Runnable => CoreStatus.Runnable,
        RequestStatus.BackingOff => CoreStatus.BackingOff,
        RequestStatus.Running => CoreStatus.Running,
        RequestStatus.Completed => CoreStatus.Completed,
        RequestStatus.Dead => CoreStatus.Dead,
        RequestStatus.Canceled => CoreStatus.Canceled,
        _ => throw new ArgumentOutOfRangeException(nameof(status), status, "not a request status"),
    };

    public static RequestStatus ToFacade(this CoreStatus status) => status.Tag switch
    {
        CoreStatus.Tags.Runnable => RequestStatus.Runnable,
        CoreStatus.Tags.BackingOff => RequestStatus.BackingOff,
        CoreStatus.Tags.Running => RequestStatus.Running,
        CoreStatus.Tags.Completed => RequestStatus.Completed,
        CoreStatus.Tags.Dead => RequestStatus.Dead,
        _ => RequestStatus.Canceled,
    };

    public static CoreBulkCommand ToCore(this BulkCommand command) => command switch
    {
        BulkCommand.ReExecute => CoreBulkCommand.ReExecute,
        BulkCommand.Cancel => CoreBulkCommand.Cancel,
        _ => throw new ArgumentOutOfRangeException(nameof(command), command, "not a bulk command"),
    };

    public static CoreFilter ToCore(this RequestFilter? filter)
    {
        filter ??= new RequestFilter();
        ArgumentNullException.ThrowIfNull(filter.Statuses, nameof(filter.Statuses));
        ArgumentNullException.ThrowIfNull(filter.HandlerNames, nameof(filter.HandlerNames));
        ArgumentNullException.ThrowIfNull(filter.EventNames, nameof(filter.EventNames));
        return RequestFilterModule.validate(new CoreFilter(
            filter.Statuses.Select(ToCore).ToFSharpList(),
            filter.HandlerNames.Select(global::Events.Core.HandlerName.Create).ToFSharpList(),
            filter.EventNames.Select(global::Events.Core.EventName.Create).ToFSharpList(),
            filter.EventId.ToOption(),
            filter.From.ToOption(),
            filter.Until.ToOption(),
            filter.ErrorContains.ToOption()));
    }

    public static FSharpOption<RequestCursor>? ToCursor(string? text, string parameter)
    {
        if (text is null)
        {
            return FSharpOption<RequestCursor>.None;
        }

        return RequestCursorModule.tryParse(text) is { } cursor && FSharpOption<RequestCursor>.get_IsSome(cursor)
            ? cursor
            : throw new ArgumentException($"not a cursor a page or a bulk change returned: \"{text}\"", parameter);
    }

    public static BulkSelection ToSelection(this BulkRequest request) =>
        new(request.Filter.ToCore(), request.Group.ToOption());

    public static BulkOptions ToOptions(this BulkRequest request) =>
        new(request.ChunkSize, request.DryRun, ToCursor(request.After, nameof(request.After)), request.Limit.ToOption());
}
