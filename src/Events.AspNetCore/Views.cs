using System.Globalization;
using System.Text.Json;
using Events.CSharp;
using Microsoft.AspNetCore.Http;

namespace Events.AspNetCore;

/// <summary>Reads filters and pages from a query string.</summary>
internal static class Filters
{
    private static IEnumerable<string> Values(IQueryCollection query, string key) =>
        query[key].SelectMany(value => (value ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    public static RequestFilter Read(IQueryCollection query) => new()
    {
        Statuses = [.. Values(query, "status").Select(ReadStatus)],
        HandlerNames = [.. Values(query, "handler")],
        EventNames = [.. Values(query, "event")],
        EventId = query["eventId"].FirstOrDefault() is { } id
            ? Guid.TryParse(id, out var parsed) ? parsed : throw new ArgumentException($"eventId is not a GUID: \"{id}\"")
            : null,
        From = ReadTime(query, "from"),
        Until = ReadTime(query, "until"),
        ErrorContains = query["error"].FirstOrDefault() is { Length: > 0 } error ? error : null,
    };

    public static int ReadLimit(IQueryCollection query) =>
        query["limit"].FirstOrDefault() is { } text
            ? int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var limit) && limit <= 1000
                ? limit
                : throw new ArgumentException($"limit must be a whole number from 0 to 1000, got \"{text}\"")
            : 100;

    public static TimeSpan ReadWindow(IQueryCollection query) =>
        query["window"].FirstOrDefault() is { } text
            ? int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var minutes) && minutes is > 0 and <= 10080
                ? TimeSpan.FromMinutes(minutes)
                : throw new ArgumentException($"window must be a whole number of minutes from 1 to 10080, got \"{text}\"")
            : TimeSpan.FromHours(1);

    private static RequestStatus ReadStatus(string text) =>
        Enum.TryParse<RequestStatus>(text.Replace("-", "", StringComparison.Ordinal), ignoreCase: true, out var status)
        && Enum.IsDefined(status)
            ? status
            : throw new ArgumentException(
                $"unknown status \"{text}\" (one of: {string.Join(", ", Enum.GetNames<RequestStatus>())})");

    private static DateTimeOffset? ReadTime(IQueryCollection query, string key) =>
        query[key].FirstOrDefault() is { } text
            ? DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var time)
                ? time
                : throw new ArgumentException($"{key} is not a time (ISO 8601, such as 2026-01-31T12:00:00Z): \"{text}\"")
            : null;
}

/// <summary>The body of a bulk change.</summary>
internal sealed class BulkBody
{
    public List<RequestStatus>? Statuses { get; set; }

    public List<string>? HandlerNames { get; set; }

    public List<string>? EventNames { get; set; }

    public Guid? EventId { get; set; }

    public DateTimeOffset? From { get; set; }

    public DateTimeOffset? Until { get; set; }

    public string? ErrorContains { get; set; }

    public string? Group { get; set; }

    public bool DryRun { get; set; }

    public int? ChunkSize { get; set; }

    public string? After { get; set; }

    public long? Limit { get; set; }

    public int? Canaries { get; set; }

    public double? WaitSeconds { get; set; }

    public BulkRequest ToRequest() => new()
    {
        Filter = new RequestFilter
        {
            Statuses = Statuses is { Count: > 0 } statuses ? statuses : [RequestStatus.Dead],
            HandlerNames = HandlerNames ?? [],
            EventNames = EventNames ?? [],
            EventId = EventId,
            From = From,
            Until = Until,
            ErrorContains = ErrorContains,
        },
        Group = Group,
        DryRun = DryRun,
        ChunkSize = ChunkSize ?? new BulkRequest().ChunkSize,
        After = After,
        Limit = Limit,
    };
}

internal sealed record RequestView(
    Guid Id,
    string HandlerName,
    Guid EventId,
    string EventName,
    DateTimeOffset EventTimestamp,
    JsonElement EventData,
    string? EntityId,
    string? EntityName,
    Guid? CorrelationId,
    HandlerRequestState State,
    int Errors,
    int MaxErrors,
    int Priority,
    DateTimeOffset? LastAttemptAt,
    string? LastError,
    DateTimeOffset? BackoffUntil,
    DateTimeOffset? CompletedAt,
    DateTimeOffset? CanceledAt,
    DateTimeOffset? LeaseUntil,
    string? TraceParent,
    string? TraceId)
{
    public static RequestView Of(HandlerRequest r) => new(
        r.Id,
        r.HandlerName,
        r.EventId,
        r.EventName,
        r.EventTimestamp,
        r.GetEventData(),
        r.EntityId,
        r.EntityName,
        r.CorrelationId,
        r.State,
        r.Errors,
        r.MaxErrors,
        r.Priority,
        r.LastAttemptAt,
        r.LastError,
        r.BackoffUntil,
        r.CompletedAt,
        r.CanceledAt,
        r.LeaseUntil,
        r.EventTraceParent,
        Trace.IdOf(r.EventTraceParent));
}

internal static class Trace
{
    /// <summary>The trace id of a W3C traceparent (<c>version-traceid-spanid-flags</c>), if it has one.</summary>
    public static string? IdOf(string? traceParent) =>
        traceParent?.Split('-') is [_, { Length: 32 } id, _, _] ? id : null;
}

internal sealed record PageView(IReadOnlyList<RequestView> Requests, string? Next);

internal sealed record CountView(long Count);

internal sealed record StatsView(
    DateTimeOffset At,
    long UnprocessedEvents,
    DateTimeOffset? OldestUnprocessedEvent,
    long RunnableRequests,
    DateTimeOffset? OldestRunnableRequest,
    long DeadRequests,
    IReadOnlyList<HandlerStatusCount> ByHandler)
{
    public StatsView(EventsStatistics stats, IReadOnlyList<HandlerStatusCount> counts)
        : this(
            stats.At,
            stats.UnprocessedEvents,
            stats.OldestUnprocessedEvent,
            stats.RunnableRequests,
            stats.OldestRunnableRequest,
            stats.DeadRequests,
            counts)
    {
    }
}

internal sealed record RequestStatusView(RequestView Request, RequestStatus Status);

internal sealed record EventView(
    Guid Id,
    string Name,
    DateTimeOffset Timestamp,
    JsonElement Data,
    string? EntityId,
    string? EntityName,
    Guid? CorrelationId,
    string? TraceId,
    DateTimeOffset? ProcessedAt,
    bool FullyHandled,
    IReadOnlyList<RequestStatusView> Requests)
{
    public static EventView Of(EventDetails details) => new(
        details.Event.Id,
        details.Event.Name,
        details.Event.Timestamp,
        details.Event.GetData(),
        details.Event.EntityId,
        details.Event.EntityName,
        details.Event.CorrelationId,
        Trace.IdOf(details.Event.TraceParent),
        details.Event.ProcessedAt,
        details.FullyHandled,
        [.. details.Requests.Select(r => new RequestStatusView(RequestView.Of(r.Request), r.Status))]);
}

internal sealed record TriageView(
    string Id,
    string Kind,
    string? ExceptionType,
    IReadOnlyList<string> Frames,
    string Pattern,
    string Description,
    long Count,
    IReadOnlyList<string> HandlerNames,
    IReadOnlyList<string> EventNames,
    DateTimeOffset FirstSeen,
    DateTimeOffset LastSeen,
    RequestView Sample)
{
    public static TriageView Of(TriageGroup g) => new(
        g.Id, g.Kind, g.ExceptionType, g.Frames, g.Pattern, g.Description, g.Count, g.HandlerNames, g.EventNames, g.FirstSeen, g.LastSeen, RequestView.Of(g.Sample));
}

internal sealed record BulkView(long Selected, long Updated, long Refused, long Locked, string? Cursor, bool Finished)
{
    public static BulkView Of(BulkResult r) => new(r.Selected, r.Updated, r.Refused, r.Locked, r.Cursor, r.Finished);
}

internal sealed record CanaryView(CanaryOutcome Outcome, IReadOnlyList<RequestView> Canaries, BulkView? Rest);

internal sealed record HandlerOverviewView(
    string HandlerName,
    long Runnable,
    long BackingOff,
    long Running,
    long Dead,
    long Completed,
    double CompletedPerMinute,
    DateTimeOffset? OldestRunnable,
    double OldestRunnableAgeSeconds)
{
    public static HandlerOverviewView Of(HandlerOverview o) => new(
        o.HandlerName, o.Runnable, o.BackingOff, o.Running, o.Dead, o.Completed, o.CompletedPerMinute, o.OldestRunnable, o.OldestRunnableAge.TotalSeconds);
}

internal sealed record OverviewView(
    DateTimeOffset At,
    double WindowMinutes,
    long UnprocessedEvents,
    double OldestUnprocessedEventAgeSeconds,
    long RunnableRequests,
    double OldestRunnableRequestAgeSeconds,
    long DeadRequests,
    IReadOnlyList<HandlerOverviewView> Handlers);
