// The Go framework's demo on the C# facade and the generic host: a producer raises one application
// event and one domain event every second; three handlers run for them (one always fails); a reporter
// logs the store's gauges every second; traces and metrics go to JSON lines files. Ctrl+C or SIGTERM
// stops it gracefully within 10 s, and --duration stops it by itself. The dashboard is served on a loopback
// port it prints (--dashboard-port, --no-dashboard).
using Events.CSharp;
using Events.Testing;
using EventsDemo;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

if (!DemoSettings.TryParse(args, out var settings, out var error))
{
    if (error is { Length: > 0 })
    {
        Console.Error.WriteLine(error);
    }

    Console.Error.WriteLine(DemoSettings.Usage);
    return error is { Length: > 0 } ? 2 : 0;
}

// --store postgres: the database in EVENTS_POSTGRES, else a throwaway local server, gone when the demo stops.
await using var throwaway = settings.Store == DemoStore.Postgres && string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable("EVENTS_POSTGRES"))
    ? await StartThrowawayPostgresAsync()
    : null;
var connectionString = settings.Store != DemoStore.Postgres
    ? null
    : throwaway is null ? Environment.GetEnvironmentVariable("EVENTS_POSTGRES") : await throwaway.CreateDatabaseAsync("events_demo");

Directory.CreateDirectory(settings.Output);
var tracesPath = Path.Combine(settings.Output, "traces.jsonl");
var metricsPath = Path.Combine(settings.Output, "metrics.jsonl");

var builder = Host.CreateApplicationBuilder();
builder.Logging.ClearProviders();
builder.Logging.AddSimpleConsole(console =>
{
    console.SingleLine = true;
    console.TimestampFormat = "HH:mm:ss ";
});
builder.Logging.SetMinimumLevel(LogLevel.Information);
builder.Logging.AddFilter("Marten", LogLevel.Warning);

// Handlers get ShutdownTimeout to finish once the host stops; then their tokens fire, and shutdown waits
// up to the scheduler's ShutdownGrace for them: 7 s + 2 s keeps a graceful stop within 10 s.
builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = TimeSpan.FromSeconds(7));
builder.Services.AddSingleton(settings);
builder.Services.AddSingleton<CountingErrorReporter>();
builder.Services.AddSingleton<IErrorReporter>(provider => provider.GetRequiredService<CountingErrorReporter>());

// begin-snippet: add-events
var events = builder.Services.AddEvents((provider, options) =>
{
    options.Processor.Limit = 50;
    options.Processor.Workers = 1;
    options.Executor.Limit = 50;
    options.Executor.Workers = 5;
    options.Scheduler.Interval = TimeSpan.FromSeconds(5);
    options.Scheduler.Mode = settings.Concurrent ? SchedulerMode.Concurrent : SchedulerMode.Cooperative;
    options.Scheduler.TelemetryPrefix = "demo";
    options.Scheduler.ShutdownGrace = TimeSpan.FromSeconds(2);
    DemoHandlers.Configure(options, provider.GetRequiredService<ILoggerFactory>().CreateLogger("Events.Demo.Handlers"));
});
// end-snippet
switch (settings.Store)
{
    case DemoStore.Memory:
        events.UseInMemoryStore();
        break;
    case DemoStore.Postgres:
        // begin-snippet: use-marten-store
        builder.Services.AddMarten(connectionString!).UseLightweightSessions();
        events.UseMartenStore();
        // end-snippet
        break;
}

// begin-snippet: add-telemetry
builder.Services.AddOpenTelemetry()
    .ConfigureResource(resource => resource.AddService("events-demo"))
    .WithTracing(tracing => tracing
        .AddEventsInstrumentation()
        .AddSource(DemoTelemetry.SourceName)
        .AddProcessor(new BatchActivityExportProcessor(new JsonLinesActivityExporter(tracesPath))))
    .WithMetrics(metrics => metrics
        .AddEventsInstrumentation()
        .AddReader(new PeriodicExportingMetricReader(new JsonLinesMetricExporter(metricsPath), exportIntervalMilliseconds: 1000)));
// end-snippet

builder.Services.AddHostedService<EventProducer>();
builder.Services.AddSingleton<StatsReporter>();
builder.Services.AddHostedService(provider => provider.GetRequiredService<StatsReporter>());
builder.Services.AddHostedService<StopAfterDuration>();
if (settings.Dashboard)
{
    builder.Services.AddHostedService<DemoDashboard>();
}

using var host = builder.Build();
var logger = host.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Events.Demo");
logger.LogInformation(
    "events demo: {Scheduler} scheduler, {Store} store, {Duration}; traces to {Traces}, metrics to {Metrics}",
    settings.Concurrent ? "concurrent" : "cooperative",
    settings.Store.ToString().ToLowerInvariant(),
    settings.Duration is { } duration ? $"stops after {duration.TotalSeconds} s" : "Ctrl+C stops it",
    tracesPath,
    metricsPath);

await host.StartAsync();
await host.WaitForShutdownAsync();

var admin = host.Services.GetRequiredService<IEventsAdmin>();
host.Services.GetRequiredService<StatsReporter>().Log(await admin.GetStatisticsAsync());
var reporter = host.Services.GetRequiredService<CountingErrorReporter>();
logger.LogInformation(
    "error reporter: {Total} reports{Details}",
    reporter.Counts.Values.Sum(),
    string.Concat(reporter.Counts.OrderBy(pair => pair.Key).Select(pair => $"; {pair.Key.Handler} {pair.Key.Kind}: {pair.Value}")));
var completed = await admin.GetRequestsAsync().CountAsync(request => request.State == HandlerRequestState.Completed);
logger.LogInformation("handler requests completed: {Completed}", completed);
return 0;

static async Task<ThrowawayPostgres> StartThrowawayPostgresAsync()
{
    Console.WriteLine("EVENTS_POSTGRES is not set: starting a throwaway PostgreSQL");
    return await ThrowawayPostgres.StartAsync();
}
