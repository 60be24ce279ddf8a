/// One shard run's mergeable states in one versioned, checksummed blob (`rowflow run --state-out`), for
/// engines that collect a task's stdout (Spark's `RDD.pipe`) rather than its files. `rowflow merge` takes
/// blobs beside run directories; `rowflow merge --state-out` writes the merged states as a blob again (a
/// tree reduction).
///
/// ```
/// offset  size  field (little-endian)
///      0     8  magic "RFBLOB01"
///      8     2  format version (u16, = 1)
///     10    32  manifest sha256 (raw digest)
///     42     8  seed (u64)
///     50     8  rows read (u64: rows delivered to the operators, as run.json rows_read)
///     58     8  rows skipped (u64)     66  8  rows quarantined (u64)     74  8  input bytes (u64)
///     82     4  shards (u32 count), each an i64: a run's blob names its --shard, a merged blob every shard in it
///      …     4  operators (u32 count), each: id (u32 len + UTF-8), StateEnvelope bytes (u64 len + bytes)
///      …     4  CRC-32C of every byte before it
/// ```
/// An empty shard (no rows delivered) carries no operator states: its shape may be unknowable (no row, no
/// `source.columns`), and an empty state adds nothing to a merge, which skips it.
///
/// On stdout (`--state-out -`) the blob is one line of standard base64 (RFC 4648, padded) and a newline; its
/// first characters are always `UkZCTE9CMDE` (the magic), which is how readers tell a base64 blob from the
/// binary form. Decoding checks length, magic, version and checksum, in that order, each with its own
/// message (exit 65), then bounds-checks every field. Cost: one copy of the states; limit: whole-file in
/// memory (states are bounded by their sketches, not by the rows).
public struct StateBlob: Sendable, Equatable {
    public static let magic: [UInt8] = Array("RFBLOB01".utf8)
    public static let formatVersion: UInt16 = 1
    /// The base64 text of the magic's first six bytes: every base64 blob starts with it.
    public static let base64Prefix = "UkZCTE9C"

    public struct Entry: Sendable, Equatable {
        public var id: String
        /// `StateEnvelope.encoded()` bytes, the same as the run's `<id>/state.bin`.
        public var envelope: [UInt8]
        public init(id: String, envelope: [UInt8]) { self.id = id; self.envelope = envelope }
    }

    public var manifestSHA256: [UInt8]
    public var seed: UInt64
    public var rowsRead: UInt64
    public var rowsSkipped: UInt64
    public var rowsQuarantined: UInt64
    public var bytesIn: UInt64
    public var shards: [Int64]
    public var operators: [Entry]

    public init(manifestSHA256: [UInt8], seed: UInt64, rowsRead: UInt64, rowsSkipped: UInt64 = 0, rowsQuarantined: UInt64 = 0,
                bytesIn: UInt64 = 0, shards: [Int64], operators: [Entry]) {
        self.manifestSHA256 = manifestSHA256; self.seed = seed; self.rowsRead = rowsRead; self.rowsSkipped = rowsSkipped
        self.rowsQuarantined = rowsQuarantined; self.bytesIn = bytesIn; self.shards = shards; self.operators = operators
    }

    /// The raw 32 bytes of a sha256 hex string (as `PipelineSpec.sha256` holds it).
    public static func digest(hex: String) -> [UInt8] {
        var raw: [UInt8] = []
        var it = Array(hex.utf8).makeIterator()
        while let a = it.next(), let b = it.next() { raw.append(UInt8(String(decoding: [a, b], as: UTF8.self), radix: 16) ?? 0) }
        return raw.count == 32 ? raw : [UInt8](repeating: 0, count: 32)
    }

    /// No operator states: an empty shard.
    public var isEmpty: Bool { operators.isEmpty }

    public func encoded() -> [UInt8] {
        var w = BinaryWriter()
        w.raw(StateBlob.magic)
        w.u16(StateBlob.formatVersion)
        precondition(manifestSHA256.count == 32)
        w.raw(manifestSHA256)
        w.u64(seed); w.u64(rowsRead); w.u64(rowsSkipped); w.u64(rowsQuarantined); w.u64(bytesIn)
        w.u32(UInt32(shards.count))
        for s in shards { w.i64(s) }
        w.u32(UInt32(operators.count))
        for e in operators { w.string(e.id); w.blob(e.envelope) }
        w.u32(CRC32C.checksum(w.bytes))
        return w.bytes
    }

    /// Decodes and verifies a blob (binary form); `location` names the file in errors (exit 65).
    public static func decode(_ bytes: [UInt8], location: String) throws(EngineError) -> StateBlob {
        guard bytes.count >= 10 + 32 + 40 + 8 + 4 else {
            throw .data(location, "truncated state blob: \(bytes.count) bytes is shorter than its header")
        }
        guard Array(bytes[0..<8]) == magic else { throw .data("\(location): byte 0", "not a rowflow state blob (expected magic \"RFBLOB01\")") }
        var r = BinaryReader(bytes, location: location, offset: 8)
        let version = try r.u16()
        guard version == formatVersion else {
            throw .data("\(location): byte 8", "state blob format version \(version); this rowflow reads version \(formatVersion)",
                        hint: "written by a different rowflow release")
        }
        let stored = bytes.suffix(4).enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
        guard CRC32C.checksum(bytes.dropLast(4)) == stored else {
            throw .data(location, "state blob checksum mismatch: the blob is corrupt or truncated (CRC-32C of \(bytes.count - 4) bytes)",
                        hint: "re-run the shard; a blob copied as text must keep its one base64 line intact")
        }
        let sha = Array(try r.take(32))
        let seed = try r.u64(), rows = try r.u64(), skipped = try r.u64(), quarantined = try r.u64(), bytesIn = try r.u64()
        let nShards = Int(try r.u32())
        guard nShards <= r.remaining / 8 else { throw .data(location, "state blob lists \(nShards) shards in \(r.remaining) bytes") }
        var shards: [Int64] = []
        for _ in 0..<nShards { shards.append(try r.i64()) }
        let nOps = Int(try r.u32())
        guard nOps <= 4096 else { throw .data(location, "state blob lists \(nOps) operators") }
        var ops: [Entry] = []
        for _ in 0..<nOps { ops.append(Entry(id: try r.string(), envelope: try r.blob())) }
        guard r.remaining == 4 else { throw .data(location, "state blob has \(r.remaining - 4) unexpected trailing bytes") }
        return StateBlob(manifestSHA256: sha, seed: seed, rowsRead: rows, rowsSkipped: skipped, rowsQuarantined: quarantined,
                         bytesIn: bytesIn, shards: shards, operators: ops)
    }

    /// The blobs in a file's bytes: the binary form, or text of base64 lines (one blob per non-empty line,
    /// surrounding whitespace ignored — several collected `--state-out -` lines may share a file).
    public static func decodeAll(_ bytes: [UInt8], location: String) throws(EngineError) -> [StateBlob] {
        if bytes.starts(with: magic) { return [try decode(bytes, location: location)] }
        var blobs: [StateBlob] = []
        var line = 0
        for raw in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            line += 1
            let text = raw.drop { $0 == 32 || $0 == 9 || $0 == 13 }.reversed().drop { $0 == 32 || $0 == 9 || $0 == 13 }.reversed()
            if text.isEmpty { continue }
            guard let decoded = Base64.decode(Array(text)) else {
                throw .data("\(location):\(line)", "not a base64 state blob line (\(text.count) characters)",
                            hint: "expected the one line `rowflow run … --state-out -` prints, starting \(base64Prefix)")
            }
            blobs.append(try decode(decoded, location: "\(location):\(line)"))
        }
        guard !blobs.isEmpty else { throw .data(location, "no state blob: the file is empty") }
        return blobs
    }

    /// Whether bytes look like a blob in either form (for `inspect` and `merge` to recognise one).
    public static func looksLikeBlob(_ bytes: [UInt8]) -> Bool {
        if bytes.starts(with: magic) { return true }
        let trimmed = bytes.drop { $0 == 32 || $0 == 9 || $0 == 13 || $0 == 10 }
        return trimmed.starts(with: Array(base64Prefix.utf8))
    }
}

/// Standard base64 (RFC 4648 §4, with padding) for state blobs on stdout.
public enum Base64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    static let inverse: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = UInt8(i) }
        return t
    }()

    public static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= bytes.count {
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out += [alphabet[Int(v >> 18)], alphabet[Int(v >> 12 & 63)], alphabet[Int(v >> 6 & 63)], alphabet[Int(v & 63)]]
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let v = UInt32(bytes[i]) << 16
            out += [alphabet[Int(v >> 18)], alphabet[Int(v >> 12 & 63)], UInt8(ascii: "="), UInt8(ascii: "=")]
        } else if rest == 2 {
            let v = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out += [alphabet[Int(v >> 18)], alphabet[Int(v >> 12 & 63)], alphabet[Int(v >> 6 & 63)], UInt8(ascii: "=")]
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// nil for anything but canonical padded base64 (a length that is not a multiple of 4, a stray character).
    public static func decode<C: Collection>(_ text: C) -> [UInt8]? where C.Element == UInt8 {
        let t = Array(text)
        guard t.count % 4 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(t.count / 4 * 3)
        var i = 0
        while i < t.count {
            let pad = i + 4 == t.count ? (t[i + 3] == UInt8(ascii: "=") ? (t[i + 2] == UInt8(ascii: "=") ? 2 : 1) : 0) : 0
            var v: UInt32 = 0
            for k in 0..<4 {
                if k >= 4 - pad { v <<= 6; continue }
                let d = inverse[Int(t[i + k])]
                if d == 0xFF { return nil }
                v = v << 6 | UInt32(d)
            }
            out.append(UInt8(v >> 16))
            if pad < 2 { out.append(UInt8(v >> 8 & 0xFF)) }
            if pad < 1 { out.append(UInt8(v & 0xFF)) }
            i += 4
        }
        return out
    }
}
