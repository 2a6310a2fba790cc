using System.Collections.Concurrent;
using Events.CSharp;

namespace Facade.Tests;

/// <summary>Waits for what a background scheduler does.</summary>
internal static class Eventually
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    /// <summary>Polls <paramref name="condition"/> until it holds, failing with <paramref name="what"/> after a timeout.</summary>
    public static async Task HoldsAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + Timeout;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"timed out after {Timeout.TotalSeconds} s waiting until {what}");
            }

            await Task.Delay(20);
        }
    }

    /// <summary>Polls a synchronous condition.</summary>
    public static Task HoldsAsync(Func<bool> condition, string what) =>
        HoldsAsync(() => Task.FromResult(condition()), what);
}

/// <summary>Options that run fast in tests: short interval and a quick, tiny backoff.</summary>
internal static class Fast
{
    public static EventsOptions Options()
    {
        var options = new EventsOptions().UseInMemoryStore();
        options.Scheduler.Interval = TimeSpan.FromMilliseconds(25);
        options.Scheduler.ShutdownGrace = TimeSpan.FromSeconds(2);
        return options;
    }

    /// <summary>A backoff of at most one millisecond, so retries come on the next tick.</summary>
    public static HandlerOptions QuickRetries(this HandlerOptions handler, int maxErrors) =>
        handler.MaxErrors(maxErrors).ExponentialBackoff(TimeSpan.FromMilliseconds(1), TimeSpan.FromMilliseconds(1));
}

/// <summary>An error reporter that keeps what it is given.</summary>
internal sealed class RecordingReporter : IErrorReporter
{
    public ConcurrentQueue<ErrorReport> Reports { get; } = new();

    public bool Report(ErrorReport report)
    {
        Reports.Enqueue(report);
        return true;
    }
}
