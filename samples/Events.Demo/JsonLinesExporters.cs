using System.Diagnostics;
using System.Text.Encodings.Web;
using System.Text.Json;
using OpenTelemetry;
using OpenTelemetry.Metrics;

namespace EventsDemo;

/// <summary>Writes one JSON object per line to a file, one line per exported item.</summary>
internal sealed class JsonLinesFile : IDisposable
{
    private readonly FileStream stream;
    private readonly Utf8JsonWriter writer;
    private readonly Lock gate = new();

    public JsonLinesFile(string path)
    {
        Path = path;
        stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read);
        writer = new Utf8JsonWriter(stream, new JsonWriterOptions { SkipValidation = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
    }

    public string Path { get; }

    public long Lines { get; private set; }

    /// <summary>Writes the lines one batch produces, then flushes them to the file.</summary>
    public void WriteBatch(Action<Action<Action<Utf8JsonWriter>>> batch)
    {
        lock (gate)
        {
            batch(line =>
            {
                writer.Reset();
                writer.WriteStartObject();
                line(writer);
                writer.WriteEndObject();
                writer.Flush();
                stream.WriteByte((byte)'\n');
                Lines++;
            });
            stream.Flush();
        }
    }

    public void Dispose()
    {
        lock (gate)
        {
            writer.Dispose();
            stream.Dispose();
        }
    }

    /// <summary>Writes a tag value as the JSON type closest to it.</summary>
    public static void WriteValue(Utf8JsonWriter writer, string name, object? value)
    {
        switch (value)
        {
            case null:
                writer.WriteNull(name);
                break;
            case bool flag:
                writer.WriteBoolean(name, flag);
                break;
            case int or long or short or byte:
                writer.WriteNumber(name, Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture));
                break;
            case double or float or decimal:
                writer.WriteNumber(name, Convert.ToDouble(value, System.Globalization.CultureInfo.InvariantCulture));
                break;
            default:
                writer.WriteString(name, Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture));
                break;
        }
    }
}

/// <summary>Exports spans as JSON lines: one object per ended span.</summary>
internal sealed class JsonLinesActivityExporter(string path) : BaseExporter<Activity>
{
    private readonly JsonLinesFile file = new(path);

    public override ExportResult Export(in Batch<Activity> batch)
    {
        var spans = new List<Activity>();
        foreach (var activity in batch)
        {
            spans.Add(activity);
        }

        file.WriteBatch(writeLine =>
        {
            foreach (var span in spans)
            {
                writeLine(writer => WriteSpan(writer, span));
            }
        });
        return ExportResult.Success;
    }

    private static void WriteSpan(Utf8JsonWriter writer, Activity span)
    {
        writer.WriteString("name", span.DisplayName);
        writer.WriteString("source", span.Source.Name);
        writer.WriteString("kind", span.Kind.ToString());
        writer.WriteString("traceId", span.TraceId.ToHexString());
        writer.WriteString("spanId", span.SpanId.ToHexString());
        if (span.ParentSpanId != default)
        {
            writer.WriteString("parentSpanId", span.ParentSpanId.ToHexString());
        }

        writer.WriteString("start", span.StartTimeUtc);
        writer.WriteNumber("durationMs", span.Duration.TotalMilliseconds);
        writer.WriteString("status", span.Status.ToString());
        if (span.StatusDescription is { } description)
        {
            writer.WriteString("statusDescription", description);
        }

        writer.WriteStartObject("attributes");
        foreach (var tag in span.TagObjects)
        {
            JsonLinesFile.WriteValue(writer, tag.Key, tag.Value);
        }

        writer.WriteEndObject();
        writer.WriteStartArray("links");
        foreach (var link in span.Links)
        {
            writer.WriteStartObject();
            writer.WriteString("traceId", link.Context.TraceId.ToHexString());
            writer.WriteString("spanId", link.Context.SpanId.ToHexString());
            writer.WriteEndObject();
        }

        writer.WriteEndArray();
        writer.WriteStartArray("events");
        foreach (var spanEvent in span.Events)
        {
            writer.WriteStartObject();
            writer.WriteString("name", spanEvent.Name);
            writer.WriteString("time", spanEvent.Timestamp);
            writer.WriteStartObject("attributes");
            foreach (var tag in spanEvent.Tags)
            {
                JsonLinesFile.WriteValue(writer, tag.Key, tag.Value);
            }

            writer.WriteEndObject();
            writer.WriteEndObject();
        }

        writer.WriteEndArray();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            file.Dispose();
        }

        base.Dispose(disposing);
    }
}

/// <summary>Exports metrics as JSON lines: one object per metric point per export.</summary>
internal sealed class JsonLinesMetricExporter(string path) : BaseExporter<Metric>
{
    private readonly JsonLinesFile file = new(path);

    public override ExportResult Export(in Batch<Metric> batch)
    {
        var metrics = new List<Metric>();
        foreach (var metric in batch)
        {
            metrics.Add(metric);
        }

        file.WriteBatch(writeLine =>
        {
            foreach (var metric in metrics)
            {
                foreach (ref readonly var point in metric.GetMetricPoints())
                {
                    var copy = point;
                    writeLine(writer => WritePoint(writer, metric, copy));
                }
            }
        });
        return ExportResult.Success;
    }

    private static void WritePoint(Utf8JsonWriter writer, Metric metric, MetricPoint point)
    {
        writer.WriteString("name", metric.Name);
        writer.WriteString("meter", metric.MeterName);
        writer.WriteString("unit", metric.Unit);
        writer.WriteString("type", metric.MetricType.ToString());
        writer.WriteString("start", point.StartTime);
        writer.WriteString("end", point.EndTime);
        writer.WriteStartObject("attributes");
        foreach (var tag in point.Tags)
        {
            JsonLinesFile.WriteValue(writer, tag.Key, tag.Value);
        }

        writer.WriteEndObject();
        switch (metric.MetricType)
        {
            case MetricType.LongSum or MetricType.LongSumNonMonotonic:
                writer.WriteNumber("value", point.GetSumLong());
                break;
            case MetricType.DoubleSum or MetricType.DoubleSumNonMonotonic:
                writer.WriteNumber("value", point.GetSumDouble());
                break;
            case MetricType.LongGauge:
                writer.WriteNumber("value", point.GetGaugeLastValueLong());
                break;
            case MetricType.DoubleGauge:
                writer.WriteNumber("value", point.GetGaugeLastValueDouble());
                break;
            case MetricType.Histogram:
                writer.WriteNumber("count", point.GetHistogramCount());
                writer.WriteNumber("sum", point.GetHistogramSum());
                writer.WriteStartArray("buckets");
                foreach (var bucket in point.GetHistogramBuckets())
                {
                    writer.WriteStartObject();
                    if (double.IsPositiveInfinity(bucket.ExplicitBound))
                    {
                        writer.WriteString("le", "+Inf");
                    }
                    else
                    {
                        writer.WriteNumber("le", bucket.ExplicitBound);
                    }

                    writer.WriteNumber("count", bucket.BucketCount);
                    writer.WriteEndObject();
                }

                writer.WriteEndArray();
                break;
            default:
                writer.WriteString("value", "unsupported metric type");
                break;
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            file.Dispose();
        }

        base.Dispose(disposing);
    }
}
