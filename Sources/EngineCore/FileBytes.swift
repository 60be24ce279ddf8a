#if canImport(Glibc)
import Glibc
#endif

/// Whole-file reads and atomic writes (temporary name, fsync, rename, directory fsync) for small files:
/// manifests, summaries, npy outputs, states.
public enum FileBytes {
    public static func read(_ path: String, what: String, limit: Int = 1 << 30) throws(EngineError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .notFound(path, "cannot read \(what): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR { throw .notFound(path, "cannot read \(what): is a directory") }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .notFound(path, "cannot read \(what): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            out += chunk[0..<n]
            if out.count > limit { throw .usage(path, "\(what) is larger than \(limit) bytes") }
        }
        return out
    }

    /// Writes `bytes` to `path` atomically: a reader sees the old file or the new one, never a part.
    public static func writeAtomically(_ bytes: [UInt8], to path: String, sync: Bool = false) throws(EngineError) {
        var result: Result<Void, EngineError> = .success(())
        bytes.withUnsafeBytes { b in result = Result { () throws(EngineError) in try writeAtomically([b], to: path, sync: sync) } }
        try result.get()
    }

    /// The same for a file made of several pieces of memory, written in order (no buffer joins them: a large
    /// array goes from its own storage to the file).
    public static func writeAtomically(_ parts: [UnsafeRawBufferPointer], to path: String, sync: Bool = false) throws(EngineError) {
        let tmp = path + ".tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io(path, "cannot write: \(String(cString: strerror(errno)))") }
        for part in parts {
            var off = 0
            while off < part.count {
                let n = write(fd, part.baseAddress! + off, part.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    let msg = String(cString: strerror(errno))
                    close(fd); unlink(tmp)
                    throw .io(path, "cannot write: \(msg)")
                }
                off += n
            }
        }
        if sync && fsync(fd) != 0 {
            let msg = String(cString: strerror(errno))
            close(fd); unlink(tmp)
            throw .io(path, "fsync failed: \(msg)")
        }
        close(fd)
        guard rename(tmp, path) == 0 else {
            let msg = String(cString: strerror(errno))
            unlink(tmp)
            throw .io(path, "cannot rename into place: \(msg)")
        }
        if sync { syncDirectory(of: path) }
    }

    public static func syncDirectory(of path: String) {
        let dir = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    /// mkdir -p.
    public static func makeDirectory(_ path: String) throws(EngineError) {
        var built = path.hasPrefix("/") ? "/" : ""
        for part in path.split(separator: "/") {
            built += (built.isEmpty || built.hasSuffix("/") ? "" : "/") + part
            if mkdir(built, 0o755) != 0 && errno != EEXIST {
                throw .io(built, "cannot create directory: \(String(cString: strerror(errno)))")
            }
            var st = stat()
            if stat(built, &st) == 0 && (st.st_mode & S_IFMT) != S_IFDIR {
                throw .io(built, "cannot create directory: a file of that name exists")
            }
        }
    }

    public static func exists(_ path: String) -> Bool { var st = stat(); return stat(path, &st) == 0 }
    public static func isDirectory(_ path: String) -> Bool {
        var st = stat(); return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }
}
