using Events.AspNetCore;
using Events.CSharp;
using Marten;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AspNetCore.Tests;

/// <summary>
/// An application on Kestrel on a free loopback port over a PostgreSQL database, with the admin endpoints and the
/// dashboard mapped, and seeded: orders whose "charge" and "ship" handlers fail (and die at once) while
/// <see cref="Failing"/> is set, and whose "notify" handler completes.
/// </summary>
public sealed class DashboardSite : IAsyncDisposable
{
    public const string Prefix = "/ops/events";

    private readonly WebApplication app;

    private DashboardSite(WebApplication app, string address)
    {
        this.app = app;
        Address = address;
    }

    /// <summary>While set, "charge" and "ship" throw.</summary>
    public bool Failing { get; set; } = true;

    public string Address { get; }

    public string Dashboard => $"{Address}{Prefix}/dashboard/";

    public IEventPublisher Events => app.Services.GetRequiredService<IEventPublisher>();

    public IEventsAdmin Admin => app.Services.GetRequiredService<IEventsAdmin>();

    public static async Task<DashboardSite> StartAsync(string connectionString)
    {
        DashboardSite? site = null;
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseKestrel().UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.Services.AddMarten(connectionString).UseLightweightSessions();
        builder.Services.AddEvents(options =>
        {
            options.Scheduler.Interval = TimeSpan.FromMilliseconds(25);
            options.On("order.placed")
                .Handle("charge", (_, _) => site!.Failing ? throw new InvalidOperationException("card declined") : Task.FromResult(HandlerOutcome.Success), h => h.MaxErrors(1))
                .Handle("ship", (_, _) => site!.Failing ? throw new TimeoutException("courier down") : Task.FromResult(HandlerOutcome.Success), h => h.MaxErrors(1))
                .Handle("notify", (_, _) => Task.FromResult(HandlerOutcome.Success));
        }).UseMartenStore();
        var app = builder.Build();
        app.MapEventsAdmin(Prefix);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        site = new DashboardSite(app, address.TrimEnd('/'));
        return site;
    }

    /// <summary>Raises the events and waits until each has its dead and its completed requests.</summary>
    public async Task SeedAsync(IEnumerable<object> orders)
    {
        var count = 0;
        foreach (var order in orders)
        {
            await Events.RaiseApplicationEventAsync("order.placed", order);
            count++;
        }

        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (await Admin.CountDeadRequestsAsync() < 2 * count
               || await Admin.CountRequestsAsync(new RequestFilter { Statuses = [RequestStatus.Completed] }) < count)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("the seeded requests did not finish in time");
            }

            await Task.Delay(25);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await app.StopAsync();
        await app.DisposeAsync();
    }
}
