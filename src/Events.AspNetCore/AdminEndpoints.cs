using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using Events.CSharp;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Events.AspNetCore;

/// <summary>
/// Maps the Events administration endpoints. Nothing is mapped unless the application calls
/// <see cref="MapEventsAdmin(IEndpointRouteBuilder, string)"/>; the application protects the group it returns
/// with its own authorization (<c>app.MapEventsAdmin("/ops/events").RequireAuthorization("ops")</c>).
/// </summary>
public static class EventsAdminEndpoints
{
    /// <summary>The JSON the endpoints write: camel case, enums as strings, nulls left out.</summary>
    public static JsonSerializerOptions JsonOptions { get; } = CreateJsonOptions();

    private static JsonSerializerOptions CreateJsonOptions()
    {
        var options = new JsonSerializerOptions(JsonSerializerDefaults.Web)
        {
            DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
            TypeInfoResolver = new DefaultJsonTypeInfoResolver(),
        };
        options.Converters.Add(new JsonStringEnumConverter());
        options.MakeReadOnly();
        return options;
    }

    /// <summary>
    /// Maps, under <paramref name="prefix"/>: the dashboard (<c>GET dashboard/</c>, static pages over these
    /// endpoints), <c>GET stats</c>, <c>GET overview</c> (per handler; <c>window</c> in minutes, default 60),
    /// <c>GET requests</c> (filtered and paged),
    /// <c>GET requests/count</c>, <c>GET requests/{id}</c>, <c>POST requests/{id}/re-execute</c>,
    /// <c>POST requests/{id}/cancel</c>, <c>GET events/{id}</c>, <c>GET triage</c>, <c>POST bulk/re-execute</c>,
    /// <c>POST bulk/cancel</c> and <c>POST bulk/canary</c>. Filters are query parameters: <c>status</c>,
    /// <c>handler</c>, <c>event</c> (each repeatable), <c>eventId</c>, <c>from</c>, <c>until</c>, <c>error</c>;
    /// pages take <c>after</c> and <c>limit</c>. Unknown ids and refused commands answer with ProblemDetails.
    /// </summary>
    /// <param name="endpoints">The application.</param>
    /// <param name="prefix">Where the endpoints go, such as <c>"/ops/events"</c>.</param>
    /// <returns>The group of endpoints, to protect with <c>RequireAuthorization</c> or to configure further.</returns>
    public static RouteGroupBuilder MapEventsAdmin(this IEndpointRouteBuilder endpoints, string prefix)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentException.ThrowIfNullOrWhiteSpace(prefix);
        var group = endpoints.MapGroup(prefix);
        group.WithTags("Events administration");

        group.MapGet("/stats", async (IEventsAdmin admin, CancellationToken token) =>
        {
            var stats = await admin.GetStatisticsAsync(token).ConfigureAwait(false);
            var counts = await admin.GetCountsByHandlerAsync(token).ConfigureAwait(false);
            return Json(new StatsView(stats, counts));
        });

        group.MapGet("/overview", (IEventsAdmin admin, HttpRequest request, CancellationToken token) =>
            Guarded(async () =>
            {
                var window = Filters.ReadWindow(request.Query);
                var stats = await admin.GetStatisticsAsync(token).ConfigureAwait(false);
                var handlers = await admin.GetHandlerOverviewAsync(window, token).ConfigureAwait(false);
                return Json(new OverviewView(
                    stats.At,
                    window.TotalMinutes,
                    stats.UnprocessedEvents,
                    stats.OldestUnprocessedEventAge.TotalSeconds,
                    stats.RunnableRequests,
                    stats.OldestRunnableRequestAge.TotalSeconds,
                    stats.DeadRequests,
                    [.. handlers.Select(HandlerOverviewView.Of)]));
            }));

        group.MapGet("/requests", (IEventsAdmin admin, HttpRequest request, CancellationToken token) =>
            Guarded(async () =>
            {
                var filter = Filters.Read(request.Query);
                var limit = Filters.ReadLimit(request.Query);
                var page = await admin.QueryRequestsAsync(filter, request.Query["after"].FirstOrDefault(), limit, token)
                    .ConfigureAwait(false);
                return Json(new PageView([.. page.Requests.Select(RequestView.Of)], page.Next));
            }));

        group.MapGet("/requests/count", (IEventsAdmin admin, HttpRequest request, CancellationToken token) =>
            Guarded(async () =>
            {
                var count = await admin.CountRequestsAsync(Filters.Read(request.Query), token).ConfigureAwait(false);
                return Json(new CountView(count));
            }));

        group.MapGet("/requests/{id:guid}", async (IEventsAdmin admin, Guid id, CancellationToken token) =>
            await admin.FindRequestAsync(id, token).ConfigureAwait(false) is { } found
                ? Json(RequestView.Of(found))
                : NotFound("handler request", id));

        group.MapPost("/requests/{id:guid}/re-execute", (IEventsAdmin admin, Guid id, CancellationToken token) =>
            Command(() => admin.ReExecuteAsync(id, token)));

        group.MapPost("/requests/{id:guid}/cancel", (IEventsAdmin admin, Guid id, CancellationToken token) =>
            Command(() => admin.CancelAsync(id, token)));

        group.MapGet("/events/{id:guid}", async (IEventsAdmin admin, Guid id, CancellationToken token) =>
            await admin.GetEventDetailsAsync(id, token).ConfigureAwait(false) is { } details
                ? Json(EventView.Of(details))
                : NotFound("event", id));

        group.MapGet("/set-aside", async (IEventsAdmin admin, CancellationToken token) =>
            Json(await admin.GetSetAsideItemsAsync(token).ConfigureAwait(false)));

        group.MapPost("/set-aside/{kind}/{id:guid}/restore", async (IEventsAdmin admin, SetAsideKind kind, Guid id, CancellationToken token) =>
            await admin.RestoreSetAsideItemAsync(kind, id, token).ConfigureAwait(false)
                ? Results.NoContent()
                : NotFound("set-aside item", id));

        group.MapGet("/triage", (IEventsAdmin admin, HttpRequest request, CancellationToken token) =>
            Guarded(async () =>
            {
                var groups = await admin.TriageAsync(Filters.Read(request.Query), token).ConfigureAwait(false);
                return Json(groups.Select(TriageView.Of).ToList());
            }));

        group.MapPost("/bulk/re-execute", (IEventsAdmin admin, HttpRequest request, CancellationToken token) =>
            Bulk(admin, BulkCommand.ReExecute, request, token));

        group.MapPost("/bulk/cancel", (IEventsAdmin admin, HttpRequest request, CancellationToken token) =>
            Bulk(admin, BulkCommand.Cancel, request, token));

        group.MapPost("/bulk/canary", (IEventsAdmin admin, HttpRequest request, CancellationToken token) =>
            Guarded(async () =>
            {
                var body = await ReadBodyAsync(request, token).ConfigureAwait(false);
                var result = await admin.CanaryRedriveAsync(
                        body.ToRequest(),
                        body.Canaries ?? 10,
                        TimeSpan.FromSeconds(body.WaitSeconds ?? 60),
                        token)
                    .ConfigureAwait(false);
                return Json(new CanaryView(
                    result.Outcome,
                    [.. result.Canaries.Select(RequestView.Of)],
                    result.Rest is { } rest ? BulkView.Of(rest) : null));
            }));

        group.MapEventsDashboard();
        return group;
    }

    private static Task<IResult> Bulk(IEventsAdmin admin, BulkCommand command, HttpRequest request, CancellationToken token) =>
        Guarded(async () =>
        {
            var body = await ReadBodyAsync(request, token).ConfigureAwait(false);
            var result = await admin.BulkAsync(command, body.ToRequest(), null, token).ConfigureAwait(false);
            return Json(BulkView.Of(result));
        });

    private static async Task<BulkBody> ReadBodyAsync(HttpRequest request, CancellationToken token)
    {
        if (request.ContentLength is 0 or null && !request.HasJsonContentType())
        {
            return new BulkBody();
        }

        try
        {
            return await request.ReadFromJsonAsync<BulkBody>(JsonOptions, token).ConfigureAwait(false) ?? new BulkBody();
        }
        catch (JsonException error)
        {
            throw new ArgumentException($"the body is not a bulk request: {error.Message}", error);
        }
    }

    private static IResult Json<T>(T value) => Results.Json(value, JsonOptions);

    private static IResult NotFound(string what, Guid id) =>
        Results.Problem(
            title: $"No {what} with this id",
            detail: $"no {what} has id {id}",
            statusCode: StatusCodes.Status404NotFound);

    private static async Task<IResult> Command(Func<Task<HandlerRequest>> command)
    {
        try
        {
            return Json(RequestView.Of(await command().ConfigureAwait(false)));
        }
        catch (KeyNotFoundException error)
        {
            return Results.Problem(title: "No handler request with this id", detail: error.Message, statusCode: StatusCodes.Status404NotFound);
        }
        catch (InvalidOperationException error)
        {
            return Results.Problem(title: "The command was refused", detail: error.Message, statusCode: StatusCodes.Status409Conflict);
        }
    }

    private static async Task<IResult> Guarded(Func<Task<IResult>> action)
    {
        try
        {
            return await action().ConfigureAwait(false);
        }
        catch (ArgumentException error)
        {
            return Results.Problem(title: "The request is not valid", detail: error.Message, statusCode: StatusCodes.Status400BadRequest);
        }
    }
}
