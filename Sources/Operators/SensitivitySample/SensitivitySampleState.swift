import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#endif

/// State payload, version 3:
///
/// ```
/// offset  size  field
///      0     1  method (u8: `methodTag`)      1  8  width w = features + target (u64)
///      9     8  seed (u64)                   17  8  shard (i64)    25  4  purpose (u32)   29  1  sharded (u8)
///     30        online (`OnlineEngine.encode`): rows seen (i64), weight sum (f64), c (f64); column sums of
///               squares, the factor K, the ridge per column ([f64] each); the sample (`SampleSet.encode`); the
///               open block: its first row (i64), rows b (u64), rows ([f64], b×w), weights ([f64]), indices
///               ([i64]); blocks (i64), expected size, weight variance, max term (f64 each), thinned (u64),
///               merged potential (f64, NaN: none); the kept-rows history (`BoundedHistory.encode`)
///               merge-reduce and root-leverage (`MergeReduceEngine.encode`): rows seen (i64), weight sum (f64);
///               the open leaf: rows l (u64), rows ([f64], l×w), weights ([f64]), indices ([i64]); levels L (u64),
///               then L × (present u8; if 1: ε bound f64 and the level's `SampleSet`); reductions (i64), max
///               score total (f64), max Lewis iterations, Lewis fallbacks (u64 each); the history
/// ```
/// Integers and floats little-endian; `[f64]` is a u64 count then the values (`BinaryWriter.f64s`). Restoring
/// checks every count and length against the parameters, so a damaged payload is an error, never a trap.
extension SensitivitySampleOperator {
    /// Layout: u8 method (0 online, 1 merge-reduce, 2 root-leverage), u64 width, u64 seed, i64 shard,
    /// u32 purpose, u8 sharded, then the engine's fields (see `OnlineEngine.encode` /
    /// `MergeReduceEngine.encode`).
    public func encodeState() -> [UInt8] {
        // Sized up front, so a coreset of tens of MB is written into one buffer (no regrowth copies).
        var w = BinaryWriter(capacity: online?.encodedSizeHint ?? 0)
        w.u8(Self.methodTag(config.method)); w.u64(UInt64(width)); w.u64(seed); w.i64(shard); w.u32(purpose); w.bool(sharded)
        if let o = online { o.encode(&w) } else { mergeReduce!.encode(&w) }
        return w.bytes
    }

    static func methodTag(_ m: SensitivityConfig.Method) -> UInt8 {
        switch m { case .online: 0; case .mergeReduce: 1; case .rootLeverage: 2 }
    }

    public init(config: SensitivityConfig, context ctx: OperatorContext, state: [UInt8], location: String) throws(EngineError) {
        var r = BinaryReader(state, location: location)
        let tag = try r.u8(), w = try r.u64()
        let expectedWidth = ctx.shape.columns + (ctx.shape.hasTarget ? 1 : 0)
        guard tag == Self.methodTag(config.method), w == UInt64(expectedWidth) else {
            throw .data(location, "sensitivity-sample state is for method tag \(tag) and width \(w); expected \(config.method.rawValue) and \(expectedWidth)")
        }
        let seed = try r.u64(), shard = try r.i64(), purpose = try r.u32(), sharded = try r.bool()
        self.init(config: config, context: OperatorContext(shape: ctx.shape, seed: seed, shard: shard, purpose: purpose), sharded: sharded)
        if online != nil { try online!.decode(&r) } else { try mergeReduce!.decode(&r) }
        guard r.remaining == 0 else { throw .data(location, "sensitivity-sample state has \(r.remaining) trailing bytes") }
    }
}
