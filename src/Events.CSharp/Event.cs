using System.Text.Json;
using Events.Core;
using CoreEvent = Events.Core.Event;
using CoreEventData = Events.Core.EventData;
using CoreEventFactory = Events.Core.EventFactory;

namespace Events.CSharp;

/// <summary>
/// Something that happened: an application event, or a domain event about an entity. Made with
/// <see cref="Application(string, object)"/> or <see cref="Domain(string, string, string, object)"/>,
/// raised with <see cref="IEventPublisher"/>.
/// </summary>
public sealed class Event
{
    internal Event(CoreEvent core, bool isDuplicate = false)
    {
        Core = core;
        IsDuplicate = isDuplicate;
    }

    internal CoreEvent Core { get; }

    /// <summary>
    /// On an event a raise returned: <see langword="true"/> when the event raised carried a
    /// <see cref="DeduplicationKey"/> already stored, so nothing was stored and this is the event stored
    /// before with that key (its <see cref="Id"/> is not the raised one's). <see langword="false"/> otherwise.
    /// </summary>
    public bool IsDuplicate { get; }

    /// <summary>
    /// The key that makes raising this event idempotent, if any: while an event with the same key is stored
    /// (until retention removes it), raising another stores nothing and returns the stored one.
    /// </summary>
    public string? DeduplicationKey => Core.DeduplicationKey.ToNullableReference();

    /// <summary>The event's id: a UUIDv7, so ids sort by creation time.</summary>
    public Guid Id => Core.Id;

    /// <summary>What happened, such as <c>"order.placed"</c>.</summary>
    public string Name => Core.Name.Value;

    /// <summary>The event's data as compact JSON text (always a JSON object).</summary>
    public string DataJson => Core.Data.Json;

    /// <summary>When it happened.</summary>
    public DateTimeOffset Timestamp => Core.Timestamp;

    /// <summary>The id of the entity a domain event is about; <see langword="null"/> for an application event.</summary>
    public string? EntityId => Core.Entity.ToNullableReference()?.Id;

    /// <summary>The kind of entity a domain event is about; <see langword="null"/> for an application event.</summary>
    public string? EntityName => Core.Entity.ToNullableReference()?.Name;

    /// <summary>Whether the event is about an entity (a domain event).</summary>
    public bool IsDomainEvent => EntityId is not null;

    /// <summary>Set by the store when the event is raised; <see langword="null"/> before.</summary>
    public Guid? CorrelationId => Core.CorrelationId.ToNullable();

    /// <summary>The W3C <c>traceparent</c> of the code that made the event, if it ran in a trace.</summary>
    public string? TraceParent => Core.Trace.ToNullableReference()?.TraceParent;

    /// <summary>When the processor fanned the event out to its handler requests; <see langword="null"/> before.</summary>
    public DateTimeOffset? ProcessedAt => Core.ProcessedAt.ToNullable();

    /// <summary>The data parsed as a read-only JSON element.</summary>
    /// <returns>The data's JSON object.</returns>
    public JsonElement GetData() => Core.Data.ToJsonElement();

    /// <summary>The data deserialised with System.Text.Json.</summary>
    /// <typeparam name="T">The type to deserialise into.</typeparam>
    /// <param name="options">Serializer options, or <see langword="null"/> for the defaults.</param>
    /// <returns>The deserialised data.</returns>
    public T? GetData<T>(JsonSerializerOptions? options = null) => Core.Data.Deserialize<T>(options.ToOption());

    /// <summary>
    /// Makes an application event (one not about an entity) on the system clock, with the current trace
    /// context.
    /// </summary>
    /// <param name="name">What happened, such as <c>"user.signed-in"</c>.</param>
    /// <param name="data">A value that serialises to a JSON object (a record, a class, an anonymous object, a dictionary).</param>
    /// <returns>The event, not yet raised.</returns>
    /// <exception cref="ArgumentException">The name or the data is refused; the message says why.</exception>
    public static Event Application(string name, object data) => Application(name, data, TimeProvider.System);

    /// <summary>Makes an application event with no data (an empty JSON object).</summary>
    /// <param name="name">What happened.</param>
    /// <returns>The event, not yet raised.</returns>
    /// <exception cref="ArgumentException">The name is refused; the message says why.</exception>
    public static Event Application(string name) => Application(name, CoreEventData.Empty, TimeProvider.System);

    /// <summary>Makes an application event on the clock given.</summary>
    /// <param name="name">What happened.</param>
    /// <param name="data">A value that serialises to a JSON object.</param>
    /// <param name="timeProvider">The clock that stamps the event and its id.</param>
    /// <returns>The event, not yet raised.</returns>
    /// <exception cref="ArgumentException">The name or the data is refused; the message says why.</exception>
    public static Event Application(string name, object data, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(timeProvider);
        var made = new CoreEventFactory(timeProvider).Application(name, data);
        return made.IsOk ? new Event(made.ResultValue) : throw Refused(made.ErrorValue);
    }

    /// <summary>
    /// Makes a domain event about an entity on the system clock, with the current trace context.
    /// </summary>
    /// <param name="name">What happened, such as <c>"order.placed"</c>.</param>
    /// <param name="entityId">The entity's id, such as an order number.</param>
    /// <param name="entityName">The entity's kind, such as <c>"order"</c>.</param>
    /// <param name="data">A value that serialises to a JSON object.</param>
    /// <returns>The event, not yet raised.</returns>
    /// <exception cref="ArgumentException">The name, the entity or the data is refused; the message says why.</exception>
    public static Event Domain(string name, string entityId, string entityName, object data) =>
        Domain(name, entityId, entityName, data, TimeProvider.System);

    /// <summary>Makes a domain event about an entity on the clock given.</summary>
    /// <param name="name">What happened.</param>
    /// <param name="entityId">The entity's id.</param>
    /// <param name="entityName">The entity's kind.</param>
    /// <param name="data">A value that serialises to a JSON object.</param>
    /// <param name="timeProvider">The clock that stamps the event and its id.</param>
    /// <returns>The event, not yet raised.</returns>
    /// <exception cref="ArgumentException">The name, the entity or the data is refused; the message says why.</exception>
    public static Event Domain(string name, string entityId, string entityName, object data, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(entityId);
        ArgumentNullException.ThrowIfNull(entityName);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(timeProvider);
        var made = new CoreEventFactory(timeProvider).Domain(name, entityId, entityName, data);
        return made.IsOk ? new Event(made.ResultValue) : throw Refused(made.ErrorValue);
    }

    /// <summary>
    /// Makes an application event named after its data's type (<see cref="EventNames.Of{TData}"/>) on the
    /// system clock, with the current trace context.
    /// </summary>
    /// <typeparam name="TData">The data type, which names the event.</typeparam>
    /// <param name="data">A value that serialises to a JSON object.</param>
    /// <returns>The event, not yet raised.</returns>
    /// <exception cref="ArgumentException">The name or the data is refused; the message says why.</exception>
    public static Event Application<TData>(TData data)
        where TData : notnull =>
        Application(EventNames.Of<TData>(), data, TimeProvider.System);

    /// <summary>
    /// Makes a domain event about an entity on the system clock, with the current trace context. The
    /// entity is one value (<c>Orders.Entity("A-17")</c> of an <see cref="EntityKind"/>), so its id and kind
    /// cannot be swapped.
    /// </summary>
    /// <param name="name">What happened, such as <c>"order.placed"</c>.</param>
    /// <param name="entity">The entity the event is about.</param>
    /// <param name="data">A value that serialises to a JSON object.</param>
    /// <returns>The event, not yet raised.</returns>
    /// <exception cref="ArgumentException">The name, the entity or the data is refused; the message says why.</exception>
    public static Event Domain(string name, EntityRef entity, object data) =>
        Domain(name, entity, data, TimeProvider.System);

    /// <summary>Makes a domain event about an entity on the clock given.</summary>
    /// <param name="name">What happened.</param>
    /// <param name="entity">The entity the event is about.</param>
    /// <param name="data">A value that serialises to a JSON object.</param>
    /// <param name="timeProvider">The clock that stamps the event and its id.</param>
    /// <returns>The event, not yet raised.</returns>
    /// <exception cref="ArgumentException">The name, the entity or the data is refused; the message says why.</exception>
    public static Event Domain(string name, EntityRef entity, object data, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(entity);
        return Domain(name, entity.Id, entity.Kind, data, timeProvider);
    }

    /// <summary>Makes a domain event about an entity, named after its data's type (<see cref="EventNames.Of{TData}"/>).</summary>
    /// <typeparam name="TData">The data type, which names the event.</typeparam>
    /// <param name="entity">The entity the event is about.</param>
    /// <param name="data">A value that serialises to a JSON object.</param>
    /// <returns>The event, not yet raised.</returns>
    /// <exception cref="ArgumentException">The name, the entity or the data is refused; the message says why.</exception>
    public static Event Domain<TData>(EntityRef entity, TData data)
        where TData : notnull =>
        Domain(EventNames.Of<TData>(), entity, data, TimeProvider.System);

    /// <summary>A copy of the event with other data (for a before-process hook that rewrites events).</summary>
    /// <param name="data">A value that serialises to a JSON object.</param>
    /// <returns>The same event with the new data.</returns>
    /// <exception cref="ArgumentException">The data is refused; the message says why.</exception>
    public Event WithData(object data)
    {
        ArgumentNullException.ThrowIfNull(data);
        var serialised = CoreEventData.TrySerialise(data, null);
        return serialised.IsOk
            ? new Event(new CoreEvent(
                Core.Id,
                Core.Name,
                serialised.ResultValue,
                Core.Timestamp,
                Core.Entity,
                Core.CorrelationId,
                Core.Trace,
                Core.ProcessedAt,
                Core.DeduplicationKey))
            : throw new ArgumentException(serialised.ErrorValue.Message, nameof(data));
    }

    /// <summary>
    /// A copy of the event with a deduplication key, so raising it is idempotent: a second raise of an event
    /// with the same key, while the first is stored, stores nothing and returns the first (marked
    /// <see cref="IsDuplicate"/>). The window is until retention removes the stored event.
    /// </summary>
    /// <param name="key">The key, such as <c>"order-A-17-placed"</c>: 1 to 200 characters, no NUL character.</param>
    /// <returns>The same event with the key.</returns>
    /// <exception cref="ArgumentException">The key is empty, too long or holds a NUL character; the message says why.</exception>
    public Event WithDeduplicationKey(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        return new Event(EventModule.withDeduplicationKey(key, Core));
    }

    /// <summary>The event a raise returned for <paramref name="raised"/>, marked when it is another one stored before with its key.</summary>
    internal static Event Returned(CoreEvent raised, CoreEvent returned) =>
        new(returned, EventModule.isDuplicateOf(raised, returned));

    private static ArgumentException Refused(EventError error) =>
        new(
            error.Message,
            error.Tag switch
            {
                EventError.Tags.InvalidEntityId => "entityId",
                EventError.Tags.InvalidEntityName => "entityName",
                EventError.Tags.InvalidData => "data",
                _ => "name",
            });

    /// <inheritdoc/>
    public override string ToString() => $"{Name} {Id}";
}

/// <summary>
/// A kind of entity that domain events are about, such as <c>"order"</c>: made once (a static field, say)
/// and used to name each entity with <see cref="Entity(string)"/>.
/// </summary>
public sealed class EntityKind
{
    /// <summary>A kind of entity.</summary>
    /// <param name="name">The kind's name, such as <c>"order"</c>; checked when an event is made.</param>
    public EntityKind(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        Name = name;
    }

    /// <summary>The kind's name.</summary>
    public string Name { get; }

    /// <summary>The entity of this kind with the id given.</summary>
    /// <param name="id">The entity's id, such as an order number.</param>
    /// <returns>The entity.</returns>
    public EntityRef Entity(string id) => new(this, id);

    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>One entity a domain event is about: its kind and its id. Made with <see cref="EntityKind.Entity(string)"/>.</summary>
public sealed record EntityRef
{
    internal EntityRef(EntityKind kind, string id)
    {
        ArgumentNullException.ThrowIfNull(id);
        Kind = kind.Name;
        Id = id;
    }

    /// <summary>The entity's kind, such as <c>"order"</c>.</summary>
    public string Kind { get; }

    /// <summary>The entity's id.</summary>
    public string Id { get; }

    /// <inheritdoc/>
    public override string ToString() => $"{Kind} {Id}";
}
