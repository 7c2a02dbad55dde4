import Synchronization

/// A reference attached after its holder was made, for two parts that each call the other
/// (one of them has to exist first): set once the other part exists, read from any thread.
public final class Attachment<Value: Sendable>: Sendable {
    private let slot = Mutex<Value?>(nil)

    public init() {}

    public func attach(_ value: Value) {
        slot.withLock { $0 = value }
    }

    /// The attached value; nil before it is attached.
    @inline(__always)
    public var value: Value? { slot.withLock { $0 } }
}
