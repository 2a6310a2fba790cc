using System.Collections.Frozen;
using System.Reflection;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Events.AspNetCore;

/// <summary>
/// The dashboard: three static files embedded in this assembly (a page, a script and a style sheet), served under
/// the admin endpoints' group so that they take its authorization. The script reads and changes through the JSON
/// endpoints beside it; it writes data only as text (never as markup), and the pages forbid inline scripts and any
/// other origin, so a stored payload cannot run in the browser.
/// </summary>
internal static class Dashboard
{
    private const string SecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

    private static readonly FrozenDictionary<string, (string Type, byte[] Content)> Files = Load();

    private static FrozenDictionary<string, (string Type, byte[] Content)> Load()
    {
        var assembly = typeof(Dashboard).Assembly;
        return new Dictionary<string, (string, byte[])>
        {
            ["index.html"] = ("text/html; charset=utf-8", Read(assembly, "index.html")),
            ["dashboard.js"] = ("text/javascript; charset=utf-8", Read(assembly, "dashboard.js")),
            ["dashboard.css"] = ("text/css; charset=utf-8", Read(assembly, "dashboard.css")),
        }.ToFrozenDictionary();
    }

    private static byte[] Read(Assembly assembly, string name)
    {
        using var stream = assembly.GetManifestResourceStream($"Events.AspNetCore.Dashboard.{name}")
            ?? throw new InvalidOperationException($"the dashboard's {name} is not embedded in {assembly.GetName().Name}");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    /// <summary>Maps <c>dashboard/</c> (<c>dashboard</c> is redirected there) and the dashboard's files in the group.</summary>
    public static void MapEventsDashboard(this RouteGroupBuilder group)
    {
        // Routing ignores a trailing slash: one endpoint sends "dashboard" on to "dashboard/", so that the page's
        // relative links resolve under it.
        group.MapGet("/dashboard/{file?}", (HttpRequest request, string? file) =>
            file is not null ? Serve(request.HttpContext.Response, file)
            : request.Path.Value?.EndsWith('/') == true ? Serve(request.HttpContext.Response, "index.html")
            : Results.Redirect($"{request.PathBase}{request.Path}/{request.QueryString}"));
    }

    private static IResult Serve(HttpResponse response, string file)
    {
        if (!Files.TryGetValue(file, out var found))
        {
            return Results.NotFound();
        }

        response.Headers.ContentSecurityPolicy = SecurityPolicy;
        response.Headers.XContentTypeOptions = "nosniff";
        response.Headers.CacheControl = "no-cache";
        response.Headers["Referrer-Policy"] = "no-referrer";
        return Results.Bytes(found.Content, found.Type);
    }
}
