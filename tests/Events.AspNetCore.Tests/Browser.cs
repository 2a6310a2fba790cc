using OpenQA.Selenium;
using OpenQA.Selenium.Chrome;
using OpenQA.Selenium.Support.UI;

namespace AspNetCore.Tests;

/// <summary>
/// A headless Chromium driven through chromium-driver (the distribution's packages, which CI installs), with the
/// browser's console log kept so that a test can assert that a page logged no error.
/// </summary>
public sealed class Browser : IDisposable
{
    private const string ChromiumPath = "/usr/bin/chromium";
    private const string DriverFolder = "/usr/bin";

    private readonly ChromeDriver driver;

    public Browser()
    {
        if (!File.Exists(ChromiumPath) || !File.Exists(Path.Combine(DriverFolder, "chromedriver")))
        {
            throw new InvalidOperationException(
                $"the browser tests need {ChromiumPath} and {DriverFolder}/chromedriver (apt-get install chromium chromium-driver)");
        }

        var options = new ChromeOptions { BinaryLocation = ChromiumPath };
        options.AddArguments("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000");
        options.SetLoggingPreference(LogType.Browser, LogLevel.All);
        var service = ChromeDriverService.CreateDefaultService(DriverFolder, "chromedriver");
        service.HideCommandPromptWindow = true;
        service.SuppressInitialDiagnosticInformation = true;
        driver = new ChromeDriver(service, options, TimeSpan.FromSeconds(60));
    }

    public IWebDriver Driver => driver;

    public void Open(string url) => driver.Navigate().GoToUrl(url);

    /// <summary>Waits until the condition holds (a page draws after its fetches), failing with <paramref name="what"/>.</summary>
    public T WaitFor<T>(string what, Func<IWebDriver, T> condition)
    {
        var wait = new WebDriverWait(driver, TimeSpan.FromSeconds(20)) { Message = what };
        wait.IgnoreExceptionTypes(typeof(NoSuchElementException), typeof(StaleElementReferenceException));
        try
        {
            return wait.Until(condition);
        }
        catch (WebDriverTimeoutException timeout)
        {
            // What the page showed instead, to tell a wrong number from a page that did not draw.
            var shown = driver.ExecuteScript("return location.href + ' | ' + document.getElementById('page').outerHTML.slice(0, 3000);");
            throw new WebDriverTimeoutException($"{timeout.Message}; the page showed: {shown}", timeout);
        }
    }

    /// <summary>Clicks the element, finding it again if the page redrew it meanwhile.</summary>
    public void Click(string css) => WaitFor($"a click on {css}", d =>
    {
        d.FindElement(By.CssSelector(css)).Click();
        return true;
    });

    /// <summary>Waits until the element's text contains <paramref name="part"/>, and returns the text.</summary>
    public string TextContaining(string css, string part) => WaitFor($"\"{part}\" in {css}", d =>
        d.FindElement(By.CssSelector(css)).Text is { } text && text.Contains(part, StringComparison.Ordinal) ? text : null)!;

    public string TextOf(string css) => WaitFor($"text in {css}", d =>
        d.FindElement(By.CssSelector(css)).Text is { Length: > 0 } text ? text : null)!;

    /// <summary>The console entries logged since the last call that are warnings or errors.</summary>
    public IReadOnlyList<string> Complaints() =>
        [.. driver.Manage().Logs.GetLog(LogType.Browser)
            .Where(entry => entry.Level is LogLevel.Severe or LogLevel.Warning)
            .Select(entry => $"{entry.Level}: {entry.Message}")];

    public object? Script(string script) => driver.ExecuteScript(script);

    /// <summary>Writes a screenshot of the window to <paramref name="path"/>.</summary>
    public void Screenshot(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        driver.GetScreenshot().SaveAsFile(path);
    }

    public void Dispose()
    {
        driver.Quit();
        driver.Dispose();
    }
}
