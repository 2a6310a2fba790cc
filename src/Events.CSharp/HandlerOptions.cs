using Events.Core;
using CoreOption = Events.Core.HandlerOption;

namespace Events.CSharp;

/// <summary>
/// The settings of one handler under one event, set fluently. What is not set keeps its default
/// (MaxErrors <see cref="DefaultMaxErrors"/>, Priority <see cref="DefaultPriority"/>, the default backoff, no
/// timeout), or its earlier value when the handler was added before. Checked when the
/// handler is added: an invalid setting throws <see cref="ArgumentException"/> there.
/// </summary>
public sealed class HandlerOptions
{
    private readonly List<CoreOption> options = [];

    internal HandlerOptions()
    {
    }

    internal IReadOnlyList<CoreOption> Options => options;

    /// <summary>The default MaxErrors: 5.</summary>
    public static int DefaultMaxErrors => HandlerSettingsModule.defaults.MaxErrors;

    /// <summary>The default priority: 50.</summary>
    public static int DefaultPriority => HandlerSettingsModule.defaults.Priority;

    /// <summary>Failed attempts after which a request is dead (at least 1; default 5).</summary>
    /// <param name="maxErrors">The number of failed attempts.</param>
    /// <returns>These options, to chain.</returns>
    public HandlerOptions MaxErrors(int maxErrors)
    {
        options.Add(CoreOption.NewMaxErrors(maxErrors));
        return this;
    }

    /// <summary>The handler's priority: lower runs first (default 50).</summary>
    /// <param name="priority">The priority.</param>
    /// <returns>These options, to chain.</returns>
    public HandlerOptions Priority(int priority)
    {
        options.Add(CoreOption.NewPriority(priority));
        return this;
    }

    /// <summary>
    /// The Go framework's default backoff: after the n-th failure, wait <c>n * 2 * r</c> seconds, r a random
    /// whole number from 15 to 59.
    /// </summary>
    /// <returns>These options, to chain.</returns>
    public HandlerOptions DefaultBackoff()
    {
        options.Add(CoreOption.NewBackoff(BackoffPolicy.Default));
        return this;
    }

    /// <summary>
    /// Exponential backoff with full jitter: after the n-th failure, wait a random time in
    /// <c>[0, min(cap, baseDelay * 2^(n-1)))</c>.
    /// </summary>
    /// <param name="baseDelay">The upper bound of the first wait (positive).</param>
    /// <param name="cap">The largest wait (not below <paramref name="baseDelay"/>).</param>
    /// <returns>These options, to chain.</returns>
    public HandlerOptions ExponentialBackoff(TimeSpan baseDelay, TimeSpan cap)
    {
        options.Add(CoreOption.NewBackoff(BackoffPolicy.NewExponential(new global::Events.Core.ExponentialBackoff(baseDelay, cap))));
        return this;
    }

    /// <summary>
    /// How long one attempt may run before its cancellation token fires; an attempt that stops on it counts
    /// as failed (default: no limit).
    /// </summary>
    /// <param name="timeout">The limit (positive).</param>
    /// <returns>These options, to chain.</returns>
    public HandlerOptions Timeout(TimeSpan timeout)
    {
        options.Add(CoreOption.NewTimeout(timeout));
        return this;
    }

    /// <summary>
    /// An exception of this type (or one derived from it), thrown by the handler, is a permanent failure: the
    /// request is dead at once, with no retry. May be given for several types.
    /// </summary>
    /// <typeparam name="TException">The exception type.</typeparam>
    /// <returns>These options, to chain.</returns>
    public HandlerOptions PermanentOn<TException>()
        where TException : Exception
    {
        options.Add(CoreOption.NewPermanentOn(typeof(TException)));
        return this;
    }
}
