import EngineCore
#if canImport(Glibc)
import Glibc
#endif

/// Rows kept for operators that need more than one pass: in memory up to `memoryBytes`, then appended to
/// `<out>/rowstore/<name>.rows` as fixed-width records and memory-mapped for random access after the stream.
///
/// Record: `columns` float64 features, then target, weight and source index (float64 bit patterns), all
/// little-endian — `columns + 3` × 8 bytes. RAM is bounded by `memoryBytes` plus one batch; disk grows with
/// the row count.
public final class RowStore: RowStoreReader, @unchecked Sendable {
    public let columns: Int
    public let hasTarget: Bool
    let width: Int
    let memoryRows: Int
    let spillPath: String
    private var memory: [Double] = []
    private var memCount = 0
    private var fd: Int32 = -1
    private(set) var spilled = 0
    private var map: UnsafeMutableRawPointer?
    private var mapLength = 0
    private var writeBuffer: [Double] = []

    public init(columns: Int, hasTarget: Bool, memoryBytes: Int, spillPath: String) {
        self.columns = columns
        self.hasTarget = hasTarget
        self.width = columns + 3
        self.memoryRows = max(1, memoryBytes / (8 * (columns + 3)))
        self.spillPath = spillPath
    }

    deinit {
        if let map { munmap(map, mapLength) }
        if fd >= 0 { close(fd) }
    }

    public var count: Int { memCount + spilled }

    public func append(_ batch: RowBatch) throws(EngineError) {
        for r in 0..<batch.count {
            if memCount < memoryRows {
                if memory.count < (memCount + 1) * width {
                    memory.reserveCapacity(min(memoryRows, max(1024, 2 * memCount)) * width)
                }
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
    }

    func flush() throws(EngineError) {
        guard !writeBuffer.isEmpty else { return }
        if fd < 0 {
            let dir = String(spillPath.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/"))
            try FileBytes.makeDirectory(dir)
            fd = open(spillPath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw .io(spillPath, "cannot create the row store spill file: \(String(cString: strerror(errno)))") }
        }
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

    /// Ends appending: flushes and maps the spill file for random reads.
    public func seal() throws(EngineError) {
        try flush()
        guard spilled > 0 else { return }
        mapLength = spilled * width * 8
        let m = mmap(nil, mapLength, PROT_READ, MAP_SHARED, fd, 0)
        guard let m, m != MAP_FAILED else { throw .io(spillPath, "cannot map the row store: \(String(cString: strerror(errno)))") }
        map = m
    }

    public func read(_ start: Int, _ n: Int, into batch: inout RowBatch) {
        batch.reset()
        for i in start..<min(start + n, count) {
            if i < memCount {
                memory.withUnsafeBufferPointer { copy($0.baseAddress! + i * width, into: &batch) }
            } else {
                copy(UnsafePointer(map!.assumingMemoryBound(to: Double.self)) + (i - memCount) * width, into: &batch)
            }
        }
    }

    private func copy(_ rec: UnsafePointer<Double>, into batch: inout RowBatch) {
        let s = batch.appendSlot(index: Int64(bitPattern: rec[columns + 2].bitPattern))
        for j in 0..<columns { batch.features[s * columns + j] = rec[j] }
        if batch.targets != nil { batch.targets![s] = rec[columns] }
        if batch.weights != nil { batch.weights![s] = rec[columns + 1] }
    }
}
