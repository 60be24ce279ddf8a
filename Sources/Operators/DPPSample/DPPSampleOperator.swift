import EngineCore
import LinearAlgebra

/// Weighted least-squares sampling of the stream's rows by leverage: i.i.d. optimal sampling, the projection
/// DPP, volume-rescaled sampling and repeated projection samples — Nouy & Michel, "Weighted least-squares
/// approximation with determinantal point processes and generalized volume sampling" (arXiv 2312.14057,
/// §2–4); Dereziński, Warmuth & Hsu, "Unbiased estimators for random design regression" (volume-rescaled
/// sampling); the chain-rule sampler of Hough, Krishnapur, Peres & Virág (2006, Alg. 18) as in DPPy.
///
/// Rows are feature vectors φ_i = φ(x_i) ∈ ℝᵐ of N candidate points with multiplicities ω_i (input weights;
/// 1 when absent) and, optionally, targets y_i. With Q an orthonormal basis of the column space of Ω^{1/2}Φ
/// (numerical rank r, `rank_used`), the leverages are ℓ_i = ‖q_i‖² = ω_i·φ_iᵀ(ΦᵀΩΦ)⁺φ_i, Σℓ_i = r, and the
/// sampling density is ρ_i = ℓ_i / r. Output weights are multiplicities w = ω_i·r/(n·ℓ_i) = ω_i/(n·ρ_i) for a
/// sample of n rows (projection: ω_i/ℓ_i, the inverse inclusion probability), so Σw estimates Σω, and
/// `coefficients` ĉ minimise Σ_k w_k (y_k − φ_kᵀc)² over the sample; `residual` = Σ_i ω_i (y_i − φ_iᵀĉ)² over
/// all candidates, `optimal_residual` the same for the full weighted least-squares solution c*.
/// Under `--shard k`, and whenever the rows arrive tagged with their shard (downstream of a merged
/// `sensitivity-sample` under `rowflow merge`), `shard` gives each sampled row's shard, from the row store;
/// `indices` are local to that shard (docs/commands.md).
///
/// **Guarantees** (exact arithmetic, relative to the candidate measure Σω_i δ_{x_i}): `projection` is a
/// projection DPP — P(S) = det(Q_S)², inclusion probabilities K_ii = ℓ_i, pairs det K_{ij}; always r distinct
/// rows, every row with ℓ_i = 1 included; E[residual] = (r + 1)·optimal_residual (volume sampling).
/// `volume-rescaled` (n ≥ r; the r DPP rows plus n − r i.i.d. rows are exactly a sample of density
/// ∝ det(Σ_k w_k φ_kφ_kᵀ)·Πρ, Dereziński–Warmuth–Hsu): ĉ is unbiased, E[ĉ] = c*, and E[residual] ≤
/// C·optimal_residual once n ≳ r log r (Nouy & Michel, quasi-optimality in expectation).
/// `iid`: with n ≳ r log r the sample Gram is well conditioned with high probability,
/// but the mean residual has a heavy tail at small n (rare near-singular samples) — which volume rescaling
/// removes. `repeated` pools s independent DPP samples. When the rows come from a coreset (e.g.
/// `sensitivity-sample` upstream), the weights are the coreset's multiplicities and every guarantee is
/// relative to the coreset's measure, not the original stream's.
///
/// **Algorithm.** While the stream runs: a streamed Householder QR (`StreamingQR`, blocks of fixed row
/// positions) of [Ω^{1/2}Φ, Ω^{1/2}y] — the Gram ΦᵀΩΦ = RᵀR in factored form, never squared, and
/// optimal_residual = R_{m,m}² for free. After the stream (the engine's row store, one `step` each):
/// 1. basis: SVD of R (rank r by the relative cutoff), Q₁ = Ω^{1/2}Φ·V_rΣ_r⁻¹; one pass over the store forms
///    QᵀQ per block of b candidate rows and their sum G; Q = Q₁·G^{-1/2} (a second orthogonalisation, so Q is
///    orthonormal to rounding even at κ(Φ) = 1e8 — DPPy issues #61/#70/#80 came from a kernel that was not
///    a projection to rounding); the per-block Grams C_B = Q_BᵀQ_B are kept (the "leverage cache").
/// 2. sampling: the chain rule picks a row j ∝ its residual norm² ‖q_j − E Eᵀq_j‖², then E gains the unit
///    residual of q_j (Gram–Schmidt, twice). The residual mass of every block is tr(C_B) − Σ_s e_sᵀC_Be_s, so a
///    pick needs one gemv over the cache (N·r²/b flops) to choose a block and one block of b rows from the
///    store (b·m·r flops) to choose within it — never a pass over all rows. Masses are clamped at 0, picks
///    renormalised by the actual sums, rows already taken and residuals at rounding level (≤ (8tε)²‖q‖²)
///    excluded, so probabilities never fail to "sum to 1". i.i.d. draws use the same two-level inverse CDF.
///    Every uniform is addressed by (seed, shard, purpose, part, pick/draw, role, attempt): counter-based.
/// 3. least squares on the sample in Q coordinates (rows q_k/√ℓ_k, well conditioned however Φ is), by
///    dgelsd with numpy's rcond = max(n, r)·ε, ĉ = T a; then one pass for `residual`.
///
/// **Cost.** Stream: ≈ 2(m+1)² flops per row (QR). Basis: one pass, O(N·m·r + N·r²). Per projection sample:
/// r picks × (N·r²/b + b·m·r) with b = max(32, ⌈√(N·r/m)⌉, ⌈8N·r²/64 MiB⌉) — ≈ 2r·√(N·m·r³) flops;
/// i.i.d.: one partial pass. Final: one pass, O(N·m).
/// **Memory.** RAM: (m+1)² + one QR block (≤ 4096 rows) while streaming; after it the leverage cache
/// (N/b)·r² doubles (≤ 64 MiB by the choice of b), one block of b rows, and the sample. On disk: only the
/// engine's row store (N·(m+4) doubles under `<out>/rowstore/` once it spills past `rowstore.memory_mb`) —
/// Q itself is never stored: each block's rows of Q are recomputed from the store with one dgemm.
/// **Not promised.** Samples are exact for the computed Q; Q is exact to rounding for κ ≲ 1/(max(N, m)·ε)
/// (the default cutoff): beyond it, directions are dropped and reported through `rank_used`. The cache and
/// b depend on N and r, so samples for the same seed change when rows are added. Not mergeable.
public struct DPPSampleOperator: IterativeOperator {
    /// 2: the `sharded` flag and the sample's shard column.
    public static let stateVersion: UInt16 = 2
    /// Rows per streamed QR block: a function of the width only.
    public static func qrBlockRows(columns n: Int) -> Int { max(2 * n, min(4096, (1 << 19) / max(1, n))) }
    /// Bytes the leverage cache may take (it sets the candidate block size b for large N).
    public static let cacheBudgetBytes = 64 << 20

    /// Candidate rows per block of the leverage cache: balances the cache sweep (N·r²/b per pick) against
    /// loading one block (b·m·r), and keeps the cache within `cacheBudgetBytes`.
    public static func cacheBlockRows(candidates n: Int, rank r: Int, columns m: Int) -> Int {
        guard n > 0, r > 0 else { return 1 }
        let balance = (Double(n) * Double(r) / Double(max(1, m))).squareRoot().rounded(.up)
        let budget = (Double(n) * 8 * Double(r) * Double(r) / Double(cacheBudgetBytes)).rounded(.up)
        return min(n, max(32, Int(balance), Int(budget)))
    }

    public let config: DPPSampleConfig
    public let columns: Int
    public let hasTarget: Bool
    /// The run's shard: the shard of rows that arrive without one (straight from the source).
    let shard: Int64
    /// Outputs carry a `shard` column: the run has `--shard`, or rows arrived tagged with their shard (a
    /// merged sampler upstream, under `rowflow merge`).
    var sharded: Bool
    /// Counter-based draws; a test may swap the seed of a copy taken after the basis step.
    var rng: CounterRandom
    let qrColumns: Int
    let qrBlockRows: Int

    public internal(set) var rows: Int64 = 0
    var weightSum = 0.0
    var qr: StreamingQR
    /// The open QR block: √ω-scaled rows (features, then the target), `blockCount` of them.
    var block: [Double]
    var blockCount = 0

    /// Steps completed: 0 while streaming; 1 after the basis; 1 + k after k sampling parts; then the final.
    var stepsDone = 0
    var basis: Basis?
    /// Completed parts' picks: part number and row-store position, in pick (or draw) order.
    var pickParts: [Int64] = []
    var pickPositions: [Int64] = []
    var result: SampleResult?
    /// Derived from the basis and the store; not part of the state (rebuilt identically after a restore).
    var cache: LeverageCache?

    struct Basis: Equatable {
        var candidates: Int
        /// Singular values of Ω^{1/2}Φ (m, descending).
        var sigma: [Double]
        /// The relative cutoff used.
        var tolerance: Double
        var rank1: Int
        /// m × rank1: V_r Σ_r⁻¹.
        var t1: [Double]
        var rank: Int
        /// rank1 × rank: G^{-1/2} of the first basis' Gram.
        var s: [Double]
        /// m × rank = t1·s, so q_i = √ω_i·φ_iᵀT. Derived.
        var t: [Double]
        var blockRows: Int
        var optimalResidual: Double?
        /// Σ ω y² (with a target).
        var targetNorm: Double?
        var leverageSum: Double
    }

    struct SampleResult: Equatable {
        var indices: [Int64]
        var weights: [Double]
        var rows: [Double]
        var targets: [Double]
        var coefficients: [Double]
        var residual: Double
        var distinct: Int
        /// Each sampled row's shard (as stored with the row).
        var shards: [Int64]
    }

    /// Per-block Grams C_B = Q_BᵀQ_B (blocks × r × r, full) and their traces.
    struct LeverageCache {
        var grams: [Double]
        var mass: [Double]
    }

    public init(config: DPPSampleConfig, columns: Int, hasTarget: Bool, context: OperatorContext) {
        self.config = config
        self.columns = columns
        self.hasTarget = hasTarget
        self.shard = context.shard
        self.sharded = context.sharded
        self.rng = CounterRandom(seed: context.seed, shard: UInt64(bitPattern: context.shard), purpose: context.purpose)
        qrColumns = columns + (hasTarget ? 1 : 0)
        qrBlockRows = DPPSampleOperator.qrBlockRows(columns: qrColumns)
        qr = StreamingQR(columns: qrColumns)
        block = [Double](repeating: 0, count: qrBlockRows * qrColumns)
    }

    // MARK: stream

    public mutating func update(_ batch: RowBatch) throws(EngineError) {
        guard stepsDone == 0 else { throw .internal("dpp-sample", "rows arrived after the stream ended") }
        if batch.shards != nil { sharded = true }
        let m = columns, n = qrColumns
        for src in 0..<batch.count {
            let w = batch.weight(src)
            guard w >= 0, w.isFinite else {
                throw .data("dpp-sample: row \(batch.indices[src] + 1)", "weight \(w) is not a finite multiplicity ≥ 0")
            }
            let s = w.squareRoot()
            let dst = blockCount * n
            for j in 0..<m { block[dst + j] = s * batch.features[src * m + j] }
            if hasTarget { block[dst + m] = s * (batch.targets?[src] ?? 0) }
            weightSum += w
            rows += 1
            blockCount += 1
            if blockCount == qrBlockRows { try closeBlock() }
        }
    }

    mutating func closeBlock() throws(EngineError) {
        guard blockCount > 0 else { return }
        do {
            try block.withUnsafeBufferPointer { (p) throws(LinearAlgebraError) in try qr.absorb(p.baseAddress!, rows: blockCount) }
        } catch { throw .internal("dpp-sample", error.description) }
        blockCount = 0
    }

    // MARK: steps

    public mutating func step(_ store: RowStoreReader) throws(EngineError) -> StepResult {
        let parts = config.parts
        if stepsDone == 0 {
            try computeBasis(store)
        } else if stepsDone <= parts {
            try samplePart(stepsDone - 1, store)
        } else if stepsDone == parts + 1 {
            try finalize(store)
            stepsDone += 1
            return .done
        } else {
            return .done
        }
        stepsDone += 1
        return .more
    }

    /// Step 1: rank and T from the streamed R, the second orthogonalisation and the leverage cache.
    mutating func computeBasis(_ store: RowStoreReader) throws(EngineError) {
        try closeBlock()
        let m = columns, n = qrColumns
        let count = store.count
        guard Int64(count) == rows, store.columns == m else {
            throw .internal("dpp-sample", "the row store holds \(count) rows of \(store.columns) columns, the operator saw \(rows) of \(m)")
        }
        let r = qr.r
        guard r.allSatisfy({ $0.isFinite }) else {
            throw .data("dpp-sample", "non-finite values in the rows (the QR factor is not finite)",
                        hint: "remove rows with nan/inf (source.allow_nonfinite lets them through)")
        }
        var rPhi = Matrix(rows: m, cols: m)
        for i in 0..<m { for j in i..<m { rPhi[i, j] = r[i * n + j] } }
        var optimal: Double?, yy: Double?
        if hasTarget {
            optimal = r[m * n + m] * r[m * n + m]
            // The target column's norm is kept by the orthogonal transformations: Σω y² = ‖R[:, m]‖².
            var s = 0.0
            for i in 0...m { s += r[i * n + m] * r[i * n + m] }
            yy = s
        }
        let sigma: [Double], vt: Matrix
        do {
            let f = try LAPACK.svd(rPhi)
            sigma = f.s; vt = f.vt
        } catch { throw .internal("dpp-sample", error.description) }
        let tol = config.rankTolerance ?? Double(max(count, m)) * Double.ulpOfOne
        let top = sigma.first ?? 0
        var rank1 = 0
        while rank1 < m && top > 0 && sigma[rank1] > tol * top { rank1 += 1 }
        var t1 = [Double](repeating: 0, count: m * rank1)
        for j in 0..<m { for k in 0..<rank1 { t1[j * rank1 + k] = vt[k, j] / sigma[k] } }
        let b = DPPSampleOperator.cacheBlockRows(candidates: count, rank: rank1, columns: m)
        var basis = Basis(candidates: count, sigma: sigma, tolerance: tol, rank1: rank1, t1: t1, rank: 0, s: [],
                          t: [], blockRows: b, optimalResidual: optimal, targetNorm: yy, leverageSum: 0)
        guard rank1 > 0 else {
            self.basis = basis
            cache = LeverageCache(grams: [], mass: [])
            return
        }
        var (grams1, g) = firstGrams(store, basis)
        // Q₁ᵀQ₁ = I up to ~κ·ε; its eigenvalues far from 1 would mean the first pass lost those directions
        // (only with a rank tolerance far below the default): they are dropped like a rank deficiency.
        g.symmetrizeFromUpper()
        let eig: (values: [Double], vectors: Matrix)
        do { eig = try LAPACK.symmetricEigen(g) } catch { throw .internal("dpp-sample", error.description) }
        let lmax = eig.values.first ?? 0
        var rank = 0
        while rank < rank1 && eig.values[rank] > 1e-3 * lmax && eig.values[rank] > 0 { rank += 1 }
        var s = [Double](repeating: 0, count: rank1 * rank)
        for k in 0..<rank {
            let scale = 1 / eig.values[k].squareRoot()
            for i in 0..<rank1 { s[i * rank + k] = eig.vectors[k, i] * scale }
        }
        basis.rank = rank
        basis.s = s
        basis.t = DPPSampleOperator.product(t1, s, m: m, k: rank1, n: rank)
        let c = DPPSampleOperator.transform(&grams1, s, rank1: rank1, rank: rank)
        basis.leverageSum = c.mass.reduce(0, +)
        self.basis = basis
        cache = c
    }

    /// One pass: per block of `blockRows` candidates, C1_B = Q1_BᵀQ1_B (upper, then full) with Q1 = √ω·Φ·T1;
    /// and G = Σ C1_B (upper triangle).
    func firstGrams(_ store: RowStoreReader, _ basis: Basis) -> ([Double], Matrix) {
        let r1 = basis.rank1, b = basis.blockRows, count = basis.candidates
        let blocks = (count + b - 1) / b
        var grams = [Double](repeating: 0, count: blocks * r1 * r1)
        var g = Matrix(rows: r1, cols: r1)
        var scratch = BlockScratch(columns: columns, hasTarget: hasTarget, blockRows: b, rank: r1)
        for blk in 0..<blocks {
            let start = blk * b, cnt = min(b, count - start)
            scratch.load(store, start: start, count: cnt, t: basis.t1, rank: r1)
            grams.withUnsafeMutableBufferPointer { gp in
                scratch.q.withUnsafeBufferPointer { qp in
                    BlockKernels.syrkUpper(qp.baseAddress!, rows: cnt, n: r1, into: gp.baseAddress! + blk * r1 * r1)
                }
            }
            let off = blk * r1 * r1
            for i in 0..<r1 {
                for j in i..<r1 {
                    g.storage[i * r1 + j] += grams[off + i * r1 + j]
                    grams[off + j * r1 + i] = grams[off + i * r1 + j]
                }
            }
        }
        return (grams, g)
    }

    /// C_B = Sᵀ C1_B S for every block, and the traces.
    static func transform(_ grams1: inout [Double], _ s: [Double], rank1 r1: Int, rank r: Int) -> LeverageCache {
        let blocks = r1 == 0 ? 0 : grams1.count / (r1 * r1)
        var grams = [Double](repeating: 0, count: blocks * r * r)
        var mass = [Double](repeating: 0, count: blocks)
        var tmp = [Double](repeating: 0, count: r1 * r)
        s.withUnsafeBufferPointer { sp in
            grams1.withUnsafeBufferPointer { g1 in
                grams.withUnsafeMutableBufferPointer { gp in
                    tmp.withUnsafeMutableBufferPointer { tp in
                        for blk in 0..<blocks {
                            BlockKernels.gemm(m: r1, n: r, k: r1, g1.baseAddress! + blk * r1 * r1, lda: r1, sp.baseAddress!, ldb: r,
                                              tp.baseAddress!, ldc: r)
                            BlockKernels.gemm(transposeA: true, m: r, n: r, k: r1, sp.baseAddress!, lda: r, tp.baseAddress!, ldb: r,
                                              gp.baseAddress! + blk * r * r, ldc: r)
                            var tr = 0.0
                            for i in 0..<r { tr += gp[blk * r * r + i * r + i] }
                            mass[blk] = tr
                        }
                    }
                }
            }
        }
        return LeverageCache(grams: grams, mass: mass)
    }

    static func product(_ a: [Double], _ b: [Double], m: Int, k: Int, n: Int) -> [Double] {
        var c = [Double](repeating: 0, count: m * n)
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    BlockKernels.gemm(m: m, n: n, k: k, ap.baseAddress!, lda: k, bp.baseAddress!, ldb: n, cp.baseAddress!, ldc: n)
                }
            }
        }
        return c
    }

    /// The leverage cache, rebuilt from the store when this operator was restored from a state.
    mutating func ensureCache(_ store: RowStoreReader) {
        guard cache == nil, let basis else { return }
        guard basis.rank1 > 0 else { cache = LeverageCache(grams: [], mass: []); return }
        var (grams1, _) = firstGrams(store, basis)
        cache = DPPSampleOperator.transform(&grams1, basis.s, rank1: basis.rank1, rank: basis.rank)
    }

    /// The row store must be the one the basis was computed on (a restored state with another store is refused).
    func checkStore(_ store: RowStoreReader, _ basis: Basis) throws(EngineError) {
        guard store.count == basis.candidates, store.columns == columns, store.hasTarget == hasTarget else {
            throw .data("dpp-sample", "the row store holds \(store.count) rows, the operator's state was taken over \(basis.candidates)",
                        hint: "resume with the out directory (row store) the checkpoint was written with")
        }
    }

    /// Sampling step k (0-based).
    mutating func samplePart(_ part: Int, _ store: RowStoreReader) throws(EngineError) {
        guard let basis else { throw .internal("dpp-sample", "sampling before the basis step") }
        try checkStore(store, basis)
        ensureCache(store)
        let positions: [Int64]
        if basis.rank == 0 {
            positions = []
        } else {
            switch config.mode {
            case .projection, .repeated:
                positions = try sampleProjection(part: part, store)
            case .volumeRescaled:
                positions = part == 0 ? try sampleProjection(part: 0, store)
                                      : try sampleIID(part: 1, draws: max(0, config.samples - basis.rank), store)
            case .iid:
                positions = try sampleIID(part: 0, draws: config.samples, store)
            }
        }
        pickPositions += positions
        pickParts += [Int64](repeating: Int64(part), count: positions.count)
    }

    // Roles of the uniforms (the lane's high half), so no two uses share a draw.
    static let roleDPPBlock: UInt32 = 1, roleDPPRow: UInt32 = 2, roleIIDBlock: UInt32 = 3, roleIIDRow: UInt32 = 4

    @inline(__always)
    func uniform(part: Int, item: Int, role: UInt32, attempt: Int) -> Double {
        rng.uniform(index: UInt64(part) << 32 | UInt64(item), lane: role << 16 | UInt32(attempt))
    }

    /// The first k with max(w₀,0) + … + max(w_k,0) > target; when rounding leaves target at or above the sum,
    /// the last positive entry; nil when no entry is positive.
    static func inverseCDF(_ w: UnsafeBufferPointer<Double>, _ target: Double) -> Int? {
        var acc = 0.0, last: Int?
        for k in 0..<w.count where w[k] > 0 {
            acc += w[k]
            last = k
            if acc > target { return k }
        }
        return last
    }

    /// One projection-DPP sample of exactly `rank` distinct rows (the chain rule over the leverage cache).
    func sampleProjection(part: Int, _ store: RowStoreReader) throws(EngineError) -> [Int64] {
        guard let basis, let cache else { throw .internal("dpp-sample", "no basis") }
        let r = basis.rank, b = basis.blockRows, count = basis.candidates
        let blocks = cache.mass.count
        var mass = cache.mass
        var e = [Double](repeating: 0, count: r * r)       // rows e_0 … e_{t−1}
        var proj = [Double](repeating: 0, count: b * r)
        var res = [Double](repeating: 0, count: b * r)
        var d = [Double](repeating: 0, count: b)
        var y = [Double](repeating: 0, count: blocks * r)
        var v = [Double](repeating: 0, count: r)
        var c = [Double](repeating: 0, count: r)
        var chosen: [Int64] = []
        var taken = Set<Int64>()
        var scratch = BlockScratch(columns: columns, hasTarget: hasTarget, blockRows: b, rank: r)
        let eps = Double.ulpOfOne
        for t in 0..<r {
            var attempt = 0
            while true {
                guard attempt < 256 else {
                    throw .internal("dpp-sample", "pick \(t + 1) of \(r): no block with residual mass after \(attempt) attempts")
                }
                let total = mass.reduce(0) { $0 + max($1, 0) }
                guard total > 0 else {
                    throw .internal("dpp-sample", "pick \(t + 1) of \(r): the residual mass is \(total)")
                }
                let u = uniform(part: part, item: t, role: DPPSampleOperator.roleDPPBlock, attempt: attempt)
                guard let blk = mass.withUnsafeBufferPointer({ DPPSampleOperator.inverseCDF($0, u * total) }) else {
                    throw .internal("dpp-sample", "pick \(t + 1): no positive block mass")
                }
                let start = blk * b, cnt = min(b, count - start)
                scratch.load(store, start: start, count: cnt, t: basis.t, rank: r)
                // Residuals q_i − Σ_s ⟨q_i, e_s⟩ e_s of the block's rows (two gemms).
                scratch.q.withUnsafeBufferPointer { qp in
                    e.withUnsafeBufferPointer { ep in
                        proj.withUnsafeMutableBufferPointer { pp in
                            res.withUnsafeMutableBufferPointer { rp in
                                for i in 0..<cnt * r { rp[i] = qp[i] }
                                if t > 0 {
                                    BlockKernels.gemm(transposeB: true, m: cnt, n: t, k: r, qp.baseAddress!, lda: r, ep.baseAddress!, ldb: r,
                                                      pp.baseAddress!, ldc: t)
                                    BlockKernels.gemm(m: cnt, n: r, k: t, alpha: -1, pp.baseAddress!, lda: t, ep.baseAddress!, ldb: r,
                                                      beta: 1, rp.baseAddress!, ldc: r)
                                }
                                let floor = 8 * Double(t + 1) * eps
                                for i in 0..<cnt {
                                    var s = 0.0, qn = 0.0
                                    for k in 0..<r { s += rp[i * r + k] * rp[i * r + k]; qn += qp[i * r + k] * qp[i * r + k] }
                                    // At rounding level the row lies in span(E): its residual direction is noise.
                                    d[i] = s > floor * floor * qn ? s : 0
                                }
                            }
                        }
                    }
                }
                for p in chosen where Int(p) >= start && Int(p) < start + cnt { d[Int(p) - start] = 0 }
                var sum = 0.0
                for i in 0..<cnt { sum += d[i] }
                guard sum > 0 else {
                    // The cache said this block had mass; its rows say it is exhausted (rounding): drop it.
                    mass[blk] = 0
                    attempt += 1
                    continue
                }
                let u2 = uniform(part: part, item: t, role: DPPSampleOperator.roleDPPRow, attempt: attempt)
                guard let i = d.withUnsafeBufferPointer({ DPPSampleOperator.inverseCDF(UnsafeBufferPointer(rebasing: $0[0..<cnt]), u2 * sum) }) else {
                    throw .internal("dpp-sample", "pick \(t + 1): no positive residual")
                }
                // e_t: the unit residual of q_i, re-orthogonalised against E (Gram–Schmidt twice is enough).
                let norm = d[i].squareRoot()
                for k in 0..<r { v[k] = res[i * r + k] / norm }
                if t > 0 {
                    e.withUnsafeBufferPointer { ep in
                        v.withUnsafeMutableBufferPointer { vp in
                            c.withUnsafeMutableBufferPointer { cp in
                                BlockKernels.gemv(m: t, n: r, ep.baseAddress!, lda: r, vp.baseAddress!, cp.baseAddress!)
                                BlockKernels.gemm(transposeA: true, m: r, n: 1, k: t, alpha: -1, ep.baseAddress!, lda: r, cp.baseAddress!, ldb: 1,
                                                  beta: 1, vp.baseAddress!, ldc: 1)
                            }
                        }
                    }
                }
                var vn = 0.0
                for k in 0..<r { vn += v[k] * v[k] }
                vn = vn.squareRoot()
                for k in 0..<r { e[t * r + k] = v[k] / vn }
                let pos = Int64(start + i)
                chosen.append(pos)
                taken.insert(pos)
                // Residual mass of every block loses e_tᵀ C_B e_t.
                if t + 1 < r {
                    cache.grams.withUnsafeBufferPointer { gp in
                        e.withUnsafeBufferPointer { ep in
                            y.withUnsafeMutableBufferPointer { yp in
                                BlockKernels.gemv(m: blocks * r, n: r, gp.baseAddress!, lda: r, ep.baseAddress! + t * r, yp.baseAddress!)
                                for bb in 0..<blocks {
                                    var s = 0.0
                                    for k in 0..<r { s += ep[t * r + k] * yp[bb * r + k] }
                                    mass[bb] -= s
                                }
                            }
                        }
                    }
                }
                break
            }
        }
        guard taken.count == r else { throw .internal("dpp-sample", "the projection sample repeated a row") }
        return chosen
    }

    /// `draws` rows i.i.d. from ρ_i = ℓ_i / r: a block by its leverage mass, then a row by its leverage.
    func sampleIID(part: Int, draws: Int, _ store: RowStoreReader) throws(EngineError) -> [Int64] {
        guard let basis, let cache else { throw .internal("dpp-sample", "no basis") }
        guard draws > 0 else { return [] }
        let r = basis.rank, b = basis.blockRows, count = basis.candidates
        let blocks = cache.mass.count
        var cum = [Double](repeating: 0, count: blocks)
        var acc = 0.0
        for k in 0..<blocks { acc += max(cache.mass[k], 0); cum[k] = acc }
        guard acc > 0 else { throw .internal("dpp-sample", "the leverage mass is \(acc)") }
        var blockOf = [Int](repeating: 0, count: draws)
        for k in 0..<draws {
            let target = uniform(part: part, item: k, role: DPPSampleOperator.roleIIDBlock, attempt: 0) * acc
            // First block whose cumulative mass exceeds target (blocks of zero mass are never chosen).
            var lo = 0, hi = blocks - 1
            while lo < hi {
                let mid = (lo + hi) / 2
                if cum[mid] > target { hi = mid } else { lo = mid + 1 }
            }
            while lo > 0 && !(cache.mass[lo] > 0) { lo -= 1 }   // rounding at the very end: the last positive block
            blockOf[k] = lo
        }
        let order = (0..<draws).sorted { (blockOf[$0], $0) < (blockOf[$1], $1) }
        var out = [Int64](repeating: -1, count: draws)
        var scratch = BlockScratch(columns: columns, hasTarget: hasTarget, blockRows: b, rank: r)
        var lev = [Double](repeating: 0, count: b)
        var within = [Double](repeating: 0, count: b)
        var idx = 0
        while idx < draws {
            let blk = blockOf[order[idx]]
            let start = blk * b, cnt = min(b, count - start)
            scratch.load(store, start: start, count: cnt, t: basis.t, rank: r)
            var sum = 0.0
            for i in 0..<cnt {
                var s = 0.0
                for k in 0..<r { s += scratch.q[i * r + k] * scratch.q[i * r + k] }
                lev[i] = s
                sum += s
                within[i] = sum
            }
            guard sum > 0 else { throw .internal("dpp-sample", "block \(blk) has leverage mass in the cache but none in its rows") }
            while idx < draws && blockOf[order[idx]] == blk {
                let k = order[idx]
                let target = uniform(part: part, item: k, role: DPPSampleOperator.roleIIDRow, attempt: 0) * sum
                var lo = 0, hi = cnt - 1
                while lo < hi {
                    let mid = (lo + hi) / 2
                    if within[mid] > target { hi = mid } else { lo = mid + 1 }
                }
                while lo > 0 && !(lev[lo] > 0) { lo -= 1 }
                out[k] = Int64(start + lo)
                idx += 1
            }
        }
        return out
    }

    /// The last step: the sample's rows, weights and least-squares fit; the residual over all candidates.
    mutating func finalize(_ store: RowStoreReader) throws(EngineError) {
        guard let basis else { throw .internal("dpp-sample", "finalize before the basis step") }
        try checkStore(store, basis)
        let m = columns, r = basis.rank, n = pickPositions.count
        let order = (0..<n).sorted { (pickParts[$0], pickPositions[$0], $0) < (pickParts[$1], pickPositions[$1], $1) }
        var res = SampleResult(indices: [Int64](repeating: 0, count: n), weights: [Double](repeating: 0, count: n),
                               rows: [Double](repeating: 0, count: n * m), targets: hasTarget ? [Double](repeating: 0, count: n) : [],
                               coefficients: hasTarget ? [Double](repeating: 0, count: m) : [], residual: 0, distinct: 0,
                               shards: [Int64](repeating: shard, count: n))
        var omega = [Double](repeating: 0, count: n)
        var one = RowBatch(columns: m, capacity: 1, hasTarget: hasTarget, hasWeight: true)
        // The engine's store keeps each row's shard (the run's, or the one a merged sampler tagged it with);
        // a reader without shards leaves the run's.
        one.shards = [shard]
        for (k, p) in order.enumerated() {
            store.read(Int(pickPositions[p]), 1, into: &one)
            guard one.count == 1 else { throw .internal("dpp-sample", "row \(pickPositions[p]) is not in the row store") }
            for j in 0..<m { res.rows[k * m + j] = one.features[j] }
            if hasTarget { res.targets[k] = one.targets![0] }
            omega[k] = one.weight(0)
            res.indices[k] = one.indices[0]
            res.shards[k] = one.shards![0]
        }
        res.distinct = Set(pickPositions).count
        if n > 0 && r > 0 {
            // q_k = √ω_k φ_kᵀT; ℓ_k = ‖q_k‖²; w_k = ω_k·r/(n·ℓ_k).
            var q = DPPSampleOperator.product(res.rows, basis.t, m: n, k: m, n: r)
            var lev = [Double](repeating: 0, count: n)
            for k in 0..<n {
                let s = omega[k].squareRoot()
                var l = 0.0
                for j in 0..<r { q[k * r + j] *= s; l += q[k * r + j] * q[k * r + j] }
                lev[k] = l
                guard l > 0 else { throw .internal("dpp-sample", "a sampled row has leverage 0") }
                res.weights[k] = omega[k] * Double(r) / (Double(n) * l)
            }
            if hasTarget {
                // min Σ (1/ℓ_k)(√ω_k y_k − q_kᵀa)², i.e. Σ w_k (y_k − φ_kᵀTa)² up to the constant r/n.
                var a = Matrix(rows: n, cols: r)
                var rhs = [Double](repeating: 0, count: n)
                for k in 0..<n {
                    let f = 1 / lev[k].squareRoot()
                    for j in 0..<r { a[k, j] = q[k * r + j] * f }
                    rhs[k] = omega[k].squareRoot() * res.targets[k] * f
                }
                let sol: [Double]
                do {
                    sol = try LAPACK.leastSquaresMinNorm(a, rhs, rcond: Double(max(n, r)) * Double.ulpOfOne).x
                } catch { throw .internal("dpp-sample", error.description) }
                res.coefficients = DPPSampleOperator.product(basis.t, sol, m: m, k: r, n: 1)
            }
        }
        if hasTarget { res.residual = residualPass(store, coefficients: res.coefficients) }
        result = res
    }

    /// Σ ω_i (y_i − φ_iᵀc)² over every stored row, in fixed blocks.
    func residualPass(_ store: RowStoreReader, coefficients c: [Double]) -> Double {
        let m = columns, chunk = 4096
        var batch = RowBatch(columns: m, capacity: chunk, hasTarget: true, hasWeight: true)
        var pred = [Double](repeating: 0, count: chunk)
        var total = 0.0
        var start = 0
        while start < store.count {
            store.read(start, chunk, into: &batch)
            let cnt = batch.count
            batch.features.withUnsafeBufferPointer { xp in
                c.withUnsafeBufferPointer { cp in
                    pred.withUnsafeMutableBufferPointer { pp in
                        BlockKernels.gemv(m: cnt, n: m, xp.baseAddress!, lda: m, cp.baseAddress!, pp.baseAddress!)
                    }
                }
            }
            var s = 0.0
            for i in 0..<cnt {
                let e = batch.targets![i] - pred[i]
                s += batch.weight(i) * e * e
            }
            total += s
            start += cnt
        }
        return total
    }

    // MARK: outputs

    public func currentSummary() -> [(String, JSON)] {
        [("rows", .int(rows)), ("weight_sum", .double(weightSum)), ("mode", .string(config.mode.rawValue))]
    }

    public mutating func finish() throws(EngineError) -> OperatorOutput {
        guard let res = result, let basis else {
            throw .internal("dpp-sample", "finish before the row-store passes (the engine runs them for multi-pass operators)")
        }
        let n = res.indices.count, m = columns
        var arrays = [NamedArray("indices", shape: [n], int64: res.indices),
                      NamedArray("weights", shape: [n], float64: res.weights),
                      NamedArray("rows", shape: [n, m], float64: res.rows)]
        if hasTarget {
            arrays.append(NamedArray("targets", shape: [n], float64: res.targets))
            arrays.append(NamedArray("coefficients", shape: [m], float64: res.coefficients))
        }
        if sharded { arrays.append(NamedArray("shard", shape: [n], int64: res.shards)) }
        var summary: [(String, JSON)] = [
            ("rows", .int(rows)), ("weight_sum", .double(weightSum)), ("mode", .string(config.mode.rawValue)),
            ("size", .int(Int64(n))), ("rank_used", .int(Int64(basis.rank))),
        ]
        if hasTarget {
            let opt = basis.optimalResidual ?? 0, yy = basis.targetNorm ?? 0
            summary.append(("residual", .double(res.residual)))
            summary.append(("optimal_residual", .double(opt)))
            // An exact fit (optimum at rounding level of Σωy²) has no meaningful ratio.
            let floor = 1e3 * Double.ulpOfOne
            summary.append(("residual_ratio", opt > floor * floor * yy ? .double(res.residual / opt) : .null))
        }
        let cond: JSON = basis.rank1 > 0 ? .double(basis.sigma[0] / basis.sigma[basis.rank1 - 1]) : .null
        summary += [
            ("columns", .int(Int64(m))), ("distinct_rows", .int(Int64(res.distinct))),
            ("leverage_sum", .double(basis.leverageSum)), ("condition_number", cond),
            ("rank_tolerance", .double(basis.tolerance)), ("block_rows", .int(Int64(basis.blockRows))),
        ]
        var emitted = RowBatch(columns: m, capacity: max(1, n), hasTarget: hasTarget, hasWeight: true)
        if sharded { emitted.shards = [Int64](repeating: 0, count: max(1, n)) }
        for k in 0..<n {
            let s = emitted.appendSlot(index: res.indices[k])
            for j in 0..<m { emitted.features[s * m + j] = res.rows[k * m + j] }
            if hasTarget { emitted.targets![s] = res.targets[k] }
            emitted.weights![s] = res.weights[k]
            if sharded { emitted.shards![s] = res.shards[k] }
        }
        return OperatorOutput(arrays: arrays, summary: summary, emittedRows: n > 0 ? [emitted] : [])
    }

    // MARK: state
}

// MARK: state

/// One block of candidate rows read back from the row store, and its rows of Q = √ω·Φ·T.
struct BlockScratch {
    var batch: RowBatch
    var q: [Double]
    let columns: Int

    init(columns: Int, hasTarget: Bool, blockRows: Int, rank: Int) {
        self.columns = columns
        batch = RowBatch(columns: columns, capacity: max(1, blockRows), hasTarget: hasTarget, hasWeight: true)
        q = [Double](repeating: 0, count: max(1, blockRows) * max(1, rank))
    }

    mutating func load(_ store: RowStoreReader, start: Int, count: Int, t: [Double], rank: Int) {
        store.read(start, count, into: &batch)
        let cnt = batch.count, m = columns
        batch.features.withUnsafeBufferPointer { xp in
            t.withUnsafeBufferPointer { tp in
                q.withUnsafeMutableBufferPointer { qp in
                    BlockKernels.gemm(m: cnt, n: rank, k: m, xp.baseAddress!, lda: m, tp.baseAddress!, ldb: rank, qp.baseAddress!, ldc: rank)
                    for i in 0..<cnt {
                        let s = batch.weight(i).squareRoot()
                        if s != 1 { for k in 0..<rank { qp[i * rank + k] *= s } }
                    }
                }
            }
        }
    }
}

extension DPPSampleOperator: SelfDescribingOperator {
    public static let info = OperatorInfo(
        kind: "dpp-sample",
        summary: "Leverage-based samples for optimal weighted least squares: i.i.d. from ρ = ℓ/r, the projection DPP (volume sampling), volume-rescaled and repeated DPP samples; coefficients and residual with a target. Multi-pass (row store).",
        parameters: [
            ParameterSpec("mode", .choice(DPPMode.allCases.map(\.rawValue)), required: true,
                          doc: "iid: n rows i.i.d. from ρ_i = ℓ_i/r; projection: exactly r rows from the projection DPP; volume-rescaled: r DPP rows + n − r i.i.d.; repeated: s pooled projection samples"),
            ParameterSpec("samples", .int(min: 1, max: 1 << 24), doc: "n: rows drawn (iid and volume-rescaled; volume-rescaled needs n ≥ the feature count)"),
            ParameterSpec("repetitions", .int(min: 1, max: 1 << 20), doc: "s: independent projection samples pooled (repeated)"),
            ParameterSpec("rank_tolerance", .double(min: 0, max: 1, openMin: true),
                          doc: "singular values ≤ this × σ₁ of the weighted features count as zero; default max(N, m)·ε (numpy.linalg.matrix_rank)"),
        ],
        outputs: ["indices (int64)", "weights", "rows", "targets (with a target)", "coefficients (with a target)",
                  "shard (int64; with --shard, or rows from a merged sharded sampler)"],
        stateVersion: stateVersion, multiPass: true, emitsRows: true, report: .dppSample,
        examples: [OperatorExample("dpp-sample-projection", [("mode", .string("projection"))]),
                   OperatorExample("dpp-sample-iid", [("mode", .string("iid")), ("samples", .int(20))], weighted: true)],
        check: { p, _ in DPPSampleConfig.problem(p) })

    public init(params p: ParamValues, context ctx: OperatorContext) throws(EngineError) {
        self.init(config: try DPPSampleConfig(params: p, context: ctx), columns: ctx.shape.columns, hasTarget: ctx.shape.hasTarget, context: ctx)
    }
    public init(restoring state: [UInt8], params p: ParamValues, context ctx: OperatorContext, location: String) throws(EngineError) {
        try self.init(config: try DPPSampleConfig(params: p, context: ctx), columns: ctx.shape.columns, hasTarget: ctx.shape.hasTarget,
                      context: ctx, state: state, location: location)
    }
}
