#!/usr/bin/env bash
# Checks the packed packages as a user gets them: their contents, then a fresh C# project outside the
# clone that restores them from the local folder (their dependencies from the machine's usual feeds),
# builds and runs a handler; another that uses the Marten package builds. Each check counts as one test:
# "passed failed" goes to the file named by EVENTS_TEST_COUNTS, and the usual summary line is printed.
# Usage: tests/Packages/check.sh [packages folder, default artifacts/packages]
set -uo pipefail
cd "$(dirname "$0")/../.."
feed=$(realpath "${1:-artifacts/packages}")
version=$(sed -n 's:.*<VersionPrefix>\(.*\)</VersionPrefix>.*:\1:p' Directory.Build.props)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

check() {
  local name=$1
  shift
  if "$@" >"$work/check.log" 2>&1; then
    echo "  ok: $name"
    passed=$((passed + 1))
  else
    echo "  FAILED: $name"
    sed 's/^/    /' "$work/check.log" | tail -40
    failed=$((failed + 1))
  fi
}

package_has() {
  local package=$1
  shift
  local listing
  listing=$(unzip -l "$feed/$package.$version.nupkg") || return 1
  for entry in "$@"; do
    grep -q " $entry\$" <<<"$listing" || { echo "$package has no $entry"; return 1; }
  done
  unzip -p "$feed/$package.$version.nupkg" "$package.nuspec" >"$work/$package.nuspec"
  grep -q '<license type="expression">MIT</license>' "$work/$package.nuspec" || { echo "no MIT licence expression"; return 1; }
  grep -q '<readme>README.md</readme>' "$work/$package.nuspec" || { echo "no readme"; return 1; }
  grep -q '<repository type="git"' "$work/$package.nuspec" || { echo "no repository metadata"; return 1; }
  [ -s "$feed/$package.$version.snupkg" ] || { echo "no symbol package"; return 1; }
  # The listing is read whole first: grep -q on a pipe may stop reading early, and with pipefail the
  # writer's broken pipe would fail the check.
  listing=$(unzip -l "$feed/$package.$version.snupkg") || return 1
  grep -q '\.pdb$' <<<"$listing" || { echo "the symbol package has no PDB"; return 1; }
}

for package in Events.Core Events.Marten Events.CSharp Events.CSharp.Marten Events.AspNetCore; do
  check "$package $version: dll, XML docs, README, MIT, repository, symbols" \
    package_has "$package" "lib/net10.0/$package.dll" "lib/net10.0/$package.xml" "README.md"
done

check "Events.Cli $version: a .NET tool (dotnet events), README, MIT, repository, symbols" \
  package_has Events.Cli "tools/net10.0/any/Events.Cli.dll" "tools/net10.0/any/DotnetToolSettings.xml" "README.md"

# The fresh projects: outside the clone (none of its props apply), the local folder added to the feeds,
# a packages folder of their own (so no earlier copy of these packages is used) that falls back on the
# machine's for the dependencies.
cat >"$work/nuget.config" <<CONFIG
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="events-local" value="$feed" />
  </packageSources>
</configuration>
CONFIG
global_packages=$(dotnet nuget locals global-packages --list | sed 's/^global-packages: //')
export NUGET_PACKAGES="$work/packages" NUGET_FALLBACK_PACKAGES="$global_packages"

mkdir -p "$work/App" "$work/MartenApp"
cat >"$work/App/App.csproj" <<PROJECT
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable>
    <ImplicitUsings>enable</ImplicitUsings>
    <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="Events.CSharp" Version="$version" />
  </ItemGroup>
</Project>
PROJECT
cat >"$work/App/Program.cs" <<'PROGRAM'
using Events.CSharp;

var options = new EventsOptions().UseInMemoryStore();
options.Scheduler.Interval = TimeSpan.FromMilliseconds(50);
options.On<Greeting>().Handle("greet", (greeting, context, cancellationToken) =>
{
    Console.WriteLine($"handled {context.EventName}: hello, {greeting.Name} (attempt {context.Attempt})");
    return Task.CompletedTask;
});
await using var events = EventsRuntime.Create(options);
events.Start();
var raised = await events.RaiseAsync(Event.Application(new Greeting("packages")));
var requests = await events.WaitUntilHandledAsync(raised, TimeSpan.FromSeconds(30));
Console.WriteLine(string.Join(", ", requests.Select(request => $"{request.HandlerName}: {request.State}")));
await events.ShutdownAsync(TimeSpan.FromSeconds(5));
return requests.All(request => request.State == HandlerRequestState.Completed) ? 0 : 1;

[EventName("greeting.sent")]
internal sealed record Greeting(string Name);
PROGRAM
cat >"$work/MartenApp/MartenApp.csproj" <<PROJECT
<Project Sdk="Microsoft.NET.Sdk.Web">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable>
    <ImplicitUsings>enable</ImplicitUsings>
    <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="Events.CSharp.Marten" Version="$version" />
    <PackageReference Include="Events.AspNetCore" Version="$version" />
  </ItemGroup>
</Project>
PROJECT
cat >"$work/MartenApp/Program.cs" <<'PROGRAM'
using Events.AspNetCore;
using Events.CSharp;
using Marten;

var builder = WebApplication.CreateBuilder(args);
builder.Services.AddMarten(builder.Configuration.GetConnectionString("Marten") ?? "Host=localhost").UseLightweightSessions();
builder.Services.AddEvents(options => options.On<Greeting>().Handle<Greet>("greet")).UseMartenStore();
builder.Services.AddHealthChecks().AddEventsHealthChecks();
var app = builder.Build();
app.MapEventsAdmin("/ops/events").RequireAuthorization();
Console.WriteLine($"configured: {builder.Services.Count} services");

[EventName("greeting.sent")]
internal sealed record Greeting(string Name);

internal sealed class Greet(IDocumentSession session) : IEventHandler<Greeting>
{
    public Task<HandlerOutcome> HandleAsync(Greeting data, HandlerContext context, CancellationToken cancellationToken)
    {
        session.Store(new Greeted { Id = data.Name });
        return Task.FromResult(HandlerOutcome.Success);
    }
}

internal sealed class Greeted
{
    public string Id { get; set; } = "";
}
PROGRAM

no_marten() {
  if grep -qi '"Marten/' "$work/App/obj/project.assets.json"; then
    echo "the facade pulled Marten:"
    grep -i '"Marten/' "$work/App/obj/project.assets.json"
    return 1
  fi
}

check "a fresh project restores Events.CSharp from the folder and builds" \
  dotnet build "$work/App" -c Release --configfile "$work/nuget.config"
check "Events.CSharp alone does not pull Marten" no_marten
check "the fresh project runs a handler" dotnet run --project "$work/App" -c Release --no-build
cat "$work/check.log" | sed 's/^/    /'
check "a fresh project restores Events.CSharp.Marten and Events.AspNetCore and builds a handler class taking IDocumentSession, the admin endpoints and health checks" \
  dotnet build "$work/MartenApp" -c Release --configfile "$work/nuget.config"

if [ -n "${EVENTS_TEST_COUNTS:-}" ]; then
  echo "$passed $failed" >"$EVENTS_TEST_COUNTS"
fi
printf "\n%s passed, %s failed\n" "$passed" "$failed"
[ "$failed" -eq 0 ]
