using Microsoft.Extensions.DependencyInjection;
using Microsoft.FSharp.Core;
using CoreContext = Events.HandlerContext;
using CoreHandler = Microsoft.FSharp.Core.FSharpFunc<Events.HandlerContext, Microsoft.FSharp.Core.FSharpFunc<System.Threading.CancellationToken, System.Threading.Tasks.Task<Events.HandlerResult>>>;

namespace Events.CSharp;

/// <summary>Turns the facade's Task-based handlers into the core's curried handler functions.</summary>
internal static class HandlerAdapter
{
    public static CoreHandler Adapt(Func<HandlerContext, CancellationToken, Task> handler) =>
        FuncConvert.FromFunc<CoreContext, CancellationToken, Task<HandlerResult>>(async (context, cancellationToken) =>
        {
            await handler(new HandlerContext(context), cancellationToken).ConfigureAwait(false);
            return HandlerResult.Succeeded;
        });

    public static CoreHandler Adapt(Func<HandlerContext, CancellationToken, Task<HandlerOutcome>> handler) =>
        FuncConvert.FromFunc<CoreContext, CancellationToken, Task<HandlerResult>>(async (context, cancellationToken) =>
        {
            var outcome = await handler(new HandlerContext(context), cancellationToken).ConfigureAwait(false);
            return (outcome ?? throw new InvalidOperationException("the handler returned no outcome (null)")).ToCore();
        });

    /// <summary>A handler that makes <typeparamref name="THandler"/> in a new scope of the options' container for each attempt.</summary>
    public static Func<HandlerContext, CancellationToken, Task<HandlerOutcome>> Scoped<THandler>(EventsOptions options)
        where THandler : class, IEventHandler =>
        async (context, cancellationToken) =>
        {
            var services = options.Services
                ?? throw new InvalidOperationException($"{typeof(THandler)} is made by dependency injection: register Events with AddEvents");
            var scope = services.GetRequiredService<IServiceScopeFactory>().CreateAsyncScope();
            await using (scope.ConfigureAwait(false))
            {
                var handler = ActivatorUtilities.GetServiceOrCreateInstance<THandler>(scope.ServiceProvider);
                return await handler.HandleAsync(context, cancellationToken).ConfigureAwait(false);
            }
        };
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
