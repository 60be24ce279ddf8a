import EngineCore

extension TopEigenvector: OperatorKind {
    public static let info = OperatorInfo(
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
        outputs: ["vector", "eigenvalue_history (rows, eigenvalue, heavy rows; ≤ 1025 rows)"],
        stateVersion: stateVersion,
        mergeHint: "top-eigenvector has no mergeable form with a guarantee (Price & Xun); run gram (exact AᵀA) or truncated-svd on the shards, merge those, and take the top eigenvector of the merged result",
        report: .eigenvalueTrace,
        examples: [OperatorExample("top-eigenvector", target: false),
                   OperatorExample("top-eigenvector-oja", [("variant", .string("oja"))], target: false)])

    public static func make(_ p: ParamValues, _ ctx: OperatorContext) throws(EngineError) -> any StreamOperator {
        if p.string("variant") == "oja" {
            return OjaTopEigenvector(columns: ctx.shape.columns, rowsKnown: ctx.shape.rowsKnown, seed: ctx.seed,
                                     shard: ctx.shard, purpose: ctx.purpose)
        }
        return RandomOrderTopEigenvector(columns: ctx.shape.columns, blocks: p.int("blocks").map { Int($0) },
                                         rowsKnown: ctx.shape.rowsKnown, heavyMemoryMB: Int(p.int("heavy_memory_mb") ?? 256),
                                         seed: ctx.seed, shard: ctx.shard, purpose: ctx.purpose)
    }
    public static func restore(_ bytes: [UInt8], _ p: ParamValues, _ ctx: OperatorContext, location: String) throws(EngineError) -> any StreamOperator {
        if p.string("variant") == "oja" {
            return try OjaTopEigenvector(columns: ctx.shape.columns, rowsKnown: ctx.shape.rowsKnown, seed: ctx.seed,
                                         shard: ctx.shard, purpose: ctx.purpose, state: bytes, location: location)
        }
        return try RandomOrderTopEigenvector(columns: ctx.shape.columns, blocks: p.int("blocks").map { Int($0) },
                                             rowsKnown: ctx.shape.rowsKnown, heavyMemoryMB: Int(p.int("heavy_memory_mb") ?? 256),
                                             seed: ctx.seed, shard: ctx.shard, purpose: ctx.purpose, state: bytes, location: location)
    }
}
