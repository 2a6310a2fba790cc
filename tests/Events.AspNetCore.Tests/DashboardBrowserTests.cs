using System.Globalization;
using Events.CSharp;
using OpenQA.Selenium;

namespace AspNetCore.Tests;

/// <summary>
/// The dashboard in a real headless Chromium against the application on Kestrel over a seeded PostgreSQL database:
/// each page draws the database's numbers with no console error, a stored payload is shown as text and never runs,
/// and a redrive confirmed in the page changes the database. Screenshots go to artifacts/screenshots/.
/// </summary>
public class DashboardBrowserTests(PostgresFixture fixture) : IClassFixture<PostgresFixture>
{
    private const int Orders = 4;
    private const string Hostile = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">";

    private static readonly string Screenshots = Path.Combine(RepositoryRoot(), "artifacts", "screenshots");

    private static string RepositoryRoot()
    {
        for (var folder = new DirectoryInfo(AppContext.BaseDirectory); folder is not null; folder = folder.Parent)
        {
            if (File.Exists(Path.Combine(folder.FullName, "Events.sln")))
            {
                return folder.FullName;
            }
        }

        return AppContext.BaseDirectory;
    }

    private async Task<DashboardSite> SeededAsync()
    {
        var site = await DashboardSite.StartAsync(await fixture.Postgres.CreateDatabaseAsync());
        await site.SeedAsync([.. Enumerable.Range(1, Orders).Select(i => (object)new { order = i }), new { order = 0, note = Hostile }]);
        return site;
    }

    private static void NoComplaints(Browser browser, string page)
    {
        var complaints = browser.Complaints();
        Assert.True(complaints.Count == 0, $"{page} logged: {string.Join(" | ", complaints)}");
    }

    [Fact]
    public void The_console_check_sees_what_a_page_logs()
    {
        // Without this, a browser log that came back empty whatever the page did would pass every page above.
        using var browser = new Browser();
        browser.Open("data:text/html,<p>x</p>");
        browser.Script("console.error('broken on purpose');");
        Assert.Contains(browser.Complaints(), complaint => complaint.Contains("broken on purpose", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Every_page_shows_the_seeded_database_with_no_console_error_and_a_hostile_payload_as_text()
    {
        await using var site = await SeededAsync();
        using var browser = new Browser();

        // The overview: the numbers the store gives, per handler.
        browser.Open(site.Dashboard);
        var expected = await site.Admin.GetHandlerOverviewAsync();
        foreach (var handler in expected)
        {
            var row = $"tr[data-handler='{handler.HandlerName}']";
            Assert.Equal(handler.Dead.ToString(CultureInfo.InvariantCulture), browser.TextOf($"{row} [data-field='dead']"));
            Assert.Equal(handler.Completed.ToString(CultureInfo.InvariantCulture), browser.TextOf($"{row} [data-field='completed']"));
            Assert.Equal(handler.Runnable.ToString(CultureInfo.InvariantCulture), browser.TextOf($"{row} [data-field='runnable']"));
        }

        Assert.Equal(["charge", "notify", "ship"], expected.Select(h => h.HandlerName));
        var stats = await site.Admin.GetStatisticsAsync();
        Assert.Equal(stats.DeadRequests.ToString(CultureInfo.InvariantCulture), browser.TextOf("[data-field='dead-requests']"));
        // It refreshes: the time it was read at changes.
        var readAt = browser.TextOf("#updated");
        browser.WaitFor("the overview to refresh", d => d.FindElement(By.Id("updated")).Text != readAt);
        browser.Screenshot(Path.Combine(Screenshots, "overview.png"));
        NoComplaints(browser, "the overview");

        // Dead requests by cause: one group per handler's exception, with its count.
        browser.Open(site.Dashboard + "#/dead");
        var triage = await site.Admin.TriageAsync(RequestFilter.Dead);
        Assert.Equal(2, triage.Count);
        foreach (var group in triage)
        {
            var section = $"section[data-group='{group.Id}']";
            Assert.Equal(group.Count.ToString(CultureInfo.InvariantCulture), browser.TextOf($"{section} [data-field='count']"));
            Assert.Equal(string.Join(", ", group.HandlerNames), browser.TextOf($"{section} [data-field='handlers']"));
        }

        browser.Screenshot(Path.Combine(Screenshots, "dead-requests.png"));
        NoComplaints(browser, "the dead requests");

        // The hostile event's dead request: its payload is shown as JSON text, and nothing of it ran.
        var hostile = (await site.Admin.QueryRequestsAsync(new RequestFilter { Statuses = [RequestStatus.Dead], HandlerNames = ["charge"] }, limit: 100))
            .Requests.Single(r => r.EventDataJson.Contains("note", StringComparison.Ordinal));
        browser.Open(site.Dashboard + $"#/request/{hostile.Id}");
        var data = browser.TextOf("[data-field='event-data']");
        Assert.Contains("<script>window.pwned = 1</script>", data);
        Assert.Equal("Dead", browser.TextOf("[data-field='state']"));
        Assert.Equal($"{hostile.Errors} of {hostile.MaxErrors} allowed", browser.TextOf("[data-field='errors']"));
        var lines = hostile.LastError!.Split('\n');
        Assert.Equal(lines[0].Trim(), browser.TextOf("[data-field='last-error']"));
        var stack = browser.TextOf("[data-field='stack']");
        Assert.Contains("card declined", hostile.LastError);
        Assert.Contains(lines[^1].Trim(), stack);
        Assert.Null(browser.Script("return window.pwned;"));
        Assert.Empty(browser.Driver.FindElements(By.CssSelector("#page img, #page script")));
        browser.Screenshot(Path.Combine(Screenshots, "request.png"));
        NoComplaints(browser, "the request");

        // Its event: the data as text again, and each of its requests with its status.
        browser.Open(site.Dashboard + $"#/event/{hostile.EventId}");
        var details = (await site.Admin.GetEventDetailsAsync(hostile.EventId))!;
        foreach (var request in details.Requests)
        {
            Assert.Equal(request.Status.ToString(), browser.TextOf($"tr[data-request='{request.Request.Id}'] [data-field='status']"));
        }

        Assert.Equal(3, browser.Driver.FindElements(By.CssSelector("tr[data-request]")).Count);
        Assert.Contains("<img src=x", browser.TextOf("[data-field='event-data']"));
        Assert.Null(browser.Script("return window.pwned;"));
        browser.Screenshot(Path.Combine(Screenshots, "event.png"));
        NoComplaints(browser, "the event");
    }

    [Fact]
    public async Task A_canary_and_a_bulk_re_execute_confirmed_in_the_page_change_the_database()
    {
        await using var site = await SeededAsync();
        using var browser = new Browser();
        site.Failing = false;
        var triage = await site.Admin.TriageAsync(RequestFilter.Dead);
        var charge = triage.Single(g => g.HandlerNames.SequenceEqual(["charge"]));
        var ship = triage.Single(g => g.HandlerNames.SequenceEqual(["ship"]));

        // The canary: the dialog counts first (a dry run), nothing changes before Confirm.
        browser.Open(site.Dashboard + "#/dead");
        browser.Click($"section[data-group='{charge.Id}'] [data-action='canary']");
        browser.TextContaining("#confirm-text", $"One of {charge.Count} dead requests");
        browser.Screenshot(Path.Combine(Screenshots, "canary-confirmation.png"));
        Assert.Equal(charge.Count, await DeadAsync(site, "charge"));
        browser.Click("#confirm-ok");
        browser.WaitFor("the canary's result", d => d.FindElement(By.Id("confirm-result")).Text.StartsWith("Canary Succeeded", StringComparison.Ordinal));
        Assert.Contains($"the rest: {charge.Count - 1} re-executed", browser.TextOf("#confirm-result"));
        browser.Screenshot(Path.Combine(Screenshots, "canary-result.png"));
        browser.Click("#confirm-close");

        // Re-execute all of the other cause.
        browser.Click($"section[data-group='{ship.Id}'] [data-action='re-execute']");
        browser.TextContaining("#confirm-text", $"{ship.Count} dead requests");
        browser.Click("#confirm-ok");
        browser.WaitFor("the re-execution's result", d => d.FindElement(By.Id("confirm-result")).Text.StartsWith($"Re-executed {ship.Count};", StringComparison.Ordinal));
        browser.Screenshot(Path.Combine(Screenshots, "re-execute-result.png"));
        browser.Click("#confirm-close");

        // The database: nothing dead, every request of both handlers completed once they ran.
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (await CompletedAsync(site, "charge") < charge.Count || await CompletedAsync(site, "ship") < ship.Count)
        {
            Assert.True(DateTime.UtcNow < deadline, "the re-executed requests did not complete in time");
            await Task.Delay(25);
        }

        Assert.Equal(0, await site.Admin.CountDeadRequestsAsync());
        browser.TextOf("#no-dead");
        browser.Screenshot(Path.Combine(Screenshots, "after-redrive.png"));
        NoComplaints(browser, "the redrive");
    }

    private static Task<long> DeadAsync(DashboardSite site, string handler) =>
        site.Admin.CountRequestsAsync(new RequestFilter { Statuses = [RequestStatus.Dead], HandlerNames = [handler] });

    private static Task<long> CompletedAsync(DashboardSite site, string handler) =>
        site.Admin.CountRequestsAsync(new RequestFilter { Statuses = [RequestStatus.Completed], HandlerNames = [handler] });
}
