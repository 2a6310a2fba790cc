using Events.Core;
using OpenTelemetry.Metrics;
using OpenTelemetry.Trace;

namespace Events.CSharp;

/// <summary>The names under which Events publishes traces and metrics, and OpenTelemetry registrations.</summary>
public static class EventsInstrumentation
{
    /// <summary>The name of the <c>ActivitySource</c> and the <c>Meter</c> Events publishes on.</summary>
    public static string SourceName => Telemetry.SourceName;

    /// <summary>Collects the spans of Events: processing rounds, each event's processing, each request's execution, each handler.</summary>
    /// <param name="builder">OpenTelemetry's tracer provider builder.</param>
    /// <returns>The builder, to chain.</returns>
    public static TracerProviderBuilder AddEventsInstrumentation(this TracerProviderBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.AddSource(SourceName);
    }

    /// <summary>Collects the metrics of Events: counters, histograms and gauges of events, requests and handlers.</summary>
    /// <param name="builder">OpenTelemetry's meter provider builder.</param>
    /// <returns>The builder, to chain.</returns>
    public static MeterProviderBuilder AddEventsInstrumentation(this MeterProviderBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.AddMeter(SourceName);
    }
}
