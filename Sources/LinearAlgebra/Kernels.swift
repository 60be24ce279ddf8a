import CKernels
import COpenBLAS

/// An error from a LAPACK routine: its name and `info`. Every call in this module checks `info`.
public struct LinearAlgebraError: Error, CustomStringConvertible, Equatable {
    public let routine: String
    public let info: Int32
    public let detail: String
    public var description: String { "\(routine) failed (info = \(info)): \(detail)" }
}

/// Level-3 accumulation kernels for row-major blocks of rows. These are the hot path of `gram` and
/// friends: one call per batch, never per row.
public enum BlockKernels {
    /// C (n×n, upper triangle only) += Xᵀ X for a row-major `rows × n` block X (dsyrk).
    public static func syrkUpper(_ x: UnsafePointer<Double>, rows: Int, n: Int, into c: UnsafeMutablePointer<Double>) {
        if rows == 0 || n == 0 { return }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(n), Int32(rows), 1, x, Int32(n), 1, c, Int32(n))
    }

    /// C (n×n, upper triangle only) = Xᵀ X in float32 for a `rows × n` block X with row stride `lda` (ssyrk,
    /// β = 0). Each entry's error is at most γ_{rows+1}·Σ_r |x_ri||x_rj| (u = 2⁻²⁴) whatever order the kernel
    /// sums in, which is why callers keep `rows` small and add the results in float64.
    public static func syrkUpperFloat32(_ x: UnsafePointer<Float>, rows: Int, n: Int, lda: Int, into c: UnsafeMutablePointer<Float>) {
        if n == 0 { return }
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(n), Int32(rows), 1, x, Int32(lda), 0, c, Int32(n))
    }

    /// C (upper triangle) += T (upper triangle), T in float32 widened exactly.
    public static func addUpper(_ t: UnsafePointer<Float>, n: Int, into c: UnsafeMutablePointer<Double>) {
        for i in 0..<n {
            let ct = c + i * n, tt = t + i * n
            var j = i
            while j + 8 <= n {
                let v = SIMD8<Double>(UnsafeRawPointer(tt + j).loadUnaligned(as: SIMD8<Float>.self))
                let w = UnsafeRawPointer(ct + j).loadUnaligned(as: SIMD8<Double>.self) + v
                UnsafeMutableRawPointer(ct + j).storeBytes(of: w, as: SIMD8<Double>.self)
                j += 8
            }
            while j < n { ct[j] += Double(tt[j]); j += 1 }
        }
    }

    /// Narrows `count` values to float32 (to nearest) and returns Σ (narrowed − original)², 0 iff every value
    /// was a float32 (each difference is exact in float64; only their sum rounds).
    @discardableResult
    public static func narrow(_ x: UnsafePointer<Double>, count: Int, into y: UnsafeMutablePointer<Float>) -> Double {
        var acc = SIMD8<Double>(repeating: 0)
        var i = 0
        while i + 8 <= count {
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Double>.self), f = SIMD8<Float>(v)
            UnsafeMutableRawPointer(y + i).storeBytes(of: f, as: SIMD8<Float>.self)
            let delta = SIMD8<Double>(f) - v
            acc += delta * delta
            i += 8
        }
        var err = acc.sum()
        while i < count {
            let f = Float(x[i])
            y[i] = f
            let delta = Double(f) - x[i]
            err += delta * delta
            i += 1
        }
        return err
    }

    /// Σ x_i² over n entries, in a fixed order (eight interleaved partial sums, then added pairwise), so the
    /// result never depends on where the row sits in memory.
    @inline(__always)
    public static func sumOfSquares(_ x: UnsafePointer<Double>, n: Int) -> Double {
        sumOfSquares(n: n, eight: { UnsafeRawPointer(x + $0).loadUnaligned(as: SIMD8<Double>.self) }, one: { x[$0] })
    }

    /// `sumOfSquares` of float32 values, widened exactly: the same body, so bit for bit the result on the
    /// widened row (operators rely on that: float32 rows and their float64 copies give the same state).
    @inline(__always)
    public static func sumOfSquares(_ x: UnsafePointer<Float>, n: Int) -> Double {
        sumOfSquares(n: n, eight: { SIMD8<Double>(UnsafeRawPointer(x + $0).loadUnaligned(as: SIMD8<Float>.self)) }, one: { Double(x[$0]) })
    }

    @inline(__always)
    static func sumOfSquares(n: Int, eight: (Int) -> SIMD8<Double>, one: (Int) -> Double) -> Double {
        var acc = SIMD8<Double>(repeating: 0)
        var j = 0
        while j + 8 <= n {
            let v = eight(j)
            acc += v * v
            j += 8
        }
        var s = acc.sum()
        while j < n { let v = one(j); s += v * v; j += 1 }
        return s
    }

    /// Z ← Z·R for a row-major `rows × n` block Z and an upper-triangular n×n R (zeros below the diagonal), in
    /// float32, each entry summed in one fixed order (CKernels): the same bits on every CPU and BLAS kernel, unlike
    /// strmm. Each entry is a dot product of ≤ n nonzero terms, so its error is ≤ γ_n·|z||R| as for any order
    /// (Higham §3.1). `scratch`: 4·n floats. About 2.4× strmm's time (`make -C Benchmarks kernels`).
    public static func trmmRightUpperFloat32(_ r: UnsafePointer<Float>, n: Int, rows m: Int, inPlace z: UnsafeMutablePointer<Float>,
                                             scratch: UnsafeMutablePointer<Float>) {
        if m == 0 || n == 0 { return }
        rowflow_trmm_right_upper_f32(r, n, m, z, scratch)
    }

    /// y = x − s in float32 (each difference correctly rounded), and acc += y widened, over n entries.
    public static func subtract(_ x: UnsafePointer<Float>, _ s: UnsafePointer<Float>, n: Int, into y: UnsafeMutablePointer<Float>,
                                addingTo acc: UnsafeMutablePointer<Double>) {
        var j = 0
        while j + 8 <= n {
            let v = UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self) - UnsafeRawPointer(s + j).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(y + j).storeBytes(of: v, as: SIMD8<Float>.self)
            let a = UnsafeRawPointer(acc + j).loadUnaligned(as: SIMD8<Double>.self) + SIMD8<Double>(v)
            UnsafeMutableRawPointer(acc + j).storeBytes(of: a, as: SIMD8<Double>.self)
            j += 8
        }
        while j < n { let v = x[j] - s[j]; y[j] = v; acc[j] += Double(v); j += 1 }
    }

    /// Σ x_i·m_i for float32 x widened exactly and float64 m, in a fixed order (as `sumOfSquares`).
    public static func dot(_ x: UnsafePointer<Float>, _ m: UnsafePointer<Double>, n: Int) -> Double {
        var acc = SIMD8<Double>(repeating: 0)
        var j = 0
        while j + 8 <= n {
            acc += SIMD8<Double>(UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self)) * UnsafeRawPointer(m + j).loadUnaligned(as: SIMD8<Double>.self)
            j += 8
        }
        var s = acc.sum()
        while j < n { s += Double(x[j]) * m[j]; j += 1 }
        return s
    }

    /// Widens `rows` float32 rows of `columns` values, `stride` floats apart, into a dense float64 block.
    public static func widen(_ x: UnsafePointer<Float>, rows: Int, columns n: Int, stride: Int, into y: UnsafeMutablePointer<Double>) {
        for i in 0..<rows {
            let src = x + i * stride, dst = y + i * n
            var j = 0
            while j + 8 <= n {
                let v = SIMD8<Double>(UnsafeRawPointer(src + j).loadUnaligned(as: SIMD8<Float>.self))
                UnsafeMutableRawPointer(dst + j).storeBytes(of: v, as: SIMD8<Double>.self)
                j += 8
            }
            while j < n { dst[j] = Double(src[j]); j += 1 }
        }
    }

    /// xᵀy over n entries (ddot).
    @inline(__always)
    public static func dot(_ x: UnsafePointer<Double>, _ y: UnsafePointer<Double>, n: Int) -> Double {
        n == 0 ? 0 : cblas_ddot(Int32(n), x, 1, y, 1)
    }

    /// y (rows) = X v for a row-major `rows × n` block X (dgemv, no transpose).
    public static func gemvRows(_ x: UnsafePointer<Double>, rows: Int, n: Int,
                                v: UnsafePointer<Double>, into y: UnsafeMutablePointer<Double>) {
        if rows == 0 { return }
        if n == 0 { for i in 0..<rows { y[i] = 0 }; return }
        cblas_dgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(n), 1, x, Int32(n), v, 1, 0, y, 1)
    }

    /// C (m×k) = X (m×n) · B (n×k), all row-major (dgemm).
    public static func gemm(_ x: UnsafePointer<Double>, rows m: Int, n: Int, _ b: UnsafePointer<Double>, cols k: Int,
                            into c: UnsafeMutablePointer<Double>) {
        if m == 0 || k == 0 { return }
        if n == 0 { for i in 0..<(m * k) { c[i] = 0 }; return }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(k), Int32(n), 1, x, Int32(n),
                    b, Int32(k), 0, c, Int32(k))
    }

    /// C (n×k) += Xᵀ (n×m) · P (m×k) for a row-major `m × n` block X and row-major P, C (dgemm).
    public static func gemmTransposedAccumulate(_ x: UnsafePointer<Double>, rows m: Int, n: Int,
                                                _ p: UnsafePointer<Double>, cols k: Int,
                                                into c: UnsafeMutablePointer<Double>) {
        if m == 0 || n == 0 || k == 0 { return }
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(n), Int32(k), Int32(m), 1, x, Int32(n),
                    p, Int32(k), 1, c, Int32(k))
    }

    /// C (n×n, upper triangle only) += α x xᵀ (dsyr).
    public static func syrUpper(_ alpha: Double, _ x: UnsafePointer<Double>, n: Int, into c: UnsafeMutablePointer<Double>) {
        if n == 0 { return }
        cblas_dsyr(CblasRowMajor, CblasUpper, Int32(n), alpha, x, 1, c, Int32(n))
    }

    /// y = C x for a symmetric n×n C of which only the upper triangle is read (dsymv), plus β y.
    public static func symvUpper(_ c: UnsafePointer<Double>, n: Int, x: UnsafePointer<Double>, beta: Double,
                                 into y: UnsafeMutablePointer<Double>) {
        if n == 0 { return }
        cblas_dsymv(CblasRowMajor, CblasUpper, Int32(n), 1, c, Int32(n), x, 1, beta, y, 1)
    }

    /// Scales every column of a row-major `rows × cols` matrix to unit norm (ddot + dscal with stride `cols`;
    /// not dnrm2, whose overflow-safe scaling costs 3× more and is not needed for vectors of norm ~1);
    /// a zero or non-finite column is left as it is.
    public static func normalizeColumns(_ v: UnsafeMutablePointer<Double>, rows: Int, cols: Int) {
        if rows == 0 { return }
        for c in 0..<cols {
            let norm = cblas_ddot(Int32(rows), v + c, Int32(cols), v + c, Int32(cols)).squareRoot()
            if norm > 0 && norm.isFinite { cblas_dscal(Int32(rows), 1 / norm, v + c, Int32(cols)) }
        }
    }

    /// y (n) += Xᵀ v for a row-major `rows × n` block X (dgemv).
    public static func gemvTransposedAccumulate(_ x: UnsafePointer<Double>, rows: Int, n: Int,
                                                v: UnsafePointer<Double>, into y: UnsafeMutablePointer<Double>) {
        if rows == 0 || n == 0 { return }
        cblas_dgemv(CblasRowMajor, CblasTrans, Int32(rows), Int32(n), 1, x, Int32(n), v, 1, 1, y, 1)
    }
}

extension BlockKernels {
    /// y (rows) = X v for a row-major `rows × n` block X (dgemv, overwriting y).
    public static func gemv(_ x: UnsafePointer<Double>, rows: Int, n: Int,
                            v: UnsafePointer<Double>, into y: UnsafeMutablePointer<Double>) {
        if rows == 0 { return }
        if n == 0 { for i in 0..<rows { y[i] = 0 }; return }
        cblas_dgemv(CblasRowMajor, CblasNoTrans, Int32(rows), Int32(n), 1, x, Int32(n), v, 1, 0, y, 1)
    }
}

/// Dense factorizations (LAPACK, float64). Inputs are row-major `Matrix` values; each function states how
/// it maps to LAPACK's column-major convention.
public enum LAPACK {
    /// Eigendecomposition of a symmetric matrix (dsyevd). Returns eigenvalues in **descending** order and
    /// the matching unit eigenvectors as the **rows** of `vectors`. Only the upper triangle of `a` is read.
    public static func symmetricEigen(_ a: Matrix) throws(LinearAlgebraError) -> (values: [Double], vectors: Matrix) {
        precondition(a.rows == a.cols)
        let n = a.rows
        if n == 0 { return ([], Matrix(rows: 0, cols: 0)) }
        // Row-major upper == column-major lower of the same buffer.
        var work = a.storage
        var w = [Double](repeating: 0, count: n)
        var jobz = CChar(UInt8(ascii: "V")), uplo = CChar(UInt8(ascii: "L"))
        var nn = Int32(n), lda = Int32(n), info: Int32 = 0, lwork: Int32 = -1, liwork: Int32 = -1
        var wq = 0.0, iwq: Int32 = 0
        dsyevd_(&jobz, &uplo, &nn, &work, &lda, &w, &wq, &lwork, &iwq, &liwork, &info, 1, 1)
        guard info == 0 else { throw LinearAlgebraError(routine: "dsyevd", info: info, detail: "workspace query") }
        lwork = Int32(wq); liwork = iwq
        var wk = [Double](repeating: 0, count: Int(lwork))
        var iwk = [Int32](repeating: 0, count: Int(liwork))
        dsyevd_(&jobz, &uplo, &nn, &work, &lda, &w, &wk, &lwork, &iwk, &liwork, &info, 1, 1)
        guard info == 0 else {
            throw LinearAlgebraError(routine: "dsyevd", info: info,
                                     detail: info < 0 ? "argument \(-info) invalid" : "failed to converge")
        }
        // Column-major eigenvectors: column j is at work[j*n ..< (j+1)*n] == row j of a row-major matrix.
        var vectors = Matrix(rows: n, cols: n)
        var values = [Double](repeating: 0, count: n)
        for r in 0..<n {
            let j = n - 1 - r   // ascending -> descending
            values[r] = w[j]
            for i in 0..<n { vectors[r, i] = work[j * n + i] }
        }
        return (values, vectors)
    }

    /// Solves S x = b for symmetric positive definite S by Cholesky (dpotrf + dpotrs). Throws with
    /// `info > 0` when S is not positive definite (the leading minor of that order is not).
    public static func choleskySolve(_ s: Matrix, _ b: [Double]) throws(LinearAlgebraError) -> [Double] {
        precondition(s.rows == s.cols && b.count == s.rows)
        let n = s.rows
        if n == 0 { return [] }
        var a = s.storage
        var x = b
        var uplo = CChar(UInt8(ascii: "L")), nn = Int32(n), lda = Int32(n), info: Int32 = 0
        dpotrf_(&uplo, &nn, &a, &lda, &info, 1)
        guard info == 0 else {
            throw LinearAlgebraError(routine: "dpotrf", info: info,
                                     detail: info > 0 ? "matrix is not positive definite (minor \(info))" : "argument \(-info) invalid")
        }
        var nrhs: Int32 = 1, ldb = Int32(n)
        dpotrs_(&uplo, &nn, &nrhs, &a, &lda, &x, &ldb, &info, 1)
        guard info == 0 else { throw LinearAlgebraError(routine: "dpotrs", info: info, detail: "argument \(-info) invalid") }
        return x
    }

    /// Singular values of a (descending), by dgesdd with jobz = N. A row-major m×n matrix is passed as the
    /// column-major n×m transpose, which has the same singular values.
    public static func singularValues(_ a: Matrix) throws(LinearAlgebraError) -> [Double] {
        let m = Int32(a.cols), n = Int32(a.rows)   // column-major view: m rows = a.cols
        if m == 0 || n == 0 { return [] }
        var work = a.storage
        var s = [Double](repeating: 0, count: Int(min(m, n)))
        var jobz = CChar(UInt8(ascii: "N")), mm = m, nn = n, lda = m, ldu: Int32 = 1, ldvt: Int32 = 1
        var info: Int32 = 0, lwork: Int32 = -1, wq = 0.0
        var u = [0.0], vt = [0.0]
        var iwork = [Int32](repeating: 0, count: 8 * Int(min(m, n)))
        dgesdd_(&jobz, &mm, &nn, &work, &lda, &s, &u, &ldu, &vt, &ldvt, &wq, &lwork, &iwork, &info, 1)
        guard info == 0 else { throw LinearAlgebraError(routine: "dgesdd", info: info, detail: "workspace query") }
        lwork = Int32(wq)
        var wk = [Double](repeating: 0, count: Int(lwork))
        dgesdd_(&jobz, &mm, &nn, &work, &lda, &s, &u, &ldu, &vt, &ldvt, &wk, &lwork, &iwork, &info, 1)
        guard info == 0 else {
            throw LinearAlgebraError(routine: "dgesdd", info: info,
                                     detail: info < 0 ? "argument \(-info) invalid" : "did not converge")
        }
        return s
    }

    /// Least-squares solution of min ‖A x − b‖₂ for a full-rank A (m ≥ n) by QR (dgels). The row-major A is
    /// the column-major Aᵀ, so LAPACK is asked to solve with trans = 'T'.
    public static func leastSquares(_ a: Matrix, _ b: [Double]) throws(LinearAlgebraError) -> [Double] {
        precondition(b.count == a.rows && a.rows >= a.cols)
        var work = a.storage
        var trans = CChar(UInt8(ascii: "T"))
        var m = Int32(a.cols), n = Int32(a.rows), nrhs: Int32 = 1, lda = Int32(a.cols)
        var rhs = b
        var ldb = Int32(a.rows), info: Int32 = 0, lwork: Int32 = -1, wq = 0.0
        dgels_(&trans, &m, &n, &nrhs, &work, &lda, &rhs, &ldb, &wq, &lwork, &info, 1)
        guard info == 0 else { throw LinearAlgebraError(routine: "dgels", info: info, detail: "workspace query") }
        lwork = Int32(wq)
        var wk = [Double](repeating: 0, count: Int(lwork))
        dgels_(&trans, &m, &n, &nrhs, &work, &lda, &rhs, &ldb, &wk, &lwork, &info, 1)
        guard info == 0 else {
            throw LinearAlgebraError(routine: "dgels", info: info,
                                     detail: info > 0 ? "matrix is rank deficient" : "argument \(-info) invalid")
        }
        return Array(rhs.prefix(a.cols))
    }
}

extension LAPACK {
    /// An orthonormal basis of the columns of a (m×n, m ≥ n) by Householder QR (dgeqrf + dorgqr): returns
    /// Q (m×n, row-major) with QᵀQ = I. The row-major input is transposed into LAPACK's column-major layout.
    public static func orthonormalColumns(_ a: Matrix) throws(LinearAlgebraError) -> Matrix {
        let m = a.rows, n = a.cols
        precondition(m >= n)
        if n == 0 { return a }
        var cm = a.transposed.storage   // column-major m×n
        var mm = Int32(m), nn = Int32(n), lda = Int32(m), info: Int32 = 0, lwork: Int32 = -1, wq = 0.0
        var tau = [Double](repeating: 0, count: n)
        dgeqrf_(&mm, &nn, &cm, &lda, &tau, &wq, &lwork, &info)
        guard info == 0 else { throw LinearAlgebraError(routine: "dgeqrf", info: info, detail: "workspace query") }
        lwork = Int32(wq)
        var work = [Double](repeating: 0, count: Int(lwork))
        dgeqrf_(&mm, &nn, &cm, &lda, &tau, &work, &lwork, &info)
        guard info == 0 else { throw LinearAlgebraError(routine: "dgeqrf", info: info, detail: "argument \(-info) invalid") }
        var kk = Int32(n)
        lwork = -1
        dorgqr_(&mm, &nn, &kk, &cm, &lda, &tau, &wq, &lwork, &info)
        guard info == 0 else { throw LinearAlgebraError(routine: "dorgqr", info: info, detail: "workspace query") }
        lwork = Int32(wq)
        work = [Double](repeating: 0, count: Int(lwork))
        dorgqr_(&mm, &nn, &kk, &cm, &lda, &tau, &work, &lwork, &info)
        guard info == 0 else { throw LinearAlgebraError(routine: "dorgqr", info: info, detail: "argument \(-info) invalid") }
        return Matrix(rows: n, cols: m, storage: cm).transposed
    }
}

extension LAPACK {
    /// Thin SVD A = U diag(s) Vᵀ with vectors (dgesdd, jobz = 'S'), s descending, p = min(m, n).
    ///
    /// Row-major/column-major mapping: the row-major m×n buffer of `a` is, to LAPACK, the column-major n×m
    /// matrix M = Aᵀ. dgesdd factors M = U_M diag(s) V_Mᵀ, so A = V_M diag(s) U_Mᵀ. LAPACK returns U_M
    /// column-major n×p — the same buffer read row-major is a p×n matrix whose rows are U_M's columns, i.e.
    /// A's `vt` (rows = right singular vectors). It returns V_Mᵀ column-major p×m — read row-major, an m×p
    /// matrix whose (i, j) entry is V_M[i, j], i.e. A's `u`. So no transposition is needed either way.
    public static func svd(_ a: Matrix) throws(LinearAlgebraError) -> (u: Matrix, s: [Double], vt: Matrix) {
        let mA = a.rows, nA = a.cols, p = min(mA, nA)
        if p == 0 { return (Matrix(rows: mA, cols: 0), [], Matrix(rows: 0, cols: nA)) }
        var work = a.storage
        var s = [Double](repeating: 0, count: p)
        var um = [Double](repeating: 0, count: nA * p)      // U_M: column-major nA×p
        var vmt = [Double](repeating: 0, count: p * mA)     // V_Mᵀ: column-major p×mA
        var jobz = CChar(UInt8(ascii: "S"))
        var mm = Int32(nA), nn = Int32(mA), lda = Int32(nA), ldu = Int32(nA), ldvt = Int32(p)
        var info: Int32 = 0, lwork: Int32 = -1, wq = 0.0
        var iwork = [Int32](repeating: 0, count: 8 * p)
        dgesdd_(&jobz, &mm, &nn, &work, &lda, &s, &um, &ldu, &vmt, &ldvt, &wq, &lwork, &iwork, &info, 1)
        guard info == 0 else { throw LinearAlgebraError(routine: "dgesdd", info: info, detail: "workspace query") }
        lwork = Int32(wq)
        var wk = [Double](repeating: 0, count: Int(lwork))
        dgesdd_(&jobz, &mm, &nn, &work, &lda, &s, &um, &ldu, &vmt, &ldvt, &wk, &lwork, &iwork, &info, 1)
        guard info == 0 else {
            throw LinearAlgebraError(routine: "dgesdd", info: info,
                                     detail: info < 0 ? "argument \(-info) invalid" : "did not converge")
        }
        return (Matrix(rows: mA, cols: p, storage: vmt), s, Matrix(rows: p, cols: nA, storage: um))
    }
}
