namespace EventsDemo;

/// <summary>Which store the demo keeps its events in.</summary>
public enum DemoStore
{
    /// <summary>In memory, gone when the demo stops.</summary>
    Memory,

    /// <summary>PostgreSQL through Marten.</summary>
    Postgres,
}

/// <summary>The demo's command line.</summary>
/// <param name="Concurrent">Use the concurrent scheduler instead of the cooperative one.</param>
/// <param name="Store">Where events are kept.</param>
/// <param name="Duration">Stop by itself after this long; <see langword="null"/> to run until Ctrl+C or SIGTERM.</param>
/// <param name="Output">The folder traces.jsonl and metrics.jsonl are written to.</param>
public sealed record DemoSettings(bool Concurrent, DemoStore Store, TimeSpan? Duration, string Output)
{
    /// <summary>Whether the dashboard is served (default: yes).</summary>
    public bool Dashboard { get; init; } = true;

    /// <summary>The loopback port of the dashboard; 0 (the default) takes a free one.</summary>
    public int DashboardPort { get; init; }

    /// <summary>How to call the demo.</summary>
    public const string Usage = """
        usage: Events.Demo [--concurrent] [--store memory|postgres] [--duration <seconds>] [--output <folder>]
                          [--dashboard-port <port> | --no-dashboard]

          --concurrent         run the processor and the executor in two loops (default: one cooperative loop)
          --store memory       keep events in memory (default)
          --store postgres     keep events in PostgreSQL: the connection string in EVENTS_POSTGRES, else a
                               throwaway local server
          --duration <s>       stop by itself after this many seconds (default: run until Ctrl+C or SIGTERM)
          --output <folder>    where traces.jsonl and metrics.jsonl go (default: the current folder)
          --dashboard-port <n> serve the dashboard on this loopback port (default: a free one, printed)
          --no-dashboard       do not serve the dashboard
        """;

    /// <summary>Reads the command line.</summary>
    /// <param name="args">The arguments.</param>
    /// <param name="settings">The settings, when the arguments are valid.</param>
    /// <param name="error">What is wrong, when they are not.</param>
    /// <returns>Whether the arguments are valid.</returns>
    public static bool TryParse(IReadOnlyList<string> args, out DemoSettings settings, out string? error)
    {
        settings = new DemoSettings(false, DemoStore.Memory, null, Directory.GetCurrentDirectory());
        error = null;
        for (var i = 0; i < args.Count; i++)
        {
            string? Value() => i + 1 < args.Count ? args[++i] : null;
            switch (args[i])
            {
                case "--concurrent":
                    settings = settings with { Concurrent = true };
                    break;
                case "--store":
                    switch (Value())
                    {
                        case "memory":
                            settings = settings with { Store = DemoStore.Memory };
                            break;
                        case "postgres":
                            settings = settings with { Store = DemoStore.Postgres };
                            break;
                        case var other:
                            error = $"--store takes memory or postgres, not {other ?? "nothing"}";
                            return false;
                    }

                    break;
                case "--duration":
                    if (!double.TryParse(Value(), System.Globalization.CultureInfo.InvariantCulture, out var seconds) || seconds <= 0)
                    {
                        error = "--duration takes a positive number of seconds";
                        return false;
                    }

                    settings = settings with { Duration = TimeSpan.FromSeconds(seconds) };
                    break;
                case "--output":
                    if (Value() is not { } folder)
                    {
                        error = "--output takes a folder";
                        return false;
                    }

                    settings = settings with { Output = Path.GetFullPath(folder) };
                    break;
                case "--dashboard-port":
                    if (!int.TryParse(Value(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var port)
                        || port is < 1 or > 65535)
                    {
                        error = "--dashboard-port takes a port from 1 to 65535";
                        return false;
                    }

                    settings = settings with { Dashboard = true, DashboardPort = port };
                    break;
                case "--no-dashboard":
                    settings = settings with { Dashboard = false };
                    break;
                case "--help" or "-h":
                    error = "";
                    return false;
                case var unknown:
                    error = $"unknown argument {unknown}";
                    return false;
            }
        }

        return true;
    }
}
