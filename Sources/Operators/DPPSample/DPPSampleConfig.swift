import EngineCore
import LinearAlgebra

/// How `dpp-sample` draws its rows.
public enum DPPMode: String, Sendable, CaseIterable, Equatable {
    /// n rows i.i.d. from ρ_i = ℓ_i / r, with replacement (optimal weighted least squares, Cohen–Migliorati).
    case iid
    /// Exactly r rows from the projection DPP with kernel K = QQᵀ (volume sampling of size r).
    case projection
    /// n ≥ r rows: r from the projection DPP plus n − r i.i.d. from ρ (volume-rescaled sampling).
    case volumeRescaled = "volume-rescaled"
    /// s independent projection-DPP samples, pooled (n = s·r).
    case repeated

    var code: UInt8 {
        switch self { case .iid: return 0; case .projection: return 1; case .volumeRescaled: return 2; case .repeated: return 3 }
    }
    init?(code: UInt8) {
        switch code { case 0: self = .iid; case 1: self = .projection; case 2: self = .volumeRescaled; case 3: self = .repeated; default: return nil }
    }
}

/// The parameters of `dpp-sample` (docs/outputs.md).
public struct DPPSampleConfig: Sendable, Equatable {
    public var mode: DPPMode
    /// n: rows drawn (iid, volume-rescaled); unused otherwise.
    public var samples: Int
    /// s: independent projection samples pooled (repeated); 1 otherwise.
    public var repetitions: Int
    /// Singular values of the weighted feature matrix at or below `rankTolerance`·σ₁ count as zero; nil is
    /// numpy.linalg.matrix_rank's default, max(N, m)·ε.
    public var rankTolerance: Double?

    public init(mode: DPPMode, samples: Int = 0, repetitions: Int = 1, rankTolerance: Double? = nil) {
        self.mode = mode; self.samples = samples; self.repetitions = repetitions; self.rankTolerance = rankTolerance
    }

    /// Sampling steps after the basis step: one per projection sample or i.i.d. batch.
    var parts: Int {
        switch mode {
        case .iid, .projection: return 1
        case .volumeRescaled: return 2
        case .repeated: return repetitions
        }
    }
}

extension DPPSampleConfig {
    /// Which parameters each mode takes (the manifest validator reports these with the operator's location).
    static func problem(_ p: ParamValues) -> String? {
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
    init(params p: ParamValues, context ctx: OperatorContext) throws(EngineError) {
        if let problem = Self.problem(p) { throw .usage("dpp-sample", problem) }
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
        self.init(mode: mode, samples: n, repetitions: s, rankTolerance: p.double("rank_tolerance"))
    }
}
