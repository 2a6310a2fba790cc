using System.Collections.Concurrent;
using System.Net.Http.Json;
using Events.CSharp;
using Marten;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;

namespace Facade.Tests;

// begin-snippet: aspnet-handler
[EventName("order.placed")]
public sealed record PlaceOrder(string Number, decimal Total);

public sealed class Order
{
    public string Id { get; set; } = "";

    public decimal Total { get; set; }
}

public sealed class Shipment
{
    public string Id { get; set; } = "";

    public decimal Total { get; set; }
}

/// <summary>
/// Made by the container for each attempt, in a scope of its own. The IDocumentSession it is given there
/// is the one that commits with the request's outcome: its work is saved when the handler succeeds.
/// </summary>
public sealed class ShipOrder(IShippingService shipping, IDocumentSession session) : IEventHandler<PlaceOrder>
{
    public async Task<HandlerOutcome> HandleAsync(PlaceOrder order, HandlerContext context, CancellationToken cancellationToken)
    {
        if (!await shipping.BookAsync(order.Number, cancellationToken))
        {
            return HandlerOutcome.Failure($"no carrier for order {order.Number}");
        }

        session.Store(new Shipment { Id = order.Number, Total = order.Total });
        return HandlerOutcome.Success;
    }
}
// end-snippet

public interface IShippingService
{
    Task<bool> BookAsync(string order, CancellationToken cancellationToken);
}

/// <summary>Books every order, and remembers which.</summary>
public sealed class FakeShipping : IShippingService
{
    public ConcurrentQueue<string> Booked { get; } = new();

    public Task<bool> BookAsync(string order, CancellationToken cancellationToken)
    {
        Booked.Enqueue(order);
        return Task.FromResult(true);
    }
}

public class AspNetCoreTests(PostgresFixture fixture) : IClassFixture<PostgresFixture>
{
    [Fact]
    public async Task An_ASP_NET_Core_application_on_Marten_raises_events_with_its_documents_and_handles_them()
    {
        var connectionString = await fixture.Postgres.CreateDatabaseAsync();
        string[] args = [$"--ConnectionStrings:Marten={connectionString}", "--urls=http://127.0.0.1:0"];

        // begin-snippet: aspnet-marten
        var builder = WebApplication.CreateBuilder(args);
        builder.Services.AddMarten(builder.Configuration.GetConnectionString("Marten")!).UseLightweightSessions();
        builder.Services.AddSingleton<IShippingService, FakeShipping>();
        builder.Services
            .AddEvents(options => options.On<PlaceOrder>()
                .Handle<ShipOrder>("ship-order", handler => handler.MaxErrors(10).Timeout(TimeSpan.FromSeconds(30))))
            .UseMartenStore();
        builder.Services.AddOpenTelemetry()
            .WithTracing(tracing => tracing.AddEventsInstrumentation())
            .WithMetrics(metrics => metrics.AddEventsInstrumentation());

        var app = builder.Build();
        var orders = new EntityKind("order");
        app.MapPost("/orders", async (PlaceOrder order, IDocumentSession session) =>
        {
            session.Store(new Order { Id = order.Number, Total = order.Total });
            session.RaiseEvents(Event.Domain(orders.Entity(order.Number), order));
            await session.SaveChangesAsync(); // the order and its event commit together, or neither does
            return Results.Accepted();
        });
        app.MapGet("/admin/dead-requests", (IEventsAdmin admin) => admin.GetDeadRequestsAsync());
        app.MapPost("/admin/requests/{id:guid}/re-execute", (Guid id, IEventsAdmin admin) => admin.ReExecuteAsync(id));
        // end-snippet

        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        using var http = new HttpClient { BaseAddress = new Uri(address) };

        var posted = await http.PostAsJsonAsync("/orders", new PlaceOrder("A-17", 12.5m));

        Assert.Equal(System.Net.HttpStatusCode.Accepted, posted.StatusCode);
        var shipping = (FakeShipping)app.Services.GetRequiredService<IShippingService>();
        await Eventually.HoldsAsync(() => shipping.Booked.Contains("A-17"), "the order was shipped");
        await Eventually.HoldsAsync(
            async () =>
            {
                await using var query = app.Services.GetRequiredService<IDocumentStore>().QuerySession();
                return await query.LoadAsync<Shipment>("A-17") is { Total: 12.5m };
            },
            "the handler's shipment was saved with its outcome");
        await using (var query = app.Services.GetRequiredService<IDocumentStore>().QuerySession())
        {
            Assert.Equal(12.5m, (await query.LoadAsync<Order>("A-17"))?.Total);
        }

        var dead = await http.GetFromJsonAsync<DeadRequestsResponse>("/admin/dead-requests");
        Assert.Equal(0, dead!.Total);
        await app.StopAsync();
        await app.DisposeAsync();
    }

    private sealed record DeadRequestsResponse(long Total);
}
