using Events.CSharp;

namespace Facade.Tests;

public class ConfigurationTests
{
    private static Task Nothing(HandlerContext context, CancellationToken cancellationToken) => Task.CompletedTask;

    private static Task<HandlerOutcome> Succeeds(HandlerContext context, CancellationToken cancellationToken) =>
        Task.FromResult(HandlerOutcome.Success);

    [Fact]
    public void Handlers_are_listed_under_their_event_in_priority_order()
    {
        var options = new EventsOptions();
        options.On("order.placed")
            .Handle("send-receipt", Nothing, handler => handler.Priority(60))
            .Handle("reserve-stock", Succeeds, handler => handler.Priority(10))
            .Handle("audit", async (context, cancellationToken) => await Task.Yield());
        options.On("user.created").Handle("welcome", (context, cancellationToken) => Task.FromResult(HandlerOutcome.Failure("no")));

        Assert.Equal(["order.placed", "user.created"], options.EventNames);
        Assert.Equal(["reserve-stock", "audit", "send-receipt"], options.HandlerNames("order.placed"));
        Assert.Empty(options.HandlerNames("nothing.configured"));
    }

    [Fact]
    public void Adding_a_handler_twice_updates_the_one_entry()
    {
        var options = new EventsOptions();
        options.On("order.placed").Handle("audit", Nothing, handler => handler.Priority(70));
        options.On("order.placed").Handle("audit", Succeeds);

        Assert.Equal(["audit"], options.HandlerNames("order.placed"));
    }

    [Fact]
    public void An_invalid_event_name_is_refused_with_the_cores_message()
    {
        var options = new EventsOptions();

        var error = Assert.Throws<ArgumentException>(() => options.On("   "));

        Assert.Equal("eventName", error.ParamName);
        Assert.StartsWith("event name \"   \" is invalid: a name must not be only white space", error.Message);
    }

    [Fact]
    public void Every_invalid_setting_of_a_handler_is_reported_at_once()
    {
        var options = new EventsOptions();

        var error = Assert.Throws<ArgumentException>(() => options.On("order.placed").Handle(
            "bad\nname",
            Nothing,
            handler => handler
                .MaxErrors(0)
                .Timeout(TimeSpan.Zero)
                .ExponentialBackoff(TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(1))));

        Assert.Contains("handler name \"bad\nname\" is invalid: a name must not hold control characters", error.Message);
        Assert.Contains("MaxErrors must be at least 1, got 0", error.Message);
        Assert.Contains("Timeout must be positive", error.Message);
        Assert.Contains("an exponential backoff's cap (00:00:01) must not be below its base (00:00:10)", error.Message);
        Assert.Empty(options.EventNames);
    }

    [Fact]
    public void Null_arguments_are_refused_at_the_boundary()
    {
        var options = new EventsOptions();

        Assert.Throws<ArgumentNullException>(() => options.On(null!));
        Assert.Throws<ArgumentNullException>(() => options.On("a").Handle(null!, Nothing));
        Assert.Throws<ArgumentNullException>(() =>
            options.On("a").Handle("h", (Func<HandlerContext, CancellationToken, Task>)null!));
        Assert.Throws<ArgumentNullException>(() => HandlerOutcome.Failure(null!));
        Assert.Throws<ArgumentNullException>(() => EventsRuntime.Create(null!));
    }

    [Fact]
    public void Defaults_are_the_cores()
    {
        var options = new EventsOptions();

        Assert.Equal(5, HandlerOptions.DefaultMaxErrors);
        Assert.Equal(50, HandlerOptions.DefaultPriority);
        Assert.Equal(1, options.Processor.Workers);
        Assert.Equal(50, options.Processor.Limit);
        Assert.Equal(TimeSpan.FromMinutes(1), options.Processor.ClaimLease);
        Assert.Null(options.Processor.BeforeProcess);
        Assert.Equal(16, options.Executor.Workers);
        Assert.Equal(50, options.Executor.Limit);
        Assert.Equal(TimeSpan.FromMinutes(5), options.Executor.Lease);
        Assert.Null(options.Executor.BeforeExecute);
        Assert.Null(options.Executor.ErrorReporter);
        Assert.Equal(SchedulerMode.Cooperative, options.Scheduler.Mode);
        Assert.Equal(TimeSpan.FromSeconds(1), options.Scheduler.Interval);
        Assert.Equal("", options.Scheduler.TelemetryPrefix);
        Assert.Equal(TimeSpan.FromSeconds(5), options.Scheduler.ShutdownGrace);
        Assert.Null(options.Store);
        Assert.Null(options.TimeProvider);
    }

    [Fact]
    public void Invalid_engine_settings_are_refused_when_the_runtime_is_made()
    {
        var options = new EventsOptions().UseInMemoryStore();
        options.Executor.Workers = 0;
        options.Executor.Limit = 0;

        var error = Assert.Throws<ArgumentException>(() => EventsRuntime.Create(options));

        Assert.Contains("executor Workers must be at least 1, got 0", error.Message);
        Assert.Contains("executor Limit must be at least 1, got 0", error.Message);
    }

    [Fact]
    public void An_invalid_scheduler_interval_is_refused_when_the_runtime_is_made()
    {
        var options = new EventsOptions().UseInMemoryStore();
        options.Scheduler.Interval = TimeSpan.Zero;

        var error = Assert.Throws<ArgumentException>(() => EventsRuntime.Create(options));

        Assert.Contains("scheduler Interval must be positive", error.Message);
    }

    [Fact]
    public void A_runtime_needs_a_store()
    {
        var error = Assert.Throws<InvalidOperationException>(() => EventsRuntime.Create(new EventsOptions()));

        Assert.Contains("no store was chosen", error.Message);
    }
}
