import EngineCore
#if canImport(Glibc)
import Glibc
#endif

/// Rows kept for operators that need more than one pass: in memory up to `memoryBytes`, then appended to
/// `<out>/rowstore/<input>.rows` as fixed-width records, read back with `pread` after the stream.
/// With checkpoints on, the store is *durable*: every row goes to the file (memory is not used), the file is
/// fsynced at each checkpoint and its length recorded, and a resumed run truncates it back to that length.
///
/// Record: `columns` float64 features, then target, weight, source index and shard (the last two as float64
/// bit patterns), all little-endian — `columns + 4` × 8 bytes. The shard is the row's own when a merged
/// sampler tagged it (`RowBatch.shards`), else the run's. RAM is bounded by `memoryBytes` of in-memory rows,
/// a 1 MiB write buffer and a 1 MiB read buffer; disk grows with the row count. In-memory rows live in 2 MiB
/// chunks mapped as they fill, so a growing store never copies what it holds (a growing array would move
/// it, and fault in fresh pages, at every doubling). Spilled rows are read back through `pread`,
/// not a memory map: file pages read through a map count in the process's RSS, and with large folios (ext4,
/// Linux ≥ 6.16) one fault maps far more than was read, so a mapped store's resident size could not be
/// bounded; the page cache still keeps hot blocks, at the cost of one copy per read.
public final class RowStore: RowStoreReader, @unchecked Sendable {
    public let columns: Int
    public let hasTarget: Bool
    /// The shard recorded for rows that carry none.
    let shard: Int64
    let width: Int
    let memoryRows: Int
    /// Rows per `pread` (1 MiB).
    let readRows: Int
    private var readBuffer: [Double] = []
    /// The first read failure: `read` cannot throw (it is called inside operators' steps), so the engine
    /// checks this after each step and fails the run with it (exit 74).
    public private(set) var readError: EngineError?
    let spillPath: String
    /// In-memory records, `chunkRows` to a chunk (the last one partly filled).
    private var chunks: [UnsafeMutablePointer<Double>] = []
    /// Records per chunk. A chunk is 2 MiB (or the multiple of 2 MiB that holds one record) and 2 MiB-aligned;
    /// one of narrow records (≥ 64 to the chunk) is advised as a huge page: filling the store then takes one
    /// page fault per 2 MiB instead of 512, which in a virtual machine was much of the cost of a small
    /// dpp-sample job (Benchmarks/HISTORY.md, "Small job after the fixed-cost work").
    let chunkRows: Int
    let chunkBytes: Int
    static let hugePage = 2 << 20
    private var memCount = 0
    private var fd: Int32 = -1
    private(set) var spilled = 0
    /// Records waiting to be written to the spill file: `writeRows` of them, at most `readRows`.
    private var writeBuffer: [Double] = []
    private var writeRows = 0

    /// `durable`: every row on disk (for checkpoints). `resumeRows`: reopen a durable store holding that many
    /// rows, truncating anything written after the checkpoint.
    public init(columns: Int, hasTarget: Bool, memoryBytes: Int, spillPath: String, durable: Bool = false,
                resumeRows: Int? = nil, shard: Int64 = 0) throws(EngineError) {
        self.columns = columns
        self.hasTarget = hasTarget
        self.shard = shard
        self.width = columns + 4
        self.memoryRows = durable ? 0 : max(1, memoryBytes / (8 * (columns + 4)))
        self.readRows = max(1, (1 << 20) / (8 * (columns + 4)))
        self.chunkBytes = (8 * (columns + 4) + Self.hugePage - 1) / Self.hugePage * Self.hugePage
        self.chunkRows = chunkBytes / (8 * (columns + 4))
        self.spillPath = spillPath
        if let n = resumeRows {
            try openFile(truncate: false)
            let bytes = off_t(n * width * 8)
            var st = stat()
            guard fstat(fd, &st) == 0, st.st_size >= bytes else {
                throw .data(spillPath, "the row store holds fewer rows than the checkpoint recorded (\(n))",
                            hint: "the out directory was changed since the checkpoint; start without --resume")
            }
            guard ftruncate(fd, bytes) == 0, lseek(fd, bytes, SEEK_SET) == bytes else {
                throw .io(spillPath, "cannot truncate the row store: \(String(cString: strerror(errno)))")
            }
            spilled = n
        }
    }

    deinit {
        if fd >= 0 { close(fd) }
        for c in chunks { munmap(c, chunkBytes) }
    }

    public var count: Int { memCount + spilled }
    /// Bytes in the spill file after `flush()`.
    var fileBytes: Int { spilled * width * 8 }

    public func append(_ batch: RowBatch) throws(EngineError) {
        var r = 0
        while r < batch.count && memCount < memoryRows {
            let inChunk = memCount % chunkRows
            if inChunk == 0 { chunks.append(try newChunk()) }
            let n = min(batch.count - r, chunkRows - inChunk, memoryRows - memCount)
            writeRecords(batch, rows: r..<(r + n), to: chunks[chunks.count - 1] + inChunk * width)
            memCount += n
            r += n
        }
        while r < batch.count {
            if writeBuffer.isEmpty { writeBuffer = [Double](repeating: 0, count: readRows * width) }
            let n = min(batch.count - r, readRows - writeRows)
            let start = writeRows * width
            writeBuffer.withUnsafeMutableBufferPointer { writeRecords(batch, rows: r..<(r + n), to: $0.baseAddress! + start) }
            writeRows += n
            spilled += n
            r += n
            if writeRows == readRows { try flush() }
        }
    }

    private func newChunk() throws(EngineError) -> UnsafeMutablePointer<Double> {
        // Mapped with room to align, then the excess on both sides unmapped.
        let bytes = chunkBytes, align = Self.hugePage
        let raw = mmap(nil, bytes + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let raw, raw != MAP_FAILED else {
            throw .io(spillPath, "cannot map \(bytes >> 20) MiB for the in-memory row store: \(String(cString: strerror(errno)))",
                      hint: "lower rowstore.memory_mb")
        }
        let head = (align - Int(bitPattern: raw) % align) % align
        if head > 0 { munmap(raw, head) }
        munmap(raw + head + bytes, align - head)
        let p = raw + head
        // Advice only (without transparent huge pages: 4 KiB pages). A huge page is resident whole, so only a
        // chunk the budget fills and whose unused tail is under one record (< 1/64 of it) gets one: the store's
        // resident size stays within rowstore.memory_mb · 64/63 plus a page.
        if chunkRows >= 64 && memoryRows - memCount >= chunkRows { _ = madvise(p, bytes, MADV_HUGEPAGE) }
        return p.bindMemory(to: Double.self, capacity: bytes / 8)
    }

    /// Records for `rows` of `b`, one after another from `out`.
    private func writeRecords(_ b: RowBatch, rows: Range<Int>, to out: UnsafeMutablePointer<Double>) {
        let d = columns, w = width
        b.features.withUnsafeBufferPointer { f in
            for (k, r) in rows.enumerated() {
                let rec = out + k * w
                rec.update(from: f.baseAddress! + r * d, count: d)
                rec[d] = b.targets?[r] ?? 0
                rec[d + 1] = b.weight(r)
                rec[d + 2] = Double(bitPattern: UInt64(bitPattern: b.indices[r]))
                rec[d + 3] = Double(bitPattern: UInt64(bitPattern: b.shards?[r] ?? shard))
            }
        }
    }

    private func openFile(truncate: Bool) throws(EngineError) {
        let dir = String(spillPath.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/"))
        try FileBytes.makeDirectory(dir)
        fd = open(spillPath, O_RDWR | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0o644)
        guard fd >= 0 else { throw .io(spillPath, "cannot open the row store spill file: \(String(cString: strerror(errno)))") }
    }

    func flush() throws(EngineError) {
        guard writeRows > 0 else { return }
        if fd < 0 { try openFile(truncate: true) }
        let bytes = writeRows * width * 8
        var off = 0
        while off < bytes {
            let n = writeBuffer.withUnsafeBytes { write(fd, $0.baseAddress! + off, bytes - off) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(spillPath, "cannot write the row store: \(String(cString: strerror(errno)))")
            }
            off += n
        }
        writeRows = 0
    }

    /// Flushes and fsyncs the spill file (before a checkpoint records its length).
    func sync() throws(EngineError) {
        try flush()
        if fd >= 0 && fsync(fd) != 0 { throw .io(spillPath, "fsync of the row store failed: \(String(cString: strerror(errno)))") }
    }

    /// Ends appending: flushes the spill file, so that every row can be read back.
    public func seal() throws(EngineError) {
        try flush()
    }

    public func read(_ start: Int, _ n: Int, into batch: inout RowBatch) {
        batch.reset()
        let end = min(start + n, count)
        guard start < end else { return }
        var i = start
        if i < memCount {
            let stop = min(end, memCount)
            for k in i..<stop { copy(chunks[k / chunkRows] + (k % chunkRows) * width, into: &batch) }
            i = stop
        }
        while i < end && readError == nil {
            let k = min(end - i, readRows)
            guard readSpilled(row: i - memCount, rows: k) else { return }
            readBuffer.withUnsafeBufferPointer { p in for r in 0..<k { copy(p.baseAddress! + r * width, into: &batch) } }
            i += k
        }
    }

    /// `rows` spilled records from record `row` into `readBuffer`; false (and `readError` set) on failure.
    private func readSpilled(row: Int, rows: Int) -> Bool {
        let bytes = rows * width * 8
        if readBuffer.count < rows * width { readBuffer = [Double](repeating: 0, count: readRows * width) }
        var done = 0
        while done < bytes {
            let got = readBuffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, bytes - done, off_t(row * width * 8 + done)) }
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else {
                let why = got < 0 ? String(cString: strerror(errno)) : "the file ends early"
                readError = .io(spillPath, "cannot read the row store: \(why)")
                return false
            }
            done += got
        }
        return true
    }

    private func copy(_ rec: UnsafePointer<Double>, into batch: inout RowBatch) {
        let s = batch.appendSlot(index: Int64(bitPattern: rec[columns + 2].bitPattern))
        let d = columns
        batch.features.withUnsafeMutableBufferPointer { $0.baseAddress!.advanced(by: s * d).update(from: rec, count: d) }
        if batch.targets != nil { batch.targets![s] = rec[columns] }
        if batch.weights != nil { batch.weights![s] = rec[columns + 1] }
        if batch.shards != nil { batch.shards![s] = Int64(bitPattern: rec[columns + 3].bitPattern) }
    }
}
