import COpenBLAS

/// What one `SubspaceSketch` step did, for the caller's rounding-error account.
public struct SketchStepReport: Sendable, Equatable {
    /// Order of the small symmetric eigenproblem solved: k + (residual columns) for a regular step, d for a
    /// dense step, k for a re-orthonormalisation.
    public var order: Int
    /// ‖E‖₂ = λ₁ of the sketch before the step.
    public var previousTop: Double
    /// tr E of the sketch before the step.
    public var previousTrace: Double
    /// Σ|λ| of kept eigenvalues that came out negative (rounding) and were set to 0. Setting them to 0 adds
    /// that much PSD mass, so the caller adds it to its margin.
    public var clamped: Double
    /// The step formed the d×d matrix instead of a residual basis (d ≤ k + block rows).
    public var dense: Bool

    public init(order: Int = 0, previousTop: Double = 0, previousTrace: Double = 0, clamped: Double = 0, dense: Bool = false) {
        self.order = order; self.previousTop = previousTop; self.previousTrace = previousTrace
        self.clamped = clamped; self.dense = dense
    }
}

/// A rank-≤ k′ PSD sketch E = Q diag(λ) Qᵀ of the Gram matrix of a stream of row blocks, updated one block at
/// a time by the incremental step of Shamrai, "Concatenated Matrix SVD" (arXiv 2601.11626, the incremental
/// estimator; the same update as Brand 2002 and Ross et al. 2008 IncrementalPCA):
///
///   for a block X (b×d, its rows are the block's rows; C = Xᵀ):
///     Y = QᵀC; R = C − QY, twice (a second Gram–Schmidt pass); R = Qr·Br (Householder QR, recursive
///     compact-WY dgeqrt3, Qr formed with one dtrmm and one dgemm);
///     S = [[diag λ + YYᵀ, YBrᵀ], [BrYᵀ, BrBrᵀ]] = (diag λ ⊕ 0) + ZZᵀ with Z = [Y; Br];
///     S = U diag(μ) Uᵀ (dsyevd); keep the top k′: Q ← [Q Qr]·U_{k′}, λ ← μ_{1..k′}.
///
/// Why the sketch never overstates (exact arithmetic): C = QY + QrBr = W·Z with W = [Q Qr], so W S Wᵀ =
/// E + CCᵀ exactly — whether or not W is orthonormal — and the kept part W U_k′ diag(μ) U_k′ᵀ Wᵀ differs from
/// W S Wᵀ by W U_⊥ diag(μ_⊥) U_⊥ᵀ Wᵀ ⪰ 0. No residual direction is ever dropped; only the eigen-truncation
/// removes mass, and that mass is PSD. So E ⪯ AᵀA in the PSD order after every step. Rounding is the only
/// thing that breaks this; `SketchStepReport` gives the quantities a caller needs to bound it.
///
/// When d ≤ k + b (a residual basis could not be orthogonal to Q), the step is *dense*: S = Q diag(λ) Qᵀ + XᵀX
/// (d×d) is formed and eigendecomposed directly — exact up to rounding, no truncation below rank d.
///
/// Storage: Q is kept row-major, one basis vector per row (`basis`, count × d). Cost per block of b rows:
/// 8·k′·b·d (two projection passes) + ≈4·d·b² (QR) + 2·k′·(k′+b)·d (rotation) flops, all BLAS-3, plus a
/// (k′+b)² eigenproblem. Memory: 2·(k′+b)·d + O((k′+b)²) doubles. Scratch buffers are shared between copies
/// only until one of them steps (copy-on-write), so copies are independent values.
public struct SubspaceSketch: Sendable {
    public let dimension: Int
    /// k′: the most basis vectors kept.
    public let capacity: Int
    /// The most rows one `absorb` call takes.
    public let maxBlock: Int
    /// Basis vectors held (≤ capacity, ≤ d).
    public private(set) var count: Int = 0
    /// λ, descending, `count` of them (all ≥ 0).
    public private(set) var values: [Double] = []
    /// Rows 0..<count: the basis (Qᵀ, row-major); the rest is room for a block's residual basis.
    var w: [Double]
    var scratch: Scratch

    public init(dimension d: Int, capacity: Int, maxBlock: Int) {
        precondition(d >= 1 && capacity >= 1 && capacity <= d && maxBlock >= 1)
        self.dimension = d
        self.capacity = capacity
        self.maxBlock = maxBlock
        // Room below the basis for a block's residual basis (maxBlock rows) or a re-orthonormalisation's
        // Householder factor (capacity rows).
        w = [Double](repeating: 0, count: (capacity + max(maxBlock, capacity)) * d)
        scratch = Scratch(d: d, capacity: capacity, maxBlock: maxBlock)
    }

    /// Restores a sketch from its basis (count × d, row-major) and values.
    public init(dimension d: Int, capacity: Int, maxBlock: Int, basis: [Double], values: [Double]) {
        self.init(dimension: d, capacity: capacity, maxBlock: maxBlock)
        precondition(values.count <= capacity && basis.count == values.count * d)
        count = values.count
        self.values = values
        for i in 0..<basis.count { w[i] = basis[i] }
    }

    /// The basis vectors (count × d, row-major; one vector per row).
    public var basis: [Double] { Array(w[0..<count * dimension]) }

    /// ‖E‖₂ and tr E as the sketch stands.
    public var top: Double { values.first ?? 0 }
    public var trace: Double { values.reduce(0, +) }

    /// Scales E by γ (exponential forgetting).
    public mutating func scale(by gamma: Double) {
        for i in 0..<count { values[i] *= gamma }
    }

    /// Adds the rows of a row-major `rows × d` block X to the sketch: E ← trunc_k′(E + XᵀX).
    public mutating func absorb(_ x: UnsafePointer<Double>, rows b: Int) throws(LinearAlgebraError) -> SketchStepReport {
        precondition(b <= maxBlock)
        let d = dimension
        var report = SketchStepReport(previousTop: top, previousTrace: trace)
        if b == 0 { return report }
        if !isKnownUniquelyReferenced(&scratch) { scratch = Scratch(d: d, capacity: capacity, maxBlock: maxBlock) }
        let sc = scratch
        let k = count
        if k + b > d { return try denseStep(x, rows: b, report: report) }
        let n = k + b
        var info: Int32 = 0
        var routine = ""
        let lam = values
        var kept: (values: [Double], clamped: Double) = ([], 0)
        let cap = capacity
        w.withUnsafeMutableBufferPointer { wb in
            let q = wb.baseAddress!, r = q + k * d
            r.update(from: x, count: b * d)
            if k > 0 {
                // Y = Q·Rᵀ (k×b), R −= Yᵀ·Q; then the same again on what is left (Gram–Schmidt twice), Y += Y₂.
                Dense.gemm(false, true, k, b, d, 1, q, d, r, d, 0, sc.y, b)
                Dense.gemm(true, false, b, d, k, -1, sc.y, b, q, d, 1, r, d)
                Dense.gemm(false, true, k, b, d, 1, q, d, r, d, 0, sc.y2, b)
                Dense.gemm(true, false, b, d, k, -1, sc.y2, b, q, d, 1, r, d)
                for i in 0..<k * b { sc.z[i] = sc.y[i] + sc.y2[i] }
            }
            // R (row-major b×d) is column-major d×b with lda = d: Householder QR in place, in the recursive
            // compact-WY form (dgeqrt3: R = (I − V T Vᵀ)[R_b; 0]), so a thin panel still runs at BLAS-3 speed.
            info = Dense.geqrt3(m: d, n: b, r, lda: d, t: sc.s, ldt: b)
            if info != 0 { routine = "dgeqrt3"; return }
            // Br (b×b, upper) from the R factor, into Z below Y.
            let br = sc.z + k * b
            for i in 0..<b {
                for j in 0..<b { br[i * b + j] = j >= i ? r[j * d + i] : 0 }
            }
            // Qr = (I − V T Vᵀ)·[I_b; 0] = [I_b; 0] − V·(T·V₁ᵀ), V unit lower trapezoidal (made explicit in
            // place), V₁ its top b×b block.
            for j in 0..<b {
                for i in 0..<j { r[j * d + i] = 0 }
                r[j * d + j] = 1
            }
            for j in 0..<b {
                for i in 0..<b { sc.tw[j * b + i] = i <= j ? sc.s[j * b + i] : 0 }
            }
            cblas_dtrmm(CblasColMajor, CblasRight, CblasLower, CblasTrans, CblasUnit, Int32(b), Int32(b), 1, r, Int32(d), sc.tw, Int32(b))
            cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, Int32(d), Int32(b), Int32(b), 1, r, Int32(d), sc.tw, Int32(b),
                        0, sc.spare, Int32(d))
            for i in 0..<b * d { r[i] = -sc.spare[i] }
            for j in 0..<b { r[j * d + j] += 1 }
            // S = diag(λ, 0) + Z Zᵀ, upper triangle (row-major) = lower (column-major).
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, Int32(n), Int32(b), 1, sc.z, Int32(b), 0, sc.s, Int32(n))
            for i in 0..<k { sc.s[i * n + i] += lam[i] }
            info = Dense.syevd(sc.s, n: n, w: sc.evals, work: sc.work, lwork: sc.lwork, iwork: sc.iwork, liwork: sc.liwork)
            if info != 0 { routine = "dsyevd"; return }
            kept = SubspaceSketch.keepTop(sc, n: n, m: min(cap, n), d: d, from: q, ldFrom: d, into: q)
        }
        if info != 0 { throw LinearAlgebraError(routine: routine, info: info, detail: info < 0 ? "argument \(-info) invalid" : "failed to converge") }
        values = kept.values
        count = kept.values.count
        report.clamped = kept.clamped
        report.order = n
        return report
    }

    /// k + b > d: S = Qᵀ diag(λ) Q + XᵀX (d×d), eigendecomposed; the top min(k′, d) pairs become the sketch.
    mutating func denseStep(_ x: UnsafePointer<Double>, rows b: Int, report r0: SketchStepReport) throws(LinearAlgebraError) -> SketchStepReport {
        let d = dimension, k = count, sc = scratch
        var report = r0
        report.dense = true
        report.order = d
        var info: Int32 = 0
        let lam = values
        let m = min(capacity, d)
        var newValues = [Double](repeating: 0, count: m)
        var neg = 0.0
        w.withUnsafeMutableBufferPointer { wb in
            let q = wb.baseAddress!
            // B = diag(√λ)·Q in the spare buffer, S = BᵀB + XᵀX.
            for i in 0..<k {
                let sl = lam[i].squareRoot()
                for j in 0..<d { sc.spare[i * d + j] = sl * q[i * d + j] }
            }
            for i in 0..<d * d { sc.s[i] = 0 }
            if k > 0 { cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(d), Int32(k), 1, sc.spare, Int32(d), 0, sc.s, Int32(d)) }
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(d), Int32(b), 1, x, Int32(d), 1, sc.s, Int32(d))
            info = Dense.syevd(sc.s, n: d, w: sc.evals, work: sc.work, lwork: sc.lwork, iwork: sc.iwork, liwork: sc.liwork)
            if info != 0 { return }
            // Eigenvectors of the d×d S are the vectors themselves: column j (column-major) = row j.
            for r in 0..<m {
                let j = d - 1 - r
                var v = sc.evals[j]
                if v < 0 { neg += -v; v = 0 }
                newValues[r] = v
                for i in 0..<d { q[r * d + i] = sc.s[j * d + i] }
            }
        }
        if info == 0 { values = newValues; count = m; report.clamped = neg }
        if info != 0 { throw LinearAlgebraError(routine: "dsyevd", info: info, detail: info < 0 ? "argument \(-info) invalid" : "failed to converge") }
        return report
    }

    /// After `syevd` of an n×n S in scratch: the new basis rows = the top-m eigenvectors (descending) × the n
    /// rows at `from`, written to `into`; returns the top-m eigenvalues (negatives set to 0) and their total.
    static func keepTop(_ sc: Scratch, n: Int, m: Int, d: Int, from: UnsafePointer<Double>, ldFrom: Int,
                        into q: UnsafeMutablePointer<Double>) -> (values: [Double], clamped: Double) {
        for r in 0..<m {
            let j = n - 1 - r
            for i in 0..<n { sc.ut[r * n + i] = sc.s[j * n + i] }
        }
        Dense.gemm(false, false, m, d, n, 1, sc.ut, n, from, ldFrom, 0, sc.spare, d)
        q.update(from: sc.spare, count: m * d)
        var neg = 0.0
        var vals = [Double](repeating: 0, count: m)
        for r in 0..<m {
            var v = sc.evals[n - 1 - r]
            if v < 0 { neg += -v; v = 0 }
            vals[r] = v
        }
        return (vals, neg)
    }

    /// Restores an orthonormal basis without changing E (exact arithmetic): B = Q diag(√λ) = Q₀R₀ (Householder),
    /// E = BBᵀ = Q₀ (R₀R₀ᵀ) Q₀ᵀ, R₀R₀ᵀ = U diag(μ) Uᵀ, so Q ← Q₀U, λ ← μ. Between re-orthonormalisations the
    /// basis drifts from orthonormal by rounding (and by residual directions that were not orthogonal to Q);
    /// E itself stays what the steps made it, so this changes only how E is written.
    public mutating func reorthonormalize() throws(LinearAlgebraError) -> SketchStepReport {
        let d = dimension, k = count
        var report = SketchStepReport(order: k, previousTop: top, previousTrace: trace)
        if k == 0 { return report }
        if !isKnownUniquelyReferenced(&scratch) { scratch = Scratch(d: d, capacity: capacity, maxBlock: maxBlock) }
        let sc = scratch
        var info: Int32 = 0
        var routine = ""
        let lam = values
        var kept: (values: [Double], clamped: Double) = ([], 0)
        w.withUnsafeMutableBufferPointer { wb in
            let q = wb.baseAddress!
            // B (row-major k×d, rows √λ_i q_i) is column-major d×k: QR in the residual area (free between steps).
            let bm = q + k * d
            for i in 0..<k {
                let sl = lam[i].squareRoot()
                for j in 0..<d { bm[i * d + j] = sl * q[i * d + j] }
            }
            info = Dense.geqrf(m: d, n: k, bm, lda: d, tau: sc.tau, work: sc.work, lwork: sc.lwork)
            if info != 0 { routine = "dgeqrf"; return }
            // R₀ (k×k, upper) row-major into Z; M = R₀R₀ᵀ.
            for i in 0..<k { for j in 0..<k { sc.z[i * k + j] = j >= i ? bm[j * d + i] : 0 } }
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, Int32(k), Int32(k), 1, sc.z, Int32(k), 0, sc.s, Int32(k))
            info = Dense.orgqr(m: d, n: k, k: k, bm, lda: d, tau: sc.tau, work: sc.work, lwork: sc.lwork)
            if info != 0 { routine = "dorgqr"; return }
            info = Dense.syevd(sc.s, n: k, w: sc.evals, work: sc.work, lwork: sc.lwork, iwork: sc.iwork, liwork: sc.liwork)
            if info != 0 { routine = "dsyevd"; return }
            kept = SubspaceSketch.keepTop(sc, n: k, m: k, d: d, from: bm, ldFrom: d, into: q)
        }
        if info != 0 { throw LinearAlgebraError(routine: routine, info: info, detail: info < 0 ? "argument \(-info) invalid" : "failed to converge") }
        values = kept.values
        report.clamped = kept.clamped
        return report
    }
}

/// Scratch for `SubspaceSketch` (contents never outlive a call).
final class Scratch: @unchecked Sendable {
    let y, y2, z, s, tw, evals, ut, spare, tau, work: UnsafeMutablePointer<Double>
    let iwork: UnsafeMutablePointer<Int32>
    let lwork, liwork: Int

    init(d: Int, capacity: Int, maxBlock: Int) {
        let b = maxBlock, k = capacity
        // Largest eigenproblem: a regular step has k + b ≤ d, a dense one is d×d and happens only when
        // d < k + b; so n ≤ min(d, k + b). The largest QR has min(d, max(b, k)) columns.
        let nmax = min(d, k + b)
        let qrCols = min(d, max(b, k))
        y = .allocate(capacity: k * b); y2 = .allocate(capacity: k * b)
        z = .allocate(capacity: max((k + b) * b, k * k))
        s = .allocate(capacity: nmax * nmax)
        tw = .allocate(capacity: nmax * nmax)
        evals = .allocate(capacity: nmax)
        ut = .allocate(capacity: k * nmax)
        spare = .allocate(capacity: (k + b) * d)
        tau = .allocate(capacity: max(1, qrCols))
        var lw = max(1 + 6 * nmax + 2 * nmax * nmax, Dense.qrWorkspace(m: d, n: qrCols), 1)
        lw = max(lw, Dense.syevdWorkspace(n: nmax).work)
        lwork = lw
        liwork = max(3 + 5 * nmax, Dense.syevdWorkspace(n: nmax).iwork)
        work = .allocate(capacity: lwork)
        iwork = .allocate(capacity: liwork)
    }

    deinit {
        for p in [y, y2, z, s, tw, evals, ut, spare, tau, work] { p.deallocate() }
        iwork.deallocate()
    }
}

/// Thin wrappers on raw row-major buffers (BLAS) and column-major ones (LAPACK), for the sketch's hot path.
enum Dense {
    /// C (m×n) = α·op(A)·op(B) + β·C, row-major.
    @inline(__always)
    static func gemm(_ ta: Bool, _ tb: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Double,
                     _ a: UnsafePointer<Double>, _ lda: Int, _ b: UnsafePointer<Double>, _ ldb: Int,
                     _ beta: Double, _ c: UnsafeMutablePointer<Double>, _ ldc: Int) {
        if m == 0 || n == 0 || k == 0 { return }
        cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    static func geqrf(m: Int, n: Int, _ a: UnsafeMutablePointer<Double>, lda: Int, tau: UnsafeMutablePointer<Double>,
                      work: UnsafeMutablePointer<Double>, lwork: Int) -> Int32 {
        var mm = Int32(m), nn = Int32(n), ld = Int32(lda), lw = Int32(lwork), info: Int32 = 0
        dgeqrf_(&mm, &nn, a, &ld, tau, work, &lw, &info)
        return info
    }

    static func geqrt3(m: Int, n: Int, _ a: UnsafeMutablePointer<Double>, lda: Int, t: UnsafeMutablePointer<Double>, ldt: Int) -> Int32 {
        var mm = Int32(m), nn = Int32(n), ld = Int32(lda), lt = Int32(ldt), info: Int32 = 0
        dgeqrt3_(&mm, &nn, a, &ld, t, &lt, &info)
        return info
    }

    static func orgqr(m: Int, n: Int, k: Int, _ a: UnsafeMutablePointer<Double>, lda: Int, tau: UnsafeMutablePointer<Double>,
                      work: UnsafeMutablePointer<Double>, lwork: Int) -> Int32 {
        var mm = Int32(m), nn = Int32(n), kk = Int32(k), ld = Int32(lda), lw = Int32(lwork), info: Int32 = 0
        dorgqr_(&mm, &nn, &kk, a, &ld, tau, work, &lw, &info)
        return info
    }

    /// Eigenvalues ascending into w, eigenvectors (column-major columns) over a; reads the lower triangle
    /// (column-major) = the upper triangle of a row-major matrix.
    static func syevd(_ a: UnsafeMutablePointer<Double>, n: Int, w: UnsafeMutablePointer<Double>,
                      work: UnsafeMutablePointer<Double>, lwork: Int, iwork: UnsafeMutablePointer<Int32>, liwork: Int) -> Int32 {
        var jobz = CChar(UInt8(ascii: "V")), uplo = CChar(UInt8(ascii: "L"))
        var nn = Int32(n), lda = Int32(max(1, n)), lw = Int32(lwork), liw = Int32(liwork), info: Int32 = 0
        dsyevd_(&jobz, &uplo, &nn, a, &lda, w, work, &lw, iwork, &liw, &info, 1, 1)
        return info
    }

    static func qrWorkspace(m: Int, n: Int) -> Int {
        guard m > 0 && n > 0 else { return 1 }
        var mm = Int32(m), nn = Int32(n), lda = Int32(m), lw: Int32 = -1, info: Int32 = 0, q1 = 0.0, q2 = 0.0
        var a = 0.0, tau = 0.0
        dgeqrf_(&mm, &nn, &a, &lda, &tau, &q1, &lw, &info)
        var kk = Int32(n)
        dorgqr_(&mm, &nn, &kk, &a, &lda, &tau, &q2, &lw, &info)
        return max(Int(q1), Int(q2), n * 64)
    }

    static func syevdWorkspace(n: Int) -> (work: Int, iwork: Int) {
        guard n > 0 else { return (1, 1) }
        var jobz = CChar(UInt8(ascii: "V")), uplo = CChar(UInt8(ascii: "L"))
        var nn = Int32(n), lda = Int32(n), lw: Int32 = -1, liw: Int32 = -1, info: Int32 = 0, wq = 0.0, iwq: Int32 = 0
        var a = 0.0, w = 0.0
        dsyevd_(&jobz, &uplo, &nn, &a, &lda, &w, &wq, &lw, &iwq, &liw, &info, 1, 1)
        return (Int(wq), Int(iwq))
    }
}
