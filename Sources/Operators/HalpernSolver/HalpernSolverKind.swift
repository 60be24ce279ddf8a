import EngineCore

extension HalpernSolver: SelfDescribingOperator {
    public static let info = OperatorInfo(
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
        outputs: ["solution", "residual_history (oracle calls, residual, restarts; ≤ 1025 rows)"],
        stateVersion: stateVersion, multiPass: true, report: .solverResidual,
        examples: [OperatorExample("halpern-ridge", [("problem", .string("ridge")), ("lambda", .double(0.5)), ("tolerance", .double(1e-6)),
                                                     ("max_passes", .double(300))]),
                   OperatorExample("halpern-lasso", [("problem", .string("lasso")), ("lambda", .double(5)), ("algorithm", .string("halpern")),
                                                     ("tolerance", .double(1e-6)), ("max_passes", .double(300))])],
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
        })

    public init(params p: ParamValues, context ctx: OperatorContext) {
        self.init(config: HalpernConfig(params: p), columns: ctx.shape.columns, hasTarget: ctx.shape.hasTarget,
                  seed: ctx.seed, shard: ctx.shard, purpose: ctx.purpose)
    }
    public init(restoring state: [UInt8], params p: ParamValues, context ctx: OperatorContext, location: String) throws(EngineError) {
        try self.init(config: HalpernConfig(params: p), columns: ctx.shape.columns, hasTarget: ctx.shape.hasTarget,
                      seed: ctx.seed, shard: ctx.shard, purpose: ctx.purpose, state: state, location: location)
    }
}

extension HalpernConfig {
    /// The configuration validated parameters describe.
    init(params p: ParamValues) {
        let problem = HalpernProblem(rawValue: p.string("problem") ?? "") ?? .leastSquares
        let algorithm = p.string("algorithm") ?? "auto"
        self.init(problem: problem,
                  varianceReduced: algorithm == "auto" ? HalpernConfig.defaultVarianceReduced(problem) : algorithm == "vr-halpern",
                  lambda: p.double("lambda") ?? 0,
                  lower: p.double("lower") ?? -.infinity, upper: p.double("upper") ?? .infinity,
                  tolerance: p.double("tolerance") ?? 1e-8, maxOracleCalls: p.int("max_oracle_calls"),
                  restarts: p.bool("restarts") ?? true, importanceSampling: p.string("sampling") == "importance",
                  maxPasses: p.double("max_passes"), maxSeconds: p.double("max_seconds"),
                  precondition: HalpernPrecondition(rawValue: p.string("precondition") ?? "auto") ?? .auto,
                  intercept: p.bool("intercept") ?? false)
    }
}
