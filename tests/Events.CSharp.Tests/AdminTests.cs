using Events.CSharp;

namespace Facade.Tests;

public class AdminTests
{
    /// <summary>A runtime with two always-failing handlers on two events (MaxErrors 1), and their dead requests.</summary>
    private static async Task<EventsRuntime> WithDeadRequestsAsync(int perEvent)
    {
        var options = Fast.Options();
        Task<HandlerOutcome> Fails(HandlerContext context, CancellationToken cancellationToken) =>
            Task.FromResult(HandlerOutcome.Failure($"{context.HandlerName} failed"));
        options.On("order.placed")
            .Handle("charge", Fails, handler => handler.MaxErrors(1))
            .Handle("ship", Fails, handler => handler.MaxErrors(1));
        options.On("user.created").Handle("welcome", Fails, handler => handler.MaxErrors(1));
        var events = EventsRuntime.Create(options);
        events.Start();
        for (var i = 0; i < perEvent; i++)
        {
            await events.RaiseDomainEventAsync("order.placed", $"A-{i}", "order", new { });
            await events.RaiseApplicationEventAsync("user.created", new { });
        }

        await Eventually.HoldsAsync(
            async () => await events.CountDeadRequestsAsync() == 3 * perEvent,
            "every request is dead");
        return events;
    }

    [Fact]
    public async Task Dead_requests_are_counted_listed_filtered_and_paged()
    {
        await using var events = await WithDeadRequestsAsync(perEvent: 4);

        Assert.Equal(8, await events.CountDeadRequestsAsync(new DeadRequestQuery { EventNames = ["order.placed"] }));
        Assert.Equal(4, await events.CountDeadRequestsAsync(new DeadRequestQuery { HandlerNames = ["welcome"] }));
        Assert.Equal(
            4,
            await events.CountDeadRequestsAsync(
                new DeadRequestQuery { EventNames = ["order.placed"], HandlerNames = ["ship", "welcome"] }));

        var first = await events.GetDeadRequestsAsync(new DeadRequestQuery { EventNames = ["order.placed"], Limit = 5 });
        var second = await events.GetDeadRequestsAsync(
            new DeadRequestQuery { EventNames = ["order.placed"], Limit = 5, Offset = 5 });
        Assert.Equal(8, first.Total);
        Assert.Equal(5, first.Requests.Count);
        Assert.Equal(3, second.Requests.Count);
        Assert.Empty(first.Requests.Select(r => r.Id).Intersect(second.Requests.Select(r => r.Id)));
        Assert.All(first.Requests.Concat(second.Requests), request =>
        {
            Assert.Equal(HandlerRequestState.Dead, request.State);
            Assert.Equal("order.placed", request.EventName);
            Assert.Equal($"{request.HandlerName} failed", request.LastError);
        });
        var timestamps = first.Requests.Concat(second.Requests).Select(r => r.EventTimestamp).ToList();
        Assert.Equal(timestamps.Order(), timestamps);

        Assert.Equal(12, (await events.GetDeadRequestsAsync()).Total);
    }

    [Fact]
    public async Task Distinct_names_of_dead_requests_are_listed_sorted()
    {
        await using var events = await WithDeadRequestsAsync(perEvent: 2);

        var names = await events.GetDeadRequestNamesAsync();

        Assert.Equal(["order.placed", "user.created"], names.EventNames);
        Assert.Equal(["charge", "ship", "welcome"], names.HandlerNames);
    }

    [Fact]
    public async Task A_re_executed_request_runs_again_from_zero_errors()
    {
        await using var events = await WithDeadRequestsAsync(perEvent: 1);
        var dead = (await events.GetDeadRequestsAsync(new DeadRequestQuery { HandlerNames = ["welcome"] })).Requests.Single();
        events.Pause();

        var again = await events.ReExecuteAsync(dead.Id);

        Assert.Equal(HandlerRequestState.Runnable, again.State);
        Assert.Equal(0, again.Errors);
        Assert.Equal(2, await events.CountDeadRequestsAsync());
        events.Resume();
        await Eventually.HoldsAsync(async () => await events.CountDeadRequestsAsync() == 3, "it failed and died again");
        Assert.Equal(1, (await events.FindRequestAsync(dead.Id))!.Errors);
    }

    [Fact]
    public async Task A_canceled_request_is_no_longer_dead_and_cannot_be_canceled_twice()
    {
        await using var events = await WithDeadRequestsAsync(perEvent: 1);
        var dead = (await events.GetDeadRequestsAsync()).Requests[0];

        var canceled = await events.CancelAsync(dead.Id);

        Assert.Equal(HandlerRequestState.Canceled, canceled.State);
        Assert.NotNull(canceled.CanceledAt);
        Assert.Equal(2, await events.CountDeadRequestsAsync());
        var twice = await Assert.ThrowsAsync<InvalidOperationException>(() => events.CancelAsync(dead.Id));
        Assert.Equal("handler request is canceled", twice.Message);
        var reExecute = await Assert.ThrowsAsync<InvalidOperationException>(() => events.ReExecuteAsync(dead.Id));
        Assert.Equal("handler request is canceled", reExecute.Message);
    }

    [Fact]
    public async Task An_unknown_request_is_not_found()
    {
        await using var events = EventsRuntime.Create(Fast.Options());
        var id = Guid.NewGuid();

        var error = await Assert.ThrowsAsync<KeyNotFoundException>(() => events.ReExecuteAsync(id));

        Assert.Equal($"no handler request has id {id}", error.Message);
        Assert.Null(await events.FindRequestAsync(id));
        Assert.Null(await events.FindEventAsync(id));
    }

    [Fact]
    public async Task Queries_with_invalid_names_or_paging_are_refused()
    {
        await using var events = EventsRuntime.Create(Fast.Options());

        await Assert.ThrowsAsync<ArgumentException>(() =>
            events.GetDeadRequestsAsync(new DeadRequestQuery { EventNames = [""] }));
        var paging = await Assert.ThrowsAsync<ArgumentException>(() =>
            events.GetDeadRequestsAsync(new DeadRequestQuery { Limit = -1 }));
        Assert.Contains("Limit must not be negative, got -1", paging.Message);
    }

    [Fact]
    public async Task Statistics_count_unprocessed_events_runnable_and_dead_requests()
    {
        var options = Fast.Options();
        options.On("order.placed").Handle("ok", (context, cancellationToken) => Task.CompletedTask);
        await using var events = EventsRuntime.Create(options);

        await events.RaiseApplicationEventAsync("order.placed", new { });
        await events.RaiseApplicationEventAsync("order.placed", new { });
        var before = await events.GetStatisticsAsync();

        Assert.Equal(2, before.UnprocessedEvents);
        Assert.NotNull(before.OldestUnprocessedEvent);
        Assert.True(before.OldestUnprocessedEventAge >= TimeSpan.Zero);
        Assert.Equal(0, before.RunnableRequests);
        Assert.Equal(TimeSpan.Zero, before.OldestRunnableRequestAge);
        Assert.Equal(0, before.DeadRequests);

        events.Start();
        await Eventually.HoldsAsync(
            async () => await events.GetRequestsAsync().CountAsync(r => r.State == HandlerRequestState.Completed) == 2,
            "both requests completed");
        var after = await events.GetStatisticsAsync();
        Assert.Equal(0, after.UnprocessedEvents);
        Assert.Null(after.OldestUnprocessedEvent);
        Assert.Equal(0, after.RunnableRequests);
    }
}
