import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#endif

/// Online ridge-leverage sampling for p = 2 (Cohen, Musco & Pachocki, "Online Row Sampling", APPROX 2016;
/// arXiv 1604.05448), in blocks.
///
/// M = Δ + Σ_kept (w/q)·a aᵀ over rows a of [A | y] (w the row's multiplicity), Δ = δI (`ridge`) or, by
/// default, diag(α·mean w a_j²) — a ridge that follows each column's scale, so features in any units are
/// sampled alike (α = 1e-3; summary.json reports δ = max_j Δ_jj, and the guarantee holds with δI).
/// Row i gets l_i = min(1, (1+ε)·w_i·a_iᵀM⁻¹a_i) and is kept with q_i = min(1, c·l_i), weight w_i/q_i, where
/// c = 2·(1 + ε/3)·ln(2d/ρ)/ε² (matrix Freedman with ρ = 0.1; CMP use 8 ln d/ε², about twice as large at
/// d = 65; the tests measure what this one delivers). The keep draw is uniform(seed, shard, purpose, source
/// index), so the sample does not depend on batch size, threads or a resume.
///
/// Departure from the sequential paper: rows are decided in internal blocks at fixed row positions (a ramp
/// of 32, 32, 64, 128, … rows up to `block_rows`), all against M at the block's start; then M's kept-row
/// sum is updated once with the block's kept rows (one dsyrk) and refactored (dpotrf), and every row of the
/// next block gets its scores from one triangular multiply by R⁻¹ (dtrmm; on float32 sources strmm with a
/// rounding bound added, see `scoresInFloat32`). Scores against an older M are larger (M only grows), so the
/// sample is at most a little larger than the sequential one, never less accurate. The ramp keeps the
/// staleness to a factor ≤ 2 in row count while the sample is forming.
///
/// `samples: s` instead of ε: c starts at ∞ (keep everything) and, whenever more than s rows are kept, is
/// lowered so that about 0.8·s survive; a kept row survives iff its stored draw u_i < min(1, c_new·l_i).
/// Because keep decisions compare one uniform per row against q, the result is exactly the sample c_new
/// would have drawn (with a denser, still valid M), so thinning adds no error; summary.json reports the ε
/// the final c stands for.
struct OnlineEngine: Equatable, Sendable {
    let width: Int
    let epsilonFactor: Double   // the (1 + ε) in l
    let ridge: Double?
    let samples: Int?
    let blockRows: Int
    /// Scores from float32 products (the rows are float32 values: `StreamShape.float32Values`), each raised
    /// by its rounding bound so it stays ≥ the exact score — see `scoresInFloat32`.
    let float32Scores: Bool

    var rowsSeen: Int64 = 0
    var weightSum = 0.0
    var c: Double
    /// Σ w·a_j² per column (drives the automatic ridge).
    var sumSquares: [Double]
    /// Σ_kept (w/q)·a aᵀ, upper triangle, row-major width×width.
    var k: [Double]
    var ridgeMax: [Double]
    var kept: SampleSet
    // The open block.
    var blockStart: Int64 = 0
    var blockCount = 0
    var block: [Double]
    var blockWeight: [Double]
    var blockIndex: [Int64]
    // Scratch for closeBlock (not state): allocated once, so blocks never touch the allocator.
    var scratchScaled: [Double]
    var scratchZ: [Double]
    var scratchH: [Double]
    var scratchZ32: [Float]
    var factor32: [Float]
    var scratchRow32: [Float]
    // Statistics of the keep decisions (at decision time; see `thinned`).
    var blocks: Int64 = 0
    var expectedSize = 0.0
    var weightVariance = 0.0
    var maxTerm = 0.0
    var thinned = 0
    /// After a merge: the sum of the parts' log-det potentials (see `sizeBound`); nil for one stream.
    var mergedPotential: Double?
    /// (rows seen, rows kept, expected size Σq) after every block: `kept_history.npy`. Cleared by a merge
    /// (one shard's trajectory says nothing about the union's).
    var history = BoundedHistory(width: 3)

    init(config: SensitivityConfig, width: Int, float32Scores: Bool = false) {
        self.width = width
        self.float32Scores = float32Scores
        self.epsilonFactor = 1 + (config.epsilon ?? 0.5)
        self.ridge = config.ridge
        self.samples = config.samples
        self.blockRows = max(1, config.blockRows)
        if let e = config.epsilon { c = 2 * SensitivityConfig.bernsteinFactor(epsilon: e, width: width) } else { c = .infinity }
        sumSquares = [Double](repeating: 0, count: width)
        k = [Double](repeating: 0, count: width * width)
        ridgeMax = sumSquares
        kept = SampleSet(width: width)
        block = [Double](repeating: 0, count: blockRows * width)
        blockWeight = [Double](repeating: 0, count: blockRows)
        blockIndex = [Int64](repeating: 0, count: blockRows)
        scratchScaled = block
        scratchZ = float32Scores ? [] : block
        scratchH = blockWeight
        scratchZ32 = [Float](repeating: 0, count: float32Scores ? blockRows * width : 0)
        factor32 = [Float](repeating: 0, count: float32Scores ? width * width : 0)
        scratchRow32 = [Float](repeating: 0, count: float32Scores ? 4 * width : 0)
    }

    /// Rows in the block that starts at row `start`: the ramp 32, 32, 64, 128, … then `blockRows`.
    func blockSize(startingAt start: Int64) -> Int {
        let ramp = max(Int64(SensitivityConfig.firstBlockRows), start)
        return max(1, Int(min(Int64(blockRows), ramp)))
    }

    static func == (a: OnlineEngine, b: OnlineEngine) -> Bool { a.encoded() == b.encoded() }

    mutating func update(_ batch: RowBatch, rng: CounterRandom, shard: Int64) throws(EngineError) {
        let d = batch.columns, width = self.width
        // Staged float32 rows are the source's rows as read — features, then the target when there is one —
        // so [a | y] as the block holds them: widened straight into it.
        if try batch.withFloat32Rows({ (p, stride) throws(EngineError) -> Void in
            precondition(stride == width, "staged rows of \(stride) floats for [a | y] rows of \(width)")
            try append(batch, rng: rng, shard: shard) { r, n, dst in BlockKernels.widen(p + r * stride, rows: n, columns: width, stride: stride, into: dst) }
        }) != nil { return }
        try batch.features.withUnsafeBufferPointer { (fp) throws(EngineError) in
            try append(batch, rng: rng, shard: shard) { r, n, dst in
                // [a | y] rows copied with memcpy, no per-value checks.
                for k in 0..<n {
                    (dst + k * width).update(from: fp.baseAddress! + (r + k) * d, count: d)
                    if width > d { dst[k * width + d] = batch.targets?[r + k] ?? 0 }
                }
            }
        }
    }

    /// Appends the batch's rows to the open block, closing it at its fixed end; `fill(r, n, dst)` writes the
    /// [a | y] rows r..<r+n of the batch to dst.
    private mutating func append(_ batch: RowBatch, rng: CounterRandom, shard: Int64,
                                 fill: (Int, Int, UnsafeMutablePointer<Double>) -> Void) throws(EngineError) {
        var r = 0
        while r < batch.count {
            // Rows up to the open block's end at once.
            let size = blockSize(startingAt: blockStart)
            let take = min(size - blockCount, batch.count - r), start = blockCount
            block.withUnsafeMutableBufferPointer { bp in fill(r, take, bp.baseAddress! + start * width) }
            for k in 0..<take {
                let w = batch.weight(r + k)
                blockWeight[start + k] = w
                blockIndex[start + k] = batch.indices[r + k]
                weightSum += w
            }
            blockCount += take
            rowsSeen += Int64(take)
            r += take
            if blockCount == size { try closeBlock(rng: rng, shard: shard) }
        }
    }

    /// Decides every row of the open block against M at the block's start, then folds the kept rows into M.
    mutating func closeBlock(rng: CounterRandom, shard: Int64) throws(EngineError) {
        let m = blockCount, n = width
        guard m > 0 else { return }
        // The ridge: fixed, or α × the running mean of a_j² over every row up to this block's end.
        for i in 0..<m {
            let w = blockWeight[i]
            for j in 0..<n { let x = block[i * n + j]; sumSquares[j] += w * x * x }
        }
        let total = weightSum
        var delta = [Double](repeating: 0, count: n)
        var largest = 0.0
        for j in 0..<n {
            if let r = ridge { delta[j] = r } else if total > 0 && sumSquares[j] > 0 {
                delta[j] = SensitivityConfig.autoRidge * sumSquares[j] / total
            }
            largest = max(largest, delta[j])
        }
        // A column with no energy yet carries no score; any positive value keeps M definite.
        for j in 0..<n where !(delta[j] > 0) { delta[j] = largest > 0 ? largest : 1 }
        for j in 0..<n { ridgeMax[j] = max(ridgeMax[j], delta[j]) }
        var factor = k
        for j in 0..<n { factor[j * n + j] += delta[j] }
        var traceM = 0.0   // = ‖R‖_F² for M = RᵀR
        for j in 0..<n { traceM += factor[j * n + j] }
        do {
            try RowScores.choleskyUpper(&factor, n: n)
            try RowScores.invertUpper(&factor, n: n)
        } catch {
            throw .data("sensitivity-sample", "online ridge matrix is not positive definite (\(error.description)); non-finite or huge values in the rows?")
        }
        // h_i = w_i·a_iᵀM⁻¹a_i: the block's rows as they are in one dgemm, then the weights (no scaled copy
        // of the block: one pass over its rows fewer).
        var scaled = scratchScaled, z = scratchZ, h = scratchH
        scratchScaled = []; scratchZ = []; scratchH = []   // keep the buffers uniquely referenced (no copy)
        defer { scratchScaled = scaled; scratchZ = z; scratchH = h }
        if !(float32Scores && scoresInFloat32(factor: factor, factorNorm: traceM.squareRoot(), rows: m, into: &h)) {
            if z.count < m * n { z = [Double](repeating: 0, count: blockRows * n) }
            factor.withUnsafeBufferPointer { fp in
                block.withUnsafeBufferPointer { bp in
                    z.withUnsafeMutableBufferPointer { zp in
                        h.withUnsafeMutableBufferPointer { hp in
                            RowScores.quadraticForms(inverseFactor: fp.baseAddress!, n: n, x: bp.baseAddress!, rows: m, scratch: zp.baseAddress!, into: hp.baseAddress!)
                        }
                    }
                }
            }
        }
        for i in 0..<m { h[i] *= blockWeight[i] }
        // Keep decisions; the kept rows' √(w/q)-scaled copies go to `scaled` (reused) for one dsyrk.
        var keptInBlock = 0
        block.withUnsafeBufferPointer { bp in
            for i in 0..<m {
                let w = blockWeight[i]
                let l = min(1, epsilonFactor * h[i])
                let q = Self.keepProbability(c: c, l: l)
                let u = rng.uniform(index: UInt64(bitPattern: blockIndex[i]))
                expectedSize += q
                if q > 0 && q < 1 {
                    weightVariance += w * w * (1 - q) / q
                    maxTerm = max(maxTerm, w / q)
                }
                if u < q {
                    kept.append(row: bp.baseAddress! + i * n, weight: w, score: l, uniform: u, index: blockIndex[i], shard: shard)
                    let s = (w / q).squareRoot()
                    for j in 0..<n { scaled[keptInBlock * n + j] = s * block[i * n + j] }
                    keptInBlock += 1
                }
            }
        }
        scaled.withUnsafeBufferPointer { sp in
            k.withUnsafeMutableBufferPointer { kp in BlockKernels.syrkUpper(sp.baseAddress!, rows: keptInBlock, n: n, into: kp.baseAddress!) }
        }
        blockStart = rowsSeen
        blockCount = 0
        blocks += 1
        if let s = samples, kept.count > s { thin(target: max(1, 0.8 * Double(s))) }
        history.record([Double(rowsSeen), Double(kept.count), expectedSize])
    }

    /// h_i ≥ a_iᵀM⁻¹a_i for the open block's rows from float32 arithmetic: Z̃ = X·R̃ (one fixed-order triangular multiply, R̃ = R⁻¹
    /// rounded to float32; X is exact, its values being float32), then h_i = (‖z̃_i‖ + e_i)² with
    /// e_i = ‖x_i‖·(γ_{n+1}·‖R̃‖_F + u₃₂·‖R⁻¹‖_F) + n²·2⁻¹⁴⁹: each entry of Z̃ is a dot product of length ≤ n,
    /// off by ≤ γ_n·|x||R̃| (Higham, §3.1), whose norm is ≤ ‖x‖·‖R̃‖_F, and R̃ is off by ≤ u₃₂·|R⁻¹|; the
    /// last term covers subnormal results. The keep probabilities therefore only rise, and the guarantee
    /// holds. Since ‖z_i‖ ≥ ‖x_i‖/‖R‖₂, e_i/‖z_i‖ ≤ (γ_{n+1}·‖R̃‖_F + u₃₂·‖R⁻¹‖_F)·‖R‖_F: a block takes this path
    /// only when that is ≤ 4e-3 (every score rises by < 1 %: M's Frobenius condition number ≲ 10³), and when
    /// R⁻¹'s entries and the products stay well inside float32's range; otherwise (badly scaled columns,
    /// say) it returns false and the block takes the float64 path, which writes every h_i. Costs one strmm —
    /// 0.07 s per 10⁶ rows of 65 against dtrmm's 0.14 s (`make -C Benchmarks kernels`).
    mutating func scoresInFloat32(factor: [Double], factorNorm: Double, rows m: Int, into h: inout [Double]) -> Bool {
        let n = width, u32 = 0x1p-24
        var normR = 0.0, largest = 0.0
        for v in factor { normR += v * v; largest = max(largest, abs(v)) }
        normR = normR.squareRoot()
        let gamma = Double(n + 1) * u32 / (1 - Double(n + 1) * u32)
        guard (gamma * (1 + u32) + u32) * normR * factorNorm <= 4e-3 else { return false }
        // ‖x_i‖² go to h first (overwritten below, or by the float64 path).
        var maxRow = 0.0
        block.withUnsafeBufferPointer { bp in
            for i in 0..<m { h[i] = BlockKernels.sumOfSquares(bp.baseAddress! + i * n, n: n); maxRow = max(maxRow, h[i]) }
        }
        guard largest <= 0x1p60, largest * maxRow.squareRoot() <= 0x1p60, largest >= 0x1p-60 || largest == 0 else { return false }
        var normR32 = 0.0
        // Upper triangle only: the fixed-order kernel adds every row of R̃ up to its column block, and needs
        // zeros below the diagonal.
        for r in 0..<n {
            for c in 0..<n {
                let f = c >= r ? Float(factor[r * n + c]) : 0
                factor32[r * n + c] = f
                normR32 += Double(f) * Double(f)
            }
        }
        normR32 = normR32.squareRoot()
        // Norms are summed in float64 (relative error ≤ n·2⁻⁵³); 1 + 2⁻⁴⁰ covers that with room.
        let perNorm = (gamma * normR32 + u32 * normR) * (1 + 0x1p-40), floorTerm = Double(n * n) * 0x1p-149
        block.withUnsafeBufferPointer { bp in
            scratchZ32.withUnsafeMutableBufferPointer { zp in
                factor32.withUnsafeBufferPointer { fp in
                    BlockKernels.narrow(bp.baseAddress!, count: m * n, into: zp.baseAddress!)   // exact: the values are float32s
                    scratchRow32.withUnsafeMutableBufferPointer { sp in
                        BlockKernels.trmmRightUpperFloat32(fp.baseAddress!, n: n, rows: m, inPlace: zp.baseAddress!, scratch: sp.baseAddress!)
                    }
                    for i in 0..<m {
                        let zn = BlockKernels.sumOfSquares(UnsafePointer(zp.baseAddress! + i * n), n: n).squareRoot()
                        let xn = h[i].squareRoot()
                        let up = zn * (1 + 0x1p-40) + xn * perNorm + floorTerm
                        h[i] = up * up * (1 + 0x1p-50)
                    }
                }
            }
        }
        return true
    }

    @inline(__always)
    static func keepProbability(c: Double, l: Double) -> Double {
        guard l > 0 else { return 0 }
        return c.isInfinite ? 1 : min(1, c * l)
    }

    /// Lowers c so that about `target` kept rows survive (each with probability q_new/q_old, realised by
    /// its stored draw), then rebuilds M's kept-row sum from the survivors.
    mutating func thin(target: Double) {
        let l = kept.score
        func survivors(_ cc: Double) -> Double {
            var s = 0.0
            for i in 0..<kept.count {
                let qo = Self.keepProbability(c: c, l: l[i])
                if qo > 0 { s += Self.keepProbability(c: cc, l: l[i]) / qo }
            }
            return s
        }
        var minL = Double.infinity
        for v in l where v > 0 { minL = min(minL, v) }
        guard minL.isFinite else { return }
        // Bisection on log c between a c that keeps almost nothing and one that keeps every kept row.
        var lo = log(1e-300), hi = log(c.isInfinite ? 1 / minL : c)
        for _ in 0..<200 {
            let mid = 0.5 * (lo + hi)
            if survivors(exp(mid)) > target { hi = mid } else { lo = mid }
            if hi - lo < 1e-12 { break }
        }
        let cNew = exp(lo)
        var keep = [Bool](repeating: false, count: kept.count)
        for i in 0..<kept.count { keep[i] = kept.uniform[i] < Self.keepProbability(c: cNew, l: l[i]) }
        c = cNew
        kept.filter(keep)
        rebuildK()
        thinned += 1
    }

    /// M's kept-row sum from scratch: Σ_kept (w/q)·a aᵀ at the current c.
    mutating func rebuildK() {
        let n = width, m = kept.count
        var scaled = [Double](repeating: 0, count: max(1, m * n))
        for i in 0..<m {
            let s = (kept.weight[i] / Self.keepProbability(c: c, l: kept.score[i])).squareRoot()
            for j in 0..<n { scaled[i * n + j] = s * kept.rows[i * n + j] }
        }
        k = [Double](repeating: 0, count: n * n)
        scaled.withUnsafeBufferPointer { sp in
            k.withUnsafeMutableBufferPointer { kp in BlockKernels.syrkUpper(sp.baseAddress!, rows: m, n: n, into: kp.baseAddress!) }
        }
    }

    /// Union with another shard's engine (both blocks closed): a union of ε-approximations of disjoint row
    /// sets is an ε-approximation of their union (ridges add). The common c is the smaller one (the larger
    /// side is thinned by its stored draws, exactly), then `samples` thins the union as in the stream.
    mutating func merge(_ o: OnlineEngine) {
        let cc = min(c, o.c)
        mergedPotential = potential() + o.potential()
        kept.append(contentsOf: o.kept)
        rowsSeen += o.rowsSeen
        weightSum += o.weightSum
        for j in 0..<width { sumSquares[j] += o.sumSquares[j]; ridgeMax[j] += o.ridgeMax[j] }
        blocks += o.blocks
        expectedSize += o.expectedSize
        weightVariance += o.weightVariance
        maxTerm = max(maxTerm, o.maxTerm)
        thinned += o.thinned
        if cc < c || cc < o.c {
            var keep = [Bool](repeating: false, count: kept.count)
            for i in 0..<kept.count { keep[i] = kept.uniform[i] < Self.keepProbability(c: cc, l: kept.score[i]) }
            kept.filter(keep)
            thinned += 1
        }
        c = cc
        rebuildK()
        history.clear()
        blockStart = rowsSeen
        if let s = samples, kept.count > s { thin(target: max(1, 0.8 * Double(s))) }
    }

    /// The multiplicity a kept row goes out with: w/q at the current c.
    func outputWeight(_ i: Int) -> Double { kept.weight[i] / Self.keepProbability(c: c, l: kept.score[i]) }

    /// δ as the guarantee uses it: the largest diagonal ridge entry used by any block.
    var ridgeBound: Double { ridgeMax.max() ?? 0 }

    /// c(1+ε)·log₂det(I + Δ⁻¹K): the log-det potential bound on Σ q (CMP Lemma 3.3: Σ_i min(1, l_i) ≤
    /// log₂ det(M_n)/det(Δ) for exact online leverages), evaluated with the sample's own K — what the size
    /// should stay below when blocks do not hide a sudden new direction.
    ///
    /// A merged engine's rows were scored by each part's own online process, so its potential is the sum of
    /// the parts' (each ≥ what the union's K would give): `mergedPotential`, fixed at the merge.
    func sizeBound() -> Double {
        if c.isInfinite { return Double(rowsSeen) }
        return min(Double(rowsSeen), c * epsilonFactor * potential() / log(2))
    }

    /// log det(I + Δ⁻¹K) of this stream's kept Gram (natural log), or the parts' sum after a merge.
    func potential() -> Double {
        if let p = mergedPotential { return p }
        let n = width
        var a = k
        var logdet = 0.0
        for j in 0..<n {
            let dj = ridgeMax[j] > 0 ? ridgeMax[j] : 1
            logdet -= log(dj)
            a[j * n + j] += dj
        }
        guard (try? RowScores.choleskyUpper(&a, n: n)) != nil else { return .infinity }
        for j in 0..<n { logdet += 2 * log(a[j * n + j]) }
        return logdet
    }

    func encoded() -> [UInt8] {
        var w = BinaryWriter()
        encode(&w)
        return w.bytes
    }

    /// At least the bytes `encode` writes: kept rows (row, weight, score, uniform, index, shard), K and the
    /// per-column vectors, the open block, plus room for the scalars and history.
    var encodedSizeHint: Int {
        8 * (kept.count * (width + 5) + (width + 4) * (width + blockCount + 4)) + (1 << 16)
    }

    func encode(_ w: inout BinaryWriter) {
        w.i64(rowsSeen); w.f64(weightSum); w.f64(c)
        w.f64s(sumSquares); w.f64s(k); w.f64s(ridgeMax)
        kept.encode(&w)
        w.i64(blockStart); w.u64(UInt64(blockCount))
        w.f64s(Array(block[0..<blockCount * width])); w.f64s(Array(blockWeight[0..<blockCount])); w.i64s(Array(blockIndex[0..<blockCount]))
        w.i64(blocks); w.f64(expectedSize); w.f64(weightVariance); w.f64(maxTerm); w.u64(UInt64(thinned))
        w.f64(mergedPotential ?? .nan)
        history.encode(&w)
    }

    mutating func decode(_ r: inout BinaryReader) throws(EngineError) {
        rowsSeen = try r.i64(); weightSum = try r.f64(); c = try r.f64()
        sumSquares = try r.f64s(); k = try r.f64s(); ridgeMax = try r.f64s()
        kept = try SampleSet.decode(&r, width: width)
        blockStart = try r.i64()
        let bc = try r.u64()
        let bx = try r.f64s(), bw = try r.f64s(), bi = try r.i64s()
        blocks = try r.i64(); expectedSize = try r.f64(); weightVariance = try r.f64(); maxTerm = try r.f64()
        let th = try r.u64()
        let mp = try r.f64()
        mergedPotential = mp.isNaN ? nil : mp
        try history.decode(&r, what: "sensitivity-sample")
        guard sumSquares.count == width, k.count == width * width, ridgeMax.count == width,
              rowsSeen >= 0, blockStart >= 0, blockStart <= rowsSeen, bc < UInt64(blockSize(startingAt: blockStart)),
              bx.count == Int(bc) * width, bw.count == Int(bc), bi.count == Int(bc), th < 1 << 40, !(c <= 0), !c.isNaN else {
            throw .data(r.location, "sensitivity-sample online state is inconsistent (lengths, counts or c)")
        }
        blockCount = Int(bc)
        thinned = Int(th)
        for i in 0..<bx.count { block[i] = bx[i] }
        for i in 0..<bw.count { blockWeight[i] = bw[i]; blockIndex[i] = bi[i] }
    }
}
