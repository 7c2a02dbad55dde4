import Glibc

/// One background tree build at a time, taken by one thread and given back by another (the
/// build's own thread when the trigger did not wait), which a mutex does not allow.
final class BuildSlot: @unchecked Sendable {
    private let monitor = Monitor()
    private var taken = false

    init() {}

    /// Waits until the slot is free, then takes it.
    func acquire() {
        monitor.lock()
        while taken { monitor.wait() }
        taken = true
        monitor.unlock()
    }

    func release() {
        monitor.lock()
        taken = false
        monitor.signal()
        monitor.unlock()
    }
}
