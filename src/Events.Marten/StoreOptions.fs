namespace Events.Marten

open System

/// Settings of a Marten event store.
type MartenEventStoreOptions =
    {
        /// The most lapsed leases one request claim recovers; the rest are recovered by the next claims
        /// (default 1000).
        MaxRecoveredPerClaim: int
        /// Whether to keep a connection listening for other processes' work notifications, raising
        /// `WorkArrived` (default true).
        ListenForWork: bool
        /// The first wait before the listener reconnects after a failure; it doubles on each failure
        /// up to `MaxReconnectDelay` (default 1 s).
        ReconnectDelay: TimeSpan
        /// The longest wait before the listener reconnects (default 30 s).
        MaxReconnectDelay: TimeSpan
        /// How long the listener waits for a notification before it checks that its connection is alive
        /// (a connection dropped without a reset would otherwise wait forever; default 30 s).
        ListenerProbeInterval: TimeSpan
        /// Leases and claims are judged and set by the database's clock (the default), so that clocks
        /// that differ between machines cannot hand a live lease to another process; when false, by the
        /// times the engine passes (its `TimeProvider`: simulated time in tests).
        DatabaseClock: bool
        /// The clock the engine's times come from (default the system's): with `DatabaseClock`, a
        /// renewal's end is turned into a duration from it.
        Time: TimeProvider
    }

    /// Recovers at most 1000 lapsed leases per claim, listens (probing its connection every 30 s),
    /// reconnects after 1 s doubling to 30 s, judges leases by the database's clock.
    static member Default =
        {
            MaxRecoveredPerClaim = 1000
            ListenForWork = true
            ReconnectDelay = TimeSpan.FromSeconds 1.0
            MaxReconnectDelay = TimeSpan.FromSeconds 30.0
            ListenerProbeInterval = TimeSpan.FromSeconds 30.0
            DatabaseClock = true
            Time = TimeProvider.System
        }
