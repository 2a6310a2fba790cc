using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace Events.CSharp;

/// <summary>
/// Reads the engine's settings from configuration (a section such as <c>"Events"</c> of
/// <c>appsettings.json</c>): <c>Processor</c> (<c>Workers</c>, <c>Limit</c>, <c>ClaimLease</c>), <c>Executor</c>
/// (<c>Workers</c>, <c>Limit</c>, <c>Lease</c>) and <c>Scheduler</c> (<c>Mode</c>, <c>Interval</c>,
/// <c>TelemetryPrefix</c>, <c>ShutdownGrace</c>). Times are <c>TimeSpan</c> texts (<c>"00:05:00"</c>). What
/// the section does not set keeps its value.
/// </summary>
public static class EventsConfiguration
{
    private delegate string? Setter(EventsOptions options, string value);

    private static readonly Dictionary<string, Dictionary<string, Setter>> Settings = new(StringComparer.OrdinalIgnoreCase)
    {
        ["Processor"] = new(StringComparer.OrdinalIgnoreCase)
        {
            ["Workers"] = Int((options, value) => options.Processor.Workers = value),
            ["Limit"] = Int((options, value) => options.Processor.Limit = value),
            ["ClaimLease"] = Time((options, value) => options.Processor.ClaimLease = value),
        },
        ["Executor"] = new(StringComparer.OrdinalIgnoreCase)
        {
            ["Workers"] = Int((options, value) => options.Executor.Workers = value),
            ["Limit"] = Int((options, value) => options.Executor.Limit = value),
            ["Lease"] = Time((options, value) => options.Executor.Lease = value),
        },
        ["Scheduler"] = new(StringComparer.OrdinalIgnoreCase)
        {
            ["Mode"] = (options, value) =>
            {
                if (Enum.TryParse<SchedulerMode>(value, ignoreCase: true, out var mode) && Enum.IsDefined(mode) && !int.TryParse(value, out _))
                {
                    options.Scheduler.Mode = mode;
                    return null;
                }

                return $"\"{value}\" is not Cooperative or Concurrent";
            },
            ["Interval"] = Time((options, value) => options.Scheduler.Interval = value),
            ["TelemetryPrefix"] = (options, value) =>
            {
                options.Scheduler.TelemetryPrefix = value;
                return null;
            },
            ["ShutdownGrace"] = Time((options, value) => options.Scheduler.ShutdownGrace = value),
        },
    };

    /// <summary>
    /// Sets the engine's settings from a configuration section. Every value that cannot be read, and every
    /// key that is not a setting, is kept and reported, together with the engine's own checks, when the
    /// runtime is made (<see cref="ArgumentException"/> listing every reason).
    /// </summary>
    /// <param name="options">The options to set.</param>
    /// <param name="section">The section, such as <c>configuration.GetSection("Events")</c>.</param>
    /// <returns>The options, to chain.</returns>
    public static EventsOptions BindSettings(this EventsOptions options, IConfiguration section)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(section);
        foreach (var group in section.GetChildren())
        {
            if (!Settings.TryGetValue(group.Key, out var setters))
            {
                options.SettingsErrors.Add($"{group.Path}: not a setting (expected Processor, Executor or Scheduler)");
                continue;
            }

            foreach (var setting in group.GetChildren())
            {
                if (!setters.TryGetValue(setting.Key, out var set))
                {
                    options.SettingsErrors.Add($"{setting.Path}: not a setting (expected {string.Join(", ", setters.Keys)})");
                }
                else if (setting.Value is null)
                {
                    options.SettingsErrors.Add($"{setting.Path}: expected a value, not a section");
                }
                else if (set(options, setting.Value.Trim()) is { } error)
                {
                    options.SettingsErrors.Add($"{setting.Path}: {error}");
                }
            }
        }

        return options;
    }

    private static Setter Int(Action<EventsOptions, int> set) =>
        (options, value) =>
        {
            if (!int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var number))
            {
                return $"\"{value}\" is not a whole number";
            }

            set(options, number);
            return null;
        };

    private static Setter Time(Action<EventsOptions, TimeSpan> set) =>
        (options, value) =>
        {
            if (!TimeSpan.TryParse(value, CultureInfo.InvariantCulture, out var time))
            {
                return $"\"{value}\" is not a time span (such as 00:00:30)";
            }

            set(options, time);
            return null;
        };
}
