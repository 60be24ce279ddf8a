import COpenBLAS

/// The R factor of a tall matrix whose rows arrive in blocks (flat TSQR, Demmel et al. 2012 §3): after
/// absorbing blocks X₁ … X_k, R is the triangular factor of a Householder QR of the stacked rows, so
/// RᵀR = Σ XᵢᵀXᵢ without ever forming that Gram matrix.
///
/// Why not the Gram: forming AᵀA squares the condition number (κ = 1e8 becomes 1e16, the end of float64),
/// while each block step here is a backward-stable Householder QR of [R; Xᵢ] (dgeqrt3, recursive and BLAS-3
/// even for thin panels), so R is the exact factor of a matrix within ~k·n·ε‖A‖ of A and keeps κ(A).
/// Cost per block of b rows: ≈ 2·(b + n)·n² flops. Memory: n² doubles plus an (n + b)×n scratch per call.
/// Signs of R's rows are whatever Householder gives (R is unique only up to them).
public struct StreamingQR: Sendable, Equatable {
    public let columns: Int
    /// Row-major n×n, upper triangular (zeros below the diagonal).
    public private(set) var r: [Double]

    public init(columns: Int) {
        self.columns = columns
        r = [Double](repeating: 0, count: columns * columns)
    }

    /// Restores a factor (row-major n×n; the lower triangle is ignored and zeroed).
    public init(columns: Int, r: [Double]) {
        precondition(r.count == columns * columns)
        self.columns = columns
        var z = r
        for i in 0..<columns { for j in 0..<i { z[i * columns + j] = 0 } }
        self.r = z
    }

    /// Absorbs `rows` rows (row-major, `columns` each) at `x`.
    public mutating func absorb(_ x: UnsafePointer<Double>, rows: Int) throws(LinearAlgebraError) {
        let n = columns
        if rows == 0 || n == 0 { return }
        let m = n + rows
        // Column-major [R; X] (m×n): column j = R[0..j, j], zeros, then X[:, j].
        var a = [Double](repeating: 0, count: m * n)
        var t = [Double](repeating: 0, count: n * n)
        for j in 0..<n {
            for i in 0...j { a[j * m + i] = r[i * n + j] }
            for k in 0..<rows { a[j * m + n + k] = x[k * n + j] }
        }
        var mm = Int32(m), nn = Int32(n), lda = Int32(m), ldt = Int32(n), info: Int32 = 0
        dgeqrt3_(&mm, &nn, &a, &lda, &t, &ldt, &info)
        guard info == 0 else { throw LinearAlgebraError(routine: "dgeqrt3", info: info, detail: "argument \(-info) invalid") }
        for i in 0..<n {
            for j in 0..<n { r[i * n + j] = j >= i ? a[j * m + i] : 0 }
        }
    }
}

extension LAPACK {
    /// Minimum-norm least squares min ‖A x − b‖₂ by the SVD (dgelsd): singular values ≤ rcond·σ₁ are treated
    /// as zero (numpy.linalg.lstsq semantics; numpy's default rcond is max(m, n)·ε). Works for any shape and
    /// rank. Returns x (n), the effective rank and the singular values of A.
    public static func leastSquaresMinNorm(_ a: Matrix, _ b: [Double], rcond: Double) throws(LinearAlgebraError)
        -> (x: [Double], rank: Int, singularValues: [Double]) {
        precondition(b.count == a.rows)
        let m = a.rows, n = a.cols
        if n == 0 { return ([], 0, []) }
        if m == 0 { return ([Double](repeating: 0, count: n), 0, []) }
        var cm = a.transposed.storage   // column-major m×n
        let ldb = max(m, n)
        var rhs = [Double](repeating: 0, count: ldb)
        for i in 0..<m { rhs[i] = b[i] }
        var s = [Double](repeating: 0, count: min(m, n))
        var mm = Int32(m), nn = Int32(n), nrhs: Int32 = 1, lda = Int32(m), ldbb = Int32(ldb)
        var rc = rcond, rank: Int32 = 0, info: Int32 = 0, lwork: Int32 = -1, wq = 0.0, iwq: Int32 = 0
        dgelsd_(&mm, &nn, &nrhs, &cm, &lda, &rhs, &ldbb, &s, &rc, &rank, &wq, &lwork, &iwq, &info)
        guard info == 0 else { throw LinearAlgebraError(routine: "dgelsd", info: info, detail: "workspace query") }
        lwork = Int32(wq)
        var work = [Double](repeating: 0, count: max(1, Int(lwork)))
        var iwork = [Int32](repeating: 0, count: max(1, Int(iwq)))
        dgelsd_(&mm, &nn, &nrhs, &cm, &lda, &rhs, &ldbb, &s, &rc, &rank, &work, &lwork, &iwork, &info)
        guard info == 0 else {
            throw LinearAlgebraError(routine: "dgelsd", info: info,
                                     detail: info < 0 ? "argument \(-info) invalid" : "the SVD did not converge")
        }
        return (Array(rhs.prefix(n)), Int(rank), s)
    }
}

extension BlockKernels {
    /// C (m×n) = α·op(A)·op(B) + β·C for row-major operands (dgemm); op is a transpose when `ta`/`tb`.
    public static func gemm(transposeA ta: Bool = false, transposeB tb: Bool = false, m: Int, n: Int, k: Int,
                            alpha: Double = 1, _ a: UnsafePointer<Double>, lda: Int, _ b: UnsafePointer<Double>, ldb: Int,
                            beta: Double = 0, _ c: UnsafeMutablePointer<Double>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            if beta != 1 { for i in 0..<m { for j in 0..<n { c[i * ldc + j] *= beta } } }
            return
        }
        cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// y (m) = A x for a row-major m×n A (dgemv).
    public static func gemv(m: Int, n: Int, _ a: UnsafePointer<Double>, lda: Int, _ x: UnsafePointer<Double>,
                            _ y: UnsafeMutablePointer<Double>) {
        if m == 0 { return }
        if n == 0 { for i in 0..<m { y[i] = 0 }; return }
        cblas_dgemv(CblasRowMajor, CblasNoTrans, Int32(m), Int32(n), 1, a, Int32(lda), x, 1, 0, y, 1)
    }
}

/// Legendre polynomials scaled to be orthonormal in L²([−1, 1], dx/2), the uniform probability measure:
/// φ_k = √(2k + 1)·P_k, so E[φ_j φ_k] = δ_jk for x ~ U[−1, 1]. Evaluated by Bonnet's three-term recurrence
/// (k+1)P_{k+1} = (2k+1)x P_k − k P_{k−1}, stable on [−1, 1] (|P_k| ≤ 1 there).
public enum Legendre {
    public static func orthonormal(_ x: Double, into out: UnsafeMutablePointer<Double>, count m: Int) {
        guard m > 0 else { return }
        var p0 = 1.0, p1 = x
        out[0] = 1
        if m > 1 { out[1] = x * (3.0).squareRoot() }
        if m > 2 {
            for k in 1..<(m - 1) {
                let kk = Double(k)
                let p2 = ((2 * kk + 1) * x * p1 - kk * p0) / (kk + 1)
                out[k + 1] = p2 * (2 * kk + 3).squareRoot()
                p0 = p1; p1 = p2
            }
        }
    }

    public static func orthonormal(_ x: Double, count m: Int) -> [Double] {
        var v = [Double](repeating: 0, count: m)
        v.withUnsafeMutableBufferPointer { orthonormal(x, into: $0.baseAddress!, count: m) }
        return v
    }
}
