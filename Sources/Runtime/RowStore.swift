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
/// a 1 MiB write buffer and a 1 MiB read buffer; disk grows with the row count. Reads go through `pread`,
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
    private var memory: [Double] = []
    private var memCount = 0
    private var fd: Int32 = -1
    private(set) var spilled = 0
    private var writeBuffer: [Double] = []

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
    }

    public var count: Int { memCount + spilled }
    /// Bytes in the spill file after `flush()`.
    var fileBytes: Int { spilled * width * 8 }

    public func append(_ batch: RowBatch) throws(EngineError) {
        for r in 0..<batch.count {
            if memCount < memoryRows {
                appendRecord(batch, r, into: &memory)
                memCount += 1
            } else {
                appendRecord(batch, r, into: &writeBuffer)
                spilled += 1
                if writeBuffer.count >= 1 << 17 { try flush() }
            }
        }
    }

    private func appendRecord(_ b: RowBatch, _ r: Int, into a: inout [Double]) {
        for j in 0..<columns { a.append(b.features[r * columns + j]) }
        a.append(b.targets?[r] ?? 0)
        a.append(b.weight(r))
        a.append(Double(bitPattern: UInt64(bitPattern: b.indices[r])))
        a.append(Double(bitPattern: UInt64(bitPattern: b.shards?[r] ?? shard)))
    }

    private func openFile(truncate: Bool) throws(EngineError) {
        let dir = String(spillPath.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/"))
        try FileBytes.makeDirectory(dir)
        fd = open(spillPath, O_RDWR | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0o644)
        guard fd >= 0 else { throw .io(spillPath, "cannot open the row store spill file: \(String(cString: strerror(errno)))") }
    }

    func flush() throws(EngineError) {
        guard !writeBuffer.isEmpty else { return }
        if fd < 0 { try openFile(truncate: true) }
        let bytes = writeBuffer.count * 8
        var off = 0
        while off < bytes {
            let n = writeBuffer.withUnsafeBytes { write(fd, $0.baseAddress! + off, bytes - off) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(spillPath, "cannot write the row store: \(String(cString: strerror(errno)))")
            }
            off += n
        }
        writeBuffer.removeAll(keepingCapacity: true)
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
            memory.withUnsafeBufferPointer { p in for k in i..<stop { copy(p.baseAddress! + k * width, into: &batch) } }
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
        for j in 0..<columns { batch.features[s * columns + j] = rec[j] }
        if batch.targets != nil { batch.targets![s] = rec[columns] }
        if batch.weights != nil { batch.weights![s] = rec[columns + 1] }
        if batch.shards != nil { batch.shards![s] = Int64(bitPattern: rec[columns + 3].bitPattern) }
    }
}
