using System.Collections.Concurrent;
using System.Diagnostics;
using Events.CSharp;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace Facade.Tests;

public class HostingTests
{
    /// <summary>A service a handler depends on, resolved from the container.</summary>
    private sealed class Mailbox
    {
        public ConcurrentQueue<string> Sent { get; } = new();
    }

    private static IHost BuildHost(Action<IServiceCollection> configure)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddSingleton<Mailbox>();
        configure(builder.Services);
        return builder.Build();
    }

    [Fact]
    public async Task Events_run_end_to_end_through_AddEvents_and_the_hosted_service()
    {
        using var host = BuildHost(services => services
            .AddEvents((provider, options) =>
            {
                var mailbox = provider.GetRequiredService<Mailbox>();
                options.Scheduler.Interval = TimeSpan.FromMilliseconds(25);
                options.On("user.created").Handle("send-welcome-email", (context, cancellationToken) =>
                {
                    mailbox.Sent.Enqueue(context.GetData<NewUser>()!.Email);
                    return Task.CompletedTask;
                });
            })
            .UseInMemoryStore());

        await host.StartAsync();
        var runtime = host.Services.GetRequiredService<EventsRuntime>();
        Assert.Equal(RuntimeStatus.Running, runtime.Status);
        var publisher = host.Services.GetRequiredService<IEventPublisher>();
        await publisher.RaiseApplicationEventAsync("user.created", new NewUser("ada@example.org"));

        var mailbox = host.Services.GetRequiredService<Mailbox>();
        await Eventually.HoldsAsync(() => mailbox.Sent.Contains("ada@example.org"), "the welcome email was sent");
        await host.StopAsync();

        Assert.Equal(RuntimeStatus.Shutdown, runtime.Status);
        Assert.Same(runtime, host.Services.GetRequiredService<IEventsAdmin>());
        Assert.Same(runtime.Store, host.Services.GetRequiredService<EventStore>());
    }

    private sealed record NewUser(string Email);

    [Fact]
    public async Task The_error_reporter_comes_from_the_container()
    {
        using var host = BuildHost(services => services
            .AddEvents(options =>
            {
                options.Scheduler.Interval = TimeSpan.FromMilliseconds(25);
                options.On("user.created").Handle(
                    "always-fails",
                    (context, cancellationToken) => Task.FromResult(HandlerOutcome.Failure("oh noes")),
                    handler => handler.MaxErrors(1));
            })
            .UseInMemoryStore()
            .AddErrorReporter<RecordingReporter>());
        await host.StartAsync();

        await host.Services.GetRequiredService<IEventPublisher>().RaiseApplicationEventAsync("user.created", new { });

        var reporter = host.Services.GetRequiredService<RecordingReporter>();
        await Eventually.HoldsAsync(() => !reporter.Reports.IsEmpty, "the dead request was reported");
        Assert.Equal("oh noes", Assert.Single(reporter.Reports).Error);
        await host.StopAsync();
    }

    [Fact]
    public async Task ConfigureEvents_adds_handlers_from_elsewhere()
    {
        using var host = BuildHost(services =>
        {
            services.AddEvents(options => options.On("a").Handle("first", (context, cancellationToken) => Task.CompletedTask))
                .UseInMemoryStore();
            services.ConfigureEvents(options => options.On("b").Handle("second", (context, cancellationToken) => Task.CompletedTask));
        });

        var runtime = host.Services.GetRequiredService<EventsRuntime>();
        var a = await runtime.RaiseApplicationEventAsync("a", new { });
        var b = await runtime.RaiseApplicationEventAsync("b", new { });
        await host.StartAsync();

        await Eventually.HoldsAsync(
            async () => await runtime.GetRequestsAsync().CountAsync(r => r.State == HandlerRequestState.Completed) == 2,
            "the handlers of both registrations ran");
        var handlers = await runtime.GetRequestsAsync().Select(r => (r.EventId, r.HandlerName)).ToListAsync();
        Assert.Contains((a.Id, "first"), handlers);
        Assert.Contains((b.Id, "second"), handlers);
        await host.StopAsync();
    }

    [Fact]
    public void AddEvents_twice_is_refused()
    {
        var services = new ServiceCollection();
        services.AddEvents(options => { });

        var error = Assert.Throws<InvalidOperationException>(() => services.AddEvents(options => { }));

        Assert.Contains("call AddEvents once", error.Message);
    }

    [Fact]
    public void Without_a_store_resolving_the_runtime_says_how_to_choose_one()
    {
        var services = new ServiceCollection();
        services.AddEvents(options => { });
        using var provider = services.BuildServiceProvider();

        var error = Assert.Throws<InvalidOperationException>(() => provider.GetRequiredService<IEventPublisher>());

        Assert.Contains("UseInMemoryStore()", error.Message);
    }

    [Fact]
    public async Task Stopping_the_host_is_the_shutdown_deadline_for_running_handlers()
    {
        var started = new TaskCompletionSource();
        var canceled = new TaskCompletionSource();
        var builder = Host.CreateApplicationBuilder();
        builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = TimeSpan.FromMilliseconds(200));
        builder.Services
            .AddEvents(options =>
            {
                options.Scheduler.Interval = TimeSpan.FromMilliseconds(25);
                options.On("work").Handle("forever", async (context, cancellationToken) =>
                {
                    started.TrySetResult();
                    using var registration = cancellationToken.Register(() => canceled.TrySetResult());
                    await Task.Delay(Timeout.Infinite, cancellationToken);
                });
            })
            .UseInMemoryStore();
        using var host = builder.Build();
        await host.StartAsync();
        await host.Services.GetRequiredService<IEventPublisher>().RaiseApplicationEventAsync("work", new { });
        await started.Task.WaitAsync(Eventually.Timeout);

        var stopwatch = Stopwatch.StartNew();
        await host.StopAsync();

        await canceled.Task.WaitAsync(Eventually.Timeout);
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(5), $"the host stopped in {stopwatch.Elapsed}");
    }

    [Fact]
    public async Task The_readme_telemetry_registration_exports_through_OpenTelemetrys_own_exporter()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services
            .AddEvents(options =>
            {
                options.Scheduler.Interval = TimeSpan.FromMilliseconds(25);
                options.On("traced").Handle("handle", (context, cancellationToken) => Task.CompletedTask);
            })
            .UseInMemoryStore();

        // begin-snippet: telemetry
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService("shop"))
            .WithTracing(tracing => tracing
                .AddEventsInstrumentation()
                .AddConsoleExporter()) // or .AddOtlpExporter() (package OpenTelemetry.Exporter.OpenTelemetryProtocol)
            .WithMetrics(metrics => metrics
                .AddEventsInstrumentation()
                .AddConsoleExporter());
        // end-snippet
        using var host = builder.Build();
        await host.StartAsync();

        var runtime = host.Services.GetRequiredService<EventsRuntime>();
        var raised = await runtime.RaiseApplicationEventAsync("traced", new { });
        var request = Assert.Single(await runtime.WaitUntilHandledAsync(raised, Eventually.Timeout));

        Assert.Equal(HandlerRequestState.Completed, request.State);
        Assert.NotNull(host.Services.GetService<TracerProvider>());
        Assert.NotNull(host.Services.GetService<MeterProvider>());
        await host.StopAsync();
    }

    [Fact]
    public async Task OpenTelemetry_collects_the_spans_and_metrics_of_events()
    {
        var spans = new List<Activity>();
        var metrics = new List<Metric>();
        using var host = BuildHost(services =>
        {
            services.AddEvents(options =>
                {
                    options.Scheduler.Interval = TimeSpan.FromMilliseconds(25);
                    options.Scheduler.TelemetryPrefix = "facade-test";
                    options.On("traced").Handle("handle", (context, cancellationToken) => Task.CompletedTask);
                })
                .UseInMemoryStore();
            services.AddOpenTelemetry()
                .WithTracing(tracing => tracing.AddEventsInstrumentation().AddInMemoryExporter(spans))
                .WithMetrics(meters => meters.AddEventsInstrumentation().AddInMemoryExporter(metrics));
        });
        await host.StartAsync();

        await host.Services.GetRequiredService<IEventPublisher>().RaiseApplicationEventAsync("traced", new { });
        var admin = host.Services.GetRequiredService<IEventsAdmin>();
        await Eventually.HoldsAsync(
            async () => await admin.GetRequestsAsync().AnyAsync(r => r.State == HandlerRequestState.Completed),
            "the request completed");
        await Eventually.HoldsAsync(
            () => { lock (spans) { return spans.Any(span => span.DisplayName == "execute handle request"); } },
            "the execution span ended");
        host.Services.GetRequiredService<MeterProvider>().ForceFlush();
        await host.StopAsync();

        lock (spans)
        {
            Assert.Contains(spans, span => span.DisplayName == "process traced event");
            Assert.Contains(spans, span => span.DisplayName == "handle handler");
        }

        Assert.Contains(metrics, metric => metric.Name == "facade-test.requests.executed.successes");
        Assert.Contains(metrics, metric => metric.Name == "facade-test.events.processed.successes");
        Assert.Equal("Events", EventsInstrumentation.SourceName);
    }
}
