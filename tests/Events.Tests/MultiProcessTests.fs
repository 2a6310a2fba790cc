/// Several real OS processes (tests/Events.Worker) on one PostgreSQL database: claims hold across
/// processes, a process killed mid-run loses nothing, and a database restart needs no person. The
/// evidence is the workers' own table, `worker_runs`, where every handler run records its start and end.
module Events.Tests.MultiProcessTests

open System
open Events.Core
open System.Collections.Concurrent
open System.Collections.Generic
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices
open System.Threading
open System.Threading.Tasks
open Expecto
open Npgsql
open global.Events
open Events.Marten
open Events.Testing

let private server = ThrowawayPostgresTests.server

let private none = CancellationToken.None

/// The event the workers handle (their default), and its handlers.
let private eventName = "multiprocess.work"

let private handlerNames = [ "first"; "second" ]

/// The test's own store does not listen.
let private quiet =
    { MartenEventStoreOptions.Default with
        ListenForWork = false
    }

module private Native =
    [<DllImport("libc", EntryPoint = "kill", SetLastError = true)>]
    extern int kill(int pid, int signal)

    let sigterm = 15

/// The worker program's assembly. The test project's build writes its path (wherever the build put
/// it: the project's bin folder, or an --artifacts-path) to events-worker.path beside the tests.
let private workerAssembly =
    lazy
        (let pathFile = Path.Combine(AppContext.BaseDirectory, "events-worker.path")

         if not (File.Exists pathFile) then
             failwith $"%s{pathFile} is missing: build the tests with their project file, which builds the worker"

         let path = File.ReadAllText(pathFile).Trim()

         if not (File.Exists path) then
             failwith $"the worker assembly %s{path} named in %s{pathFile} is missing: build the tests again"

         path)

/// The dotnet host of the runtime this process runs on (the tests may run through their apphost).
let private dotnetHost =
    lazy
        (let beside =
            Path.GetFullPath(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", "..", "dotnet"))

         if File.Exists beside then
             beside
         else
             match Environment.GetEnvironmentVariable "DOTNET_HOST_PATH" with
             | null
             | "" -> "dotnet"
             | path -> path)

/// One worker process. Its output is kept (the last lines) for failure messages; disposing it kills the
/// process if it still runs.
[<Sealed>]
type private Worker(name: string, child: Process) =
    let lines = ConcurrentQueue<string>()
    let ready = TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)

    let keep (stream: string) (line: string) =
        if not (isNull line) then
            lines.Enqueue $"%s{stream}: %s{line}"

            while lines.Count > 300 do
                lines.TryDequeue() |> ignore

            if stream = "out" && line.StartsWith "ready" then
                ready.TrySetResult() |> ignore

    do
        child.OutputDataReceived.Add(fun args -> keep "out" args.Data)
        child.ErrorDataReceived.Add(fun args -> keep "err" args.Data)

    /// Starts the worker on the database with these extra arguments; it stops when its stdin closes
    /// (when this process dies), so it never outlives the tests.
    static member Start(name: string, connectionString: string, arguments: string list) =
        let info = ProcessStartInfo(dotnetHost.Value)
        info.ArgumentList.Add workerAssembly.Value

        for argument in
            [
                "--connection"
                connectionString
                "--stop-on-stdin-close"
                "--interval-ms"
                "100"
            ]
            @ arguments do
            info.ArgumentList.Add argument

        info.UseShellExecute <- false
        info.RedirectStandardInput <- true
        info.RedirectStandardOutput <- true
        info.RedirectStandardError <- true
        let child = new Process(StartInfo = info)
        let worker = new Worker(name, child)

        if not (child.Start()) then
            failwith $"could not start worker %s{name}"

        child.BeginOutputReadLine()
        child.BeginErrorReadLine()
        worker

    member _.Name = name

    /// The OS process id (the worker records it with every run).
    member _.Pid = child.Id

    member _.HasExited = child.HasExited

    /// The lines it printed on stdout (the last 300).
    member _.OutLines =
        lines.ToArray()
        |> Array.choose (fun line ->
            if line.StartsWith "out: " then
                Some(line.Substring 5)
            else
                None)

    /// Writes a line to its stdin.
    member _.Tell(line: string) =
        child.StandardInput.WriteLine line
        child.StandardInput.Flush()

    /// The last lines it printed.
    member _.Output =
        let shown = lines.ToArray()

        $"--- worker %s{name} (pid %d{child.Id}), last %d{shown.Length} lines:\n"
        + String.Join("\n", shown)

    /// Waits until it prints that it is ready; fails if it exits or takes longer than the timeout.
    member this.WaitReadyAsync(timeout: TimeSpan) =
        task {
            let! _ = Task.WhenAny(ready.Task, child.WaitForExitAsync(), Task.Delay timeout)

            if not ready.Task.IsCompleted then
                failtestf "worker %s did not get ready within %O\n%s" name timeout this.Output
        }

    /// kill -9: the process dies at once, whatever it was doing.
    member _.KillHard() =
        child.Kill()

        if not (child.WaitForExit(TimeSpan.FromSeconds 10.0)) then
            failtestf "worker %s did not die after SIGKILL" name

    /// SIGTERM, then waits for the graceful shutdown; returns the exit code.
    member this.TerminateAsync(timeout: TimeSpan) =
        task {
            if Native.kill (child.Id, Native.sigterm) <> 0 then
                failtestf "could not send SIGTERM to worker %s (errno %d)" name (Marshal.GetLastPInvokeError())

            use cancel = new CancellationTokenSource(timeout)

            try
                do! child.WaitForExitAsync cancel.Token
            with :? OperationCanceledException ->
                failtestf "worker %s did not stop within %O of SIGTERM\n%s" name timeout this.Output

            child.WaitForExit() // drains the output readers
            return child.ExitCode
        }

    interface IDisposable with
        member _.Dispose() =
            try
                if not child.HasExited then
                    child.Kill()
                    child.WaitForExit(TimeSpan.FromSeconds 10.0) |> ignore
            with :? InvalidOperationException ->
                ()

            child.Dispose()

/// The workers of a test, killed (if still running) when disposed.
[<Sealed>]
type private Workers() =
    let started = ResizeArray<Worker>()

    /// Starts workers with these arguments and waits until all are ready.
    member _.StartAsync(connectionString: string, count: int, arguments: string list) =
        task {
            let workers =
                [
                    for _ in 1..count do
                        let worker =
                            Worker.Start($"%c{char (int 'A' + started.Count)}", connectionString, arguments)

                        started.Add worker
                        worker
                ]

            for worker in workers do
                do! worker.WaitReadyAsync(TimeSpan.FromSeconds 60.0)

            return workers
        }

    /// Every worker's last lines, for failure messages.
    member _.Output = String.Join("\n", started |> Seq.map _.Output)

    interface IDisposable with
        member _.Dispose() =
            for worker in started do
                (worker :> IDisposable).Dispose()

/// One handler run, as the worker recorded it.
type private Run =
    {
        RequestId: Guid
        HandlerName: string
        Attempt: int
        /// The request's last error as this attempt was handed it (the failure of the attempt before).
        LastError: string option
        Pid: int
        StartedAt: DateTimeOffset
        /// None when the handler never returned (its process died) or could not record its end.
        EndedAt: DateTimeOffset option
    }

/// Every run recorded, in insertion order. Not pooled, so that a server restart leaves nothing broken.
let private readRuns (connectionString: string) =
    task {
        let builder = NpgsqlConnectionStringBuilder(connectionString, Pooling = false)
        use connection = new NpgsqlConnection(builder.ConnectionString)
        do! connection.OpenAsync()

        use command =
            new NpgsqlCommand(
                "SELECT request_id, handler_name, attempt, last_error, pid, started_at, ended_at FROM worker_runs ORDER BY id",
                connection
            )

        use! reader = command.ExecuteReaderAsync()
        let runs = ResizeArray()
        let! more = reader.ReadAsync()
        let mutable more = more

        while more do
            runs.Add
                {
                    RequestId = reader.GetGuid 0
                    HandlerName = reader.GetString 1
                    Attempt = reader.GetInt32 2
                    LastError = if reader.IsDBNull 3 then None else Some(reader.GetString 3)
                    Pid = reader.GetInt32 4
                    StartedAt = reader.GetFieldValue<DateTimeOffset> 5
                    EndedAt =
                        if reader.IsDBNull 6 then
                            None
                        else
                            Some(reader.GetFieldValue<DateTimeOffset> 6)
                }

            let! next = reader.ReadAsync()
            more <- next

        return List.ofSeq runs
    }

/// Pairs of runs of one request that overlap in time; a run without an end is taken to end at
/// `openEnd`. Sorted by start, two runs of a request overlap only if two neighbours do.
let private overlapping (openEnd: DateTimeOffset) (runs: Run list) =
    runs
    |> List.groupBy _.RequestId
    |> List.collect (fun (_, runs) ->
        runs
        |> List.sortBy _.StartedAt
        |> List.pairwise
        |> List.filter (fun (earlier, later) -> defaultArg earlier.EndedAt openEnd > later.StartedAt))

let private requestsOf (store: MartenEventStore) =
    TestSupport.toList ((store :> IEventStore).RequestsAsync none)

let private eventsOf (store: MartenEventStore) =
    TestSupport.toList ((store :> IEventStore).EventsAsync none)

let private isCompleted (request: HandlerRequest) =
    match request.State with
    | RequestState.Completed _ -> true
    | RequestState.Runnable _
    | RequestState.Running _
    | RequestState.Dead
    | RequestState.Canceled _ -> false

/// Appends `count` events of the workers' event through the store; returns their ids.
let private appendWork (store: MartenEventStore) (count: int) =
    task {
        let factory = EventFactory()

        let events =
            [
                for index in 1..count do
                    match factory.Application(eventName, {| Index = index |}) with
                    | Ok event -> event
                    | Error error -> failwith error.Message
            ]

        let! stored = (store :> IEventStore).AppendAsync(events, none)
        return stored |> List.map _.Id
    }

/// Polls (every 250 ms) until the condition holds; fails after the timeout with the workers' output.
let private eventually (timeout: TimeSpan) (what: string) (workers: Workers) (condition: unit -> Task<bool>) =
    task {
        let clock = Stopwatch.StartNew()
        let mutable holds = false

        while not holds && clock.Elapsed < timeout do
            let! now = condition ()
            holds <- now

            if not holds then
                do! Task.Delay 250

        if not holds then
            failtestf "timed out after %O waiting until %s\n%s" timeout what workers.Output
    }

let private completedCount (store: MartenEventStore) () =
    task {
        let! requests = requestsOf store
        return requests |> List.filter isCompleted |> List.length
    }

/// The fan-out held across processes: every event processed, exactly one request per configured
/// handler, and nothing else.
let private expectOneRequestPerHandler (eventIds: Guid list) (events: Event list) (requests: HandlerRequest list) =
    Expect.equal (events |> List.map _.Id |> Set.ofList) (Set.ofList eventIds) "the store holds the events appended"
    Expect.all events Event.isProcessed "every event was processed"

    let expected =
        set
            [
                for id in eventIds do
                    for handler in handlerNames -> id, handler
            ]

    let actual =
        requests
        |> List.countBy (fun request -> request.EventId, request.HandlerName.Value)

    Expect.equal (actual |> List.map fst |> Set.ofList) expected "one request per event and handler"

    Expect.all actual (fun (_, count) -> count = 1) "no event was fanned out twice"

/// Sends SIGTERM to each worker and expects a graceful exit (code 0) within 30 s.
let private terminate (workers: Worker list) =
    task {
        for worker in workers do
            let! code = worker.TerminateAsync(TimeSpan.FromSeconds 30.0)
            Expect.equal code 0 $"worker %s{worker.Name} shuts down gracefully on SIGTERM\n%s{worker.Output}"
    }

/// Runs the body with a test store over the database and a set of workers; kills leftover workers and
/// disposes the store whatever happens.
let private withWorkers (connectionString: string) (body: MartenEventStore -> Workers -> Task<unit>) =
    task {
        let! store = MartenEventStore.CreateAsync(connectionString, options = quiet)
        use workers = new Workers()

        try
            do! body store workers
        finally
            (workers :> IDisposable).Dispose()
            (store :> IDisposable).Dispose()
    }

let private backlog =
    testTask "two processes run a backlog: each request exactly once, never two runs of one at a time" {
        let! connectionString = server.Value.CreateDatabaseAsync()

        do!
            withWorkers connectionString (fun store workers ->
                task {
                    let! started =
                        workers.StartAsync(connectionString, 2, [ "--workers"; "4"; "--handler-delay-ms"; "10" ])

                    let! eventIds = appendWork store 300
                    let expected = 300 * handlerNames.Length

                    do!
                        eventually (TimeSpan.FromSeconds 90.0) $"%d{expected} requests completed" workers (fun () ->
                            task {
                                let! completed = completedCount store ()
                                return completed = expected
                            })

                    do! terminate started
                    let! events = eventsOf store
                    let! requests = requestsOf store
                    let! runs = readRuns connectionString
                    expectOneRequestPerHandler eventIds events requests
                    Expect.all requests isCompleted "every request completed"
                    Expect.all requests (fun request -> request.Errors = 0) "no attempt failed"

                    Expect.equal
                        (runs |> List.map _.RequestId |> List.sort)
                        (requests |> List.map _.Id |> List.sort)
                        "each request ran exactly once"

                    Expect.all
                        runs
                        (fun run -> run.EndedAt.IsSome && run.Attempt = 1)
                        "every run was a first attempt and ended"

                    Expect.isEmpty (overlapping DateTimeOffset.MaxValue runs) "no request ran twice at the same time"

                    let pids = started |> List.map _.Pid |> Set.ofList

                    Expect.equal
                        (runs |> List.map _.Pid |> Set.ofList)
                        pids
                        "both processes ran handlers, and no other process did"
                })
    }

let private killed =
    testTask
        "a process killed with SIGKILL mid-run: its running requests rerun elsewhere after the lease, one failed attempt each" {
        let! connectionString = server.Value.CreateDatabaseAsync()
        let lease = TimeSpan.FromSeconds 3.0

        do!
            withWorkers connectionString (fun store workers ->
                task {
                    // Slow handlers well inside the lease (with room for a loaded machine); one claim holds only
                    // what the workers start at once (the worker's Limit is its worker count).
                    let! started =
                        workers.StartAsync(
                            connectionString,
                            2,
                            [
                                "--workers"
                                "3"
                                "--handler-delay-ms"
                                "700"
                                "--lease-ms"
                                string (int lease.TotalMilliseconds)
                            ]
                        )

                    let victim, survivor = started[0], started[1]
                    let! eventIds = appendWork store 30
                    let expected = 30 * handlerNames.Length

                    do!
                        eventually (TimeSpan.FromSeconds 30.0) "the victim is running two handlers" workers (fun () ->
                            task {
                                let! runs = readRuns connectionString

                                let running =
                                    runs |> List.filter (fun run -> run.Pid = victim.Pid && run.EndedAt.IsNone)

                                return running.Length >= 2
                            })

                    victim.KillHard()
                    let killedAt = DateTimeOffset.UtcNow

                    do!
                        eventually (TimeSpan.FromSeconds 60.0) $"%d{expected} requests completed" workers (fun () ->
                            task {
                                let! completed = completedCount store ()
                                return completed = expected
                            })

                    Expect.isFalse survivor.HasExited "the survivor kept running"
                    do! terminate [ survivor ]
                    let! events = eventsOf store
                    let! requests = requestsOf store
                    let! runs = readRuns connectionString
                    let context = $"\n%s{workers.Output}"
                    expectOneRequestPerHandler eventIds events requests
                    Expect.all requests isCompleted "every request completed"

                    let runsOf = runs |> List.groupBy _.RequestId |> Map.ofList

                    let interrupted =
                        runs
                        |> List.filter (fun run -> run.Pid = victim.Pid && run.EndedAt.IsNone)
                        |> List.map _.RequestId
                        |> Set.ofList

                    Expect.isGreaterThanOrEqual interrupted.Count 2 $"the kill interrupted running handlers%s{context}"

                    Expect.all
                        runs
                        (fun run -> run.Pid = survivor.Pid || run.StartedAt <= killedAt)
                        "nothing ran in the killed process after the kill"

                    for request in requests do
                        let runs = runsOf[request.Id] |> List.sortBy _.StartedAt

                        Expect.equal
                            (runs |> List.map _.Attempt)
                            [ 1 .. runs.Length ]
                            $"request %O{request.Id}: attempts numbered 1, 2, ... in order"

                        Expect.isSome (List.last runs).EndedAt $"request %O{request.Id}: its last run ended"

                        if interrupted.Contains request.Id then
                            Expect.equal
                                request.Errors
                                1
                                $"request %O{request.Id}: the killed attempt is one failed attempt"

                            Expect.isNone
                                request.LastError
                                $"request %O{request.Id}: its success cleared the last error, as the core's Succeed does"

                            match runs with
                            | [ first; second ] ->
                                Expect.equal first.Pid victim.Pid $"request %O{request.Id}: first run in the victim"
                                Expect.equal second.Pid survivor.Pid $"request %O{request.Id}: rerun by the survivor"

                                Expect.equal
                                    second.LastError
                                    (Some HandlerRequest.LeaseExpiredError)
                                    $"request %O{request.Id}: the rerun was handed the lapsed lease as the failure before it"

                                Expect.isGreaterThanOrEqual
                                    second.StartedAt
                                    killedAt
                                    $"request %O{request.Id}: rerun only after the killed run"

                                // The lease runs from the claim, a little before the handler starts.
                                Expect.isGreaterThanOrEqual
                                    (second.StartedAt - first.StartedAt)
                                    (lease - TimeSpan.FromSeconds 1.0)
                                    $"request %O{request.Id}: rerun once the lease ran out, not before"
                            | runs -> failtestf "request %O: two runs expected, got %A" request.Id runs
                        else
                            // A run the victim finished but whose outcome it had not written yet also counts as
                            // one lapsed lease; any other request ran once, cleanly.
                            match request.Errors with
                            | 0 -> Expect.equal runs.Length 1 $"request %O{request.Id}: ran once"
                            | 1 ->
                                Expect.equal
                                    (List.last runs).LastError
                                    (Some HandlerRequest.LeaseExpiredError)
                                    $"request %O{request.Id}: the failure before its last run was a lapsed lease"

                                Expect.exists
                                    runs
                                    (fun run -> run.Pid = victim.Pid)
                                    $"request %O{request.Id}: its lapsed lease was the victim's"
                            | errors -> failtestf "request %O: %d failed attempts%s" request.Id errors context

                    Expect.isEmpty (overlapping killedAt runs) "no request ran twice at the same time"
                })
    }

let private restart =
    testTask "PostgreSQL restarts under two running processes: both recover on their own and every request completes" {
        if not (String.IsNullOrEmpty(Environment.GetEnvironmentVariable ThrowawayPostgres.EnvironmentVariable)) then
            skiptest "a server named by EVENTS_TEST_POSTGRES cannot be restarted by the tests"

        let! (postgres: ThrowawayPostgres) = ThrowawayPostgres.StartAsync()

        try
            let! connectionString = postgres.CreateDatabaseAsync()

            do!
                withWorkers connectionString (fun store workers ->
                    task {
                        // A handler that cannot write its evidence fails; a failed attempt retries soon, and
                        // a lapsed lease (an outcome that could not be written) is recovered after 3 s.
                        let! started =
                            workers.StartAsync(
                                connectionString,
                                2,
                                [
                                    "--workers"
                                    "3"
                                    "--handler-delay-ms"
                                    "50"
                                    "--handler-timeout-ms"
                                    "1500"
                                    "--lease-ms"
                                    "3000"
                                    "--max-errors"
                                    "50"
                                    "--backoff-ms"
                                    "100"
                                ]
                            )

                        let! before = appendWork store 100

                        do!
                            eventually (TimeSpan.FromSeconds 30.0) "40 runs ended" workers (fun () ->
                                task {
                                    let! runs = readRuns connectionString
                                    return (runs |> List.filter _.EndedAt.IsSome).Length >= 40
                                })

                        let! completedBefore = completedCount store ()

                        Expect.isLessThan
                            completedBefore
                            (before.Length * handlerNames.Length)
                            "the restart comes while the first events are still being handled"

                        do! store.DisposeAsync()
                        do! postgres.RestartAsync()
                        let restartedAt = DateTimeOffset.UtcNow
                        // The test's own store starts afresh: its pooled connections died with the server.
                        let! store = MartenEventStore.CreateAsync(connectionString, options = quiet)

                        try
                            let! after = appendWork store 100
                            let eventIds = before @ after
                            let expected = eventIds.Length * handlerNames.Length

                            do!
                                eventually
                                    (TimeSpan.FromSeconds 90.0)
                                    $"%d{expected} requests completed"
                                    workers
                                    (fun () ->
                                        task {
                                            let! completed = completedCount store ()
                                            return completed = expected
                                        })

                            for worker in started do
                                Expect.isFalse
                                    worker.HasExited
                                    $"worker %s{worker.Name} kept running\n%s{worker.Output}"

                            let! runs = readRuns connectionString

                            for worker in started do
                                Expect.exists
                                    runs
                                    (fun run ->
                                        run.Pid = worker.Pid && run.StartedAt > restartedAt && run.EndedAt.IsSome)
                                    $"worker %s{worker.Name} ran handlers after the restart\n%s{workers.Output}"

                            do! terminate started
                            let! events = eventsOf store
                            let! requests = requestsOf store
                            expectOneRequestPerHandler eventIds events requests
                            Expect.all requests isCompleted "every request completed, none dead"

                            let ended =
                                runs |> List.filter _.EndedAt.IsSome |> List.map _.RequestId |> Set.ofList

                            Expect.all
                                requests
                                (fun request -> ended.Contains request.Id)
                                "each completion has its run"

                            // Runs that could not record their end are left out: their end is unknown.
                            Expect.isEmpty
                                (overlapping DateTimeOffset.MaxValue (runs |> List.filter _.EndedAt.IsSome))
                                "no request ran twice at the same time"
                        finally
                            (store :> IDisposable).Dispose()
                    })
        finally
            postgres.DisposeAsync().AsTask().GetAwaiter().GetResult()
    }

/// The multi-process tests, one at a time and after the parallel tests (they start processes and time
/// leases).
/// Concurrent raises of one deduplication key from several processes: one event stored, and every raise
/// returns it (all but one as a duplicate).
let private deduplication =
    testTask "several processes raise one deduplication key at once: one event stored, every raiser gets its id" {
        let! connectionString = server.Value.CreateDatabaseAsync()

        do!
            withWorkers connectionString (fun store workers ->
                task {
                    let processes = 4
                    let raisesEach = 25
                    let key = $"dedup-%O{Guid.NewGuid()}"

                    let! started =
                        workers.StartAsync(
                            connectionString,
                            processes,
                            [ "--raise-key"; key; "--raises"; string raisesEach ]
                        )

                    for worker in started do
                        worker.Tell "raise"

                    let finished () =
                        started
                        |> List.forall (fun worker ->
                            worker.OutLines |> Array.exists (fun line -> line.StartsWith "raises done"))

                    do!
                        eventually (TimeSpan.FromSeconds 60.0) "every worker raised" workers (fun () ->
                            task { return finished () })

                    let raised =
                        [
                            for worker in started do
                                for line in worker.OutLines do
                                    match line.Split ' ' with
                                    | [| "raised"; id; duplicate |] -> yield Guid.Parse id, bool.Parse duplicate
                                    | _ -> ()
                        ]

                    let ids = raised |> List.map fst |> List.distinct
                    let originals = raised |> List.filter (snd >> not) |> List.length
                    let! events = eventsOf store
                    let keyed = events |> List.filter (fun event -> event.DeduplicationKey = Some key)

                    printfn
                        "deduplication across processes: %d processes, %d raises, %d event(s) stored, %d distinct id(s) returned, %d raise(s) not a duplicate"
                        processes
                        raised.Length
                        keyed.Length
                        ids.Length
                        originals

                    Expect.equal raised.Length (processes * raisesEach) "every raise returned an event"
                    Expect.equal keyed.Length 1 "exactly one event is stored with the key"
                    Expect.equal ids [ keyed.Head.Id ] "every raiser got the stored event's id"
                    Expect.equal originals 1 "one raise stored it, every other one was told it was a duplicate"

                    do!
                        eventually (TimeSpan.FromSeconds 60.0) "the event's requests completed" workers (fun () ->
                            task {
                                let! count = completedCount store ()
                                return count = handlerNames.Length
                            })

                    let! events = eventsOf store
                    let! requests = requestsOf store
                    expectOneRequestPerHandler [ keyed.Head.Id ] events requests
                    do! terminate started
                })
    }

let tests =
    testSequenced (testList "MultiProcess" [ backlog; killed; restart; deduplication ])
