import EngineCore

/// The NEP-1 .npy header: magic "\x93NUMPY", version, header length, then a Python dict literal with
/// 'descr', 'fortran_order' and 'shape'. Only what rowflow reads is accepted: little-endian (or
/// byte-order-free) float and integer dtypes in C order, 1-D or 2-D.
struct NpyHeader: Equatable {
    var element: ElementType
    var rows: Int64
    var columns: Int
    /// Bytes before the data.
    var dataOffset: Int

    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]

    static func parse(_ buf: ChunkBuffer, name: String) throws(EngineError) -> NpyHeader {
        guard try buf.ensure(10) else { throw .data("\(name): byte 0", "bad npy header: file is shorter than the 10-byte preamble") }
        let p = buf.base + buf.start
        guard (0..<6).allSatisfy({ p[$0] == magic[$0] }) else { throw .data("\(name): byte 0", "bad npy header: missing the \\x93NUMPY magic") }
        let major = p[6]
        let headerLen: Int, pre: Int
        switch major {
        case 1: headerLen = Int(p[8]) | Int(p[9]) << 8; pre = 10
        case 2, 3:
            guard try buf.ensure(12) else { throw .data("\(name): byte 8", "bad npy header: truncated preamble") }
            let q = buf.base + buf.start
            headerLen = Int(q[8]) | Int(q[9]) << 8 | Int(q[10]) << 16 | Int(q[11]) << 24; pre = 12
        default: throw .data("\(name): byte 6", "bad npy header: unsupported format version \(major)")
        }
        guard headerLen <= 1 << 20 else { throw .data("\(name): byte 8", "bad npy header: header length \(headerLen) is implausible") }
        guard try buf.ensure(pre + headerLen) else { throw .data("\(name): byte \(pre)", "bad npy header: truncated (expected \(headerLen) header bytes)") }
        let text = String(decoding: UnsafeBufferPointer(start: buf.base + buf.start + pre, count: headerLen), as: UTF8.self)
        buf.start += pre + headerLen
        return try parseDict(text, name: name, dataOffset: pre + headerLen)
    }

    static func parseDict(_ text: String, name: String, dataOffset: Int) throws(EngineError) -> NpyHeader {
        let at = "\(name): byte 10"
        func value(_ key: String) -> Substring? {
            let needle = Array("'\(key)'".utf8), hay = Array(text.utf8)
            guard hay.count >= needle.count,
                  let at = (0...(hay.count - needle.count)).first(where: { hay[$0..<$0 + needle.count].elementsEqual(needle) }) else { return nil }
            var rest = Substring(String(decoding: hay[(at + needle.count)...], as: UTF8.self)).drop { $0 == " " }
            guard rest.first == ":" else { return nil }
            rest = rest.dropFirst().drop { $0 == " " }
            return rest
        }
        guard let d = value("descr"), let q = d.first, q == "'" || q == "\"",
              let close = d.dropFirst().firstIndex(of: q) else {
            throw .data(at, "bad npy header: no 'descr' in \(text.prefix(80))")
        }
        let descr = String(d[d.index(after: d.startIndex)..<close])
        guard let f = value("fortran_order") else { throw .data(at, "bad npy header: no 'fortran_order'") }
        if f.hasPrefix("True") {
            throw .data(at, "Fortran-order npy arrays are not supported", hint: "save np.ascontiguousarray(a) instead")
        }
        guard f.hasPrefix("False") else { throw .data(at, "bad npy header: fortran_order is neither True nor False") }
        guard let s = value("shape"), s.first == "(", let sc = s.firstIndex(of: ")") else {
            throw .data(at, "bad npy header: no 'shape' tuple")
        }
        let dims = s[s.index(after: s.startIndex)..<sc].split(separator: ",").map { $0.trimmingBlanks() }.filter { !$0.isEmpty }
        var shape: [Int64] = []
        for dim in dims {
            guard let v = Int64(dim), v >= 0 else { throw .data(at, "bad npy header: shape entry '\(dim)' is not a size") }
            shape.append(v)
        }
        guard shape.count == 1 || shape.count == 2 else {
            throw .data(at, "npy array has \(shape.count) dimensions; rowflow reads 1-D or 2-D arrays (rows × columns)")
        }
        let element: ElementType
        let code = descr.dropFirst()
        let order = descr.first
        if order == ">" {
            throw .data(at, "big-endian npy dtype '\(descr)' is not supported", hint: "save a.astype(a.dtype.newbyteorder('<')) instead")
        }
        guard order == "<" || order == "|" || order == "=" else { throw .data(at, "bad npy header: dtype '\(descr)' not understood") }
        switch code {
        case "f4": element = .f4
        case "f8": element = .f8
        case "i1": element = .i1
        case "u1": element = .u1
        case "i2": element = .i2
        case "u2": element = .u2
        case "i4": element = .i4
        case "u4": element = .u4
        case "i8": element = .i8
        case "u8": element = .u8
        default: throw .data(at, "unsupported npy dtype '\(descr)'", hint: "rowflow reads <f4, <f8 and integer dtypes")
        }
        let rows = shape[0]
        let cols = shape.count == 2 ? shape[1] : 1
        guard cols >= 1, cols <= 1 << 24 else { throw .data(at, "npy shape \(shape) has \(cols) columns; expected 1 … 16777216") }
        let (total, overflow) = rows.multipliedReportingOverflow(by: cols * Int64(element.size))
        guard !overflow, total < Int64(1) << 56 else { throw .data(at, "npy shape \(shape) is implausibly large") }
        return NpyHeader(element: element, rows: rows, columns: Int(cols), dataOffset: dataOffset)
    }
}

extension Substring {
    func trimmingBlanks() -> String {
        String(drop { $0 == " " || $0 == "\n" }.reversed().drop { $0 == " " || $0 == "\n" }.reversed())
    }
}

/// Writes NEP-1 version 1.0 .npy files: little-endian, C order, header padded with spaces so the data starts
/// at a multiple of 64 bytes (numpy's own alignment, so `np.load(mmap_mode='r')` maps aligned data).
public enum NpyWriter {
    /// The preamble and header dict, padded so the data starts at a multiple of 64 bytes.
    public static func header(descr: String, shape: [Int]) -> [UInt8] {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var dict = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        let unpadded = 10 + dict.utf8.count + 1
        dict += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        let hl = dict.utf8.count
        return [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(hl & 0xFF), UInt8(hl >> 8)] + Array(dict.utf8)
    }

    /// The header for the array's dtype and shape.
    static func header(for array: NamedArray) -> [UInt8] {
        switch array.values {
        case .float64: return header(descr: "<f8", shape: array.shape)
        case .int64: return header(descr: "<i8", shape: array.shape)
        }
    }

    #if _endian(little)
    /// The values' memory, which on this host is already the file's little-endian layout.
    static func withBody<R>(_ array: NamedArray, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        switch array.values {
        case let .float64(v): return v.withUnsafeBytes(body)
        case let .int64(v): return v.withUnsafeBytes(body)
        }
    }
    #endif

    /// Writes the array as an .npy file, atomically; on little-endian hosts straight from its storage.
    public static func write(_ array: NamedArray, to path: String) throws(EngineError) {
        #if _endian(little)
        var result: Result<Void, EngineError> = .success(())
        header(for: array).withUnsafeBytes { h in
            withBody(array) { b in result = Result { () throws(EngineError) in try FileBytes.writeAtomically([h, b], to: path) } }
        }
        try result.get()
        #else
        try FileBytes.writeAtomically(encode(array), to: path)
        #endif
    }

    public static func encode(_ array: NamedArray) -> [UInt8] {
        var out = header(for: array)
        #if _endian(little)
        withBody(array) { b in out.reserveCapacity(out.count + b.count); out.append(contentsOf: b) }
        #else
        switch array.values {
        case let .float64(v): for x in v { let b = x.bitPattern.littleEndian; withUnsafeBytes(of: b) { out += $0 } }
        case let .int64(v): for x in v { let b = x.littleEndian; withUnsafeBytes(of: b) { out += $0 } }
        }
        #endif
        return out
    }
}
