namespace Events.CSharp;

/// <summary>
/// For integration tests: wait until an event, or everything raised so far (with what its handlers raise
/// in turn), is fully handled, as Wolverine's tracked sessions do. They poll the store, so use them in
/// tests, not in production code.
/// </summary>
public static class EventsTracking
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(20);

    /// <summary>
    /// Waits until <paramref name="event"/> is processed and each of its handler requests is settled:
    /// completed, dead (it failed MaxErrors times) or canceled.
    /// </summary>
    /// <param name="admin">The runtime, or <see cref="IEventsAdmin"/> from the container.</param>
    /// <param name="event">The event, as raised.</param>
    /// <param name="timeout">How long to wait.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>The event's handler requests, settled, in handler order.</returns>
    /// <exception cref="TimeoutException">The event was not fully handled in time; the message says what was left.</exception>
    public static Task<IReadOnlyList<HandlerRequest>> WaitUntilHandledAsync(
        this IEventsAdmin admin,
        Event @event,
        TimeSpan timeout,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(@event);
        return admin.WaitUntilHandledAsync(@event.Id, timeout, cancellationToken);
    }

    /// <summary>Waits until the event of that id is processed and each of its handler requests is settled.</summary>
    /// <param name="admin">The runtime, or <see cref="IEventsAdmin"/> from the container.</param>
    /// <param name="eventId">The event's id.</param>
    /// <param name="timeout">How long to wait.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>The event's handler requests, settled, in handler order.</returns>
    /// <exception cref="TimeoutException">The event was not fully handled in time; the message says what was left.</exception>
    public static async Task<IReadOnlyList<HandlerRequest>> WaitUntilHandledAsync(
        this IEventsAdmin admin,
        Guid eventId,
        TimeSpan timeout,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(admin);
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var found = await admin.FindEventAsync(eventId, cancellationToken).ConfigureAwait(false);
            var requests = new List<HandlerRequest>();
            if (found?.ProcessedAt is not null)
            {
                await foreach (var request in admin.GetRequestsAsync(cancellationToken).ConfigureAwait(false))
                {
                    if (request.EventId == eventId)
                    {
                        requests.Add(request);
                    }
                }

                if (requests.All(IsSettled))
                {
                    return [.. requests.OrderBy(request => request.Priority).ThenBy(request => request.HandlerName, StringComparer.Ordinal)];
                }
            }

            if (DateTime.UtcNow >= deadline)
            {
                var left = found is null ? "the event is not in the store"
                    : found.ProcessedAt is null ? "the event is not processed yet"
                    : Unsettled(requests);
                throw new TimeoutException($"event {eventId} was not fully handled within {timeout}: {left}");
            }

            await Task.Delay(PollInterval, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Waits until every event in the store is processed and every handler request is settled (completed,
    /// dead or canceled), including the events handlers raise meanwhile.
    /// </summary>
    /// <param name="admin">The runtime, or <see cref="IEventsAdmin"/> from the container.</param>
    /// <param name="timeout">How long to wait.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>Completes when nothing is left to do.</returns>
    /// <exception cref="TimeoutException">Work was left after the timeout; the message says which.</exception>
    public static async Task WaitUntilIdleAsync(
        this IEventsAdmin admin,
        TimeSpan timeout,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(admin);
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var statistics = await admin.GetStatisticsAsync(cancellationToken).ConfigureAwait(false);
            var unsettled = new List<HandlerRequest>();
            await foreach (var request in admin.GetRequestsAsync(cancellationToken).ConfigureAwait(false))
            {
                if (!IsSettled(request))
                {
                    unsettled.Add(request);
                }
            }

            if (statistics.UnprocessedEvents == 0 && unsettled.Count == 0)
            {
                // Once more: an event raised by the last handler may have been appended between the two reads.
                var again = await admin.GetStatisticsAsync(cancellationToken).ConfigureAwait(false);
                if (again.UnprocessedEvents == 0)
                {
                    return;
                }
            }

            if (DateTime.UtcNow >= deadline)
            {
                throw new TimeoutException(
                    $"events were not idle within {timeout}: {statistics.UnprocessedEvents} unprocessed events; {Unsettled(unsettled)}");
            }

            await Task.Delay(PollInterval, cancellationToken).ConfigureAwait(false);
        }
    }

    private static bool IsSettled(HandlerRequest request) =>
        request.State is HandlerRequestState.Completed or HandlerRequestState.Dead or HandlerRequestState.Canceled;

    private static string Unsettled(IReadOnlyCollection<HandlerRequest> requests)
    {
        var open = requests.Where(request => !IsSettled(request)).ToList();
        return open.Count == 0
            ? "no request is left"
            : $"{open.Count} requests left: " + string.Join(
                ", ",
                open.Take(10).Select(request =>
                    $"{request.HandlerName} of {request.EventName} {request.State} after {request.Errors} errors"
                    + (request.LastError is { } error ? $" (last: {error})" : "")));
    }
}
