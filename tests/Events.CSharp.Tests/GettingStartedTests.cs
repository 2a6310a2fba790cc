using System.Collections.Concurrent;
using Events.CSharp;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Facade.Tests;

/// <summary>
/// The README's getting-started code, compiled and run here so it cannot rot. The code between the
/// snippet markers is what the README shows (ReadmeSectionTests checks that it matches).
/// </summary>
public class GettingStartedTests
{
    [EventName("user.created")]
    public sealed record NewUser(string Email);

    /// <summary>Stands in for an application's email sender.</summary>
    public sealed class Mailer
    {
        public ConcurrentQueue<string> Sent { get; } = new();

        public Task SendWelcomeAsync(string email, CancellationToken cancellationToken)
        {
            Sent.Enqueue(email);
            return Task.CompletedTask;
        }
    }

    [Fact]
    public async Task Without_dependency_injection()
    {
        var mailer = new Mailer();

        // begin-snippet: without-di
        var options = new EventsOptions().UseInMemoryStore();
        options.On<NewUser>() // the event named by NewUser's [EventName("user.created")]
            .Handle(
                "send-welcome-email",
                (user, context, cancellationToken) => mailer.SendWelcomeAsync(user.Email, cancellationToken),
                handler => handler.MaxErrors(3).ExponentialBackoff(TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(1)))
            .Handle("check-email", (user, context, cancellationToken) =>
                Task.FromResult(user.Email.Contains('@')
                    ? HandlerOutcome.Success
                    : HandlerOutcome.Failure("not an email address")));

        await using var events = EventsRuntime.Create(options);
        events.Start();

        var raised = await events.RaiseAsync(Event.Application(new NewUser("ada@example.org")));
        // end-snippet

        // begin-snippet: wait-until-handled
        var requests = await events.WaitUntilHandledAsync(raised, timeout: TimeSpan.FromSeconds(10));
        Assert.All(requests, request => Assert.Equal(HandlerRequestState.Completed, request.State));
        // end-snippet

        await Eventually.HoldsAsync(() => mailer.Sent.Contains("ada@example.org"), "the welcome email was sent");

        // begin-snippet: shutdown
        await events.ShutdownAsync(TimeSpan.FromSeconds(10));
        // end-snippet
    }

    [Fact]
    public async Task With_the_generic_host()
    {
        string[] args = [];

        // begin-snippet: generic-host
        var builder = Host.CreateApplicationBuilder(args);
        builder.Services.AddSingleton<Mailer>();
        builder.Services
            .AddEvents(builder.Configuration.GetSection("Events"), options => options.On<NewUser>()
                .Handle<Mailer>("send-welcome-email", (user, mailer, context, cancellationToken) =>
                    mailer.SendWelcomeAsync(user.Email, cancellationToken)))
            .UseInMemoryStore();
        using var host = builder.Build();
        await host.StartAsync();

        // Anywhere in the application: IEventPublisher raises, IEventsAdmin looks after dead requests.
        var users = new EntityKind("user");
        var publisher = host.Services.GetRequiredService<IEventPublisher>();
        await publisher.RaiseAsync(Event.Domain(users.Entity("user-42"), new NewUser("grace@example.org")));
        // end-snippet

        var mailer = host.Services.GetRequiredService<Mailer>();
        await Eventually.HoldsAsync(() => mailer.Sent.Contains("grace@example.org"), "the welcome email was sent");
        await host.StopAsync();
    }

    [Fact]
    public async Task Looking_after_dead_requests()
    {
        var options = Fast.Options();
        options.On("user.created").Handle(
            "send-welcome-email",
            (context, cancellationToken) => Task.FromResult(HandlerOutcome.Failure("mail server down")),
            handler => handler.MaxErrors(1));
        await using var events = EventsRuntime.Create(options);
        events.Start();
        await events.RaiseApplicationEventAsync("user.created", new NewUser("ada@example.org"));
        await Eventually.HoldsAsync(async () => await events.CountDeadRequestsAsync() == 1, "the request is dead");
        IEventsAdmin admin = events;

        // begin-snippet: dead-requests
        var names = await admin.GetDeadRequestNamesAsync();
        var query = new DeadRequestQuery { HandlerNames = ["send-welcome-email"], Limit = 50 };
        var page = await admin.GetDeadRequestsAsync(query);
        Console.WriteLine($"{page.Total} dead requests of {string.Join(", ", names.HandlerNames)}");
        foreach (var request in page.Requests)
        {
            Console.WriteLine($"{request.EventName} {request.EventId}: {request.LastError} after {request.Errors} attempts");
            if (request.LastError == "mail server down")
            {
                await admin.ReExecuteAsync(request.Id); // runs again from zero errors
            }
            else
            {
                await admin.CancelAsync(request.Id); // never runs again
            }
        }
        // end-snippet

        Assert.Equal(1, page.Total);
        await Eventually.HoldsAsync(
            async () => (await events.GetRequestsAsync().SingleAsync()).Errors == 1 && await events.CountDeadRequestsAsync() == 1,
            "the re-executed request ran and died again");
    }
}
