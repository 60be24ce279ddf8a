import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#endif

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
