import EngineCore
#if canImport(Glibc)
import Glibc
#endif

/// A sliding window over a `ByteInput`: decoders look at `[start, end)`, consume from the front, and ask for
/// more. Grows only when one record does not fit (bounded by the decoder's own limit).
final class ChunkBuffer {
    let input: ByteInput
    private(set) var base: UnsafeMutablePointer<UInt8>
    private(set) var capacity: Int
    var start = 0
    private(set) var end = 0
    private(set) var eof = false
    /// Content offset of `base[0]` (for byte-offset messages).
    private(set) var baseOffset: Int64 = 0

    init(_ input: ByteInput, capacity: Int = 1 << 20) {
        self.input = input
        self.capacity = capacity
        base = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity + 1)
    }

    deinit { base.deallocate() }

    var available: Int { end - start }
    /// Content offset of `start`.
    var offset: Int64 { baseOffset + Int64(start) }

    /// Moves unread bytes to the front and reads more; returns false at end of input with nothing new.
    @discardableResult
    func refill() throws(EngineError) -> Bool {
        if eof { return false }
        if start > 0 {
            if available > 0 { (base).update(from: base + start, count: available) }
            baseOffset += Int64(start)
            end -= start
            start = 0
        }
        if end == capacity { grow(to: capacity * 2) }
        let n = try input.read(into: UnsafeMutableRawPointer(base + end), count: capacity - end)
        if n == 0 { eof = true; return false }
        end += n
        return true
    }

    /// Accounts for a read that bypassed the buffer (it must be empty): `consumed` bytes went elsewhere, and
    /// the `tailCount` bytes at `tail` — a record cut by the read — are kept here for the next record.
    func afterDirectRead(consumed: Int, tail: UnsafeRawPointer, tailCount: Int) {
        precondition(available == 0 && tailCount <= capacity)
        baseOffset += Int64(start) + Int64(consumed)
        start = 0
        end = tailCount
        if tailCount > 0 { UnsafeMutableRawPointer(base).copyMemory(from: tail, byteCount: tailCount) }
    }

    /// Reads until at least `n` bytes are available or the input ends.
    func ensure(_ n: Int) throws(EngineError) -> Bool {
        while available < n {
            if n > capacity - start && start == 0 && n > capacity { grow(to: max(n, capacity * 2)) }
            if !(try refill()) { return available >= n }
        }
        return true
    }

    enum Line { case line(Int, Int), tooLong(Int), end }

    /// The next line `[s, e)` in `base` without its "\n" (and a "\r" before it), consumed; `.end` at the end of
    /// input. `limit(pendingStart, pendingEnd)` gives the longest line allowed while no newline is in sight,
    /// which bounds memory on hostile input. `complete(base, s, e)` says whether a newline at e ends the record
    /// begun at s (false inside a quoted field: the record then runs on to a later newline); it is called for
    /// every record returned, the last one (ended by the input's end) included.
    func nextLine(limit: (Int, Int) -> Int,
                  complete: (UnsafePointer<UInt8>, Int, Int) -> Bool = { _, _, _ in true }) throws(EngineError) -> Line {
        var searchFrom = start
        while true {
            if end > searchFrom, let nl = memchr(base + searchFrom, 0x0A, end - searchFrom) {
                let e = UnsafeMutablePointer<UInt8>(nl.assumingMemoryBound(to: UInt8.self)) - base
                if !complete(base, start, e) {
                    searchFrom = e + 1
                    continue
                }
                let s = start
                start = e + 1
                return .line(s, e > s && base[e - 1] == 0x0D ? e - 1 : e)
            }
            let max = limit(start, end)
            if available > max { return .tooLong(max) }
            let consumedBefore = start
            searchFrom = end
            let more = try refill()
            searchFrom -= consumedBefore   // refill moved the pending bytes to the front
            if !more {
                if available == 0 { return .end }
                let s = start, e = end
                _ = complete(base, s, e)   // the input's end ends the record; the call lets the caller look at it
                start = end
                return .line(s, e > s && base[e - 1] == 0x0D ? e - 1 : e)
            }
        }
    }

    func grow(to newCapacity: Int) {
        let nb = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity + 1)
        nb.update(from: base + start, count: available)
        base.deallocate()
        base = nb
        baseOffset += Int64(start)
        end = available
        start = 0
        capacity = newCapacity
    }
}

/// What to do with a row that cannot be used (bad value, ragged, non-finite): fail the run, skip it (counted),
/// or quarantine it (raw row and its number appended to `<out>/quarantine.txt`).
public final class BadRowHandler: @unchecked Sendable {
    public let policy: SourceConfig.BadRowPolicy
    public private(set) var skipped: Int64 = 0
    public private(set) var quarantined: Int64 = 0
    let quarantine: (@Sendable (String) throws(EngineError) -> Void)?

    public init(policy: SourceConfig.BadRowPolicy, quarantine: (@Sendable (String) throws(EngineError) -> Void)? = nil) {
        self.policy = policy
        self.quarantine = quarantine
    }

    /// Counters as a checkpoint recorded them (a resumed run re-meets the bad rows it skips).
    public func restore(skipped: Int64, quarantined: Int64) {
        self.skipped = skipped
        self.quarantined = quarantined
    }

    /// Bad rows per raw column (0-based) whose value made them bad (missing cells, text, non-finite): run.json's
    /// `bad_by_column`, so a user sees which column caused the skips.
    public private(set) var byColumn: [Int: Int64] = [:]

    /// `raw` renders the offending row for the quarantine file; `row` is its 0-based position; `column` the raw
    /// column whose value was bad, when one was.
    func report(_ error: EngineError, row: Int64, column: Int? = nil, raw: () -> String) throws(EngineError) {
        if let column, policy != .fail { byColumn[column, default: 0] += 1 }
        switch policy {
        case .fail: throw error
        case .skip: skipped += 1
        case .quarantine:
            quarantined += 1
            try quarantine?("row \(row + 1)\t\(error.location)\t\(error.message)\t\(raw())\n")
        }
    }
}
