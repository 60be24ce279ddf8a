import EngineCore

/// The `truncated-svd` kind: a rank-k SVD with a certified error bound over the stream
/// (`TruncatedSVDOperator`), or, with `group`, one per group of rows clustered under a shared bound
/// (`GroupedTruncatedSVDOperator`). Shamrai 2026, incremental SVD of concatenated matrices; docs/operators.md.
public enum TruncatedSVD: OperatorKind {
    public static let info = OperatorInfo(
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
                          doc: "gram: float32 forms each 64-row chunk's Gram matrix in float32 (≈ 1.4× faster at d = 256, Benchmarks/HISTORY.md; the margin grows by √k·γ₆₅·F² ≈ 1.6e-5·F² at k = 16), float64 adds every product in float64; auto: float32 for uncentred f32 sources with rank ≤ 24"),
            ParameterSpec("center", .bool, default: .bool(false),
                          doc: "subtract the running weighted mean (PCA, scikit-learn semantics; adds mean and explained_variance)"),
            ParameterSpec("decay", .double(min: 0, max: 1, openMin: true), default: .double(1),
                          doc: "forgetting factor per row (0 < decay ≤ 1), applied per block"),
            ParameterSpec("group", .column, doc: "feature column holding an integer group id: cluster the groups so each cluster's rank-k relative error stays ≤ epsilon (the column is not part of the matrix)"),
            ParameterSpec("epsilon", .double(min: 0, max: 1, openMin: true), doc: "relative error bound every cluster of groups must meet (with group)"),
        ],
        outputs: ["singular_values", "right_vectors", "mean, explained_variance, explained_variance_ratio (center: true)",
                  "groups, labels, cluster_singular_values, cluster_right_vectors, cluster_relative_error_bound, cluster_tail_energy_bound, cluster_frobenius_norm_sq (group)"],
        stateVersion: TruncatedSVDOperator.stateVersion, report: .spectrum,
        examples: [
            // Merged Gram eigenpairs move with the Gram's rounding amplified by the inverse gap (σ gaps ≳ 0.3 there).
            OperatorExample("truncated-svd-gram", [("rank", .int(2)), ("method", .string("gram"))], mergeTolerance: 1e-9),
            OperatorExample("truncated-svd-incremental", [("rank", .int(2)), ("method", .string("incremental")), ("block_rows", .int(16)),
                                                          ("center", .bool(true))]),
            OperatorExample("truncated-svd-decay", [("rank", .int(3)), ("decay", .double(0.99999))]),
            OperatorExample("truncated-svd-grouped", [("rank", .int(1)), ("group", .int(0)), ("epsilon", .double(0.9))], grouped: true),
        ],
        check: { p, _ in
            let grouped = p["group"] != nil && p["group"] != .null
            let eps = p["epsilon"] != nil && p["epsilon"] != .null
            if grouped && !eps { return "truncated-svd: params.group needs params.epsilon (the relative error each cluster must stay within)" }
            if eps && !grouped { return "truncated-svd: params.epsilon only applies with params.group (clustering of row groups)" }
            if grouped && p.bool("center") == true { return "truncated-svd: params.center is not supported with params.group" }
            if grouped && (p.double("decay") ?? 1) < 1 { return "truncated-svd: params.decay is not supported with params.group" }
            return nil
        })

    public static func make(_ p: ParamValues, _ ctx: OperatorContext) throws(EngineError) -> any StreamOperator {
        try build(p, ctx, state: nil, location: "")
    }
    public static func restore(_ state: [UInt8], _ p: ParamValues, _ ctx: OperatorContext, location: String) throws(EngineError) -> any StreamOperator {
        try build(p, ctx, state: state, location: location)
    }
    public static var mergeable: Bool { true }
    public static func merge(_ a: inout any StreamOperator, _ b: any StreamOperator) throws(EngineError) {
        if a is TruncatedSVDOperator { try mergeInstances(TruncatedSVDOperator.self, &a, b) } else { try mergeInstances(GroupedTruncatedSVDOperator.self, &a, b) }
    }

    /// Builds (or restores) a truncated-svd operator: grouped when params.group is set.
    static func build(_ p: ParamValues, _ ctx: OperatorContext, state: [UInt8]?, location: String) throws(EngineError) -> any StreamOperator {
        let d = ctx.shape.columns
        var group = p.int("group")
        if let name = p.string("group") {
            if let names = ctx.featureNames {
                group = Int64(try ColumnNames.resolve(ColumnName(name, location: "truncated-svd params.group"), in: names, what: "params.group"))
            } else if let state {
                // A merge has no header: the state records which column the name resolved to in its run.
                group = Int64(try GroupedTruncatedSVDOperator.groupColumn(inState: state, location: location))
            } else {
                group = Int64(try ColumnNames.resolve(ColumnName(name, location: "truncated-svd params.group"), in: nil, what: "params.group"))
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
                return try GroupedTruncatedSVDOperator(config: c, columns: d, groupColumn: Int(g), epsilon: eps, state: state, location: location)
            }
            return GroupedTruncatedSVDOperator(config: c, columns: d, groupColumn: Int(g), epsilon: eps)
        }
        let c = try TruncatedSVDConfig.resolve(p, columns: d, float32Values: ctx.shape.float32Values)
        try checkMemory(c, columns: d)
        if let state { return try TruncatedSVDOperator(config: c, columns: d, state: state, location: location) }
        return TruncatedSVDOperator(config: c, columns: d)
    }

    /// Refuses parameters whose buffers could not be allocated (before any row is read).
    static func checkMemory(_ c: TruncatedSVDConfig, columns d: Int) throws(EngineError) {
        let bytes = TruncatedSVDOperator.memoryEstimate(c, columns: d)
        if bytes > Double(16 << 30) {
            throw .usage("truncated-svd", "rank \(c.rank), block_rows \(c.blockRows) and \(d) columns with method \(c.method.rawValue) need ≈ \(Int(bytes / Double(1 << 30))) GiB",
                         hint: c.method == .gram ? "use method: incremental for wide inputs" : "lower rank, oversample or block_rows")
        }
    }
}
