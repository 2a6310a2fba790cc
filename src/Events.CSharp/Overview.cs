using CoreOverview = Events.Core.HandlerOverview;

namespace Events.CSharp;

/// <summary>
/// One handler at a glance: its live requests by status, the requests it completed in a recent window and the
/// rate that makes, and how long its oldest runnable request has waited.
/// </summary>
public sealed class HandlerOverview
{
    internal HandlerOverview(CoreOverview core, DateTimeOffset at, TimeSpan window)
    {
        HandlerName = core.HandlerName.Value;
        Runnable = core.Runnable;
        BackingOff = core.BackingOff;
        Running = core.Running;
        Dead = core.Dead;
        Completed = core.CompletedSince;
        Window = window;
        OldestRunnable = core.OldestRunnable.ToNullable();
        OldestRunnableAge = OldestRunnable is { } oldest && at > oldest ? at - oldest : TimeSpan.Zero;
    }

    /// <summary>The handler.</summary>
    public string HandlerName { get; }

    /// <summary>Requests runnable now.</summary>
    public long Runnable { get; }

    /// <summary>Requests waiting out a backoff.</summary>
    public long BackingOff { get; }

    /// <summary>Requests a worker holds.</summary>
    public long Running { get; }

    /// <summary>Dead requests.</summary>
    public long Dead { get; }

    /// <summary>Requests completed within <see cref="Window"/> before the reading.</summary>
    public long Completed { get; }

    /// <summary>How far back <see cref="Completed"/> counts.</summary>
    public TimeSpan Window { get; }

    /// <summary>Completions per minute over <see cref="Window"/>.</summary>
    public double CompletedPerMinute => Window > TimeSpan.Zero ? Completed / Window.TotalMinutes : 0;

    /// <summary>The event timestamp of the oldest runnable request; <see langword="null"/> when none is runnable.</summary>
    public DateTimeOffset? OldestRunnable { get; }

    /// <summary>How long the oldest runnable request's event is past at the reading; zero when none is runnable.</summary>
    public TimeSpan OldestRunnableAge { get; }
}
