using Events;
using Events.CSharp;

// Code in a namespace under Events., with the usings a user would write: every name binds to the facade,
// since the core's types live in Events.Core and are seen only by a file that opts in with its using.
namespace Events.Orders.Tests;

public class NamespaceTests
{
    [Fact]
    public void Names_under_Events_bind_to_the_facade_and_the_core_is_opt_in()
    {
        Type[] named =
        [
            typeof(Event),
            typeof(HandlerRequest),
            typeof(HandlerContext),
            typeof(DeadRequestQuery),
            typeof(DeadRequestPage),
            typeof(ErrorReport),
            typeof(IErrorReporter),
        ];
        Assert.All(named, type => Assert.Equal("Events.CSharp", type.Namespace));

        var core = typeof(Events.Core.Event).Assembly;
        var misplaced = core.GetExportedTypes().Where(type => type.Namespace is not "Events.Core").Select(type => type.FullName);
        Assert.Empty(misplaced);
    }
}
