import Glibc
import SnapFSDaemon
import SnapFSSnapshots

/// The progress line of a long walk (`diff`, `restore`): one line on stderr, rewritten in
/// place (`\r`) with the count of entries done, at most ten times a second (see
/// ``ProgressMeter``), and erased at the end so that what the command prints afterwards
/// starts on a clean line.
///
/// Only when stderr is a terminal and the output is not `--json`: a log, a pipe or a
/// program reading the JSON never sees it.
final class TerminalProgress {
    /// The meter to hand to the walk; nil when there is no line to show.
    private(set) var meter: ProgressMeter?
    private var shown = false

    /// `what` follows the count: `entries compared`.
    init(_ what: String, json: Bool) {
        guard !json, isatty(STDERR_FILENO) == 1 else { return }
        meter = ProgressMeter { [unowned self] count in
            self.shown = true
            FileHandleStandardError.write("\r\(count) \(what)")
        }
    }

    /// Whether there is a line to show (stderr is a terminal, no `--json`).
    var enabled: Bool { meter != nil }

    /// Shows `count` now, for a count read from elsewhere (`delete` polls the daemon's
    /// `deleting:` status line) rather than ticked by a walk.
    func show(_ count: Int) {
        guard let meter else { return }
        meter.report(count)
    }

    /// Erases the line, if one was shown.
    func finish() {
        if shown { FileHandleStandardError.write("\r\u{1B}[K") }
        shown = false
    }
}
