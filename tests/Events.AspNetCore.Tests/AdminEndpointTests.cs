using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Events.CSharp;
using Events.Testing;
using Marten;
using Microsoft.Extensions.DependencyInjection;

namespace AspNetCore.Tests;

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

public class AdminEndpointTests(PostgresFixture fixture) : IClassFixture<PostgresFixture>
{
    private const int PerCause = 4;

    private static void Configure(EventsOptions options)
    {
        options.Scheduler.Interval = TimeSpan.FromMilliseconds(25);
        options.On("order.placed")
            .Handle("charge", (_, _) => Task.FromResult(HandlerOutcome.Failure($"card {Guid.NewGuid()} declined")), h => h.MaxErrors(1))
            .Handle("reserve", (_, _) => throw new InvalidOperationException("out of stock"), h => h.MaxErrors(1))
            .Handle("notify", (_, _) => Task.FromResult(HandlerOutcome.Success));
    }

    private static AdminApp InMemory(bool mapAdmin = true) =>
        new(services => services.AddEvents(Configure).UseInMemoryStore(), mapAdmin);

    private async Task<AdminApp> OnMartenAsync()
    {
        var connectionString = await fixture.Postgres.CreateDatabaseAsync();
        return new AdminApp(services =>
        {
            services.AddMarten(connectionString).UseLightweightSessions();
            services.AddEvents(Configure).UseMartenStore();
        });
    }

    private static HttpClient Client(AdminApp app)
    {
        var client = app.CreateClient();
        client.DefaultRequestHeaders.Add("X-Test-User", "ops");
        return client;
    }

    private static async Task<JsonElement> GetJsonAsync(HttpClient client, string path)
    {
        var response = await client.GetAsync(path);
        Assert.True(response.IsSuccessStatusCode, $"{path}: {response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        return await response.Content.ReadFromJsonAsync<JsonElement>();
    }

    private static async Task WithDeadRequestsAsync(AdminApp app)
    {
        var events = app.Services.GetRequiredService<IEventPublisher>();
        var admin = app.Services.GetRequiredService<IEventsAdmin>();
        for (var i = 0; i < PerCause; i++)
        {
            await events.RaiseApplicationEventAsync("order.placed", new { order = i });
        }

        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (await admin.CountDeadRequestsAsync() < 2 * PerCause || await admin.CountRequestsAsync(new RequestFilter { Statuses = [RequestStatus.Completed] }) < PerCause)
        {
            Assert.True(DateTime.UtcNow < deadline, "the requests did not die in time");
            await Task.Delay(25);
        }
    }

    [Fact]
    public async Task Set_aside_rows_are_listed_and_restored_through_the_endpoints_on_Marten()
    {
        await using var app = await OnMartenAsync();
        var client = Client(app);
        var events = app.Services.GetRequiredService<IEventPublisher>();
        var admin = app.Services.GetRequiredService<IEventsAdmin>();
        await events.RaiseApplicationEventAsync("order.placed", new { order = 1 });
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (await admin.CountRequestsAsync(new RequestFilter { Statuses = [RequestStatus.Completed] }) < 1)
        {
            Assert.True(DateTime.UtcNow < deadline, "the request did not complete in time");
            await Task.Delay(25);
        }

        // A person edits the completed request by hand: runnable again, with a name no handler has.
        var completed = (await admin.QueryRequestsAsync(new RequestFilter { Statuses = [RequestStatus.Completed] })).Requests.Single();
        await using (var session = app.Services.GetRequiredService<IDocumentStore>().LightweightSession())
        {
            session.QueueSqlCommand(
                "update mt_doc_events_request set completed_at = null, data = jsonb_set(data - 'completedAt', '{handlerName}', '\"\"') where id = ?",
                completed.Id);
            await session.SaveChangesAsync();
        }

        JsonElement listed = default;
        while (listed.ValueKind != JsonValueKind.Array || listed.GetArrayLength() == 0)
        {
            Assert.True(DateTime.UtcNow < deadline.AddSeconds(20), "the edited row was not set aside in time");
            await Task.Delay(25);
            listed = await GetJsonAsync(client, "/ops/events/set-aside");
        }

        var item = listed.EnumerateArray().Single();
        Assert.Equal("Request", item.GetProperty("kind").GetString());
        Assert.Equal(completed.Id, item.GetProperty("id").GetGuid());
        Assert.False(string.IsNullOrEmpty(item.GetProperty("reason").GetString()));
        // The person fixes the row, then puts it back: it runs and completes, and is set aside no more.
        await using (var session = app.Services.GetRequiredService<IDocumentStore>().LightweightSession())
        {
            session.QueueSqlCommand(
                "update mt_doc_events_request set data = jsonb_set(data, '{handlerName}', to_jsonb(handler_name)) where id = ?",
                completed.Id);
            await session.SaveChangesAsync();
        }

        var restored = await client.PostAsync($"/ops/events/set-aside/Request/{completed.Id}/restore", null);
        Assert.Equal(HttpStatusCode.NoContent, restored.StatusCode);
        while ((await admin.FindRequestAsync(completed.Id))?.State != HandlerRequestState.Completed)
        {
            Assert.True(DateTime.UtcNow < deadline.AddSeconds(40), "the restored request did not complete in time");
            await Task.Delay(25);
        }

        var again = await client.PostAsync($"/ops/events/set-aside/Request/{completed.Id}/restore", null);
        Assert.Equal(HttpStatusCode.NotFound, again.StatusCode);
        Assert.Equal(0, (await GetJsonAsync(client, "/ops/events/set-aside")).GetArrayLength());
    }

    [Fact]
    public async Task Nothing_is_mapped_unless_the_application_asks()
    {
        await using var app = InMemory(mapAdmin: false);
        var response = await Client(app).GetAsync("/ops/events/stats");
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
    }

    [Fact]
    public async Task The_group_takes_the_applications_authorization()
    {
        await using var app = InMemory();
        var anonymous = app.CreateClient();
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/ops/events/stats")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PostAsync("/ops/events/bulk/re-execute", null)).StatusCode);
    }

    [Fact]
    public async Task Stats_requests_events_and_triage_are_JSON_with_enums_as_strings_on_memory() =>
        await QueriesAsync(InMemory());

    [Fact]
    public async Task Stats_requests_events_and_triage_are_JSON_with_enums_as_strings_on_Marten() =>
        await QueriesAsync(await OnMartenAsync());

    private static async Task QueriesAsync(AdminApp app)
    {
        await using var owned = app;
        await WithDeadRequestsAsync(app);
        var client = Client(app);

        var stats = await GetJsonAsync(client, "/ops/events/stats");
        Assert.Equal(2 * PerCause, stats.GetProperty("deadRequests").GetInt64());
        var byHandler = stats.GetProperty("byHandler").EnumerateArray().ToList();
        Assert.Contains(byHandler, row => row.GetProperty("handlerName").GetString() == "charge" && row.GetProperty("status").GetString() == "Dead");

        var first = await GetJsonAsync(client, "/ops/events/requests?status=dead&handler=charge&limit=3");
        var requests = first.GetProperty("requests").EnumerateArray().ToList();
        Assert.Equal(3, requests.Count);
        Assert.All(requests, r => Assert.Equal("Dead", r.GetProperty("state").GetString()));
        Assert.Equal(JsonValueKind.Object, requests[0].GetProperty("eventData").ValueKind);
        var next = first.GetProperty("next").GetString();
        var second = await GetJsonAsync(client, $"/ops/events/requests?status=dead&handler=charge&limit=3&after={Uri.EscapeDataString(next!)}");
        Assert.Single(second.GetProperty("requests").EnumerateArray());
        Assert.False(second.TryGetProperty("next", out var unused), $"no next page, got {unused}");

        var count = await GetJsonAsync(client, "/ops/events/requests/count?status=dead&error=out%20of%20stock");
        Assert.Equal(PerCause, count.GetProperty("count").GetInt64());

        var eventId = requests[0].GetProperty("eventId").GetGuid();
        var details = await GetJsonAsync(client, $"/ops/events/events/{eventId}");
        Assert.False(details.GetProperty("fullyHandled").GetBoolean());
        Assert.Equal(3, details.GetProperty("requests").GetArrayLength());

        var triage = (await GetJsonAsync(client, "/ops/events/triage")).EnumerateArray().ToList();
        Assert.Equal(2, triage.Count);
        Assert.All(triage, group => Assert.Equal(PerCause, group.GetProperty("count").GetInt64()));
        Assert.Contains(triage, group => group.GetProperty("pattern").GetString() == "card <id> declined");

        var health = await client.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        Assert.Equal("Healthy", await health.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Unknown_ids_bad_filters_and_refused_commands_are_ProblemDetails()
    {
        await using var app = InMemory();
        await WithDeadRequestsAsync(app);
        var client = Client(app);

        var missing = await client.GetAsync($"/ops/events/requests/{Guid.NewGuid()}");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Equal("application/problem+json", missing.Content.Headers.ContentType?.MediaType);

        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync($"/ops/events/events/{Guid.NewGuid()}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await client.PostAsync($"/ops/events/requests/{Guid.NewGuid()}/cancel", null)).StatusCode);

        var bad = await client.GetAsync("/ops/events/requests?status=sleeping");
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        var problem = await bad.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Contains("sleeping", problem.GetProperty("detail").GetString());

        var completed = await GetJsonAsync(client, "/ops/events/requests?status=completed&limit=1");
        var id = completed.GetProperty("requests")[0].GetProperty("id").GetGuid();
        var refused = await client.PostAsync($"/ops/events/requests/{id}/re-execute", null);
        Assert.Equal(HttpStatusCode.Conflict, refused.StatusCode);
        Assert.Contains("completed", (await refused.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("detail").GetString());
    }

    [Fact]
    public async Task A_triage_group_is_counted_by_a_dry_run_then_canceled_in_bulk()
    {
        await using var app = InMemory();
        await WithDeadRequestsAsync(app);
        var client = Client(app);
        var triage = (await GetJsonAsync(client, "/ops/events/triage")).EnumerateArray().ToList();
        var group = triage.Single(g => g.GetProperty("handlerNames")[0].GetString() == "reserve").GetProperty("id").GetString();

        var dry = await client.PostAsJsonAsync("/ops/events/bulk/cancel", new { group, dryRun = true });
        var dryResult = await dry.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(PerCause, dryResult.GetProperty("selected").GetInt64());
        Assert.Equal(0, dryResult.GetProperty("updated").GetInt64());

        var run = await client.PostAsJsonAsync("/ops/events/bulk/cancel", new { group, chunkSize = 1 });
        var result = await run.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(PerCause, result.GetProperty("updated").GetInt64());
        Assert.True(result.GetProperty("finished").GetBoolean());

        var left = await GetJsonAsync(client, "/ops/events/requests/count?status=dead");
        Assert.Equal(PerCause, left.GetProperty("count").GetInt64());

        var badBody = await client.PostAsync("/ops/events/bulk/re-execute", new StringContent("{\"after\": \"nonsense\"}", System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, badBody.StatusCode);
    }
}
