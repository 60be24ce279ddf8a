import EngineCore
import Foundation
import Manifest
import Operators
import RowIO
import Synchronization

/// Writes the output layout of docs/outputs.md. Every file goes to a temporary name and is renamed into
/// place, so a reader never sees half a file; run.json is written `running` first and its final status last.
public struct OutputWriter: Sendable {
    public let dir: String

    public init(dir: String) { self.dir = dir }

    public var runJSONPath: String { dir + "/run.json" }
    public func operatorDir(_ id: String) -> String { dir + "/" + id }

    /// Creates `dir`, takes its lock (`OutputLock`) and proves it writable (exit 74 otherwise) before any data
    /// is read. Holding the lock, it removes the temporaries (`<name>.tmp-<pid>`) a writer killed mid-write
    /// left behind: no other writer can be active, and a resumed run must leave the same files as one that
    /// never stopped.
    public func prepare() throws(EngineError) {
        try FileBytes.makeDirectory(dir)
        try OutputLock.acquire(dir)
        try FileBytes.writeAtomically(Array("{}\n".utf8), to: dir + "/.rowflow-write-test")
        _ = unlinkFile(dir + "/.rowflow-write-test")
        removeStaleTemporaries(in: dir, depth: 2)
    }

    /// Unlinks `*.tmp-<digits>` files in `path` and, `depth` levels down, its subdirectories (operator folders,
    /// their `current/`, checkpoints).
    func removeStaleTemporaries(in path: String, depth: Int) {
        let fm = FileManager.default
        for name in (try? fm.contentsOfDirectory(atPath: path)) ?? [] {
            let full = path + "/" + name
            if let r = name.range(of: ".tmp-", options: .backwards), !name[r.upperBound...].isEmpty,
               name[r.upperBound...].allSatisfy(\.isNumber), !FileBytes.isDirectory(full) {
                _ = unlinkFile(full)
            } else if depth > 0, FileBytes.isDirectory(full) {
                removeStaleTemporaries(in: full, depth: depth - 1)
            }
        }
    }

    public func writeRunJSON(_ json: JSON) throws(EngineError) {
        try FileBytes.writeAtomically(Array((json.encoded(pretty: true) + "\n").utf8), to: runJSONPath, sync: true)
    }

    /// summary.json = id, op, the operator's scalars (which start with rows and weight_sum), then params.
    public func writeOperator(_ spec: OperatorSpec, output: OperatorOutput, state: [UInt8]?, extra: [(String, JSON)] = []) throws(EngineError) {
        let d = operatorDir(spec.id)
        try FileBytes.makeDirectory(d)
        for a in output.arrays {
            try NpyWriter.write(a, to: d + "/" + a.name + ".npy")
        }
        if let state { try FileBytes.writeAtomically(state, to: d + "/state.bin") }
        let summary = JSON.object([("id", .string(spec.id)), ("op", .string(spec.kind))] + output.summary + extra
                                  + [("params", spec.params.json)])
        try FileBytes.writeAtomically(Array((summary.encoded(pretty: true) + "\n").utf8), to: d + "/summary.json")
    }
}

/// One writer per output directory: an advisory lock on `<dir>/.rowflow.lock` (flock, exclusive), held until
/// the process exits, with the holder's pid written in the file for the message a second writer gets (exit
/// 73). The kernel drops a flock when its holder dies however it dies, so a killed run's lock is simply taken
/// over by the next one — no stale-lock heuristics.
public enum OutputLock {
    private static let held = Mutex<[String: Int32]>([:])

    public static func acquire(_ dir: String) throws(EngineError) {
        let path = dir + "/.rowflow.lock"
        let already = held.withLock { $0[path] != nil }
        if already { return }
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io(path, "cannot open the output lock: \(String(cString: strerror(errno)))") }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let err = errno
            var buf = [UInt8](repeating: 0, count: 32)
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 31, 0) }
            close(fd)
            guard err == EWOULDBLOCK else { throw .io(path, "cannot lock the output directory: \(String(cString: strerror(err)))") }
            let digits = buf[0..<max(0, n)].filter { $0 >= 0x30 && $0 <= 0x39 }
            let pid = digits.isEmpty ? "?" : String(decoding: digits, as: UTF8.self)
            throw EngineError(.cantCreate, dir, "the output directory is being written by another rowflow process (pid \(pid))",
                              hint: "wait for it, or choose another --out")
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        held.withLock { $0[path] = fd }
    }

    /// Lets go of the lock (the end of a run or merge; in-process callers run many).
    public static func release(_ dir: String) {
        let path = dir + "/.rowflow.lock"
        if let fd = held.withLock({ $0.removeValue(forKey: path) }) { close(fd) }
    }
}

#if canImport(Glibc)
import Glibc
func unlinkFile(_ p: String) -> Int32 { unlink(p) }
#endif

/// Monotonic seconds.
func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
