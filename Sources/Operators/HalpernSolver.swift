import EngineCore
import LinearAlgebra

/// The problems `halpern-solver` solves (objectives: DESIGN.md §4).
public enum HalpernProblem: String, Sendable, CaseIterable {
    case leastSquares = "least-squares", ridge, lasso, box, logistic, matrixGame = "matrix-game"
    var needsTarget: Bool { self != .matrixGame }
}

/// Parameters of one solve.
public struct HalpernConfig: Sendable, Equatable {
    public var problem: HalpernProblem
    /// Algorithm 1 of Cai, Alacaoglu & Diakonikolas (vr-halpern) instead of deterministic Halpern.
    public var varianceReduced: Bool
    public var lambda: Double
    public var lower: Double
    public var upper: Double
    public var tolerance: Double
    /// nil: 1000·n.
    public var maxOracleCalls: Int64?
    /// Re-anchor when the residual has halved (linear convergence on strongly monotone problems).
    public var restarts: Bool
    /// vr-halpern on regression problems: draw mini-batch rows ∝ w_i‖a_i‖² instead of uniformly (keeps n
    /// prefix sums in RAM; the step then uses the mean, not the maximum, of the row norms).
    public var importanceSampling: Bool

    public init(problem: HalpernProblem, varianceReduced: Bool = true, lambda: Double = 0,
                lower: Double = -.infinity, upper: Double = .infinity, tolerance: Double = 1e-8,
                maxOracleCalls: Int64? = nil, restarts: Bool = true, importanceSampling: Bool = false) {
        self.problem = problem; self.varianceReduced = varianceReduced; self.lambda = lambda
        self.lower = lower; self.upper = upper; self.tolerance = tolerance
        self.maxOracleCalls = maxOracleCalls; self.restarts = restarts
        self.importanceSampling = importanceSampling
    }
}

/// Solves 0 ∈ F(u) + G(u), F = Σ_i F_i over the rows, by Halpern iteration — Cai, Alacaoglu & Diakonikolas,
/// "Variance Reduced Halpern Iteration for Finite-Sum Monotone Inclusions" (ICLR 2024, arXiv 2310.02987).
///
/// Problems (DESIGN.md §4; sums over rows, weights as multiplicities, no intercept): least squares, ridge,
/// lasso (G = λ‖·‖₁, prox = soft threshold), box-constrained least squares (G = normal cone of
/// [lower, upper]^d, resolvent = clamp), logistic (y ∈ {−1, 1}, 0 read as −1; F_i = −w_i y_i a_i σ(−y_i a_iᵀx),
/// plus λx), and matrix games (F(x, y) = (By, −Bᵀx), G = normal cones of the two simplices; row weights are
/// ignored there, since duplicating a row of B does not change the game).
///
/// Algorithms:
/// - `halpern` (deterministic): u_{k+1} = λ_k u₀ + (1 − λ_k) J_{ηG}(u_k − ηF(u_k)), λ_k = 1/(k+2), one full
///   pass (n component evaluations) per iteration, η = 1/L with L = ‖AᵀWA‖₂ (+λ; /4 for logistic) estimated
///   by 10 power iterations over the row store (the Rayleigh quotient; it underestimates L, but any η < 2/L
///   keeps the forward step nonexpansive, so a factor-2 safety margin is built in).
/// - `vr-halpern` (Algorithm 1, cocoercive problems): the same recursion with F(u_k) replaced by a recursive
///   (PAGE/SARAH) estimator: with probability p_k = max(4/(k+5), 1/√n) a full pass, otherwise
///   F̃_k = F̃_{k−1} + (n/b) Σ_{i∈S} (F_i(u_k) − F_i(u_{k−1})) over b = ⌈√n⌉ rows drawn uniformly with
///   replacement. p_k = 4/(k+5) is the schedule of the stochastic-Halpern analysis (Cai et al. 2022), whose
///   expected full-pass cost is O(n log k); the 1/√n floor (the paper's finite-sum choice) keeps the
///   estimator's accumulated variance bounded on long restart cycles at no more than the mini-batches' own
///   cost. Uniform sampling needs the on-average constant L_vr = n·maxᵢ w_i‖a_i‖² (+λ; /4 for logistic),
///   computed in one pass, and η = 1/L_vr. With `sampling: importance` rows are drawn ∝ w_i‖a_i‖² (inverse
///   CDF over n prefix sums, built in one pass before the first mini-batch: 8 bytes of RAM per row) and the
///   estimator divides by the draw probability, so the mean suffices: L_vr = Σᵢ w_i‖a_i‖² = trace(AᵀWA).
/// - matrix games, `halpern`: inexact Halpern, u_{k+1} = λ_k u₀ + (1 − λ_k) z_k with z_k ≈ J_{η(F+G)}(u_k)
///   computed by the warm-started fixed-point iteration z ← Π(u_k − ηF(z)) (a contraction: η = 0.45/‖B‖₂),
///   stopped when its step is ≤ η·r_anchor/(k+2)².
/// - matrix games, `vr-halpern` (Algorithm 2): the same inexact Halpern with η = 1/‖B‖₂, the resolvent
///   computed by the loopless variance-reduced extragradient of Alacaoglu & Malitsky (2022) on the strongly
///   monotone inner problem 0 ∈ F(z) + (z − u_k)/η + G(z): snapshot w with F(w) from a full pass, then per
///   inner step z̄ = (1−p)z + pw, z½ = Π(z̄ − τĝ(w)), z ← Π(z̄ − τ[ĝ(w) + (n/b)Σ_{i∈S}(F_i(z½) − F_i(w)) +
///   (z½ − w)/η]) over b = max(⌈√n⌉, 32) rows drawn uniformly, and w ← z with probability p = b/n. The
///   step τ = 0.9√p/L̂ uses the mini-batch's mean-square constant L̂ = 1.1‖B‖₂·√(1 + n/b) + 1/η (F_i of a
///   row touches x_i and y only, so Σᵢ‖F_iΔ‖² = ‖BΔy‖² + Σᵢ Δx_i²‖B_i‖² ≤ ‖B‖₂²‖Δ‖²; 1.1 covers the power
///   iteration's underestimate of ‖B‖₂). At each refresh the inner residual
///   r = ‖w − Π(u_k − ηF(w))‖ bounds ‖w − z*‖ ≤ (3 + η‖B‖₂)·r (strong monotonicity, μ = 1/η), and w is
///   accepted as z_k once that bound is ≤ η·r_anchor/(k+2)². For dense B a row carries 1/n of F, so uniform
///   row sampling has no √n advantage here (Σᵢ‖F_i‖² ≈ ‖F‖²): it is the algorithm, not a speed-up, and the
///   benchmark says so.
/// - Restarts: u₀ ← u_k whenever the residual has halved since the last anchor.
///
/// Residual (reported, exit test): ‖u − J_{ηᵣG}(u − ηᵣF(u))‖/ηᵣ at the returned point (‖F(u)‖ when G = 0),
/// from a full pass, with the algorithm-independent ηᵣ = 1/trace(AᵀWA) (+λ; /4 for logistic; 1/‖B‖_F for
/// games); the solve stops when it is ≤ tolerance × its value at the start (games: duality gap ≤ tolerance ×
/// max|B_ij|), or when `oracle_calls` reaches the budget (then `converged` is false).
///
/// Oracle calls: one per component evaluation F_i (a full pass is n, a mini-batch 2b), including the
/// setup passes (the norm pass, power iterations) and the full passes for residuals.
/// Cost: O(d) per component evaluation at BLAS-2 speed over fixed blocks of the row store. Memory: O(d)
/// (games: O(n + d) — the row player's strategy has one entry per row; importance sampling: n prefix sums)
/// plus one block of rows; the row store itself is on disk beyond `rowstore.memory_mb`.
/// Determinism: blocks are read at fixed row positions; every random draw is addressed by
/// (seed, shard, purpose, iteration, draw), so the state (anchor, iterate, estimator, counters) is complete
/// and a resumed solve is byte-identical.
/// Not promised: convergence without (restricted) strong monotonicity at the linear rate; a logistic
/// problem on separable data with λ = 0 has no minimiser (the budget ends it).
public struct HalpernSolver: IterativeOperator {
    public static let stateVersion: UInt16 = 3   // 3: residual history
    static let powerIterations = 10
    static let restartFactor = 0.5
    static let innerCap = 60
    static let purposeRefresh: UInt32 = 0x4841_0001
    static let purposeSample: UInt32 = 0x4841_0002
    static let purposePower: UInt32 = 0x4841_0003
    static let purposeInnerRefresh: UInt32 = 0x4841_0004
    static let purposeInnerSample: UInt32 = 0x4841_0005
    /// Algorithm 2: inner work (in full passes' worth of oracle calls) after which the next snapshot is
    /// accepted whatever its residual, so a too-tight inner tolerance cannot stall the outer iteration.
    static let innerPassCap = 64
    /// Algorithm 2's smallest mini-batch: below it a row read costs less than the O(n + d) projections of an
    /// inner step, so tiny batches only add steps.
    static let minGameBatch = 32

    enum Phase: UInt8 { case scan = 0, power = 1, start = 2, iterate = 3, done = 4 }

    public let config: HalpernConfig
    public let columns: Int
    public let hasTarget: Bool
    let seed: UInt64
    let shard: UInt64
    let purpose: UInt32
    let blockRows: Int

    // Stream.
    var rowsSeen: Int64 = 0
    var weightSum = 0.0
    // Setup.
    var phase = Phase.scan
    var n = 0
    var maxComponent = 0.0
    var trace = 0.0
    var maxAbs = 0.0
    var powerIter = 0
    var powerVector: [Double] = []
    var powerEstimate = 0.0
    var lipschitz = 0.0
    var eta = 0.0
    var etaResidual = 0.0
    // Iteration.
    var anchor: [Double] = []
    var iterate: [Double] = []
    /// F(iterate) when `fresh` (regression), the VR estimate otherwise; games: F(inner).
    var estimate: [Double] = []
    var inner: [Double] = []
    /// Algorithm 2 (VR games): the extragradient snapshot w; `estimate` holds F(w).
    var snapshot: [Double] = []
    var innerJ = 0
    var k: Int64 = 0
    var t: Int64 = 0
    var iterations: Int64 = 0
    var oracleCalls: Int64 = 0
    var restartCount: Int64 = 0
    var fresh = false
    var residual = Double.nan
    var initialResidual = Double.nan
    var anchorResidual = Double.nan
    var gap = Double.nan
    var value = Double.nan
    var converged = false
    /// (oracle calls, residual, restarts so far) at every full-pass residual: `residual_history.npy`.
    var history = BoundedHistory(width: 3)

    // Scratch, never state.
    var scratch: RowBatch?
    var tmp: [Double] = []
    var work: [Double] = []
    var sortBuffer: [Double] = []
    /// Importance sampling: prefix sums of w_i‖a_i‖² (n + 1), built by `buildCumulative` when first needed.
    var cumulative: [Double] = []
    var vrScratch: [[Double]] = []

    public init(config: HalpernConfig, columns: Int, hasTarget: Bool, seed: UInt64 = 0, shard: Int64 = 0, purpose: UInt32 = 0) {
        self.config = config
        self.columns = columns
        self.hasTarget = hasTarget
        self.seed = seed
        self.shard = UInt64(bitPattern: shard)
        self.purpose = purpose
        self.blockRows = max(16, min(4096, (1 << 18) / max(1, columns)))
    }

    var dimension: Int { config.problem == .matrixGame ? n + columns : columns }
    var budget: Int64 { config.maxOracleCalls ?? Int64(1000) * Int64(max(1, n)) }
    var isGame: Bool { config.problem == .matrixGame }
    /// λ inside F (ridge, logistic); lasso's λ lives in G.
    var smoothLambda: Double { config.problem == .ridge || config.problem == .logistic ? config.lambda : 0 }
    var curvature: Double { config.problem == .logistic ? 0.25 : 1 }
    var importance: Bool { config.importanceSampling && config.varianceReduced && !isGame }

    // MARK: stream

    public mutating func update(_ batch: RowBatch) throws(EngineError) {
        if config.problem == .logistic, let y = batch.targets {
            for r in 0..<batch.count where !(y[r] == 1 || y[r] == -1 || y[r] == 0) {
                throw .data("row \(batch.indices[r] + 1)", "logistic labels must be -1, 0 or 1, found \(y[r])")
            }
        }
        rowsSeen += Int64(batch.count)
        weightSum += batch.weightSum
    }

    // MARK: steps

    public mutating func step(_ rows: RowStoreReader) throws(EngineError) -> StepResult {
        switch phase {
        case .scan:
            scan(rows)
        case .power:
            powerStep(rows)
        case .start:
            start(rows)
        case .iterate:
            if isGame {
                if config.varianceReduced { vrGameStep(rows) } else { gameStep(rows) }
            } else if config.varianceReduced {
                vrStep(rows)
            } else {
                deterministicStep(rows)
            }
        case .done:
            break
        }
        return phase == .done ? .done : .more
    }

    mutating func batchBuffer(_ rows: RowStoreReader) -> RowBatch {
        if let b = scratch.take() { return b }
        return RowBatch(columns: columns, capacity: blockRows, hasTarget: rows.hasTarget, hasWeight: true)
    }

    /// One pass: row norms (for L_vr and ηᵣ) and max|B_ij| (games).
    mutating func scan(_ rows: RowStoreReader) {
        n = rows.count
        if n == 0 { phase = .done; return }
        var b = batchBuffer(rows)
        let d = columns
        var start = 0
        while start < n {
            rows.read(start, blockRows, into: &b)
            for r in 0..<b.count {
                var s = 0.0
                for j in 0..<d { let v = b.features[r * d + j]; s += v * v; maxAbs = max(maxAbs, abs(v)) }
                let w = isGame ? 1 : b.weight(r)
                maxComponent = max(maxComponent, w * s)
                trace += w * s
            }
            start += b.count
        }
        scratch = b
        oracleCalls += Int64(n)
        if isGame || !config.varianceReduced {
            let rng = CounterRandom(seed: seed, shard: shard, purpose: purpose ^ Self.purposePower)
            powerVector = (0..<d).map { rng.normal(index: UInt64($0)) }
            normalize(&powerVector)
            phase = d == 0 ? .start : .power
        } else {
            phase = .start
        }
    }

    /// The prefix sums of w_i‖a_i‖² for importance sampling: built by one pass over the row store when the
    /// first mini-batch needs them, and again after a restore (scratch, not state: same rows, same order, same
    /// sums). Not an oracle cost (the norm pass already counted these rows), so a resumed solve reports what
    /// the uninterrupted one does.
    mutating func buildCumulative(_ rows: RowStoreReader) {
        var b = batchBuffer(rows)
        let d = columns
        var total = 0.0
        cumulative = [0]
        cumulative.reserveCapacity(n + 1)
        var start = 0
        while start < n {
            rows.read(start, blockRows, into: &b)
            for r in 0..<b.count {
                var s = 0.0
                for j in 0..<d { let v = b.features[r * d + j]; s += v * v }
                total += b.weight(r) * s
                cumulative.append(total)
            }
            start += b.count
        }
        scratch = b
    }

    /// The row whose prefix-sum interval holds u·total (rows of zero mass are never drawn).
    func importanceDraw(_ u: Double) -> Int {
        let target = u * cumulative[n]
        var lo = 0, hi = n - 1
        while lo < hi {
            let mid = (lo + hi) / 2
            if cumulative[mid + 1] > target { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }

    func normalize(_ v: inout [Double]) {
        var s = 0.0
        for x in v { s += x * x }
        s = s.squareRoot()
        if s > 0 { for i in v.indices { v[i] /= s } }
    }

    /// One power iteration on AᵀWA (games: BᵀB).
    mutating func powerStep(_ rows: RowStoreReader) {
        var b = batchBuffer(rows)
        let d = columns
        var w = [Double](repeating: 0, count: d)
        if tmp.count < blockRows { tmp = [Double](repeating: 0, count: blockRows) }
        var start = 0
        while start < n {
            rows.read(start, blockRows, into: &b)
            let c = b.count
            b.features.withUnsafeBufferPointer { a in
                powerVector.withUnsafeBufferPointer { v in
                    tmp.withUnsafeMutableBufferPointer { t in
                        BlockKernels.gemv(a.baseAddress!, rows: c, n: d, v: v.baseAddress!, into: t.baseAddress!)
                    }
                }
            }
            if !isGame { for r in 0..<c { tmp[r] *= b.weight(r) } }
            b.features.withUnsafeBufferPointer { a in
                tmp.withUnsafeBufferPointer { t in
                    w.withUnsafeMutableBufferPointer { wp in
                        BlockKernels.gemvTransposedAccumulate(a.baseAddress!, rows: c, n: d, v: t.baseAddress!, into: wp.baseAddress!)
                    }
                }
            }
            start += c
        }
        scratch = b
        oracleCalls += Int64(n)
        var rho = 0.0
        for j in 0..<d { rho += powerVector[j] * w[j] }
        powerEstimate = max(powerEstimate, rho)
        normalize(&w)
        powerVector = w
        powerIter += 1
        if powerIter >= Self.powerIterations || rho == 0 { phase = .start }
    }

    /// Step sizes, the starting point and its residual.
    mutating func start(_ rows: RowStoreReader) {
        let m = dimension
        if isGame {
            lipschitz = powerEstimate.squareRoot()
            eta = lipschitz > 0 ? (config.varianceReduced ? 1 : 0.45) / lipschitz : 1
            etaResidual = trace > 0 ? 1 / trace.squareRoot() : 1
        } else {
            lipschitz = config.varianceReduced
                ? (importance ? trace : Double(n) * maxComponent) * curvature + smoothLambda
                : powerEstimate * curvature + smoothLambda
            eta = lipschitz > 0 ? 1 / lipschitz : 1
            let lr = trace * curvature + smoothLambda
            etaResidual = lr > 0 ? 1 / lr : 1
        }
        var a0 = [Double](repeating: 0, count: m)
        if isGame {
            for i in 0..<n { a0[i] = 1 / Double(n) }
            for j in 0..<columns { a0[n + j] = 1 / Double(columns) }
        } else {
            applyResolvent(&a0, step: 1)
        }
        anchor = a0
        iterate = anchor
        inner = anchor
        snapshot = isGame && config.varianceReduced ? anchor : []
        estimate = [Double](repeating: 0, count: m)
        work = [Double](repeating: 0, count: m)
        evaluateFresh(rows)
        initialResidual = residual
        anchorResidual = residual
        phase = .iterate
        if shouldStop() { phase = .done }
    }

    // MARK: the operator and the resolvent

    /// `estimate` = F(`iterate`) exactly (games: F(`inner`) with `inner` == `iterate`), then the residual
    /// (and gap, value); n oracle calls.
    mutating func evaluateFresh(_ rows: RowStoreReader) {
        if isGame { inner = iterate }
        if !snapshot.isEmpty { snapshot = iterate }
        fullF(rows, at: isGame ? inner : iterate)
        fresh = true
        residual = forwardBackwardResidual(iterate, estimate, step: etaResidual)
        if isGame {
            var minBy = Double.infinity, maxBtx = -Double.infinity, v = 0.0
            for i in 0..<n { minBy = min(minBy, estimate[i]); v += iterate[i] * estimate[i] }
            for j in 0..<columns { maxBtx = max(maxBtx, -estimate[n + j]) }
            gap = maxBtx - minBy
            value = v
        }
        history.record([Double(oracleCalls), residual, Double(restartCount)])
    }

    /// `estimate` = F(u) = Σ_i F_i(u) (+λu), by blocks at fixed row positions.
    mutating func fullF(_ rows: RowStoreReader, at u: [Double]) {
        var b = batchBuffer(rows)
        let d = columns, game = isGame, problem = config.problem
        if tmp.count < blockRows { tmp = [Double](repeating: 0, count: blockRows) }
        for i in estimate.indices { estimate[i] = 0 }
        var start = 0
        while start < n {
            rows.read(start, blockRows, into: &b)
            let c = b.count
            if game {
                // x-part: (B y)_i for the block's rows; y-part: −Σ x_i B_i.
                b.features.withUnsafeBufferPointer { a in
                    u.withUnsafeBufferPointer { up in
                        estimate.withUnsafeMutableBufferPointer { e in
                            BlockKernels.gemv(a.baseAddress!, rows: c, n: d, v: up.baseAddress! + n, into: e.baseAddress! + start)
                        }
                    }
                }
                for r in 0..<c { tmp[r] = -u[start + r] }
                b.features.withUnsafeBufferPointer { a in
                    tmp.withUnsafeBufferPointer { tp in
                        estimate.withUnsafeMutableBufferPointer { e in
                            BlockKernels.gemvTransposedAccumulate(a.baseAddress!, rows: c, n: d, v: tp.baseAddress!, into: e.baseAddress! + n)
                        }
                    }
                }
            } else {
                b.features.withUnsafeBufferPointer { a in
                    u.withUnsafeBufferPointer { up in
                        tmp.withUnsafeMutableBufferPointer { tp in
                            BlockKernels.gemv(a.baseAddress!, rows: c, n: d, v: up.baseAddress!, into: tp.baseAddress!)
                        }
                    }
                }
                for r in 0..<c { tmp[r] = b.weight(r) * Self.derivative(problem, tmp[r], b.targets?[r] ?? 0) }
                b.features.withUnsafeBufferPointer { a in
                    tmp.withUnsafeBufferPointer { tp in
                        estimate.withUnsafeMutableBufferPointer { e in
                            BlockKernels.gemvTransposedAccumulate(a.baseAddress!, rows: c, n: d, v: tp.baseAddress!, into: e.baseAddress!)
                        }
                    }
                }
            }
            start += c
        }
        scratch = b
        let lam = smoothLambda
        if lam != 0 { for j in 0..<d { estimate[j] += lam * u[j] } }
        oracleCalls += Int64(n)
    }

    /// ∂/∂z of the row loss at z = a_iᵀx: least squares z − y; logistic −y·σ(−yz) (0 labels read as −1).
    @inline(__always)
    static func derivative(_ p: HalpernProblem, _ z: Double, _ y: Double) -> Double {
        if p == .logistic {
            let s = y == 0 ? -1.0 : y
            let e = s * z
            // σ(−e) = 1/(1 + exp(e)), written to avoid overflow for large |e|.
            if e > 0 { let q = exp(-e); return -s * q / (1 + q) }
            return -s / (1 + exp(e))
        }
        return z - y
    }

    /// v ← J_{step·G}(v): soft threshold (lasso), clamp (box), simplex projections (games), identity.
    mutating func applyResolvent(_ v: inout [Double], step: Double) {
        switch config.problem {
        case .lasso:
            let th = step * config.lambda
            for i in v.indices { let x = v[i]; v[i] = x > th ? x - th : (x < -th ? x + th : 0) }
        case .box:
            for i in v.indices { v[i] = min(config.upper, max(config.lower, v[i])) }
        case .matrixGame:
            projectSimplex(&v, 0, n)
            projectSimplex(&v, n, n + columns)
        default:
            break
        }
    }

    /// Euclidean projection of v[lo..<hi] onto the probability simplex (sort-based, Held et al. 1974).
    mutating func projectSimplex(_ v: inout [Double], _ lo: Int, _ hi: Int) {
        let m = hi - lo
        if m == 0 { return }
        if sortBuffer.count < m { sortBuffer = [Double](repeating: 0, count: m) }
        for i in 0..<m { sortBuffer[i] = v[lo + i] }
        sortBuffer.withUnsafeMutableBufferPointer { p in
            var head = UnsafeMutableBufferPointer(rebasing: p[0..<m])
            head.sort(by: >)
        }
        var cum = 0.0, theta = 0.0
        for i in 0..<m {
            cum += sortBuffer[i]
            let th = (cum - 1) / Double(i + 1)
            if sortBuffer[i] - th > 0 { theta = th }
        }
        for i in lo..<hi { v[i] = max(0, v[i] - theta) }
    }

    /// ‖u − J_{sG}(u − sF)‖/s.
    mutating func forwardBackwardResidual(_ u: [Double], _ f: [Double], step s: Double) -> Double {
        var w = work
        work = []
        for i in u.indices { w[i] = u[i] - s * f[i] }
        applyResolvent(&w, step: s)
        var r = 0.0
        for i in u.indices { let e = u[i] - w[i]; r += e * e }
        work = w
        return r.squareRoot() / s
    }

    // MARK: exit and restarts

    /// The exit test on a fresh residual, the budget, or a non-finite residual.
    mutating func shouldStop() -> Bool {
        if isGame {
            if gap <= config.tolerance * maxAbs { converged = true; return true }
        } else if residual <= config.tolerance * initialResidual || initialResidual == 0 {
            converged = true; return true
        }
        return oracleCalls >= budget || !residual.isFinite
    }

    mutating func maybeRestart() {
        guard config.restarts, k > 0, residual <= Self.restartFactor * anchorResidual else { return }
        anchor = iterate
        anchorResidual = residual
        k = 0
        restartCount += 1
    }

    /// u ← λ_k u₀ + (1 − λ_k)·J_{ηG}(u − η·estimate).
    mutating func halpernUpdate(into next: inout [Double]) {
        let lam = 1 / Double(k + 2)
        for i in iterate.indices { next[i] = iterate[i] - eta * estimate[i] }
        applyResolvent(&next, step: eta)
        for i in iterate.indices { next[i] = lam * anchor[i] + (1 - lam) * next[i] }
        k += 1; t += 1; iterations += 1
    }

    // MARK: algorithms

    /// One deterministic Halpern iteration (one full pass).
    mutating func deterministicStep(_ rows: RowStoreReader) {
        if shouldStop() { phase = .done; return }
        maybeRestart()
        var next = [Double](repeating: 0, count: iterate.count)
        halpernUpdate(into: &next)
        swap(&iterate, &next)
        evaluateFresh(rows)
        if shouldStop() { phase = .done }
    }

    /// Algorithm 1 iterations until about n oracle calls were spent (a step of bounded work).
    mutating func vrStep(_ rows: RowStoreReader) {
        let callsAtStart = oracleCalls
        let b = Int(Double(n).squareRoot().rounded(.up))
        let refresh = CounterRandom(seed: seed, shard: shard, purpose: purpose ^ Self.purposeRefresh)
        let sampler = CounterRandom(seed: seed, shard: shard, purpose: purpose ^ Self.purposeSample)
        var next = [Double](repeating: 0, count: iterate.count)
        var one = RowBatch(columns: columns, capacity: 1, hasTarget: rows.hasTarget, hasWeight: true)
        let d = columns, problem = config.problem, scale = Double(n) / Double(b), lam = smoothLambda
        if importance && cumulative.count != n + 1 { buildCumulative(rows) }
        let total = importance ? cumulative[n] : 0
        repeat {
            if fresh {
                if shouldStop() { phase = .done; return }
                maybeRestart()
            } else if oracleCalls >= budget {
                // Budget spent between refreshes: one more pass so the reported residual is the true one.
                evaluateFresh(rows)
                _ = shouldStop()
                phase = .done
                return
            }
            halpernUpdate(into: &next)
            let p = max(4 / Double(k + 5), 1 / Double(n).squareRoot())
            if refresh.uniform(index: UInt64(t)) < p {
                swap(&iterate, &next)
                evaluateFresh(rows)
            } else {
                for j in 0..<b {
                    let u = sampler.uniform(index: UInt64(t), lane: UInt32(j))
                    let i = importance ? importanceDraw(u) : min(n - 1, Int(u * Double(n)))
                    rows.read(i, 1, into: &one)
                    var zNew = 0.0, zOld = 0.0, norm2 = 0.0
                    for q in 0..<d { let a = one.features[q]; zNew += a * next[q]; zOld += a * iterate[q]; norm2 += a * a }
                    let y = one.targets?[0] ?? 0
                    let diff = Self.derivative(problem, zNew, y) - Self.derivative(problem, zOld, y)
                    // Uniform: (n/b)·w_i·ΔF_i. Importance, q_i = w_i‖a_i‖²/T: w_i·ΔF_i/(b·q_i) = T·ΔF_i/(b‖a_i‖²).
                    let c = importance ? (norm2 > 0 ? total / (Double(b) * norm2) * diff : 0) : scale * one.weight(0) * diff
                    if c != 0 { for q in 0..<d { estimate[q] += c * one.features[q] } }
                }
                if lam != 0 { for q in 0..<d { estimate[q] += lam * (next[q] - iterate[q]) } }
                oracleCalls += Int64(2 * b)
                fresh = false
                swap(&iterate, &next)
            }
        } while oracleCalls - callsAtStart < Int64(n)
        if fresh && shouldStop() { phase = .done }
    }

    /// One inner fixed-point step of the inexact Halpern iteration for games (one full pass).
    mutating func gameStep(_ rows: RowStoreReader) {
        if innerJ == 0 {
            // inner == iterate and `estimate` = F(iterate): the residual and gap are current.
            if shouldStop() { phase = .done; return }
            maybeRestart()
        }
        var z = work
        work = []
        for i in z.indices { z[i] = iterate[i] - eta * estimate[i] }
        applyResolvent(&z, step: eta)
        var diff = 0.0
        for i in z.indices { let e = z[i] - inner[i]; diff += e * e }
        diff = diff.squareRoot()
        inner = z
        work = z
        innerJ += 1
        let kk = Double(k + 2)
        if diff <= eta * anchorResidual / (kk * kk) || innerJ >= Self.innerCap || diff == 0 {
            let lam = 1 / kk
            for i in iterate.indices { iterate[i] = lam * anchor[i] + (1 - lam) * inner[i] }
            k += 1; t += 1; iterations += 1
            innerJ = 0
            evaluateFresh(rows)
            if shouldStop() { phase = .done }
        } else {
            fullF(rows, at: inner)
        }
    }

    /// Algorithm 2 for games: inner VR-extragradient steps (and the outer updates they complete) until about
    /// n oracle calls were spent. Invariant between inner steps: `estimate` = F(`snapshot`).
    mutating func vrGameStep(_ rows: RowStoreReader) {
        let callsAtStart = oracleCalls
        let m = n + columns, d = columns
        let b = min(n, max(Self.minGameBatch, Int(Double(n).squareRoot().rounded(.up))))
        let p = min(1, Double(b) / Double(n))
        let normB = 1.1 * lipschitz
        let lHat = normB * (1 + Double(n) / Double(b)).squareRoot() + 1 / eta
        let tau = 0.9 * p.squareRoot() / lHat
        let scale = Double(n) / Double(b)
        let refresh = CounterRandom(seed: seed, shard: shard, purpose: purpose ^ Self.purposeInnerRefresh)
        let sampler = CounterRandom(seed: seed, shard: shard, purpose: purpose ^ Self.purposeInnerSample)
        let innerCap = Self.innerPassCap * n / (2 * b) + 1
        if vrScratch.count != 4 || vrScratch[0].count != m { vrScratch = [[Double]](repeating: [Double](repeating: 0, count: m), count: 4) }
        var zbar = vrScratch[0], g = vrScratch[1], half = vrScratch[2], dir = vrScratch[3]
        vrScratch = []
        defer { vrScratch = [zbar, g, half, dir] }
        var one = RowBatch(columns: columns, capacity: 1, hasTarget: rows.hasTarget, hasWeight: true)
        repeat {
            if innerJ == 0 {
                // `iterate` was just evaluated: residual and gap are current.
                if shouldStop() { phase = .done; return }
                maybeRestart()
            } else if oracleCalls >= budget {
                phase = .done  // `iterate` has not moved since its fresh evaluation
                return
            }
            // ĝ(w) = F(w) + (w − u_k)/η, the inner operator at the snapshot.
            for i in 0..<m {
                zbar[i] = (1 - p) * inner[i] + p * snapshot[i]
                g[i] = estimate[i] + (snapshot[i] - iterate[i]) / eta
                half[i] = zbar[i] - tau * g[i]
            }
            applyResolvent(&half, step: tau)
            // dir = ĝ(w) + (z½ − w)/η + (n/b)Σ_{i∈S}(F_i(z½) − F_i(w)); F_i(x, y) = (e_i·B_i y, −x_i·B_iᵀ).
            for i in 0..<m { dir[i] = g[i] + (half[i] - snapshot[i]) / eta }
            for j in 0..<b {
                let i = min(n - 1, Int(sampler.uniform(index: UInt64(t), lane: UInt32(j)) * Double(n)))
                rows.read(i, 1, into: &one)
                var dy = 0.0
                for q in 0..<d { dy += one.features[q] * (half[n + q] - snapshot[n + q]) }
                dir[i] += scale * dy
                let dx = scale * (half[i] - snapshot[i])
                if dx != 0 { for q in 0..<d { dir[n + q] -= dx * one.features[q] } }
            }
            oracleCalls += Int64(2 * b)
            var z = inner
            inner = []
            for i in 0..<m { z[i] = zbar[i] - tau * dir[i] }
            applyResolvent(&z, step: tau)
            inner = z
            innerJ += 1
            t += 1
            fresh = false
            if innerJ >= innerCap || refresh.uniform(index: UInt64(t)) < p {
                snapshot = inner
                fullF(rows, at: snapshot)
                // ‖w − z*‖ ≤ (3 + η‖B‖)·‖w − Π(u_k − ηF(w))‖ (μ = 1/η strong monotonicity of the inner problem).
                for i in 0..<m { half[i] = iterate[i] - eta * estimate[i] }
                applyResolvent(&half, step: eta)
                var r = 0.0
                for i in 0..<m { let e = snapshot[i] - half[i]; r += e * e }
                let kk = Double(k + 2)
                if (3 + eta * normB) * r.squareRoot() <= eta * anchorResidual / (kk * kk) || innerJ >= innerCap {
                    let lam = 1 / kk
                    for i in 0..<m { iterate[i] = lam * anchor[i] + (1 - lam) * snapshot[i] }
                    k += 1; iterations += 1
                    innerJ = 0
                    evaluateFresh(rows)
                    if shouldStop() { phase = .done; return }
                }
            }
        } while oracleCalls - callsAtStart < Int64(n)
    }

    // MARK: outputs

    public func currentSummary() -> [(String, JSON)] {
        var s: [(String, JSON)] = [
            ("rows", .int(rowsSeen)), ("weight_sum", .double(weightSum)),
            ("problem", .string(config.problem.rawValue)),
            ("algorithm", .string(config.varianceReduced ? "vr-halpern" : "halpern")),
            ("converged", .bool(converged)),
            ("residual", .double(residual)),
            ("relative_residual", .double(initialResidual > 0 ? residual / initialResidual : 0)),
            ("iterations", .int(iterations)), ("oracle_calls", .int(oracleCalls)), ("restarts", .int(restartCount)),
            ("lipschitz", .double(lipschitz)), ("step_size", .double(eta)),
        ]
        if isGame { s += [("value", .double(value)), ("duality_gap", .double(gap))] }
        return s
    }

    public mutating func finish() throws(EngineError) -> OperatorOutput {
        guard n > 0, phase == .done else {
            throw .data("halpern-solver", n == 0 && phase == .done ? "no rows to solve over" : "the solve did not run (finish before its steps)")
        }
        return OperatorOutput(arrays: [NamedArray("solution", shape: [iterate.count], float64: iterate)]
                                  + [history.array("residual_history")].compactMap { $0 },
                              summary: currentSummary())
    }

    public func encodeState() -> [UInt8] {
        var w = BinaryWriter()
        w.u64(UInt64(columns)); w.bool(hasTarget)
        w.i64(rowsSeen); w.f64(weightSum)
        w.u8(phase.rawValue); w.u64(UInt64(n))
        w.f64(maxComponent); w.f64(trace); w.f64(maxAbs)
        w.u64(UInt64(powerIter)); w.f64s(powerVector); w.f64(powerEstimate)
        w.f64(lipschitz); w.f64(eta); w.f64(etaResidual)
        w.f64s(anchor); w.f64s(iterate); w.f64s(estimate); w.f64s(inner); w.f64s(snapshot); w.u64(UInt64(innerJ))
        w.i64(k); w.i64(t); w.i64(iterations); w.i64(oracleCalls); w.i64(restartCount)
        w.bool(fresh); w.f64(residual); w.f64(initialResidual); w.f64(anchorResidual)
        w.f64(gap); w.f64(value); w.bool(converged)
        history.encode(&w)
        return w.bytes
    }

    public init(config: HalpernConfig, columns: Int, hasTarget: Bool, seed: UInt64, shard: Int64, purpose: UInt32,
                state: [UInt8], context: String) throws(EngineError) {
        self.init(config: config, columns: columns, hasTarget: hasTarget, seed: seed, shard: shard, purpose: purpose)
        var r = BinaryReader(state, context: context)
        let c = Int(try r.u64()), ht = try r.bool()
        guard c == columns, ht == hasTarget else {
            throw .data(context, "halpern-solver state has \(c) columns (target: \(ht)), expected \(columns) (target: \(hasTarget))")
        }
        rowsSeen = try r.i64(); weightSum = try r.f64()
        guard let ph = Phase(rawValue: try r.u8()) else { throw .data(context, "halpern-solver state has an unknown phase") }
        phase = ph
        n = Int(try r.u64())
        maxComponent = try r.f64(); trace = try r.f64(); maxAbs = try r.f64()
        powerIter = Int(try r.u64()); powerVector = try r.f64s(); powerEstimate = try r.f64()
        lipschitz = try r.f64(); eta = try r.f64(); etaResidual = try r.f64()
        anchor = try r.f64s(); iterate = try r.f64s(); estimate = try r.f64s(); inner = try r.f64s()
        snapshot = try r.f64s()
        innerJ = Int(try r.u64())
        k = try r.i64(); t = try r.i64(); iterations = try r.i64(); oracleCalls = try r.i64(); restartCount = try r.i64()
        fresh = try r.bool(); residual = try r.f64(); initialResidual = try r.f64(); anchorResidual = try r.f64()
        gap = try r.f64(); value = try r.f64(); converged = try r.bool()
        try history.decode(&r, what: "halpern-solver")
        let m = dimension
        let iterating = phase == .iterate || phase == .done
        guard r.remaining == 0, n >= 0, n <= 1 << 40,
              powerVector.count == (powerVector.isEmpty ? 0 : columns),
              !iterating || (anchor.count == m && iterate.count == m && estimate.count == m && inner.count == m),
              snapshot.isEmpty || snapshot.count == m else {
            throw .data(context, "halpern-solver state is inconsistent (array lengths or trailing bytes)")
        }
        if iterating { work = [Double](repeating: 0, count: m) }
    }
}

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
