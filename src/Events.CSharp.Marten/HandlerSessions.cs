using System.Reflection;
using System.Runtime.ExceptionServices;
using Events.Marten;
using Marten;
using Microsoft.Extensions.DependencyInjection;

namespace Events.CSharp;

/// <summary>
/// The Marten session of a handler's attempt, as the handler and its scope's services see it: the
/// session the store commits with the outcome, behind a view whose <c>Dispose</c> and <c>SaveChangesAsync</c>
/// do nothing (the container disposes what it resolved when the attempt's scope ends, before the outcome
/// is written; a service that saves its unit of work must not commit the handler's work early).
/// </summary>
internal static class HandlerSessions
{
    /// <summary>The view of the context's Marten session; null when the store is not Marten.</summary>
    public static IDocumentSession? Open(HandlerContext context) =>
        context.GetTransaction<MartenHandlerTransaction>() is { } transaction
            ? HandlerSessionView.Create(transaction.Session)
            : null;

    /// <summary>The session behind a view (Marten's own code wants its own session types).</summary>
    public static IDocumentSession Unwrap(IDocumentSession session) =>
        session is HandlerSessionView view ? view.Target : session;

    /// <summary>
    /// Makes <c>IDocumentSession</c> and <c>IQuerySession</c>, resolved in a handler's scope, the handler's
    /// session; elsewhere they are resolved as registered. Idempotent.
    /// </summary>
    public static void Register(IServiceCollection services)
    {
        if (services.Any(descriptor => descriptor.ServiceType == typeof(Registered)))
        {
            return;
        }

        Decorate<IDocumentSession>(services);
        Decorate<IQuerySession>(services);
        services.AddSingleton<Registered>();
    }

    private static void Decorate<TSession>(IServiceCollection services)
        where TSession : class
    {
        var index = -1;
        for (var i = services.Count - 1; i >= 0 && index < 0; i--)
        {
            if (services[i].ServiceType == typeof(TSession) && !services[i].IsKeyedService)
            {
                index = i;
            }
        }

        if (index < 0)
        {
            throw new InvalidOperationException(
                $"UseMartenStore() found no {typeof(TSession).Name} to take over in handlers: call AddMarten(...) before AddEvents(...).UseMartenStore()");
        }

        var original = services[index];
        services[index] = new ServiceDescriptor(
            typeof(TSession),
            provider => provider.GetService<HandlerScope>()?.Context is { } context && context.GetMartenSession() is { } session
                ? session
                : Resolve(original, provider),
            original.Lifetime);
    }

    private static object Resolve(ServiceDescriptor original, IServiceProvider provider) =>
        original.ImplementationInstance
        ?? original.ImplementationFactory?.Invoke(provider)
        ?? ActivatorUtilities.CreateInstance(provider, original.ImplementationType!);

    /// <summary>The mark that the sessions were taken over.</summary>
    private sealed class Registered;
}

/// <summary>A handler's Marten session that the handler's code and its scope cannot dispose or save early.</summary>
internal class HandlerSessionView : DispatchProxy
{
    private IDocumentSession? target;

    internal IDocumentSession Target => target ?? throw new InvalidOperationException("the view has no session");

    internal static IDocumentSession Create(IDocumentSession session)
    {
        var view = DispatchProxy.Create<IDocumentSession, HandlerSessionView>();
        ((HandlerSessionView)(object)view).target = session;
        return view;
    }

    /// <inheritdoc/>
    protected override object? Invoke(MethodInfo? targetMethod, object?[]? args)
    {
        ArgumentNullException.ThrowIfNull(targetMethod);
        switch (targetMethod.Name)
        {
            case nameof(IDisposable.Dispose) when targetMethod.DeclaringType == typeof(IDisposable):
                return null;
            case nameof(IAsyncDisposable.DisposeAsync) when targetMethod.DeclaringType == typeof(IAsyncDisposable):
                return ValueTask.CompletedTask;
            case nameof(IDocumentSession.SaveChangesAsync) when targetMethod.DeclaringType == typeof(IDocumentSession):
                return Task.CompletedTask;
        }

        try
        {
            return targetMethod.Invoke(Target, args);
        }
        catch (TargetInvocationException error) when (error.InnerException is { } inner)
        {
            ExceptionDispatchInfo.Capture(inner).Throw();
            throw;
        }
    }
}
