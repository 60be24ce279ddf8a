/// One checkpoint file (docs/checkpoints-and-merge.md): everything a killed run needs to continue to byte-identical outputs.
///
/// ```
/// offset  size  field (little-endian)
///      0     8  magic "RFCKPT01"
///      8     2  format version (u16, = 1)
///     10    32  manifest sha256 (raw digest)
///     42     8  seed (u64)                 50   8  shard (i64)
///     58     1  phase: 0 = streaming, 1 = finishing (operators before `finishIndex` are done)
///     59     8  rows fed to the operators  67   8  rows consumed from the source (good + bad)
///     75     8  rows skipped               83   8  rows quarantined
///     91     8  quarantine.txt length      99   8  input fingerprint
///    107     8  input bytes read          115   4  finish index (u32)
///    119     4  row stores (u32), each: input id (u32 len + UTF-8), rows (u64), spill file bytes (u64)
///      …     4  operators (u32), each: id, kind (u32 len + UTF-8 each), state version (u16),
///               state (u64 len + bytes)
///      …     8  (version ≥ 2) the source shuffle buffer's state (u64 len + bytes; empty without shuffle)
///      …     4  CRC-32C of every byte before it
/// ```
/// Version 1 files (no shuffle section) are still read.
/// Decoding checks, in order: length, magic, format version, checksum — each failure its own message — and
/// only then parses fields, every one bounds-checked.
public struct Checkpoint: Sendable, Equatable {
    public static let magic: [UInt8] = Array("RFCKPT01".utf8)
    public static let formatVersion: UInt16 = 2
    public static let readableVersions: ClosedRange<UInt16> = 1...2

    public struct Store: Sendable, Equatable {
        public var input: String
        public var rows: UInt64
        public var fileBytes: UInt64
        public init(input: String, rows: UInt64, fileBytes: UInt64) { self.input = input; self.rows = rows; self.fileBytes = fileBytes }
    }
    public struct OperatorState: Sendable, Equatable {
        public var id: String
        public var kind: String
        public var version: UInt16
        public var state: [UInt8]
        public init(id: String, kind: String, version: UInt16, state: [UInt8]) { self.id = id; self.kind = kind; self.version = version; self.state = state }
    }

    public var manifestSHA256: [UInt8]
    public var seed: UInt64
    public var shard: Int64
    public var finishing: Bool
    public var rowsFed: UInt64
    public var rowsConsumed: UInt64
    public var rowsSkipped: UInt64
    public var rowsQuarantined: UInt64
    public var quarantineBytes: UInt64
    public var fingerprint: UInt64
    public var bytesIn: UInt64
    public var finishIndex: UInt32
    public var stores: [Store]
    public var operators: [OperatorState]
    /// The `source.shuffle` buffer (rows taken from the source but not yet passed on); empty when off.
    public var shuffle: [UInt8]

    public init(manifestSHA256: [UInt8], seed: UInt64, shard: Int64, finishing: Bool, rowsFed: UInt64, rowsConsumed: UInt64,
                rowsSkipped: UInt64, rowsQuarantined: UInt64, quarantineBytes: UInt64, fingerprint: UInt64, bytesIn: UInt64,
                finishIndex: UInt32, stores: [Store], operators: [OperatorState], shuffle: [UInt8] = []) {
        self.manifestSHA256 = manifestSHA256; self.seed = seed; self.shard = shard; self.finishing = finishing
        self.rowsFed = rowsFed; self.rowsConsumed = rowsConsumed; self.rowsSkipped = rowsSkipped
        self.rowsQuarantined = rowsQuarantined; self.quarantineBytes = quarantineBytes; self.fingerprint = fingerprint
        self.bytesIn = bytesIn; self.finishIndex = finishIndex; self.stores = stores; self.operators = operators
        self.shuffle = shuffle
    }

    public func encoded() -> [UInt8] {
        var w = BinaryWriter()
        w.raw(Checkpoint.magic)
        w.u16(Checkpoint.formatVersion)
        precondition(manifestSHA256.count == 32)
        w.raw(manifestSHA256)
        w.u64(seed); w.i64(shard); w.bool(finishing)
        w.u64(rowsFed); w.u64(rowsConsumed); w.u64(rowsSkipped); w.u64(rowsQuarantined)
        w.u64(quarantineBytes); w.u64(fingerprint); w.u64(bytesIn); w.u32(finishIndex)
        w.u32(UInt32(stores.count))
        for s in stores { w.string(s.input); w.u64(s.rows); w.u64(s.fileBytes) }
        w.u32(UInt32(operators.count))
        for o in operators { w.string(o.id); w.string(o.kind); w.u16(o.version); w.blob(o.state) }
        w.blob(shuffle)
        w.u32(CRC32C.checksum(w.bytes))
        return w.bytes
    }

    /// Decodes and verifies a checkpoint; errors are exit 65 with the file named.
    public static func decode(_ bytes: [UInt8], location: String) throws(EngineError) -> Checkpoint {
        guard bytes.count >= 10 + 32 + 4 else {
            throw .data(location, "truncated checkpoint: \(bytes.count) bytes is shorter than its header")
        }
        guard Array(bytes[0..<8]) == magic else { throw .data("\(location): byte 0", "not a rowflow checkpoint (bad magic)") }
        var r = BinaryReader(bytes, location: location, offset: 8)
        let version = try r.u16()
        guard readableVersions.contains(version) else {
            throw .data("\(location): byte 8", "checkpoint format version \(version); this rowflow reads versions \(readableVersions.lowerBound)–\(readableVersions.upperBound)",
                        hint: "written by a different rowflow release; start without --resume")
        }
        let stored = bytes.suffix(4).enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
        guard CRC32C.checksum(bytes.dropLast(4)) == stored else {
            throw .data(location, "checkpoint checksum mismatch: the file is corrupt or truncated")
        }
        let sha = Array(try r.take(32))
        let seed = try r.u64(), shard = try r.i64(), finishing = try r.bool()
        let fed = try r.u64(), consumed = try r.u64(), skipped = try r.u64(), quarantined = try r.u64()
        let qbytes = try r.u64(), fp = try r.u64(), bytesIn = try r.u64(), finishIndex = try r.u32()
        let nStores = Int(try r.u32())
        guard nStores <= 1024 else { throw .data(location, "checkpoint lists \(nStores) row stores") }
        var stores: [Store] = []
        for _ in 0..<nStores { stores.append(Store(input: try r.string(), rows: try r.u64(), fileBytes: try r.u64())) }
        let nOps = Int(try r.u32())
        guard nOps <= 4096 else { throw .data(location, "checkpoint lists \(nOps) operators") }
        var ops: [OperatorState] = []
        for _ in 0..<nOps {
            ops.append(OperatorState(id: try r.string(), kind: try r.string(), version: try r.u16(), state: try r.blob()))
        }
        let shuffle = version >= 2 ? try r.blob() : []
        guard r.remaining == 4 else { throw .data(location, "checkpoint has \(r.remaining - 4) unexpected trailing bytes") }
        return Checkpoint(manifestSHA256: sha, seed: seed, shard: shard, finishing: finishing, rowsFed: fed, rowsConsumed: consumed,
                          rowsSkipped: skipped, rowsQuarantined: quarantined, quarantineBytes: qbytes, fingerprint: fp,
                          bytesIn: bytesIn, finishIndex: finishIndex, stores: stores, operators: ops, shuffle: shuffle)
    }
}

/// A running digest of the rows consumed: every row whose source position is a multiple of 1024 is mixed in
/// (position, features, target, weight). Cheap — O(d) per 1024 rows — and computed identically when a
/// resumed run re-reads the rows it skips, so a different input is detected before any state is trusted.
public struct RowFingerprint: Sendable, Equatable {
    public private(set) var value: UInt64 = 0x5EED_F00D
    public init(value: UInt64 = 0x5EED_F00D) { self.value = value }

    public mutating func absorb(_ b: RowBatch) {
        for r in 0..<b.count where b.indices[r] & 1023 == 0 {
            var h = CounterRandom.splitmix(value ^ UInt64(bitPattern: b.indices[r]))
            for j in 0..<b.columns { h = CounterRandom.splitmix(h ^ b.feature(r, j).bitPattern) }
            if let t = b.targets { h = CounterRandom.splitmix(h ^ t[r].bitPattern) }
            if let w = b.weights { h = CounterRandom.splitmix(h ^ w[r].bitPattern) }
            value = h
        }
    }
}
