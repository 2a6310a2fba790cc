using System.Text.Json;
using Events.Core;
using Microsoft.Extensions.DependencyInjection;
using CoreContext = Events.Core.HandlerContext;

namespace Events.CSharp;

/// <summary>
/// What a handler returns when it can fail in an ordinary way: <see cref="Success"/>, or
/// <see cref="Failure(string)"/> with a message. A handler that throws fails too; its exception is
/// always given to the <see cref="IErrorReporter"/>.
/// </summary>
public sealed class HandlerOutcome
{
    private HandlerOutcome(string? error, bool permanent = false)
    {
        Error = error;
        IsPermanent = permanent;
    }

    /// <summary>The handler did its work.</summary>
    public static HandlerOutcome Success { get; } = new(null);

    /// <summary>The handler could not do its work: the request is retried after its backoff, or dies at MaxErrors.</summary>
    /// <param name="error">What went wrong; recorded as the request's last error.</param>
    /// <returns>A failed outcome.</returns>
    public static HandlerOutcome Failure(string error)
    {
        ArgumentNullException.ThrowIfNull(error);
        return new HandlerOutcome(error);
    }

    /// <summary>
    /// The handler could not do its work and never will (the event's data is invalid, say): the request is
    /// dead at once, with no retry, and reported as dead.
    /// </summary>
    /// <param name="error">What went wrong; recorded as the request's last error.</param>
    /// <returns>A permanently failed outcome.</returns>
    public static HandlerOutcome PermanentFailure(string error)
    {
        ArgumentNullException.ThrowIfNull(error);
        return new HandlerOutcome(error, permanent: true);
    }

    /// <summary>Whether the handler did its work.</summary>
    public bool IsSuccess => Error is null;

    /// <summary>Whether this is a failure that must not be retried.</summary>
    public bool IsPermanent { get; }

    /// <summary>The failure's message; <see langword="null"/> for a success.</summary>
    public string? Error { get; }

    internal HandlerResult ToCore() =>
        Error is null ? HandlerResult.Succeeded
        : IsPermanent ? HandlerResult.NewFailedPermanently(Error)
        : HandlerResult.NewFailed(Error);

    /// <inheritdoc/>
    public override string ToString() =>
        Error is null ? "Success" : IsPermanent ? $"Permanent failure: {Error}" : $"Failure: {Error}";
}

/// <summary>
/// What a handler is given: the request it runs for, its event's data, and (with dependency injection)
/// the services of the attempt's own scope.
/// </summary>
public sealed class HandlerContext
{
    private readonly CoreContext core;
    private readonly IServiceProvider? root;
    private AsyncServiceScope? scope;
    private object? storeSession;

    internal HandlerContext(CoreContext core, IServiceProvider? root)
    {
        this.core = core;
        this.root = root;
        Request = new HandlerRequest(core.Request);
    }

    /// <summary>The request being executed (as a before-execute hook left it).</summary>
    public HandlerRequest Request { get; }

    /// <summary>This attempt's number: 1 for the first.</summary>
    public int Attempt => core.Attempt;

    /// <summary>The event's id.</summary>
    public Guid EventId => Request.EventId;

    /// <summary>The event's name.</summary>
    public string EventName => Request.EventName;

    /// <summary>The handler's name.</summary>
    public string HandlerName => Request.HandlerName;

    /// <summary>
    /// The services of this attempt's own scope (opened on first use, disposed when the handler returns).
    /// In it, a store's session for the handler's own work (Marten's <c>IDocumentSession</c> and
    /// <c>IQuerySession</c>) is the one that commits with the request's outcome.
    /// </summary>
    /// <exception cref="InvalidOperationException">Events were not registered with <c>AddEvents</c>.</exception>
    public IServiceProvider Services => (scope ??= OpenScope()).ServiceProvider;

    /// <summary>Whether this attempt has a scope already (handler classes and handlers that asked for services).</summary>
    internal bool HasScope => scope is not null;

    /// <summary>The event's data parsed as a read-only JSON element.</summary>
    /// <returns>The data's JSON object.</returns>
    public JsonElement GetData() => Request.GetEventData();

    /// <summary>The event's data deserialised with System.Text.Json.</summary>
    /// <typeparam name="T">The type to deserialise into.</typeparam>
    /// <param name="options">Serializer options, or <see langword="null"/> for the defaults.</param>
    /// <returns>The deserialised data.</returns>
    public T? GetData<T>(JsonSerializerOptions? options = null) => Request.GetEventData<T>(options);

    /// <summary>
    /// The store's transaction for the handler's own work, committed atomically with the request's
    /// outcome, when the store has one of type <typeparamref name="TTransaction"/>; opened on first use.
    /// </summary>
    /// <typeparam name="TTransaction">The store's transaction type.</typeparam>
    /// <returns>The transaction, or <see langword="null"/> when the store has none of that type.</returns>
    public TTransaction? GetTransaction<TTransaction>()
        where TTransaction : class =>
        core.Transaction.ToNullableReference() as TTransaction;

    /// <summary>The data as <typeparamref name="TData"/>, for typed handlers: never null.</summary>
    internal TData ReadData<TData>()
    {
        try
        {
            return GetData<TData>()
                ?? throw new InvalidOperationException($"the data of {EventName} {EventId} reads as null {typeof(TData)}");
        }
        catch (JsonException error)
        {
            throw new InvalidOperationException(
                $"the data of {EventName} {EventId} cannot be read as {typeof(TData)}: {error.Message}",
                error);
        }
    }

    /// <summary>The store's session view for this attempt, made once by <paramref name="make"/> (a store package's).</summary>
    internal T? StoreSession<T>(Func<HandlerContext, T?> make)
        where T : class =>
        (T?)(storeSession ??= make(this));

    internal ValueTask DisposeScopeAsync() => scope is { } opened ? opened.DisposeAsync() : default;

    private AsyncServiceScope OpenScope()
    {
        var services = root
            ?? throw new InvalidOperationException(
                $"the handler {HandlerName} asks for services: register Events with AddEvents (dependency injection)");
        var opened = services.GetRequiredService<IServiceScopeFactory>().CreateAsyncScope();
        opened.ServiceProvider.GetRequiredService<HandlerScope>().Context = this;
        return opened;
    }

    /// <inheritdoc/>
    public override string ToString() => $"{HandlerName} for {EventName} {EventId}, attempt {Attempt}";
}

/// <summary>The handler context of the scope an attempt runs in; empty in every other scope.</summary>
internal sealed class HandlerScope
{
    public HandlerContext? Context { get; set; }
}
