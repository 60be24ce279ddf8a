/// Little-endian binary encoding for operator states and checkpoints. Fixed-width fields only, so a
/// layout can be drawn next to its constants and checked byte by byte.
public struct BinaryWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    /// Room for `capacity` bytes up front: a large state is then built in one buffer, with no regrowth
    /// (each regrowth copies it and faults in fresh pages).
    public init(capacity: Int) { bytes.reserveCapacity(capacity) }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { for i in 0..<2 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
    public mutating func u32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
    public mutating func u64(_ v: UInt64) { for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
    public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    public mutating func f64(_ v: Double) { u64(v.bitPattern) }
    public mutating func bool(_ v: Bool) { u8(v ? 1 : 0) }
    public mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    /// A length-prefixed (u32) UTF-8 string.
    public mutating func string(_ s: String) { let u = Array(s.utf8); u32(UInt32(u.count)); raw(u) }
    /// A length-prefixed (u64) blob.
    public mutating func blob(_ b: [UInt8]) { u64(UInt64(b.count)); raw(b) }
    /// A length-prefixed (u64 count) float64 array. On little-endian hosts the array's memory already is the
    /// encoding, so it is appended in one copy (states of samplers hold whole samples).
    public mutating func f64s(_ a: [Double]) {
        u64(UInt64(a.count))
        #if _endian(little)
        a.withUnsafeBytes { bytes.append(contentsOf: $0) }
        #else
        for v in a { f64(v) }
        #endif
    }
    public mutating func i64s(_ a: [Int64]) {
        u64(UInt64(a.count))
        #if _endian(little)
        a.withUnsafeBytes { bytes.append(contentsOf: $0) }
        #else
        for v in a { i64(v) }
        #endif
    }
}

/// Reads what `BinaryWriter` wrote; every read is bounds-checked and reports the byte offset it failed at.
public struct BinaryReader: Sendable {
    public let bytes: [UInt8]
    public private(set) var offset: Int
    /// Names the thing being read in errors ("checkpoint ckpt-…", "state blob x").
    public let location: String

    public init(_ bytes: [UInt8], location: String, offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
        self.location = location
    }

    public var remaining: Int { bytes.count - offset }

    func truncated(_ need: Int) -> EngineError {
        .data("\(location): byte \(offset)", "truncated: expected \(need) more bytes, found \(remaining)")
    }

    public mutating func take(_ n: Int) throws(EngineError) -> ArraySlice<UInt8> {
        guard n >= 0, n <= remaining else { throw truncated(n) }
        defer { offset += n }
        return bytes[offset..<offset + n]
    }

    private mutating func uint(_ n: Int) throws(EngineError) -> UInt64 {
        let s = try take(n)
        var v: UInt64 = 0
        for (i, b) in s.enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
        return v
    }
    public mutating func u8() throws(EngineError) -> UInt8 { UInt8(try uint(1)) }
    public mutating func u16() throws(EngineError) -> UInt16 { UInt16(try uint(2)) }
    public mutating func u32() throws(EngineError) -> UInt32 { UInt32(try uint(4)) }
    public mutating func u64() throws(EngineError) -> UInt64 { try uint(8) }
    public mutating func i64() throws(EngineError) -> Int64 { Int64(bitPattern: try uint(8)) }
    public mutating func f64() throws(EngineError) -> Double { Double(bitPattern: try uint(8)) }
    public mutating func bool() throws(EngineError) -> Bool { try u8() != 0 }
    public mutating func string() throws(EngineError) -> String {
        let n = Int(try u32())
        return String(decoding: try take(n), as: UTF8.self)
    }
    /// A count that must fit in what is left, `elementSize` bytes each (guards against huge allocations
    /// from a corrupt length field).
    public mutating func count(elementSize: Int) throws(EngineError) -> Int {
        let n = try u64()
        guard n <= UInt64(remaining / max(1, elementSize)) else {
            throw .data("\(location): byte \(offset - 8)", "length field \(n) exceeds the \(remaining) bytes left")
        }
        return Int(n)
    }
    public mutating func blob() throws(EngineError) -> [UInt8] { Array(try take(try count(elementSize: 1))) }
    public mutating func f64s() throws(EngineError) -> [Double] {
        let n = try count(elementSize: 8)
        var a = [Double](repeating: 0, count: n)
        #if _endian(little)
        let s = try take(n * 8)
        a.withUnsafeMutableBytes { dst in s.withUnsafeBytes { dst.copyMemory(from: $0) } }
        #else
        for i in 0..<n { a[i] = try f64() }
        #endif
        return a
    }
    public mutating func i64s() throws(EngineError) -> [Int64] {
        let n = try count(elementSize: 8)
        var a = [Int64](repeating: 0, count: n)
        #if _endian(little)
        let s = try take(n * 8)
        a.withUnsafeMutableBytes { dst in s.withUnsafeBytes { dst.copyMemory(from: $0) } }
        #else
        for i in 0..<n { a[i] = try i64() }
        #endif
        return a
    }
}

/// CRC-32C (Castagnoli), table-driven: the checksum of state blobs and checkpoints. Contiguous input takes
/// the slicing-by-8 path (eight tables, eight bytes per step; Kounavis & Berry 2008), which matters because
/// checkpoints carry whole samples; other collections go byte by byte. Both give the same value.
public enum CRC32C {
    static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }
    /// tables[k·256 + b]: the CRC of byte b followed by k zero bytes.
    static let tables: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 { t[i] = table[i] }
        for k in 1..<8 { for i in 0..<256 { let p = t[(k - 1) * 256 + i]; t[k * 256 + i] = (p >> 8) ^ t[Int(p & 0xFF)] } }
        return t
    }()

    public static func checksum<C: Collection>(_ bytes: C, seed: UInt32 = 0) -> UInt32 where C.Element == UInt8 {
        if let v = bytes.withContiguousStorageIfAvailable({ checksum(buffer: $0, seed: seed) }) { return v }
        var c = ~seed
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return ~c
    }

    static func checksum(buffer p: UnsafeBufferPointer<UInt8>, seed: UInt32) -> UInt32 {
        var c = ~seed
        tables.withUnsafeBufferPointer { t in
            let n = p.count
            var i = 0
            while i + 8 <= n {
                let lo = c ^ (UInt32(p[i]) | UInt32(p[i + 1]) << 8 | UInt32(p[i + 2]) << 16 | UInt32(p[i + 3]) << 24)
                let hi = UInt32(p[i + 4]) | UInt32(p[i + 5]) << 8 | UInt32(p[i + 6]) << 16 | UInt32(p[i + 7]) << 24
                c = t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                    ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                    ^ t[256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
                i += 8
            }
            while i < n { c = t[Int((c ^ UInt32(p[i])) & 0xFF)] ^ (c >> 8); i += 1 }
        }
        return ~c
    }
}
