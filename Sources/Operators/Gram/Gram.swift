import EngineCore
import LinearAlgebra

/// Exact weighted Gram matrix AᵀWA (and AᵀWy, yᵀWy with a target) in float64, and the solves users expect
/// from it: ridge ½‖Ax + b − y‖² + ½λ‖x‖² by Cholesky, and least squares with the minimum-norm solution
/// (numpy.linalg.lstsq's answer), each with or without an unpenalised intercept b.
///
/// Guarantee: each block of `blockRows` rows (cut at fixed row positions, so independent of batch size) is
/// one dsyrk call; blocks are summed in float64, so the result equals the exact Gram up to float64 rounding
/// (relative error ≲ n_blocks·ε + blockRows·ε per entry). Shard states merge by addition.
///
/// Intercept (`intercept: true`): the rows are shifted by a fixed vector s (the first row, target included)
/// before they are accumulated, with the weighted sums Σw(a − s) kept beside the Gram matrix; the solve uses
/// the exactly centred system G_c = G_s − S_s S_sᵀ/W (which does not depend on s), and b = ȳ − āᵀx. The
/// shift keeps the cancellation in that subtraction to the data's spread rather than its distance from 0
/// (columns like years or timestamps). `gram.npy` and `xty.npy` are still the raw AᵀWA and AᵀWy, rebuilt
/// from the shifted sums.
///
/// Least squares (`solve: least-squares`, and ridge with λ = 0): the eigendecomposition G_c = VΛVᵀ (dsyevd),
/// eigenvalues at or below `rank_tolerance`·λ_max (16·d·u: the size of the Gram matrix's own rounding
/// relative to λ_max) counted as zero, x = V_r Λ_r⁻¹ V_rᵀ Aᵀy — the minimum-norm minimiser. summary.json
/// reports `rank`, `condition_number` (√(λ_max/λ_r), the 2-norm condition number of the centred, weighted
/// design over its rank) and `rank_tolerance`; a rank below d is a warning. Accuracy: normal equations lose
/// what the condition number says, relative error ≈ κ²·u in the worst direction (1e-5 for κ = 3e5).
/// Cost: O(d²) per row at BLAS-3 speed (with an intercept, one subtraction per value more); O(d³) at the end.
/// Memory O(d² + blockRows·d).
public struct GramOperator: MergeableOperator, Equatable {
    /// Equal states (the open block's unused buffer tail does not count).
    public static func == (a: GramOperator, b: GramOperator) -> Bool { a.encodeState() == b.encodeState() && a.solve == b.solve && a.lambda == b.lambda }

    public static let stateVersion: UInt16 = 2

    /// Rows per internal block: a function of d only (a ~4 MiB buffer), never of the batch size.
    public static func blockRows(columns d: Int) -> Int { max(16, min(4096, (1 << 19) / max(1, d))) }

    public enum Solve: String, Sendable, CaseIterable { case none, ridge, leastSquares = "least-squares" }

    public let columns: Int
    public let hasTarget: Bool
    public let solve: Solve
    public let lambda: Double
    public let intercept: Bool
    let blockRows: Int

    public private(set) var rows: Int64 = 0
    var weightSum = 0.0
    /// Upper triangle of Σw(a − s)(a − s)ᵀ over closed blocks (row-major d×d); s = 0 without an intercept.
    var gram: [Double]
    var xty: [Double]
    var yty = 0.0
    /// The shift s (features, then the target's) and Σw(a − s), Σw(y − s_y): kept with an intercept.
    var hasShift = false
    var shift: [Double]
    var shiftY = 0.0
    var sum: [Double]
    var sumY = 0.0
    /// The open block: √w-scaled (shifted) rows and targets, `blockCount` of them.
    var blockCount = 0
    var blockWeight = 0.0
    var blockX: [Double]
    var blockY: [Double]

    public init(columns: Int, hasTarget: Bool, solve: Solve = .none, lambda: Double = 0, intercept: Bool = false) {
        self.columns = columns
        self.hasTarget = hasTarget
        self.solve = solve
        self.lambda = lambda
        self.intercept = intercept
        self.blockRows = GramOperator.blockRows(columns: columns)
        gram = [Double](repeating: 0, count: columns * columns)
        xty = [Double](repeating: 0, count: hasTarget ? columns : 0)
        shift = [Double](repeating: 0, count: intercept ? columns : 0)
        sum = shift
        blockX = [Double](repeating: 0, count: blockRows * columns)
        blockY = [Double](repeating: 0, count: hasTarget ? blockRows : 0)
    }

    public mutating func update(_ batch: RowBatch) throws(EngineError) {
        let d = columns
        var r = 0
        while r < batch.count {
            // Fast path: a whole unweighted block straight from the batch buffer (no copy). The BLAS call is
            // the same one the copy path would make, so the result is identical.
            if blockCount == 0, batch.weights == nil, !intercept, batch.count - r >= blockRows {
                batch.features.withUnsafeBufferPointer { x in
                    let ys = batch.targets.map { Array($0[r..<r + blockRows]) }
                    absorb(x.baseAddress! + r * d, targets: ys, count: blockRows, weight: Double(blockRows))
                }
                r += blockRows
                continue
            }
            let take = min(batch.count - r, blockRows - blockCount)
            if intercept && !hasShift && take > 0 {
                for j in 0..<d { shift[j] = batch.features[r * d + j] }
                shiftY = batch.targets?[r] ?? 0
                hasShift = true
            }
            for i in 0..<take {
                let src = r + i, dst = blockCount + i
                let w = batch.weight(src), s = batch.weights.map { $0[src].squareRoot() } ?? 1
                if intercept {
                    for j in 0..<d {
                        let v = batch.features[src * d + j] - shift[j]
                        blockX[dst * d + j] = s * v
                        sum[j] += w * v
                    }
                    if hasTarget { let v = (batch.targets?[src] ?? 0) - shiftY; blockY[dst] = s * v; sumY += w * v }
                } else {
                    for j in 0..<d { blockX[dst * d + j] = s * batch.features[src * d + j] }
                    if hasTarget { blockY[dst] = s * (batch.targets?[src] ?? 0) }
                }
                blockWeight += w
            }
            blockCount += take
            r += take
            if blockCount == blockRows { closeBlock() }
        }
    }

    /// Adds `count` rows at `x` (already √w-scaled) to the totals.
    private mutating func absorb(_ x: UnsafePointer<Double>, targets: [Double]?, count: Int, weight: Double) {
        let d = columns
        gram.withUnsafeMutableBufferPointer { g in BlockKernels.syrkUpper(x, rows: count, n: d, into: g.baseAddress!) }
        if hasTarget, let y = targets {
            y.withUnsafeBufferPointer { yp in
                xty.withUnsafeMutableBufferPointer { out in
                    BlockKernels.gemvTransposedAccumulate(x, rows: count, n: d, v: yp.baseAddress!, into: out.baseAddress!)
                }
                var s = 0.0
                for v in yp { s += v * v }
                yty += s
            }
        }
        rows += Int64(count)
        weightSum += weight
    }

    mutating func closeBlock() {
        guard blockCount > 0 else { return }
        let n = blockCount
        let ys = hasTarget ? Array(blockY[0..<n]) : nil
        let w = blockWeight
        blockX.withUnsafeBufferPointer { absorb($0.baseAddress!, targets: ys, count: n, weight: w) }
        blockCount = 0
        blockWeight = 0
    }

    public mutating func merge(_ other: GramOperator) throws(EngineError) {
        guard other.columns == columns, other.hasTarget == hasTarget else {
            throw .usage("merge", "gram states differ in shape (\(columns) vs \(other.columns) columns)")
        }
        var o = other
        o.closeBlock()
        closeBlock()
        if intercept && o.hasShift {
            if !hasShift { shift = o.shift; shiftY = o.shiftY; hasShift = true }
            o.reshift(to: shift, shiftY)
            for j in 0..<columns { sum[j] += o.sum[j] }
            sumY += o.sumY
        }
        for i in 0..<gram.count { gram[i] += o.gram[i] }
        for i in 0..<xty.count { xty[i] += o.xty[i] }
        yty += o.yty
        rows += o.rows
        weightSum += o.weightSum
    }

    /// Moves the shifted statistics to another shift t: with δ = s − t, Σw(a − t)(a − t)ᵀ = G_s + S δᵀ + δ Sᵀ
    /// + W δδᵀ (S = Σw(a − s)), and likewise for xty, yty and the sums (closed blocks only).
    mutating func reshift(to t: [Double], _ tY: Double) {
        let d = columns, w = weightSum
        let delta = (0..<d).map { shift[$0] - t[$0] }, dy = shiftY - tY
        for i in 0..<d {
            for j in i..<d { gram[i * d + j] += sum[i] * delta[j] + delta[i] * sum[j] + w * delta[i] * delta[j] }
        }
        if hasTarget {
            for i in 0..<d { xty[i] += sum[i] * dy + delta[i] * sumY + w * delta[i] * dy }
            yty += 2 * sumY * dy + w * dy * dy
        }
        for i in 0..<d { sum[i] += w * delta[i] }
        sumY += w * dy
        shift = t
        shiftY = tY
    }

    /// Closed totals (the open block folded in), gram symmetrised.
    func totals() -> GramOperator {
        var c = self
        c.closeBlock()
        var m = Matrix(rows: columns, cols: columns, storage: c.gram)
        m.symmetrizeFromUpper()
        c.gram = m.storage
        return c
    }

    public func currentSummary() -> [(String, JSON)] {
        let t = totals()
        return [("rows", .int(t.rows)), ("weight_sum", .double(t.weightSum))]
    }

    public mutating func finish() throws(EngineError) -> OperatorOutput {
        let t = totals()
        let d = columns
        // Raw AᵀWA, AᵀWy, yᵀWy: the shifted sums moved to the shift 0.
        var raw = t
        if intercept && t.hasShift { raw.reshift(to: [Double](repeating: 0, count: d), 0) }
        var rawGram = Matrix(rows: d, cols: d, storage: raw.gram)
        rawGram.symmetrizeFromUpper()
        var arrays = [NamedArray("gram", shape: [d, d], float64: rawGram.storage)]
        var summary: [(String, JSON)] = [("rows", .int(t.rows)), ("weight_sum", .double(t.weightSum)),
                                         ("columns", .int(Int64(d)))]
        var warnings: [OperatorWarning] = []
        if hasTarget {
            arrays.append(NamedArray("xty", shape: [d], float64: raw.xty))
            summary.append(("yty", .double(raw.yty)))
        }
        guard solve != .none else { return OperatorOutput(arrays: arrays, summary: summary) }
        // The system to solve: centred (exactly, from the shifted sums) with an intercept, raw without.
        var g = Matrix(rows: d, cols: d, storage: t.gram)
        var b = t.xty, c = t.yty
        if intercept {
            guard t.weightSum > 0 else { throw .data("gram", "cannot fit an intercept: the rows' weights sum to 0") }
            let w = t.weightSum
            for i in 0..<d { for j in 0..<d { g[i, j] -= t.sum[i] * t.sum[j] / w } }
            for i in 0..<d { b[i] -= t.sum[i] * t.sumY / w }
            c -= t.sumY * t.sumY / w
        }
        let x: [Double]
        if solve == .ridge && lambda > 0 {
            var s = g
            for i in 0..<d { s[i, i] += lambda }
            do {
                x = try LAPACK.choleskySolve(s, b)
            } catch {
                throw .data("gram", "cannot solve ridge: AᵀA + λI is not positive definite (\(error.description))",
                            hint: "the Gram matrix is not finite or λ is below its rounding; try solve: least-squares")
            }
        } else {
            let ls = try minimumNorm(g, b)
            x = ls.x
            summary += [("rank", .int(Int64(ls.rank))), ("condition_number", .double(ls.condition)),
                        ("rank_tolerance", .double(ls.tolerance))]
            if ls.rank < d {
                warnings.append(OperatorWarning(
                    "rank-deficient least squares: rank \(ls.rank) of \(d) columns (eigenvalues of AᵀA at or below \(JSON.format(ls.tolerance))·λ_max count as zero); the solution is the minimum-norm one",
                    hint: "some columns are (nearly) linear combinations of others, or constant\(intercept ? "" : " (with intercept: false, a constant column is not redundant)"); drop them with source.select, or use solve: ridge with lambda > 0"))
            }
        }
        // Objective ½‖Ax + b − y‖² + ½λ‖x‖² from the sufficient statistics.
        let gx = g.multiplied(by: x)
        var quad = 0.0, lin = 0.0, norm = 0.0
        for i in 0..<d { quad += x[i] * gx[i]; lin += x[i] * b[i]; norm += x[i] * x[i] }
        let penalty = solve == .ridge ? lambda : 0
        let objective = 0.5 * max(0, c - 2 * lin + quad) + 0.5 * penalty * norm
        arrays.append(NamedArray("solution", shape: [d], float64: x))
        summary.append(("objective", .double(objective)))
        if solve == .ridge { summary.append(("lambda", .double(lambda))) }
        if intercept {
            var ax = 0.0
            for j in 0..<d { ax += (t.shift[j] + t.sum[j] / t.weightSum) * x[j] }
            summary.append(("intercept", .double(t.shiftY + t.sumY / t.weightSum - ax)))
        }
        return OperatorOutput(arrays: arrays, summary: summary, warnings: warnings)
    }

    /// The minimum-norm solution of G x = b for symmetric positive semidefinite G (see the type's notes).
    func minimumNorm(_ g: Matrix, _ b: [Double]) throws(EngineError) -> (x: [Double], rank: Int, condition: Double, tolerance: Double) {
        let d = columns
        let eig: (values: [Double], vectors: Matrix)
        do { eig = try LAPACK.symmetricEigen(g) } catch { throw .data("gram", "least squares: \(error.description)", hint: "the Gram matrix is not finite?") }
        let top = max(eig.values.first ?? 0, 0)
        let tolerance = 16 * Double(d) * 0x1p-53
        var x = [Double](repeating: 0, count: d)
        var rank = 0
        for k in 0..<d where eig.values[k] > tolerance * top && top > 0 {
            var proj = 0.0
            for i in 0..<d { proj += eig.vectors[k, i] * b[i] }
            let coef = proj / eig.values[k]
            for i in 0..<d { x[i] += coef * eig.vectors[k, i] }
            rank += 1
        }
        let condition = rank > 0 ? (top / eig.values[rank - 1]).squareRoot() : .infinity
        return (x, rank, condition, tolerance)
    }
}

// MARK: state

/// State payload, version 2 (version 1 ended after the open block's targets):
///
/// ```
/// offset  size       field
///      0     8       columns d (u64)          8  1  has target (u8)
///      9     8       rows (i64)              17  8  weight sum (f64)
///     25   8+8d²     Gram matrix AᵀWA of completed blocks ([f64], row-major d×d)
///      …   8+8d|8    AᵀWy ([f64], d with a target, else empty)
///      …     8       yᵀWy (f64)
///      …     8       rows in the open block b (u64)    …  8  its weight (f64)
///      …   8+8bd     the open block's rows ([f64], b×d)
///      …   8+8b|8    the open block's targets ([f64], b with a target, else empty)
///      …     1       intercept (u8)            …  1  shift taken (u8)
///      …   8+8d|8    the shift s ([f64], d with an intercept, else empty)   …  8  the target's shift (f64)
///      …   8+8d|8    Σ w (a − s) ([f64], as the shift)                     …  8  Σ w (y − s_y) (f64)
/// ```
/// Integers and floats little-endian; `[f64]` is a u64 count then the values (`BinaryWriter.f64s`). Restoring
/// checks every count and length against the parameters, so a damaged payload is an error, never a trap.
extension GramOperator {
    public func encodeState() -> [UInt8] {
        var w = BinaryWriter()
        w.u64(UInt64(columns)); w.bool(hasTarget); w.i64(rows); w.f64(weightSum)
        w.f64s(gram); w.f64s(xty); w.f64(yty)
        w.u64(UInt64(blockCount)); w.f64(blockWeight)
        w.f64s(Array(blockX[0..<blockCount * columns]))
        w.f64s(hasTarget ? Array(blockY[0..<blockCount]) : [])
        // Version 2: the intercept's shift and sums.
        w.bool(intercept); w.bool(hasShift); w.f64s(shift); w.f64(shiftY); w.f64s(sum); w.f64(sumY)
        return w.bytes
    }

    public init(columns: Int, hasTarget: Bool, solve: Solve = .none, lambda: Double = 0, intercept: Bool = false,
                state: [UInt8], location: String) throws(EngineError) {
        self.init(columns: columns, hasTarget: hasTarget, solve: solve, lambda: lambda, intercept: intercept)
        var r = BinaryReader(state, location: location)
        let c = Int(try r.u64()), t = try r.bool()
        guard c == columns, t == hasTarget else {
            throw .data(location, "gram state has \(c) columns (target: \(t)), expected \(columns) (target: \(hasTarget))")
        }
        rows = try r.i64(); weightSum = try r.f64()
        gram = try r.f64s(); xty = try r.f64s(); yty = try r.f64()
        blockCount = Int(try r.u64()); blockWeight = try r.f64()
        let bx = try r.f64s(), by = try r.f64s()
        guard gram.count == c * c, xty.count == (t ? c : 0), blockCount < blockRows,
              bx.count == blockCount * c, by.count == (t ? blockCount : 0) else {
            throw .data(location, "gram state is inconsistent (array lengths or block count)")
        }
        for i in 0..<bx.count { blockX[i] = bx[i] }
        for i in 0..<by.count { blockY[i] = by[i] }
        let ic = try r.bool()
        hasShift = try r.bool(); shift = try r.f64s(); shiftY = try r.f64(); sum = try r.f64s(); sumY = try r.f64()
        guard ic == intercept, shift.count == (ic ? c : 0), sum.count == shift.count, ic || !hasShift else {
            throw .data(location, "gram state is inconsistent (intercept: \(ic), expected \(intercept))")
        }
        guard r.remaining == 0 else { throw .data(location, "gram state has \(r.remaining) trailing bytes") }
    }
}

extension GramOperator: SelfDescribingOperator {
    public static let info = OperatorInfo(
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
        outputs: ["gram", "xty (with a target)", "solution (solve: ridge or least-squares)"],
        stateVersion: stateVersion, finishOnly: ["solve", "lambda"],
        examples: [OperatorExample("gram-ridge", [("solve", .string("ridge")), ("lambda", .double(0.5))], mergeTolerance: 1e-10),
                   OperatorExample("gram-lstsq-intercept", [("solve", .string("least-squares")), ("intercept", .bool(true))],
                                   weighted: true, mergeTolerance: 1e-10)],
        check: { p, hasTarget in
            let solve = p.string("solve") ?? "none"
            if solve != "none" && !hasTarget { return "solve: \(solve) needs a target (set source.target)" }
            if p.bool("intercept") == true && solve == "none" { return "intercept: true needs solve: ridge or least-squares" }
            return nil
        })

    public init(params p: ParamValues, context: OperatorContext) {
        self.init(columns: context.shape.columns, hasTarget: context.shape.hasTarget,
                  solve: Solve(rawValue: p.string("solve") ?? "none") ?? .none, lambda: p.double("lambda") ?? 0,
                  intercept: p.bool("intercept") ?? false)
    }
    public init(restoring state: [UInt8], params p: ParamValues, context: OperatorContext, location: String) throws(EngineError) {
        try self.init(columns: context.shape.columns, hasTarget: context.shape.hasTarget,
                      solve: Solve(rawValue: p.string("solve") ?? "none") ?? .none, lambda: p.double("lambda") ?? 0,
                      intercept: p.bool("intercept") ?? false, state: state, location: location)
    }
}
