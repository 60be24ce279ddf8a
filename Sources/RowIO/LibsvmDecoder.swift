import EngineCore
#if canImport(Glibc)
import Glibc
#endif

/// Decodes libsvm / svmlight text: `label idx:val idx:val …` with 1-based indices into `columns` features;
/// the label is the target y. Omitted features are 0; `qid:` tokens and `#` comments are ignored. An index
/// of 0, beyond `columns`, or not increasing is a bad row naming its file:line:column.
final class LibsvmDecoder: RowDecoder {
    let buf: ChunkBuffer
    let name: String
    let config: SourceConfig
    let layout: RowLayout?
    var rowsKnown: Int64? { nil }
    private(set) var rowsConsumed: Int64
    private var line: Int64 = 0
    private let featureOf: [Int]   // libsvm feature (0-based) -> batch column, -1 when not selected

    init(_ buf: ChunkBuffer, config: SourceConfig, firstRow: Int64) throws(EngineError) {
        self.buf = buf
        self.name = buf.input.file.name
        self.config = config
        guard let c = config.columns else {
            throw .usage(name, "libsvm input needs source.columns (the number of features)")
        }
        var cfg = config
        cfg.target = .none
        cfg.weight = nil
        layout = try RowLayout(rawColumns: c, config: cfg, location: name)
        var map = [Int](repeating: -1, count: c)
        for (raw, role) in layout!.roles.enumerated() { if case let .feature(j) = role { map[raw] = j } }
        featureOf = map
        rowsConsumed = firstRow
    }

    func prime() throws(EngineError) {}

    private func nextLine() throws(EngineError) -> (Int, Int)? {
        let columns = layout?.rawColumns ?? 0
        switch try buf.nextLine(limit: { _, _ in (1 << 20) + 64 * columns }) {
        case .end: return nil
        case let .line(s, e):
            // Every line is held to the limit whatever the reads' sizes (the parse threads apply the same rule).
            let limit = (1 << 20) + 64 * columns
            if e - s > limit { throw tooLong(line: line + 1, max: limit) }
            line += 1
            return (s, e)
        case let .tooLong(max): throw tooLong(line: line + 1, max: max)
        }
    }

    func fill(_ batch: inout RowBatch, bad: BadRowHandler) throws(EngineError) -> Bool {
        let limit = (1 << 20) + 64 * featureOf.count
        if let pool {
            let pipe = pipeline ?? makePipeline(pool)
            while !batch.isFull {
                if try pipe.step(&batch, nextRow: &rowsConsumed, line: &line, lineLimit: limit, onFault: { f, bytes, line, row throws(EngineError) in
                    if case let .tooLong(max) = f.fault.kind { throw self.tooLong(line: line, max: max) }
                    guard case let .message(column, text, hint) = f.fault.kind else { return }
                    let r = row
                    row += 1
                    try bad.report(.data("\(self.name):\(line):\(column)", text, hint: hint), row: r,
                                   raw: { TextDecoder.text(bytes, f.start, f.end) })
                }) { continue }
                guard try fillOne(&batch, bad: bad) else { return false }
            }
            return true
        }
        while !batch.isFull {
            guard try fillOne(&batch, bad: bad) else { return false }
        }
        return true
    }

    /// Parse threads (set by SourceReader); nil: line by line on this thread, with the same rows and errors.
    var pool: ParsePool?
    var blockBytesPerThread = 1 << 20
    private var pipeline: BlockPipeline?

    private func makePipeline(_ pool: ParsePool) -> BlockPipeline {
        let map = featureOf, allow = config.allowNonfinite
        let p = BlockPipeline(buf: buf, pool: pool, blockBytesPerThread: blockBytesPerThread, quoteAware: false, delimiter: 0x20,
                              columns: layout!.features, rawColumns: 2) { piece, bytes, _, limit in
            piece.parseLibsvm(bytes, featureOf: map, allowNonfinite: allow, lineLimit: limit)
        }
        pipeline = p
        return p
    }

    func tooLong(line: Int64, max: Int) -> EngineError {
        .data("\(name):\(line):1", "line is longer than \(max) bytes without a newline")
    }

    /// Reads one line: a row into the batch, a bad row reported, or a blank/comment line passed over.
    /// False at the end of the input.
    private func fillOne(_ batch: inout RowBatch, bad: BadRowHandler) throws(EngineError) -> Bool {
        guard let (s, e0) = try nextLine() else { return false }
        let p = UnsafePointer(buf.base)
        if LibsvmDecoder.isBlank(p, s, e0) { return true }
        let d = batch.columns
        let row = rowsConsumed
        rowsConsumed += 1
        if rowScratch.count < d { rowScratch = [Double](repeating: 0, count: d) }
        var label = 0.0
        let fault = rowScratch.withUnsafeMutableBufferPointer { out in
            for j in 0..<d { out[j] = 0 }
            return LibsvmDecoder.parseRecord(p, s, e0, featureOf: featureOf, allowNonfinite: config.allowNonfinite, label: &label) { j, v in out[j] = v }
        }
        if let (column, text, hint) = fault {
            try bad.report(.data("\(name):\(line):\(column)", text, hint: hint), row: row,
                           raw: { TextDecoder.text(p, s, e0) })
            return true
        }
        let slot = batch.appendSlot(index: row)
        for j in 0..<d { batch.features[slot * d + j] = rowScratch[j] }
        batch.targets![slot] = label
        return true
    }
    private var rowScratch: [Double] = []

    /// Whether the line holds no record: only blanks, or a comment.
    static func isBlank(_ p: UnsafePointer<UInt8>, _ s: Int, _ e0: Int) -> Bool {
        var i = s
        while i < e0 && (p[i] == 0x20 || p[i] == 0x09) { i += 1 }
        return i == e0 || p[i] == 0x23
    }

    /// One record `[s, e0)` (not blank): `label` and each selected feature given to `store(column, value)` in
    /// increasing column order (omitted features are 0); nil, or the fault as (1-based byte column, message,
    /// hint) — `store` may have been called for the part before it. Shared by the line-by-line path and the
    /// parse threads, so both give the same rows and words.
    @inline(__always)
    static func parseRecord(_ p: UnsafePointer<UInt8>, _ s: Int, _ e0: Int, featureOf: [Int], allowNonfinite: Bool,
                            label: inout Double, store: (Int, Double) -> Void) -> (Int, String, String?)? {
        var e = e0
        if let hash = memchr(p + s, 0x23, e - s) {   // '#' comment
            e = UnsafePointer<UInt8>(hash.assumingMemoryBound(to: UInt8.self)) - p
        }
        var i = s
        func skipBlank() { while i < e && (p[i] == 0x20 || p[i] == 0x09) { i += 1 } }
        func token() -> (Int, Int) { let a = i; while i < e && p[i] != 0x20 && p[i] != 0x09 { i += 1 }; return (a, i) }
        func text(_ a: Int, _ b: Int) -> String { String(decoding: UnsafeBufferPointer(start: p + a, count: min(40, b - a)), as: UTF8.self) }
        skipBlank()
        let (la, lb) = token()
        switch NumberParser.parse(p, la, lb) {
        case let .value(v): label = v
        default: return (la - s + 1, "bad label: expected a number, found '\(text(la, lb))'", nil)
        }
        var previous = 0
        while true {
            skipBlank()
            if i == e { return nil }
            let (ta, tb) = token()
            guard let colon = memchr(p + ta, 0x3A, tb - ta) else {
                return (ta - s + 1, "expected index:value, found '\(text(ta, tb))'", nil)
            }
            let c = UnsafePointer<UInt8>(colon.assumingMemoryBound(to: UInt8.self)) - p
            if c - ta == 3 && p[ta] == 0x71 && p[ta + 1] == 0x69 && p[ta + 2] == 0x64 { continue }   // qid:
            var idx = 0
            var ok = c > ta
            for k in ta..<c { let dgt = p[k] &- 0x30; if dgt < 10 && idx < 1 << 40 { idx = idx * 10 + Int(dgt) } else { ok = false } }
            guard ok else { return (ta - s + 1, "bad feature index '\(text(ta, c))'", nil) }
            guard idx >= 1 else { return (ta - s + 1, "feature index 0: libsvm indices are 1-based", "add 1 to every index") }
            guard idx <= featureOf.count else {
                return (ta - s + 1, "feature index \(idx) is out of range: source.columns is \(featureOf.count)", nil)
            }
            guard idx > previous else { return (ta - s + 1, "feature index \(idx) after \(previous): indices must increase", nil) }
            previous = idx
            let v: Double
            switch NumberParser.parse(p, c + 1, tb) {
            case let .value(x): v = x
            case let .nonfinite(x, what):
                guard allowNonfinite else { return (c + 2 - s, "bad value: \(what)", nil) }
                v = x
            case .overflow:
                guard allowNonfinite else { return (c + 2 - s, "bad value: overflows float64", nil) }
                v = .infinity
            case .invalid:
                return (c + 2 - s, "bad value: expected a number after '\(idx):'", nil)
            }
            let j = featureOf[idx - 1]
            if j >= 0 { store(j, v) }
        }
    }
}
