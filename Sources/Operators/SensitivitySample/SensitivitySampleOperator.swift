import EngineCore
import LinearAlgebra

#if canImport(Glibc)
import Glibc
#endif

/// Parameters of `sensitivity-sample` after validation (docs/operators.md).
public struct SensitivityConfig: Sendable, Equatable {
    public enum Method: String, Sendable, Equatable { case online, mergeReduce = "merge-reduce", rootLeverage = "root-leverage" }

    public var p: Double
    /// Target distortion ε; exactly one of `epsilon` and `samples` is set.
    public var epsilon: Double?
    /// Target sample size.
    public var samples: Int?
    /// Online: the ridge δ of M = δI + Σ_kept a aᵀ/q; nil = automatic (`autoRidge` × the running mean of
    /// each column's square, i.e. a diagonal ridge that follows the column scales).
    public var ridge: Double?
    public var method: Method
    /// Online: rows per internal block (after a doubling ramp 32, 64, … up to it). Merge-reduce: leaf size.
    public var blockRows: Int

    /// ρ: the failure probability every size formula is set for.
    public static let failureProbability = 0.1
    /// The automatic ridge: α × (running weighted mean of a_j²) on column j.
    public static let autoRidge = 1e-3
    /// The online ramp starts with blocks of this many rows.
    public static let firstBlockRows = 32
    /// The automatic online block size.
    public static let onlineBlockRows = 1024
    /// Leaf buffers are capped at this many bytes (auto sizes only).
    public static let maxLeafBytes = 256 << 20
    /// An explicit `block_rows` may ask for at most this much buffer.
    public static let maxBlockBytes = 4 << 30

    public init(p: Double = 2, epsilon: Double? = nil, samples: Int? = nil, ridge: Double? = nil,
                method: Method = .online, blockRows: Int = SensitivityConfig.onlineBlockRows) {
        self.p = p; self.epsilon = epsilon; self.samples = samples; self.ridge = ridge
        self.method = method; self.blockRows = blockRows
    }

    /// ln(2d/ρ)·(1 + ε/3)/ε²: the matrix-Bernstein factor. Keeping row i with q_i = min(1, F·(σ_i + τ_i))
    /// (σ an ℓp sensitivity upper bound, τ the ℓ2 leverage) gives, for p = 2 where σ = τ, q_i =
    /// min(1, 2F·τ_i): each term of the error matrix is bounded by 1/(2F) and the variance by 1/(2F), so
    /// P(‖E‖ > ε) ≤ 2d·exp(−2F·ε²/(2 + 2ε/3)) = ρ (Tropp 2012, Thm 1.4; matrix Freedman for the online
    /// martingale, Cohen–Musco–Pachocki §3). For p ≠ 2 the same factor is Munteanu & Omlor's
    /// Õ(ε⁻²(𝔖 + d)) with its polylog factors replaced by ln(2d/ρ) — calibrated by the tests, not proven.
    public static func bernsteinFactor(epsilon e: Double, width d: Int) -> Double {
        log(2 * Double(max(1, d)) / failureProbability) * (1 + e / 3) / (e * e)
    }

    /// The ε whose Bernstein factor is `f` (the inverse of `bernsteinFactor`); 0 for f = ∞ (everything kept).
    public static func epsilon(forFactor f: Double, width d: Int) -> Double {
        guard f.isFinite, f > 0 else { return f > 0 ? 0 : .infinity }
        let l = log(2 * Double(max(1, d)) / failureProbability)
        return (l / 3 + (l * l / 9 + 4 * f * l).squareRoot()) / (2 * f)
    }

    /// ε_ℓ = 3ε/(π²(ℓ+1)²): the merge-reduce budget of level ℓ (leaves are level 0); Σ_ℓ ε_ℓ = ε/2.
    public static func levelEpsilon(_ e: Double, level: Int) -> Double {
        3 * e / (Double.pi * Double.pi * Double((level + 1) * (level + 1)))
    }

    /// Upper bound on the total of the scores σ_i + τ_i of a block of rows `width` wide: 2d for p ≤ 2 (Lewis
    /// weights and leverages each sum to the rank), d + d^{p/2} for p > 2.
    public static func scoreTotalBound(p: Double, width d: Int) -> Double {
        let dd = Double(max(1, d))
        return p <= 2 ? 2 * dd : dd + pow(dd, p / 2)
    }

    /// Resolves validated parameters ("auto" method and block size) for a stream `width` wide ([A | y]).
    public static func resolve(_ v: ParamValues, width: Int) throws(EngineError) -> SensitivityConfig {
        var c = SensitivityConfig()
        c.p = v.double("p") ?? 2
        c.epsilon = v.double("epsilon")
        c.samples = v.int("samples").map { Int($0) }
        c.ridge = v.double("ridge")
        if let problem = SensitivityConfig.problem(v) { throw .usage("sensitivity-sample", problem) }
        switch v.string("method") ?? "auto" {
        case "online": c.method = .online
        case "merge-reduce": c.method = .mergeReduce
        case "root-leverage": c.method = .rootLeverage
        default: c.method = c.p == 2 ? .online : .mergeReduce
        }
        if let b = v.int("block_rows") {
            c.blockRows = Int(b)
            // Online keeps the block and three scratch copies; merge-reduce one leaf.
            let bytes = Double(b) * Double(width + 3) * 8 * (c.method == .online ? 4 : 1)
            if bytes > Double(maxBlockBytes) {
                throw .usage("sensitivity-sample", "block_rows \(b) with \(width) columns needs \(Int(bytes / Double(1 << 20))) MiB of buffers (limit \(maxBlockBytes >> 20) MiB)",
                             hint: "lower block_rows, or leave it at auto")
            }
        } else if c.method == .online {
            c.blockRows = onlineBlockRows
        } else {
            c.blockRows = autoLeafRows(c, width: width)
        }
        return c
    }

    /// Leaves four times the size of one reduction's expected output, so a leaf keeps at most about a quarter
    /// of its rows; at least 4096 rows, at most `maxLeafBytes` of buffer.
    static func autoLeafRows(_ c: SensitivityConfig, width: Int) -> Int {
        let m: Double
        if let s = c.samples {
            m = Double(s)
        } else {
            let e0 = levelEpsilon(c.epsilon ?? 0.5, level: 0)
            m = bernsteinFactor(epsilon: e0, width: width) * scoreTotalBound(p: c.method == .rootLeverage ? 2 : c.p, width: width)
        }
        let cap = maxLeafBytes / (8 * (width + 3))
        return max(1, min(cap, max(4096, Int(min(4 * m, 1e12)))))
    }

    /// What is wrong with a parameter combination (the descriptor's `check`), or nil.
    static func problem(_ v: ParamValues) -> String? {
        let eps = v.double("epsilon"), samples = v.int("samples")
        if eps != nil && samples != nil {
            return "give either epsilon or samples, not both (epsilon sets the size by the stated bound; samples sets it directly)"
        }
        if eps == nil && samples == nil { return "needs epsilon (target distortion, 0 < ε ≤ 1) or samples (target size)" }
        let p = v.double("p") ?? 2
        let method = v.string("method") ?? "auto"
        if method == "online" && p != 2 { return "method: online is online ridge-leverage sampling, for p = 2 only; use merge-reduce for p = \(JSON.format(p))" }
        if method == "root-leverage" && !(p >= 1 && p < 2) { return "method: root-leverage is proven for 1 ≤ p < 2 (p = \(JSON.format(p)))" }
        let online = method == "online" || (method == "auto" && p == 2)
        if v.double("ridge") != nil && !online { return "ridge applies to method: online (p = 2) only" }
        return nil
    }
}

/// Kept rows with what travels with them: the raw row [a | y], its multiplicity, its score and keep draw
/// (online), its source position and shard.
struct SampleSet: Equatable, Sendable {
    let width: Int
    private(set) var count = 0
    var rows: [Double] = []
    /// Merge-reduce: the current multiplicity. Online: the multiplicity the row arrived with.
    var weight: [Double] = []
    /// Online: the capped online leverage l_i (multiplicity included). Merge-reduce: q at the last reduction.
    var score: [Double] = []
    /// Online: the uniform draw the keep decision compared against.
    var uniform: [Double] = []
    var index: [Int64] = []
    var shard: [Int64] = []

    init(width: Int) { self.width = width }

    mutating func reserve(_ n: Int) {
        rows.reserveCapacity(n * width); weight.reserveCapacity(n); score.reserveCapacity(n)
        uniform.reserveCapacity(n); index.reserveCapacity(n); shard.reserveCapacity(n)
    }

    mutating func append(row: UnsafePointer<Double>, weight w: Double, score s: Double, uniform u: Double, index i: Int64, shard k: Int64) {
        rows.append(contentsOf: UnsafeBufferPointer(start: row, count: width))
        weight.append(w); score.append(s); uniform.append(u); index.append(i); shard.append(k)
        count += 1
    }

    mutating func append(contentsOf o: SampleSet) {
        precondition(o.width == width)
        rows += o.rows; weight += o.weight; score += o.score; uniform += o.uniform; index += o.index; shard += o.shard
        count += o.count
    }

    /// Keeps the rows whose flag is set, in order.
    mutating func filter(_ keep: [Bool]) {
        var dst = 0
        for src in 0..<count where keep[src] {
            if dst != src {
                for j in 0..<width { rows[dst * width + j] = rows[src * width + j] }
                weight[dst] = weight[src]; score[dst] = score[src]; uniform[dst] = uniform[src]
                index[dst] = index[src]; shard[dst] = shard[src]
            }
            dst += 1
        }
        rows.removeLast((count - dst) * width)
        weight.removeLast(count - dst); score.removeLast(count - dst); uniform.removeLast(count - dst)
        index.removeLast(count - dst); shard.removeLast(count - dst)
        count = dst
    }

    /// Rows in (shard, index) order: a canonical order for outputs, whatever the merge order.
    func sorted() -> SampleSet {
        // Online samples of one shard are already in stream order: no copy.
        if (1..<max(1, count)).allSatisfy({ (shard[$0 - 1], index[$0 - 1]) < (shard[$0], index[$0]) }) { return self }
        let order = (0..<count).sorted { (shard[$0], index[$0], $0) < (shard[$1], index[$1], $1) }
        var s = SampleSet(width: width)
        s.reserve(count)
        rows.withUnsafeBufferPointer { rp in
            for i in order {
                s.append(row: rp.baseAddress! + i * width, weight: weight[i], score: score[i], uniform: uniform[i], index: index[i], shard: shard[i])
            }
        }
        return s
    }

    func encode(_ w: inout BinaryWriter) {
        w.u64(UInt64(count))
        w.f64s(rows); w.f64s(weight); w.f64s(score); w.f64s(uniform); w.i64s(index); w.i64s(shard)
    }

    static func decode(_ r: inout BinaryReader, width: Int) throws(EngineError) -> SampleSet {
        var s = SampleSet(width: width)
        let n = try r.u64()
        s.rows = try r.f64s(); s.weight = try r.f64s(); s.score = try r.f64s(); s.uniform = try r.f64s()
        s.index = try r.i64s(); s.shard = try r.i64s()
        guard n <= UInt64(s.weight.count), s.rows.count == Int(n) * width,
              [s.weight.count, s.score.count, s.uniform.count, s.index.count, s.shard.count].allSatisfy({ $0 == Int(n) }) else {
            throw .data(r.location, "sensitivity-sample state is inconsistent (sample array lengths)")
        }
        s.count = Int(n)
        return s
    }
}

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

/// Merge-and-reduce sensitivity sampling for any p ≥ 1 (Woodruff & Yasuda, "Sharper Bounds for ℓp
/// Sensitivity Sampling", ICML 2023; Munteanu & Omlor, "Optimal bounds for ℓp sensitivity sampling via ℓ2
/// augmentation", ICML 2024; merge-and-reduce as in Bentley–Saxe / Har-Peled–Mazumdar).
///
/// Leaves of `block_rows` rows (fixed row positions) are sampled by scores s_i = σ_i + τ_i: σ_i an upper
/// bound on the ℓp sensitivity sup_x |ãᵢᵀx|^p/‖Ãx‖_p^p of the row ã_i = w_i^{1/p}·[a_i | y_i] (w the row's
/// multiplicity), τ_i its ℓ2 leverage (Munteanu–Omlor's augmentation). σ_i:
/// - `merge-reduce`: from ℓp Lewis weights (a damped fixed point that contracts for every p, stopped at a
///   log-residual of 0.05; `RowScores.lewisWeights`), the bound `RowScores.sensitivityBounds`: β^{(2−p)/p}·T_i
///   for p ≤ 2, (Σw)^{p/2−1}·T_i for p > 2 — valid for any iterate, ≈ w_i and d^{p/2−1}·w_i at the fixed
///   point. The commonly quoted fallback "d^{p/2−1}·τ_i" for p ≥ 4 is not a valid bound (d = 1, rows (1, t, …, t):
///   σ₁ > τ₁ for t < 1) and is not needed: the damped iteration converges for p ≥ 4 too. Should a Gram
///   matrix fail to factor, the valid m^{max(0,p/2−1)}·τ_i^{p/2} (m = rows in the block) is used.
/// - `root-leverage` (1 ≤ p < 2): σ_i = τ_i^{p/2}, valid because ‖·‖₂ ≤ ‖·‖_p for p ≤ 2; no iteration.
/// Row i is kept with q_i = min(1, F·s_i) and multiplicity w_i/q_i, F the Bernstein factor of the level's
/// ε_ℓ (`epsilon`), or the F that makes Σ q_i = `samples` (water-filling). Two buckets of level ℓ merge into
/// one resampled at level ℓ+1 with ε_{ℓ+1} = 3ε/(π²(ℓ+2)²); the ε_ℓ sum to ε/2, so no level count is needed
/// in advance and every output row has been through reductions whose errors compound to ≤ e^{ε/2} − 1 ≤ ε.
/// Draws: uniform(seed, row's shard, purpose, row's source index, lane = level).
///
/// Sizes: with `epsilon`, a level-ℓ bucket holds up to F(ε_ℓ)·(𝔖 + d) ∝ (ℓ+1)⁴ rows, so reductions above the
/// leaves only start dropping rows after ~17 levels: memory is polylog(n)·(leaf sample) in theory and in
/// practice (n / block_rows)·(leaf sample) — prefer `samples` for a fixed memory budget. With `samples: s`
/// every reduction keeps ≈ s rows (one bucket per level, so ≤ (levels + 1)·s rows held) and the output is
/// one final reduction of the remaining buckets to s; summary.json reports the ε bound these sizes imply.
struct MergeReduceEngine: Equatable, Sendable {
    struct Bucket: Equatable, Sendable {
        var set: SampleSet
        /// Compounded distortion bound of the reductions every row in it went through.
        var epsilonBound: Double
    }

    let width: Int
    let p: Double
    let root: Bool
    let epsilon: Double?
    let samples: Int?
    let leafRows: Int

    var rowsSeen: Int64 = 0
    var weightSum = 0.0
    var leafCount = 0
    var leaf: [Double]
    var leafWeight: [Double]
    var leafIndex: [Int64]
    var buckets: [Bucket?] = []
    // Statistics.
    var reductions: Int64 = 0
    var maxScoreTotal = 0.0
    var maxLewisIterations = 0
    var lewisFallbacks = 0

    init(config: SensitivityConfig, width: Int) {
        self.width = width
        self.p = config.p
        self.root = config.method == .rootLeverage
        self.epsilon = config.epsilon
        self.samples = config.samples
        self.leafRows = max(1, config.blockRows)
        leaf = [Double](repeating: 0, count: leafRows * width)
        leafWeight = [Double](repeating: 0, count: leafRows)
        leafIndex = [Int64](repeating: 0, count: leafRows)
    }

    static func == (a: MergeReduceEngine, b: MergeReduceEngine) -> Bool { a.encoded() == b.encoded() }

    /// (rows seen, rows held in all buckets, NaN) after every leaf: `kept_history.npy`. Cleared by a merge.
    var history = BoundedHistory(width: 3)

    mutating func update(_ batch: RowBatch, seed: UInt64, shard: Int64, purpose: UInt32) throws(EngineError) {
        let d = batch.columns
        for r in 0..<batch.count {
            let base = leafCount * width
            for j in 0..<d { leaf[base + j] = batch.features[r * d + j] }
            if width > d { leaf[base + d] = batch.targets?[r] ?? 0 }
            leafWeight[leafCount] = batch.weight(r)
            leafIndex[leafCount] = batch.indices[r]
            leafCount += 1
            rowsSeen += 1
            weightSum += batch.weight(r)
            if leafCount == leafRows { try closeLeaf(seed: seed, shard: shard, purpose: purpose) }
        }
    }

    mutating func closeLeaf(seed: UInt64, shard: Int64, purpose: UInt32) throws(EngineError) {
        guard leafCount > 0 else { return }
        var set = SampleSet(width: width)
        set.reserve(leafCount)
        leaf.withUnsafeBufferPointer { lp in
            for i in 0..<leafCount {
                set.append(row: lp.baseAddress! + i * width, weight: leafWeight[i], score: 1, uniform: 0, index: leafIndex[i], shard: shard)
            }
        }
        leafCount = 0
        let (reduced, e) = try reduce(set, level: 0, seed: seed, purpose: purpose)
        try insert(Bucket(set: reduced, epsilonBound: e), level: 0, seed: seed, purpose: purpose)
        // No expected size here (keep probabilities are per reduction): NaN, which the report leaves out.
        history.record([Double(rowsSeen), Double(buckets.reduce(0) { $0 + ($1?.set.count ?? 0) }), .nan])
    }

    /// Binary-counter carry: equal-level buckets merge and are resampled one level up.
    mutating func insert(_ b: Bucket, level start: Int, seed: UInt64, purpose: UInt32) throws(EngineError) {
        var bucket = b, level = start
        while level < buckets.count, let existing = buckets[level] {
            buckets[level] = nil
            var union = existing.set
            union.append(contentsOf: bucket.set)
            let (reduced, e) = try reduce(union, level: level + 1, seed: seed, purpose: purpose)
            bucket = Bucket(set: reduced, epsilonBound: Self.compound(max(existing.epsilonBound, bucket.epsilonBound), e))
            level += 1
        }
        while buckets.count <= level { buckets.append(nil) }
        buckets[level] = bucket
    }

    static func compound(_ a: Double, _ b: Double) -> Double { (1 + a) * (1 + b) - 1 }

    /// One reduction at `level`: scores, keep probabilities, draws. Returns the kept rows (multiplicities
    /// updated) and the ε this reduction stands for.
    mutating func reduce(_ set: SampleSet, level: Int, seed: UInt64, purpose: UInt32) throws(EngineError) -> (SampleSet, Double) {
        let m = set.count, n = width
        if m == 0 { return (set, 0) }
        if let s = samples, m <= s { return (set, 0) }
        reductions += 1
        // The rows as they enter the ℓp objective: w^{1/p}·[a | y].
        var x = [Double](repeating: 0, count: m * n)
        for i in 0..<m {
            let sc = pow(set.weight[i], 1 / p)
            for j in 0..<n { x[i * n + j] = sc * set.rows[i * n + j] }
        }
        let tau: [Double]
        do { tau = try RowScores.leverage(x, rows: m, cols: n) } catch {
            throw .data("sensitivity-sample", "leverage scores failed (\(error.description)); non-finite values in the rows?")
        }
        var factor: Double
        if let e = epsilon {
            factor = SensitivityConfig.bernsteinFactor(epsilon: SensitivityConfig.levelEpsilon(e, level: level), width: n)
            // Every row would be kept (q ≥ F·τ ≥ 1): the union is exact, no draws, no error.
            if tau.allSatisfy({ $0 == 0 || factor * $0 >= 1 }) { return (set, 0) }
        } else {
            factor = 0
        }
        var sigma = [Double](repeating: 0, count: m)
        if root {
            for i in 0..<m { sigma[i] = pow(max(0, tau[i]), p / 2) }
        } else if p == 2 {
            sigma = tau
        } else {
            // Any iterate gives a valid bound (`RowScores.sensitivityBounds`); iterating makes it tight. A
            // residual of 0.05 costs a factor ≤ e^{0.05·(2−p)/p} over the fixed point's bound (≈ 4 iterations
            // at p = 1 from the leverage scores).
            do {
                let lw = try RowScores.lewisWeights(x, rows: m, cols: n, p: p, initial: tau, tolerance: 0.05, maxIterations: 50)
                maxLewisIterations = max(maxLewisIterations, lw.iterations)
                sigma = RowScores.sensitivityBounds(lw, p: p)
            } catch {
                // The Gram matrix could not be factored: the bound from ℓ2 leverage alone, valid for the
                // block (|aᵢᵀx|^p ≤ τ_i^{p/2}‖Ax‖₂^p ≤ τ_i^{p/2}·m^{max(0,p/2−1)}‖Ax‖_p^p).
                lewisFallbacks += 1
                let scale = pow(Double(m), max(0, p / 2 - 1))
                for i in 0..<m { sigma[i] = scale * pow(max(0, tau[i]), p / 2) }
            }
        }
        var score = [Double](repeating: 0, count: m)
        var total = 0.0
        for i in 0..<m {
            let v = sigma[i] + tau[i]
            score[i] = v.isFinite && v > 0 ? v : (v.isNaN ? .infinity : 0)
            total += score[i]
        }
        maxScoreTotal = max(maxScoreTotal, total.isFinite ? total : 0)
        if let s = samples { factor = Self.waterFill(score, target: Double(s)) }
        var keep = [Bool](repeating: false, count: m)
        var out = set
        for i in 0..<m {
            let q = score[i] > 0 ? min(1, factor * score[i]) : 0
            let rng = CounterRandom(seed: seed, shard: UInt64(bitPattern: set.shard[i]), purpose: purpose)
            let u = q >= 1 ? 0 : rng.uniform(index: UInt64(bitPattern: set.index[i]), lane: UInt32(level))
            if u < q {
                keep[i] = true
                out.weight[i] = set.weight[i] / q
                out.score[i] = q
            }
        }
        out.filter(keep)
        return (out, SensitivityConfig.epsilon(forFactor: factor, width: n))
    }

    /// The F with Σ_i min(1, F·s_i) = target (∞ when the rows with positive score are at most `target`).
    static func waterFill(_ s: [Double], target: Double) -> Double {
        let positive = s.filter { $0 > 0 }.sorted(by: >)
        if Double(positive.count) <= target { return .infinity }
        // With the k largest capped at 1: F = (target − k)/Σ_{i≥k} s_i, valid when F·s_k ≤ 1 ≤ F·s_{k−1}.
        var tail = positive.reduce(0, +)
        for k in 0..<positive.count {
            let f = (target - Double(k)) / tail
            if f * positive[k] <= 1 { return f }
            tail -= positive[k]
        }
        return .infinity
    }

    /// Merges another shard's buckets level by level (both partial leaves flushed first).
    mutating func merge(_ other: MergeReduceEngine, seed: UInt64, shard: Int64, otherSeed: UInt64, otherShard: Int64, purpose: UInt32) throws(EngineError) {
        var o = other
        try o.closeLeaf(seed: otherSeed, shard: otherShard, purpose: purpose)
        try closeLeaf(seed: seed, shard: shard, purpose: purpose)
        rowsSeen += o.rowsSeen
        weightSum += o.weightSum
        reductions += o.reductions
        maxScoreTotal = max(maxScoreTotal, o.maxScoreTotal)
        maxLewisIterations = max(maxLewisIterations, o.maxLewisIterations)
        lewisFallbacks += o.lewisFallbacks
        for (level, b) in o.buckets.enumerated() {
            if let b { try insert(b, level: level, seed: seed, purpose: purpose) }
        }
        history.clear()
    }

    /// The output: every bucket (partial leaf flushed), unioned; with `samples`, reduced once more to s.
    func result(seed: UInt64, shard: Int64, purpose: UInt32) throws(EngineError) -> (set: SampleSet, epsilonBound: Double, levels: Int, engine: MergeReduceEngine) {
        var e = self
        try e.closeLeaf(seed: seed, shard: shard, purpose: purpose)
        var union = SampleSet(width: width)
        var bound = 0.0
        for b in e.buckets.reversed() {
            if let b { union.append(contentsOf: b.set); bound = max(bound, b.epsilonBound) }
        }
        let levels = e.buckets.count
        if let s = samples, union.count > s {
            let (reduced, eps) = try e.reduce(union, level: levels + 1, seed: seed, purpose: purpose)
            union = reduced
            bound = Self.compound(bound, eps)
        }
        return (union, bound, levels, e)
    }

    func encoded() -> [UInt8] {
        var w = BinaryWriter()
        encode(&w)
        return w.bytes
    }

    func encode(_ w: inout BinaryWriter) {
        w.i64(rowsSeen); w.f64(weightSum)
        w.u64(UInt64(leafCount))
        w.f64s(Array(leaf[0..<leafCount * width])); w.f64s(Array(leafWeight[0..<leafCount])); w.i64s(Array(leafIndex[0..<leafCount]))
        w.u64(UInt64(buckets.count))
        for b in buckets {
            w.bool(b != nil)
            if let b { w.f64(b.epsilonBound); b.set.encode(&w) }
        }
        w.i64(reductions); w.f64(maxScoreTotal); w.u64(UInt64(maxLewisIterations)); w.u64(UInt64(lewisFallbacks))
        history.encode(&w)
    }

    mutating func decode(_ r: inout BinaryReader) throws(EngineError) {
        rowsSeen = try r.i64(); weightSum = try r.f64()
        let lc = try r.u64()
        let lx = try r.f64s(), lw = try r.f64s(), li = try r.i64s()
        guard lc < UInt64(leafRows), lx.count == Int(lc) * width, lw.count == Int(lc), li.count == Int(lc), rowsSeen >= 0 else {
            throw .data(r.location, "sensitivity-sample merge-reduce state is inconsistent (leaf)")
        }
        leafCount = Int(lc)
        for i in 0..<lx.count { leaf[i] = lx[i] }
        for i in 0..<lw.count { leafWeight[i] = lw[i]; leafIndex[i] = li[i] }
        let nb = try r.u64()
        guard nb <= 128 else { throw .data(r.location, "sensitivity-sample state claims \(nb) levels") }
        buckets = []
        for _ in 0..<nb {
            if try r.bool() {
                let e = try r.f64()
                buckets.append(Bucket(set: try SampleSet.decode(&r, width: width), epsilonBound: e))
            } else {
                buckets.append(nil)
            }
        }
        reductions = try r.i64(); maxScoreTotal = try r.f64()
        let it = try r.u64(), fb = try r.u64()
        guard it < 1 << 20, fb < 1 << 40 else { throw .data(r.location, "sensitivity-sample merge-reduce state is inconsistent (counters)") }
        maxLewisIterations = Int(it); lewisFallbacks = Int(fb)
        try history.decode(&r, what: "sensitivity-sample")
    }
}

/// `sensitivity-sample`: a weighted coreset S — rows of [A | y] with multiplicities — such that
/// ‖SAx‖_p^p ≈ ‖Ax‖_p^p for every x, in one pass and memory bounded by the sample (docs/operators.md,
/// "Coresets"). A sampler: at the end of the stream its rows go out as weighted row batches to the
/// operators that read it (`input: <id>`), e.g. `gram` with `solve: ridge` or `halpern-solver`.
///
/// Methods (details and guarantees on each engine):
/// - `online` (p = 2, the default there): online ridge-leverage sampling, `OnlineEngine`. Guarantee, with
///   probability ≥ 1 − ρ (ρ = 0.1): (1−ε)AᵀA − δI ⪯ SᵀS ⪯ (1+ε)AᵀA + δI for [A | y], size about
///   c·(1+ε)·log₂det(I + AᵀA/δ) (≈ O(d log n / ε²) for a fixed ridge factor). Cost per row: O(d²) in one
///   triangular multiply per block (float32 on f32 sources), plus O(d³) per block.
/// - `merge-reduce` (any p ≥ 1, the default for p ≠ 2) and `root-leverage` (1 ≤ p < 2):
///   `MergeReduceEngine`. Cost per row: O(d²) per Lewis iteration (≈ 10–20 iterations) per level.
///
/// Output: `rows` (raw rows, features only), `targets`, `weights` (multiplicities w/q: Σ weights is an
/// unbiased estimate of the source's weight sum over its nonzero rows), `indices` (source positions,
/// local to the shard) and, in shard mode, `shard`; rows in (shard, index) order. Rows that are exactly zero
/// in [A | y] score 0 and are dropped whenever a row is sampled (they carry no ℓp mass); a stream that fits
/// in the sample comes out whole, weights 1. Mergeable: shard coresets are unioned, then reduced
/// (online: by exact thinning when `samples` is set; merge-reduce: bucket by bucket).
/// Not promised: a fixed output size (it is random around the target), or accuracy beyond the ridge in
/// directions carrying less than δ of energy.
public struct SensitivitySampleOperator: MergeableOperator, Equatable {
    public static let stateVersion: UInt16 = 3   // 2: kept-rows history; 3: merged size-bound potential

    public let config: SensitivityConfig
    public let columns: Int
    public let hasTarget: Bool
    let seed: UInt64
    let shard: Int64
    let purpose: UInt32
    var sharded: Bool
    var online: OnlineEngine?
    var mergeReduce: MergeReduceEngine?

    public var width: Int { columns + (hasTarget ? 1 : 0) }

    public init(config: SensitivityConfig, context ctx: OperatorContext, sharded: Bool = false) {
        self.config = config
        self.columns = ctx.shape.columns
        self.hasTarget = ctx.shape.hasTarget
        self.seed = ctx.seed
        self.shard = ctx.shard
        self.purpose = ctx.purpose
        self.sharded = sharded
        let w = ctx.shape.columns + (ctx.shape.hasTarget ? 1 : 0)
        if config.method == .online { online = OnlineEngine(config: config, width: w, float32Scores: ctx.shape.float32Values) } else { mergeReduce = MergeReduceEngine(config: config, width: w) }
    }

    public static func == (a: SensitivitySampleOperator, b: SensitivitySampleOperator) -> Bool {
        a.config == b.config && a.encodeState() == b.encodeState()
    }

    var rng: CounterRandom { CounterRandom(seed: seed, shard: UInt64(bitPattern: shard), purpose: purpose) }

    public mutating func update(_ batch: RowBatch) throws(EngineError) {
        guard batch.columns == columns else {
            throw .internal("sensitivity-sample", "batch has \(batch.columns) columns, expected \(columns)")
        }
        if online != nil { try online!.update(batch, rng: rng, shard: shard) } else { try mergeReduce!.update(batch, seed: seed, shard: shard, purpose: purpose) }
    }

    /// The online engine reads float32 rows when a batch offers them (the same values, one widening fewer).
    public var readsFloat32Rows: Bool { online != nil }

    var rowsSeen: Int64 { online?.rowsSeen ?? mergeReduce!.rowsSeen }
    var weightSum: Double { online?.weightSum ?? mergeReduce!.weightSum }

    public func currentSummary() -> [(String, JSON)] {
        var size = 0
        if let o = online { size = o.kept.count } else if let m = mergeReduce { size = m.buckets.reduce(0) { $0 + ($1?.set.count ?? 0) } }
        return [("rows", .int(rowsSeen)), ("weight_sum", .double(weightSum)), ("p", .double(config.p)),
                ("method", .string(config.method.rawValue)), ("size", .int(Int64(size)))]
    }

    /// The sample and its summary, without changing the operator (its state stays mergeable as it was).
    public mutating func finish() throws(EngineError) -> OperatorOutput {
        var set: SampleSet
        var weights: [Double]
        var summary: [(String, JSON)] = [("rows", .int(rowsSeen)), ("weight_sum", .double(weightSum)),
                                         ("p", .double(config.p)), ("method", .string(config.method.rawValue))]
        var extra: [(String, JSON)] = []
        var history: NamedArray?
        var warnings: [OperatorWarning] = []
        let n = width
        if var o = online {
            try o.closeBlock(rng: rng, shard: shard)
            history = o.history.array("kept_history")
            let sorted = o.kept.sorted()
            var oo = o
            oo.kept = sorted
            weights = (0..<sorted.count).map { oo.outputWeight($0) }
            set = sorted
            // ε itself while c is the one ε set; the ε the current c stands for after thinning (samples).
            let epsBound = config.epsilon != nil && o.thinned == 0 ? config.epsilon! : SensitivityConfig.epsilon(forFactor: o.c / 2, width: n)
            extra = [
                ("bound", .string("online ridge leverage (Cohen–Musco–Pachocki, blocks): with probability ≥ 1 − ρ, (1−ε)AᵀA − δI ⪯ SᵀS ⪯ (1+ε)AᵀA + δI on [A | y]; keep q = min(1, c·l), l = min(1, (1+ε)·w·aᵀM⁻¹a), c = 2(1 + ε/3)·ln(2d/ρ)/ε²")),
                ("epsilon", config.epsilon.map { .double($0) } ?? .null),
                ("epsilon_bound", .double(epsBound)),
                ("failure_probability", .double(SensitivityConfig.failureProbability)),
                ("c", o.c.isFinite ? .double(o.c) : .null),
                ("ridge", .double(o.ridgeBound)),
                ("ridge_diagonal", .array(o.ridgeMax.map { .double($0) })),
                ("ridge_mode", .string(config.ridge == nil ? "auto: \(JSON.format(SensitivityConfig.autoRidge)) × running column mean of a_j² (diagonal)" : "fixed δI")),
                ("expected_size", .double(o.expectedSize)),
                ("size_bound", .double(o.sizeBound())),
                ("blocks", .int(o.blocks)),
                ("block_rows", .int(Int64(o.blockRows))),
                ("thinnings", .int(Int64(o.thinned))),
            ]
            if o.thinned == 0 {
                extra += [("weight_sum_sd", .double(o.weightVariance.squareRoot())), ("weight_max_term", .double(o.maxTerm))]
            }
            let bound = o.sizeBound()
            if Double(sorted.count) > bound {
                warnings.append(OperatorWarning("the coreset kept \(sorted.count) rows, above its size bound \(Int(bound.rounded(.up))) (an event of probability ≤ ρ = \(JSON.format(SensitivityConfig.failureProbability)), or columns with extreme scales)",
                                                hint: "the guarantee still holds; a larger epsilon or samples: s caps the size"))
            }
        } else {
            let r = try mergeReduce!.result(seed: seed, shard: shard, purpose: purpose)
            history = r.engine.history.array("kept_history")
            set = r.set.sorted()
            weights = set.weight
            let name = config.method == .rootLeverage ? "root leverage σ_i = τ_i^{p/2}" : "ℓp Lewis weights σ_i = d^{max(0,p/2−1)}·w_i"
            extra = [
                ("bound", .string("merge-reduce ℓp sensitivity sampling (Woodruff–Yasuda; ℓ2-augmented, Munteanu–Omlor): (1 ± ε)‖Ax‖_p^p for all x on [A | y] with probability ≥ 1 − ρ per reduction; keep q = min(1, F·(σ + τ)), \(name), F = (1 + ε_ℓ/3)·ln(2d/ρ)/ε_ℓ², ε_ℓ = 3ε/(π²(ℓ+1)²); rigorous for p = 2, calibrated by tests otherwise")),
                ("epsilon", config.epsilon.map { .double($0) } ?? .null),
                ("epsilon_bound", .double(r.epsilonBound)),
                ("failure_probability", .double(SensitivityConfig.failureProbability)),
                ("leaf_rows", .int(Int64(mergeReduce!.leafRows))),
                ("levels", .int(Int64(r.levels))),
                ("reductions", .int(r.engine.reductions)),
                ("max_score_total", .double(r.engine.maxScoreTotal)),
                ("lewis_iterations", .int(Int64(r.engine.maxLewisIterations))),
                ("lewis_fallbacks", .int(Int64(r.engine.lewisFallbacks))),
            ]
        }
        let s = set.count
        var sampleWeight = 0.0
        for v in weights { sampleWeight += v }
        summary += [("size", .int(Int64(s))), ("sample_weight_sum", .double(sampleWeight))] + extra
        // Arrays: features only in `rows`; the target column separately.
        var rows = [Double](repeating: 0, count: s * columns)
        var targets = [Double](repeating: 0, count: hasTarget ? s : 0)
        for i in 0..<s {
            for j in 0..<columns { rows[i * columns + j] = set.rows[i * n + j] }
            if hasTarget { targets[i] = set.rows[i * n + columns] }
        }
        var arrays = [NamedArray("rows", shape: [s, columns], float64: rows)]
        if hasTarget { arrays.append(NamedArray("targets", shape: [s], float64: targets)) }
        arrays.append(NamedArray("weights", shape: [s], float64: weights))
        arrays.append(NamedArray("indices", shape: [s], int64: set.index))
        if sharded { arrays.append(NamedArray("shard", shape: [s], int64: set.shard)) }
        if let history { arrays.append(history) }
        // The emitted stream: weighted batches of at most 8192 rows.
        var emitted: [RowBatch] = []
        var start = 0
        while start < s {
            let b = min(8192, s - start)
            var batch = RowBatch(columns: columns, capacity: b, hasTarget: hasTarget, hasWeight: true)
            if sharded { batch.shards = [Int64](repeating: 0, count: b) }
            for i in start..<start + b {
                let slot = batch.appendSlot(index: set.index[i])
                for j in 0..<columns { batch.features[slot * columns + j] = rows[i * columns + j] }
                if hasTarget { batch.targets![slot] = targets[i] }
                batch.weights![slot] = weights[i]
                if sharded { batch.shards![slot] = set.shard[i] }
            }
            emitted.append(batch)
            start += b
        }
        return OperatorOutput(arrays: arrays, summary: summary, emittedRows: emitted, warnings: warnings)
    }

    public mutating func merge(_ other: SensitivitySampleOperator) throws(EngineError) {
        guard other.config == config, other.columns == columns, other.hasTarget == hasTarget else {
            throw .usage("merge", "sensitivity-sample states differ in parameters or shape")
        }
        sharded = sharded || other.sharded
        if var o = other.online, online != nil {
            try o.closeBlock(rng: other.rng, shard: other.shard)
            try online!.closeBlock(rng: rng, shard: shard)
            online!.merge(o)
        } else if let o = other.mergeReduce, mergeReduce != nil {
            try mergeReduce!.merge(o, seed: seed, shard: shard, otherSeed: other.seed, otherShard: other.shard, purpose: purpose)
        } else {
            throw .usage("merge", "sensitivity-sample states use different methods")
        }
    }

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

extension SensitivitySampleOperator: SelfDescribingOperator {
    public static let info = OperatorInfo(
        kind: "sensitivity-sample",
        summary: "One-pass weighted coreset of rows (with multiplicities) preserving ‖Ax‖_p^p for all x: online ridge-leverage sampling (p = 2) or merge-reduce ℓp sensitivity sampling (any p ≥ 1). Emits its rows to downstream operators. Mergeable.",
        parameters: [
            ParameterSpec("p", .double(min: 1, max: 64, openMin: false), default: .double(2),
                          doc: "the ℓp norm preserved (rows of [A | y] when there is a target)"),
            ParameterSpec("epsilon", .double(min: 0, max: 1, openMin: true),
                          doc: "target distortion ε; the size follows from the stated bound (give epsilon or samples)"),
            ParameterSpec("samples", .int(min: 1, max: 1 << 30),
                          doc: "target sample size instead of epsilon (summary.json reports the ε it implies)"),
            ParameterSpec("ridge", .double(min: 0, max: .greatestFiniteMagnitude, openMin: true),
                          doc: "online: δ in M = δI + Σ kept a aᵀ/q; default: 1e-3 × the running mean of each column's square"),
            ParameterSpec("method", .choice(["auto", "online", "merge-reduce", "root-leverage"]), default: .string("auto"),
                          doc: "auto: online for p = 2, merge-reduce otherwise; root-leverage (q ∝ τ^{p/2}) for 1 ≤ p < 2"),
            ParameterSpec("block_rows", .intOrAuto(min: 1, max: 1 << 24), default: .string("auto"),
                          doc: "online: internal block (fixed row positions; auto 1024); merge-reduce: leaf size (auto: 4 × one reduction's output, ≥ 4096)"),
        ],
        outputs: ["rows", "targets (with a target)", "weights", "indices", "shard (with --shard)",
                  "kept_history (rows seen, rows kept, expected size (online); ≤ 1025 rows)"],
        stateVersion: stateVersion, emitsRows: true, report: .coreset,
        examples: [OperatorExample("sensitivity-sample-online", [("samples", .int(60)), ("block_rows", .int(50))]),
                   OperatorExample("sensitivity-sample-root-leverage", [("p", .double(1.5)), ("method", .string("root-leverage")),
                                                                        ("samples", .int(60)), ("block_rows", .int(128))])],
        check: { p, _ in SensitivityConfig.problem(p) })

    public init(params p: ParamValues, context ctx: OperatorContext) throws(EngineError) {
        let c = try SensitivityConfig.resolve(p, width: ctx.shape.columns + (ctx.shape.hasTarget ? 1 : 0))
        self.init(config: c, context: ctx, sharded: ctx.sharded)
    }
    public init(restoring state: [UInt8], params p: ParamValues, context ctx: OperatorContext, location: String) throws(EngineError) {
        let c = try SensitivityConfig.resolve(p, width: ctx.shape.columns + (ctx.shape.hasTarget ? 1 : 0))
        try self.init(config: c, context: ctx, state: state, location: location)
    }
}
