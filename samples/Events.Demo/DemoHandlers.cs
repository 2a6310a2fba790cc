using Events.CSharp;
using Microsoft.Extensions.Logging;

namespace EventsDemo;

/// <summary>The demo's events and its three handlers, as in the Go framework's demo.</summary>
public static class DemoHandlers
{
    /// <summary>The application event the producer raises every second.</summary>
    public const string ApplicationEventName = "myApplicationEvent";

    /// <summary>The domain event the producer raises every second.</summary>
    public const string DomainEventName = "myDomainEvent";

    /// <summary>The kind of entity the domain event is about.</summary>
    public const string EntityName = "myEntity";

    /// <summary>Handles the application event.</summary>
    public const string ApplicationEventHandlerName = "myWonderfulApplicationEventHandler";

    /// <summary>Handles the domain event.</summary>
    public const string DomainEventHandlerName = "mySpectacularDomainEventHandler";

    /// <summary>Always fails on the application event.</summary>
    public const string FailingEventHandlerName = "myBodaciousFailingEventHandler";

    // begin-snippet: configure-handlers
    /// <summary>Maps the demo's events to its handlers.</summary>
    /// <param name="options">The options to add the handlers to.</param>
    /// <param name="logger">Where the handlers log.</param>
    public static void Configure(EventsOptions options, ILogger logger)
    {
        options.On(ApplicationEventName)
            .Handle(ApplicationEventHandlerName, (context, cancellationToken) =>
            {
                logger.LogInformation("handling application event {Event} {EventId}", context.EventName, context.EventId);
                return Task.CompletedTask;
            })
            // An ordinary failure: retried after its backoff, dead after MaxErrors. A small MaxErrors and a
            // short backoff show retries and dead requests within seconds.
            .Handle(
                FailingEventHandlerName,
                (context, cancellationToken) => Task.FromResult(HandlerOutcome.Failure("oh noes")),
                handler => handler
                    .MaxErrors(3)
                    .ExponentialBackoff(baseDelay: TimeSpan.FromSeconds(1), cap: TimeSpan.FromSeconds(2)));

        options.On(DomainEventName)
            .Handle(DomainEventHandlerName, (context, cancellationToken) =>
            {
                logger.LogInformation(
                    "handling domain event {Event} {EventId} about {Entity} {EntityId}",
                    context.EventName,
                    context.EventId,
                    context.Request.EntityName,
                    context.Request.EntityId);
                return Task.CompletedTask;
            });
    }
    // end-snippet
}
