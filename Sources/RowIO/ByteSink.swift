import CZstd
import EngineCore
#if canImport(Glibc)
import Glibc
#endif

/// A buffered byte writer to a file or stdout, optionally zstd-compressed (level 3, with a frame checksum),
/// for `rowflow gen`.
public final class ByteSink: @unchecked Sendable {
    let fd: Int32
    let name: String
    let owns: Bool
    var buffer: [UInt8] = []
    var cctx: OpaquePointer?
    var zout: [UInt8] = []

    /// `pledgedBytes`: the exact number of bytes that will be written, when known. It goes into the zstd frame
    /// header as the content size, which lets readers know the row count in advance (README, "Input").
    public init(path: String?, zstd: Bool, pledgedBytes: Int64? = nil) throws(EngineError) {
        if let path {
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw .io(path, "cannot write: \(String(cString: strerror(errno)))") }
            name = path; owns = true
        } else {
            fd = 1; name = "<stdout>"; owns = false
        }
        buffer.reserveCapacity(1 << 20)
        if zstd {
            cctx = ZSTD_createCCtx()
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 3)
            ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)
            if let n = pledgedBytes { ZSTD_CCtx_setPledgedSrcSize(cctx, UInt64(n)) }
            zout = [UInt8](repeating: 0, count: ZSTD_CStreamOutSize())
        }
    }

    deinit {
        if let cctx { ZSTD_freeCCtx(cctx) }
        if owns { Glibc.close(fd) }
    }

    public func write(_ bytes: [UInt8]) throws(EngineError) {
        buffer += bytes
        if buffer.count >= 1 << 20 { try flush(end: false) }
    }

    public func write(_ s: String) throws(EngineError) { try write(Array(s.utf8)) }

    func writeRaw(_ p: UnsafeRawPointer, _ n: Int) throws(EngineError) {
        var off = 0
        while off < n {
            let w = Glibc.write(fd, p + off, n - off)
            if w < 0 {
                if errno == EINTR { continue }
                throw .io(name, "write failed: \(String(cString: strerror(errno)))")
            }
            off += w
        }
    }

    func flush(end: Bool) throws(EngineError) {
        if let cctx {
            var failure: EngineError?
            buffer.withUnsafeBytes { src in
                var input = ZSTD_inBuffer(src: src.baseAddress, size: src.count, pos: 0)
                while true {
                    let remaining: Int = zout.withUnsafeMutableBytes { dst in
                        var output = ZSTD_outBuffer(dst: dst.baseAddress, size: dst.count, pos: 0)
                        let r = ZSTD_compressStream2(cctx, &output, &input, end ? ZSTD_e_end : ZSTD_e_continue)
                        if ZSTD_isError(r) != 0 { failure = .internal(name, "zstd: \(String(cString: ZSTD_getErrorName(r)))"); return 0 }
                        do throws(EngineError) { try writeRaw(dst.baseAddress!, output.pos) } catch { failure = error; return 0 }
                        return r
                    }
                    if failure != nil { return }
                    if end ? remaining == 0 : input.pos == input.size { return }
                }
            }
            if let failure { throw failure }
        } else {
            var failure: EngineError?
            buffer.withUnsafeBytes { p in
                guard p.count > 0 else { return }
                do throws(EngineError) { try writeRaw(p.baseAddress!, p.count) } catch { failure = error }
            }
            if let failure { throw failure }
        }
        buffer.removeAll(keepingCapacity: true)
    }

    public func close() throws(EngineError) { try flush(end: true) }
}
