import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// The problems `halpern-solver` solves (objectives: README, "Output").
public enum HalpernProblem: String, Sendable, CaseIterable {
    case leastSquares = "least-squares", ridge, lasso, box, logistic, matrixGame = "matrix-game"
    var needsTarget: Bool { self != .matrixGame }
}

/// How the regression problems are rescaled before iterating.
public enum HalpernPrecondition: String, Sendable, CaseIterable {
    /// diagonal for the regression problems, none for matrix games (rescaling a game changes it).
    case auto
    case none
    /// Unit-norm columns (centred first when an intercept is fitted).
    case diagonal
}

/// Why a solve ended.
public enum HalpernStop: UInt8, Sendable {
    case running = 0, converged = 1, budget = 2, stall = 3, time = 4, diverged = 5
    var name: String {
        switch self {
        case .running: "running"
        case .converged: "converged"
        case .budget: "budget"
        case .stall: "stall"
        case .time: "time"
        case .diverged: "diverged"
        }
    }
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
    /// A budget of component evaluations; with `maxPasses` the smaller of the two applies.
    public var maxOracleCalls: Int64?
    /// A budget in effective passes over the rows (oracle calls / n). Both nil: max(defaultMaxPasses·n,
    /// minimumBudget).
    public var maxPasses: Double?
    /// Wall-clock limit of the solve (this process's share: a resumed solve starts its clock again); nil: none.
    public var maxSeconds: Double?
    public var precondition: HalpernPrecondition
    /// Regression problems: an unpenalised intercept, fitted alongside the coefficients.
    public var intercept: Bool
    /// Re-anchor when the residual has halved (linear convergence on strongly monotone problems).
    public var restarts: Bool
    /// vr-halpern on regression problems: draw mini-batch rows ∝ w_i‖a_i‖² instead of uniformly (keeps n
    /// prefix sums in RAM; the step then uses the mean, not the maximum, of the row norms).
    public var importanceSampling: Bool

    public init(problem: HalpernProblem, varianceReduced: Bool = true, lambda: Double = 0,
                lower: Double = -.infinity, upper: Double = .infinity, tolerance: Double = 1e-8,
                maxOracleCalls: Int64? = nil, restarts: Bool = true, importanceSampling: Bool = false,
                maxPasses: Double? = nil, maxSeconds: Double? = nil,
                precondition: HalpernPrecondition = .auto, intercept: Bool = false) {
        self.problem = problem; self.varianceReduced = varianceReduced; self.lambda = lambda
        self.lower = lower; self.upper = upper; self.tolerance = tolerance
        self.maxOracleCalls = maxOracleCalls; self.restarts = restarts
        self.importanceSampling = importanceSampling
        self.maxPasses = maxPasses; self.maxSeconds = maxSeconds
        self.precondition = precondition; self.intercept = intercept
    }

    public static let defaultMaxPasses = 1000.0
    /// The budget's floor in oracle calls: a small problem (a 30-row game) needs many more passes than a
    /// large one, and 2·10⁷ component evaluations take a few seconds at most.
    public static let minimumBudget: Int64 = 20_000_000
    /// The default algorithm: vr-halpern for regression, deterministic halpern for matrix games (faster on
    /// dense games: Benchmarks/HISTORY.md).
    public static func defaultVarianceReduced(_ p: HalpernProblem) -> Bool { p != .matrixGame }
}
