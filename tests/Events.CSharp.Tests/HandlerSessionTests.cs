using System.Collections.Concurrent;
using Events.CSharp;
using Marten;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Npgsql;

namespace Facade.Tests;

/// <summary>
/// In a handler's scope, Marten's IDocumentSession and IQuerySession are the session that commits with the
/// request's outcome: what a handler (or a service it depends on) stores there commits with a success, is
/// discarded with a failure, and rolls back when the outcome is refused because another process took the
/// request. Run on the real Marten store in a throwaway PostgreSQL.
/// </summary>
public class HandlerSessionTests(PostgresFixture fixture) : IClassFixture<PostgresFixture>
{
    public sealed record Shipped(string Order);

    public sealed class Parcel
    {
        public string Id { get; set; } = "";
    }

    /// <summary>A scoped service of the application's that does its own unit of work, saving it as it would in a web request.</summary>
    public sealed class ParcelRepository(IDocumentSession session)
    {
        public IDocumentSession Session => session;

        public async Task AddAsync(string id, CancellationToken cancellationToken)
        {
            session.Store(new Parcel { Id = id });
            await session.SaveChangesAsync(cancellationToken);
        }
    }

    /// <summary>What the handlers saw, for the test to check.</summary>
    public sealed class Observations
    {
        public ConcurrentQueue<string> Seen { get; } = new();
    }

    /// <summary>A typed handler class taking Marten's sessions and a repository in its constructor.</summary>
    public sealed class ShipParcel(
        IDocumentSession session,
        IQuerySession query,
        ParcelRepository repository,
        Observations observations) : IEventHandler<Shipped>
    {
        public async Task<HandlerOutcome> HandleAsync(Shipped data, HandlerContext context, CancellationToken cancellationToken)
        {
            var handlerSession = context.GetMartenSession();
            observations.Seen.Enqueue(
                $"same session: {ReferenceEquals(session, handlerSession)} {ReferenceEquals(query, handlerSession)} {ReferenceEquals(repository.Session, handlerSession)}");
            session.Store(new Parcel { Id = $"{data.Order}-direct" });
            await repository.AddAsync($"{data.Order}-repository", cancellationToken);
            return HandlerOutcome.Success;
        }
    }

    private static IHost BuildHost(string connectionString, Action<EventsOptions> configure)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddMarten(connectionString).UseLightweightSessions();
        builder.Services.AddScoped<ParcelRepository>();
        builder.Services.AddSingleton<Observations>();
        builder.Services
            .AddEvents(options =>
            {
                options.Scheduler.Interval = TimeSpan.FromMilliseconds(50);
                configure(options);
            })
            .UseMartenStore();
        return builder.Build();
    }

    private static async Task<bool> ExistsAsync(IHost host, string id)
    {
        await using var query = host.Services.GetRequiredService<IDocumentStore>().QuerySession();
        return await query.LoadAsync<Parcel>(id) is not null;
    }

    [Fact]
    public async Task A_handler_class_gets_the_committing_session_by_injection_and_its_work_commits_with_the_completion()
    {
        using var host = BuildHost(await fixture.Postgres.CreateDatabaseAsync(), options =>
            options.On("parcel.shipped").Handle<ShipParcel>("ship-parcel"));
        await host.StartAsync();
        var admin = host.Services.GetRequiredService<IEventsAdmin>();

        var raised = await host.Services.GetRequiredService<IEventPublisher>()
            .RaiseApplicationEventAsync("parcel.shipped", new Shipped("P-1"));
        var requests = await admin.WaitUntilHandledAsync(raised, Eventually.Timeout);

        Assert.Equal(HandlerRequestState.Completed, Assert.Single(requests).State);
        Assert.Equal(["same session: True True True"], host.Services.GetRequiredService<Observations>().Seen);
        Assert.True(await ExistsAsync(host, "P-1-direct"), "the injected session's write was committed with the completion");
        Assert.True(await ExistsAsync(host, "P-1-repository"), "the repository's write (saved in the handler) was committed with the completion");
        await host.StopAsync();
    }

    [Fact]
    public async Task A_failed_attempts_injected_session_work_is_discarded_and_the_next_attempts_commits()
    {
        using var host = BuildHost(await fixture.Postgres.CreateDatabaseAsync(), options =>
            options.On("parcel.shipped").Handle<Shipped, IDocumentSession>(
                "ship-parcel",
                (data, session, context, cancellationToken) =>
                {
                    session.Store(new Parcel { Id = $"{data.Order}-attempt-{context.Attempt}" });
                    return Task.FromResult(context.Attempt == 1 ? HandlerOutcome.Failure("carrier busy") : HandlerOutcome.Success);
                },
                handler => handler.QuickRetries(maxErrors: 3)));
        await host.StartAsync();
        var admin = host.Services.GetRequiredService<IEventsAdmin>();

        var raised = await host.Services.GetRequiredService<IEventPublisher>()
            .RaiseApplicationEventAsync("parcel.shipped", new Shipped("P-2"));
        var request = Assert.Single(await admin.WaitUntilHandledAsync(raised, Eventually.Timeout));

        Assert.Equal(HandlerRequestState.Completed, request.State);
        Assert.False(await ExistsAsync(host, "P-2-attempt-1"), "the failed attempt's write was discarded");
        Assert.True(await ExistsAsync(host, "P-2-attempt-2"), "the successful attempt's write was committed");
        await host.StopAsync();
    }

    [Fact]
    public async Task An_attempt_whose_fencing_check_fails_rolls_back_its_injected_session_work()
    {
        var connectionString = await fixture.Postgres.CreateDatabaseAsync();
        using var host = BuildHost(connectionString, options =>
        {
            options.Executor.Lease = TimeSpan.FromSeconds(2);
            options.On("parcel.shipped").Handle<Shipped, IDocumentSession>(
                "ship-parcel",
                async (data, session, context, cancellationToken) =>
                {
                    session.Store(new Parcel { Id = $"{data.Order}-attempt-{context.Attempt}" });
                    if (context.Attempt == 1)
                    {
                        // Another process takes the request meanwhile: its claim token is no longer this attempt's.
                        await StealClaimAsync(connectionString, context.Request.Id, cancellationToken);
                    }
                },
                handler => handler.QuickRetries(maxErrors: 3));
        });
        await host.StartAsync();
        var admin = host.Services.GetRequiredService<IEventsAdmin>();

        var raised = await host.Services.GetRequiredService<IEventPublisher>()
            .RaiseApplicationEventAsync("parcel.shipped", new Shipped("P-3"));
        var request = Assert.Single(await admin.WaitUntilHandledAsync(raised, Eventually.Timeout));

        Assert.Equal(HandlerRequestState.Completed, request.State);
        Assert.Equal(1, request.Errors);
        Assert.False(await ExistsAsync(host, "P-3-attempt-1"), "the refused attempt's write was rolled back");
        Assert.True(await ExistsAsync(host, "P-3-attempt-2"), "the attempt after the lease lapsed committed its write");
        await host.StopAsync();
    }

    [Fact]
    public async Task Outside_a_handler_the_sessions_are_Marten_own()
    {
        using var host = BuildHost(await fixture.Postgres.CreateDatabaseAsync(), options => { });
        await using var scope = host.Services.CreateAsyncScope();

        var session = scope.ServiceProvider.GetRequiredService<IDocumentSession>();
        session.Store(new Parcel { Id = "web" });
        await session.SaveChangesAsync();

        Assert.True(await ExistsAsync(host, "web"), "a session outside handlers saves as Marten's own");
        Assert.Same(session, scope.ServiceProvider.GetRequiredService<IDocumentSession>());
    }

    private static async Task StealClaimAsync(string connectionString, Guid requestId, CancellationToken cancellationToken)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync(cancellationToken);
        string table;
        await using (var find = new NpgsqlCommand(
            "SELECT table_schema || '.' || table_name FROM information_schema.columns WHERE column_name = 'lease_until' AND table_name LIKE 'mt_doc_%'",
            connection))
        {
            table = (string)(await find.ExecuteScalarAsync(cancellationToken))!;
        }

        await using var steal = new NpgsqlCommand($"UPDATE {table} SET claim_token = gen_random_uuid() WHERE id = $1", connection);
        steal.Parameters.Add(new NpgsqlParameter { Value = requestId });
        Assert.Equal(1, await steal.ExecuteNonQueryAsync(cancellationToken));
    }
}
