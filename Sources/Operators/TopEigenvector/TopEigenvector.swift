import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#endif

/// Shared pieces of the two `top-eigenvector` variants.
public enum TopEigenvector: Sendable {
    public enum Variant: String, Sendable, CaseIterable { case randomOrder = "random-order", oja }

    public static let stateVersion: UInt16 = 3   // 2: eigenvalue history; 3: oja keeps heavy rows for its eigenvalue
    public static let defaultHeavyMemoryMB = 256
    /// `order_suspect` when the order statistic exceeds this: P(|N(0,1)| > 5) ≈ 6·10⁻⁷ per group.
    public static let orderZLimit = 5.0
    static let winsorFactor = 8.0

    /// Power steps per schedule (the `blocks` parameter's `auto`): ⌈log₂ d⌉ + 2, as Kacham & Woodruff's
    /// analysis asks (log d steps take a random start, correlation ~1/d, to a constant; two more give room).
    /// Measured on spectrum data (d = 50, 500; n = 10⁵; R = 1.5 … 16; six seeds each, see the README): the
    /// error is flat from T = 8 to T = 20 for R ≥ 2 — the last block's sampling noise grows only slowly with
    /// T — while fewer steps let a poor random start show at R < 2. Larger values are safe when n is large.
    public static func autoBlocks(columns d: Int) -> Int {
        var l = 0
        while (1 << l) < d { l += 1 }
        return l + 2
    }

    /// The heavy-row factor ℓ² of the threshold ‖a‖² ≥ ‖A‖_F² / (d·ℓ²), ℓ = max(1, log₂ d): the paper's
    /// ‖A‖_F/√(d·polylog d) with polylog = log₂² d.
    static func heavyDenominator(columns d: Int) -> Double {
        let l = max(1.0, log2(Double(d)))
        return Double(d) * l * l
    }

    static let assumptionRandomOrder =
        "rows arrive in uniformly random order (every run of consecutive rows is a uniform sample of the "
        + "matrix); the guarantee, correlation 1 − O(1/√R) for the gap R = σ₁²/σ₂², holds only then. Sorted, "
        + "grouped or drifting input can give a wrong vector (see order_suspect); source.shuffle only mixes "
        + "rows within its buffer"
    /// What summary.json's `eigenvalue` is, in the summary itself.
    static let meaningRandomOrder =
        "an estimate of λ₁(AᵀWA) = σ₁², the top eigenvalue of the weighted Gram matrix of the rows seen (a sum "
        + "over rows, not a mean): kept heavy rows exactly, light rows from the last steps' Rayleigh quotients; "
        + "measured within 1% when rows arrive in random order, not certified. eigenvalue_bound [lower, upper] "
        + "contains λ₁ in any order"
    static let meaningOja =
        "an estimate of vᵀAᵀWAv for the returned unit v (≤ λ₁(AᵀWA) = σ₁², the top eigenvalue of the weighted "
        + "Gram matrix of the rows seen, a sum over rows, not a mean): kept heavy rows exactly, the others from "
        + "the last half of the stream; not certified. eigenvalue_bound [lower, upper] contains λ₁ in any order"
    static let assumptionOja =
        "none on the order (Oja's rule with a fixed learning rate, Price & Xun), but a gap R = σ₁²/σ₂² well "
        + "above log² d and no row with η‖a‖² large (see step_warning); the best of the learning-rate grid is "
        + "chosen by its Rayleigh quotient on the last half of the stream"

    /// The seeded Gaussian start, the same for every variant and copy: x_j = N(0,1) addressed by
    /// (seed, shard, purpose, j), normalised.
    static func initialVector(columns d: Int, seed: UInt64, shard: Int64, purpose: UInt32) -> [Double] {
        let rng = CounterRandom(seed: seed, shard: UInt64(bitPattern: shard), purpose: purpose ^ 0x70E1_6E01)
        var x = (0..<d).map { rng.normal(index: UInt64($0)) }
        var s = 0.0
        for v in x { s += v * v }
        let n = s.squareRoot()
        if n > 0 { for j in 0..<d { x[j] /= n } } else if d > 0 { x[0] = 1 }
        return x
    }

    /// Sign convention (README, "Output"): the largest-magnitude entry is positive (the first one on ties).
    static func signFixed(_ v: [Double]) -> [Double] {
        var k = 0
        for j in 0..<v.count where abs(v[j]) > abs(v[k]) { k = j }
        return v.isEmpty || v[k] >= 0 ? v : v.map { -$0 }
    }

    static func normalized(_ v: [Double]) -> [Double]? {
        var s = 0.0
        for x in v { s += x * x }
        let n = s.squareRoot()
        guard n > 0, n.isFinite else { return nil }
        return v.map { $0 / n }
    }

    static func dot(_ a: [Double], _ b: [Double]) -> Double {
        var s = 0.0
        for i in 0..<a.count { s += a[i] * b[i] }
        return s
    }
}
