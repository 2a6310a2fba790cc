using System.Collections.Concurrent;
using Events.CSharp;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Facade.Tests;

[EventName("invoice.sent")]
public sealed record InvoiceSent(string Number, decimal Amount);

public sealed record Unnamed(int Value);

/// <summary>Typed handlers, event names from data types, entities, settings from configuration, handler classes checked at start, the test helpers.</summary>
public class TypedHandlerTests
{
    public sealed class Ledger
    {
        public ConcurrentQueue<string> Lines { get; } = new();
    }

    public sealed class BookInvoice(Ledger ledger) : IEventHandler<InvoiceSent>
    {
        public Task<HandlerOutcome> HandleAsync(InvoiceSent data, HandlerContext context, CancellationToken cancellationToken)
        {
            ledger.Lines.Enqueue($"class {data.Number} {data.Amount} attempt {context.Attempt}");
            return Task.FromResult(HandlerOutcome.Success);
        }
    }

    public interface IMissing;

    public sealed class NeedsMissing(IMissing missing) : IEventHandler<InvoiceSent>
    {
        public Task<HandlerOutcome> HandleAsync(InvoiceSent data, HandlerContext context, CancellationToken cancellationToken) =>
            Task.FromResult(missing is null ? HandlerOutcome.Failure("none") : HandlerOutcome.Success);
    }

    public sealed class NotAHandler;

    [Fact]
    public void Event_names_come_from_the_attribute_or_else_the_full_type_name()
    {
        Assert.Equal("invoice.sent", EventNames.Of<InvoiceSent>());
        Assert.Equal("Facade.Tests.Unnamed", EventNames.Of<Unnamed>());
        Assert.Equal("invoice.sent", Event.Application(new InvoiceSent("I-1", 10m)).Name);
        Assert.Equal(["invoice.sent"], new EventsOptions().On<InvoiceSent>().Handle("h", (invoice, context, ct) => Task.CompletedTask) is { } typed
            ? [typed.EventName]
            : Array.Empty<string>());
    }

    [Fact]
    public void A_domain_event_takes_its_entity_as_one_value()
    {
        var orders = new EntityKind("order");

        var made = Event.Domain("order.placed", orders.Entity("A-17"), new { Total = 3 });
        var derived = Event.Domain(orders.Entity("A-18"), new InvoiceSent("I-1", 1m));

        Assert.Equal(("order", "A-17"), (made.EntityName, made.EntityId));
        Assert.Equal(("invoice.sent", "order", "A-18"), (derived.Name, derived.EntityName, derived.EntityId));
        Assert.Equal("entityName", Assert.Throws<ArgumentException>(() => Event.Domain("x", new EntityKind(" ").Entity("1"), new { })).ParamName);
    }

    [Fact]
    public async Task Typed_lambdas_and_classes_get_the_data_read_once_and_services_from_the_attempts_scope()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddSingleton<Ledger>();
        builder.Services
            .AddEvents(options =>
            {
                options.Scheduler.Interval = TimeSpan.FromMilliseconds(25);
                options.On<InvoiceSent>()
                    .Handle("typed", (invoice, context, cancellationToken) =>
                    {
                        context.Services.GetRequiredService<Ledger>().Lines.Enqueue($"typed {invoice.Number}");
                        return Task.CompletedTask;
                    })
                    .Handle<Ledger>("given-service", (invoice, ledger, context, cancellationToken) =>
                    {
                        ledger.Lines.Enqueue($"service {invoice.Amount}");
                        return Task.FromResult(HandlerOutcome.Success);
                    })
                    .Handle<BookInvoice>("class");
            })
            .UseInMemoryStore();
        using var host = builder.Build();
        await host.StartAsync();
        var runtime = host.Services.GetRequiredService<EventsRuntime>();

        var raised = await runtime.RaiseAsync(Event.Application(new InvoiceSent("I-7", 12.5m)));
        var requests = await runtime.WaitUntilHandledAsync(raised, Eventually.Timeout);

        Assert.All(requests, request => Assert.Equal(HandlerRequestState.Completed, request.State));
        Assert.Equal(
            ["class I-7 12.5 attempt 1", "service 12.5", "typed I-7"],
            host.Services.GetRequiredService<Ledger>().Lines.Order(StringComparer.Ordinal));
        await host.StopAsync();
    }

    [Fact]
    public async Task Data_that_cannot_be_read_as_the_handlers_type_fails_the_attempt_with_the_reason()
    {
        var options = Fast.Options();
        var reporter = new RecordingReporter();
        options.Executor.ErrorReporter = reporter;
        options.On("invoice.sent").Handle<InvoiceSent>(
            "typed",
            (invoice, context, cancellationToken) => Task.CompletedTask,
            handler => handler.MaxErrors(1));
        await using var events = EventsRuntime.Create(options);
        events.Start();

        var raised = await events.RaiseApplicationEventAsync("invoice.sent", new { Number = 7, Amount = "lots" });
        var request = Assert.Single(await events.WaitUntilHandledAsync(raised, Eventually.Timeout));

        Assert.Equal(HandlerRequestState.Dead, request.State);
        Assert.Contains("cannot be read as Facade.Tests.InvoiceSent", request.LastError);
        await events.ShutdownAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(RuntimeStatus.Shutdown, events.Status);
    }

    [Fact]
    public void A_class_that_is_no_handler_is_refused_when_added()
    {
        var error = Assert.Throws<ArgumentException>(() => new EventsOptions().On("x").Handle<NotAHandler>("h"));

        Assert.Contains("implement IEventHandler or IEventHandler<TData>", error.Message);
    }

    [Fact]
    public async Task A_handler_class_whose_dependency_is_missing_fails_the_start_with_its_name()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddSingleton<Ledger>();
        builder.Services
            .AddEvents(options => options.On<InvoiceSent>()
                .Handle<BookInvoice>("fine")
                .Handle<NeedsMissing>("needs-missing"))
            .UseInMemoryStore();
        using var host = builder.Build();

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => host.StartAsync());

        Assert.Contains("needs-missing of invoice.sent (Facade.Tests.TypedHandlerTests+NeedsMissing)", error.Message);
        Assert.Contains("Facade.Tests.TypedHandlerTests+IMissing", error.Message);
        Assert.DoesNotContain("fine", error.Message);
        Assert.Equal(RuntimeStatus.NotStarted, host.Services.GetRequiredService<EventsRuntime>().Status);
    }

    [Fact]
    public void Settings_bind_from_configuration()
    {
        var section = Configuration(new()
        {
            ["Events:Processor:Workers"] = "3",
            ["Events:Processor:ClaimLease"] = "00:02:00",
            ["Events:Executor:Workers"] = "8",
            ["Events:Executor:Limit"] = "20",
            ["Events:Executor:Lease"] = "00:10:00",
            ["Events:Scheduler:Mode"] = "concurrent",
            ["Events:Scheduler:Interval"] = "00:00:00.250",
            ["Events:Scheduler:TelemetryPrefix"] = "shop",
        }).GetSection("Events");

        var options = new EventsOptions().BindSettings(section);

        Assert.Equal((3, 50, TimeSpan.FromMinutes(2)), (options.Processor.Workers, options.Processor.Limit, options.Processor.ClaimLease));
        Assert.Equal((8, 20, TimeSpan.FromMinutes(10)), (options.Executor.Workers, options.Executor.Limit, options.Executor.Lease));
        Assert.Equal(SchedulerMode.Concurrent, options.Scheduler.Mode);
        Assert.Equal(TimeSpan.FromMilliseconds(250), options.Scheduler.Interval);
        Assert.Equal("shop", options.Scheduler.TelemetryPrefix);
    }

    [Fact]
    public async Task Every_invalid_setting_from_configuration_fails_the_start_at_once()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Events:Executor:Workers"] = "many",
            ["Events:Executor:Wokers"] = "2",
            ["Events:Executor:Limit"] = "0",
            ["Events:Scheduler:Mode"] = "Parallel",
            ["Events:Scheduler:Interval"] = "soon",
        });
        builder.Services
            .AddEvents(builder.Configuration.GetSection("Events"), options => { })
            .UseInMemoryStore();
        using var host = builder.Build();

        var error = await Assert.ThrowsAsync<ArgumentException>(() => host.StartAsync());

        Assert.Contains("Events:Executor:Workers: \"many\" is not a whole number", error.Message);
        Assert.Contains("Events:Executor:Wokers: not a setting", error.Message);
        Assert.Contains("Events:Scheduler:Mode: \"Parallel\" is not Cooperative or Concurrent", error.Message);
        Assert.Contains("Events:Scheduler:Interval: \"soon\" is not a time span", error.Message);
        Assert.Contains("executor Limit must be at least 1, got 0", error.Message);
    }

    [Fact]
    public async Task Waiting_until_idle_covers_the_events_handlers_raise()
    {
        var options = Fast.Options();
        var handled = new ConcurrentQueue<string>();
        EventsRuntime? runtime = null;
        options.On("first").Handle("raise-second", async (context, cancellationToken) =>
        {
            await Task.Delay(50, cancellationToken);
            await runtime!.RaiseApplicationEventAsync("second", new { }, cancellationToken);
            handled.Enqueue("first");
        });
        options.On("second").Handle("slow", async (context, cancellationToken) =>
        {
            await Task.Delay(100, cancellationToken);
            handled.Enqueue("second");
        });
        await using var events = runtime = EventsRuntime.Create(options);
        events.Start();

        await events.RaiseApplicationEventAsync("first", new { });
        await events.WaitUntilIdleAsync(Eventually.Timeout);

        Assert.Equal(["first", "second"], handled);
    }

    [Fact]
    public async Task Waiting_for_an_event_that_is_not_handled_in_time_says_what_is_left()
    {
        var options = Fast.Options();
        options.On("stuck").Handle(
            "retrying",
            (context, cancellationToken) => Task.FromResult(HandlerOutcome.Failure("not yet")),
            handler => handler.MaxErrors(100).ExponentialBackoff(TimeSpan.FromHours(1), TimeSpan.FromHours(1)));
        await using var events = EventsRuntime.Create(options);
        events.Start();
        var raised = await events.RaiseApplicationEventAsync("stuck", new { });
        await Eventually.HoldsAsync(async () => (await events.GetRequestsAsync().SingleOrDefaultAsync())?.Errors == 1, "the first attempt failed");

        var error = await Assert.ThrowsAsync<TimeoutException>(() => events.WaitUntilHandledAsync(raised, TimeSpan.FromMilliseconds(200)));

        Assert.Contains("retrying of stuck Runnable after 1 errors (last: not yet)", error.Message);
    }

    private static IConfigurationRoot Configuration(Dictionary<string, string?> values) =>
        new ConfigurationBuilder().AddInMemoryCollection(values).Build();
}
