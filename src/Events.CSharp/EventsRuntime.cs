using System.Runtime.CompilerServices;
using Events.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using CoreEvent = Events.Core.Event;
using CoreEventFactory = Events.Core.EventFactory;
using CoreQuery = Events.Core.DeadRequestQuery;
using CoreRequest = Events.Core.HandlerRequest;
using CoreRequestModule = Events.Core.HandlerRequestModule;

namespace Events.CSharp;

/// <summary>Where a runtime's scheduler is in its life.</summary>
public enum RuntimeStatus
{
    /// <summary>Made, not started.</summary>
    NotStarted,

    /// <summary>Processing events and executing handler requests.</summary>
    Running,

    /// <summary>Started, but skipping its rounds until resumed.</summary>
    Paused,

    /// <summary>Shut down for good.</summary>
    Shutdown,
}

/// <summary>
/// Events without dependency injection: a store, the handlers, and the scheduler that drives the
/// processor and the executor, with the publisher and the administration of dead requests. With
/// dependency injection, <c>services.AddEvents(...)</c> makes one and runs it as a hosted service.
/// </summary>
/// <example>
/// <code>
/// var options = new EventsOptions().UseInMemoryStore();
/// options.On("user.created").Handle("send-welcome-email", (context, ct) =&gt; SendAsync(context.GetData&lt;User&gt;(), ct));
/// await using var events = EventsRuntime.Create(options);
/// events.Start();
/// await events.RaiseApplicationEventAsync("user.created", new User("ada@example.org"));
/// </code>
/// </example>
public sealed class EventsRuntime : IEventPublisher, IEventsAdmin, IAsyncDisposable, IDisposable
{
    private readonly IEventStore store;
    private readonly IAdminStore admin;
    private readonly AdminGauges gauges;
    private readonly Scheduler scheduler;
    private readonly TimeProvider time;
    private readonly CoreEventFactory factory;
    private readonly IReadOnlyDictionary<(string Event, string Handler), Type> handlerClasses;
    private readonly IServiceProvider? services;

    private EventsRuntime(EventStore store, Scheduler scheduler, TimeProvider time, EventsOptions options)
    {
        Store = store;
        handlerClasses = new Dictionary<(string Event, string Handler), Type>(options.HandlerClasses);
        services = options.Services;
        this.store = store.Port;
        admin = store.Admin;
        this.scheduler = scheduler;
        this.time = time;
        // Read only when a metrics reader collects them (requests.backing_off.count, requests.count).
        gauges = new AdminGauges(options.Scheduler.TelemetryPrefix, admin, FuncConvert.FromFunc(() => time.GetUtcNow()));
        factory = new CoreEventFactory(time);
    }

    /// <summary>Makes a runtime that logs nowhere.</summary>
    /// <param name="options">The store, the handlers and the settings; <see cref="EventsOptions.Store"/> must be set.</param>
    /// <returns>The runtime, not started.</returns>
    /// <exception cref="ArgumentException">A setting is refused; the message lists every reason.</exception>
    /// <exception cref="InvalidOperationException">No store was chosen, or a handler class needs dependency injection.</exception>
    public static EventsRuntime Create(EventsOptions options) => Create(options, NullLoggerFactory.Instance);

    /// <summary>Makes a runtime that logs through the factory given (category <c>"Events"</c>).</summary>
    /// <param name="options">The store, the handlers and the settings; <see cref="EventsOptions.Store"/> must be set.</param>
    /// <param name="loggerFactory">Makes the engine's logger.</param>
    /// <returns>The runtime, not started.</returns>
    /// <exception cref="ArgumentException">A setting is refused; the message lists every reason.</exception>
    /// <exception cref="InvalidOperationException">No store was chosen, or a handler class needs dependency injection.</exception>
    public static EventsRuntime Create(EventsOptions options, ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        return Create(options, loggerFactory.CreateLogger(LoggerCategory), null, null);
    }

    /// <summary>The category of the engine's log messages.</summary>
    public static string LoggerCategory => "Events";

    internal static EventsRuntime Create(
        EventsOptions options,
        ILogger logger,
        IAsyncErrorReporter? fallbackReporter,
        TimeProvider? fallbackTime)
    {
        var store = options.Store
            ?? throw new InvalidOperationException(
                "no store was chosen: set EventsOptions.Store, call EventsOptions.UseInMemoryStore(), or with dependency injection UseInMemoryStore() or (with Events.CSharp.Marten) UseMartenStore()");
        if (options.ScopedHandlers.Count > 0 && options.Services is null)
        {
            throw new InvalidOperationException(
                $"the handler {options.ScopedHandlers[0]} is made or given services by dependency injection: register Events with AddEvents");
        }

        var time = options.TimeProvider ?? fallbackTime ?? TimeProvider.System;
        Scheduler scheduler;
        try
        {
            scheduler = new Scheduler(
                store.Port,
                options.Configuration,
                options.Processor.ToCore(),
                options.Executor.ToCore(options.Executor.ErrorReporter ?? fallbackReporter),
                options.Scheduler.ToCore(),
                logger,
                time);
        }
        catch (ArgumentException error) when (options.SettingsErrors.Count > 0)
        {
            throw new ArgumentException(
                string.Join("; ", options.SettingsErrors.Append(error.Message)),
                nameof(options),
                error);
        }

        if (options.SettingsErrors.Count > 0)
        {
            ((IDisposable)scheduler).Dispose();
            throw new ArgumentException(string.Join("; ", options.SettingsErrors), nameof(options));
        }

        return new EventsRuntime(store, scheduler, time, options);
    }

    /// <summary>The store the runtime works on.</summary>
    public EventStore Store { get; }

    /// <summary>Where the scheduler is in its life.</summary>
    public RuntimeStatus Status => scheduler.Status.Tag switch
    {
        SchedulerStatus.Tags.NotStarted => RuntimeStatus.NotStarted,
        SchedulerStatus.Tags.Running => RuntimeStatus.Running,
        SchedulerStatus.Tags.Paused => RuntimeStatus.Paused,
        _ => RuntimeStatus.Shutdown,
    };

    /// <summary>
    /// Starts processing events and executing handler requests in the background. First makes each
    /// handler class once, in a scope of its own, so that a dependency the container cannot give fails the
    /// start (naming every such handler) instead of every attempt.
    /// </summary>
    /// <exception cref="InvalidOperationException">
    /// The runtime was started before, or a handler class cannot be made; the message names each.
    /// </exception>
    public void Start()
    {
        if (Status == RuntimeStatus.NotStarted)
        {
            CheckHandlerClasses();
        }

        scheduler.Start();
    }

    private void CheckHandlerClasses()
    {
        if (handlerClasses.Count == 0 || services is null)
        {
            return;
        }

        var failures = new List<string>();
        var scopes = services.GetRequiredService<IServiceScopeFactory>();
        foreach (var ((eventName, handlerName), type) in handlerClasses.OrderBy(entry => entry.Key))
        {
            var scope = scopes.CreateAsyncScope();
            try
            {
                HandlerClasses.Make(type, scope.ServiceProvider);
            }
            catch (Exception error) when (error is InvalidOperationException or ArgumentException or InvalidCastException)
            {
                failures.Add($"the handler {handlerName} of {eventName} ({type}) cannot be made: {error.Message}");
            }
            finally
            {
                scope.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
        }

        if (failures.Count > 0)
        {
            throw new InvalidOperationException(string.Join("; ", failures));
        }
    }

    /// <summary>Skips rounds until resumed (ignored unless running). Handlers already running finish.</summary>
    public void Pause() => scheduler.Pause();

    /// <summary>Runs rounds again after a pause (ignored unless paused).</summary>
    public void Resume() => scheduler.Resume();

    /// <summary>
    /// Stops claiming work and lets running handlers finish until <paramref name="deadline"/> fires; then
    /// cancels their tokens and waits up to <see cref="SchedulerSettings.ShutdownGrace"/> for them. Claimed
    /// work not started is given back to the store.
    /// </summary>
    /// <param name="deadline">Fires when running handlers must be canceled.</param>
    /// <returns>Completes when the loops have stopped.</returns>
    /// <exception cref="InvalidOperationException">The runtime is not running or paused.</exception>
    public Task ShutdownAsync(CancellationToken deadline) => scheduler.ShutdownAsync(deadline);

    /// <summary>
    /// Stops claiming work and lets running handlers finish for up to <paramref name="timeout"/>; then
    /// cancels their tokens and waits up to <see cref="SchedulerSettings.ShutdownGrace"/> for them.
    /// </summary>
    /// <param name="timeout">How long running handlers may go on before they are canceled.</param>
    /// <returns>Completes when the loops have stopped.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The timeout is negative (other than <see cref="Timeout.InfiniteTimeSpan"/>).</exception>
    /// <exception cref="InvalidOperationException">The runtime is not running or paused.</exception>
    public async Task ShutdownAsync(TimeSpan timeout)
    {
        using var deadline = new CancellationTokenSource(timeout);
        await scheduler.ShutdownAsync(deadline.Token).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public async Task<Event> RaiseAsync(Event @event, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(@event);
        var stored = await store.AppendAsync(ListModule.Singleton(@event.Core), cancellationToken).ConfigureAwait(false);
        return Event.Returned(@event.Core, stored.Head);
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<Event>> RaiseAsync(
        IEnumerable<Event> events,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(events);
        var batch = events.Select(e => (e ?? throw new ArgumentException("an event is null", nameof(events))).Core).ToFSharpList();
        if (batch.IsEmpty)
        {
            return [];
        }

        var stored = await store.AppendAsync(batch, cancellationToken).ConfigureAwait(false);
        return [.. batch.Zip(stored, Event.Returned)];
    }

    /// <inheritdoc/>
    public Task<Event> RaiseApplicationEventAsync(string name, object data, CancellationToken cancellationToken = default) =>
        RaiseAsync(Event.Application(name, data, time), cancellationToken);

    /// <inheritdoc/>
    public Task<Event> RaiseDomainEventAsync(
        string name,
        string entityId,
        string entityName,
        object data,
        CancellationToken cancellationToken = default) =>
        RaiseAsync(Event.Domain(name, entityId, entityName, data, time), cancellationToken);

    /// <inheritdoc/>
    public async Task<EventsStatistics> GetStatisticsAsync(CancellationToken cancellationToken = default)
    {
        var now = time.GetUtcNow();
        var stats = await store.StatsAsync(now, cancellationToken).ConfigureAwait(false);
        return new EventsStatistics(now, stats);
    }

    /// <inheritdoc/>
    public async Task<long> CountDeadRequestsAsync(
        DeadRequestQuery? query = null,
        CancellationToken cancellationToken = default)
    {
        var filter = (query ?? new DeadRequestQuery()) with { Limit = 0, Offset = 0 };
        var page = await admin.DeadRequestsAsync(ToCore(filter), cancellationToken).ConfigureAwait(false);
        return page.Total;
    }

    /// <inheritdoc/>
    public async Task<DeadRequestPage> GetDeadRequestsAsync(
        DeadRequestQuery? query = null,
        CancellationToken cancellationToken = default)
    {
        var page = await admin.DeadRequestsAsync(ToCore(query ?? new DeadRequestQuery()), cancellationToken)
            .ConfigureAwait(false);
        return new DeadRequestPage(page.Total, [.. page.Requests.Select(r => new HandlerRequest(r))]);
    }

    /// <inheritdoc/>
    public async Task<DeadRequestNames> GetDeadRequestNamesAsync(CancellationToken cancellationToken = default)
    {
        var names = await admin.DeadRequestNamesAsync(cancellationToken).ConfigureAwait(false);
        return new DeadRequestNames(
            [.. names.Item1.Select(name => name.Value)],
            [.. names.Item2.Select(name => name.Value)]);
    }

    /// <inheritdoc/>
    public Task<HandlerRequest> ReExecuteAsync(Guid requestId, CancellationToken cancellationToken = default) =>
        UpdateAsync(global::Events.Core.Administration.reExecuteAsync(admin, requestId, cancellationToken));

    /// <inheritdoc/>
    public Task<HandlerRequest> CancelAsync(Guid requestId, CancellationToken cancellationToken = default) =>
        UpdateAsync(global::Events.Core.Administration.cancelAsync(admin, requestId, time.GetUtcNow(), cancellationToken));

    /// <inheritdoc/>
    public async Task<Event?> FindEventAsync(Guid eventId, CancellationToken cancellationToken = default)
    {
        var found = await store.FindEventAsync(eventId, cancellationToken).ConfigureAwait(false);
        return found.ToNullableReference() is { } e ? new Event(e) : null;
    }

    /// <inheritdoc/>
    public async Task<HandlerRequest?> FindRequestAsync(Guid requestId, CancellationToken cancellationToken = default)
    {
        var found = await store.FindRequestAsync(requestId, cancellationToken).ConfigureAwait(false);
        return found.ToNullableReference() is { } r ? new HandlerRequest(r) : null;
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<HandlerRequest> GetRequestsAsync(
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (var request in store.RequestsAsync(cancellationToken).WithCancellation(cancellationToken).ConfigureAwait(false))
        {
            yield return new HandlerRequest(request);
        }
    }

    /// <inheritdoc/>
    public async Task<RequestPage> QueryRequestsAsync(
        RequestFilter? filter = null,
        string? after = null,
        int limit = 100,
        CancellationToken cancellationToken = default)
    {
        var page = await Administration.queryAsync(
                admin, filter.ToCore(), time.GetUtcNow(), OperationsInterop.ToCursor(after, nameof(after)), limit, cancellationToken)
            .ConfigureAwait(false);
        var next = page.Next.ToNullableReference() is { } cursor ? RequestCursorModule.format(cursor) : null;
        return new RequestPage([.. page.Requests.Select(r => new HandlerRequest(r))], next);
    }

    /// <inheritdoc/>
    public Task<long> CountRequestsAsync(RequestFilter? filter = null, CancellationToken cancellationToken = default) =>
        admin.CountRequestsAsync(filter.ToCore(), time.GetUtcNow(), cancellationToken);

    /// <inheritdoc/>
    public async Task<IReadOnlyList<HandlerStatusCount>> GetCountsByHandlerAsync(CancellationToken cancellationToken = default)
    {
        var counts = await admin.CountByHandlerAsync(time.GetUtcNow(), true, cancellationToken).ConfigureAwait(false);
        return [.. counts.Select(c => new HandlerStatusCount(c.HandlerName.Value, c.Status.ToFacade(), c.Count))];
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<HandlerOverview>> GetHandlerOverviewAsync(
        TimeSpan? window = null,
        CancellationToken cancellationToken = default)
    {
        var span = window ?? TimeSpan.FromHours(1);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(span, TimeSpan.Zero, nameof(window));
        var now = time.GetUtcNow();
        var rows = await admin.OverviewAsync(now, now - span, cancellationToken).ConfigureAwait(false);
        return [.. rows.Select(row => new HandlerOverview(row, now, span))];
    }

    /// <inheritdoc/>
    public async Task<EventDetails?> GetEventDetailsAsync(Guid eventId, CancellationToken cancellationToken = default)
    {
        var found = await Administration.eventDetailsAsync(admin, eventId, time.GetUtcNow(), cancellationToken)
            .ConfigureAwait(false);
        return found.ToNullableReference() is { } details
            ? new EventDetails(
                new Event(details.Event),
                [.. details.Requests.Select(pair => new RequestWithStatus(new HandlerRequest(pair.Item1), pair.Item2.ToFacade()))],
                details.FullyHandled)
            : null;
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<TriageGroup>> TriageAsync(
        RequestFilter? filter = null,
        CancellationToken cancellationToken = default)
    {
        var groups = await Administration.triageAsync(admin, filter.ToCore(), time.GetUtcNow(), cancellationToken)
            .ConfigureAwait(false);
        return [.. groups.Select(group => new TriageGroup(group))];
    }

    /// <inheritdoc/>
    public async Task<BulkResult> BulkAsync(
        BulkCommand command,
        BulkRequest request,
        IProgress<BulkResult>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var report = FuncConvert.FromAction<BulkProgress>(p => progress?.Report(new BulkResult(p)));
        var result = await Administration.bulkAsync(
                admin, request.ToSelection(), command.ToCore(), time.GetUtcNow(), request.ToOptions(), report, cancellationToken)
            .ConfigureAwait(false);
        return new BulkResult(result);
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<SetAsideItem>> GetSetAsideItemsAsync(CancellationToken cancellationToken = default)
    {
        if (store is not ISetAsideItems items)
        {
            return [];
        }

        var found = await items.SetAsideAsync(cancellationToken).ConfigureAwait(false);
        return [.. found.Select(item => new SetAsideItem(KindOf(item.Kind), item.Id, item.Reason, item.Stored))];
    }

    /// <inheritdoc/>
    public async Task<bool> RestoreSetAsideItemAsync(SetAsideKind kind, Guid id, CancellationToken cancellationToken = default) =>
        store is ISetAsideItems items
        && await items.RestoreAsync(
                kind == SetAsideKind.Event ? StoredItemKind.Event : StoredItemKind.Request, id, cancellationToken)
            .ConfigureAwait(false);

    private static SetAsideKind KindOf(StoredItemKind kind) =>
        kind.IsEvent ? SetAsideKind.Event : SetAsideKind.Request;

    /// <inheritdoc/>
    public async Task<CanaryResult> CanaryRedriveAsync(
        BulkRequest request,
        int canaries,
        TimeSpan wait,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var now = FuncConvert.FromFunc(() => time.GetUtcNow());
        var delay = FuncConvert.FromFunc<TimeSpan, CancellationToken, Task>((span, token) => Task.Delay(span, time, token));
        var outcome = await Administration.canaryAsync(
                admin,
                request.ToSelection(),
                canaries,
                wait,
                TimeSpan.FromMilliseconds(200),
                now,
                delay,
                request.ToOptions(),
                FuncConvert.FromAction<BulkProgress>(_ => { }),
                cancellationToken)
            .ConfigureAwait(false);
        return outcome switch
        {
            global::Events.Core.CanaryOutcome.Succeeded s =>
                new CanaryResult(CanaryOutcome.Succeeded, await FindAllAsync(s.canaries).ConfigureAwait(false), new BulkResult(s.rest)),
            global::Events.Core.CanaryOutcome.Failed f =>
                new CanaryResult(CanaryOutcome.Failed, [.. f.canaries.Select(r => new HandlerRequest(r))], null),
            global::Events.Core.CanaryOutcome.Undecided u =>
                new CanaryResult(CanaryOutcome.Undecided, [.. u.canaries.Select(r => new HandlerRequest(r))], null),
            _ => new CanaryResult(CanaryOutcome.NothingSelected, [], null),
        };

        async Task<IReadOnlyList<HandlerRequest>> FindAllAsync(FSharpList<Guid> ids)
        {
            var found = await admin.FindRequestsAsync(ids, cancellationToken).ConfigureAwait(false);
            return [.. found.Select(r => new HandlerRequest(r))];
        }
    }

    /// <summary>
    /// Disposes the runtime. A runtime still running is shut down at once: running handlers' tokens are
    /// canceled. Call <see cref="ShutdownAsync(CancellationToken)"/> first for a graceful stop.
    /// </summary>
    /// <returns>Completes when the runtime is disposed.</returns>
    public async ValueTask DisposeAsync()
    {
        if (Status is RuntimeStatus.Running or RuntimeStatus.Paused)
        {
            await scheduler.ShutdownAsync(new CancellationToken(canceled: true)).ConfigureAwait(false);
        }

        ((IDisposable)scheduler).Dispose();
        ((IDisposable)gauges).Dispose();
    }

    /// <summary>
    /// Disposes the runtime, blocking until it has shut down. A runtime still running is shut down at
    /// once: running handlers' tokens are canceled.
    /// </summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    private static async Task<HandlerRequest> UpdateAsync(Task<FSharpResult<CoreRequest, AdminError>> update)
    {
        var updated = await update.ConfigureAwait(false);
        if (updated.IsOk)
        {
            return new HandlerRequest(updated.ResultValue);
        }

        var error = updated.ErrorValue;
        throw error.IsRequestNotFound
            ? new KeyNotFoundException(error.Message)
            : new InvalidOperationException(error.Message);
    }

    private static CoreQuery ToCore(DeadRequestQuery query)
    {
        ArgumentNullException.ThrowIfNull(query.EventNames, nameof(query.EventNames));
        ArgumentNullException.ThrowIfNull(query.HandlerNames, nameof(query.HandlerNames));
        return DeadRequestQueryModule.validate(new CoreQuery(
            query.EventNames.Select(global::Events.Core.EventName.Create).ToFSharpList(),
            query.HandlerNames.Select(global::Events.Core.HandlerName.Create).ToFSharpList(),
            query.Limit,
            query.Offset));
    }
}
