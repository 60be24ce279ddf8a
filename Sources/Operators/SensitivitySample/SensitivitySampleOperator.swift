import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#endif

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
}

// MARK: state

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
