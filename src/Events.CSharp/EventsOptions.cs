using Events.Core;
using Microsoft.FSharp.Core;
using ConfigurationFunctions = Events.Core.Configuration;
using CoreConfiguration = Events.Core.Configuration<Microsoft.FSharp.Core.FSharpFunc<Events.Core.HandlerContext, Microsoft.FSharp.Core.FSharpFunc<System.Threading.CancellationToken, System.Threading.Tasks.Task<Events.Core.HandlerResult>>>>;
using CoreEvent = Events.Core.Event;
using CoreExecutorOptions = Events.Core.ExecutorOptions;
using CoreHandler = Microsoft.FSharp.Core.FSharpFunc<Events.Core.HandlerContext, Microsoft.FSharp.Core.FSharpFunc<System.Threading.CancellationToken, System.Threading.Tasks.Task<Events.Core.HandlerResult>>>;
using CoreProcessorOptions = Events.Core.ProcessorOptions;
using CoreRequest = Events.Core.HandlerRequest;
using CoreSchedulerKind = Events.Core.SchedulerKind;
using CoreSchedulerOptions = Events.Core.SchedulerOptions;

namespace Events.CSharp;

/// <summary>
/// Everything an <see cref="EventsRuntime"/> needs: which handlers run for which events, the store, and
/// the settings of the processor, the executor and the scheduler. Given to
/// <see cref="EventsRuntime.Create(EventsOptions)"/>, or configured in
/// <c>services.AddEvents(options =&gt; ...)</c>.
/// </summary>
public sealed class EventsOptions
{
    private CoreConfiguration configuration = ConfigurationFunctions.empty<CoreHandler>();

    internal CoreConfiguration Configuration => configuration;

    /// <summary>The container that resolves handler classes (set by <c>AddEvents</c>).</summary>
    internal IServiceProvider? Services { get; set; }

    /// <summary>The handlers that need <see cref="Services"/> (classes, and lambdas given services), by description.</summary>
    internal List<string> ScopedHandlers { get; } = [];

    /// <summary>The handler classes, each made once in a scope when the runtime starts to check its dependencies.</summary>
    internal Dictionary<(string Event, string Handler), Type> HandlerClasses { get; } = [];

    /// <summary>Settings read from configuration that were refused, reported with the engine's when the runtime is made.</summary>
    internal List<string> SettingsErrors { get; } = [];

    /// <summary>The store events and handler requests are kept in; <see langword="null"/> until chosen.</summary>
    public EventStore? Store { get; set; }

    /// <summary>The clock of the engine and of the events the runtime makes; <see langword="null"/> for the system clock.</summary>
    public TimeProvider? TimeProvider { get; set; }

    /// <summary>The processor: claims unprocessed events and fans each out to one handler request per handler.</summary>
    public ProcessorSettings Processor { get; } = new();

    /// <summary>The executor: claims runnable handler requests and runs their handlers.</summary>
    public ExecutorSettings Executor { get; } = new();

    /// <summary>The scheduler: drives the processor and the executor.</summary>
    public SchedulerSettings Scheduler { get; } = new();

    /// <summary>The names of the events that have at least one handler, sorted.</summary>
    public IReadOnlyList<string> EventNames =>
        [.. ConfigurationFunctions.eventNames(configuration).Select(name => name.Value)];

    /// <summary>The names of the handlers of an event, in the order they run (priority, then name).</summary>
    /// <param name="eventName">The event's name.</param>
    /// <returns>The handlers' names; empty when the event has none.</returns>
    public IReadOnlyList<string> HandlerNames(string eventName)
    {
        ArgumentNullException.ThrowIfNull(eventName);
        var name = global::Events.Core.EventName.TryCreate(eventName);
        return name.IsOk
            ? [.. ConfigurationFunctions.handlersFor(name.ResultValue, configuration).Select(entry => entry.Name.Value)]
            : [];
    }

    /// <summary>Starts configuring the handlers of an event.</summary>
    /// <param name="eventName">The event's name, such as <c>"order.placed"</c>.</param>
    /// <returns>An expression to add the event's handlers with.</returns>
    /// <exception cref="ArgumentException">The name breaks the naming rules; the message says why.</exception>
    public EventHandlersExpression On(string eventName)
    {
        ArgumentNullException.ThrowIfNull(eventName);
        var name = global::Events.Core.EventName.TryCreate(eventName);
        return name.IsOk
            ? new EventHandlersExpression(this, eventName)
            : throw new ArgumentException(ConfigError.NewInvalidEventName(eventName, name.ErrorValue).Message, nameof(eventName));
    }

    /// <summary>
    /// Starts configuring the handlers of the event whose data is <typeparamref name="TData"/>, named by
    /// <see cref="EventNames.Of{TData}"/> (its <see cref="EventNameAttribute"/>, else its full type name).
    /// </summary>
    /// <typeparam name="TData">The event's data type.</typeparam>
    /// <returns>An expression to add the event's typed handlers with.</returns>
    /// <exception cref="ArgumentException">The derived name breaks the naming rules; the message says why.</exception>
    public EventHandlersExpression<TData> On<TData>() => new(On(global::Events.CSharp.EventNames.Of<TData>()));

    /// <summary>Uses a new in-memory store (events and requests live as long as the process).</summary>
    /// <returns>These options, to chain.</returns>
    public EventsOptions UseInMemoryStore()
    {
        Store = EventStore.InMemory();
        return this;
    }

    internal void Add(
        string eventName,
        string handlerName,
        Func<HandlerContext, CancellationToken, Task<HandlerOutcome>> handler,
        Action<HandlerOptions>? configure) =>
        Add(eventName, handlerName, HandlerAdapter.Adapt(this, handler), configure);

    internal void Add(string eventName, string handlerName, CoreHandler handler, Action<HandlerOptions>? configure)
    {
        var options = new HandlerOptions();
        configure?.Invoke(options);
        var added = ConfigurationFunctions.tryAdd(eventName, handlerName, handler, options.Options, configuration);
        configuration = added.IsOk
            ? added.ResultValue
            : throw new ArgumentException(added.ErrorValue.Messages(error => error.Message), nameof(handlerName));
    }
}

/// <summary>Adds handlers to one event: <c>options.On("order.placed").Handle("send-receipt", SendReceiptAsync)</c>.</summary>
public sealed class EventHandlersExpression
{
    private readonly EventsOptions options;

    internal EventHandlersExpression(EventsOptions options, string eventName)
    {
        this.options = options;
        EventName = eventName;
    }

    /// <summary>The event the handlers are for.</summary>
    public string EventName { get; }

    /// <summary>
    /// Adds a handler, or replaces the code of the handler of that name and updates its settings. The
    /// handler succeeds when its task completes, and fails when it throws (the exception goes to the error
    /// reporter).
    /// </summary>
    /// <param name="handlerName">The handler's name, unique under its event, such as <c>"send-receipt"</c>.</param>
    /// <param name="handler">The code: given the context and a token that fires on the handler's timeout or a hard shutdown.</param>
    /// <param name="configure">Sets MaxErrors, Priority, the backoff and the timeout; <see langword="null"/> for the defaults.</param>
    /// <returns>This expression, to add more handlers to the event.</returns>
    /// <exception cref="ArgumentException">A name or a setting is refused; the message lists every reason.</exception>
    public EventHandlersExpression Handle(
        string handlerName,
        Func<HandlerContext, CancellationToken, Task> handler,
        Action<HandlerOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(handlerName);
        ArgumentNullException.ThrowIfNull(handler);
        options.Add(EventName, handlerName, HandlerAdapter.Succeeding(handler), configure);
        return this;
    }

    /// <summary>
    /// Adds a handler that reports an ordinary failure as <see cref="HandlerOutcome.Failure(string)"/>, or
    /// replaces the code of the handler of that name and updates its settings. Throwing fails too.
    /// </summary>
    /// <param name="handlerName">The handler's name, unique under its event.</param>
    /// <param name="handler">The code: given the context and a token that fires on the handler's timeout or a hard shutdown.</param>
    /// <param name="configure">Sets MaxErrors, Priority, the backoff and the timeout; <see langword="null"/> for the defaults.</param>
    /// <returns>This expression, to add more handlers to the event.</returns>
    /// <exception cref="ArgumentException">A name or a setting is refused; the message lists every reason.</exception>
    public EventHandlersExpression Handle(
        string handlerName,
        Func<HandlerContext, CancellationToken, Task<HandlerOutcome>> handler,
        Action<HandlerOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(handlerName);
        ArgumentNullException.ThrowIfNull(handler);
        options.Add(EventName, handlerName, handler, configure);
        return this;
    }

    /// <summary>
    /// Adds a typed handler: given the event's data read once as <typeparamref name="TData"/> (never null;
    /// data that cannot be read so fails the attempt), the context and the token.
    /// </summary>
    /// <typeparam name="TData">The event's data type.</typeparam>
    /// <param name="handlerName">The handler's name, unique under its event.</param>
    /// <param name="handler">The code; it succeeds when its task completes, and fails when it throws.</param>
    /// <param name="configure">Sets MaxErrors, Priority, the backoff and the timeout; <see langword="null"/> for the defaults.</param>
    /// <returns>This expression, to add more handlers to the event.</returns>
    /// <exception cref="ArgumentException">A name or a setting is refused; the message lists every reason.</exception>
    public EventHandlersExpression Handle<TData>(
        string handlerName,
        Func<TData, HandlerContext, CancellationToken, Task> handler,
        Action<HandlerOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(handlerName);
        ArgumentNullException.ThrowIfNull(handler);
        options.Add(EventName, handlerName, HandlerAdapter.Typed(handler), configure);
        return this;
    }

    /// <summary>A typed handler that reports an ordinary failure as <see cref="HandlerOutcome.Failure(string)"/>.</summary>
    /// <typeparam name="TData">The event's data type.</typeparam>
    /// <param name="handlerName">The handler's name, unique under its event.</param>
    /// <param name="handler">The code, given the data read once, the context and the token.</param>
    /// <param name="configure">Sets MaxErrors, Priority, the backoff and the timeout; <see langword="null"/> for the defaults.</param>
    /// <returns>This expression, to add more handlers to the event.</returns>
    /// <exception cref="ArgumentException">A name or a setting is refused; the message lists every reason.</exception>
    public EventHandlersExpression Handle<TData>(
        string handlerName,
        Func<TData, HandlerContext, CancellationToken, Task<HandlerOutcome>> handler,
        Action<HandlerOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(handlerName);
        ArgumentNullException.ThrowIfNull(handler);
        options.Add(EventName, handlerName, HandlerAdapter.Typed(handler), configure);
        return this;
    }

    /// <summary>
    /// Adds a typed handler given a service from the attempt's own scope (a Marten <c>IDocumentSession</c>
    /// there is the one that commits with the outcome). Needs dependency injection (<c>AddEvents</c>).
    /// </summary>
    /// <typeparam name="TData">The event's data type.</typeparam>
    /// <typeparam name="TService">The service, resolved in the attempt's scope.</typeparam>
    /// <param name="handlerName">The handler's name, unique under its event.</param>
    /// <param name="handler">The code, given the data, the service, the context and the token.</param>
    /// <param name="configure">Sets MaxErrors, Priority, the backoff and the timeout; <see langword="null"/> for the defaults.</param>
    /// <returns>This expression, to add more handlers to the event.</returns>
    /// <exception cref="ArgumentException">A name or a setting is refused; the message lists every reason.</exception>
    public EventHandlersExpression Handle<TData, TService>(
        string handlerName,
        Func<TData, TService, HandlerContext, CancellationToken, Task> handler,
        Action<HandlerOptions>? configure = null)
        where TService : notnull
    {
        ArgumentNullException.ThrowIfNull(handlerName);
        ArgumentNullException.ThrowIfNull(handler);
        options.Add(EventName, handlerName, HandlerAdapter.WithService(handler), configure);
        options.ScopedHandlers.Add($"{handlerName} (given {typeof(TService)})");
        return this;
    }

    /// <summary>A typed handler given a service from the attempt's scope, reporting an ordinary failure as an outcome.</summary>
    /// <typeparam name="TData">The event's data type.</typeparam>
    /// <typeparam name="TService">The service, resolved in the attempt's scope.</typeparam>
    /// <param name="handlerName">The handler's name, unique under its event.</param>
    /// <param name="handler">The code, given the data, the service, the context and the token.</param>
    /// <param name="configure">Sets MaxErrors, Priority, the backoff and the timeout; <see langword="null"/> for the defaults.</param>
    /// <returns>This expression, to add more handlers to the event.</returns>
    /// <exception cref="ArgumentException">A name or a setting is refused; the message lists every reason.</exception>
    public EventHandlersExpression Handle<TData, TService>(
        string handlerName,
        Func<TData, TService, HandlerContext, CancellationToken, Task<HandlerOutcome>> handler,
        Action<HandlerOptions>? configure = null)
        where TService : notnull
    {
        ArgumentNullException.ThrowIfNull(handlerName);
        ArgumentNullException.ThrowIfNull(handler);
        options.Add(EventName, handlerName, HandlerAdapter.WithService(handler), configure);
        options.ScopedHandlers.Add($"{handlerName} (given {typeof(TService)})");
        return this;
    }

    /// <summary>
    /// Adds a handler class (an <see cref="IEventHandler{TData}"/> or an <see cref="IEventHandler"/>), or
    /// replaces the code of the handler of that name and updates its settings. For each attempt the
    /// container opens a scope and makes <typeparamref name="THandler"/> in it (registered, or made with its
    /// constructor's dependencies from the container); when the runtime starts, each class is made once in
    /// a scope of its own, so a missing dependency fails the start. Needs dependency injection
    /// (<c>AddEvents</c>); options with handler classes belong to one container.
    /// </summary>
    /// <typeparam name="THandler">The handler class.</typeparam>
    /// <param name="handlerName">The handler's name, unique under its event.</param>
    /// <param name="configure">Sets MaxErrors, Priority, the backoff and the timeout; <see langword="null"/> for the defaults.</param>
    /// <returns>This expression, to add more handlers to the event.</returns>
    /// <exception cref="ArgumentException">
    /// A name or a setting is refused, or the class implements no handler interface or several; the message
    /// says why.
    /// </exception>
    public EventHandlersExpression Handle<THandler>(string handlerName, Action<HandlerOptions>? configure = null)
        where THandler : class
    {
        ArgumentNullException.ThrowIfNull(handlerName);
        options.Add(EventName, handlerName, HandlerAdapter.Class(typeof(THandler)), configure);
        options.ScopedHandlers.Add($"{handlerName} ({typeof(THandler)})");
        options.HandlerClasses[(EventName, handlerName)] = typeof(THandler);
        return this;
    }
}

/// <summary>
/// Adds typed handlers to the event of one data type: <c>options.On&lt;OrderPlaced&gt;().Handle("ship", (order, context, ct) =&gt; ...)</c>.
/// </summary>
/// <typeparam name="TData">The event's data type.</typeparam>
public sealed class EventHandlersExpression<TData>
{
    private readonly EventHandlersExpression untyped;

    internal EventHandlersExpression(EventHandlersExpression untyped) => this.untyped = untyped;

    /// <summary>The event the handlers are for.</summary>
    public string EventName => untyped.EventName;

    /// <summary>Adds a typed handler: given the data read once, the context and the token.</summary>
    /// <param name="handlerName">The handler's name, unique under its event.</param>
    /// <param name="handler">The code; it succeeds when its task completes, and fails when it throws.</param>
    /// <param name="configure">Sets MaxErrors, Priority, the backoff and the timeout; <see langword="null"/> for the defaults.</param>
    /// <returns>This expression, to add more handlers to the event.</returns>
    /// <exception cref="ArgumentException">A name or a setting is refused; the message lists every reason.</exception>
    public EventHandlersExpression<TData> Handle(
        string handlerName,
        Func<TData, HandlerContext, CancellationToken, Task> handler,
        Action<HandlerOptions>? configure = null)
    {
        untyped.Handle(handlerName, handler, configure);
        return this;
    }

    /// <summary>Adds a typed handler that reports an ordinary failure as <see cref="HandlerOutcome.Failure(string)"/>.</summary>
    /// <param name="handlerName">The handler's name, unique under its event.</param>
    /// <param name="handler">The code, given the data read once, the context and the token.</param>
    /// <param name="configure">Sets MaxErrors, Priority, the backoff and the timeout; <see langword="null"/> for the defaults.</param>
    /// <returns>This expression, to add more handlers to the event.</returns>
    /// <exception cref="ArgumentException">A name or a setting is refused; the message lists every reason.</exception>
    public EventHandlersExpression<TData> Handle(
        string handlerName,
        Func<TData, HandlerContext, CancellationToken, Task<HandlerOutcome>> handler,
        Action<HandlerOptions>? configure = null)
    {
        untyped.Handle(handlerName, handler, configure);
        return this;
    }

    /// <summary>Adds a typed handler given a service from the attempt's own scope.</summary>
    /// <typeparam name="TService">The service, resolved in the attempt's scope.</typeparam>
    /// <param name="handlerName">The handler's name, unique under its event.</param>
    /// <param name="handler">The code, given the data, the service, the context and the token.</param>
    /// <param name="configure">Sets MaxErrors, Priority, the backoff and the timeout; <see langword="null"/> for the defaults.</param>
    /// <returns>This expression, to add more handlers to the event.</returns>
    /// <exception cref="ArgumentException">A name or a setting is refused; the message lists every reason.</exception>
    public EventHandlersExpression<TData> Handle<TService>(
        string handlerName,
        Func<TData, TService, HandlerContext, CancellationToken, Task> handler,
        Action<HandlerOptions>? configure = null)
        where TService : notnull
    {
        untyped.Handle(handlerName, handler, configure);
        return this;
    }

    /// <summary>Adds a typed handler given a service from the attempt's scope, reporting an ordinary failure as an outcome.</summary>
    /// <typeparam name="TService">The service, resolved in the attempt's scope.</typeparam>
    /// <param name="handlerName">The handler's name, unique under its event.</param>
    /// <param name="handler">The code, given the data, the service, the context and the token.</param>
    /// <param name="configure">Sets MaxErrors, Priority, the backoff and the timeout; <see langword="null"/> for the defaults.</param>
    /// <returns>This expression, to add more handlers to the event.</returns>
    /// <exception cref="ArgumentException">A name or a setting is refused; the message lists every reason.</exception>
    public EventHandlersExpression<TData> Handle<TService>(
        string handlerName,
        Func<TData, TService, HandlerContext, CancellationToken, Task<HandlerOutcome>> handler,
        Action<HandlerOptions>? configure = null)
        where TService : notnull
    {
        untyped.Handle(handlerName, handler, configure);
        return this;
    }

    /// <summary>Adds a handler class, made in the attempt's scope (see <see cref="EventHandlersExpression.Handle{THandler}(string, Action{HandlerOptions})"/>).</summary>
    /// <typeparam name="THandler">The handler class, an <see cref="IEventHandler{TData}"/>.</typeparam>
    /// <param name="handlerName">The handler's name, unique under its event.</param>
    /// <param name="configure">Sets MaxErrors, Priority, the backoff and the timeout; <see langword="null"/> for the defaults.</param>
    /// <returns>This expression, to add more handlers to the event.</returns>
    /// <exception cref="ArgumentException">A name or a setting is refused; the message lists every reason.</exception>
    public EventHandlersExpression<TData> Handle<THandler>(string handlerName, Action<HandlerOptions>? configure = null)
        where THandler : class, IEventHandler<TData>
    {
        untyped.Handle<THandler>(handlerName, configure);
        return this;
    }
}

/// <summary>
/// A handler as a class, made by the container for each attempt (in a scope of its own), so it can take
/// its dependencies in its constructor. Added with <see cref="EventHandlersExpression.Handle{THandler}(string, Action{HandlerOptions})"/>.
/// Prefer <see cref="IEventHandler{TData}"/>, which is given the data read once.
/// </summary>
public interface IEventHandler
{
    /// <summary>Handles one request. Throwing fails the attempt, as <see cref="HandlerOutcome.Failure(string)"/> does.</summary>
    /// <param name="context">The request and its event's data.</param>
    /// <param name="cancellationToken">Fires on the handler's timeout and when a shutdown's deadline passes.</param>
    /// <returns>Whether the handler did its work.</returns>
    Task<HandlerOutcome> HandleAsync(HandlerContext context, CancellationToken cancellationToken);
}

/// <summary>
/// A typed handler as a class, made by the container for each attempt in a scope of its own (in which a
/// store's session, such as Marten's <c>IDocumentSession</c>, is the one that commits with the outcome).
/// Added with <see cref="EventHandlersExpression.Handle{THandler}(string, Action{HandlerOptions})"/>.
/// </summary>
/// <typeparam name="TData">The event's data type.</typeparam>
public interface IEventHandler<TData>
{
    /// <summary>Handles one request. Throwing fails the attempt, as <see cref="HandlerOutcome.Failure(string)"/> does.</summary>
    /// <param name="data">The event's data, read once (never null).</param>
    /// <param name="context">The request, the attempt and the attempt's services.</param>
    /// <param name="cancellationToken">Fires on the handler's timeout and when a shutdown's deadline passes.</param>
    /// <returns>Whether the handler did its work.</returns>
    Task<HandlerOutcome> HandleAsync(TData data, HandlerContext context, CancellationToken cancellationToken);
}

/// <summary>Settings of the processor, which fans events out to handler requests.</summary>
public sealed class ProcessorSettings
{
    internal ProcessorSettings()
    {
    }

    /// <summary>Events fanned out at once (at least 1; default 1).</summary>
    public int Workers { get; set; } = CoreProcessorOptions.Default.Workers;

    /// <summary>Events claimed per round (at least 1; default 50).</summary>
    public int Limit { get; set; } = CoreProcessorOptions.Default.Limit;

    /// <summary>How long a round holds its claimed events before another processor may take them (positive; default 1 minute).</summary>
    public TimeSpan ClaimLease { get; set; } = CoreProcessorOptions.Default.ClaimLease;

    /// <summary>
    /// Runs before each event is fanned out: may change the event (<see cref="Event.WithData(object)"/>) or
    /// refuse it, leaving it for a later round. <see langword="null"/> for none.
    /// </summary>
    public Func<Event, CancellationToken, Task<HookOutcome<Event>>>? BeforeProcess { get; set; }

    internal CoreProcessorOptions ToCore() =>
        new(
            Workers,
            Limit,
            ClaimLease,
            BeforeProcess is { } hook ? FSharpOption<FSharpFunc<CoreEvent, FSharpFunc<CancellationToken, Task<HookResult<CoreEvent>>>>>.Some(HookAdapter.Adapt(hook, e => new Event(e), e => e.Core)) : null);
}

/// <summary>Settings of the executor, which runs handlers.</summary>
public sealed class ExecutorSettings
{
    internal ExecutorSettings()
    {
    }

    /// <summary>
    /// The executor's slots: handlers run at once (at least 1; default 16). It claims only as many requests
    /// as it has free slots and starts each at once, so a slow handler holds its own slot and no other.
    /// </summary>
    public int Workers { get; set; } = CoreExecutorOptions.Default.Workers;

    /// <summary>Requests claimed at most per claim (at least 1; default 50).</summary>
    public int Limit { get; set; } = CoreExecutorOptions.Default.Limit;

    /// <summary>
    /// How long a claimed request is held before another executor may recover it, counting one failed
    /// attempt (positive; default 5 minutes). While a handler runs, its lease is renewed every Lease/3,
    /// so a handler may run longer than the lease; a claimed request starts only while half of it (or its
    /// handler's timeout) is left.
    /// </summary>
    public TimeSpan Lease { get; set; } = CoreExecutorOptions.Default.Lease;

    /// <summary>
    /// Runs before each handler: may refuse to run it, giving the request back for a later claim with no
    /// error counted. <see langword="null"/> for none.
    /// </summary>
    public Func<HandlerRequest, CancellationToken, Task<HookOutcome<HandlerRequest>>>? BeforeExecute { get; set; }

    /// <summary>
    /// Told about every thrown exception and every failure that makes a request dead. <see langword="null"/>
    /// for none (with dependency injection: the <see cref="IAsyncErrorReporter"/> or <see cref="IErrorReporter"/>
    /// registered in the container, if any). An <see cref="IErrorReporter"/> is an <see cref="IAsyncErrorReporter"/>.
    /// </summary>
    public IAsyncErrorReporter? ErrorReporter { get; set; }

    internal CoreExecutorOptions ToCore(IAsyncErrorReporter? reporter) =>
        new(
            Workers,
            Limit,
            Lease,
            BeforeExecute is { } hook ? FSharpOption<FSharpFunc<CoreRequest, FSharpFunc<CancellationToken, Task<HookResult<CoreRequest>>>>>.Some(HookAdapter.Adapt(hook, r => new HandlerRequest(r), r => r.Core)) : null,
            reporter is null ? null : FSharpOption<global::Events.Core.IErrorReporter>.Some(new ErrorReporterAdapter(reporter)));
}

/// <summary>How a scheduler drives the processor and the executor.</summary>
public enum SchedulerMode
{
    /// <summary>One loop that alternates processing and claiming for the executor's free slots; it never waits for running handlers.</summary>
    Cooperative,

    /// <summary>Two loops on the same interval, one processing, one claiming for the executor.</summary>
    Concurrent,
}

/// <summary>Settings of the scheduler, which drives the processor and the executor.</summary>
public sealed class SchedulerSettings
{
    internal SchedulerSettings()
    {
    }

    /// <summary>Cooperative (default) or concurrent.</summary>
    public SchedulerMode Mode { get; set; } =
        CoreSchedulerOptions.Default.Kind.IsConcurrent ? SchedulerMode.Concurrent : SchedulerMode.Cooperative;

    /// <summary>
    /// The polling interval: the longest a loop waits when the store signals no new work (positive; default
    /// 1 second). New events and new requests wake the loops at once; retries after a backoff wait for a tick.
    /// </summary>
    public TimeSpan Interval { get; set; } = CoreSchedulerOptions.Default.Interval;

    /// <summary>Prefixes every metric, span attribute and log key with <c>"{prefix}."</c> (default none).</summary>
    public string TelemetryPrefix
    {
        get;
        set
        {
            ArgumentNullException.ThrowIfNull(value);
            field = value;
        }
    } = CoreSchedulerOptions.Default.TelemetryPrefix;

    /// <summary>
    /// After the shutdown deadline cancels running handlers, how long shutdown waits for them to return
    /// (default 5 seconds).
    /// </summary>
    public TimeSpan ShutdownGrace { get; set; } = CoreSchedulerOptions.Default.ShutdownGrace;

    internal CoreSchedulerOptions ToCore() =>
        new(
            Mode == SchedulerMode.Concurrent ? CoreSchedulerKind.Concurrent : CoreSchedulerKind.Cooperative,
            Interval,
            TelemetryPrefix,
            ShutdownGrace);
}
