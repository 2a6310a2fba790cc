using Events.CSharp;

namespace Facade.Tests;

/// <summary>The operations surface of the facade: queries, triage and bulk changes, as a C# caller writes them.</summary>
public class OperationsTests
{
    private static async Task<EventsRuntime> WithDeadRequestsAsync(int count)
    {
        var options = Fast.Options();
        Task<HandlerOutcome> Declines(HandlerContext context, CancellationToken cancellationToken) =>
            Task.FromResult(HandlerOutcome.Failure($"payment {Guid.NewGuid()} of {Random.Shared.Next(1, 999)} EUR declined"));
        Task<HandlerOutcome> Throws(HandlerContext context, CancellationToken cancellationToken) =>
            throw new InvalidOperationException($"no stock for item {Random.Shared.Next()}");
        options.On("order.placed")
            .Handle("charge", Declines, handler => handler.MaxErrors(1))
            .Handle("reserve", Throws, handler => handler.MaxErrors(1));
        var events = EventsRuntime.Create(options);
        events.Start();
        for (var i = 0; i < count; i++)
        {
            await events.RaiseApplicationEventAsync("order.placed", new { n = i });
        }

        await Eventually.HoldsAsync(
            async () => await events.CountDeadRequestsAsync() == 2 * count,
            "every request is dead");
        events.Pause();
        return events;
    }

    [Fact]
    public async Task Requests_are_found_by_status_and_handler_and_paged_by_cursor()
    {
        await using var events = await WithDeadRequestsAsync(5);
        var filter = new RequestFilter { Statuses = [RequestStatus.Dead], HandlerNames = ["charge"] };
        Assert.Equal(5, await events.CountRequestsAsync(filter));

        var first = await events.QueryRequestsAsync(filter, limit: 3);
        Assert.Equal(3, first.Requests.Count);
        Assert.NotNull(first.Next);
        var second = await events.QueryRequestsAsync(filter, first.Next, limit: 3);
        Assert.Equal(2, second.Requests.Count);
        Assert.Null(second.Next);
        Assert.Empty(first.Requests.Select(r => r.Id).Intersect(second.Requests.Select(r => r.Id)));

        var counts = await events.GetCountsByHandlerAsync();
        Assert.Contains(new HandlerStatusCount("charge", RequestStatus.Dead, 5), counts);
        Assert.Contains(new HandlerStatusCount("reserve", RequestStatus.Dead, 5), counts);

        var details = await events.GetEventDetailsAsync(first.Requests[0].EventId);
        Assert.NotNull(details);
        Assert.Equal(2, details.Requests.Count);
        Assert.False(details.FullyHandled);
        Assert.Null(await events.GetEventDetailsAsync(Guid.NewGuid()));

        await Assert.ThrowsAsync<ArgumentException>(() => events.QueryRequestsAsync(after: "not a cursor"));
    }

    [Fact]
    public async Task Dead_requests_are_triaged_by_cause_and_a_group_is_canceled_in_bulk()
    {
        await using var events = await WithDeadRequestsAsync(6);
        var groups = await events.TriageAsync();
        Assert.Equal(2, groups.Count);
        Assert.All(groups, group => Assert.Equal(6, group.Count));
        var declined = Assert.Single(groups, group => group.HandlerNames.SequenceEqual(["charge"]));
        Assert.Equal("payment <id> of <n> EUR declined", declined.Pattern);

        var dry = await events.BulkAsync(BulkCommand.Cancel, new BulkRequest { Group = declined.Id, DryRun = true });
        Assert.Equal(6, dry.Selected);
        Assert.Equal(0, dry.Updated);

        var reports = new List<BulkResult>();
        var run = await events.BulkAsync(
            BulkCommand.Cancel,
            new BulkRequest { Group = declined.Id, ChunkSize = 2 },
            new Progress<BulkResult>(reports.Add));
        Assert.Equal(6, run.Updated);
        Assert.True(run.Finished);
        Assert.Equal(6, await events.CountRequestsAsync(new RequestFilter { Statuses = [RequestStatus.Canceled] }));
        Assert.Equal(6, await events.CountDeadRequestsAsync());
    }

    [Fact]
    public async Task The_runtime_publishes_backing_off_and_per_handler_gauges()
    {
        var options = Fast.Options();
        options.Scheduler.TelemetryPrefix = "opsgauges";
        options.On("order.placed").Handle(
            "charge",
            (_, _) => Task.FromResult(HandlerOutcome.Failure("card declined")),
            handler => handler.MaxErrors(5).ExponentialBackoff(TimeSpan.FromHours(1), TimeSpan.FromHours(2)));
        await using var events = EventsRuntime.Create(options);
        events.Start();
        await events.RaiseApplicationEventAsync("order.placed", new { });
        await Eventually.HoldsAsync(
            async () => await events.CountRequestsAsync(new RequestFilter { Statuses = [RequestStatus.BackingOff] }) == 1,
            "the request backs off");

        var seen = new System.Collections.Concurrent.ConcurrentBag<(string Name, long Value, string Tags)>();
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Name.StartsWith("opsgauges.requests.", StringComparison.Ordinal))
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
            seen.Add((instrument.Name, value, string.Join(",", tags.ToArray().Select(t => $"{t.Key}={t.Value}")))));
        listener.Start();
        listener.RecordObservableInstruments();

        Assert.Contains(("opsgauges.requests.backing_off.count", 1L, ""), seen);
        Assert.Contains(("opsgauges.requests.count", 1L, "opsgauges.handler=charge,opsgauges.status=backing-off"), seen);
    }
}
