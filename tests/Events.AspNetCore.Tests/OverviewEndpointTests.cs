using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Events.CSharp;
using Marten;
using Microsoft.Extensions.DependencyInjection;

namespace AspNetCore.Tests;

/// <summary>The per-handler overview endpoint and the dashboard's files, behind the application's authorization.</summary>
public class OverviewEndpointTests(PostgresFixture fixture) : IClassFixture<PostgresFixture>
{
    private const int Orders = 3;

    private static void Configure(EventsOptions options)
    {
        options.Scheduler.Interval = TimeSpan.FromMilliseconds(25);
        options.On("order.placed")
            .Handle("charge", (_, _) => throw new InvalidOperationException("card declined"), h => h.MaxErrors(1))
            .Handle("notify", (_, _) => Task.FromResult(HandlerOutcome.Success));
    }

    private static HttpClient Client(AdminApp app)
    {
        var client = app.CreateClient();
        client.DefaultRequestHeaders.Add("X-Test-User", "ops");
        return client;
    }

    private static async Task SeedAsync(AdminApp app)
    {
        var events = app.Services.GetRequiredService<IEventPublisher>();
        var admin = app.Services.GetRequiredService<IEventsAdmin>();
        for (var i = 0; i < Orders; i++)
        {
            await events.RaiseApplicationEventAsync("order.placed", new { order = i });
        }

        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (await admin.CountDeadRequestsAsync() < Orders
               || await admin.CountRequestsAsync(new RequestFilter { Statuses = [RequestStatus.Completed] }) < Orders)
        {
            Assert.True(DateTime.UtcNow < deadline, "the requests did not finish in time");
            await Task.Delay(25);
        }
    }

    [Fact]
    public async Task The_overview_counts_dead_and_recently_completed_requests_per_handler_on_memory() =>
        await OverviewAsync(new AdminApp(services => services.AddEvents(Configure).UseInMemoryStore()));

    [Fact]
    public async Task The_overview_counts_dead_and_recently_completed_requests_per_handler_on_Marten()
    {
        var connectionString = await fixture.Postgres.CreateDatabaseAsync();
        await OverviewAsync(new AdminApp(services =>
        {
            services.AddMarten(connectionString).UseLightweightSessions();
            services.AddEvents(Configure).UseMartenStore();
        }));
    }

    private static async Task OverviewAsync(AdminApp app)
    {
        await using var owned = app;
        await SeedAsync(app);
        var client = Client(app);

        var overview = await client.GetFromJsonAsync<JsonElement>("/ops/events/overview");
        Assert.Equal(Orders, overview.GetProperty("deadRequests").GetInt64());
        Assert.Equal(60, overview.GetProperty("windowMinutes").GetDouble());
        var handlers = overview.GetProperty("handlers").EnumerateArray().ToDictionary(h => h.GetProperty("handlerName").GetString()!);
        Assert.Equal(["charge", "notify"], handlers.Keys.Order());
        Assert.Equal(Orders, handlers["charge"].GetProperty("dead").GetInt64());
        Assert.Equal(0, handlers["charge"].GetProperty("completed").GetInt64());
        Assert.Equal(Orders, handlers["notify"].GetProperty("completed").GetInt64());
        Assert.Equal(Orders / 60.0, handlers["notify"].GetProperty("completedPerMinute").GetDouble(), 9);
        Assert.Equal(0, handlers["notify"].GetProperty("runnable").GetInt64());

        var bad = await client.GetAsync("/ops/events/overview?window=0");
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Contains("window", (await bad.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("detail").GetString());
    }

    [Fact]
    public async Task The_dashboard_is_served_with_a_strict_policy_and_refused_without_authorization()
    {
        await using var app = new AdminApp(services => services.AddEvents(Configure).UseInMemoryStore());
        var anonymous = app.CreateClient();
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/ops/events/dashboard/")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/ops/events/dashboard/dashboard.js")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/ops/events/overview")).StatusCode);

        var client = app.CreateClient(new() { AllowAutoRedirect = false });
        client.DefaultRequestHeaders.Add("X-Test-User", "ops");
        var redirect = await client.GetAsync("/ops/events/dashboard");
        Assert.Equal("/ops/events/dashboard/", redirect.Headers.Location?.OriginalString);

        var index = await client.GetAsync("/ops/events/dashboard/");
        Assert.Equal(HttpStatusCode.OK, index.StatusCode);
        Assert.Equal("text/html", index.Content.Headers.ContentType?.MediaType);
        Assert.Contains("script-src 'self'", index.Headers.GetValues("Content-Security-Policy").Single());
        Assert.Contains("dashboard.js", await index.Content.ReadAsStringAsync());

        foreach (var (file, type) in new[] { ("dashboard.js", "text/javascript"), ("dashboard.css", "text/css") })
        {
            var response = await client.GetAsync($"/ops/events/dashboard/{file}");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(type, response.Content.Headers.ContentType?.MediaType);
        }

        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/ops/events/dashboard/secrets.txt")).StatusCode);
    }
}
