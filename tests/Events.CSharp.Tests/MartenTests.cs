using System.Collections.Concurrent;
using Events.CSharp;
using Events.Testing;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Facade.Tests;

/// <summary>One throwaway PostgreSQL server for the Marten tests; each test gets a database of its own.</summary>
public sealed class PostgresFixture : IAsyncLifetime
{
    private ThrowawayPostgres? postgres;

    public ThrowawayPostgres Postgres => postgres ?? throw new InvalidOperationException("the server is not started");

    public async Task InitializeAsync() => postgres = await ThrowawayPostgres.StartAsync();

    public async Task DisposeAsync()
    {
        if (postgres is not null)
        {
            await postgres.DisposeAsync();
        }
    }
}

public class MartenTests(PostgresFixture fixture) : IClassFixture<PostgresFixture>
{
    /// <summary>A document a handler writes in its Marten session.</summary>
    public sealed class Shipment
    {
        public Guid Id { get; set; }

        public string Order { get; set; } = "";
    }

    /// <summary>A document the application saves together with the events it raises.</summary>
    public sealed class Order
    {
        public string Id { get; set; } = "";
    }

    private static IHost BuildHost(string connectionString, Action<EventsOptions> configure)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddMarten(connectionString).UseLightweightSessions();
        builder.Services
            .AddEvents(options =>
            {
                options.Scheduler.Interval = TimeSpan.FromMilliseconds(50);
                configure(options);
            })
            .UseMartenStore();
        return builder.Build();
    }

    [Fact]
    public async Task Events_run_end_to_end_on_Marten_through_AddEvents_and_a_handler_saves_its_work_with_its_outcome()
    {
        var connectionString = await fixture.Postgres.CreateDatabaseAsync();
        using var host = BuildHost(connectionString, options => options.On("order.placed")
            .Handle("ship", (context, cancellationToken) =>
            {
                var session = context.GetMartenSession()!;
                session.Store(new Shipment { Id = context.EventId, Order = context.Request.EntityId! });
                return Task.CompletedTask;
            })
            .Handle("always-fails", (context, cancellationToken) =>
                Task.FromResult(HandlerOutcome.Failure("oh noes")), handler => handler.MaxErrors(1)));
        await host.StartAsync();

        var publisher = host.Services.GetRequiredService<IEventPublisher>();
        var raised = await publisher.RaiseDomainEventAsync("order.placed", "A-17", "order", new { Total = 3 });

        var admin = host.Services.GetRequiredService<IEventsAdmin>();
        await Eventually.HoldsAsync(async () => await admin.CountDeadRequestsAsync() == 1, "the failing request is dead");
        await Eventually.HoldsAsync(
            async () => await admin.GetRequestsAsync().AnyAsync(r => r.HandlerName == "ship" && r.State == HandlerRequestState.Completed),
            "the ship request completed");
        await using (var query = host.Services.GetRequiredService<IDocumentStore>().QuerySession())
        {
            var shipment = await query.LoadAsync<Shipment>(raised.Id);
            Assert.Equal("A-17", shipment?.Order);
        }

        var dead = (await admin.GetDeadRequestsAsync()).Requests.Single();
        Assert.Equal("oh noes", dead.LastError);
        Assert.Equal(["always-fails"], (await admin.GetDeadRequestNamesAsync()).HandlerNames);
        var canceled = await admin.CancelAsync(dead.Id);
        Assert.Equal(HandlerRequestState.Canceled, canceled.State);
        Assert.Equal(0, await admin.CountDeadRequestsAsync());
        await host.StopAsync();
    }

    [Fact]
    public async Task Events_raised_in_an_application_session_are_appended_only_when_it_saves()
    {
        var connectionString = await fixture.Postgres.CreateDatabaseAsync();
        var handled = new ConcurrentQueue<Guid>();
        using var host = BuildHost(connectionString, options => options.On("order.placed")
            .Handle("count", (context, cancellationToken) =>
            {
                handled.Enqueue(context.EventId);
                return Task.CompletedTask;
            }));
        await host.StartAsync();
        var documents = host.Services.GetRequiredService<IDocumentStore>();

        Event saved;
        await using (var session = documents.LightweightSession())
        {
            session.Store(new Order { Id = "A-1" });
            saved = session.RaiseEvents(Event.Domain("order.placed", "A-1", "order", new { })).Single();
            await session.SaveChangesAsync();
        }

        await using (var session = documents.LightweightSession())
        {
            session.Store(new Order { Id = "A-2" });
            session.RaiseEvents(Event.Domain("order.placed", "A-2", "order", new { }));
        }

        await Eventually.HoldsAsync(() => handled.Contains(saved.Id), "the saved event was handled");
        await Task.Delay(300);
        Assert.Equal([saved.Id], handled);
        Assert.NotNull(saved.CorrelationId);
        await host.StopAsync();
    }

    [Fact]
    public async Task A_second_raise_of_a_deduplication_key_on_Marten_returns_the_first_event_marked_duplicate()
    {
        var connectionString = await fixture.Postgres.CreateDatabaseAsync();
        await using var store = await EventStore.CreateMartenAsync(connectionString, schemaName: "events");
        await using var events = EventsRuntime.Create(new EventsOptions { Store = store });

        var first = await events.RaiseAsync(Event.Application("order.placed").WithDeduplicationKey("order-A-17"));
        var again = Event.Application("order.placed").WithDeduplicationKey("order-A-17");
        var second = await events.RaiseAsync(again);

        Assert.False(first.IsDuplicate);
        Assert.True(second.IsDuplicate);
        Assert.Equal(first.Id, second.Id);
        Assert.Equal("order-A-17", second.DeduplicationKey);
        Assert.Null(await events.FindEventAsync(again.Id));
    }

    [Fact]
    public async Task A_runtime_without_dependency_injection_runs_on_a_Marten_store_of_its_own()
    {
        var connectionString = await fixture.Postgres.CreateDatabaseAsync();
        await using var store = await EventStore.CreateMartenAsync(connectionString, schemaName: "events");
        var handled = new TaskCompletionSource<string>();
        var options = new EventsOptions { Store = store };
        options.Scheduler.Interval = TimeSpan.FromMilliseconds(50);
        options.On("user.created").Handle("welcome", (context, cancellationToken) =>
        {
            handled.TrySetResult(context.GetData<NewUser>()!.Email);
            return Task.CompletedTask;
        });
        await using var events = EventsRuntime.Create(options);
        events.Start();

        await events.RaiseApplicationEventAsync("user.created", new NewUser("ada@example.org"));

        Assert.Equal("ada@example.org", await handled.Task.WaitAsync(Eventually.Timeout));
        await events.ShutdownAsync(CancellationToken.None);
    }

    public sealed record NewUser(string Email);

    /// <summary>A C# entity that raises facade events as it changes.</summary>
    public sealed class Account : IRaiseEvents
    {
        private static readonly EntityKind Accounts = new("account");

        public string Id { get; set; } = "";

        [System.Text.Json.Serialization.JsonIgnore]
        public EventRaiser Raiser { get; } = new();

        public void Open() => Raiser.Raise(Event.Domain("account.opened", Accounts.Entity(Id), new { }));
    }

    [Fact]
    public async Task A_CSharp_entity_raising_facade_events_has_them_appended_when_its_session_saves()
    {
        var connectionString = await fixture.Postgres.CreateDatabaseAsync();
        using var host = BuildHost(connectionString, options => options.On("account.opened")
            .Handle("welcome", (context, cancellationToken) => Task.CompletedTask));
        await host.StartAsync();
        var account = new Account { Id = "acc-1" };
        account.Open();

        await using (var session = host.Services.GetRequiredService<IDocumentStore>().LightweightSession())
        {
            session.Store(account);
            await session.SaveChangesAsync();
        }

        Assert.Empty(account.Raiser.Events);
        await host.Services.GetRequiredService<IEventsAdmin>().WaitUntilIdleAsync(Eventually.Timeout);
        var requests = await host.Services.GetRequiredService<IEventsAdmin>().GetRequestsAsync().ToListAsync();
        var request = Assert.Single(requests);
        Assert.Equal(("account.opened", "acc-1", HandlerRequestState.Completed), (request.EventName, request.EntityId, request.State));
        await host.StopAsync();
    }
}
