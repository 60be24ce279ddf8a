import COpenBLAS

#if canImport(Glibc)
import Glibc
#endif

/// Leverage scores, ridge quadratic forms and ℓp Lewis weights of blocks of rows — the scores
/// `sensitivity-sample` samples by. Every routine works on a row-major block (m rows × n columns) with BLAS
/// level 3 (one dsyrk for the Gram matrix, one dtrsm for all rows), never row by row.
///
/// Numerics: scores come from the Gram matrix and its Cholesky factor, so a block whose columns are
/// nearly dependent (condition number κ after equilibrating the columns) loses about κ²·1e-16 relative
/// accuracy. Column scales do not matter: the ridge added before factoring is relative to each column's
/// own energy (λ·diag(G)), and Cholesky's error bound depends on the equilibrated matrix only (van der
/// Sluis). Directions holding less than ~`relativeRidge` of a column's energy are treated as absent.
public enum RowScores {
    /// The default relative ridge for plain leverage scores: 1e-12 of each column's energy, a few orders
    /// above float64 rounding of a Gram matrix entry.
    public static let defaultRelativeRidge = 1e-12

    /// In-place Cholesky factor S = RᵀR of a symmetric positive definite n×n matrix (row-major; only the
    /// upper triangle is read). On return the upper triangle holds R; the strict lower triangle is left as
    /// it was. (dpotrf with uplo = 'L' on the column-major view, which is the same buffer transposed.)
    public static func choleskyUpper(_ s: inout [Double], n: Int) throws(LinearAlgebraError) {
        precondition(s.count >= n * n)
        if n == 0 { return }
        var uplo = CChar(UInt8(ascii: "L")), nn = Int32(n), lda = Int32(n), info: Int32 = 0
        dpotrf_(&uplo, &nn, &s, &lda, &info, 1)
        guard info == 0 else {
            throw LinearAlgebraError(routine: "dpotrf", info: info,
                                     detail: info > 0 ? "matrix is not positive definite (minor \(info))" : "argument \(-info) invalid")
        }
    }

    /// Replaces the upper-triangular R (from `choleskyUpper`, row-major upper triangle) by R⁻¹ in full
    /// row-major storage (strict lower triangle zeroed), for `quadraticForms(inverseFactor:…)`. (dtrtri with
    /// uplo = 'L' on the column-major view.) O(n³/3), once per block of rows.
    public static func invertUpper(_ r: inout [Double], n: Int) throws(LinearAlgebraError) {
        if n == 0 { return }
        var uplo = CChar(UInt8(ascii: "L")), diag = CChar(UInt8(ascii: "N")), nn = Int32(n), lda = Int32(n), info: Int32 = 0
        dtrtri_(&uplo, &diag, &nn, &r, &lda, &info, 1, 1)
        guard info == 0 else {
            throw LinearAlgebraError(routine: "dtrtri", info: info, detail: info > 0 ? "factor is singular (diagonal \(info))" : "argument \(-info) invalid")
        }
        for i in 0..<n { for j in 0..<i { r[i * n + j] = 0 } }
    }

    /// out[i] = x_iᵀ S⁻¹ x_i = ‖x_iᵀR⁻¹‖² given R⁻¹ (upper triangular, row-major, from `invertUpper`): a copy
    /// of the block and one dtrmm — half a dgemm's flops: 0.14 s against dgemm's 0.20 s for 10⁶ rows of 65
    /// (`make -C Benchmarks kernels`), and about 4× faster than a right-sided dtrsm with R on these blocks.
    public static func quadraticForms(inverseFactor ri: UnsafePointer<Double>, n: Int, x: UnsafePointer<Double>, rows m: Int,
                                      scratch z: UnsafeMutablePointer<Double>, into out: UnsafeMutablePointer<Double>) {
        if m == 0 { return }
        if n == 0 { for i in 0..<m { out[i] = 0 }; return }
        z.update(from: x, count: m * n)
        cblas_dtrmm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, Int32(m), Int32(n), 1, ri, Int32(n), z, Int32(n))
        for i in 0..<m { out[i] = BlockKernels.sumOfSquares(z + i * n, n: n) }
    }

    /// out[i] = x_iᵀ S⁻¹ x_i for the rows of a row-major m×n block X, given the factor R of S = RᵀR from
    /// `choleskyUpper`: Z = X R⁻¹ (one dtrsm), then the squared row norms of Z. `z` is scratch (≥ m·n).
    public static func quadraticForms(factor r: UnsafePointer<Double>, n: Int, x: UnsafePointer<Double>, rows m: Int,
                                      scratch z: UnsafeMutablePointer<Double>, into out: UnsafeMutablePointer<Double>) {
        if m == 0 { return }
        if n == 0 { for i in 0..<m { out[i] = 0 }; return }
        z.update(from: x, count: m * n)
        cblas_dtrsm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, Int32(m), Int32(n), 1,
                    r, Int32(n), z, Int32(n))
        for i in 0..<m {
            var s = 0.0
            let row = z + i * n
            for j in 0..<n { s += row[j] * row[j] }
            out[i] = s
        }
    }

    /// h_i = x_iᵀ (Xᵀ diag(c) X + Λ)⁻¹ x_i for the rows of X (row-major m×n), with row coefficients c
    /// (nil = all 1; rows with c = 0 do not enter the Gram matrix but still get their h) and the ridge
    /// Λ = λ·diag(Xᵀ diag(c) X), floored so that a column that is zero in this block stays positive definite.
    /// The leverage score of row i in the matrix diag(c)^{1/2} X is c_i·h_i.
    public static func ridgeQuadraticForms(_ x: [Double], rows m: Int, cols n: Int, coefficients c: [Double]? = nil,
                                           relativeRidge: Double = defaultRelativeRidge) throws(LinearAlgebraError) -> [Double] {
        precondition(x.count >= m * n)
        var h = [Double](repeating: 0, count: m)
        if m == 0 || n == 0 { return h }
        var g = [Double](repeating: 0, count: n * n)
        if let c {
            var y = [Double](repeating: 0, count: m * n)
            for i in 0..<m {
                let s = c[i].squareRoot()
                for j in 0..<n { y[i * n + j] = s * x[i * n + j] }
            }
            y.withUnsafeBufferPointer { yp in
                g.withUnsafeMutableBufferPointer { gp in
                    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(n), Int32(m), 1, yp.baseAddress, Int32(n), 0, gp.baseAddress, Int32(n))
                }
            }
        } else {
            x.withUnsafeBufferPointer { xp in
                g.withUnsafeMutableBufferPointer { gp in
                    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(n), Int32(m), 1, xp.baseAddress, Int32(n), 0, gp.baseAddress, Int32(n))
                }
            }
        }
        addRelativeRidge(&g, n: n, relative: relativeRidge)
        try choleskyUpper(&g, n: n)
        try invertUpper(&g, n: n)
        var z = [Double](repeating: 0, count: m * n)
        g.withUnsafeBufferPointer { gp in
            x.withUnsafeBufferPointer { xp in
                z.withUnsafeMutableBufferPointer { zp in
                    h.withUnsafeMutableBufferPointer { hp in
                        quadraticForms(inverseFactor: gp.baseAddress!, n: n, x: xp.baseAddress!, rows: m, scratch: zp.baseAddress!, into: hp.baseAddress!)
                    }
                }
            }
        }
        return h
    }

    /// Adds λ·G_jj to each diagonal entry; a column with no energy at all gets 1 (it is zero in every row,
    /// so its ridge cannot change any score, but the factor must exist).
    public static func addRelativeRidge(_ g: inout [Double], n: Int, relative: Double) {
        for j in 0..<n {
            let d = g[j * n + j]
            g[j * n + j] += d > 0 ? max(relative * d, Double.leastNormalMagnitude) : 1
        }
    }

    /// ℓ2 leverage scores τ_i of the rows of X (row-major m×n): τ_i = x_iᵀ(XᵀX)⁻¹x_i, Σ τ_i = rank.
    public static func leverage(_ x: [Double], rows m: Int, cols n: Int) throws(LinearAlgebraError) -> [Double] {
        try ridgeQuadraticForms(x, rows: m, cols: n)
    }

    /// The result of `lewisWeights`.
    public struct Lewis: Sendable {
        /// The weights w_i the last update T was computed from (0 for zero rows).
        public var weights: [Double]
        /// T(w)_i = (a_iᵀ(Aᵀ W^{1−2/p} A)⁻¹ a_i)^{p/2} for those weights.
        public var update: [Double]
        /// Fixed-point iterations run (each one Gram matrix, factor and dgemm).
        public var iterations: Int
        /// max_i |log T_i − log w_i|: w is within a factor e^residual of its own update.
        public var residual: Double
        /// β = max_i T_i / w_i over the nonzero rows.
        public var beta: Double
        public var weightSum: Double
        public var converged: Bool
    }

    /// ℓp Lewis weights of the rows of A (row-major m×n; Cohen & Peng, "ℓp Row Sampling by Lewis Weights",
    /// STOC 2015): the fixed point w_i = T(w)_i = (a_iᵀ (Aᵀ W^{1−2/p} A)⁻¹ a_i)^{p/2}, started from the
    /// leverage scores (or `initial`).
    ///
    /// Iteration: the damped geometric update log w ← (1 − η)·log w + η·log T(w) with η = 4/(p + 2). The
    /// Jacobian of log T at the fixed point is (1 − p/2)·Φ, with Φ = diag(P)⁻¹(P∘P) row-stochastic with real
    /// eigenvalues in [0, 1] (P the projection onto the columns of W^{1/2−1/p}A), so the damped map
    /// contracts with factor |p − 2|/(p + 2) for every p ≥ 1 (1/3 at p = 1 and p = 4) — the undamped update
    /// (η = 1), Cohen–Peng's, contracts only for p < 4. Stops when the residual is below `tolerance` or
    /// after `maxIterations`, returning the last w together with T(w): `sensitivityBounds` turns any such
    /// pair into a valid bound, so the tolerance only decides how tight it is. Rows that are exactly zero
    /// get weight 0 and stay out of every Gram matrix.
    public static func lewisWeights(_ a: [Double], rows m: Int, cols n: Int, p: Double, initial: [Double]? = nil,
                                    tolerance: Double = 1e-6, maxIterations: Int = 100) throws(LinearAlgebraError) -> Lewis {
        var zero = [Bool](repeating: false, count: m)
        for i in 0..<m {
            var s = 0.0
            for j in 0..<n { s += a[i * n + j] * a[i * n + j] }
            zero[i] = s == 0
        }
        var w: [Double]
        if let initial { w = initial } else { w = try leverage(a, rows: m, cols: n) }
        // A floor keeps w^{1−2/p} finite for p < 2; rows at the floor have negligible leverage anyway.
        var maxW = 0.0
        for i in 0..<m where !zero[i] { maxW = max(maxW, w[i]) }
        let floor = max(maxW, 1e-300) * 1e-15
        for i in 0..<m { w[i] = zero[i] ? 0 : max(w[i], floor) }
        let eta = 4 / (p + 2), e = 1 - 2 / p
        var coeff = [Double](repeating: 0, count: m)
        var t = [Double](repeating: 0, count: m)
        var it = 0
        while true {
            for i in 0..<m { coeff[i] = zero[i] ? 0 : pow(w[i], e) }
            let h = try ridgeQuadraticForms(a, rows: m, cols: n, coefficients: coeff, relativeRidge: 1e-14)
            it += 1
            var residual = 0.0, beta = 0.0, sum = 0.0
            for i in 0..<m where !zero[i] {
                t[i] = max(pow(h[i], p / 2), floor)
                residual = max(residual, abs(log(t[i]) - log(w[i])))
                beta = max(beta, t[i] / w[i])
                sum += w[i]
            }
            if residual < tolerance || it >= maxIterations || p == 2 {
                return Lewis(weights: w, update: t, iterations: it, residual: residual, beta: beta, weightSum: sum,
                             converged: residual < tolerance || p == 2)
            }
            for i in 0..<m where !zero[i] { w[i] = exp((1 - eta) * log(w[i]) + eta * log(t[i])) }
        }
    }

    /// Upper bounds on the ℓp sensitivities σ_i = sup_x |a_iᵀx|^p / ‖Ax‖_p^p from any positive weights w and
    /// their update T = T(w) (`lewisWeights`, converged or not). With M = AᵀW^{1−2/p}A, Cauchy–Schwarz gives
    /// |a_iᵀx|^p ≤ T_i·(xᵀMx)^{p/2}, and
    /// - p ≤ 2: xᵀMx = Σ_j |a_jᵀx|^p·(|a_jᵀx|/w_j^{1/p})^{2−p} ≤ β^{(2−p)/p}·‖Ax‖_p^p·(xᵀMx)^{(2−p)/2}, β = max T_j/w_j,
    ///   so σ_i ≤ β^{(2−p)/p}·T_i;
    /// - p ≥ 2: xᵀMx ≤ (Σ_j w_j)^{1−2/p}·‖Ax‖_p² (Hölder), so σ_i ≤ (Σ_j w_j)^{p/2−1}·T_i.
    /// At the fixed point (β = 1, Σ w = rank) these are Lewis weights' w_i and d^{p/2−1}·w_i.
    public static func sensitivityBounds(_ l: Lewis, p: Double) -> [Double] {
        let factor = p <= 2 ? pow(max(l.beta, 0), (2 - p) / p) : pow(l.weightSum, p / 2 - 1)
        return l.update.enumerated().map { l.weights[$0.offset] == 0 ? 0 : factor * $0.element }
    }
}
