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
