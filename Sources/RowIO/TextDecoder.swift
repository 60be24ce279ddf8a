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
/// Errors name `file:line:column` (1-based; column = byte column of the field). A line longer than
/// 1 MiB + 64 bytes per column is rejected, which bounds memory on hostile input. UTF-16 input is rejected
/// with a hint.
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
        while !batch.isFull {
            if ready != nil { try drain(&batch, bad: bad); continue }
            if let blk = parsing {
                pool.wait()
                parsing = nil
                for pc in blk.pieces { pc.lineBase = line; line += pc.lines }
                ready = blk
                pieceIndex = 0; record = 0; goodIndex = 0; faultIndex = 0
                _ = try launch(pool)   // the next block parses while this one is handed out
                continue
            }
            // Nothing in flight: a block, or (end of input, or a record longer than a block) one record here.
            if try launch(pool) { continue }
            guard let (s, e) = try nextDataLine() else { return false }
            try parseRow(s, e, into: &batch, bad: bad)
        }
        return true
    }

    // MARK: parallel parsing

    /// Parse threads (set by SourceReader); nil: this thread parses. Either way the rows, their positions, every
    /// error and quarantine line are the same: blocks are cut at record boundaries, parsed into per-piece
    /// buffers, and handed out here in input order, with faults rendered once their line number is known.
    var pool: ParsePool?
    /// Bytes of text per parse thread in one block (tests make it tiny to put block edges everywhere).
    var blockBytesPerThread = 1 << 20
    private var ready: TextBlock?, parsing: TextBlock?
    private var spare: TextBlock?
    private var pieceIndex = 0, record = 0, goodIndex = 0, faultIndex = 0

    /// Copies the next whole records (about `blockBytesPerThread` per thread) into a block and starts parsing
    /// it; false when there is none to take: the end of the input, or no record end in sight (a record longer
    /// than a block), which the one-thread path then reads or rejects.
    private func launch(_ pool: ParsePool) throws(EngineError) -> Bool {
        let threads = pool.threads
        let want = blockBytesPerThread * threads
        if buf.capacity < 2 * want { buf.grow(to: 2 * want) }
        while buf.available < want, try buf.refill() {}
        let n = buf.available
        guard n > 0 else { return false }
        let p = UnsafePointer(buf.base + buf.start)
        let quoted = memchr(p, 0x22, n) != nil
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
            guard cut > 0 else { return false }
            while splits.count < threads { splits.append(cut) }
            for j in 0..<splits.count where splits[j] > cut { splits[j] = cut }
        }
        splits.append(cut)
        let blk: TextBlock
        if let s = spare, s.pieces.count == threads { blk = s; spare = nil } else {
            blk = TextBlock(pieces: threads, columns: layout!.features, rawColumns: layout!.rawColumns)
        }
        blk.load(p, count: cut)
        blk.quoted = quoted
        for k in 0..<threads { blk.pieces[k].start = splits[k]; blk.pieces[k].end = splits[k + 1] }
        buf.start += cut
        parsing = blk
        let delimiter = delimiter, converter = converter, limit = maxLineBytes(fieldsSeen: 0)
        pool.run(threads) { k in
            blk.pieces[k].parse(UnsafePointer(blk.bytes), delimiter: delimiter, quoted: quoted, converter: converter, lineLimit: limit)
        }
        return true
    }

    /// Hands out the ready block's rows in order: good rows copied into the batch, bad ones reported.
    private func drain(_ batch: inout RowBatch, bad: BadRowHandler) throws(EngineError) {
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
                let line = pc.lineBase + f.line
                if case let .tooLong(max) = f.fault.kind { throw tooLong(line: line, max: max) }
                let row = nextRow
                nextRow += 1
                try bad.report(error(f.fault, blk.bytes, recordStart: f.start, line: line), row: row, column: f.fault.column,
                               raw: { TextDecoder.text(blk.bytes, f.start, f.end) })
                continue
            }
            let n = min(nextFault - record, batch.capacity - batch.count)
            let first = batch.count
            for r in 0..<n { _ = batch.appendSlot(index: nextRow + Int64(r)) }
            batch.features.withUnsafeMutableBufferPointer { f in
                (f.baseAddress! + first * d).update(from: pc.features + goodIndex * d, count: n * d)
            }
            if hasTarget { batch.targets!.withUnsafeMutableBufferPointer { t in (t.baseAddress! + first).update(from: pc.targets + goodIndex, count: n) } }
            if hasWeight { batch.weights!.withUnsafeMutableBufferPointer { w in (w.baseAddress! + first).update(from: pc.weights + goodIndex, count: n) } }
            nextRow += Int64(n)
            goodIndex += n
            record += n
        }
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
        let l = try RowLayout(rawColumns: fields, config: config, names: names, where: "\(name):\(recordLine):1")
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
