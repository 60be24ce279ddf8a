import CZstd
import EngineCore
#if canImport(Glibc)
import Glibc
#endif

/// A readable file or standard input, named for messages ("<stdin>" or the path).
///
/// Reads with read(2) into caller buffers; counts the bytes taken from the file (`bytesIn`) for run.json
/// and progress. Errors map to exit 66 (cannot open) or 65/74 per the README's "Exit codes".
public final class RawFile: @unchecked Sendable {
    public let name: String
    let fd: Int32
    let ownsFD: Bool
    /// The file's size when it is a regular file.
    public let size: Int64?
    public private(set) var bytesIn: Int64 = 0

    public static func stdin() -> RawFile {
        var st = stat()
        let size: Int64? = fstat(0, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG ? Int64(st.st_size) : nil
        return RawFile(name: "<stdin>", fd: 0, owns: false, size: size)
    }

    public static func open(_ path: String) throws(EngineError) -> RawFile {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw .notFound(path, "cannot open input: \(String(cString: strerror(errno)))")
        }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw .notFound(path, "is a directory (expected a file)") }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .notFound(path, "cannot open input: \(String(cString: strerror(errno)))") }
        let size: Int64? = (st.st_mode & S_IFMT) == S_IFREG ? Int64(st.st_size) : nil
        return RawFile(name: path, fd: fd, owns: true, size: size)
    }

    init(name: String, fd: Int32, owns: Bool, size: Int64?) {
        self.name = name; self.fd = fd; self.ownsFD = owns; self.size = size; self.memory = nil
    }

    /// Bytes held in memory (fuzz harnesses and tests read through exactly the same decoders).
    public static func memory(_ bytes: [UInt8], name: String) -> RawFile { RawFile(name: name, memory: bytes) }

    private let memory: [UInt8]?
    private init(name: String, memory: [UInt8]) {
        self.name = name; self.fd = -1; self.ownsFD = false; self.size = Int64(memory.count); self.memory = memory
    }

    deinit { if ownsFD { close(fd) } }

    /// For a file opened by path: whether it holds exactly one zstd frame (nil when it cannot tell). Walks the
    /// frame's block headers (RFC 8878 §3.1.1) with pread — 3 bytes per ≤ 128 KiB block — rather than mapping
    /// the file: touching one byte per block of a mapping faults in whole folios, which put ~100 MiB of a
    /// 240 MB input into the peak RSS that run.json reports.
    func isSingleZstdFrame() -> Bool? {
        guard ownsFD, let size, size > 0 else { return nil }
        func bytes(_ at: Int64, _ n: Int) -> [UInt8]? {
            guard at >= 0, at + Int64(n) <= size else { return nil }
            var b = [UInt8](repeating: 0, count: n)
            let got = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, n, off_t(at)) }
            return got == n ? b : nil
        }
        guard let h = bytes(0, 5), h[0] == 0x28, h[1] == 0xB5, h[2] == 0x2F, h[3] == 0xFD else { return nil }
        let fhd = h[4]
        let fcsFlag = Int(fhd >> 6), singleSegment = fhd & 0x20 != 0, checksum = fhd & 0x04 != 0
        let dictBytes = [0, 1, 2, 4][Int(fhd & 0x03)]
        let fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag]
        var pos = Int64(5 + (singleSegment ? 0 : 1) + dictBytes + fcsBytes)
        while true {
            guard let b = bytes(pos, 3) else { return nil }
            let header = Int(b[0]) | Int(b[1]) << 8 | Int(b[2]) << 16
            let last = header & 1 != 0, type = (header >> 1) & 3, blockSize = header >> 3
            guard type != 3 else { return nil }
            pos += 3 + Int64(type == 1 ? 1 : blockSize)
            if last { break }
        }
        if checksum { pos += 4 }
        return pos == size
    }

    /// Reads up to `count` bytes; 0 at end of file.
    public func read(into p: UnsafeMutableRawPointer, count: Int) throws(EngineError) -> Int {
        if let memory {
            let n = min(count, memory.count - Int(bytesIn))
            if n > 0 { memory.withUnsafeBytes { p.copyMemory(from: $0.baseAddress! + Int(bytesIn), byteCount: n) } }
            bytesIn += Int64(n)
            return n
        }
        while true {
            let n = Glibc.read(fd, p, count)
            if n >= 0 { bytesIn += Int64(n); return n }
            if errno == EINTR { continue }
            throw .notFound(name, "read failed at byte \(bytesIn): \(String(cString: strerror(errno)))")
        }
    }
}

/// The decompressed byte stream of one input: plain bytes, or zstd detected from the frame magic
/// (28 B5 2F FD) — never from the name. Streams in bounded memory (zstd's window, ≤ 128 MiB by its default
/// limit, plus two 128 KiB buffers); concatenated frames work. A stream that ends inside a frame is
/// reported as truncated; corrupt data with zstd's own message and the compressed byte offset.
public final class ByteInput: @unchecked Sendable {
    public let file: RawFile
    public private(set) var isZstd = false
    /// The content size declared by the first zstd frame, when it declares one.
    public private(set) var zstdContentSize: Int64?

    private var dstream: OpaquePointer?
    private var inBuf: UnsafeMutableRawPointer
    private let inCap: Int
    private var inPos = 0, inLen = 0
    private var eof = false
    private var lastRet = 0
    /// Bytes handed out so far (decompressed offset), for `byte <offset>` messages.
    public private(set) var offset: Int64 = 0

    public init(_ file: RawFile) throws(EngineError) {
        self.file = file
        inCap = max(ZSTD_DStreamInSize(), 1 << 17)
        inBuf = UnsafeMutableRawPointer.allocate(byteCount: inCap, alignment: 64)
        // Peek enough bytes to see a magic number (short reads from pipes are normal).
        while inLen < 4 && !eof {
            let n = try file.read(into: inBuf + inLen, count: inCap - inLen)
            if n == 0 { eof = true } else { inLen += n }
        }
        let b = inBuf.assumingMemoryBound(to: UInt8.self)
        if inLen >= 4 && b[0] == 0x28 && b[1] == 0xB5 && b[2] == 0x2F && b[3] == 0xFD {
            isZstd = true
            guard let ds = ZSTD_createDStream() else { throw .internal(file.name, "cannot allocate a zstd stream") }
            dstream = ds
            ZSTD_initDStream(ds)
            let cs = ZSTD_getFrameContentSize(inBuf, inLen)
            // ZSTD_CONTENTSIZE_UNKNOWN / _ERROR are the top two values of unsigned long long.
            if cs < UInt64.max - 1 && file.isSingleZstdFrame() != false { zstdContentSize = Int64(clamping: cs) }
        }
    }

    deinit {
        inBuf.deallocate()
        if let ds = dstream { ZSTD_freeDStream(ds) }
    }

    /// Content bytes this input will yield, when known: a plain file's size, or the content size a zstd frame
    /// declares — trusted for a file only when that frame is the whole file (concatenated frames: unknown), and
    /// for a pipe as declared (a pipe cannot be looked ahead of).
    public var knownContentSize: Int64? {
        if isZstd { return zstdContentSize }
        return file.size
    }

    /// Fills up to `count` bytes of content; returns 0 only at the end of the input.
    public func read(into p: UnsafeMutableRawPointer, count: Int) throws(EngineError) -> Int {
        guard count > 0 else { return 0 }
        if !isZstd {
            if inPos < inLen {
                let n = min(count, inLen - inPos)
                p.copyMemory(from: inBuf + inPos, byteCount: n)
                inPos += n
                offset += Int64(n)
                return n
            }
            if eof { return 0 }
            let n = try file.read(into: p, count: count)
            if n == 0 { eof = true }
            offset += Int64(n)
            return n
        }
        while true {
            if inPos == inLen && !eof {
                inPos = 0
                inLen = try file.read(into: inBuf, count: inCap)
                if inLen == 0 { eof = true }
            }
            if inPos == inLen && eof {
                // Drain only while the decoder says a frame is unfinished (after a frame ends, an empty call returns a nonzero hint for the next frame: looping on it reports a false truncation).
                if lastRet == 0 { return 0 }
                var input = ZSTD_inBuffer(src: inBuf, size: 0, pos: 0)
                var output = ZSTD_outBuffer(dst: p, size: count, pos: 0)
                let ret = ZSTD_decompressStream(dstream, &output, &input)
                if ZSTD_isError(ret) != 0 { throw corrupt(ret) }
                lastRet = ret
                if output.pos > 0 { offset += Int64(output.pos); return output.pos }
                throw .data("\(file.name): byte \(file.bytesIn)",
                            "truncated zstd stream: the input ends inside a frame",
                            hint: "the file was cut short; re-copy or re-compress it")
            }
            var input = ZSTD_inBuffer(src: inBuf, size: inLen, pos: inPos)
            var output = ZSTD_outBuffer(dst: p, size: count, pos: 0)
            let ret = ZSTD_decompressStream(dstream, &output, &input)
            if ZSTD_isError(ret) != 0 { throw corrupt(ret) }
            inPos = input.pos
            lastRet = ret
            if output.pos > 0 { offset += Int64(output.pos); return output.pos }
        }
    }

    private func corrupt(_ code: Int) -> EngineError {
        let what = String(cString: ZSTD_getErrorName(code))
        return .data("\(file.name): byte \(file.bytesIn - Int64(inLen - inPos))", "corrupt zstd data: \(what)")
    }
}
