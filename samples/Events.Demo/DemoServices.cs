using System.Collections.Concurrent;
using System.Diagnostics;
using Events.CSharp;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace EventsDemo;

/// <summary>The demo's own spans: each produced pair of events starts a trace that reaches its handlers.</summary>
public static class DemoTelemetry
{
    /// <summary>The name of the demo's ActivitySource.</summary>
    public const string SourceName = "Events.Demo";

    /// <summary>The demo's ActivitySource.</summary>
    public static ActivitySource Source { get; } = new(SourceName);
}

/// <summary>Raises one application event and one domain event every second.</summary>
/// <param name="publisher">Raises the events.</param>
/// <param name="logger">Logs what was raised.</param>
public sealed class EventProducer(IEventPublisher publisher, ILogger<EventProducer> logger) : BackgroundService
{
    /// <inheritdoc/>
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
        var number = 0;
        do
        {
            number++;
            using var activity = DemoTelemetry.Source.StartActivity("produce events");
            try
            {
                var application = await publisher.RaiseApplicationEventAsync(
                    DemoHandlers.ApplicationEventName,
                    new { Number = number },
                    stoppingToken);
                var domain = await publisher.RaiseDomainEventAsync(
                    DemoHandlers.DomainEventName,
                    entityId: $"entity-{number}",
                    entityName: DemoHandlers.EntityName,
                    new { Number = number },
                    stoppingToken);
                logger.LogDebug("raised {Application} and {Domain}", application, domain);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception error)
            {
                logger.LogError(error, "error raising events");
            }
        }
        while (await WaitAsync(timer, stoppingToken));
    }

    private static async Task<bool> WaitAsync(PeriodicTimer timer, CancellationToken stoppingToken)
    {
        try
        {
            return await timer.WaitForNextTickAsync(stoppingToken);
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}

/// <summary>Logs the store's gauges every second.</summary>
/// <param name="admin">Reads the gauges.</param>
/// <param name="logger">Logs them.</param>
public sealed class StatsReporter(IEventsAdmin admin, ILogger<StatsReporter> logger) : BackgroundService
{
    /// <inheritdoc/>
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                try
                {
                    Log(await admin.GetStatisticsAsync(stoppingToken));
                }
                catch (Exception error) when (error is not OperationCanceledException)
                {
                    logger.LogError(error, "error reading the store's gauges");
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Logs one reading of the gauges.</summary>
    /// <param name="stats">The gauges.</param>
    public void Log(EventsStatistics stats) =>
        logger.LogInformation(
            "unprocessed {Unprocessed} (oldest {OldestUnprocessed:0.0} s), unexecuted {Unexecuted} (oldest {OldestUnexecuted:0.0} s), dead {Dead}",
            stats.UnprocessedEvents,
            stats.OldestUnprocessedEventAge.TotalSeconds,
            stats.RunnableRequests,
            stats.OldestRunnableRequestAge.TotalSeconds,
            stats.DeadRequests);
}

/// <summary>Stops the demo after <see cref="DemoSettings.Duration"/>, as if Ctrl+C were pressed.</summary>
/// <param name="settings">The demo's settings.</param>
/// <param name="lifetime">Stops the host.</param>
/// <param name="logger">Says so.</param>
public sealed class StopAfterDuration(DemoSettings settings, IHostApplicationLifetime lifetime, ILogger<StopAfterDuration> logger)
    : BackgroundService
{
    /// <inheritdoc/>
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (settings.Duration is not { } duration)
        {
            return;
        }

        try
        {
            await Task.Delay(duration, stoppingToken);
        }
        catch (OperationCanceledException)
        {
            return;
        }

        logger.LogInformation("ran for {Seconds} s: stopping", duration.TotalSeconds);
        lifetime.StopApplication();
    }
}

/// <summary>Counts the failures the executor reports (a real application would send them to an error tracker).</summary>
public sealed class CountingErrorReporter : IErrorReporter
{
    private readonly ConcurrentDictionary<(string Handler, string Kind), int> counts = new();

    /// <summary>The reports received, by handler and kind ("dead" or "thrown").</summary>
    public IReadOnlyDictionary<(string Handler, string Kind), int> Counts => counts;

    /// <inheritdoc/>
    public bool Report(ErrorReport report)
    {
        var kind = report.Exception is not null ? "thrown" : "dead";
        counts.AddOrUpdate((report.Request.HandlerName, kind), 1, (_, count) => count + 1);
        return true;
    }
}
