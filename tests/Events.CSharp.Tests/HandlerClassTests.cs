using System.Collections.Concurrent;
using Events.CSharp;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Facade.Tests;

public class HandlerClassTests
{
    /// <summary>A scoped dependency: each attempt gets its own.</summary>
    public sealed class UnitOfWork : IDisposable
    {
        public Guid Id { get; } = Guid.NewGuid();

        public bool Disposed { get; private set; }

        public void Dispose() => Disposed = true;
    }

    /// <summary>Records which units of work the handler saw.</summary>
    public sealed class Journal
    {
        public ConcurrentQueue<(UnitOfWork Work, int Attempt)> Seen { get; } = new();
    }

    /// <summary>A handler class with constructor dependencies; it fails its first attempt.</summary>
    public sealed class ShipOrder(UnitOfWork work, Journal journal) : IEventHandler
    {
        public Task<HandlerOutcome> HandleAsync(HandlerContext context, CancellationToken cancellationToken)
        {
            journal.Seen.Enqueue((work, context.Attempt));
            return Task.FromResult(context.Attempt == 1 ? HandlerOutcome.Failure("warehouse busy") : HandlerOutcome.Success);
        }
    }

    [Fact]
    public async Task A_handler_class_is_made_in_a_scope_of_its_own_for_each_attempt()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddScoped<UnitOfWork>();
        builder.Services.AddSingleton<Journal>();
        builder.Services
            .AddEvents(options =>
            {
                options.Scheduler.Interval = TimeSpan.FromMilliseconds(25);
                options.On("order.placed").Handle<ShipOrder>("ship-order", handler => handler.QuickRetries(maxErrors: 3));
            })
            .UseInMemoryStore();
        using var host = builder.Build();
        await host.StartAsync();

        await host.Services.GetRequiredService<IEventPublisher>().RaiseApplicationEventAsync("order.placed", new { });

        var journal = host.Services.GetRequiredService<Journal>();
        await Eventually.HoldsAsync(() => journal.Seen.Count == 2, "the handler ran twice");
        var seen = journal.Seen.ToArray();
        Assert.Equal([1, 2], seen.Select(item => item.Attempt));
        Assert.NotEqual(seen[0].Work.Id, seen[1].Work.Id);
        Assert.All(seen, item => Assert.True(item.Work.Disposed, "the attempt's scope was disposed"));
        await host.StopAsync();
    }

    [Fact]
    public void A_handler_class_needs_dependency_injection()
    {
        var options = new EventsOptions().UseInMemoryStore();
        options.On("order.placed").Handle<ShipOrder>("ship-order");

        var error = Assert.Throws<InvalidOperationException>(() => EventsRuntime.Create(options));

        Assert.Contains("ship-order", error.Message);
        Assert.Contains("AddEvents", error.Message);
    }
}
