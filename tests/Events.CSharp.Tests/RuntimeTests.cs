using System.Collections.Concurrent;
using Events.CSharp;

namespace Facade.Tests;

public class RuntimeTests
{
    [Fact]
    public async Task A_raised_event_runs_its_handlers_and_completes_their_requests()
    {
        var handled = new ConcurrentBag<(string Handler, string Event, int Attempt, string? Entity)>();
        var options = Fast.Options();
        options.On("order.placed")
            .Handle("send-receipt", (context, cancellationToken) =>
            {
                handled.Add((context.HandlerName, context.EventName, context.Attempt, context.Request.EntityId));
                return Task.CompletedTask;
            })
            .Handle("reserve-stock", (context, cancellationToken) =>
            {
                handled.Add((context.HandlerName, context.EventName, context.Attempt, context.Request.EntityId));
                return Task.FromResult(HandlerOutcome.Success);
            });
        await using var events = EventsRuntime.Create(options);
        events.Start();

        var raised = await events.RaiseDomainEventAsync("order.placed", "A-17", "order", new { Total = 3 });

        Assert.NotNull(raised.CorrelationId);
        await Eventually.HoldsAsync(() => handled.Count == 2, "both handlers ran");
        Assert.Contains(("send-receipt", "order.placed", 1, "A-17"), handled);
        Assert.Contains(("reserve-stock", "order.placed", 1, "A-17"), handled);
        await Eventually.HoldsAsync(
            async () => (await events.FindEventAsync(raised.Id))?.ProcessedAt is not null,
            "the event is marked processed");
        await Eventually.HoldsAsync(
            async () => await events.GetRequestsAsync().CountAsync(r => r.State == HandlerRequestState.Completed) == 2,
            "both requests completed");
        await events.ShutdownAsync(CancellationToken.None);
        Assert.Equal(RuntimeStatus.Shutdown, events.Status);
    }

    [Fact]
    public async Task A_second_raise_of_a_deduplication_key_stores_nothing_and_returns_the_first_event_marked_duplicate()
    {
        await using var events = EventsRuntime.Create(Fast.Options());

        var first = await events.RaiseAsync(Event.Application("order.placed").WithDeduplicationKey("order-A-17"));
        var again = Event.Application("order.placed").WithDeduplicationKey("order-A-17");
        var batch = await events.RaiseAsync([again, Event.Application("order.placed")]);

        Assert.False(first.IsDuplicate);
        Assert.True(batch[0].IsDuplicate);
        Assert.Equal(first.Id, batch[0].Id);
        Assert.False(batch[1].IsDuplicate);
        Assert.Null(await events.FindEventAsync(again.Id));
        Assert.NotNull(await events.FindEventAsync(batch[1].Id));
    }

    [Theory]
    [InlineData("")]
    [InlineData("a\0b")]
    public void A_bad_deduplication_key_is_refused_with_an_ArgumentException(string key)
    {
        var error = Assert.ThrowsAny<ArgumentException>(() => Event.Application("order.placed").WithDeduplicationKey(key));
        Assert.Contains("deduplication key", error.Message);
    }

    [Fact]
    public void A_deduplication_key_longer_than_200_characters_is_refused()
    {
        Assert.ThrowsAny<ArgumentException>(() => Event.Application("order.placed").WithDeduplicationKey(new string('k', 201)));
        Assert.Equal(new string('k', 200), Event.Application("order.placed").WithDeduplicationKey(new string('k', 200)).DeduplicationKey);
    }

    [Fact]
    public async Task A_handler_sees_the_events_data()
    {
        var seen = new TaskCompletionSource<(int Total, string Json)>();
        var options = Fast.Options();
        options.On("order.placed").Handle("read", (context, cancellationToken) =>
        {
            seen.TrySetResult((context.GetData<Total>()!.Value, context.GetData().GetRawText()));
            return Task.CompletedTask;
        });
        await using var events = EventsRuntime.Create(options);
        events.Start();

        await events.RaiseAsync(Event.Application("order.placed", new Total(42)));

        Assert.Equal((42, "{\"Value\":42}"), await seen.Task.WaitAsync(Eventually.Timeout));
    }

    private sealed record Total(int Value);

    [Fact]
    public async Task An_ordinary_failure_is_retried_until_max_errors_then_the_request_is_dead_and_reported()
    {
        var attempts = new ConcurrentQueue<int>();
        var reporter = new RecordingReporter();
        var options = Fast.Options();
        options.Executor.ErrorReporter = reporter;
        options.On("user.created").Handle(
            "always-fails",
            (context, cancellationToken) =>
            {
                attempts.Enqueue(context.Attempt);
                return Task.FromResult(HandlerOutcome.Failure("oh noes"));
            },
            handler => handler.QuickRetries(maxErrors: 3));
        await using var events = EventsRuntime.Create(options);
        events.Start();

        await events.RaiseApplicationEventAsync("user.created", new { });

        await Eventually.HoldsAsync(async () => await events.CountDeadRequestsAsync() == 1, "the request is dead");
        Assert.Equal([1, 2, 3], attempts);
        var report = Assert.Single(reporter.Reports);
        Assert.Equal("oh noes", report.Error);
        Assert.False(report.Retryable);
        Assert.Null(report.Exception);
        Assert.Null(report.StackTrace);
        Assert.Equal(HandlerRequestState.Dead, report.Request.State);
        Assert.Equal(3, report.Request.Errors);
    }

    [Fact]
    public async Task An_async_reporter_is_awaited_with_a_token_and_a_slow_one_holds_back_no_other_request()
    {
        var reporter = new SlowAsyncReporter();
        var options = Fast.Options();
        options.Executor.Workers = 1;
        options.Executor.ErrorReporter = reporter;
        options.On("user.created").Handle(
            "throws",
            (context, cancellationToken) => throw new InvalidOperationException("boom"),
            handler => handler.MaxErrors(1));
        var completed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        options.On("user.deleted").Handle(
            "completes",
            (context, cancellationToken) =>
            {
                completed.TrySetResult();
                return Task.CompletedTask;
            });
        await using var events = EventsRuntime.Create(options);
        events.Start();

        await events.RaiseApplicationEventAsync("user.created", new { });
        var report = await reporter.Started.Task.WaitAsync(Eventually.Timeout);
        await events.RaiseApplicationEventAsync("user.deleted", new { });

        // The only worker slot runs the second handler while the reporter still waits on the first failure.
        await completed.Task.WaitAsync(Eventually.Timeout);
        Assert.IsType<InvalidOperationException>(report.Exception);
        Assert.False(report.Retryable);
        Assert.False(reporter.Token.IsCancellationRequested);
        reporter.Release.SetResult();
    }

    private sealed class SlowAsyncReporter : IAsyncErrorReporter
    {
        public TaskCompletionSource<ErrorReport> Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public CancellationToken Token { get; private set; }

        public async Task<bool> ReportAsync(ErrorReport report, CancellationToken cancellationToken)
        {
            Token = cancellationToken;
            Started.TrySetResult(report);
            await Release.Task.WaitAsync(cancellationToken);
            return true;
        }
    }

    [Fact]
    public async Task A_permanent_failure_returned_or_thrown_as_a_named_type_is_dead_at_once()
    {
        var attempts = new ConcurrentQueue<string>();
        var options = Fast.Options();
        options.On("user.created")
            .Handle(
                "rejects",
                (context, cancellationToken) =>
                {
                    attempts.Enqueue("rejects");
                    return Task.FromResult(HandlerOutcome.PermanentFailure("the address is not an address"));
                },
                handler => handler.QuickRetries(maxErrors: 5))
            .Handle(
                "parses",
                (context, cancellationToken) =>
                {
                    attempts.Enqueue("parses");
                    throw new FormatException("not a number");
                },
                handler => handler.QuickRetries(maxErrors: 5).PermanentOn<FormatException>());
        await using var events = EventsRuntime.Create(options);
        events.Start();

        await events.RaiseApplicationEventAsync("user.created", new { });

        await Eventually.HoldsAsync(async () => await events.CountDeadRequestsAsync() == 2, "both requests are dead");
        Assert.Equal(1, attempts.Count(a => a == "rejects"));
        Assert.Equal(1, attempts.Count(a => a == "parses"));
        var dead = (await events.GetDeadRequestsAsync()).Requests;
        Assert.Contains(dead, r => r.HandlerName == "rejects" && r.LastError == "the address is not an address");
        Assert.Contains(dead, r => r.HandlerName == "parses" && r.LastError!.Contains("System.FormatException: not a number"));
    }

    [Fact]
    public async Task A_thrown_exception_fails_the_attempt_and_is_always_reported_with_its_stack()
    {
        var reporter = new RecordingReporter();
        var options = Fast.Options();
        options.Executor.ErrorReporter = reporter;
        options.On("user.created").Handle(
            "throws-once",
            (context, cancellationToken) => context.Attempt == 1
                ? throw new InvalidOperationException("boom")
                : Task.CompletedTask,
            handler => handler.QuickRetries(maxErrors: 5));
        await using var events = EventsRuntime.Create(options);
        events.Start();

        await events.RaiseApplicationEventAsync("user.created", new { });

        await Eventually.HoldsAsync(
            async () => await events.GetRequestsAsync().AnyAsync(r => r.State == HandlerRequestState.Completed),
            "the second attempt completes the request");
        var report = Assert.Single(reporter.Reports);
        Assert.True(report.Retryable);
        Assert.IsType<InvalidOperationException>(report.Exception);
        Assert.Contains("boom", report.Error);
        Assert.NotNull(report.StackTrace);
        var request = await events.GetRequestsAsync().SingleAsync();
        Assert.Null(request.LastError);
        Assert.Equal(1, request.Errors);
        Assert.NotNull(request.CompletedAt);
    }

    [Fact]
    public async Task A_handler_past_its_timeout_is_canceled_and_the_attempt_fails()
    {
        var options = Fast.Options();
        options.On("slow").Handle(
            "sleeps",
            async (context, cancellationToken) => await Task.Delay(Timeout.Infinite, cancellationToken),
            handler => handler.Timeout(TimeSpan.FromMilliseconds(50)).MaxErrors(1));
        await using var events = EventsRuntime.Create(options);
        events.Start();

        await events.RaiseApplicationEventAsync("slow", new { });

        await Eventually.HoldsAsync(async () => await events.CountDeadRequestsAsync() == 1, "the request is dead");
        var dead = Assert.Single((await events.GetDeadRequestsAsync()).Requests);
        Assert.StartsWith("handler timed out after", dead.LastError);
    }

    [Fact]
    public async Task Hooks_may_change_an_event_and_refuse_a_request()
    {
        var seen = new TaskCompletionSource<string>();
        var refusals = 0;
        var options = Fast.Options();
        options.Processor.BeforeProcess = (@event, cancellationToken) =>
            Task.FromResult(HookOutcome.Continue(@event.WithData(new { Rewritten = true })));
        options.Executor.BeforeExecute = (request, cancellationToken) =>
            Task.FromResult(Interlocked.Increment(ref refusals) <= 2
                ? HookOutcome.Refuse<HandlerRequest>("not yet")
                : HookOutcome.Continue(request));
        options.On("hooked").Handle("reads", (context, cancellationToken) =>
        {
            seen.TrySetResult(context.Request.EventDataJson);
            return Task.CompletedTask;
        });
        await using var events = EventsRuntime.Create(options);
        events.Start();

        await events.RaiseApplicationEventAsync("hooked", new { Rewritten = false });

        Assert.Equal("{\"Rewritten\":true}", await seen.Task.WaitAsync(Eventually.Timeout));
        Assert.True(refusals >= 3, "the handler ran only after the hook stopped refusing");
        var request = await events.GetRequestsAsync().SingleAsync();
        Assert.Equal(0, request.Errors);
    }

    [Fact]
    public async Task Pausing_stops_rounds_until_resumed()
    {
        var handled = 0;
        var options = Fast.Options();
        options.On("tick").Handle("count", (context, cancellationToken) =>
        {
            Interlocked.Increment(ref handled);
            return Task.CompletedTask;
        });
        await using var events = EventsRuntime.Create(options);
        Assert.Equal(RuntimeStatus.NotStarted, events.Status);
        events.Start();
        events.Pause();
        Assert.Equal(RuntimeStatus.Paused, events.Status);

        await events.RaiseApplicationEventAsync("tick", new { });
        await Task.Delay(200);
        Assert.Equal(0, handled);

        events.Resume();
        Assert.Equal(RuntimeStatus.Running, events.Status);
        await Eventually.HoldsAsync(() => handled == 1, "the handler ran after resuming");
        Assert.Throws<InvalidOperationException>(events.Start);
    }

    [Fact]
    public async Task Shutdown_lets_a_running_handler_finish_before_the_deadline()
    {
        var started = new TaskCompletionSource();
        var finished = false;
        var options = Fast.Options();
        options.On("work").Handle("slow", async (context, cancellationToken) =>
        {
            started.TrySetResult();
            await Task.Delay(300, cancellationToken);
            finished = true;
        });
        await using var events = EventsRuntime.Create(options);
        events.Start();
        await events.RaiseApplicationEventAsync("work", new { });
        await started.Task.WaitAsync(Eventually.Timeout);

        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await events.ShutdownAsync(deadline.Token);

        Assert.True(finished, "the handler finished before shutdown returned");
        var request = await events.GetRequestsAsync().SingleAsync();
        Assert.Equal(HandlerRequestState.Completed, request.State);
    }

    [Fact]
    public async Task Shutdown_past_its_deadline_cancels_running_handlers_and_gives_their_requests_back()
    {
        var started = new TaskCompletionSource();
        var options = Fast.Options();
        options.On("work").Handle("forever", async (context, cancellationToken) =>
        {
            started.TrySetResult();
            await Task.Delay(Timeout.Infinite, cancellationToken);
        });
        await using var events = EventsRuntime.Create(options);
        events.Start();
        await events.RaiseApplicationEventAsync("work", new { });
        await started.Task.WaitAsync(Eventually.Timeout);

        using var deadline = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
        await events.ShutdownAsync(deadline.Token).WaitAsync(Eventually.Timeout);

        var request = await events.GetRequestsAsync().SingleAsync();
        Assert.Equal(HandlerRequestState.Runnable, request.State);
        Assert.Equal(0, request.Errors);
    }

    [Fact]
    public async Task Two_runtimes_on_one_store_share_its_work()
    {
        var store = EventStore.InMemory();
        var handled = new ConcurrentBag<string>();
        EventsRuntime Make(string name)
        {
            var options = Fast.Options();
            options.Store = store;
            options.On("job").Handle("do", (context, cancellationToken) =>
            {
                handled.Add(name);
                return Task.CompletedTask;
            });
            return EventsRuntime.Create(options);
        }

        await using var first = Make("first");
        await using var second = Make("second");
        first.Start();
        second.Start();
        await first.RaiseAsync(Enumerable.Range(0, 20).Select(i => Event.Application("job", new { I = i })));

        await Eventually.HoldsAsync(() => handled.Count >= 20, "every job ran");
        await Task.Delay(100);
        Assert.Equal(20, handled.Count);
    }
}
