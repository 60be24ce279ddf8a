import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#endif

/// run.json: what a run or a merge reports (docs/outputs.md, "run.json"). One schema for both, so `rowflow
/// run` and `rowflow merge` cannot drift apart; `OutputWriter.writeRunJSON` writes it atomically.
struct RunRecord {
    var status = "running"
    var error: EngineError?
    var rowsRead: Int64 = 0
    var rowsSkipped: Int64 = 0
    var rowsQuarantined: Int64 = 0
    var bytesIn: Int64 = 0
    var seconds = 0.0
    /// Rows this process read (a resumed run's skipped prefix excluded), for `rows_per_s`.
    var newRows: Int64 = 0
    var manifestSHA256 = ""
    var seed: UInt64 = 0
    var shard: Int64 = 0
    var resumedFromRow: Int64 = 0
    /// A merge's inputs, in the order given.
    var mergedFrom: [String]?
    var manifest: String
    /// A run's input ("-" for stdin); nil for a merge.
    var input: String?
    var format: String?
    /// Bad rows skipped or quarantined, by the column that made each bad.
    var badByColumn: [(String, Int64)] = []
    var columns: Int?
    /// The shard numbers a merge covers.
    var shards: [Int64]?
    var operators: [String] = []
    var failedOperators: [(id: String, error: EngineError)] = []
    var warnings: [(id: String, warning: OperatorWarning)] = []

    init(manifest: String) { self.manifest = manifest }

    var json: JSON {
        var pairs: [(String, JSON)] = [("status", .string(status))]
        if let error { pairs += [("error", .string(error.description)), ("exit_code", .int(Int64(error.status.rawValue)))] }
        pairs += [
            ("rows_read", .int(rowsRead)),
            ("rows_skipped", .int(rowsSkipped)),
            ("rows_quarantined", .int(rowsQuarantined)),
            ("bytes_in", .int(bytesIn)),
            ("seconds", .double((seconds * 1000).rounded() / 1000)),
            ("rows_per_s", .double(seconds > 0 ? (Double(max(0, newRows)) / seconds).rounded() : 0)),
            ("manifest_sha256", .string(manifestSHA256)),
            ("seed", .uint(seed)),
            ("shard", .int(shard)),
            ("version", .string(RowflowVersion.string)),
            ("blas_core", .string(BLASKernel.coreName)),
            ("cpu", .string(BLASKernel.machine.model)),
            ("resumed_from_row", .int(resumedFromRow)),
        ]
        if let mergedFrom { pairs.append(("merged_from", .array(mergedFrom.map { .string($0) }))) }
        pairs.append(("manifest", .string(manifest)))
        if let input { pairs.append(("input", .string(input))) }
        if let format { pairs.append(("format", .string(format))) }
        if !badByColumn.isEmpty { pairs.append(("bad_by_column", .object(badByColumn.map { ($0.0, JSON.int($0.1)) }))) }
        if let columns { pairs.append(("columns", .int(Int64(columns)))) }
        if let shards { pairs.append(("shards", .array(shards.map { .int($0) }))) }
        pairs.append(("operators", .array(operators.map { .string($0) })))
        if let kib = peakRSSKiB() { pairs.append(("peak_rss_kib", .int(kib))) }
        if !failedOperators.isEmpty {
            pairs.append(("failed_operators", .object(failedOperators.map { ($0.id, JSON.string($0.error.detail)) })))
        }
        pairs.append(("warnings", .array(warnings.map { $0.warning.json(id: $0.id) })))
        return .object(pairs)
    }

    /// A state blob to a file (written atomically and synced) or, for "-", as one base64 line on `stdout`.
    static func writeBlob(_ blob: [UInt8], to path: String, stdout: (String) -> Void) throws(EngineError) {
        if path == "-" {
            stdout(Base64.encode(blob) + "\n")
        } else {
            try FileBytes.writeAtomically(blob, to: path, sync: true)
        }
    }
}

/// This process's peak resident set size (VmHWM), for run.json: memory is part of what a run reports.
func peakRSSKiB() -> Int64? {
    guard let bytes = try? FileBytes.read("/proc/self/status", what: "status") else { return nil }
    for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return Int64(line.dropFirst(6).filter { $0.isNumber })
    }
    return nil
}

public enum RowflowVersion {
    public static let string = "0.1.0"
}

/// Unbuffered writes to the process's stdout/stderr (Swift 6: no shared mutable `stderr` global).
public enum Console {
    public static let out: @Sendable (String) -> Void = { s in writeAll(1, s) }
    public static let err: @Sendable (String) -> Void = { s in writeAll(2, s) }
    static func writeAll(_ fd: Int32, _ s: String) {
        var bytes = Array(s.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
            if n <= 0 { if errno == EINTR { continue }; return }
            off += n
        }
    }
}

/// Appends quarantined rows to `<out>/quarantine.txt`, opened on first use.
final class QuarantineFile: @unchecked Sendable {
    let path: String
    private var fd: Int32 = -1
    private(set) var length: UInt64 = 0
    init(path: String) { self.path = path }

    func append(_ line: String) throws(EngineError) {
        if fd < 0 {
            fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw .io(path, "cannot write the quarantine file: \(String(cString: strerror(errno)))") }
        }
        let bytes = Array(line.utf8)
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else { throw .io(path, "cannot write the quarantine file: \(String(cString: strerror(errno)))") }
        length += UInt64(n)
    }

    func close() throws(EngineError) {
        if fd >= 0 { _ = Glibc.close(fd); fd = -1 }
    }
}
