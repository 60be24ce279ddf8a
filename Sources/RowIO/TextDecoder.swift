import EngineCore
#if canImport(Glibc)
import Glibc
#endif

/// Decodes delimited text (csv: ',', tsv: tab) straight into batch buffers: one row per line; LF or CRLF;
/// a UTF-8 BOM skipped; blank lines ignored (they hold no row); a header line detected (`header: auto`: the
/// first line has a field that is not a number) or declared, its names kept for the manifest's names.
///
/// Quoting as RFC 4180 and pandas write it: a field that starts with `"` runs to the closing quote (`""`
/// inside is a quote), so it may hold delimiters and newlines; a quote elsewhere in a field is an ordinary
/// byte. Only the fields the layout uses (features, target, weight) are converted to numbers; the others
/// are only delimited, and may hold anything.
///
/// Errors name `file:line:column` (1-based; column = byte column of the field). A record longer than
/// 1 MiB + 64 bytes per column is rejected at its line, which bounds memory on hostile input. UTF-16 input is
/// rejected with a hint.
///
/// With a parse pool (`pool`), the header and first row are read here and the rest in blocks on the pool's
/// threads (`BlockPipeline`); without one, line by line — the reference the block path is tested against.
final class TextDecoder: RowDecoder {
    let buf: ChunkBuffer
    let name: String
    let delimiter: UInt8
    let config: SourceConfig
    private(set) var layout: RowLayout?
    private var line: Int64 = 0
    private var nextRow: Int64
    private var headerDone = false
    private var firstLine = true
    var rowsKnown: Int64? { nil }
    private var converter = RecordConverter(roles: [], rawColumns: 0, allowNonfinite: false)
    private var rowScratch: [Double] = []
    /// Field boundaries of the current line (reused: no per-row allocation).
    private var fieldStarts: [Int] = []
    private var fieldEnds: [Int] = []
    /// The header row's names (unquoted), when there is one.
    private(set) var headerNames: [String]?
    /// The 1-based line the current record starts on (records with quoted newlines span several).
    private var recordLine: Int64 = 0
    /// Whether the current record holds a quote: looked for once per record (by the end-of-record test),
    /// then used by the line count and the field split.
    private var recordHasQuote = false

    init(_ buf: ChunkBuffer, delimiter: UInt8, config: SourceConfig, firstRow: Int64) {
        self.buf = buf
        self.name = buf.input.file.name
        self.delimiter = delimiter
        self.config = config
        self.nextRow = firstRow
    }

    var rowsConsumed: Int64 { nextRow }

    /// 1 MiB + 64 bytes per column; before the column count is known, per delimiter seen so far.
    func maxLineBytes(fieldsSeen: Int) -> Int {
        (1 << 20) + 64 * (layout?.rawColumns ?? config.columns ?? (fieldsSeen + 1))
    }

    private func nextLine() throws(EngineError) -> (Int, Int)? {
        let q = delimiter
        switch try buf.nextLine(limit: { a, b in self.maxLineBytes(fieldsSeen: self.countDelimiters(a, b)) },
                                complete: { p, a, b in
                                    self.recordHasQuote = memchr(p + a, 0x22, b - a) != nil
                                    return !self.recordHasQuote || TextDecoder.scanQuoted(p, a, b, delimiter: q) { _ in }
                                }) {
        case .end: return nil
        case let .line(s, e):
            // Every record is held to the limit, whatever the reads' sizes were (the parse threads apply the
            // same rule, so where a long record is rejected does not depend on the thread count).
            let limit = maxLineBytes(fieldsSeen: layout == nil ? countDelimiters(s, e) : 0)
            if e - s > limit { throw tooLong(line: line + 1, max: limit) }
            line += 1
            recordLine = line
            // A record with quoted newlines: count them, so later lines keep their numbers.
            if recordHasQuote {
                var i = s
                while i < e, let nl = memchr(buf.base + i, 0x0A, e - i) {
                    line += 1
                    i = UnsafeMutablePointer<UInt8>(nl.assumingMemoryBound(to: UInt8.self)) - buf.base + 1
                }
            }
            return (s, e)
        case let .tooLong(max):
            throw tooLong(line: line + 1, max: max)
        }
    }

    /// Walks [a, b) as RFC 4180 fields: a field that starts with `"` (after blanks) runs to its closing quote,
    /// `""` inside being a quote; a quote anywhere else is an ordinary byte. `delimiterAt` is called for every
    /// delimiter outside quotes. Returns whether the last quoted field was closed. memchr jumps from quote to
    /// quote and from delimiter to delimiter, so quoted text costs about what unquoted text does.
    static func scanQuoted(_ p: UnsafePointer<UInt8>, _ a: Int, _ b: Int, delimiter: UInt8, delimiterAt: (Int) -> Void) -> Bool {
        var i = a
        while true {
            var k = i
            while k < b && p[k] == 0x20 { k += 1 }
            if k < b && p[k] == 0x22 {
                var q = k + 1
                while true {
                    guard q < b, let hit = memchr(p + q, 0x22, b - q) else { return false }
                    let pos = UnsafePointer<UInt8>(hit.assumingMemoryBound(to: UInt8.self)) - p
                    if pos + 1 < b && p[pos + 1] == 0x22 { q = pos + 2; continue }
                    q = pos + 1
                    break
                }
                i = q   // text after the closing quote belongs to the same field
            }
            guard i < b, let hit = memchr(p + i, Int32(delimiter), b - i) else { return true }
            let d = UnsafePointer<UInt8>(hit.assumingMemoryBound(to: UInt8.self)) - p
            delimiterAt(d)
            i = d + 1
        }
    }

    private func countDelimiters(_ a: Int, _ b: Int) -> Int {
        var n = 0
        for i in a..<b where buf.base[i] == delimiter { n += 1 }
        return n
    }

    private func splitFields(_ s: Int, _ e: Int) {
        fieldStarts.removeAll(keepingCapacity: true)
        fieldEnds.removeAll(keepingCapacity: true)
        let p = buf.base
        if recordHasQuote { splitQuoted(s, e); return }
        var a = s
        while true {
            var i = a
            if let hit = memchr(p + a, Int32(delimiter), e - a) {
                i = UnsafeMutablePointer<UInt8>(hit.assumingMemoryBound(to: UInt8.self)) - p
                fieldStarts.append(a); fieldEnds.append(i)
                a = i + 1
            } else {
                fieldStarts.append(a); fieldEnds.append(e)
                return
            }
        }
    }

    /// The slow split, for lines with a quote: delimiters inside a quoted field do not count. A field keeps
    /// its quotes (the number parser and `unquoted` remove them).
    private func splitQuoted(_ s: Int, _ e: Int) {
        var a = s
        _ = TextDecoder.scanQuoted(buf.base, s, e, delimiter: delimiter) { i in
            fieldStarts.append(a); fieldEnds.append(i)
            a = i + 1
        }
        fieldStarts.append(a); fieldEnds.append(e)
    }

    /// A field's text without surrounding blanks and quotes, `""` read as `"`.
    func unquoted(_ a: Int, _ b: Int) -> String {
        var i = a, j = b
        let p = buf.base
        while i < j && (p[i] == 0x20 || p[i] == 0x09) { i += 1 }
        while j > i && (p[j - 1] == 0x20 || p[j - 1] == 0x09 || p[j - 1] == 0x0D) { j -= 1 }
        guard j - i >= 2 && p[i] == 0x22 && p[j - 1] == 0x22 else { return rawText(i, j) }
        var bytes: [UInt8] = []
        var k = i + 1
        while k < j - 1 {
            bytes.append(p[k])
            k += p[k] == 0x22 && k + 1 < j - 1 && p[k + 1] == 0x22 ? 2 : 1
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private func isBlank(_ s: Int, _ e: Int) -> Bool { TextDecoder.isBlank(buf.base, s, e) }

    static func isBlank(_ p: UnsafePointer<UInt8>, _ s: Int, _ e: Int) -> Bool {
        for i in s..<e where p[i] != 0x20 && p[i] != 0x09 { return false }
        return true
    }

    private func checkEncoding(_ s: inout Int, _ e: Int) throws(EngineError) {
        let p = buf.base
        if e - s >= 3 && p[s] == 0xEF && p[s + 1] == 0xBB && p[s + 2] == 0xBF { s += 3 }   // UTF-8 BOM
        if e - s >= 2 && ((p[s] == 0xFF && p[s + 1] == 0xFE) || (p[s] == 0xFE && p[s + 1] == 0xFF)) {
            throw .data("\(name):1:1", "UTF-16 text is not supported",
                        hint: "convert it: iconv -f UTF-16 -t UTF-8 FILE")
        }
        if memchr(p + s, 0, e - s) != nil {
            throw .data("\(name):\(line):1", "binary data (NUL bytes) in text input",
                        hint: "UTF-16 or a binary file? Set source.format to f32, f64 or npy, or convert with iconv")
        }
    }

    /// Whether the line looks like a header: some field is neither a number nor a non-finite word.
    private func looksLikeHeader() -> Bool {
        for k in 0..<fieldStarts.count {
            if case .invalid = NumberParser.parse(buf.base, fieldStarts[k], fieldEnds[k]) { return true }
        }
        return false
    }

    /// The next line holding a row (blank lines and the header passed over), its fields split; nil at the end.
    private func nextDataLine() throws(EngineError) -> (Int, Int)? {
        while true {
            guard case (var s, let e)? = try nextLine() else { return nil }
            if firstLine {
                firstLine = false
                try checkEncoding(&s, e)
            }
            if isBlank(s, e) { continue }
            splitFields(s, e)
            if !headerDone {
                headerDone = true
                let header: Bool
                switch config.header {
                case .yes: header = true
                case .no: header = false
                case .auto: header = looksLikeHeader()
                }
                if header {
                    headerNames = (0..<fieldStarts.count).map { unquoted(fieldStarts[$0], fieldEnds[$0]) }
                    continue
                }
            }
            return (s, e)
        }
    }

    func fill(_ batch: inout RowBatch, bad: BadRowHandler) throws(EngineError) -> Bool {
        if let (s, e) = pending {
            // Parsed by prime(); its bytes are still in the buffer because nothing refilled since.
            pending = nil
            splitFields(s, e)
            try parseRow(s, e, into: &batch, bad: bad)
        }
        guard let pool, layout != nil else {
            while !batch.isFull {
                guard let (s, e) = try nextDataLine() else { return false }
                if layout == nil { try establishLayout(fields: fieldStarts.count) }
                try parseRow(s, e, into: &batch, bad: bad)
            }
            return true
        }
        let pipe = pipeline ?? makePipeline(pool)
        while !batch.isFull {
            if try pipe.step(&batch, nextRow: &nextRow, line: &line, lineLimit: maxLineBytes(fieldsSeen: 0), onFault: { f, bytes, line, row throws(EngineError) in
                if case let .tooLong(max) = f.fault.kind { throw self.tooLong(line: line, max: max) }
                let r = row
                row += 1
                try bad.report(self.error(f.fault, bytes, recordStart: f.start, line: line), row: r, column: f.fault.column,
                               raw: { TextDecoder.text(bytes, f.start, f.end) })
            }) { continue }
            // Nothing in flight and no block to take: the end of the input, or a record longer than a block.
            guard let (s, e) = try nextDataLine() else { return false }
            try parseRow(s, e, into: &batch, bad: bad)
        }
        return true
    }

    // MARK: parallel parsing

    /// Parse threads (set by SourceReader); nil: line by line on this thread. Either way the rows, their
    /// positions, every error and quarantine line are the same (see `BlockPipeline`).
    var pool: ParsePool?
    /// Bytes of text per parse thread in one block (tests make it tiny to put block edges everywhere).
    var blockBytesPerThread = 1 << 20
    private var pipeline: BlockPipeline?

    private func makePipeline(_ pool: ParsePool) -> BlockPipeline {
        let delimiter = delimiter, converter = converter
        let p = BlockPipeline(buf: buf, pool: pool, blockBytesPerThread: blockBytesPerThread, quoteAware: true, delimiter: delimiter,
                              columns: layout!.features, rawColumns: layout!.rawColumns) { piece, bytes, quoted, limit in
            piece.parse(bytes, delimiter: delimiter, quoted: quoted, converter: converter, lineLimit: limit)
        }
        pipeline = p
        return p
    }

    func tooLong(line: Int64, max: Int) -> EngineError {
        .data("\(name):\(line):1", "line is longer than \(max) bytes without a newline",
              hint: "not \(delimiter == 0x09 ? "tsv" : "csv") text, or a quote (\") that opens a field and never closes? Set source.format")
    }

    func establishLayout(fields: Int) throws(EngineError) {
        if let c = config.columns, c != fields {
            throw .data("\(name):\(line):1", "expected \(c) fields per row (source.columns), found \(fields)",
                        hint: delimiter == 0x2C && fields == 1 ? "tab-separated? set source.format: tsv" : nil)
        }
        var names = headerNames
        if let given = config.names {
            guard given.count == fields else {
                throw .usage("\(name):\(recordLine):1", "source.names lists \(given.count) names, but rows have \(fields) fields")
            }
            names = given
        }
        if names == nil && config.usesNames && config.header == .auto {
            throw .data("\(name):1:1", "the manifest names columns, but the first line looks like data, not a header",
                        hint: "set source.header: yes if the first line is the header, or give source.names")
        }
        let l = try RowLayout(rawColumns: fields, config: config, names: names, location: "\(name):\(recordLine):1")
        layout = l
        converter = RecordConverter(roles: l.roles, rawColumns: l.rawColumns, allowNonfinite: config.allowNonfinite)
    }

    private func parseRow(_ s: Int, _ e: Int, into batch: inout RowBatch, bad: BadRowHandler) throws(EngineError) {
        let layout = layout!
        let row = nextRow
        nextRow += 1
        let d = batch.columns
        if rowScratch.count < d { rowScratch = [Double](repeating: 0, count: d) }
        var t = 0.0, w = 0.0
        let fault = fieldStarts.withUnsafeBufferPointer { st in
            fieldEnds.withUnsafeBufferPointer { en in
                rowScratch.withUnsafeMutableBufferPointer { out in
                    converter.convert(buf.base, st.baseAddress!, en.baseAddress!, fields: st.count, out: out.baseAddress!, target: &t, weight: &w)
                }
            }
        }
        if let fault {
            try bad.report(error(fault, buf.base, recordStart: s, line: recordLine), row: row, column: fault.column,
                           raw: { TextDecoder.text(buf.base, s, e) })
            return
        }
        let slot = batch.appendSlot(index: row)
        for j in 0..<d { batch.features[slot * d + j] = rowScratch[j] }
        if layout.hasTarget { batch.targets![slot] = t }
        if layout.hasWeight { batch.weights![slot] = w }
    }

    /// The message for a bad record, the same whichever thread parsed it.
    func error(_ f: RowFault, _ p: UnsafePointer<UInt8>, recordStart s: Int, line: Int64) -> EngineError {
        let layout = layout!
        let k = f.column ?? 0
        let at = "\(name):\(line):\(f.fieldStart - s + 1)"
        switch f.kind {
        case let .ragged(found):
            return .data("\(name):\(line):1", "ragged row: expected \(layout.rawColumns) fields, found \(found)")
        case let .nonfinite(what):
            return .data(at, "bad value: \(what) in field \(k + 1)\(layout.label(k))",
                         hint: "a missing or non-finite cell: on_bad_row: skip drops such rows (run.json counts them per column); allow_nonfinite: true keeps them")
        case .overflow:
            return .data(at, "bad value: '\(TextDecoder.text(p, f.fieldStart, f.fieldEnd))' overflows float64 in field \(k + 1)\(layout.label(k))")
        case .invalid:
            return .data(at, "bad value: expected a number in field \(k + 1)\(layout.label(k)), found '\(TextDecoder.text(p, f.fieldStart, f.fieldEnd, limit: 40))'",
                         hint: layout.isIdentity && config.select == nil ? "a text column? list the numeric columns in source.select; the others are then not parsed" : nil)
        case let .badWeight(v):
            return .data(at, "bad weight \(v): weights are multiplicities and must be ≥ 0")
        case let .tooLong(max):
            return tooLong(line: line, max: max)
        case let .message(column, text, hint):
            return .data("\(name):\(line):\(column)", text, hint: hint)
        }
    }

    static func text(_ p: UnsafePointer<UInt8>, _ a: Int, _ b: Int, limit: Int = 1 << 20) -> String {
        let n = min(b - a, limit)
        let t = String(decoding: UnsafeBufferPointer(start: p + a, count: n), as: UTF8.self)
        return n < b - a ? t + "…" : t
    }

    func rawText(_ a: Int, _ b: Int, limit: Int = 1 << 20) -> String { TextDecoder.text(buf.base, a, b, limit: limit) }

    /// Reads up to the first data row to learn the layout; that row stays pending for the first fill().
    func prime() throws(EngineError) {
        guard layout == nil, pending == nil, let (s, e) = try nextDataLine() else { return }
        try establishLayout(fields: fieldStarts.count)
        pending = (s, e)
    }
    private var pending: (Int, Int)?
}

/// A byte-in/rows-out decoder over one input file.
protocol RowDecoder: AnyObject {
    var layout: RowLayout? { get }
    var rowsKnown: Int64? { get }
    /// Rows (good and bad) consumed so far, i.e. the next row's 0-based position.
    var rowsConsumed: Int64 { get }
    /// Appends rows until the batch is full (true) or the input ends (false).
    func fill(_ batch: inout RowBatch, bad: BadRowHandler) throws(EngineError) -> Bool
    /// Reads far enough to know the layout (text: the first data row), without losing any row.
    func prime() throws(EngineError)
}
