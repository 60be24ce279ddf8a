/// The envelope around one operator's state in `state.bin`, state blobs and checkpoints.
///
/// ```
/// offset  size  field
///      0     8  magic "RFSTATE1"
///      8     2  envelope format version (u16, = 1)
///     10   4+n  operator kind (u32 length + UTF-8)
///      …     2  operator state version (u16, the operator's own)
///      …  4+n  parameters digest (sha256 hex of the canonical params JSON)
///      …     8  columns (u64)        …  1  has target (u8)
///      …     8  shard (i64)          …  8  seed (u64)
///      …   8+n  payload (u64 length + bytes): the operator's encodeState()
///      …     4  CRC-32C of every byte before it
/// ```
/// All integers little-endian. A flipped byte fails the checksum; a wrong magic, version, kind or
/// parameter digest each has its own error.
public struct StateEnvelope: Sendable, Equatable {
    public static let magic: [UInt8] = Array("RFSTATE1".utf8)
    public static let formatVersion: UInt16 = 1

    public var kind: String
    public var stateVersion: UInt16
    public var paramsDigest: String
    public var columns: Int
    public var hasTarget: Bool
    public var shard: Int64
    public var seed: UInt64
    public var payload: [UInt8]

    public init(kind: String, stateVersion: UInt16, paramsDigest: String, columns: Int, hasTarget: Bool,
                shard: Int64, seed: UInt64, payload: [UInt8]) {
        self.kind = kind; self.stateVersion = stateVersion; self.paramsDigest = paramsDigest
        self.columns = columns; self.hasTarget = hasTarget; self.shard = shard; self.seed = seed
        self.payload = payload
    }

    public func encoded() -> [UInt8] {
        var w = BinaryWriter(capacity: payload.count + kind.utf8.count + paramsDigest.utf8.count + 64)
        w.raw(StateEnvelope.magic)
        w.u16(StateEnvelope.formatVersion)
        w.string(kind)
        w.u16(stateVersion)
        w.string(paramsDigest)
        w.u64(UInt64(columns))
        w.bool(hasTarget)
        w.i64(shard)
        w.u64(seed)
        w.blob(payload)
        w.u32(CRC32C.checksum(w.bytes))
        return w.bytes
    }

    /// Decodes and verifies an envelope; `location` names the file in errors (exit 65 for corruption).
    public static func decode(_ bytes: [UInt8], location: String) throws(EngineError) -> StateEnvelope {
        guard bytes.count >= 14 else {
            throw .data(location, "not a rowflow state: \(bytes.count) bytes is shorter than the envelope header")
        }
        guard Array(bytes[0..<8]) == magic else {
            throw .data("\(location): byte 0", "not a rowflow state: expected magic \"RFSTATE1\"")
        }
        let stored = bytes.suffix(4).enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
        var r = BinaryReader(bytes, location: location, offset: 8)
        let version = try r.u16()
        guard version == formatVersion else {
            throw .data("\(location): byte 8", "state format version \(version), this rowflow reads version \(formatVersion)",
                        hint: "written by a different rowflow release")
        }
        guard CRC32C.checksum(bytes.dropLast(4)) == stored else {
            throw .data(location, "checksum mismatch: the state is corrupt (CRC-32C of \(bytes.count - 4) bytes)")
        }
        let kind = try r.string()
        let sv = try r.u16()
        let digest = try r.string()
        let cols = Int(try r.u64())
        let target = try r.bool()
        let shard = try r.i64()
        let seed = try r.u64()
        let payload = try r.blob()
        return StateEnvelope(kind: kind, stateVersion: sv, paramsDigest: digest, columns: cols, hasTarget: target,
                             shard: shard, seed: seed, payload: payload)
    }
}
