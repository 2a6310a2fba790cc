using Events.AspNetCore;
using Events.CSharp;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Facade.Tests;

/// <summary>The README's operators section, compiled: the admin endpoints behind a policy, and the health checks.</summary>
public class OperatorsReadmeTests
{
    [Fact]
    public async Task The_admin_endpoints_map_behind_the_applications_policy_and_the_health_checks_register()
    {
        var builder = WebApplication.CreateBuilder();
        builder.Services.AddAuthorization(options => options.AddPolicy("operators", policy => policy.RequireAuthenticatedUser()));
        builder.Services.AddEvents(_ => { }).UseInMemoryStore();

        // begin-snippet: events-admin
        builder.Services.AddHealthChecks().AddEventsHealthChecks(health => health.MaxRunnableRequestAge = TimeSpan.FromMinutes(2));
        var app = builder.Build();
        app.MapEventsAdmin("/ops/events").RequireAuthorization("operators");
        app.MapHealthChecks("/health");
        // end-snippet

        var endpoints = ((IEndpointRouteBuilder)app).DataSources.SelectMany(source => source.Endpoints).OfType<RouteEndpoint>().ToList();
        var triage = Assert.Single(endpoints, endpoint => endpoint.RoutePattern.RawText == "/ops/events/triage");
        Assert.Contains(triage.Metadata.GetOrderedMetadata<IAuthorizeData>(), data => data.Policy == "operators");
        Assert.Contains(endpoints, endpoint => endpoint.RoutePattern.RawText == "/ops/events/bulk/re-execute");
        await app.DisposeAsync();
    }
}
