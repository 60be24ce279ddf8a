import EngineCore
import LinearAlgebra
@testable import Operators
import TestSupport
import Testing

/// Feeds batches to an operator and returns it.
func fed<T: StreamOperator>(_ op: T, _ bs: [RowBatch]) throws -> T {
    var o = op
    for b in bs { try o.update(b) }
    return o
}

/// Rows [lo, hi) of a matrix.
func rowRange(_ a: Matrix, _ lo: Int, _ hi: Int) -> Matrix {
    Matrix(rows: hi - lo, cols: a.cols, storage: Array(a.storage[lo * a.cols..<hi * a.cols]))
}

func arrays(_ out: OperatorOutput) -> [String: [Double]] {
    var d: [String: [Double]] = [:]
    for a in out.arrays { if case let .float64(v) = a.values { d[a.name] = v } }
    return d
}

/// Column scales spanning 1e-3 … 1e3 plus an offset of 1e4 make naive one-pass formulas lose digits, which
/// is what the shifted block sums must survive.
let scales: [Double] = [1e-3, 1, 10, 1e3, 0.5, 2, 7]
func offsetData(rows: Int, seed: UInt64) -> Matrix {
    var a = gaussianMatrix(rows: rows, cols: scales.count, seed: seed, scale: scales)
    for i in 0..<rows { a[i, 0] += 1e4 }
    return a
}

@Suite struct MomentsTests {
    /// Against a two-pass float64 reference. Tolerance: Chan et al.'s pairwise update is backward stable;
    /// with n = 10⁴ the error is ≲ log₂(n)·ε relative to the data's scale, far below 1e-12.
    @Test func matchesTwoPassReference() throws {
        let a = offsetData(rows: 10_000, seed: 1)
        var op = try fed(MomentsOperator(columns: a.cols), batches(a, batchRows: 999))
        let out = arrays(try op.finish())
        let ref = twoPassMoments(a)
        #expect(relativeError(out["mean"]!, ref.mean) < 1e-13)
        for j in 0..<a.cols { #expect(abs(out["variance"]![j] - ref.variance[j]) / ref.variance[j] < 1e-10) }
    }

    /// One row (variance 0), weights as multiplicities (a row of weight 3 = the row three times).
    @Test func edgeCasesAndWeights() throws {
        var one = MomentsOperator(columns: 2)
        try one.update(batches(Matrix(rows: 1, cols: 2, storage: [3, -4]), batchRows: 1)[0])
        let o1 = arrays(try one.finish())
        #expect(o1["mean"]! == [3, -4] && o1["variance"]! == [0, 0])
        let a = Matrix(rows: 3, cols: 1, storage: [1, 2, 10])
        var w = try fed(MomentsOperator(columns: 1), batches(a, weights: [1, 3, 0], batchRows: 2))
        let rep = Matrix(rows: 4, cols: 1, storage: [1, 2, 2, 2])
        var r = try fed(MomentsOperator(columns: 1), batches(rep, batchRows: 4))
        let ow = arrays(try w.finish()), orr = arrays(try r.finish())
        #expect(abs(ow["mean"]![0] - orr["mean"]![0]) < 1e-15 && abs(ow["variance"]![0] - orr["variance"]![0]) < 1e-15)
    }

    /// Blocks are cut at fixed row positions, so any batching gives a byte-identical state.
    @Test(arguments: [1, 2, 7, 64, 4096, 10_000])
    func batchSizeInvariance(batchRows: Int) throws {
        let a = offsetData(rows: 10_000, seed: 2)
        let ref = try fed(MomentsOperator(columns: a.cols), batches(a, batchRows: 10_000))
        #expect(try fed(MomentsOperator(columns: a.cols), batches(a, batchRows: batchRows)).encodeState() == ref.encodeState())
    }

    /// Snapshot after k rows, restore into a fresh instance, continue: identical to never stopping.
    @Test func snapshotResume() throws {
        let a = offsetData(rows: 9000, seed: 3)
        let whole = try fed(MomentsOperator(columns: a.cols), batches(a, batchRows: 500))
        let first = try fed(MomentsOperator(columns: a.cols), batches(a, batchRows: 500, count: 5123))
        let restored = try MomentsOperator(columns: a.cols, state: first.encodeState(), location: "t")
        #expect(restored.encodeState() == first.encodeState())
        let resumed = try fed(restored, batches(a, batchRows: 333, start: 5123))
        #expect(resumed.encodeState() == whole.encodeState())
    }

    /// Shards merged equal the whole to 1e-12 relative (docs/checkpoints-and-merge.md).
    /// Data with a moderate offset (mean 3, unit scale): with a 1e4 offset over a 1e-3 spread, the float64
    /// representation of the data itself limits the variance to ~1e-9 relative, in any summation order.
    @Test(arguments: [2, 8])
    func mergeShards(shards: Int) throws {
        var a = gaussianMatrix(rows: 20_000, cols: 5, seed: 4, scale: [1, 2, 0.5, 3, 1])
        for i in 0..<a.rows { a[i, 0] += 3 }
        var whole = try fed(MomentsOperator(columns: a.cols), batches(a, batchRows: 1000))
        let per = a.rows / shards
        var acc: MomentsOperator?
        for k in 0..<shards {
            let part = try fed(MomentsOperator(columns: a.cols), batches(a, batchRows: 777, start: k * per, count: per))
            if acc == nil { acc = part } else { try acc!.merge(part) }
        }
        let m = arrays(try acc!.finish()), w = arrays(try whole.finish())
        #expect(relativeError(m["mean"]!, w["mean"]!) < 1e-12)
        for j in 0..<a.cols { #expect(abs(m["variance"]![j] - w["variance"]![j]) / w["variance"]![j] < 1e-12) }
    }

    @Test func corruptStateRejected() throws {
        let op = try fed(MomentsOperator(columns: 3), batches(gaussianMatrix(rows: 10, cols: 3, seed: 1), batchRows: 10))
        #expect(throws: EngineError.self) { try MomentsOperator(columns: 4, state: op.encodeState(), location: "t") }
        #expect(throws: EngineError.self) { try MomentsOperator(columns: 3, state: Array(op.encodeState().dropLast(9)), location: "t") }
    }
}

@Suite struct GramTests {
    /// Against a naive row-by-row float64 sum. Both are float64 sums of the same products in different
    /// orders: the difference is bounded by ~n·ε·Σ|a_p a_q|, i.e. ≲ 1e-12 relative at n = 10⁴.
    @Test func matchesNaiveReference() throws {
        let a = gaussianMatrix(rows: 10_000, cols: 9, seed: 5)
        let y = (0..<a.rows).map { Double($0 % 13) - 6 }
        var op = try fed(GramOperator(columns: 9, hasTarget: true, solve: .none, lambda: 0), batches(a, targets: y, batchRows: 1234))
        let out = arrays(try op.finish())
        #expect(relativeError(out["gram"]!, naiveGram(a).storage) < 1e-12)
        var xty = [Double](repeating: 0, count: 9)
        for i in 0..<a.rows { for j in 0..<9 { xty[j] += a[i, j] * y[i] } }
        #expect(relativeError(out["xty"]!, xty) < 1e-12)
    }

    /// Ridge via Cholesky against LAPACK dgels on the augmented system [A; √λ I] x ≈ [y; 0], an independent
    /// QR-based solve; agreement to 1e-9 relative for this well-conditioned (κ ≈ 2) problem.
    @Test func ridgeMatchesAugmentedLeastSquares() throws {
        let a = gaussianMatrix(rows: 2000, cols: 6, seed: 6)
        let y = a.multiplied(by: [1, -1, 2, 0, 0.5, 3]).enumerated().map { $0.element + 0.01 * Double($0.offset % 5) }
        let lambda = 2.5
        var op = try fed(GramOperator(columns: 6, hasTarget: true, solve: .ridge, lambda: lambda), batches(a, targets: y, batchRows: 300))
        let x = arrays(try op.finish())["solution"]!
        var aug = Matrix(rows: 2006, cols: 6)
        for i in 0..<2000 { for j in 0..<6 { aug[i, j] = a[i, j] } }
        for j in 0..<6 { aug[2000 + j, j] = lambda.squareRoot() }
        let ref = try LAPACK.leastSquares(aug, y + [Double](repeating: 0, count: 6))
        #expect(relativeError(x, ref) < 1e-9)
    }

    /// A duplicated column with λ = 0: not an error but the minimum-norm solution, against LAPACK's SVD-based
    /// dgelsd on the same (rank-2) matrix — 1e-9 relative on the kept, well-conditioned part — with rank 2
    /// reported and a warning raised.
    @Test func singularRidgeWithoutLambdaGivesTheMinimumNormSolution() throws {
        var a = gaussianMatrix(rows: 50, cols: 3, seed: 7)
        for i in 0..<50 { a[i, 2] = a[i, 1] }   // duplicate column
        let y = (0..<50).map { Double($0 % 7) - 3 }
        var op = try fed(GramOperator(columns: 3, hasTarget: true, solve: .ridge, lambda: 0), batches(a, targets: y, batchRows: 50))
        let out = try op.finish()
        let ref = try LAPACK.leastSquaresMinNorm(a, y, rcond: 1e-10)
        #expect(relativeError(arrays(out)["solution"]!, ref.x) < 1e-9)
        #expect(out.summary.first { $0.0 == "rank" }?.1 == .int(2))
        #expect(out.warnings.count == 1 && out.warnings[0].what.contains("rank 2 of 3"))
    }

    /// The intercept against LAPACK least squares on [A | 1] (weighted: rows scaled by √w), on columns offset by
    /// 1e4 and scaled 1e-3…1e3 — where centring G − SSᵀ/W without the shift would lose digits. κ([A_c]) ≈ 1e6
    /// here, so normal equations are good to ≈ κ²·u ≈ 1e-4 in the worst direction; the fitted values (and so
    /// the objective) to ≈ κ·u: the test asks 1e-6 of the coefficients relative to their largest and 1e-9 of
    /// the objective. The same through shards merged (their shifts differ) and through batch sizes 1…n.
    @Test func interceptMatchesAugmentedLeastSquares() throws {
        let n = 3000, d = scales.count
        let a = offsetData(rows: n, seed: 31)
        let beta: [Double] = [2, -1, 0.5, 1e-3, 3, 0, -2]
        let w = (0..<n).map { Double(1 + $0 % 3) }
        let y = a.multiplied(by: beta).enumerated().map { 17 + $0.element + 0.1 * Double($0.offset % 11 - 5) }
        var aug = Matrix(rows: n, cols: d + 1)
        var yw = y
        for i in 0..<n {
            let s = w[i].squareRoot()
            for j in 0..<d { aug[i, j] = s * a[i, j] }
            aug[i, d] = s
            yw[i] = s * y[i]
        }
        let ref = try LAPACK.leastSquares(aug, yw)
        func solve(_ bs: [RowBatch]) throws -> OperatorOutput {
            var op = try fed(GramOperator(columns: d, hasTarget: true, solve: .leastSquares, intercept: true), bs)
            return try op.finish()
        }
        let whole = try solve(batches(a, targets: y, weights: w, batchRows: 700))
        let x = arrays(whole)["solution"]!
        #expect(relativeError(x, Array(ref.prefix(d))) < 1e-6)
        guard case let .double(b)? = whole.summary.first(where: { $0.0 == "intercept" })?.1 else { Issue.record("no intercept"); return }
        #expect(abs(b - ref[d]) <= 1e-6 * max(1, abs(ref[d])), "intercept \(b) vs \(ref[d])")
        var r2 = 0.0
        for i in 0..<n { var f = ref[d]; for j in 0..<d { f += a[i, j] * ref[j] }; r2 += w[i] * (f - y[i]) * (f - y[i]) }
        guard case let .double(obj)? = whole.summary.first(where: { $0.0 == "objective" })?.1 else { Issue.record("no objective"); return }
        #expect(abs(obj - 0.5 * r2) <= 1e-9 * 0.5 * r2 + 1e-12, "objective \(obj) vs \(0.5 * r2)")
        // Raw outputs are AᵀWA whatever the shift.
        var g = [Double](repeating: 0, count: d * d)
        for i in 0..<n { for p in 0..<d { for q in 0..<d { g[p * d + q] += w[i] * a[i, p] * a[i, q] } } }
        #expect(relativeError(arrays(whole)["gram"]!, g) < 1e-12)
        for rowsPerBatch in [1, 7, n] {
            #expect(arrays(try solve(batches(a, targets: y, weights: w, batchRows: rowsPerBatch)))["solution"] == x)
        }
        // Two shards (shifted by their own first rows), merged.
        let half = n / 2
        var s1 = try fed(GramOperator(columns: d, hasTarget: true, solve: .leastSquares, intercept: true),
                         batches(rowRange(a, 0, half), targets: Array(y[..<half]), weights: Array(w[..<half]), batchRows: 500))
        let s2 = try fed(GramOperator(columns: d, hasTarget: true, solve: .leastSquares, intercept: true),
                         batches(rowRange(a, half, n), targets: Array(y[half...]), weights: Array(w[half...]), batchRows: 500))
        try s1.merge(s2)
        // Another summation order: the merged solve agrees with the reference as the single run does (κ²·u).
        #expect(relativeError(arrays(try s1.finish())["solution"]!, Array(ref.prefix(d))) < 1e-6)
    }

    /// rank and condition_number against LAPACK's singular values of the (unweighted, uncentred) design.
    @Test func leastSquaresReportsRankAndCondition() throws {
        let a = gaussianMatrix(rows: 400, cols: 5, seed: 32, scale: [1, 10, 100, 0.1, 1])
        let y = (0..<400).map { Double($0 % 5) }
        var op = try fed(GramOperator(columns: 5, hasTarget: true, solve: .leastSquares), batches(a, targets: y, batchRows: 64))
        let out = try op.finish()
        let sv = try LAPACK.singularValues(a)
        guard case let .double(kappa)? = out.summary.first(where: { $0.0 == "condition_number" })?.1 else { Issue.record("no condition_number"); return }
        // Eigenvalues of the computed AᵀA are σ² to ≈ d·u·σ₁² absolute; κ ≈ 1e3 here, so ≈ 1e-10 relative.
        #expect(abs(kappa - sv[0] / sv[4]) <= 1e-8 * kappa)
        #expect(out.summary.first { $0.0 == "rank" }?.1 == .int(5))
        #expect(out.warnings.isEmpty)
        #expect(relativeError(arrays(out)["solution"]!, try LAPACK.leastSquares(a, y)) < 1e-9)
    }

    @Test(arguments: [1, 2, 7, 64, 5000])
    func batchSizeInvariance(batchRows: Int) throws {
        let a = gaussianMatrix(rows: 5000, cols: 5, seed: 8)
        let w = (0..<5000).map { Double($0 % 4) }
        let ref = try fed(GramOperator(columns: 5, hasTarget: false, solve: .none, lambda: 0), batches(a, weights: w, batchRows: 5000))
        #expect(try fed(GramOperator(columns: 5, hasTarget: false, solve: .none, lambda: 0),
                        batches(a, weights: w, batchRows: batchRows)).encodeState() == ref.encodeState())
        let u = try fed(GramOperator(columns: 5, hasTarget: false, solve: .none, lambda: 0), batches(a, batchRows: batchRows))
        let ur = try fed(GramOperator(columns: 5, hasTarget: false, solve: .none, lambda: 0), batches(a, batchRows: 5000))
        #expect(u.encodeState() == ur.encodeState())
    }

    /// Weights are multiplicities: weight 2 equals the row twice (to rounding).
    @Test func weightsAreMultiplicities() throws {
        let a = gaussianMatrix(rows: 100, cols: 4, seed: 9)
        let w = (0..<100).map { Double($0 % 3) }
        var rep = Matrix(rows: 0, cols: 4)
        var store: [Double] = []
        for i in 0..<100 { for _ in 0..<Int(w[i]) { store += (0..<4).map { a[i, $0] } } }
        rep = Matrix(rows: store.count / 4, cols: 4, storage: store)
        var x = try fed(GramOperator(columns: 4, hasTarget: false, solve: .none, lambda: 0), batches(a, weights: w, batchRows: 16))
        var y = try fed(GramOperator(columns: 4, hasTarget: false, solve: .none, lambda: 0), batches(rep, batchRows: 16))
        #expect(relativeError(arrays(try x.finish())["gram"]!, arrays(try y.finish())["gram"]!) < 1e-13)
    }

    @Test func snapshotResumeAndMerge() throws {
        let a = gaussianMatrix(rows: 12_000, cols: 6, seed: 10)
        let mk = { GramOperator(columns: 6, hasTarget: false, solve: .none, lambda: 0) }
        var whole = try fed(mk(), batches(a, batchRows: 1000))
        let first = try fed(mk(), batches(a, batchRows: 1000, count: 7001))
        let restored = try GramOperator(columns: 6, hasTarget: false, solve: .none, lambda: 0, state: first.encodeState(), location: "t")
        #expect(restored.encodeState() == first.encodeState())
        #expect(try fed(restored, batches(a, batchRows: 999, start: 7001)).encodeState() == whole.encodeState())
        for shards in [2, 8] {
            var acc: GramOperator?
            for k in 0..<shards {
                let p = try fed(mk(), batches(a, batchRows: 700, start: k * 12_000 / shards, count: 12_000 / shards))
                if acc == nil { acc = p } else { try acc!.merge(p) }
            }
            #expect(relativeError(arrays(try acc!.finish())["gram"]!, arrays(try whole.finish())["gram"]!) < 1e-12)
        }
    }
}
