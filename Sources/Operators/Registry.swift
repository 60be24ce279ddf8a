import EngineCore

/// The type and range of one operator parameter, as the manifest validator checks it.
public enum ParameterKind: Sendable, Equatable {
    case int(min: Int64, max: Int64)
    /// A float in [min, max] (or (min, max] when `openMin`).
    case double(min: Double, max: Double, openMin: Bool)
    case choice([String])
    case bool
    /// A 0-based column number or a column name.
    case column
    /// An int, or the string "auto".
    case intOrAuto(min: Int64, max: Int64)

    public var typeName: String {
        switch self {
        case let .int(lo, hi): return "integer in [\(lo), \(hi)]"
        case let .double(lo, hi, open): return "number in \(open ? "(" : "[")\(JSON.format(lo)), \(JSON.format(hi))]"
        case let .choice(c): return "one of " + c.joined(separator: " | ")
        case .bool: return "true or false"
        case .column: return "a 0-based column number or a header name"
        case let .intOrAuto(lo, hi): return "auto or an integer in [\(lo), \(hi)]"
        }
    }
}

public struct ParameterSpec: Sendable {
    public let name: String
    public let kind: ParameterKind
    /// nil when there is no default (required, or absent means "off").
    public let defaultValue: JSON?
    public let required: Bool
    public let doc: String

    public init(_ name: String, _ kind: ParameterKind, default value: JSON? = nil, required: Bool = false, doc: String) {
        self.name = name; self.kind = kind; self.defaultValue = value; self.required = required; self.doc = doc
    }
}

/// Parameters after validation: every declared parameter with its given or default value.
public struct ParamValues: Sendable, Equatable {
    public var values: [(String, JSON)]
    public init(_ values: [(String, JSON)]) { self.values = values }
    public static func == (a: ParamValues, b: ParamValues) -> Bool { JSON.object(a.values) == JSON.object(b.values) }

    public subscript(_ name: String) -> JSON? { values.first { $0.0 == name }?.1 }
    public func string(_ name: String) -> String? { if case let .string(s)? = self[name] { return s }; return nil }
    public func double(_ name: String) -> Double? {
        switch self[name] {
        case let .double(d)?: return d
        case let .int(i)?: return Double(i)
        default: return nil
        }
    }
    public func int(_ name: String) -> Int64? { if case let .int(i)? = self[name] { return i }; return nil }
    public func bool(_ name: String) -> Bool? { if case let .bool(b)? = self[name] { return b }; return nil }
    /// The canonical JSON of the parameters: echoed in summary.json and digested into states.
    public var json: JSON { .object(values) }
    public var digest: String { SHA256.hex(Array(json.encoded().utf8)) }
}

/// One operator kind: its documentation, parameters, outputs and how to build, restore and merge it.
public struct OperatorDescriptor: Sendable {
    public let kind: String
    public let summary: String
    public let parameters: [ParameterSpec]
    public let outputs: [String]
    public let mergeable: Bool
    public let multiPass: Bool
    public let emitsRows: Bool
    public let stateVersion: UInt16
    /// For operators that are not mergeable: what `rowflow merge` suggests instead.
    public let mergeHint: String?
    /// Checks that need the stream's shape (e.g. a target); returns the problem, or nil.
    public let check: @Sendable (ParamValues, _ hasTarget: Bool) -> String?
    public let make: @Sendable (ParamValues, OperatorContext) throws(EngineError) -> any StreamOperator
    public let restore: @Sendable (ParamValues, OperatorContext, [UInt8], String) throws(EngineError) -> any StreamOperator
    /// Parameters that act only at finish (a gram's solve and lambda): a state carries no trace of them, so
    /// `rowflow merge` may finish it under other values — to fix a solve that failed without re-reading the input.
    public var finishOnly: Set<String> = []
    /// Merges the second into the first; nil when the operator is not mergeable.
    public let merge: (@Sendable (inout any StreamOperator, any StreamOperator) throws(EngineError) -> Void)?

    public init(kind: String, summary: String, parameters: [ParameterSpec], outputs: [String], mergeable: Bool,
                multiPass: Bool = false, emitsRows: Bool = false, stateVersion: UInt16, mergeHint: String? = nil,
                check: @escaping @Sendable (ParamValues, Bool) -> String? = { _, _ in nil },
                make: @escaping @Sendable (ParamValues, OperatorContext) throws(EngineError) -> any StreamOperator,
                restore: @escaping @Sendable (ParamValues, OperatorContext, [UInt8], String) throws(EngineError) -> any StreamOperator,
                merge: (@Sendable (inout any StreamOperator, any StreamOperator) throws(EngineError) -> Void)?) {
        self.kind = kind; self.summary = summary; self.parameters = parameters; self.outputs = outputs
        self.mergeable = mergeable; self.multiPass = multiPass; self.emitsRows = emitsRows
        self.stateVersion = stateVersion; self.mergeHint = mergeHint; self.check = check; self.make = make; self.restore = restore; self.merge = merge
    }

    /// The same descriptor with `finishOnly` set.
    public func finishing(only names: Set<String>) -> OperatorDescriptor {
        var d = self
        d.finishOnly = names
        return d
    }

    /// The digest a state envelope carries: the parameters that shape the state (`finishOnly` left out).
    public func stateDigest(_ p: ParamValues) -> String {
        ParamValues(p.values.filter { !finishOnly.contains($0.0) }).digest
    }

    /// A type-checked merge for a `MergeableOperator` type.
    public static func merger<T: MergeableOperator>(_: T.Type) -> @Sendable (inout any StreamOperator, any StreamOperator) throws(EngineError) -> Void {
        { (a: inout any StreamOperator, b: any StreamOperator) throws(EngineError) in
            guard var x = a as? T, let y = b as? T else { throw .internal("merge", "operator types differ") }
            try x.merge(y)
            a = x
        }
    }
}

/// The operators this build knows, by kind. Tests may add their own.
public struct OperatorRegistry: Sendable {
    public private(set) var descriptors: [OperatorDescriptor]
    public init(_ descriptors: [OperatorDescriptor]) { self.descriptors = descriptors }
    public subscript(kind: String) -> OperatorDescriptor? { descriptors.first { $0.kind == kind } }
    public var kinds: [String] { descriptors.map(\.kind) }
    public mutating func add(_ d: OperatorDescriptor) { descriptors.append(d) }

    /// Every operator shipped with rowflow.
    public static let standard = OperatorRegistry([momentsDescriptor, gramDescriptor, truncatedSVDDescriptor,
                                                   topEigenvectorDescriptor, sensitivitySampleDescriptor, dppSampleDescriptor,
                                                   halpernDescriptor])
}

let momentsDescriptor = OperatorDescriptor(
    kind: "moments",
    summary: "Exact weighted column mean and population variance (float64, Chan et al. block merges). Mergeable.",
    parameters: [], outputs: ["mean", "variance"], mergeable: true, stateVersion: MomentsOperator.stateVersion,
    make: { _, ctx in MomentsOperator(columns: ctx.shape.columns) },
    restore: { _, ctx, bytes, where_ throws(EngineError) in try MomentsOperator(columns: ctx.shape.columns, state: bytes, context: where_) },
    merge: OperatorDescriptor.merger(MomentsOperator.self))

let gramDescriptor = OperatorDescriptor(
    kind: "gram",
    summary: "Exact Gram matrix AᵀA (and Aᵀy with a target) in float64; `solve: ridge` solves (AᵀA + λI)x = Aᵀy. Mergeable.",
    parameters: [
        ParameterSpec("solve", .choice(["none", "ridge", "least-squares"]), default: .string("none"),
                      doc: "ridge: minimise ½‖Ax + b − y‖² + ½λ‖x‖² by Cholesky; least-squares: the minimum-norm least-squares solution (as numpy.linalg.lstsq), with rank and condition number (both need a target; ridge with lambda 0 is least-squares)"),
        ParameterSpec("lambda", .double(min: 0, max: .greatestFiniteMagnitude, openMin: false), default: .double(0),
                      doc: "ridge penalty λ ≥ 0"),
        ParameterSpec("intercept", .bool, default: .bool(false),
                      doc: "fit an unpenalised intercept b (exact weighted centring in the same pass); summary.json `intercept`"),
    ],
    outputs: ["gram", "xty (with a target)", "solution (solve: ridge or least-squares)"], mergeable: true,
    stateVersion: GramOperator.stateVersion,
    check: { p, hasTarget in
        let solve = p.string("solve") ?? "none"
        if solve != "none" && !hasTarget { return "solve: \(solve) needs a target (set source.target)" }
        if p.bool("intercept") == true && solve == "none" { return "intercept: true needs solve: ridge or least-squares" }
        return nil
    },
    make: { p, ctx in
        GramOperator(columns: ctx.shape.columns, hasTarget: ctx.shape.hasTarget, solve: GramOperator.Solve(rawValue: p.string("solve") ?? "none") ?? .none,
                     lambda: p.double("lambda") ?? 0, intercept: p.bool("intercept") ?? false)
    },
    restore: { p, ctx, bytes, where_ throws(EngineError) in
        try GramOperator(columns: ctx.shape.columns, hasTarget: ctx.shape.hasTarget, solve: GramOperator.Solve(rawValue: p.string("solve") ?? "none") ?? .none,
                         lambda: p.double("lambda") ?? 0, intercept: p.bool("intercept") ?? false,
                         state: bytes, context: where_)
    },
    merge: OperatorDescriptor.merger(GramOperator.self)).finishing(only: ["solve", "lambda"])

let truncatedSVDDescriptor = OperatorDescriptor(
    kind: "truncated-svd",
    summary: "Rank-k right singular vectors and values with a certified tail-energy bound (incremental sketch or exact Gram; PCA with center: true). Mergeable.",
    parameters: [
        ParameterSpec("rank", .int(min: 1, max: 1 << 20), required: true, doc: "k: singular values and vectors to return"),
        ParameterSpec("oversample", .int(min: 0, max: 1 << 20), default: .int(5),
                      doc: "extra vectors the incremental sketch keeps (k′ = rank + oversample)"),
        ParameterSpec("method", .choice(["auto", "incremental", "gram"]), default: .string("auto"),
                      doc: "gram: exact AᵀA + eigensolver (O(d²) memory); incremental: one-pass sketch; auto: gram when it is the faster (d ≤ 2.5·(8k′ + 4b + 2k′(k′+b)/b), d ≤ 4096)"),
        ParameterSpec("block_rows", .intOrAuto(min: 1, max: 1 << 20), default: .string("auto"),
                      doc: "rows per internal block (fixed row positions); auto: a function of the column count"),
        ParameterSpec("precision", .choice(["auto", "float64", "float32"]), default: .string("auto"),
                      doc: "gram: float32 forms each 64-row chunk's Gram matrix in float32 (≈ 1.4× faster at d = 256, Benchmarks/RESULTS.md; the margin grows by √k·γ₆₅·F² ≈ 1.6e-5·F² at k = 16), float64 adds every product in float64; auto: float32 for uncentred f32 sources with rank ≤ 24"),
        ParameterSpec("center", .bool, default: .bool(false),
                      doc: "subtract the running weighted mean (PCA, scikit-learn semantics; adds mean and explained_variance)"),
        ParameterSpec("decay", .double(min: 0, max: 1, openMin: true), default: .double(1),
                      doc: "forgetting factor per row (0 < decay ≤ 1), applied per block"),
        ParameterSpec("group", .column, doc: "feature column holding an integer group id: cluster the groups so each cluster's rank-k relative error stays ≤ epsilon (the column is not part of the matrix)"),
        ParameterSpec("epsilon", .double(min: 0, max: 1, openMin: true), doc: "relative error bound every cluster of groups must meet (with group)"),
    ],
    outputs: ["singular_values", "right_vectors", "mean, explained_variance, explained_variance_ratio (center: true)",
              "groups, labels, cluster_singular_values, cluster_right_vectors, cluster_relative_error_bound, cluster_tail_energy_bound, cluster_frobenius_norm_sq (group)"],
    mergeable: true, stateVersion: TruncatedSVDOperator.stateVersion,
    check: { p, _ in
        let grouped = p["group"] != nil && p["group"] != .null
        let eps = p["epsilon"] != nil && p["epsilon"] != .null
        if grouped && !eps { return "truncated-svd: params.group needs params.epsilon (the relative error each cluster must stay within)" }
        if eps && !grouped { return "truncated-svd: params.epsilon only applies with params.group (clustering of row groups)" }
        if grouped && p.bool("center") == true { return "truncated-svd: params.center is not supported with params.group" }
        if grouped && (p.double("decay") ?? 1) < 1 { return "truncated-svd: params.decay is not supported with params.group" }
        return nil
    },
    make: { p, ctx throws(EngineError) in try makeTruncatedSVD(p, ctx, state: nil, context: "") },
    restore: { p, ctx, bytes, where_ throws(EngineError) in try makeTruncatedSVD(p, ctx, state: bytes, context: where_) },
    merge: { (a: inout any StreamOperator, b: any StreamOperator) throws(EngineError) in
        if var x = a as? TruncatedSVDOperator, let y = b as? TruncatedSVDOperator { try x.merge(y); a = x; return }
        if var x = a as? GroupedTruncatedSVDOperator, let y = b as? GroupedTruncatedSVDOperator { try x.merge(y); a = x; return }
        throw .internal("merge", "truncated-svd operator types differ")
    })

/// Builds (or restores) a truncated-svd operator: grouped when params.group is set.
func makeTruncatedSVD(_ p: ParamValues, _ ctx: OperatorContext, state: [UInt8]?, context: String) throws(EngineError) -> any StreamOperator {
    let d = ctx.shape.columns
    var group = p.int("group")
    if let name = p.string("group") {
        if let names = ctx.featureNames {
            group = Int64(try ColumnNames.resolve(ColumnName(name, at: "truncated-svd params.group"), in: names, what: "params.group"))
        } else if let state {
            // A merge has no header: the state records which column the name resolved to in its run.
            group = Int64(try GroupedTruncatedSVDOperator.groupColumn(inState: state, context: context))
        } else {
            group = Int64(try ColumnNames.resolve(ColumnName(name, at: "truncated-svd params.group"), in: nil, what: "params.group"))
        }
    }
    if let g = group {
        guard Int(g) < d, d >= 2 else {
            throw .usage("truncated-svd", "params.group is column \(g), but the operator receives \(d) feature columns (0-based; the group column must be one of them and at least one other must remain)")
        }
        guard let eps = p.double("epsilon") else { throw .usage("truncated-svd", "params.group needs params.epsilon") }
        var c = try TruncatedSVDConfig.resolve(p, columns: d - 1, float32Values: ctx.shape.float32Values)
        // One operator per group: small blocks whatever the method (a Gram block of thousands of rows per
        // group would dominate memory).
        if p.int("block_rows") == nil { c.blockRows = TruncatedSVDConfig.incrementalBlockRows(columns: d - 1) }
        try checkMemory(c, columns: d - 1)
        if let state {
            return try GroupedTruncatedSVDOperator(config: c, columns: d, groupColumn: Int(g), epsilon: eps, state: state, context: context)
        }
        return GroupedTruncatedSVDOperator(config: c, columns: d, groupColumn: Int(g), epsilon: eps)
    }
    let c = try TruncatedSVDConfig.resolve(p, columns: d, float32Values: ctx.shape.float32Values)
    try checkMemory(c, columns: d)
    if let state { return try TruncatedSVDOperator(config: c, columns: d, state: state, context: context) }
    return TruncatedSVDOperator(config: c, columns: d)
}

/// Refuses parameters whose buffers could not be allocated (before any row is read).
func checkMemory(_ c: TruncatedSVDConfig, columns d: Int) throws(EngineError) {
    let bytes = TruncatedSVDOperator.memoryEstimate(c, columns: d)
    if bytes > Double(16 << 30) {
        throw .usage("truncated-svd", "rank \(c.rank), block_rows \(c.blockRows) and \(d) columns with method \(c.method.rawValue) need ≈ \(Int(bytes / Double(1 << 30))) GiB",
                     hint: c.method == .gram ? "use method: incremental for wide inputs" : "lower rank, oversample or block_rows")
    }
}
let topEigenvectorDescriptor = OperatorDescriptor(
    kind: "top-eigenvector",
    summary: "Top eigenvector of AᵀA in one pass: random-order block power method with heavy rows kept exactly (Kacham & Woodruff 2024), or Oja with a grid of fixed learning rates (Price & Xun 2024). Not mergeable.",
    parameters: [
        ParameterSpec("variant", .choice(TopEigenvector.Variant.allCases.map(\.rawValue)), default: .string("random-order"),
                      doc: "random-order: assumes rows in uniformly random order; oja: any order, needs a large gap"),
        ParameterSpec("blocks", .intOrAuto(min: 1, max: 1000), default: .string("auto"),
                      doc: "random-order: power steps per schedule (auto: ⌈log₂ d⌉ + 2)"),
        ParameterSpec("heavy_memory_mb", .int(min: 1, max: 1 << 20), default: .int(Int64(TopEigenvector.defaultHeavyMemoryMB)),
                      doc: "random-order: memory for heavy rows kept exactly; beyond it they are treated as light (heavy_overflow)"),
    ],
    outputs: ["vector", "eigenvalue_history (rows, eigenvalue, heavy rows; ≤ 1025 rows)"], mergeable: false, stateVersion: TopEigenvector.stateVersion,
    mergeHint: "top-eigenvector has no mergeable form with a guarantee (Price & Xun); run gram (exact AᵀA) or truncated-svd on the shards, merge those, and take the top eigenvector of the merged result",
    make: { p, ctx in
        if p.string("variant") == "oja" {
            return OjaTopEigenvector(columns: ctx.shape.columns, rowsKnown: ctx.shape.rowsKnown, seed: ctx.seed,
                                     shard: ctx.shard, purpose: ctx.purpose)
        }
        return RandomOrderTopEigenvector(columns: ctx.shape.columns, blocks: p.int("blocks").map { Int($0) },
                                         rowsKnown: ctx.shape.rowsKnown, heavyMemoryMB: Int(p.int("heavy_memory_mb") ?? 256),
                                         seed: ctx.seed, shard: ctx.shard, purpose: ctx.purpose)
    },
    restore: { p, ctx, bytes, where_ throws(EngineError) in
        if p.string("variant") == "oja" {
            return try OjaTopEigenvector(columns: ctx.shape.columns, rowsKnown: ctx.shape.rowsKnown, seed: ctx.seed,
                                         shard: ctx.shard, purpose: ctx.purpose, state: bytes, context: where_)
        }
        return try RandomOrderTopEigenvector(columns: ctx.shape.columns, blocks: p.int("blocks").map { Int($0) },
                                             rowsKnown: ctx.shape.rowsKnown, heavyMemoryMB: Int(p.int("heavy_memory_mb") ?? 256),
                                             seed: ctx.seed, shard: ctx.shard, purpose: ctx.purpose, state: bytes, context: where_)
    },
    merge: nil)
let sensitivitySampleDescriptor = OperatorDescriptor(
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
    mergeable: true, emitsRows: true, stateVersion: SensitivitySampleOperator.stateVersion,
    check: { p, _ in SensitivityConfig.problem(p) },
    make: { p, ctx throws(EngineError) in
        let c = try SensitivityConfig.resolve(p, width: ctx.shape.columns + (ctx.shape.hasTarget ? 1 : 0))
        return SensitivitySampleOperator(config: c, context: ctx, sharded: ctx.sharded)
    },
    restore: { p, ctx, bytes, where_ throws(EngineError) in
        let c = try SensitivityConfig.resolve(p, width: ctx.shape.columns + (ctx.shape.hasTarget ? 1 : 0))
        return try SensitivitySampleOperator(config: c, context: ctx, state: bytes, where_: where_)
    },
    merge: OperatorDescriptor.merger(SensitivitySampleOperator.self))

let halpernDescriptor = OperatorDescriptor(
    kind: "halpern-solver",
    summary: "Least squares, ridge, lasso, box, logistic or a matrix game by (variance-reduced) Halpern iteration over the row store (Cai, Alacaoglu & Diakonikolas 2024). Multi-pass.",
    parameters: [
        ParameterSpec("problem", .choice(HalpernProblem.allCases.map(\.rawValue)), required: true,
                      doc: "objective (see the README's Output section); all but matrix-game need a target"),
        ParameterSpec("algorithm", .choice(["auto", "vr-halpern", "halpern"]), default: .string("auto"),
                      doc: "vr-halpern: Algorithm 1 (recursive variance reduction, √n mini-batches; games: Algorithm 2); halpern: deterministic full passes; auto: vr-halpern for regression, halpern for matrix-game (the faster one on dense games)"),
        ParameterSpec("lambda", .double(min: 0, max: .greatestFiniteMagnitude, openMin: false), default: .double(0),
                      doc: "λ ≥ 0 of ridge, lasso and logistic"),
        ParameterSpec("lower", .double(min: -.greatestFiniteMagnitude, max: .greatestFiniteMagnitude, openMin: false),
                      doc: "box: lower bound on every coefficient (absent: −∞)"),
        ParameterSpec("upper", .double(min: -.greatestFiniteMagnitude, max: .greatestFiniteMagnitude, openMin: false),
                      doc: "box: upper bound on every coefficient (absent: +∞)"),
        ParameterSpec("tolerance", .double(min: 0, max: 1, openMin: true), default: .double(1e-8),
                      doc: "stop when the residual is ≤ tolerance × its start value (games: duality gap ≤ tolerance × max|B|)"),
        ParameterSpec("max_oracle_calls", .int(min: 1, max: Int64.max / 2),
                      doc: "budget of component evaluations (with max_passes the smaller applies; both absent: max(1000·n, 2·10⁷)); when hit the run succeeds with converged: false and a warning"),
        ParameterSpec("max_passes", .double(min: 0, max: 1e15, openMin: true),
                      doc: "budget in effective passes over the rows (oracle calls / n)"),
        ParameterSpec("max_seconds", .double(min: 0, max: 1e9, openMin: true),
                      doc: "wall-clock limit of the solve (absent: none); a solve it stops is not reproducible (its warning says max_seconds)"),
        ParameterSpec("precondition", .choice(HalpernPrecondition.allCases.map(\.rawValue)), default: .string("auto"),
                      doc: "diagonal: iterate on unit-norm (with an intercept: centred) columns, residual and tolerance still in the original coordinates; none; auto: diagonal except for matrix-game"),
        ParameterSpec("intercept", .bool, default: .bool(false),
                      doc: "least-squares, ridge, lasso, logistic: fit an unpenalised intercept (summary.json intercept; solution stays the d coefficients)"),
        ParameterSpec("restarts", .bool, default: .bool(true),
                      doc: "re-anchor whenever the residual has halved (linear convergence on strongly monotone problems)"),
        ParameterSpec("sampling", .choice(["uniform", "importance"]), default: .string("uniform"),
                      doc: "vr-halpern mini-batches on regression problems: uniform rows (step from the mean-square √(n·Σ‖a_i‖⁴), O(1) memory) or ∝ ‖a_i‖² (step from the mean Σ‖a_i‖²; n prefix sums in RAM)"),
    ],
    outputs: ["solution", "residual_history (oracle calls, residual, restarts; ≤ 1025 rows)"], mergeable: false, multiPass: true, stateVersion: HalpernSolver.stateVersion,
    check: { p, hasTarget in
        guard let problem = p.string("problem").flatMap(HalpernProblem.init(rawValue:)) else { return "halpern-solver: unknown problem" }
        if problem.needsTarget && !hasTarget { return "halpern-solver: problem \(problem.rawValue) needs a target (set source.target)" }
        let lo = p.double("lower"), hi = p.double("upper")
        if (lo != nil || hi != nil) && problem != .box { return "halpern-solver: params.lower and params.upper only apply to problem: box" }
        if let lo, let hi, lo > hi { return "halpern-solver: params.lower (\(lo)) exceeds params.upper (\(hi))" }
        if problem == .box && lo == nil && hi == nil { return "halpern-solver: problem box needs params.lower and/or params.upper" }
        if p.bool("intercept") == true && (problem == .box || problem == .matrixGame) {
            return "halpern-solver: params.intercept applies to least-squares, ridge, lasso and logistic, not \(problem.rawValue)"
        }
        if p.string("precondition") == "diagonal" && problem == .matrixGame {
            return "halpern-solver: params.precondition: diagonal would change a matrix game (rescaled payoffs are another game); use auto or none"
        }
        return nil
    },
    make: { p, ctx in
        HalpernSolver(config: halpernConfig(p), columns: ctx.shape.columns, hasTarget: ctx.shape.hasTarget,
                      seed: ctx.seed, shard: ctx.shard, purpose: ctx.purpose)
    },
    restore: { p, ctx, bytes, where_ throws(EngineError) in
        try HalpernSolver(config: halpernConfig(p), columns: ctx.shape.columns, hasTarget: ctx.shape.hasTarget,
                          seed: ctx.seed, shard: ctx.shard, purpose: ctx.purpose, state: bytes, context: where_)
    },
    merge: nil)

func halpernConfig(_ p: ParamValues) -> HalpernConfig {
    let problem = HalpernProblem(rawValue: p.string("problem") ?? "") ?? .leastSquares
    let algorithm = p.string("algorithm") ?? "auto"
    return HalpernConfig(problem: problem,
                  varianceReduced: algorithm == "auto" ? HalpernConfig.defaultVarianceReduced(problem) : algorithm == "vr-halpern",
                  lambda: p.double("lambda") ?? 0,
                  lower: p.double("lower") ?? -.infinity, upper: p.double("upper") ?? .infinity,
                  tolerance: p.double("tolerance") ?? 1e-8, maxOracleCalls: p.int("max_oracle_calls"),
                  restarts: p.bool("restarts") ?? true, importanceSampling: p.string("sampling") == "importance",
                  maxPasses: p.double("max_passes"), maxSeconds: p.double("max_seconds"),
                  precondition: HalpernPrecondition(rawValue: p.string("precondition") ?? "auto") ?? .auto,
                  intercept: p.bool("intercept") ?? false)
}

let dppSampleDescriptor = OperatorDescriptor(
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
    mergeable: false, multiPass: true, emitsRows: true, stateVersion: DPPSampleOperator.stateVersion,
    check: { p, _ in dppCheck(p) },
    make: { p, ctx throws(EngineError) in
        DPPSampleOperator(config: try dppConfig(p, ctx), columns: ctx.shape.columns, hasTarget: ctx.shape.hasTarget, context: ctx)
    },
    restore: { p, ctx, bytes, where_ throws(EngineError) in
        try DPPSampleOperator(config: try dppConfig(p, ctx), columns: ctx.shape.columns, hasTarget: ctx.shape.hasTarget,
                              context: ctx, state: bytes, where: where_)
    },
    merge: nil)

/// Which parameters each mode takes (the manifest validator reports these with the operator's location).
func dppCheck(_ p: ParamValues) -> String? {
    guard let mode = p.string("mode").flatMap(DPPMode.init(rawValue:)) else { return nil }
    let hasN = p.int("samples") != nil, hasS = p.int("repetitions") != nil
    switch mode {
    case .iid, .volumeRescaled:
        if !hasN { return "dpp-sample: mode \(mode.rawValue) needs params.samples (n, the rows to draw)" }
        if hasS { return "dpp-sample: params.repetitions only applies to mode: repeated" }
    case .projection:
        if hasN { return "dpp-sample: mode projection draws exactly rank_used rows; params.samples applies to iid and volume-rescaled" }
        if hasS { return "dpp-sample: params.repetitions only applies to mode: repeated" }
    case .repeated:
        if !hasS { return "dpp-sample: mode repeated needs params.repetitions (s, the projection samples to pool)" }
        if hasN { return "dpp-sample: mode repeated draws s·rank_used rows; params.samples applies to iid and volume-rescaled" }
    }
    return nil
}

/// The resolved configuration; shape-dependent checks that validation could not make.
func dppConfig(_ p: ParamValues, _ ctx: OperatorContext) throws(EngineError) -> DPPSampleConfig {
    if let problem = dppCheck(p) { throw .usage("dpp-sample", problem) }
    guard let mode = p.string("mode").flatMap(DPPMode.init(rawValue:)) else {
        throw .usage("dpp-sample", "params.mode is required: iid | projection | volume-rescaled | repeated")
    }
    let m = ctx.shape.columns
    let n = Int(p.int("samples") ?? 0), s = Int(p.int("repetitions") ?? 1)
    if mode == .volumeRescaled && n < m {
        throw .usage("dpp-sample", "mode volume-rescaled draws rank_used ≤ \(m) rows from the DPP and the rest i.i.d., so params.samples must be ≥ the feature count \(m); found \(n)",
                     hint: "use mode: projection for exactly rank_used rows, or raise samples")
    }
    // The sample's rows are held in memory: refuse sizes whose output could not be allocated.
    let rowsOut = Double(mode == .repeated ? s * m : (mode == .projection ? m : n))
    if rowsOut * Double(m + 3) * 8 > Double(8 << 30) {
        throw .usage("dpp-sample", "a sample of \(Int(rowsOut)) rows of \(m) features needs more than 8 GiB", hint: "lower samples or repetitions")
    }
    return DPPSampleConfig(mode: mode, samples: n, repetitions: s, rankTolerance: p.double("rank_tolerance"))
}
