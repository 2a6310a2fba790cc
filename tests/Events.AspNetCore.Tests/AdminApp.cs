using System.Security.Claims;
using System.Text.Encodings.Web;
using Events.AspNetCore;
using Events.CSharp;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AspNetCore.Tests;

/// <summary>Authenticates a request that names a user in the X-Test-User header; any other is anonymous.</summary>
public sealed class HeaderAuthentication(IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger, UrlEncoder encoder)
    : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
{
    public const string SchemeName = "test";

    protected override Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        if (Request.Headers["X-Test-User"].FirstOrDefault() is not { Length: > 0 } user)
        {
            return Task.FromResult(AuthenticateResult.NoResult());
        }

        var identity = new ClaimsIdentity([new Claim(ClaimTypes.Name, user)], SchemeName);
        return Task.FromResult(AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), SchemeName)));
    }
}

/// <summary>
/// An application as a user writes it: Events from <c>AddEvents</c>, its admin endpoints behind the application's
/// authorization, and health checks; <paramref name="mapAdmin"/> false leaves the endpoints out.
/// </summary>
public sealed class AdminApp(Action<IServiceCollection> events, bool mapAdmin = true) : WebApplicationFactory<AdminApp>
{
    // The test project is no web project: its output folder is the content root.
    protected override void ConfigureWebHost(IWebHostBuilder builder) => builder.UseContentRoot(AppContext.BaseDirectory);

    protected override IHostBuilder CreateHostBuilder() =>
        Host.CreateDefaultBuilder()
            .ConfigureWebHostDefaults(web => web
                .UseContentRoot(AppContext.BaseDirectory)
                .ConfigureServices(services =>
                {
                    services.AddRouting();
                    services.AddAuthentication(HeaderAuthentication.SchemeName)
                        .AddScheme<AuthenticationSchemeOptions, HeaderAuthentication>(HeaderAuthentication.SchemeName, null);
                    services.AddAuthorization();
                    events(services);
                    services.AddHealthChecks().AddEventsHealthChecks(options => options.MaxRunnableRequestAge = TimeSpan.FromHours(1));
                })
                .Configure(app =>
                {
                    app.UseRouting();
                    app.UseAuthentication();
                    app.UseAuthorization();
                    app.UseEndpoints(endpoints =>
                    {
                        if (mapAdmin)
                        {
                            endpoints.MapEventsAdmin("/ops/events").RequireAuthorization();
                        }

                        endpoints.MapHealthChecks("/health");
                    });
                }));
}
