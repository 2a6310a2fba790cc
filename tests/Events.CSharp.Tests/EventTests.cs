using System.Diagnostics;
using Events.CSharp;

namespace Facade.Tests;

public class EventTests
{
    private sealed record Order(string Number, decimal Total);

    [Fact]
    public void An_application_event_has_a_name_data_and_no_entity()
    {
        var before = DateTimeOffset.UtcNow;

        var made = Event.Application("user.signed-in", new { User = "ada" });

        Assert.Equal("user.signed-in", made.Name);
        Assert.Equal("{\"User\":\"ada\"}", made.DataJson);
        Assert.Equal("ada", made.GetData().GetProperty("User").GetString());
        Assert.False(made.IsDomainEvent);
        Assert.Null(made.EntityId);
        Assert.Null(made.EntityName);
        Assert.Null(made.CorrelationId);
        Assert.Null(made.ProcessedAt);
        Assert.InRange(made.Timestamp, before, DateTimeOffset.UtcNow);
        Assert.Equal(7, made.Id.Version);
    }

    [Fact]
    public void A_domain_event_is_about_an_entity_and_its_data_round_trips()
    {
        var made = Event.Domain("order.placed", "A-17", "order", new Order("A-17", 12.50m));

        Assert.True(made.IsDomainEvent);
        Assert.Equal("A-17", made.EntityId);
        Assert.Equal("order", made.EntityName);
        Assert.Equal(new Order("A-17", 12.50m), made.GetData<Order>());
    }

    [Fact]
    public void An_event_with_no_data_has_an_empty_object()
    {
        Assert.Equal("{}", Event.Application("tick").DataJson);
    }

    [Fact]
    public void An_event_takes_its_time_from_the_clock_given()
    {
        var clock = new FixedClock(new DateTimeOffset(2030, 1, 2, 3, 4, 5, TimeSpan.Zero));

        var made = Event.Application("tick", new { }, clock);

        Assert.Equal(clock.Now, made.Timestamp);
    }

    [Fact]
    public void An_event_carries_the_trace_of_the_code_that_made_it()
    {
        using var activity = new Activity("raising").SetIdFormat(ActivityIdFormat.W3C).Start();

        var made = Event.Application("traced", new { });

        Assert.Equal(activity.Id, made.TraceParent);
    }

    [Fact]
    public void Invalid_names_and_data_are_refused_with_the_cores_message()
    {
        var name = Assert.Throws<ArgumentException>(() => Event.Application("", new { }));
        Assert.Equal("name", name.ParamName);
        Assert.StartsWith("invalid event name: a name must not be empty", name.Message);

        var data = Assert.Throws<ArgumentException>(() => Event.Application("list", new[] { 1, 2 }));
        Assert.Equal("data", data.ParamName);
        Assert.StartsWith("event data must serialise to a JSON object, not to a JSON Array", data.Message);

        var entity = Assert.Throws<ArgumentException>(() => Event.Domain("order.placed", " ", "order", new { }));
        Assert.Equal("entityId", entity.ParamName);
        Assert.StartsWith("invalid entity id: a name must not be only white space", entity.Message);

        Assert.Throws<ArgumentNullException>(() => Event.Application("x", null!));
        Assert.Throws<ArgumentNullException>(() => Event.Domain("x", null!, "order", new { }));
    }

    [Fact]
    public void With_data_keeps_the_event_and_changes_its_data()
    {
        var made = Event.Domain("order.placed", "A-17", "order", new { Total = 1 });

        var changed = made.WithData(new { Total = 2 });

        Assert.Equal(made.Id, changed.Id);
        Assert.Equal(made.EntityId, changed.EntityId);
        Assert.Equal("{\"Total\":2}", changed.DataJson);
        Assert.Equal("{\"Total\":1}", made.DataJson);
    }

    [Fact]
    public void Names_are_checked_by_the_cores_rules()
    {
        Assert.True(EventNames.IsValid("order.placed", out var none));
        Assert.Null(none);
        Assert.False(EventNames.IsValid(new string('x', EventNames.MaxLength + 1), out var error));
        Assert.StartsWith("a name must be at most 256 characters long", error);
    }

    private sealed class FixedClock(DateTimeOffset now) : TimeProvider
    {
        public DateTimeOffset Now { get; } = now;

        public override DateTimeOffset GetUtcNow() => Now;
    }
}
