using System.Collections.Concurrent;
using Events.CSharp;
using Events.Testing;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Facade.Tests;

/// <summary>The host starts while PostgreSQL is down; events start once the database is back.</summary>
public class StartupTests
{
    [Fact]
    public async Task With_PostgreSQL_down_at_start_the_host_starts_and_events_start_once_the_database_is_back()
    {
        // A server of its own: stopping the shared one would fail the tests beside this one.
        await using var postgres = await ThrowawayPostgres.StartAsync();
        var connectionString = await postgres.CreateDatabaseAsync();
        await postgres.StopAsync();

        var logs = new ConcurrentQueue<(LogLevel Level, string Message)>();
        var handled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders().AddProvider(new RecordingLoggerProvider(logs));
        builder.Services.AddMarten(connectionString).UseLightweightSessions();
        builder.Services
            .AddEvents(options =>
            {
                options.Scheduler.Interval = TimeSpan.FromMilliseconds(50);
                options.On("order.placed").Handle("ship", (context, cancellationToken) =>
                {
                    handled.TrySetResult();
                    return Task.CompletedTask;
                });
            })
            .UseMartenStore();
        using var host = builder.Build();

        await host.StartAsync();
        var runtime = host.Services.GetRequiredService<EventsRuntime>();
        Assert.Equal(RuntimeStatus.NotStarted, runtime.Status);
        Assert.Contains(logs, entry => entry.Level == LogLevel.Warning && entry.Message.Contains("events cannot start yet"));

        await postgres.StartAgainAsync();
        await Eventually.HoldsAsync(() => runtime.Status == RuntimeStatus.Running, "events start once the database is back");
        await host.Services.GetRequiredService<IEventPublisher>().RaiseApplicationEventAsync("order.placed", new { });
        await handled.Task.WaitAsync(Eventually.Timeout);
        await host.StopAsync();
    }

    private sealed class RecordingLoggerProvider(ConcurrentQueue<(LogLevel Level, string Message)> logs) : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => new RecordingLogger(logs);

        public void Dispose()
        {
        }
    }

    private sealed class RecordingLogger(ConcurrentQueue<(LogLevel Level, string Message)> logs) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            logs.Enqueue((logLevel, formatter(state, exception)));
    }
}
