import EngineCore
#if canImport(Glibc)
import Glibc
#endif

/// Rows kept for operators that need more than one pass: in memory up to `memoryBytes`, then appended to
/// `<out>/rowstore/<input>.rows` as fixed-width records and memory-mapped for random access after the stream.
/// With checkpoints on, the store is *durable*: every row goes to the file (memory is not used), the file is
/// fsynced at each checkpoint and its length recorded, and a resumed run truncates it back to that length.
///
/// Record: `columns` float64 features, then target, weight, source index and shard (the last two as float64
/// bit patterns), all little-endian — `columns + 4` × 8 bytes. The shard is the row's own when a merged
/// sampler tagged it (`RowBatch.shards`), else the run's. RAM is bounded by `memoryBytes` of in-memory rows,
/// a 1 MiB write buffer and a resident window of at most `max(memoryBytes, 16 MiB)` of the mapped file: pages
/// read through the map stay mapped (and count in the process's RSS) until that much has been read, then the
/// whole map is released with `MADV_DONTNEED` (the page cache keeps them; later reads fault them back in).
/// Disk grows with the row count.
public final class RowStore: RowStoreReader, @unchecked Sendable {
    public let columns: Int
    public let hasTarget: Bool
    /// The shard recorded for rows that carry none.
    let shard: Int64
    let width: Int
    let memoryRows: Int
    /// Bytes read through the map before it is released (see the type's comment).
    let windowBytes: Int
    private var windowRead = 0
    let spillPath: String
    private var memory: [Double] = []
    private var memCount = 0
    private var fd: Int32 = -1
    private(set) var spilled = 0
    private var map: UnsafeMutableRawPointer?
    private var mapLength = 0
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
        self.windowBytes = max(memoryBytes, 16 << 20)
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
        if let map { munmap(map, mapLength) }
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

    /// Ends appending: flushes and maps the spill file for random reads.
    public func seal() throws(EngineError) {
        try flush()
        guard spilled > 0, map == nil else { return }
        mapLength = spilled * width * 8
        let m = mmap(nil, mapLength, PROT_READ, MAP_SHARED, fd, 0)
        guard let m, m != MAP_FAILED else { throw .io(spillPath, "cannot map the row store: \(String(cString: strerror(errno)))") }
        map = m
    }

    public func read(_ start: Int, _ n: Int, into batch: inout RowBatch) {
        batch.reset()
        let end = min(start + n, count)
        guard start < end else { return }
        for i in start..<end {
            if i < memCount {
                memory.withUnsafeBufferPointer { copy($0.baseAddress! + i * width, into: &batch) }
            } else {
                copy(UnsafePointer(map!.assumingMemoryBound(to: Double.self)) + (i - memCount) * width, into: &batch)
            }
        }
        if end > memCount {
            windowRead += (end - max(start, memCount)) * width * 8
            // Clean file pages: dropping them from this process loses nothing (the page cache may keep them).
            if windowRead > windowBytes, let map {
                madvise(map, mapLength, MADV_DONTNEED)
                windowRead = 0
            }
        }
    }

    private func copy(_ rec: UnsafePointer<Double>, into batch: inout RowBatch) {
        let s = batch.appendSlot(index: Int64(bitPattern: rec[columns + 2].bitPattern))
        for j in 0..<columns { batch.features[s * columns + j] = rec[j] }
        if batch.targets != nil { batch.targets![s] = rec[columns] }
        if batch.weights != nil { batch.weights![s] = rec[columns + 1] }
        if batch.shards != nil { batch.shards![s] = Int64(bitPattern: rec[columns + 3].bitPattern) }
    }
}
