import SnapFSBacking

/// Counts the entries a long walk (``TreeDiff``, ``TreeRestore``) has done and tells
/// `report` the count now and then, for a progress line on a terminal.
///
/// Bounded cost whatever the tree: an entry costs an increment and a read of the monotonic
/// clock (vDSO, tens of nanoseconds, against the microseconds of the entry's own system
/// calls), and `report` is called at most once per `interval`. Nothing is reported before
/// the first interval has passed, so a short walk prints nothing. For the one thread that
/// walks.
public final class ProgressMeter {
    /// Entries done so far.
    public private(set) var count = 0
    /// Times `report` was called.
    public private(set) var reports = 0
    private let intervalMicroseconds: Int64
    private let clock: () -> Int64
    /// What is told the count (also called directly, for a count read from elsewhere).
    public let report: (Int) -> Void
    private var lastReport: Int64

    /// `clock` gives microseconds (default: ``MonotonicClock``); tests pass their own.
    public init(intervalMilliseconds: Int = 100, clock: (() -> Int64)? = nil, report: @escaping (_ count: Int) -> Void) {
        intervalMicroseconds = Int64(intervalMilliseconds) * 1000
        self.clock = clock ?? { MonotonicClock.microseconds() }
        self.report = report
        lastReport = self.clock()
    }

    /// One more entry done (`n` more).
    public func tick(_ n: Int = 1) {
        count += n
        let now = clock()
        guard now - lastReport >= intervalMicroseconds else { return }
        lastReport = now
        reports += 1
        report(count)
    }
}
