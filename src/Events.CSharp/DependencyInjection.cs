using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Events.CSharp;

/// <summary>Registers Events in a service collection: <c>services.AddEvents(options =&gt; ...).UseInMemoryStore()</c>.</summary>
public static class EventsServiceCollectionExtensions
{
    /// <summary>
    /// Registers Events configured by <paramref name="configure"/>: an <see cref="EventsRuntime"/> as
    /// <see cref="IEventPublisher"/> and <see cref="IEventsAdmin"/>, and a hosted service that starts it with
    /// the host and shuts it down gracefully when the host stops.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Adds handlers and sets options.</param>
    /// <returns>An expression to choose the store and more.</returns>
    /// <exception cref="InvalidOperationException">Events were registered already.</exception>
    public static EventsConfigurationExpression AddEvents(this IServiceCollection services, Action<EventsOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        return services.AddEvents((_, options) => configure(options));
    }

    /// <summary>
    /// Registers Events configured by <paramref name="configure"/>, which may read services (a handler's
    /// dependencies, say) from the container.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Adds handlers and sets options, given the container.</param>
    /// <returns>An expression to choose the store and more.</returns>
    /// <exception cref="InvalidOperationException">Events were registered already.</exception>
    public static EventsConfigurationExpression AddEvents(
        this IServiceCollection services,
        Action<IServiceProvider, EventsOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        return services.AddEvents(provider =>
        {
            var options = new EventsOptions();
            configure(provider, options);
            return options;
        });
    }

    /// <summary>
    /// Registers Events with the engine's settings read from a configuration section (see
    /// <see cref="EventsConfiguration.BindSettings(EventsOptions, IConfiguration)"/>), then configured by
    /// <paramref name="configure"/>. Settings that cannot be read are reported, with every other invalid
    /// setting, when the host starts.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="settings">The section, such as <c>builder.Configuration.GetSection("Events")</c>.</param>
    /// <param name="configure">Adds handlers and sets options, given the container.</param>
    /// <returns>An expression to choose the store and more.</returns>
    /// <exception cref="InvalidOperationException">Events were registered already.</exception>
    public static EventsConfigurationExpression AddEvents(
        this IServiceCollection services,
        IConfiguration settings,
        Action<IServiceProvider, EventsOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(configure);
        return services.AddEvents((provider, options) =>
        {
            options.BindSettings(settings);
            configure(provider, options);
        });
    }

    /// <summary>Registers Events with the engine's settings read from a configuration section, then configured by <paramref name="configure"/>.</summary>
    /// <param name="services">The service collection.</param>
    /// <param name="settings">The section, such as <c>builder.Configuration.GetSection("Events")</c>.</param>
    /// <param name="configure">Adds handlers and sets options.</param>
    /// <returns>An expression to choose the store and more.</returns>
    /// <exception cref="InvalidOperationException">Events were registered already.</exception>
    public static EventsConfigurationExpression AddEvents(
        this IServiceCollection services,
        IConfiguration settings,
        Action<EventsOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        return services.AddEvents(settings, (_, options) => configure(options));
    }

    /// <summary>Registers Events with options made already.</summary>
    /// <param name="services">The service collection.</param>
    /// <param name="options">The handlers and the settings.</param>
    /// <returns>An expression to choose the store and more.</returns>
    /// <exception cref="InvalidOperationException">Events were registered already.</exception>
    public static EventsConfigurationExpression AddEvents(this IServiceCollection services, EventsOptions options)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(options);
        return services.AddEvents(_ => options);
    }

    /// <summary>
    /// Registers Events with options made from the container when the runtime is first resolved. Every
    /// other <c>AddEvents</c> comes here.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="optionsSource">Makes the options.</param>
    /// <returns>An expression to choose the store and more.</returns>
    /// <exception cref="InvalidOperationException">Events were registered already.</exception>
    public static EventsConfigurationExpression AddEvents(
        this IServiceCollection services,
        Func<IServiceProvider, EventsOptions> optionsSource)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(optionsSource);
        if (services.Any(descriptor => descriptor.ServiceType == typeof(EventsRuntime)))
        {
            throw new InvalidOperationException(
                "Events are registered already: call AddEvents once, and ConfigureEvents to add handlers from elsewhere");
        }

        services.AddSingleton(provider =>
        {
            var options = optionsSource(provider)
                ?? throw new InvalidOperationException("the options source of AddEvents returned null");
            foreach (var configure in provider.GetServices<ConfigureEvents>())
            {
                configure.Apply(provider, options);
            }

            options.Store ??= provider.GetService<EventStore>();
            options.Services = provider;
            var logger = provider.GetService<ILoggerFactory>()?.CreateLogger(EventsRuntime.LoggerCategory)
                ?? NullLogger.Instance;
            return EventsRuntime.Create(
                options,
                logger,
                provider.GetService<IAsyncErrorReporter>() ?? provider.GetService<IErrorReporter>(),
                provider.GetService<TimeProvider>());
        });
        services.TryAddScoped<HandlerScope>();
        services.AddSingleton<IEventPublisher>(provider => provider.GetRequiredService<EventsRuntime>());
        services.AddSingleton<IEventsAdmin>(provider => provider.GetRequiredService<EventsRuntime>());
        services.AddHostedService<EventsHostedService>();
        return new EventsConfigurationExpression(services);
    }

    /// <summary>
    /// Adds to the options of <c>AddEvents</c> (handlers from another module, say); applied in order of
    /// registration, after the options are made and before the runtime is.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Adds handlers and sets options.</param>
    /// <returns>The service collection, to chain.</returns>
    public static IServiceCollection ConfigureEvents(this IServiceCollection services, Action<EventsOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        return services.ConfigureEvents((_, options) => configure(options));
    }

    /// <summary>Adds to the options of <c>AddEvents</c>, reading services from the container.</summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Adds handlers and sets options, given the container.</param>
    /// <returns>The service collection, to chain.</returns>
    public static IServiceCollection ConfigureEvents(
        this IServiceCollection services,
        Action<IServiceProvider, EventsOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        services.AddSingleton(new ConfigureEvents(configure));
        return services;
    }
}

/// <summary>Chooses the store and other parts of Events registered with <c>AddEvents</c>.</summary>
public sealed class EventsConfigurationExpression
{
    internal EventsConfigurationExpression(IServiceCollection services) => Services = services;

    /// <summary>The service collection Events are registered in.</summary>
    public IServiceCollection Services { get; }

    /// <summary>
    /// Keeps events and handler requests in memory, for tests and demos (one store per container, registered
    /// as <see cref="EventStore"/>). A store set on <see cref="EventsOptions.Store"/> wins over this.
    /// </summary>
    /// <returns>This expression, to chain.</returns>
    public EventsConfigurationExpression UseInMemoryStore() => UseStore(_ => EventStore.InMemory());

    /// <summary>Uses the store made by <paramref name="storeSource"/> from the container (registered as <see cref="EventStore"/>).</summary>
    /// <param name="storeSource">Makes the store.</param>
    /// <returns>This expression, to chain.</returns>
    public EventsConfigurationExpression UseStore(Func<IServiceProvider, EventStore> storeSource)
    {
        ArgumentNullException.ThrowIfNull(storeSource);
        Services.AddSingleton(storeSource);
        return this;
    }

    /// <summary>
    /// Registers <typeparamref name="TReporter"/> as the reporter the executor tells about thrown exceptions
    /// and dead requests (unless <see cref="ExecutorSettings.ErrorReporter"/> is set): an
    /// <see cref="IAsyncErrorReporter"/>, or an <see cref="IErrorReporter"/> (which is one).
    /// </summary>
    /// <typeparam name="TReporter">The reporter, made by the container as a singleton.</typeparam>
    /// <returns>This expression, to chain.</returns>
    public EventsConfigurationExpression AddErrorReporter<TReporter>()
        where TReporter : class, IAsyncErrorReporter
    {
        Services.AddSingleton<TReporter>();
        Services.AddSingleton<IAsyncErrorReporter>(provider => provider.GetRequiredService<TReporter>());
        return this;
    }
}

/// <summary>A registered addition to the options.</summary>
internal sealed class ConfigureEvents(Action<IServiceProvider, EventsOptions> configure)
{
    public void Apply(IServiceProvider provider, EventsOptions options) => configure(provider, options);
}

/// <summary>
/// Starts the runtime with the host and shuts it down when the host stops. When the store cannot be
/// prepared because its database cannot be reached (PostgreSQL down at start, say), the host starts
/// anyway: the runtime starts in the background once the store can be prepared, retrying with a backoff
/// from 1 s to 30 s and logging each failed try at warning. Any other failure fails the start.
/// </summary>
internal sealed class EventsHostedService(EventsRuntime runtime, ILoggerFactory? loggerFactory = null) : IHostedService
{
    private static readonly TimeSpan FirstRetry = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan LastRetry = TimeSpan.FromSeconds(30);

    private readonly ILogger logger =
        (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger(EventsRuntime.LoggerCategory);

    private readonly CancellationTokenSource stopping = new();
    private Task retrying = Task.CompletedTask;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        try
        {
            await runtime.Store.PrepareAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception error) when (IsUnreachable(error) && !cancellationToken.IsCancellationRequested)
        {
            Warn(error, FirstRetry);
            retrying = Task.Run(() => RetryAsync(stopping.Token), CancellationToken.None);
            return;
        }

        runtime.Start();
        logger.LogInformation("events started on the {Store} store", runtime.Store);
    }

    /// <summary>The host's stopping token is the shutdown deadline: when it fires, running handlers are canceled.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await stopping.CancelAsync().ConfigureAwait(false);
        await retrying.ConfigureAwait(false);
        if (runtime.Status is RuntimeStatus.Running or RuntimeStatus.Paused)
        {
            logger.LogInformation("events shutting down");
            await runtime.ShutdownAsync(cancellationToken).ConfigureAwait(false);
            logger.LogInformation("events shut down");
        }
    }

    private async Task RetryAsync(CancellationToken cancellationToken)
    {
        var delay = FirstRetry;
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
                await runtime.Store.PrepareAsync(cancellationToken).ConfigureAwait(false);
                runtime.Start();
                logger.LogInformation("events started on the {Store} store, which can be reached now", runtime.Store);
                return;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception error) when (IsUnreachable(error))
            {
                delay = delay * 2 < LastRetry ? delay * 2 : LastRetry;
                Warn(error, delay);
            }
            catch (Exception error)
            {
                logger.LogCritical(error, "events could not start on the {Store} store: {Message}", runtime.Store, error.Message);
                return;
            }
        }
    }

    private void Warn(Exception error, TimeSpan delay) =>
        logger.LogWarning(
            error,
            "events cannot start yet: the {Store} store cannot be reached ({Message}); the host runs on and events start once it can, next try in {Delay}",
            runtime.Store,
            error.Message,
            delay);

    /// <summary>Whether a failure says the database cannot be reached: a database, network or timeout error.</summary>
    private static bool IsUnreachable(Exception error) =>
        error switch
        {
            System.Data.Common.DbException or System.Net.Sockets.SocketException or TimeoutException => true,
            AggregateException aggregate => aggregate.InnerExceptions.Any(IsUnreachable),
            { InnerException: { } inner } => IsUnreachable(inner),
            _ => false,
        };
}
