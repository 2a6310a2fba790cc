using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;

namespace Facade.Tests;

/// <summary>
/// The README's C# code is the code of the demo and of <see cref="GettingStartedTests"/>: each block marked
/// <c>&lt;!-- snippet: name --&gt;</c> must equal the code between <c>// begin-snippet: name</c> and
/// <c>// end-snippet</c> in a source file, so the README cannot show code that does not compile.
/// </summary>
public partial class ReadmeSectionTests
{
    private static string RepositoryRoot([CallerFilePath] string thisFile = "") =>
        Path.GetFullPath(Path.Combine(Path.GetDirectoryName(thisFile)!, "..", ".."));

    private static string ReadmePath => Path.Combine(RepositoryRoot(), "README.md");

    [GeneratedRegex(@"^[ \t]*// begin-snippet: (?<name>[\w-]+)[ \t]*\n(?<code>.*?)^[ \t]*// end-snippet", RegexOptions.Multiline | RegexOptions.Singleline)]
    private static partial Regex SourceSnippet();

    [GeneratedRegex(@"<!-- snippet: (?<name>[\w-]+) -->\s*```csharp\n(?<code>.*?)```", RegexOptions.Singleline)]
    private static partial Regex ReadmeSnippet();

    private static string Dedent(string code)
    {
        var lines = code.Replace("\r\n", "\n").TrimEnd('\n', ' ').Split('\n');
        var indent = lines.Where(line => line.Trim().Length > 0).Min(line => line.Length - line.TrimStart().Length);
        return string.Join("\n", lines.Select(line => line.Length >= indent ? line[indent..] : line.TrimStart()));
    }

    private static Dictionary<string, string> SourceSnippets()
    {
        var root = RepositoryRoot();
        var files = Directory.EnumerateFiles(Path.Combine(root, "samples"), "*.cs", SearchOption.AllDirectories)
            .Concat(Directory.EnumerateFiles(Path.Combine(root, "tests", "Events.CSharp.Tests"), "*.cs", SearchOption.AllDirectories))
            .Where(file => !file.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !file.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal));
        var snippets = new Dictionary<string, string>();
        foreach (var file in files)
        {
            foreach (Match match in SourceSnippet().Matches(File.ReadAllText(file).Replace("\r\n", "\n")))
            {
                snippets.Add(match.Groups["name"].Value, Dedent(match.Groups["code"].Value));
            }
        }

        return snippets;
    }

    [Fact]
    public void Every_marked_csharp_block_of_the_readme_is_code_from_the_demo_or_the_tests()
    {
        Assert.True(File.Exists(ReadmePath), $"the README is at {ReadmePath}");
        var sources = SourceSnippets();
        var blocks = ReadmeSnippet().Matches(File.ReadAllText(ReadmePath).Replace("\r\n", "\n"));

        Assert.True(blocks.Count >= 5, $"the README marks {blocks.Count} snippets");
        foreach (Match block in blocks)
        {
            var name = block.Groups["name"].Value;
            Assert.True(sources.TryGetValue(name, out var source), $"no source file has the snippet {name}");
            Assert.Equal(source, Dedent(block.Groups["code"].Value));
        }
    }

    [Fact]
    public void Every_csharp_block_of_the_readme_section_is_marked()
    {
        var text = File.ReadAllText(ReadmePath).Replace("\r\n", "\n");

        var all = Regex.Matches(text, "```csharp").Count;

        Assert.Equal(all, ReadmeSnippet().Matches(text).Count);
    }
}
