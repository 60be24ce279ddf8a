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
        case let .line(s, e): line += 1; return (s, e)
        case let .tooLong(max): throw .data("\(name):\(line + 1):1", "line is longer than \(max) bytes without a newline")
        }
    }

    func fill(_ batch: inout RowBatch, bad: BadRowHandler) throws(EngineError) -> Bool {
        let d = batch.columns
        while !batch.isFull {
            guard let (s, e0) = try nextLine() else { return false }
            var e = e0
            if let hash = memchr(buf.base + s, 0x23, e - s) {   // '#' comment
                e = UnsafeMutablePointer<UInt8>(hash.assumingMemoryBound(to: UInt8.self)) - buf.base
            }
            var i = s
            let p = buf.base
            func skipBlank() { while i < e && (p[i] == 0x20 || p[i] == 0x09) { i += 1 } }
            func token() -> (Int, Int) { let a = i; while i < e && p[i] != 0x20 && p[i] != 0x09 { i += 1 }; return (a, i) }
            skipBlank()
            if i == e { continue }   // blank or comment-only line
            let row = rowsConsumed
            rowsConsumed += 1
            let slot = batch.appendSlot(index: row)
            for j in 0..<d { batch.features[slot * d + j] = 0 }
            var failure: EngineError?
            let (la, lb) = token()
            switch NumberParser.parse(p, la, lb) {
            case let .value(v): batch.targets![slot] = v
            default: failure = .data("\(name):\(line):\(la - s + 1)", "bad label: expected a number, found '\(String(decoding: UnsafeBufferPointer(start: p + la, count: min(40, lb - la)), as: UTF8.self))'")
            }
            var previous = 0
            while failure == nil {
                skipBlank()
                if i == e { break }
                let (ta, tb) = token()
                guard let colon = memchr(p + ta, 0x3A, tb - ta) else {
                    failure = .data("\(name):\(line):\(ta - s + 1)", "expected index:value, found '\(String(decoding: UnsafeBufferPointer(start: p + ta, count: min(40, tb - ta)), as: UTF8.self))'")
                    break
                }
                let c = UnsafeMutablePointer<UInt8>(colon.assumingMemoryBound(to: UInt8.self)) - p
                if c - ta == 3 && p[ta] == 0x71 && p[ta + 1] == 0x69 && p[ta + 2] == 0x64 { continue }   // qid:
                var idx = 0
                var ok = c > ta
                for k in ta..<c { let dgt = p[k] &- 0x30; if dgt < 10 && idx < 1 << 40 { idx = idx * 10 + Int(dgt) } else { ok = false } }
                guard ok else { failure = .data("\(name):\(line):\(ta - s + 1)", "bad feature index '\(String(decoding: UnsafeBufferPointer(start: p + ta, count: min(40, c - ta)), as: UTF8.self))'"); break }
                guard idx >= 1 else {
                    failure = .data("\(name):\(line):\(ta - s + 1)", "feature index 0: libsvm indices are 1-based", hint: "add 1 to every index")
                    break
                }
                guard idx <= featureOf.count else {
                    failure = .data("\(name):\(line):\(ta - s + 1)", "feature index \(idx) is out of range: source.columns is \(featureOf.count)")
                    break
                }
                guard idx > previous else {
                    failure = .data("\(name):\(line):\(ta - s + 1)", "feature index \(idx) after \(previous): indices must increase")
                    break
                }
                previous = idx
                let v: Double
                switch NumberParser.parse(p, c + 1, tb) {
                case let .value(x): v = x
                case let .nonfinite(x, what):
                    if config.allowNonfinite { v = x } else { failure = .data("\(name):\(line):\(c + 2 - s)", "bad value: \(what)"); continue }
                case .overflow:
                    if config.allowNonfinite { v = .infinity } else { failure = .data("\(name):\(line):\(c + 2 - s)", "bad value: overflows float64"); continue }
                case .invalid:
                    failure = .data("\(name):\(line):\(c + 2 - s)", "bad value: expected a number after '\(idx):'")
                    continue
                }
                let j = featureOf[idx - 1]
                if j >= 0 { batch.features[slot * d + j] = v }
            }
            if let failure {
                batch.dropLast()
                let raw = String(decoding: UnsafeBufferPointer(start: p + s, count: e0 - s), as: UTF8.self)
                try bad.report(failure, row: row, raw: { raw })
            }
        }
        return true
    }
}
