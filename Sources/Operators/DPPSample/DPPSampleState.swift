import EngineCore
import LinearAlgebra

/// State payload, version 2:
///
/// ```
/// offset  size      field
///      0     8      columns m (u64)     8  1  has target (u8)    9  1  mode (u8: `DPPMode.code`)
///     10     8      samples n (u64)    18  8  repetitions s (u64)   26  8  rank_tolerance (f64, NaN: default)
///     34     8      rows (i64)         42  8  weight sum (f64)      50  1  sharded (u8)
///     51   8+8q²    the streamed QR's R ([f64], q×q; q = m + 1 with a target, else m)
///      …     8      rows in the open block b (u64)    …  8+8bq  its rows ([f64], b×q)
///      …     8      steps done (u64)
///      …     1      basis built (u8); if 1: candidates (u64), σ ([f64]), tolerance (f64), rank after the first
///                   orthogonalisation (u64), T₁ ([f64]), rank r (u64), S ([f64]), block rows (u64), optimal
///                   residual (f64, NaN: none), ‖y‖ (f64, NaN: none), Σ leverage (f64)
///      …   8+8p     picks: sample part of each ([i64]), then source position of each ([i64])
///      …     1      finished (u8); if 1: indices ([i64]), weights, rows, targets, coefficients ([f64] each),
///                   residual (f64), distinct rows (u64), shards ([i64])
/// ```
/// Integers and floats little-endian; `[f64]` is a u64 count then the values (`BinaryWriter.f64s`). Restoring
/// checks every count and length against the parameters, so a damaged payload is an error, never a trap.
extension DPPSampleOperator {
    /// Layout (little-endian, BinaryWriter): columns u64, hasTarget, mode u8, samples u64, repetitions u64,
    /// rank tolerance f64 (NaN = default); rows i64, weight sum f64, sharded; R (f64s, n×n), open block (count u64,
    /// f64s); steps done u64; basis flag, then candidates u64, σ f64s, tolerance f64, rank1 u64, T1 f64s,
    /// rank u64, S f64s, block rows u64, optimal residual and Σωy² f64 (NaN = none), leverage sum f64; pick parts and
    /// positions (i64s); result flag, then indices i64s, weights, rows, targets, coefficients f64s,
    /// residual f64, distinct u64, shards i64s. The leverage cache is not stored: it is a function of the basis and the
    /// row store, recomputed by the same BLAS calls.
    public func encodeState() -> [UInt8] {
        var w = BinaryWriter()
        w.u64(UInt64(columns)); w.bool(hasTarget); w.u8(config.mode.code)
        w.u64(UInt64(config.samples)); w.u64(UInt64(config.repetitions)); w.f64(config.rankTolerance ?? .nan)
        w.i64(rows); w.f64(weightSum); w.bool(sharded)
        w.f64s(qr.r)
        w.u64(UInt64(blockCount)); w.f64s(Array(block[0..<blockCount * qrColumns]))
        w.u64(UInt64(stepsDone))
        w.bool(basis != nil)
        if let b = basis {
            w.u64(UInt64(b.candidates)); w.f64s(b.sigma); w.f64(b.tolerance)
            w.u64(UInt64(b.rank1)); w.f64s(b.t1); w.u64(UInt64(b.rank)); w.f64s(b.s)
            w.u64(UInt64(b.blockRows)); w.f64(b.optimalResidual ?? .nan); w.f64(b.targetNorm ?? .nan); w.f64(b.leverageSum)
        }
        w.i64s(pickParts); w.i64s(pickPositions)
        w.bool(result != nil)
        if let r = result {
            w.i64s(r.indices); w.f64s(r.weights); w.f64s(r.rows); w.f64s(r.targets); w.f64s(r.coefficients)
            w.f64(r.residual); w.u64(UInt64(r.distinct)); w.i64s(r.shards)
        }
        return w.bytes
    }

    /// Restores a state written by `encodeState()` for the same parameters and shape; every length and count
    /// is checked, so a damaged state is an error, never a trap.
    public init(config: DPPSampleConfig, columns: Int, hasTarget: Bool, context: OperatorContext, state: [UInt8],
                location: String) throws(EngineError) {
        self.init(config: config, columns: columns, hasTarget: hasTarget, context: context)
        var r = BinaryReader(state, location: location)
        func bad(_ what: String) -> EngineError { .data(location, "dpp-sample state is inconsistent: \(what)") }
        let c = try r.u64(), t = try r.bool(), mode = try r.u8()
        let samples = try r.u64(), reps = try r.u64(), tol = try r.f64()
        guard c == UInt64(columns), t == hasTarget else {
            throw .data(location, "dpp-sample state has \(c) columns (target: \(t)), expected \(columns) (target: \(hasTarget))")
        }
        guard DPPMode(code: mode) == config.mode, samples == UInt64(config.samples), reps == UInt64(config.repetitions),
              (tol.isNaN && config.rankTolerance == nil) || tol == config.rankTolerance else {
            throw .data(location, "dpp-sample state was written with other parameters (mode, samples, repetitions or rank_tolerance)")
        }
        rows = try r.i64(); weightSum = try r.f64()
        // OR: a resume without --shard keeps the column the run started with (as sensitivity-sample does).
        sharded = try r.bool() || sharded
        let rr = try r.f64s()
        guard rr.count == qrColumns * qrColumns, rows >= 0 else { throw bad("R factor length \(rr.count)") }
        qr = StreamingQR(columns: qrColumns, r: rr)
        let bc = try r.u64()
        let bl = try r.f64s()
        guard bc < UInt64(qrBlockRows), bl.count == Int(bc) * qrColumns else { throw bad("open block") }
        blockCount = Int(bc)
        for i in 0..<bl.count { block[i] = bl[i] }
        let steps = try r.u64()
        guard steps <= UInt64(config.parts + 2) else { throw bad("step \(steps)") }
        stepsDone = Int(steps)
        let hasBasis = try r.bool()
        guard hasBasis == (stepsDone > 0) else { throw bad("basis flag") }
        if hasBasis {
            let cand = try r.u64(), sigma = try r.f64s(), tl = try r.f64()
            let r1 = try r.u64(), t1 = try r.f64s(), rk = try r.u64(), s = try r.f64s()
            let br = try r.u64(), opt = try r.f64(), yy = try r.f64(), ls = try r.f64()
            guard cand == UInt64(rows), sigma.count == columns, r1 <= UInt64(columns), rk <= r1,
                  t1.count == columns * Int(r1), s.count == Int(r1) * Int(rk), br >= 1, br <= max(1, cand),
                  blockCount == 0 else { throw bad("basis dimensions") }
            let rank1 = Int(r1), rank = Int(rk)
            basis = Basis(candidates: Int(cand), sigma: sigma, tolerance: tl, rank1: rank1, t1: t1, rank: rank, s: s,
                          t: DPPSampleOperator.product(t1, s, m: columns, k: rank1, n: rank), blockRows: Int(br),
                          optimalResidual: opt.isNaN ? nil : opt, targetNorm: yy.isNaN ? nil : yy, leverageSum: ls)
        }
        pickParts = try r.i64s(); pickPositions = try r.i64s()
        guard pickParts.count == pickPositions.count,
              pickParts.allSatisfy({ $0 >= 0 && $0 < Int64(config.parts) && $0 < Int64(max(0, stepsDone - 1)) }),
              pickPositions.allSatisfy({ $0 >= 0 && $0 < rows }) else { throw bad("picks") }
        let hasResult = try r.bool()
        guard hasResult == (stepsDone == config.parts + 2) else { throw bad("result flag") }
        if hasResult {
            let ind = try r.i64s(), wt = try r.f64s(), rw = try r.f64s(), tg = try r.f64s(), co = try r.f64s()
            let resid = try r.f64(), dist = try r.u64(), sh = try r.i64s()
            let n = ind.count
            guard wt.count == n, sh.count == n, rw.count == n * columns, tg.count == (hasTarget ? n : 0),
                  co.count == (hasTarget ? columns : 0), dist <= UInt64(n) else { throw bad("result lengths") }
            result = SampleResult(indices: ind, weights: wt, rows: rw, targets: tg, coefficients: co, residual: resid, distinct: Int(dist), shards: sh)
        }
        guard r.remaining == 0 else { throw bad("\(r.remaining) trailing bytes") }
    }
}
