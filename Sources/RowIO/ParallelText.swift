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
    enum Kind { case ragged(found: Int), nonfinite(String), overflow, invalid, badWeight(Double), tooLong(Int)
        /// A libsvm fault: its byte column, message and hint.
        case message(Int, String, String?)
    }
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
    /// Per raw column: the feature index (≥ 0), or `drop`, `target`, `weight`.
    private let destination: [Int]
    static let drop = -1, target = -2, weight = -3

    init(roles: [RowLayout.Role], rawColumns: Int, allowNonfinite: Bool) {
        self.roles = roles
        self.rawColumns = rawColumns
        self.allowNonfinite = allowNonfinite
        destination = roles.map { role in
            switch role {
            case let .feature(j): return j
            case .drop: return RecordConverter.drop
            case .target: return RecordConverter.target
            case .weight: return RecordConverter.weight
            }
        }
    }

    /// nil when the row is good (features in `out`, target and weight set); else the first fault.
    @inline(__always)
    func convert(_ p: UnsafePointer<UInt8>, _ starts: UnsafePointer<Int>, _ ends: UnsafePointer<Int>, fields: Int,
                 out: UnsafeMutablePointer<Double>, target: inout Double, weight: inout Double) -> RowFault? {
        if fields != rawColumns { return RowFault(kind: .ragged(found: fields), column: nil) }
        return destination.withUnsafeBufferPointer { dest -> RowFault? in
            for k in 0..<rawColumns {
                let to = dest[k]
                // Columns nothing uses are only delimited: they may hold text, dates, anything.
                if to == RecordConverter.drop { continue }
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
                if to >= 0 { out[to] = v } else if to == RecordConverter.target { target = v } else {
                    guard v >= 0 else { return RowFault(kind: .badWeight(v), column: k, fieldStart: starts[k], fieldEnd: ends[k]) }
                    weight = v
                }
            }
            return nil
        }
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
    /// Sparse rows (libsvm): row r's entries are `rowEnds[r] ..< rowEnds[r + 1]` of the entry arrays.
    private(set) var sparse = false
    private(set) var rowEnds = UnsafeMutablePointer<Int>.allocate(capacity: 1)
    private(set) var entryColumns = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    private(set) var entryValues = UnsafeMutablePointer<Double>.allocate(capacity: 1)
    private var capacityEntries = 0, capacitySparseRows = 0

    func reserveSparse(rows: Int, entries: Int) {
        sparse = true
        if rows > capacitySparseRows {
            rowEnds.deallocate(); targets.deallocate()
            rowEnds = .allocate(capacity: rows + 1)
            targets = .allocate(capacity: rows)
            capacitySparseRows = rows
            capacityRows = 0   // the dense buffers no longer match
        }
        if entries > capacityEntries {
            entryColumns.deallocate(); entryValues.deallocate()
            entryColumns = .allocate(capacity: entries)
            entryValues = .allocate(capacity: entries)
            capacityEntries = entries
        }
        rowEnds[0] = 0
    }
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
        rowEnds.deallocate(); entryColumns.deallocate(); entryValues.deallocate()
    }

    /// Room for the most rows `bytes` can hold: a row of r fields takes at least r bytes (r - 1 delimiters and
    /// a newline), so memory is bounded by the block size, never by the file. Untouched pages cost nothing.
    func reserve(bytes: Int, rawColumns: Int) {
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
                let pattern = UInt64(delimiter) &* 0x0101_0101_0101_0101
                while true {
                    // Eight bytes at a time: a byte equal to the delimiter becomes zero, and the lowest byte of
                    // (w - 0x01…) & ~w & 0x80… that is set marks the first zero (borrows only reach higher bytes).
                    var x = a
                    var hit = false
                    while x + 8 <= e {
                        let w = UnsafeRawPointer(p + x).loadUnaligned(as: UInt64.self) ^ pattern
                        let z = (w &- 0x0101_0101_0101_0101) & ~w & 0x8080_8080_8080_8080
                        if z != 0 { x += z.trailingZeroBitCount >> 3; hit = true; break }
                        x += 8
                    }
                    if !hit { while x < e && p[x] != delimiter { x += 1 } }
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

extension ParsedPiece {
    /// libsvm records in `[start, end)`, as `LibsvmDecoder` reads them line by line (same rows, same faults).
    /// Rows are kept sparse (`entries`): a row may be 2 bytes of text yet hold thousands of features, and
    /// sparse entries keep memory proportional to the text (an entry takes at least 4 bytes: "i:v ").
    func parseLibsvm(_ p: UnsafePointer<UInt8>, featureOf: [Int], allowNonfinite: Bool, lineLimit: Int) {
        records = 0; lines = 0; good = 0
        faults.removeAll(keepingCapacity: true)
        let bytes = end - start
        reserveSparse(rows: bytes / 2 + 1, entries: bytes / 4 + 1)
        var i = start
        let b = end
        var n = 0   // entries so far
        let cols = entryColumns, vals = entryValues
        while i < b {
            var nl = b
            if let hit = memchr(p + i, 0x0A, b - i) { nl = UnsafePointer<UInt8>(hit.assumingMemoryBound(to: UInt8.self)) - p }
            var e = nl
            if e > i && p[e - 1] == 0x0D { e -= 1 }
            lines += 1
            let s = i
            i = nl + 1
            if e - s > lineLimit {
                faults.append(Fault(record: records, line: lines, start: s, end: e, fault: RowFault(kind: .tooLong(lineLimit), column: nil)))
                records += 1
                return
            }
            if LibsvmDecoder.isBlank(p, s, e) { continue }
            let record = records
            records += 1
            var label = 0.0
            let first = n
            if let (column, text, hint) = LibsvmDecoder.parseRecord(p, s, e, featureOf: featureOf, allowNonfinite: allowNonfinite,
                                                                    label: &label, store: { j, v in cols[n] = Int32(j); vals[n] = v; n += 1 }) {
                n = first
                faults.append(Fault(record: record, line: lines, start: s, end: e, fault: RowFault(kind: .message(column, text, hint), column: nil)))
            } else {
                targets[good] = label
                good += 1
                rowEnds[good] = n
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

/// Hands out the rows of text parsed in blocks: whole records are copied out of the input buffer (about
/// `blockBytesPerThread` per thread), split at record boundaries (newlines; outside quotes when `quoteAware`)
/// into one piece per thread, parsed on the pool while the previous block is handed out, and handed out in
/// input order. Faults are rendered here, in order, once their line is known — so rows, positions, errors and
/// quarantine lines are those of one thread reading line by line. Memory: two blocks and their parsed rows.
final class BlockPipeline {
    typealias FaultHandler = (ParsedPiece.Fault, UnsafePointer<UInt8>, _ line: Int64, _ nextRow: inout Int64) throws(EngineError) -> Void
    let buf: ChunkBuffer
    let pool: ParsePool
    let blockBytesPerThread: Int
    let quoteAware: Bool
    let delimiter: UInt8
    let columns: Int, rawColumns: Int
    let parse: @Sendable (ParsedPiece, UnsafePointer<UInt8>, _ quoted: Bool, _ lineLimit: Int) -> Void
    private var ready: TextBlock?, parsing: TextBlock?
    private var spare: TextBlock?
    private var pieceIndex = 0, record = 0, goodIndex = 0, faultIndex = 0

    init(buf: ChunkBuffer, pool: ParsePool, blockBytesPerThread: Int, quoteAware: Bool, delimiter: UInt8, columns: Int, rawColumns: Int,
         parse: @escaping @Sendable (ParsedPiece, UnsafePointer<UInt8>, Bool, Int) -> Void) {
        self.buf = buf; self.pool = pool; self.blockBytesPerThread = blockBytesPerThread; self.quoteAware = quoteAware
        self.delimiter = delimiter; self.columns = columns; self.rawColumns = rawColumns; self.parse = parse
    }

    // A run that stopped on an error may leave a block parsing: the pool takes one job at a time.
    deinit { if parsing != nil { pool.wait() } }

    /// One step towards filling `batch`: rows handed out, a parsed block made ready (and the next launched),
    /// or a block launched. False when nothing is in flight and no block could be taken: the caller reads one
    /// record itself (the end of the input, or a record longer than a block, which its line-by-line path
    /// reads or rejects).
    func step(_ batch: inout RowBatch, nextRow: inout Int64, line: inout Int64, lineLimit: Int, onFault: FaultHandler) throws(EngineError) -> Bool {
        if ready != nil { try drain(&batch, nextRow: &nextRow, onFault: onFault); return true }
        if let blk = parsing {
            pool.wait()
            parsing = nil
            for pc in blk.pieces { pc.lineBase = line; line += pc.lines }
            ready = blk
            pieceIndex = 0; record = 0; goodIndex = 0; faultIndex = 0
            _ = try launch(lineLimit: lineLimit)   // the next block parses while this one is handed out
            return true
        }
        return try launch(lineLimit: lineLimit)
    }

    /// Copies the next whole records (about `blockBytesPerThread` per thread) into a block and starts parsing
    /// it; false when there is none to take: the end of the input, or no record end in sight (a record longer
    /// than a block), which the one-thread path then reads or rejects.
    func launch(lineLimit: Int) throws(EngineError) -> Bool {
        let threads = pool.threads
        let want = blockBytesPerThread * threads
        if let e = deferred {
            // A read failed after the bytes now buffered. One thread reading line by line would first use every
            // complete record before them, then meet the error: so rows of blocks in flight go out first, then
            // the buffered records, then the error.
            guard ready == nil && parsing == nil else { return false }
            if buf.available == 0 || memchr(buf.base + buf.start, 0x0A, buf.available) == nil { deferred = nil; throw e }
        } else {
            if buf.capacity < 2 * want { buf.grow(to: 2 * want) }
            do throws(EngineError) { while buf.available < want, try buf.refill() {} } catch { deferred = error }
        }
        let n = buf.available
        guard n > 0 else { return false }
        let p = UnsafePointer(buf.base + buf.start)
        let quoted = quoteAware && memchr(p, 0x22, n) != nil
        var splits: [Int] = []
        splits.reserveCapacity(threads + 1)
        splits.append(0)
        var cut = 0
        if !quoted {
            if buf.eof { cut = n } else {
                var k = n
                while k > 0 && p[k - 1] != 0x0A { k -= 1 }   // the last newline (no memrchr in the Glibc module)
                guard k > 0 else { return false }
                cut = k
            }
            for k in 1..<threads {
                let target = max(splits.last!, k * cut / threads)
                if target >= cut { splits.append(cut); continue }
                if target > 0 && p[target - 1] == 0x0A { splits.append(target); continue }
                if let nl = memchr(p + target, 0x0A, cut - target) {
                    splits.append(UnsafePointer<UInt8>(nl.assumingMemoryBound(to: UInt8.self)) - p + 1)
                } else { splits.append(cut) }
            }
        } else {
            // Record ends need the quote rules: walk the records (memchr from quote to quote and newline to
            // newline) and split at the first record end past each share.
            var i = 0, search = 0, k = 1
            while search < n, let hit = memchr(p + search, 0x0A, n - search) {
                let e = UnsafePointer<UInt8>(hit.assumingMemoryBound(to: UInt8.self)) - p
                if memchr(p + i, 0x22, e - i) != nil && !TextDecoder.scanQuoted(p, i, e, delimiter: delimiter, delimiterAt: { _ in }) {
                    search = e + 1
                    continue
                }
                i = e + 1
                search = i
                cut = i
                while k < threads && i >= k * n / threads { splits.append(i); k += 1 }
            }
            if buf.eof { cut = n }
            guard cut > 0 else {
                if let e = deferred { deferred = nil; throw e }
                return false
            }
            while splits.count < threads { splits.append(cut) }
            for j in 0..<splits.count where splits[j] > cut { splits[j] = cut }
        }
        splits.append(cut)
        let blk: TextBlock
        if let s = spare, s.pieces.count == threads { blk = s; spare = nil } else {
            blk = TextBlock(pieces: threads, columns: columns, rawColumns: rawColumns)
        }
        blk.load(p, count: cut)
        blk.quoted = quoted
        for k in 0..<threads { blk.pieces[k].start = splits[k]; blk.pieces[k].end = splits[k + 1] }
        buf.start += cut
        parsing = blk
        let parse = parse
        pool.run(threads) { k in parse(blk.pieces[k], UnsafePointer(blk.bytes), quoted, lineLimit) }
        // Read ahead while the pool parses, or zstd decompression would leave it idle between blocks. Only from
        // regular files (a pipe's read may wait for its writer while parsed rows wait to be handed out); an
        // error is kept (`deferred`) until the rows before it are out.
        if buf.input.file.size != nil && deferred == nil {
            do throws(EngineError) { while buf.available < want, try buf.refill() {} } catch { deferred = error }
        }
        return true
    }
    private var deferred: EngineError?

    /// Hands out the ready block's rows in order: good rows copied into the batch, bad ones reported.
    private func drain(_ batch: inout RowBatch, nextRow: inout Int64, onFault: FaultHandler) throws(EngineError) {
        let blk = ready!
        let d = batch.columns
        let hasTarget = batch.targets != nil, hasWeight = batch.weights != nil
        while !batch.isFull {
            if pieceIndex == blk.pieces.count { ready = nil; spare = blk; return }
            let pc = blk.pieces[pieceIndex]
            if record == pc.records { pieceIndex += 1; record = 0; goodIndex = 0; faultIndex = 0; continue }
            let nextFault = faultIndex < pc.faults.count ? pc.faults[faultIndex].record : pc.records
            if record == nextFault {
                let f = pc.faults[faultIndex]
                faultIndex += 1
                record += 1
                try onFault(f, blk.bytes, pc.lineBase + f.line, &nextRow)
                continue
            }
            let n = min(nextFault - record, batch.capacity - batch.count)
            let first = batch.count
            for r in 0..<n { _ = batch.appendSlot(index: nextRow + Int64(r)) }
            batch.features.withUnsafeMutableBufferPointer { f in
                let to = f.baseAddress! + first * d
                if pc.sparse {
                    to.update(repeating: 0, count: n * d)
                    for r in 0..<n {
                        let row = to + r * d
                        for k in pc.rowEnds[goodIndex + r]..<pc.rowEnds[goodIndex + r + 1] { row[Int(pc.entryColumns[k])] = pc.entryValues[k] }
                    }
                } else {
                    to.update(from: pc.features + goodIndex * d, count: n * d)
                }
            }
            if hasTarget { batch.targets!.withUnsafeMutableBufferPointer { t in (t.baseAddress! + first).update(from: pc.targets + goodIndex, count: n) } }
            if hasWeight { batch.weights!.withUnsafeMutableBufferPointer { w in (w.baseAddress! + first).update(from: pc.weights + goodIndex, count: n) } }
            nextRow += Int64(n)
            goodIndex += n
            record += n
        }
    }

}
