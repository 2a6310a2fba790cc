using System.Reflection;
using Events.CSharp;

namespace Facade.Tests;

/// <summary>The facade shows C# types only: no FSharp.Core type and no type of the core (Events.Core) in any public signature.</summary>
public class PublicApiTests
{
    private const BindingFlags Visible =
        BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    private static readonly Assembly Facade = typeof(EventsRuntime).Assembly;

    private static bool IsForbidden(Type type) =>
        type.Assembly.GetName().Name is "FSharp.Core" or "Events.Core";

    /// <summary>Every type a type is made of: itself, its element type and its generic arguments, recursively.</summary>
    private static IEnumerable<Type> Parts(Type type)
    {
        yield return type;
        if (type.HasElementType)
        {
            foreach (var part in Parts(type.GetElementType()!))
            {
                yield return part;
            }
        }

        if (type.IsGenericType)
        {
            foreach (var part in type.GetGenericArguments().SelectMany(Parts))
            {
                yield return part;
            }
        }

        if (type.IsGenericParameter)
        {
            foreach (var part in type.GetGenericParameterConstraints().SelectMany(Parts))
            {
                yield return part;
            }
        }
    }

    private static bool IsVisible(MethodBase? method) =>
        method is not null && (method.IsPublic || method.IsFamily || method.IsFamilyOrAssembly);

    /// <summary>Each type in a public signature of the facade, with where it appears.</summary>
    private static IEnumerable<(string Where, Type Type)> SignatureTypes()
    {
        foreach (var type in Facade.GetExportedTypes())
        {
            if (type.BaseType is { } baseType)
            {
                yield return ($"{type} base type", baseType);
            }

            foreach (var implemented in type.GetInterfaces())
            {
                yield return ($"{type} interface", implemented);
            }

            foreach (var parameter in type.GetGenericArguments())
            {
                yield return ($"{type} type parameter", parameter);
            }

            foreach (var member in type.GetMembers(Visible))
            {
                var where = $"{type}.{member.Name}";
                switch (member)
                {
                    case MethodBase method when IsVisible(method):
                        if (method is MethodInfo info)
                        {
                            yield return ($"{where} return", info.ReturnType);
                            foreach (var argument in info.GetGenericArguments())
                            {
                                yield return ($"{where} type parameter", argument);
                            }
                        }

                        foreach (var parameter in method.GetParameters())
                        {
                            yield return ($"{where}({parameter.Name})", parameter.ParameterType);
                        }

                        break;
                    case PropertyInfo property when IsVisible(property.GetMethod) || IsVisible(property.SetMethod):
                        yield return (where, property.PropertyType);
                        break;
                    case FieldInfo field when field.IsPublic || field.IsFamily || field.IsFamilyOrAssembly:
                        yield return (where, field.FieldType);
                        break;
                    case EventInfo @event when IsVisible(@event.AddMethod):
                        yield return (where, @event.EventHandlerType!);
                        break;
                }
            }
        }
    }

    [Fact]
    public void No_public_signature_of_the_facade_shows_an_FSharp_or_a_core_type()
    {
        var offending = SignatureTypes()
            .SelectMany(item => Parts(item.Type).Where(IsForbidden).Select(part => $"{item.Where}: {part}"))
            .Distinct()
            .ToList();

        Assert.True(offending.Count == 0, "F# or core types in public signatures:\n" + string.Join("\n", offending));
    }

    [Fact]
    public void The_check_sees_the_facades_public_surface()
    {
        var types = SignatureTypes().Select(item => item.Where).ToList();

        Assert.Contains(types, where => where.StartsWith("Events.CSharp.EventsRuntime.Create(options)", StringComparison.Ordinal));
        Assert.Contains(types, where => where.StartsWith("Events.CSharp.HandlerContext.Request", StringComparison.Ordinal));
        Assert.True(types.Count > 200, $"only {types.Count} signature types were seen");
    }

    [Fact]
    public void The_check_catches_a_core_type()
    {
        var internalRequest = typeof(HandlerRequest).GetProperty("Core", Visible)!.PropertyType;

        Assert.True(IsForbidden(internalRequest), "the wrapped core type is recognised as forbidden");
        Assert.Contains(Parts(typeof(Task<>).MakeGenericType(typeof(List<>).MakeGenericType(internalRequest))), IsForbidden);
    }

    [Fact]
    public void Every_public_type_is_in_the_facades_namespace_and_sealed_or_an_interface_or_an_enum_or_static()
    {
        foreach (var type in Facade.GetExportedTypes())
        {
            Assert.Equal("Events.CSharp", type.Namespace);
            var isStatic = type.IsAbstract && type.IsSealed;
            Assert.True(
                type.IsSealed || type.IsInterface || type.IsEnum || isStatic,
                $"{type} should be sealed, an interface, an enum or static");
        }
    }
}
