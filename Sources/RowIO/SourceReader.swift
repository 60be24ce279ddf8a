import EngineCore
#if canImport(Glibc)
import Glibc
#endif

/// The rows of a run's input: standard input, one file, or a directory of shards read in bytewise name order
/// (names starting with `.` or `_` skipped — Hadoop and Spark leave `_SUCCESS` and `.crc` files). Each file
/// may be zstd-compressed (detected from its bytes) and is decoded in the configured format (`auto`: npy
/// magic, then text sniffing: tab → tsv, `idx:val` tokens → libsvm, else csv).
///
/// Row positions continue across files. All files must have the same layout.
public final class SourceReader: @unchecked Sendable {
    public let config: SourceConfig
    public let bad: BadRowHandler
    private var pendingPaths: [String]
    private let isStdin: Bool
    private var decoder: RowDecoder?
    private var input: ByteInput?
    private var bytesInFinished: Int64 = 0
    private var rowsFinished: Int64 = 0
    public private(set) var layout: RowLayout?
    /// Display name of the input (path or <stdin>).
    public let displayName: String
    /// Total input bytes when every file's size is known (for progress).
    public let totalBytes: Int64?
    /// Rows in the whole input when it says so (README, "Input"); computed at open for the first file only when
    /// the input is a single file.
    public private(set) var rowsKnown: Int64?
    public private(set) var formatUsed: SourceConfig.Format?

    private var memoryFile: RawFile?

    /// Threads that parse csv/tsv/libsvm text in blocks (1: the decoding thread parses the blocks itself; 0, the
    /// default: line by line, the reference the block path is tested against). Outputs do not depend on it.
    public var parseThreads = 0 {
        didSet {
            if pool != nil && pool?.threads != parseThreads { pool?.shutdown(); pool = nil }
            attachPool(decoder)
        }
    }

    /// Gives a text decoder the parse pool, started on first use (binary input never starts its threads).
    private func attachPool(_ dec: RowDecoder?) {
        guard dec is TextDecoder || dec is LibsvmDecoder else { return }
        if parseThreads >= 1 && pool == nil { pool = ParsePool(threads: parseThreads) }
        let p = parseThreads >= 1 ? pool : nil
        (dec as? TextDecoder)?.pool = p
        (dec as? LibsvmDecoder)?.pool = p
    }
    /// Text bytes per parse thread in one block (`ROWFLOW_PARSE_BLOCK_BYTES`, a test hook, overrides it):
    /// memory is about 4 blocks' worth; outputs do not depend on it.
    public var parseBlockBytes = ParsePool.defaultBlockBytes() {
        didSet {
            (decoder as? TextDecoder)?.blockBytesPerThread = parseBlockBytes
            (decoder as? LibsvmDecoder)?.blockBytesPerThread = parseBlockBytes
        }
    }
    private var pool: ParsePool?

    deinit { pool?.shutdown() }

    /// Reads one in-memory input through the same decoders (fuzzing, tests).
    public init(memory file: RawFile, config: SourceConfig, bad: BadRowHandler) throws(EngineError) {
        self.config = config
        self.bad = bad
        isStdin = false
        pendingPaths = []
        displayName = file.name
        totalBytes = file.size
        memoryFile = file
        _ = try openNext()
    }

    /// `path` nil or "-" reads standard input.
    public init(path: String?, config: SourceConfig, bad: BadRowHandler) throws(EngineError) {
        self.config = config
        self.bad = bad
        if path == nil || path == "-" {
            isStdin = true
            pendingPaths = []
            displayName = "<stdin>"
            totalBytes = nil
        } else {
            let p = path!
            isStdin = false
            displayName = p
            var st = stat()
            guard stat(p, &st) == 0 else { throw .notFound(p, "cannot open input: \(String(cString: strerror(errno)))") }
            if (st.st_mode & S_IFMT) == S_IFDIR {
                pendingPaths = try SourceReader.shardFiles(p)
                var total: Int64 = 0
                for f in pendingPaths { var s2 = stat(); if stat(f, &s2) == 0 { total += Int64(s2.st_size) } }
                totalBytes = total
            } else {
                pendingPaths = [p]
                totalBytes = (st.st_mode & S_IFMT) == S_IFREG ? Int64(st.st_size) : nil
            }
        }
        let single = isStdin || pendingPaths.count == 1
        _ = try openNext()
        if !single { rowsKnown = nil }
    }

    static func shardFiles(_ dir: String) throws(EngineError) -> [String] {
        guard let d = opendir(dir) else { throw .notFound(dir, "cannot read directory: \(String(cString: strerror(errno)))") }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name.hasPrefix(".") || name.hasPrefix("_") { continue }
            var st = stat()
            let full = dir.hasSuffix("/") ? dir + name : dir + "/" + name
            if stat(full, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG { names.append(full) }
        }
        // Bytewise order, independent of locale.
        return names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }

    /// Opens the next file and primes its decoder; false when there is none.
    private func openNext() throws(EngineError) -> Bool {
        if let input { bytesInFinished += input.file.bytesIn }
        if let decoder { rowsFinished = decoder.rowsConsumed }
        decoder = nil
        input = nil
        let file: RawFile
        if let m = memoryFile {
            memoryFile = nil
            file = m
        } else if isStdin {
            if bytesInFinished > 0 || rowsFinished > 0 || formatUsed != nil { return false }
            file = RawFile.stdin()
        } else {
            guard !pendingPaths.isEmpty else { return false }
            file = try RawFile.open(pendingPaths.removeFirst())
        }
        let inp = try ByteInput(file)
        let buf = ChunkBuffer(inp)
        let dec = try makeDecoder(buf, firstRow: rowsFinished)
        attachPool(dec)
        (dec as? TextDecoder)?.blockBytesPerThread = parseBlockBytes
        (dec as? LibsvmDecoder)?.blockBytesPerThread = parseBlockBytes
        try dec.prime()
        if let l = dec.layout {
            if let prev = layout, prev.rawColumns != l.rawColumns {
                throw .data(file.name, "this file has \(l.rawColumns) fields per row, earlier files had \(prev.rawColumns)")
            }
            layout = l
        }
        input = inp
        decoder = dec
        if rowsKnown == nil { rowsKnown = dec.rowsKnown }
        if formatUsed == nil { formatUsed = resolvedFormat }
        return true
    }

    private var resolvedFormat: SourceConfig.Format?

    private func makeDecoder(_ buf: ChunkBuffer, firstRow: Int64) throws(EngineError) -> RowDecoder {
        var format = config.format
        let name = buf.input.file.name
        if format == .auto { format = try sniff(buf) }
        resolvedFormat = format
        switch format {
        case .csv: return TextDecoder(buf, delimiter: 0x2C, config: config, firstRow: firstRow)
        case .tsv: return TextDecoder(buf, delimiter: 0x09, config: config, firstRow: firstRow)
        case .libsvm: return try LibsvmDecoder(buf, config: config, firstRow: firstRow)
        case .f32, .f64:
            guard let c = config.columns else {
                throw .usage(name, "raw \(format.rawValue) input needs source.columns (values per row)")
            }
            let element: ElementType = format == .f32 ? .f4 : .f8
            let content = buf.input.knownContentSize
            var known: Int64? = nil
            if let content, content % Int64(c * element.size) == 0 { known = content / Int64(c * element.size) }
            return try BinaryDecoder(buf, element: element, rawColumns: c, config: config, firstRow: firstRow,
                                     rowsKnown: known, expectedRows: nil)
        case .npy:
            let h = try NpyHeader.parse(buf, name: name)
            if let c = config.columns, c != h.columns {
                throw .data("\(name): byte 10", "the npy header says \(h.columns) columns, source.columns is \(c)")
            }
            // Plain files only: a declared zstd size is trusted for the row count, not to reject the header early
            // (the data's end is checked against the header either way).
            if !buf.input.isZstd, let content = buf.input.knownContentSize {
                let need = Int64(h.dataOffset) + h.rows * Int64(h.columns * h.element.size)
                if content < need {
                    throw .data("\(name): byte 10", "npy header promises \(h.rows) × \(h.columns) values (\(need) bytes), the file holds \(content) bytes")
                }
            }
            return try BinaryDecoder(buf, element: h.element, rawColumns: h.columns, config: config, firstRow: firstRow,
                                     rowsKnown: h.rows, expectedRows: h.rows)
        case .auto: fatalError("unreachable")
        }
    }

    /// auto: npy magic, else text (tab → tsv; `n:v` tokens after the first → libsvm; else csv).
    private func sniff(_ buf: ChunkBuffer) throws(EngineError) -> SourceConfig.Format {
        let name = buf.input.file.name
        _ = try buf.ensure(1 << 16)
        let n = buf.available
        let p = buf.base + buf.start
        if n >= 6 && (0..<6).allSatisfy({ p[$0] == NpyHeader.magic[$0] }) { return .npy }
        if n >= 2 && ((p[0] == 0xFF && p[1] == 0xFE) || (p[0] == 0xFE && p[1] == 0xFF)) {
            throw .data("\(name):1:1", "UTF-16 text is not supported", hint: "convert it: iconv -f UTF-16 -t UTF-8 FILE")
        }
        var lineEnd = n
        for i in 0..<n where p[i] == 0x0A { lineEnd = i; break }
        var control = 0
        for i in 0..<min(n, 4096) where p[i] < 0x09 || (p[i] > 0x0D && p[i] < 0x20) { control += 1 }
        // Text must be UTF-8: 0xFF runs (a zstd bomb's payload), random bytes and Latin-1 binary fail this.
        let probe = Array(UnsafeBufferPointer(start: p, count: min(n, 4096)))
        let utf8 = (0...min(3, probe.count)).contains { cut in String(validating: probe.dropLast(cut), as: UTF8.self) != nil }
        if control > 0 || !utf8 {
            throw .data("\(name): byte 0", "binary data where text was expected (format: auto)",
                        hint: "raw floats? set source.format: f32 or f64 and source.columns")
        }
        let first = UnsafeBufferPointer(start: p, count: lineEnd)
        if first.contains(0x09) { return .tsv }
        let tokens = first.split(whereSeparator: { $0 == 0x20 })
        if tokens.count >= 2, !first.contains(0x2C), tokens.dropFirst().allSatisfy({ $0.contains(0x3A) }) { return .libsvm }
        return .csv
    }

    /// Appends rows until the batch is full (true) or the whole input is exhausted (false). With
    /// `deferConversion`, float32 rows may stay staged in the batch (see `RowBatch.staged`) for the caller to
    /// `materialize()` on another thread; otherwise every row is converted before this returns.
    public func fill(_ batch: inout RowBatch, deferConversion: Bool = false) throws(EngineError) -> Bool {
        var more = false
        while let dec = decoder {
            if try dec.fill(&batch, bad: bad) { more = true; break }
            if !(try openNext()) { break }
        }
        if !deferConversion { try batch.materialize() }
        return more
    }

    /// Whether batches with a staging area take the float32 fast path on this input.
    public var stagesFloat32: Bool { (decoder as? BinaryDecoder)?.stagesFloat32 ?? false }
    /// Staged rows carry the target last (see `RowBatch.enableStaging(withTarget:)`).
    public var stagesTarget: Bool { (decoder as? BinaryDecoder)?.stagesTarget ?? false }

    public var bytesIn: Int64 { bytesInFinished + (input?.file.bytesIn ?? 0) }
    public var rowsConsumed: Int64 { decoder?.rowsConsumed ?? rowsFinished }
}
