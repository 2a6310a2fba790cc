using System.Reflection;
using Events.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.FSharp.Core;
using CoreContext = Events.Core.HandlerContext;
using CoreHandler = Microsoft.FSharp.Core.FSharpFunc<Events.Core.HandlerContext, Microsoft.FSharp.Core.FSharpFunc<System.Threading.CancellationToken, System.Threading.Tasks.Task<Events.Core.HandlerResult>>>;

namespace Events.CSharp;

/// <summary>Turns the facade's Task-based handlers into the core's curried handler functions.</summary>
internal static class HandlerAdapter
{
    /// <summary>
    /// The core's handler for a facade handler: makes the attempt's context (whose scope, if the handler
    /// opens one, is disposed when it returns) and maps its outcome.
    /// </summary>
    public static CoreHandler Adapt(EventsOptions options, Func<HandlerContext, CancellationToken, Task<HandlerOutcome>> handler) =>
        FuncConvert.FromFunc<CoreContext, CancellationToken, Task<HandlerResult>>(async (core, cancellationToken) =>
        {
            var context = new HandlerContext(core, options.Services);
            try
            {
                var outcome = await handler(context, cancellationToken).ConfigureAwait(false);
                return (outcome ?? throw new InvalidOperationException("the handler returned no outcome (null)")).ToCore();
            }
            finally
            {
                await context.DisposeScopeAsync().ConfigureAwait(false);
            }
        });

    public static Func<HandlerContext, CancellationToken, Task<HandlerOutcome>> Succeeding(Func<HandlerContext, CancellationToken, Task> handler) =>
        async (context, cancellationToken) =>
        {
            await handler(context, cancellationToken).ConfigureAwait(false);
            return HandlerOutcome.Success;
        };

    public static Func<HandlerContext, CancellationToken, Task<HandlerOutcome>> Typed<TData>(
        Func<TData, HandlerContext, CancellationToken, Task<HandlerOutcome>> handler) =>
        (context, cancellationToken) => handler(context.ReadData<TData>(), context, cancellationToken);

    public static Func<HandlerContext, CancellationToken, Task<HandlerOutcome>> Typed<TData>(
        Func<TData, HandlerContext, CancellationToken, Task> handler) =>
        Succeeding((context, cancellationToken) => handler(context.ReadData<TData>(), context, cancellationToken));

    public static Func<HandlerContext, CancellationToken, Task<HandlerOutcome>> WithService<TData, TService>(
        Func<TData, TService, HandlerContext, CancellationToken, Task<HandlerOutcome>> handler)
        where TService : notnull =>
        (context, cancellationToken) => handler(
            context.ReadData<TData>(),
            context.Services.GetRequiredService<TService>(),
            context,
            cancellationToken);

    public static Func<HandlerContext, CancellationToken, Task<HandlerOutcome>> WithService<TData, TService>(
        Func<TData, TService, HandlerContext, CancellationToken, Task> handler)
        where TService : notnull =>
        Succeeding((context, cancellationToken) => handler(
            context.ReadData<TData>(),
            context.Services.GetRequiredService<TService>(),
            context,
            cancellationToken));

    /// <summary>
    /// A handler that makes <paramref name="handlerType"/> in the attempt's scope (registered, or made with
    /// its constructor's dependencies) and runs it: an <see cref="IEventHandler"/>, or an
    /// <see cref="IEventHandler{TData}"/> given the data read once.
    /// </summary>
    public static Func<HandlerContext, CancellationToken, Task<HandlerOutcome>> Class(Type handlerType)
    {
        var dataType = HandlerClasses.DataType(handlerType);
        if (dataType is null)
        {
            return (context, cancellationToken) =>
                ((IEventHandler)HandlerClasses.Make(handlerType, context.Services)).HandleAsync(context, cancellationToken);
        }

        var run = typeof(HandlerAdapter).GetMethod(nameof(RunTyped), BindingFlags.NonPublic | BindingFlags.Static)!
            .MakeGenericMethod(dataType)
            .CreateDelegate<Func<Type, HandlerContext, CancellationToken, Task<HandlerOutcome>>>();
        return (context, cancellationToken) => run(handlerType, context, cancellationToken);
    }

    private static Task<HandlerOutcome> RunTyped<TData>(Type handlerType, HandlerContext context, CancellationToken cancellationToken)
    {
        var handler = (IEventHandler<TData>)HandlerClasses.Make(handlerType, context.Services);
        return handler.HandleAsync(context.ReadData<TData>(), context, cancellationToken);
    }
}

/// <summary>What a handler class is, and how the container makes it.</summary>
internal static class HandlerClasses
{
    /// <summary>The data type of the one <see cref="IEventHandler{TData}"/> the class implements; null for an <see cref="IEventHandler"/>.</summary>
    /// <exception cref="ArgumentException">The class implements neither, both, or several typed interfaces.</exception>
    public static Type? DataType(Type handlerType)
    {
        var typed = handlerType.GetInterfaces()
            .Where(type => type.IsGenericType && type.GetGenericTypeDefinition() == typeof(IEventHandler<>))
            .Select(type => type.GetGenericArguments()[0])
            .ToList();
        var untyped = typeof(IEventHandler).IsAssignableFrom(handlerType);
        return (untyped, typed.Count) switch
        {
            (true, 0) => null,
            (false, 1) => typed[0],
            (false, 0) => throw new ArgumentException(
                $"{handlerType} is not a handler: implement IEventHandler or IEventHandler<TData>",
                "THandler"),
            _ => throw new ArgumentException(
                $"{handlerType} implements more than one handler interface: implement IEventHandler or one IEventHandler<TData>",
                "THandler"),
        };
    }

    public static object Make(Type handlerType, IServiceProvider services) =>
        services.GetService(handlerType) ?? ActivatorUtilities.CreateInstance(services, handlerType);
}

/// <summary>Turns the facade's hooks into the core's curried hook functions.</summary>
internal static class HookAdapter
{
    public static FSharpFunc<TCore, FSharpFunc<CancellationToken, Task<HookResult<TCore>>>> Adapt<TFacade, TCore>(
        Func<TFacade, CancellationToken, Task<HookOutcome<TFacade>>> hook,
        Func<TCore, TFacade> wrap,
        Func<TFacade, TCore> unwrap)
        where TFacade : class =>
        FuncConvert.FromFunc<TCore, CancellationToken, Task<HookResult<TCore>>>(async (value, cancellationToken) =>
        {
            var outcome = await hook(wrap(value), cancellationToken).ConfigureAwait(false)
                ?? throw new InvalidOperationException("the hook returned no outcome (null)");
            return outcome.Refusal is { } reason
                ? HookResult<TCore>.NewRefuse(reason)
                : HookResult<TCore>.NewContinue(unwrap(outcome.Value!));
        });
}
