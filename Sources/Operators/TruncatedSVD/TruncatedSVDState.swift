import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#endif

/// State payload, version 2:
///
/// ```
/// offset  size      field
///      0     8      columns d (u64)        8  8  rank k (u64)        16  8  sketch size k′ (u64)
///     24     1      method (u8: 0 incremental, 1 gram)   25  8  block_rows b (u64)
///     33     1      center (u8)            34  8  decay (f64)         42  1  float32 chunks (u8)
///     43     8      rows (i64)             51  8  weight sum (f64)    59  8  effective (decayed) weight (f64)
///     67     8      F² (f64)               75  8  its compensation (f64)   83  8  rounding margin (f64)
///     91     8      blocks absorbed (i64)
///     99   8+8m     the largest row masses kept for the Weyl bound ([f64], m ≤ k)
///      …     1      shift taken (u8)
///      …   8+8c     shift ([f64], c = d when centring, else 0)   …  8+8c  running mean ([f64])   …  8  mean error (f64)
///   incremental:  8+8r values ([f64], r ≤ k′), then 8+8rd basis ([f64], r×d, rows orthonormal)
///   gram:         8+8d² Gram matrix ([f64], d×d)
///      …     8      rows in the open block n (u64)
///      …   8+8nd    the open block's rows ([f64], n×d)     …  8+8n  their weights ([f64], n)
/// ```
/// Integers and floats little-endian; `[f64]` is a u64 count then the values (`BinaryWriter.f64s`). Restoring
/// checks every count and length against the parameters, so a damaged payload is an error, never a trap.
extension TruncatedSVDOperator {
    public func encodeState() -> [UInt8] {
        var w = BinaryWriter()
        w.u64(UInt64(columns)); w.u64(UInt64(config.rank)); w.u64(UInt64(sketchSize))
        w.u8(config.method == .gram ? 1 : 0); w.u64(UInt64(config.blockRows)); w.bool(config.center); w.f64(config.decay)
        w.bool(config.precision == .float32)
        w.i64(rows); w.f64(weightSum); w.f64(effectiveWeight); w.f64(frob); w.f64(frobComp); w.f64(margin); w.i64(blocks)
        w.f64s(topMasses)
        w.bool(hasShift); w.f64s(shift); w.f64s(mean); w.f64(meanError)
        if let sk = sketch { w.f64s(sk.values); w.f64s(sk.basis) } else { w.f64s(gram) }
        w.u64(UInt64(blockCount))
        w.f64s(Array(blockX[0..<blockCount * columns])); w.f64s(Array(blockW[0..<blockCount]))
        return w.bytes
    }

    public init(config: TruncatedSVDConfig, columns d: Int, state: [UInt8], location: String) throws(EngineError) {
        self.init(config: config, columns: d)
        var r = BinaryReader(state, location: location)
        let c = Int(exactly: try r.u64()) ?? -1, k = Int(exactly: try r.u64()) ?? -1, kp = Int(exactly: try r.u64()) ?? -1
        let m = try r.u8(), b = Int(exactly: try r.u64()) ?? -1, center = try r.bool(), decay = try r.f64()
        let f32 = try r.bool()
        guard c == d, k == config.rank, kp == sketchSize, m == (config.method == .gram ? 1 : 0), b == config.blockRows,
              center == config.center, decay == config.decay, f32 == (config.precision == .float32) else {
            throw .data(location, "truncated-svd state was written for \(c) columns, rank \(k), sketch \(kp), method \(m == 1 ? "gram" : "incremental"), block_rows \(b), precision \(f32 ? "float32" : "float64"); expected \(d), \(config.rank), \(sketchSize), \(config.method.rawValue), \(config.blockRows), \(config.precision.rawValue)")
        }
        rows = try r.i64(); weightSum = try r.f64(); effectiveWeight = try r.f64()
        frob = try r.f64(); frobComp = try r.f64(); margin = try r.f64(); blocks = try r.i64()
        topMasses = try r.f64s()
        hasShift = try r.bool(); shift = try r.f64s(); mean = try r.f64s(); meanError = try r.f64()
        let cd = config.center ? d : 0
        let scalarsOK = [weightSum, effectiveWeight, frob, margin, meanError].allSatisfy { $0.isFinite && $0 >= 0 } && frobComp.isFinite
        guard topMasses.count <= k, shift.count == cd, mean.count == cd, rows >= 0, blocks >= 0, scalarsOK,
              (topMasses + shift + mean).allSatisfy(\.isFinite) else {
            throw .data(location, "truncated-svd state is inconsistent (negative or non-finite totals, or wrong lengths)")
        }
        if config.method == .incremental {
            let values = try r.f64s(), basis = try r.f64s()
            guard values.count <= kp, basis.count == values.count * d, values.allSatisfy({ $0 >= 0 && $0.isFinite }),
                  basis.allSatisfy(\.isFinite) else {
                throw .data(location, "truncated-svd state is inconsistent (sketch of \(values.count) values, \(basis.count) basis entries)")
            }
            let maxBlock = max(config.blockRows, sketchSize) + 1
            sketch = SubspaceSketch(dimension: d, capacity: sketchSize, maxBlock: maxBlock, basis: basis, values: values)
        } else {
            gram = try r.f64s()
            guard gram.count == d * d, gram.allSatisfy(\.isFinite) else {
                throw .data(location, "truncated-svd state is inconsistent (Gram of \(gram.count) entries)")
            }
        }
        blockCount = Int(exactly: try r.u64()) ?? -1
        let bx = try r.f64s(), bw = try r.f64s()
        guard blockCount >= 0, blockCount < config.blockRows, bx.count == blockCount * d, bw.count == blockCount else {
            throw .data(location, "truncated-svd state is inconsistent (open block of \(blockCount) rows)")
        }
        for i in 0..<bx.count { blockX[i] = bx[i] }
        for i in 0..<bw.count { blockW[i] = bw[i] }
        guard r.remaining == 0 else { throw .data(location, "truncated-svd state has \(r.remaining) trailing bytes") }
    }
}
