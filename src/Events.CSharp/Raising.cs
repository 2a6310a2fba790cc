namespace Events.CSharp;

/// <summary>
/// An entity that raises events as it changes: its <see cref="Raiser"/> keeps them until the entity is
/// saved. With Marten (<c>UseMartenStore()</c> or <c>UseEvents()</c>), saving the entity in a session appends
/// its raised events in the same transaction, and clears them once the session commits.
/// </summary>
public interface IRaiseEvents
{
    /// <summary>The entity's raised events; mark it <c>[JsonIgnore]</c> so it is not stored with the entity.</summary>
    EventRaiser Raiser { get; }
}

/// <summary>The events an entity raised and that are not saved yet. Thread-safe.</summary>
public sealed class EventRaiser
{
    private readonly List<Event> events = [];
    private readonly Lock gate = new();

    /// <summary>Records an event.</summary>
    /// <param name="event">The event, made with <see cref="Event.Domain(string, EntityRef, object)"/> or another of <see cref="Event"/>'s makers.</param>
    public void Raise(Event @event)
    {
        ArgumentNullException.ThrowIfNull(@event);
        lock (gate)
        {
            events.Add(@event);
        }
    }

    /// <summary>The events raised so far, oldest first.</summary>
    public IReadOnlyList<Event> Events
    {
        get
        {
            lock (gate)
            {
                return [.. events];
            }
        }
    }

    /// <summary>Forgets the events raised so far (after they were saved).</summary>
    public void Clear()
    {
        lock (gate)
        {
            events.Clear();
        }
    }
}

/// <summary>Raising events with an <see cref="EntityRef"/>, so an entity's id and kind cannot be swapped.</summary>
public static class EventPublisherExtensions
{
    /// <summary>Makes a domain event about an entity and raises it.</summary>
    /// <param name="publisher">The publisher.</param>
    /// <param name="name">What happened, such as <c>"order.placed"</c>.</param>
    /// <param name="entity">The entity, such as <c>Orders.Entity("A-17")</c>.</param>
    /// <param name="data">A value that serialises to a JSON object.</param>
    /// <param name="cancellationToken">Cancels the append.</param>
    /// <returns>The event as stored.</returns>
    /// <exception cref="ArgumentException">The name, the entity or the data is refused; the message says why.</exception>
    public static Task<Event> RaiseDomainEventAsync(
        this IEventPublisher publisher,
        string name,
        EntityRef entity,
        object data,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(publisher);
        ArgumentNullException.ThrowIfNull(entity);
        return publisher.RaiseDomainEventAsync(name, entity.Id, entity.Kind, data, cancellationToken);
    }
}
