using Events.CSharp;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Events.AspNetCore;

/// <summary>Thresholds of the Events health checks.</summary>
public sealed class EventsHealthOptions
{
    /// <summary>The oldest unprocessed event may be this old before the backlog check degrades (default 5 minutes).</summary>
    public TimeSpan MaxUnprocessedEventAge { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>The oldest runnable request's event may be this old before the backlog check degrades (default 5 minutes).</summary>
    public TimeSpan MaxRunnableRequestAge { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>The status the backlog check reports past a threshold (default <see cref="HealthStatus.Degraded"/>).</summary>
    public HealthStatus BacklogFailureStatus { get; set; } = HealthStatus.Degraded;

    /// <summary>The status the listener check reports while disconnected (default <see cref="HealthStatus.Degraded"/>: polling still finds the work).</summary>
    public HealthStatus ListenerFailureStatus { get; set; } = HealthStatus.Degraded;
}

/// <summary>Health checks of an Events runtime registered with <c>AddEvents</c>.</summary>
public static class EventsHealthChecks
{
    /// <summary>
    /// Adds three checks: <c>events-store</c> (the store answers its gauges), <c>events-listener</c> (the
    /// wake-up listener is connected; healthy for a store without one) and <c>events-backlog</c> (the oldest
    /// unprocessed event and the oldest runnable request are younger than the thresholds).
    /// </summary>
    /// <param name="builder">The application's health checks.</param>
    /// <param name="configure">Sets the thresholds; <see langword="null"/> for the defaults.</param>
    /// <param name="tags">Tags for the three checks (to select them on an endpoint).</param>
    /// <returns>The builder, to chain.</returns>
    public static IHealthChecksBuilder AddEventsHealthChecks(
        this IHealthChecksBuilder builder,
        Action<EventsHealthOptions>? configure = null,
        IEnumerable<string>? tags = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = new EventsHealthOptions();
        configure?.Invoke(options);
        if (options.MaxUnprocessedEventAge <= TimeSpan.Zero || options.MaxRunnableRequestAge <= TimeSpan.Zero)
        {
            throw new ArgumentException("the health check thresholds must be positive", nameof(configure));
        }

        var tagList = tags?.ToArray() ?? [];
        builder.Add(new HealthCheckRegistration(
            "events-store",
            provider => new StoreCheck(provider.GetRequiredService<IEventsAdmin>()),
            HealthStatus.Unhealthy,
            tagList));
        builder.Add(new HealthCheckRegistration(
            "events-listener",
            provider => new ListenerCheck(provider.GetRequiredService<EventsRuntime>(), options),
            options.ListenerFailureStatus,
            tagList));
        builder.Add(new HealthCheckRegistration(
            "events-backlog",
            provider => new BacklogCheck(provider.GetRequiredService<IEventsAdmin>(), options),
            options.BacklogFailureStatus,
            tagList));
        return builder;
    }

    private sealed class StoreCheck(IEventsAdmin admin) : IHealthCheck
    {
        public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
        {
            try
            {
                var stats = await admin.GetStatisticsAsync(cancellationToken).ConfigureAwait(false);
                return HealthCheckResult.Healthy(
                    "the store answers",
                    new Dictionary<string, object> { ["deadRequests"] = stats.DeadRequests });
            }
            catch (Exception error) when (error is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                return new HealthCheckResult(context.Registration.FailureStatus, $"the store does not answer: {error.Message}", error);
            }
        }
    }

    private sealed class ListenerCheck(EventsRuntime runtime, EventsHealthOptions options) : IHealthCheck
    {
        public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
            Task.FromResult(runtime.Store.IsListening switch
            {
                null => HealthCheckResult.Healthy("the store has no wake-up listener"),
                true => HealthCheckResult.Healthy("the wake-up listener is connected"),
                false => new HealthCheckResult(
                    options.ListenerFailureStatus,
                    "the wake-up listener is not connected: other processes' new work is found by polling only"),
            });
    }

    private sealed class BacklogCheck(IEventsAdmin admin, EventsHealthOptions options) : IHealthCheck
    {
        public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
        {
            var stats = await admin.GetStatisticsAsync(cancellationToken).ConfigureAwait(false);
            var data = new Dictionary<string, object>
            {
                ["unprocessedEvents"] = stats.UnprocessedEvents,
                ["oldestUnprocessedEventAgeSeconds"] = stats.OldestUnprocessedEventAge.TotalSeconds,
                ["runnableRequests"] = stats.RunnableRequests,
                ["oldestRunnableRequestAgeSeconds"] = stats.OldestRunnableRequestAge.TotalSeconds,
            };
            var problems = new List<string>();
            if (stats.OldestUnprocessedEventAge > options.MaxUnprocessedEventAge)
            {
                problems.Add($"the oldest unprocessed event is {stats.OldestUnprocessedEventAge.TotalSeconds:0}s old (threshold {options.MaxUnprocessedEventAge.TotalSeconds:0}s)");
            }

            if (stats.OldestRunnableRequestAge > options.MaxRunnableRequestAge)
            {
                problems.Add($"the oldest runnable request is {stats.OldestRunnableRequestAge.TotalSeconds:0}s old (threshold {options.MaxRunnableRequestAge.TotalSeconds:0}s)");
            }

            return problems.Count == 0
                ? HealthCheckResult.Healthy("the backlog is within its thresholds", data)
                : new HealthCheckResult(options.BacklogFailureStatus, string.Join("; ", problems), data: data);
        }
    }
}
