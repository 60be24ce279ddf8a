import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Solves 0 ∈ F(u) + G(u), F = Σ_i F_i over the rows, by Halpern iteration — Cai, Alacaoglu & Diakonikolas,
/// "Variance Reduced Halpern Iteration for Finite-Sum Monotone Inclusions" (ICLR 2024, arXiv 2310.02987).
///
/// Problems (sums over rows, weights as multiplicities; optionally an unpenalised intercept b, the
/// rows then read as ã_i = (a_i, 1)): least squares, ridge,
/// lasso (G = λ‖·‖₁, prox = soft threshold), box-constrained least squares (G = normal cone of
/// [lower, upper]^d, resolvent = clamp), logistic (y ∈ {−1, 1}, 0 read as −1; F_i = −w_i y_i a_i σ(−y_i a_iᵀx),
/// plus λx), and matrix games (F(x, y) = (By, −Bᵀx), G = normal cones of the two simplices; row weights are
/// ignored there, since duplicating a row of B does not change the game).
///
/// Preconditioning (regression, on by default): the solver iterates on z with x = Pz, P diagonal with
/// P_jj = 1/‖column j‖ (weighted; with an intercept the columns are centred first and the intercept
/// coordinate is scaled by 1/√Σw_i, x_b = z_b/√Σw − Σ_j μ_j x_j). It is a change of variables: F becomes PᵀF(Pz),
/// λ‖x‖₁ becomes Σ_j λP_jj|z_j| (soft threshold per coordinate), the box [l, u] becomes [l/P_jj, u/P_jj], so
/// the scaled problem is again of the forms below and every guarantee carries over with the scaled constants.
/// The column sums come from the norm pass; vr-halpern then makes one more pass for the scaled row norms.
/// Jacobi scaling equalises the diagonal of AᵀWA: it removes ill-conditioning from column scales (κ from
/// 10⁷ to ≈ 1 on columns scaled 1…5,000) but not from correlated columns.
///
/// Algorithms:
/// - `halpern` (deterministic): u_{k+1} = λ_k u₀ + (1 − λ_k) J_{ηG}(u_k − ηF(u_k)), λ_k = 1/(k+2), one full
///   pass (n component evaluations) per iteration, η = 1/L with L = ‖AᵀWA‖₂ (+λ; /4 for logistic) estimated
///   by 10 power iterations over the row store (the Rayleigh quotient; it underestimates L, but any η < 2/L
///   keeps the forward step nonexpansive, so a factor-2 safety margin is built in).
/// - `vr-halpern` (Algorithm 1, cocoercive problems): the same recursion with F(u_k) replaced by a recursive
///   (PAGE/SARAH) estimator F̃_k = F̃_{k−1} + (n/b) Σ_{i∈S} (F_i(u_k) − F_i(u_{k−1})) over b rows drawn with
///   replacement, reset to F(u_k) by a full pass.
///   - `restarts: false` (the paper's O(1/ε) regime): loopless, a full pass with probability
///     p_t = max(4/(t+4), 1/√n) and b = ⌈√n⌉. 4/(t+4) is the schedule of the stochastic-Halpern analysis
///     (Cai et al. 2022), whose expected full-pass cost is O(n log t); the 1/√n floor (the paper's finite-sum
///     choice) keeps the estimator's accumulated variance bounded at no more than the mini-batches' own cost.
///   - `restarts: true` (the default): epochs of m = ⌈n/(4b)⌉ ≈ 2√n iterations — m − 1 on mini-batches of
///     b = ⌈√n/8⌉ rows (about half a pass of mini-batch work), the m-th evaluated by a full pass, where the
///     restart test is made. With restarts the iteration is linear-rate, O((n + √n·L_vr/μ)·log 1/ε) calls by the paper's
///     restart argument, and the full passes (one per restart test) dominate; the loopless schedule spent
///     them at random intervals of mean √n with b = √n (2 passes per refresh, each gaining about one halving)
///     and lost to deterministic Halpern on well-conditioned input (1.09× its calls on least squares,
///     n = 10⁵, d = 30, κ ≈ 1 after scaling). Longer epochs of smaller mini-batches gain ≈ 3.5 halvings per
///     epoch of 1.5 passes there (0.32× deterministic Halpern's calls); the estimator's accumulated variance, ∝ m/b
///     times the paper's, is held by the anchoring and measured, not proved, to stay below what costs
///     iterations (Benchmarks/HISTORY.md).
///   Uniform sampling uses the mean-square constant of the estimator, L_vr = √(n·Σ_i w_i²‖ã_i‖⁴) (+λ; /4 for
///   logistic; E‖n·w_iΔF_i‖² ≤ L_vr²‖Δ‖², the paper's Lipschitz-in-expectation assumption), computed in the
///   norm pass, and η = 1/L_vr; it is at most n·maxᵢ w_i‖ã_i‖² and far smaller on uneven rows. With `sampling: importance` rows are drawn ∝ w_i‖a_i‖² (inverse
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
/// max|B_ij|). Otherwise it stops at the budget (max_oracle_calls and/or max_passes; default
/// max(1000 passes, 2·10⁷ calls), so a 30-row game gets the calls it needs and a 10⁸-row stream is not held
/// to 10¹¹), at max_seconds, at a stall (the best residual fell by less than 1% within max(100 passes, 2·10⁶
/// calls)), or at a non-finite residual; then `converged` is false, `stop_reason` says which, and finish()
/// returns a warning saying why.
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
    public static let stateVersion: UInt16 = 4   // 3: residual history; 4: preconditioner, intercept, stop reason
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

    /// Restarted vr-halpern's mini-batch, ⌈√n/8⌉ rows, and epoch, ⌈n/(4b)⌉ ≈ 2√n iterations per full pass
    /// (about half a pass of mini-batch work per epoch): the middle of a plateau measured over
    /// b ∈ √n/{4, 8, 16} × half, quarter and whole passes per epoch on seven problems (κ from 1 to 55, n from
    /// 10³ to 10⁵); every point of that grid beat the loopless schedule (Benchmarks/HISTORY.md).
    static func epochBatch(_ n: Int) -> Int { max(1, Int((Double(n).squareRoot() / 8).rounded(.up))) }
    static func epochLength(_ n: Int) -> Int {
        let b = epochBatch(n)
        return max(1, (n + 4 * b - 1) / (4 * b))
    }

    /// Stall: the best residual (games: gap) must fall by this factor within `stallWindow` oracle calls.
    static let stallFactor = 0.99
    /// max(stallPasses·n, stallMinimum) oracle calls.
    static let stallPasses: Int64 = 100
    static let stallMinimum: Int64 = 2_000_000
    /// The least oracle calls per step (one pass when n is larger).
    static let stepWork: Int64 = 1 << 16

    enum Phase: UInt8 { case scan = 0, power = 1, start = 2, iterate = 3, done = 4, norms = 5 }

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
    /// The preconditioner x = P z (regression): x_j = scale_j·z_j; with an intercept, coordinate d is the
    /// intercept, x_d = scale_d·z_d − Σ_j center_j·x_j (centring is empty unless an intercept is fitted and
    /// preconditioning is on). Identity for games and `precondition: none`.
    var scale: [Double] = []
    var center: [Double] = []
    /// Σ w_i²‖Pᵀã_i‖⁴ and Σ w_i‖Pᵀã_i‖² over the scaled rows ã_i = (a_i, 1): vr-halpern's step.
    var scaledNorm4 = 0.0
    var scaledTrace = 0.0
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
    /// Games: inner steps of the current outer iteration; restarted vr-halpern: mini-batch steps since the last
    /// full pass (states written before epochs hold 0: restored, they start a new epoch).
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
    var stop = HalpernStop.running
    /// Stall detection: the best residual (games: gap) so far and the oracle calls when it last fell by `stallFactor`.
    var best = Double.infinity
    var bestCalls: Int64 = 0
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
    /// Original-coordinate buffers (x = Pz, gradients) for regression.
    var xBuf: [Double] = []
    var xBuf2: [Double] = []
    var gBuf: [Double] = []
    /// Monotonic seconds at this process's first step (max_seconds); not state.
    var clockStart: Double?

    public init(config: HalpernConfig, columns: Int, hasTarget: Bool, seed: UInt64 = 0, shard: Int64 = 0, purpose: UInt32 = 0) {
        self.config = config
        self.columns = columns
        self.hasTarget = hasTarget
        self.seed = seed
        self.shard = UInt64(bitPattern: shard)
        self.purpose = purpose
        self.blockRows = max(16, min(4096, (1 << 18) / max(1, columns)))
    }

    var hasIntercept: Bool { config.intercept && !isGame }
    var dimension: Int { config.problem == .matrixGame ? n + columns : columns + (hasIntercept ? 1 : 0) }
    var budget: Int64 {
        func calls(_ passes: Double) -> Int64 {
            let c = passes * Double(max(1, n))
            return c >= 4e18 ? Int64.max / 2 : max(1, Int64(c))
        }
        switch (config.maxOracleCalls, config.maxPasses) {
        case let (c?, p?): return min(c, calls(p))
        case let (c?, nil): return c
        case let (nil, p?): return calls(p)
        case (nil, nil): return max(calls(HalpernConfig.defaultMaxPasses), HalpernConfig.minimumBudget)
        }
    }
    var preconditioned: Bool { !isGame && config.precondition != .none }
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
        // This process's clock for max_seconds starts at its first step (after a resume too).
        if clockStart == nil { clockStart = Self.now() }
        switch phase {
        case .scan:
            scan(rows)
        case .power:
            powerStep(rows)
        case .norms:
            scaledNorms(rows)
        case .start:
            start(rows)
        case .iterate:
            // A step is at least `stepWork` oracle calls: on a 30-row game one pass is microseconds, and the
            // runner's work between steps (state hand-over, checkpoint clock) would dominate.
            let callsAtStart = oracleCalls
            repeat {
                if isGame {
                    if config.varianceReduced { vrGameStep(rows) } else { gameStep(rows) }
                } else if config.varianceReduced {
                    vrStep(rows)
                } else {
                    deterministicStep(rows)
                }
            } while phase == .iterate && oracleCalls - callsAtStart < Self.stepWork
        case .done:
            break
        }
        return phase == .done ? .done : .more
    }

    mutating func batchBuffer(_ rows: RowStoreReader) -> RowBatch {
        if let b = scratch.take() { return b }
        return RowBatch(columns: columns, capacity: blockRows, hasTarget: rows.hasTarget, hasWeight: true)
    }

    /// One pass: row norms (for L_vr and ηᵣ), max|B_ij| (games), and the weighted column sums and sums of
    /// squares that the diagonal preconditioner is made of.
    mutating func scan(_ rows: RowStoreReader) {
        n = rows.count
        if n == 0 { phase = .done; return }
        var b = batchBuffer(rows)
        let d = columns
        var colSum = [Double](repeating: 0, count: isGame ? 0 : d)
        var colSq = [Double](repeating: 0, count: isGame ? 0 : d)
        var norm4 = 0.0, total = 0.0
        let one = hasIntercept ? 1.0 : 0.0
        var start = 0
        while start < n {
            rows.read(start, blockRows, into: &b)
            for r in 0..<b.count {
                var s = 0.0
                let w = isGame ? 1 : b.weight(r)
                total += w
                for j in 0..<d { let v = b.features[r * d + j]; s += v * v; maxAbs = max(maxAbs, abs(v)) }
                if !isGame {
                    for j in 0..<d { let v = b.features[r * d + j]; colSum[j] += w * v; colSq[j] += w * v * v }
                }
                s += one
                maxComponent = max(maxComponent, w * s)
                trace += w * s
                norm4 += w * w * s * s
            }
            start += b.count
        }
        scratch = b
        oracleCalls += Int64(n)
        let m = dimension
        scale = [Double](repeating: 1, count: isGame ? 0 : m)
        center = []
        if preconditioned {
            if hasIntercept { center = [Double](repeating: 0, count: d) }
            for j in 0..<d {
                // Centred when an intercept absorbs the mean; a (near-)constant column keeps its raw norm.
                var ss = colSq[j]
                if hasIntercept && total > 0 {
                    let mu = colSum[j] / total
                    let c = colSq[j] - colSum[j] * mu
                    if c > 1e-12 * colSq[j] { center[j] = mu; ss = c }
                }
                scale[j] = ss > 0 && ss.isFinite ? 1 / ss.squareRoot() : 1
            }
            if hasIntercept { scale[d] = total > 0 ? 1 / total.squareRoot() : 1 }
        } else {
            scaledNorm4 = norm4
            scaledTrace = trace
        }
        if isGame || !config.varianceReduced {
            let rng = CounterRandom(seed: seed, shard: shard, purpose: purpose ^ Self.purposePower)
            powerVector = (0..<(isGame ? d : m)).map { rng.normal(index: UInt64($0)) }
            normalize(&powerVector)
            phase = powerVector.isEmpty ? .start : .power
        } else {
            phase = preconditioned ? .norms : .start
        }
    }

    /// vr-halpern with a preconditioner: one pass for the scaled rows' Σ w_i²‖Pᵀã_i‖⁴ (the mean-square
    /// Lipschitz constant) and Σ w_i‖Pᵀã_i‖².
    mutating func scaledNorms(_ rows: RowStoreReader) {
        var b = batchBuffer(rows)
        var start = 0
        scaledNorm4 = 0; scaledTrace = 0
        while start < n {
            rows.read(start, blockRows, into: &b)
            for r in 0..<b.count {
                let w = b.weight(r)
                let s = scaledRowNorm2(b, r)
                scaledNorm4 += w * w * s * s
                scaledTrace += w * s
            }
            start += b.count
        }
        scratch = b
        oracleCalls += Int64(n)
        phase = .start
    }

    /// ‖Pᵀã_r‖² of row r of a batch: Σ_j scale_j²(a_rj − center_j)² (+ scale_d² with an intercept).
    @inline(__always)
    func scaledRowNorm2(_ b: RowBatch, _ r: Int) -> Double {
        let d = columns
        var s = 0.0
        if center.isEmpty {
            for j in 0..<d { let v = scale[j] * b.features[r * d + j]; s += v * v }
        } else {
            for j in 0..<d { let v = scale[j] * (b.features[r * d + j] - center[j]); s += v * v }
        }
        if hasIntercept { s += scale[d] * scale[d] }
        return s
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// The prefix sums of w_i‖Pᵀã_i‖² for importance sampling: built by one pass over the row store when the
    /// first mini-batch needs them, and again after a restore (scratch, not state: same rows, same order, same
    /// sums). Not an oracle cost (the norm pass already counted these rows), so a resumed solve reports what
    /// the uninterrupted one does.
    mutating func buildCumulative(_ rows: RowStoreReader) {
        var b = batchBuffer(rows)
        var total = 0.0
        cumulative = [0]
        cumulative.reserveCapacity(n + 1)
        var start = 0
        while start < n {
            rows.read(start, blockRows, into: &b)
            for r in 0..<b.count {
                total += b.weight(r) * scaledRowNorm2(b, r)
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

    /// One power iteration on PᵀÃᵀWÃP (Ã = [A 1] with an intercept; games: BᵀB).
    mutating func powerStep(_ rows: RowStoreReader) {
        var b = batchBuffer(rows)
        let d = columns
        var w = [Double](repeating: 0, count: isGame ? d : dimension)
        if tmp.count < blockRows { tmp = [Double](repeating: 0, count: blockRows) }
        var v = powerVector
        if !isGame { toOriginal(powerVector, into: &v) }
        var start = 0
        while start < n {
            rows.read(start, blockRows, into: &b)
            let c = b.count
            b.features.withUnsafeBufferPointer { a in
                v.withUnsafeBufferPointer { vp in
                    tmp.withUnsafeMutableBufferPointer { t in
                        BlockKernels.gemv(a.baseAddress!, rows: c, n: d, v: vp.baseAddress!, into: t.baseAddress!)
                    }
                }
            }
            if !isGame {
                let x0 = hasIntercept ? v[d] : 0
                var s = 0.0
                for r in 0..<c { tmp[r] = b.weight(r) * (tmp[r] + x0); s += tmp[r] }
                if hasIntercept { w[d] += s }
            }
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
        if !isGame { gradientToScaled(&w) }
        var rho = 0.0
        for j in w.indices { rho += powerVector[j] * w[j] }
        powerEstimate = max(powerEstimate, rho)
        normalize(&w)
        powerVector = w
        powerIter += 1
        if powerIter >= Self.powerIterations || rho == 0 { phase = .start }
    }

    // MARK: the preconditioner

    /// x = P z: coefficients (and intercept, last) in the original coordinates.
    func toOriginal(_ z: [Double], into x: inout [Double]) {
        let d = columns
        for j in 0..<d { x[j] = scale[j] * z[j] }
        if hasIntercept {
            var s = scale[d] * z[d]
            if !center.isEmpty { for j in 0..<d { s -= center[j] * x[j] } }
            x[d] = s
        }
    }

    /// g ← Pᵀg: a gradient in the original coordinates to the scaled ones.
    func gradientToScaled(_ g: inout [Double]) {
        let d = columns
        if hasIntercept {
            let gi = g[d]
            if !center.isEmpty { for j in 0..<d { g[j] -= center[j] * gi } }
            g[d] = scale[d] * gi
        }
        for j in 0..<d { g[j] *= scale[j] }
    }

    /// The largest scale_j² over the penalised coordinates: the Lipschitz constant of ½λ‖x‖² in z.
    var penaltyCurvature: Double {
        var m = 0.0
        for j in 0..<columns { m = max(m, scale[j] * scale[j]) }
        return m
    }

    /// Step sizes, the starting point and its residual.
    mutating func start(_ rows: RowStoreReader) {
        let m = dimension
        if isGame {
            lipschitz = powerEstimate.squareRoot()
            eta = lipschitz > 0 ? (config.varianceReduced ? 1 : 0.45) / lipschitz : 1
            etaResidual = trace > 0 ? 1 / trace.squareRoot() : 1
        } else {
            // Uniform draws: the mean-square constant of the estimator (n/b)Σ w_iΔF_i, √(n·Σ w_i²‖Pᵀã_i‖⁴)
            // (Cai et al.'s Assumption on E‖F_i(u) − F_i(v)‖²), not n·max w_i‖Pᵀã_i‖², which is up to √n
            // times larger on uneven rows; importance draws: Σ w_i‖Pᵀã_i‖².
            let data = config.varianceReduced
                ? (importance ? scaledTrace : (Double(n) * scaledNorm4).squareRoot())
                : powerEstimate
            lipschitz = data * curvature + smoothLambda * penaltyCurvature
            eta = lipschitz > 0 ? 1 / lipschitz : 1
            let lr = trace * curvature + smoothLambda
            etaResidual = lr > 0 ? 1 / lr : 1
        }
        var a0 = [Double](repeating: 0, count: m)
        if isGame {
            for i in 0..<n { a0[i] = 1 / Double(n) }
            for j in 0..<columns { a0[n + j] = 1 / Double(columns) }
        } else {
            applyResolvent(&a0, step: 1, scaled: true)
            xBuf = [Double](repeating: 0, count: m); xBuf2 = xBuf; gBuf = xBuf
        }
        anchor = a0
        iterate = anchor
        inner = anchor
        snapshot = isGame && config.varianceReduced ? anchor : []
        estimate = [Double](repeating: 0, count: m)
        work = [Double](repeating: 0, count: m)
        best = .infinity; bestCalls = oracleCalls
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
        if isGame {
            residual = forwardBackwardResidual(iterate, estimate, step: etaResidual, scaled: false)
        } else {
            // In the original coordinates, whatever the preconditioner: gBuf = F(x) from fullF.
            toOriginal(iterate, into: &xBuf)
            residual = forwardBackwardResidual(xBuf, gBuf, step: etaResidual, scaled: false)
        }
        if isGame {
            var minBy = Double.infinity, maxBtx = -Double.infinity, v = 0.0
            for i in 0..<n { minBy = min(minBy, estimate[i]); v += iterate[i] * estimate[i] }
            for j in 0..<columns { maxBtx = max(maxBtx, -estimate[n + j]) }
            gap = maxBtx - minBy
            value = v
        }
        let progress = isGame ? gap : residual
        if progress <= Self.stallFactor * best || best == .infinity { best = progress; bestCalls = oracleCalls }
        history.record([Double(oracleCalls), residual, Double(restartCount)])
    }

    /// `estimate` = F(u) = Σ_i F_i(u) (+λu), by blocks at fixed row positions; regression: in the scaled
    /// coordinates, with F at x = Pu in the original ones left in `gBuf`.
    mutating func fullF(_ rows: RowStoreReader, at u: [Double]) {
        var b = batchBuffer(rows)
        let d = columns, game = isGame, problem = config.problem
        if tmp.count < blockRows { tmp = [Double](repeating: 0, count: blockRows) }
        for i in estimate.indices { estimate[i] = 0 }
        if !game {
            toOriginal(u, into: &xBuf2)
            for i in gBuf.indices { gBuf[i] = 0 }
        }
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
                // In the original coordinates x = Pu: F(x) = Ãᵀ(w ∘ ℓ'(Ãx)) + λx into gBuf, then Pᵀ.
                let x0 = hasIntercept ? xBuf2[d] : 0
                b.features.withUnsafeBufferPointer { a in
                    xBuf2.withUnsafeBufferPointer { up in
                        tmp.withUnsafeMutableBufferPointer { tp in
                            BlockKernels.gemv(a.baseAddress!, rows: c, n: d, v: up.baseAddress!, into: tp.baseAddress!)
                        }
                    }
                }
                var s = 0.0
                for r in 0..<c { tmp[r] = b.weight(r) * Self.derivative(problem, tmp[r] + x0, b.targets?[r] ?? 0); s += tmp[r] }
                if hasIntercept { gBuf[d] += s }
                b.features.withUnsafeBufferPointer { a in
                    tmp.withUnsafeBufferPointer { tp in
                        gBuf.withUnsafeMutableBufferPointer { e in
                            BlockKernels.gemvTransposedAccumulate(a.baseAddress!, rows: c, n: d, v: tp.baseAddress!, into: e.baseAddress!)
                        }
                    }
                }
            }
            start += c
        }
        scratch = b
        if !game {
            let lam = smoothLambda
            if lam != 0 { for j in 0..<d { gBuf[j] += lam * xBuf2[j] } }
            for j in estimate.indices { estimate[j] = gBuf[j] }
            gradientToScaled(&estimate)
        }
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

    /// v ← J_{step·G}(v): soft threshold (lasso), clamp (box), simplex projections (games), identity; the
    /// intercept is never penalised. `scaled`: v is in the preconditioned coordinates, where G(Pz) is
    /// λΣ scale_j|z_j| (threshold step·λ·scale_j) or the box [lower, upper]/scale_j.
    mutating func applyResolvent(_ v: inout [Double], step: Double, scaled: Bool) {
        switch config.problem {
        case .lasso:
            let th = step * config.lambda
            for i in 0..<columns {
                let t = scaled ? th * scale[i] : th
                let x = v[i]; v[i] = x > t ? x - t : (x < -t ? x + t : 0)
            }
        case .box:
            for i in 0..<columns {
                let s = scaled ? scale[i] : 1
                v[i] = min(config.upper / s, max(config.lower / s, v[i]))
            }
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

    /// ‖u − J_{sG}(u − sF)‖/s. For the regression problems each coordinate is formed without the subtraction
    /// u − (u − s·f): when s·f is below u's last bit that difference rounds to exactly 0 and a far-from-optimal
    /// point would pass the exit test. Where the resolvent is the identity (and on the intercept) the entry is
    /// s·f; lasso's soft threshold gives s·f ± t when it shrinks and u when it zeroes; the box gives s·f inside
    /// and u − bound when it clamps (a difference of two given numbers, exact to rounding).
    mutating func forwardBackwardResidual(_ u: [Double], _ f: [Double], step s: Double, scaled: Bool) -> Double {
        if !isGame {
            var r = 0.0
            let problem = config.problem
            for i in u.indices {
                let sf = s * f[i]
                var e = sf
                if i < columns && problem == .lasso {
                    let t = s * config.lambda * (scaled ? scale[i] : 1)
                    let w = u[i] - sf
                    e = abs(w) <= t ? u[i] : sf + (w > 0 ? t : -t)
                } else if i < columns && problem == .box {
                    let sc = scaled ? scale[i] : 1
                    let lo = config.lower / sc, hi = config.upper / sc
                    let w = u[i] - sf
                    e = w < lo ? u[i] - lo : (w > hi ? u[i] - hi : sf)
                }
                r += e * e
            }
            return r.squareRoot() / s
        }
        var w = work
        work = []
        for i in u.indices { w[i] = u[i] - s * f[i] }
        applyResolvent(&w, step: s, scaled: scaled)
        var r = 0.0
        for i in u.indices { let e = u[i] - w[i]; r += e * e }
        work = w
        return r.squareRoot() / s
    }

    // MARK: exit and restarts

    /// The exit test on a fresh residual; otherwise the budget, the clock, a stall or a non-finite residual
    /// end the solve (and `stop` says which).
    mutating func shouldStop() -> Bool {
        if isGame {
            if gap <= config.tolerance * maxAbs { converged = true; stop = .converged; return true }
        } else if residual <= config.tolerance * initialResidual || initialResidual == 0 {
            converged = true; stop = .converged; return true
        }
        if !residual.isFinite || (isGame && !gap.isFinite) { stop = .diverged; return true }
        if let reason = outOfResources() { stop = reason; return true }
        if oracleCalls - bestCalls >= stallWindow { stop = .stall; return true }
        return false
    }

    /// The budget or max_seconds, checked between fresh residuals too.
    func outOfResources() -> HalpernStop? {
        if oracleCalls >= budget { return .budget }
        if let limit = config.maxSeconds, let c0 = clockStart, Self.now() - c0 >= limit { return .time }
        return nil
    }

    /// Oracle calls without a 1% fall of the best residual after which the solve has stalled: 100 passes,
    /// at least 2·10⁶ calls (restarted Halpern gains far more than 1% per pass while it converges; plain
    /// Halpern's O(1/k) residual falls by more than 1% over any 100 passes up to 10⁴ of them).
    var stallWindow: Int64 { max(Self.stallPasses * Int64(n), Self.stallMinimum) }

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
        applyResolvent(&next, step: eta, scaled: true)
        for i in iterate.indices { next[i] = lam * anchor[i] + (1 - lam) * next[i] }
        k += 1; t += 1; iterations += 1
    }

    // MARK: outputs

    public func currentSummary() -> [(String, JSON)] {
        var s: [(String, JSON)] = [
            ("rows", .int(rowsSeen)), ("weight_sum", .double(weightSum)),
            ("problem", .string(config.problem.rawValue)),
            ("algorithm", .string(config.varianceReduced ? "vr-halpern" : "halpern")),
            ("converged", .bool(converged)),
            ("stop_reason", .string(stop.name)),
            ("residual", .double(residual)),
            ("relative_residual", .double(initialResidual > 0 ? residual / initialResidual : 0)),
            ("iterations", .int(iterations)), ("oracle_calls", .int(oracleCalls)), ("restarts", .int(restartCount)),
            ("passes", .double(n > 0 ? Double(oracleCalls) / Double(n) : 0)),
            ("budget_oracle_calls", .int(budget)),
            ("lipschitz", .double(lipschitz)), ("step_size", .double(eta)),
        ]
        if isGame {
            s += [("value", .double(value)), ("duality_gap", .double(gap))]
        } else {
            s += [("precondition", .string(preconditioned ? "diagonal" : "none"))]
            if hasIntercept {
                var x = [Double](repeating: 0, count: dimension)
                if iterate.count == dimension { toOriginal(iterate, into: &x) }
                s += [("intercept", .double(x[columns]))]
            }
        }
        return s
    }

    /// Why the solve ended before its tolerance, for the run's warnings (nil when it converged).
    func stopWarning() -> OperatorWarning? {
        guard !converged else { return nil }
        let reached = isGame
            ? "duality gap \(gap) > tolerance·max|B_ij| = \(config.tolerance * maxAbs)"
            : "relative residual \(initialResidual > 0 ? residual / initialResidual : residual) > tolerance \(config.tolerance)"
        let passes = n > 0 ? (Double(oracleCalls) / Double(n)).rounded() : 0
        switch stop {
        case .budget:
            return OperatorWarning("stopped before its tolerance: the budget of \(budget) oracle calls is spent (\(passes) passes); \(reached)",
                                   hint: "raise params.max_passes or params.max_oracle_calls, or loosen params.tolerance")
        case .stall:
            return OperatorWarning("stopped before its tolerance: stalled, the best residual fell by less than 1% over the last \(stallWindow) oracle calls; \(reached)",
                                   hint: "the tolerance may be below what float64 reaches on this problem, or the problem has no minimiser (separable logistic with lambda 0); loosen params.tolerance or add lambda")
        case .time:
            return OperatorWarning("stopped before its tolerance: params.max_seconds (\(config.maxSeconds ?? 0) s) elapsed after \(passes) passes; \(reached)",
                                   hint: "raise params.max_seconds or loosen params.tolerance")
        case .diverged:
            return OperatorWarning("stopped before its tolerance: the residual is not finite after \(passes) passes",
                                   hint: "check the input for huge or non-finite values")
        case .running, .converged:
            return OperatorWarning("stopped before its tolerance; \(reached)")
        }
    }

    public mutating func finish() throws(EngineError) -> OperatorOutput {
        guard n > 0, phase == .done else {
            throw .data("halpern-solver", n == 0 && phase == .done ? "no rows to solve over" : "the solve did not run (finish before its steps)")
        }
        var solution = iterate
        if !isGame {
            // The coefficients in the original coordinates; the intercept goes to summary.json.
            toOriginal(iterate, into: &solution)
            solution = Array(solution[0..<columns])
        }
        return OperatorOutput(arrays: [NamedArray("solution", shape: [solution.count], float64: solution)]
                                  + [history.array("residual_history")].compactMap { $0 },
                              summary: currentSummary(), warnings: [stopWarning()].compactMap { $0 })
    }
}

// MARK: state
