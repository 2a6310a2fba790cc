namespace Events.CSharp;

/// <summary>
/// What a before-process or before-execute hook decided: go on with a (possibly changed) value, or
/// refuse. Made with <see cref="HookOutcome.Continue{T}(T)"/> and <see cref="HookOutcome.Refuse{T}(string)"/>.
/// </summary>
/// <typeparam name="T">What the hook looks at: an <see cref="Event"/> or a <see cref="HandlerRequest"/>.</typeparam>
public sealed class HookOutcome<T>
    where T : class
{
    internal HookOutcome(T? value, string? refusal)
    {
        Value = value;
        Refusal = refusal;
    }

    /// <summary>The value to go on with; <see langword="null"/> when refused.</summary>
    public T? Value { get; }

    /// <summary>Why the hook refused; <see langword="null"/> when it goes on.</summary>
    public string? Refusal { get; }

    /// <summary>Whether the hook refused.</summary>
    public bool IsRefused => Refusal is not null;

    /// <inheritdoc/>
    public override string ToString() => Refusal is null ? $"Continue: {Value}" : $"Refuse: {Refusal}";
}

/// <summary>Makes hook outcomes.</summary>
public static class HookOutcome
{
    /// <summary>Go on with this value (the one given to the hook, or a changed one).</summary>
    /// <typeparam name="T">An <see cref="Event"/> or a <see cref="HandlerRequest"/>.</typeparam>
    /// <param name="value">The value to go on with.</param>
    /// <returns>An outcome that goes on.</returns>
    public static HookOutcome<T> Continue<T>(T value)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(value);
        return new HookOutcome<T>(value, null);
    }

    /// <summary>
    /// Refuse: the event or request is given back for a later round (no error is counted), and the reason
    /// is logged as an error.
    /// </summary>
    /// <typeparam name="T">An <see cref="Event"/> or a <see cref="HandlerRequest"/>.</typeparam>
    /// <param name="reason">Why.</param>
    /// <returns>An outcome that refuses.</returns>
    public static HookOutcome<T> Refuse<T>(string reason)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(reason);
        return new HookOutcome<T>(null, reason);
    }
}

/// <summary>A failure the error reporter is told about: every thrown exception, and every failure that makes a request dead.</summary>
public sealed class ErrorReport
{
    internal ErrorReport(global::Events.Core.ErrorReport core)
    {
        Request = new HandlerRequest(core.Request);
        Error = core.Error;
        Exception = core.Exception.ToNullableReference();
        StackTrace = core.StackTrace.ToNullableReference();
        Retryable = core.Retryable;
    }

    /// <summary>The request after the failed attempt.</summary>
    public HandlerRequest Request { get; }

    /// <summary>The error message recorded on the request.</summary>
    public string Error { get; }

    /// <summary>The exception the handler threw, if it threw.</summary>
    public Exception? Exception { get; }

    /// <summary>The stack of the thrown exception; <see langword="null"/> for an ordinary failure.</summary>
    public string? StackTrace { get; }

    /// <summary>Whether the request will be retried (<see langword="false"/>: it is dead).</summary>
    public bool Retryable { get; }

    /// <inheritdoc/>
    public override string ToString() => $"{Request.HandlerName} for {Request.EventName}: {Error} (retryable: {Retryable})";
}

/// <summary>
/// Receives reported failures asynchronously, to send them to an error tracker over the network, say.
/// Awaited after the failed attempt's outcome is written and its worker slot freed, so a slow reporter
/// delays no other request; shutdown waits for it until its deadline, then cancels the token.
/// </summary>
public interface IAsyncErrorReporter
{
    /// <summary>Reports a failure. An exception it throws is logged and counts as not accepted.</summary>
    /// <param name="report">The failure.</param>
    /// <param name="cancellationToken">Fires on a hard shutdown.</param>
    /// <returns>Whether the reporter accepted it (logged with the failure).</returns>
    Task<bool> ReportAsync(ErrorReport report, CancellationToken cancellationToken);
}

/// <summary>Receives reported failures, to send them to an error tracker, say.</summary>
public interface IErrorReporter : IAsyncErrorReporter
{
    /// <summary>Reports a failure: keep it quick. An exception it throws is logged and counts as not accepted.</summary>
    /// <param name="report">The failure.</param>
    /// <returns>Whether the reporter accepted it (logged with the failure).</returns>
    bool Report(ErrorReport report);

    /// <inheritdoc/>
    Task<bool> IAsyncErrorReporter.ReportAsync(ErrorReport report, CancellationToken cancellationToken) =>
        Task.FromResult(Report(report));
}

/// <summary>Adapts a facade reporter to the core's port.</summary>
internal sealed class ErrorReporterAdapter(IAsyncErrorReporter reporter) : global::Events.Core.IErrorReporter
{
    public Task<bool> ReportAsync(global::Events.Core.ErrorReport report, CancellationToken cancellationToken) =>
        reporter.ReportAsync(new ErrorReport(report), cancellationToken);
}
