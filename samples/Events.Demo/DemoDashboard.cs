using Events.AspNetCore;
using Events.CSharp;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace EventsDemo;

/// <summary>
/// Serves the admin endpoints and the dashboard on a loopback port, over the demo's own <see cref="IEventsAdmin"/>
/// (so it works on either store), and logs where. Loopback only and without authorization: a real application maps
/// <c>MapEventsAdmin</c> in its own web host behind its own policy.
/// </summary>
public sealed class DemoDashboard(DemoSettings settings, IEventsAdmin admin, ILogger<DemoDashboard> logger) : IHostedService, IAsyncDisposable
{
    /// <summary>Where the endpoints go; the dashboard is under it at <c>dashboard/</c>.</summary>
    public const string Prefix = "/events";

    private WebApplication? web;

    /// <inheritdoc/>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel().UseUrls($"http://127.0.0.1:{settings.DashboardPort}");
        builder.Services.AddSingleton(admin);
        web = builder.Build();
        web.MapEventsAdmin(Prefix);
        await web.StartAsync(cancellationToken).ConfigureAwait(false);
        var address = web.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
        logger.LogInformation("dashboard: {Url}", $"{address}{Prefix}/dashboard/");
    }

    /// <inheritdoc/>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (web is not null)
        {
            await web.StopAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        if (web is not null)
        {
            await web.DisposeAsync().ConfigureAwait(false);
        }
    }
}
