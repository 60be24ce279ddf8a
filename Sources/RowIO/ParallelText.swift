import EngineCore
#if canImport(Glibc)
import Glibc
#endif

/// A fixed set of threads that run the pieces of one job at a time (`run` then `wait`).
///
/// Guarantee: every piece index of a job runs exactly once, on some pool thread (with `threads == 1`, on the
/// caller, inside `run`); `wait` returns after all have.
/// Cost: one wake-up and one mutex round per piece. Limits: one job in flight (the text decoder's pipeline
/// holds one block being parsed while it hands out the previous one).
public final class ParsePool: @unchecked Sendable {
    public let threads: Int
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let done = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var job: ((Int) -> Void)?
    private var pieces = 0, next = 0, remaining = 0
    private var stopping = false
    private var handles: [pthread_t] = []

    /// Parse threads for this machine: one per online CPU (at most 8), or `ROWFLOW_PARSE_THREADS`.
    public static func defaultThreads() -> Int {
        if let s = getenv("ROWFLOW_PARSE_THREADS"), let n = Int(String(cString: s)), n >= 1 { return min(n, 64) }
        return max(1, min(8, sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    public static func defaultBlockBytes() -> Int {
        if let s = getenv("ROWFLOW_PARSE_BLOCK_BYTES"), let n = Int(String(cString: s)), n >= 1 { return n }
        return 1 << 20
    }

    public init(threads: Int) {
        self.threads = threads
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        pthread_cond_init(done, nil)
        // One thread: the caller parses (`run` is synchronous), through the same blocks as with more.
        for _ in 0..<(threads > 1 ? threads : 0) {
            var t = pthread_t()
            let box = Unmanaged.passRetained(self)
            let rc = pthread_create(&t, nil, { arg in
                let pool = Unmanaged<ParsePool>.fromOpaque(arg!).takeRetainedValue()
                pool.work()
                return nil
            }, box.toOpaque())
            precondition(rc == 0, "pthread_create failed: \(rc)")
            handles.append(t)
        }
    }

    private func work() {
        pthread_mutex_lock(mutex)
        while true {
            while !stopping && next >= pieces { pthread_cond_wait(wake, mutex) }
            if stopping { break }
            let k = next
            next += 1
            let body = job!
            pthread_mutex_unlock(mutex)
            body(k)
            pthread_mutex_lock(mutex)
            remaining -= 1
            if remaining == 0 { pthread_cond_broadcast(done) }
        }
        pthread_mutex_unlock(mutex)
    }

    /// Starts `body(0..<count)` on the pool and returns at once.
    func run(_ count: Int, _ body: @escaping (Int) -> Void) {
        if handles.isEmpty {
            for k in 0..<count { body(k) }
            return
        }
        pthread_mutex_lock(mutex)
        precondition(remaining == 0, "one job at a time")
        job = body
        pieces = count
        next = 0
        remaining = count
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
    }

    /// Waits for the job started by `run`.
    func wait() {
        pthread_mutex_lock(mutex)
        while remaining > 0 { pthread_cond_wait(done, mutex) }
        job = nil
        pieces = 0
        next = 0
        pthread_mutex_unlock(mutex)
    }

    /// Stops and joins the threads (after waiting for a job in flight).
    public func shutdown() {
        wait()
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
        for t in handles { pthread_join(t, nil) }
        handles = []
    }
}

/// Why a record is not a row. Kept as data (not a message) because a parse thread does not know the record's
/// line number; the decoder renders it, in input order, once it does.
struct RowFault {
    enum Kind { case ragged(found: Int), nonfinite(String), overflow, invalid, badWeight(Double), tooLong(Int) }
    var kind: Kind
    /// The raw column whose value was bad (nil for a ragged row).
    var column: Int?
    var fieldStart = 0, fieldEnd = 0
}

/// Converts the split fields of one record into a row: the part of row parsing every thread shares, so a row
/// parsed on any thread is the same bits with the same fault.
struct RecordConverter: @unchecked Sendable {
    let roles: [RowLayout.Role]
    let rawColumns: Int
    let allowNonfinite: Bool

    /// nil when the row is good (features in `out`, target and weight set); else the first fault.
    @inline(__always)
    func convert(_ p: UnsafePointer<UInt8>, _ starts: UnsafePointer<Int>, _ ends: UnsafePointer<Int>, fields: Int,
                 out: UnsafeMutablePointer<Double>, target: inout Double, weight: inout Double) -> RowFault? {
        if fields != rawColumns { return RowFault(kind: .ragged(found: fields), column: nil) }
        for k in 0..<rawColumns {
            let role = roles[k]
            // Columns nothing uses are only delimited: they may hold text, dates, anything.
            if case .drop = role { continue }
            let v: Double
            switch NumberParser.parse(p, starts[k], ends[k]) {
            case let .value(x): v = x
            case let .nonfinite(x, what):
                guard allowNonfinite else { return RowFault(kind: .nonfinite(what), column: k, fieldStart: starts[k], fieldEnd: ends[k]) }
                v = x
            case .overflow:
                guard allowNonfinite else { return RowFault(kind: .overflow, column: k, fieldStart: starts[k], fieldEnd: ends[k]) }
                v = p[starts[k]] == 0x2D ? -.infinity : .infinity
            case .invalid:
                return RowFault(kind: .invalid, column: k, fieldStart: starts[k], fieldEnd: ends[k])
            }
            switch role {
            case let .feature(j): out[j] = v
            case .target: target = v
            case .weight:
                guard v >= 0 else { return RowFault(kind: .badWeight(v), column: k, fieldStart: starts[k], fieldEnd: ends[k]) }
                weight = v
            case .drop: break
            }
        }
        return nil
    }
}

/// One thread's share of a text block: the rows of its records in order (good rows packed, faults listed by
/// record number), and the lines it spans.
final class ParsedPiece: @unchecked Sendable {
    var start = 0, end = 0
    /// Records (good and bad rows; blank lines are none) and lines (newlines, quoted ones included).
    var records = 0, lines: Int64 = 0, good = 0
    /// Set by the decoder when the block's turn comes: lines before this piece.
    var lineBase: Int64 = 0
    struct Fault { var record: Int; var line: Int64; var start: Int; var end: Int; var fault: RowFault }
    var faults: [Fault] = []
    private(set) var features: UnsafeMutablePointer<Double>
    private(set) var targets: UnsafeMutablePointer<Double>
    private(set) var weights: UnsafeMutablePointer<Double>
    private var capacityRows = 0
    private var starts: UnsafeMutablePointer<Int>
    private var ends: UnsafeMutablePointer<Int>
    private let maxFields: Int
    let columns: Int

    init(columns: Int, rawColumns: Int) {
        self.columns = columns
        maxFields = rawColumns + 1
        starts = .allocate(capacity: maxFields)
        ends = .allocate(capacity: maxFields)
        features = .allocate(capacity: 1)
        targets = .allocate(capacity: 1)
        weights = .allocate(capacity: 1)
    }

    deinit {
        starts.deallocate(); ends.deallocate()
        features.deallocate(); targets.deallocate(); weights.deallocate()
    }

    /// Room for the most rows `bytes` can hold: a row of r fields takes at least r bytes (r - 1 delimiters and
    /// a newline), so memory is bounded by the block size, never by the file. Untouched pages cost nothing.
    private func reserve(bytes: Int, rawColumns: Int) {
        let rows = bytes / max(1, rawColumns) + 1
        guard rows > capacityRows else { return }
        features.deallocate(); targets.deallocate(); weights.deallocate()
        features = .allocate(capacity: rows * max(1, columns))
        targets = .allocate(capacity: rows)
        weights = .allocate(capacity: rows)
        capacityRows = rows
    }

    /// Parses the whole records in `[start, end)` of `p` exactly as the one-thread decoder would: records end
    /// at a newline outside quotes (or at `end`), a "\r" before the newline is dropped, blank lines hold no row.
    func parse(_ p: UnsafePointer<UInt8>, delimiter: UInt8, quoted: Bool, converter: RecordConverter, lineLimit: Int) {
        records = 0; lines = 0; good = 0
        faults.removeAll(keepingCapacity: true)
        reserve(bytes: end - start, rawColumns: converter.rawColumns)
        let d = columns
        var i = start
        let b = end
        while i < b {
            var search = i, nl = b
            var hasQuote = false
            while search < b, let hit = memchr(p + search, 0x0A, b - search) {
                let e = UnsafePointer<UInt8>(hit.assumingMemoryBound(to: UInt8.self)) - p
                if quoted {
                    hasQuote = memchr(p + i, 0x22, e - i) != nil
                    if hasQuote && !TextDecoder.scanQuoted(p, i, e, delimiter: delimiter, delimiterAt: { _ in }) {
                        search = e + 1
                        continue
                    }
                }
                nl = e
                break
            }
            if nl == b && quoted { hasQuote = memchr(p + i, 0x22, b - i) != nil }
            var e = nl
            if e > i && p[e - 1] == 0x0D { e -= 1 }
            lines += 1
            let recordLine = lines
            if hasQuote {
                var k = i
                while k < e, let hit = memchr(p + k, 0x0A, e - k) {
                    lines += 1
                    k = UnsafePointer<UInt8>(hit.assumingMemoryBound(to: UInt8.self)) - p + 1
                }
            }
            let s = i
            i = nl + 1
            if e - s > lineLimit {   // fatal: the decoder throws it when its turn comes
                faults.append(Fault(record: records, line: recordLine, start: s, end: e, fault: RowFault(kind: .tooLong(lineLimit), column: nil)))
                records += 1
                return
            }
            if TextDecoder.isBlank(p, s, e) { continue }
            // Split: positions beyond rawColumns + 1 fields are only counted (the row is ragged anyway).
            var fields = 0
            let maxF = maxFields
            let st = starts, en = ends
            if hasQuote {
                var a = s
                _ = TextDecoder.scanQuoted(p, s, e, delimiter: delimiter) { x in
                    if fields < maxF { st[fields] = a; en[fields] = x }
                    fields += 1
                    a = x + 1
                }
                if fields < maxF { st[fields] = a; en[fields] = e }
                fields += 1
            } else {
                var a = s
                while true {
                    var x = a
                    while x < e && p[x] != delimiter { x += 1 }
                    if fields < maxF { st[fields] = a; en[fields] = x }
                    fields += 1
                    if x == e { break }
                    a = x + 1
                }
            }
            let record = records
            records += 1
            var t = 0.0, w = 0.0
            if let f = converter.convert(p, st, en, fields: fields, out: features + good * d, target: &t, weight: &w) {
                faults.append(Fault(record: record, line: recordLine, start: s, end: e, fault: f))
            } else {
                targets[good] = t
                weights[good] = w
                good += 1
            }
        }
    }
}

/// A block of whole records copied out of the input buffer, split at record boundaries into pieces that parse
/// on different threads.
final class TextBlock: @unchecked Sendable {
    private(set) var bytes: UnsafeMutablePointer<UInt8>
    private var capacity: Int
    var count = 0
    var quoted = false
    var pieces: [ParsedPiece]

    init(pieces n: Int, columns: Int, rawColumns: Int) {
        capacity = 1 << 16
        bytes = .allocate(capacity: capacity)
        pieces = (0..<n).map { _ in ParsedPiece(columns: columns, rawColumns: rawColumns) }
    }

    deinit { bytes.deallocate() }

    func load(_ from: UnsafePointer<UInt8>, count n: Int) {
        if n > capacity {
            bytes.deallocate()
            capacity = max(n, capacity * 2)
            bytes = .allocate(capacity: capacity)
        }
        bytes.update(from: from, count: n)
        count = n
    }
}
