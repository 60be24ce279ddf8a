import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#endif

/// Rank-k truncated SVD of the row stream A (n×d) — right singular vectors and values — with a certified
/// bound on the rank-k tail energy. Shamrai, "Concatenated Matrix SVD: Compression Bounds, Incremental
/// Approximation, and Error-Constrained Clustering" (arXiv 2601.11626): the incremental estimator (§4) and
/// its Weyl-type bound (§3). The error-constrained clustering of row groups (`group`) is
/// `GroupedTruncatedSVDOperator`, built from one of these per group.
///
/// **Methods.** `incremental`: a `SubspaceSketch` of k′ = k + oversample vectors absorbs internal blocks of
/// `blockRows` rows cut at fixed row positions (one projection, a second Gram–Schmidt pass, Householder QR of
/// the residual, a (k′+b)² eigenproblem, truncation to k′); the basis is re-orthonormalised every
/// `reorthEvery` blocks and before every output. `gram`: AᵀA accumulated exactly (dsyrk per block) and
/// eigendecomposed at the end (dsyevd) — exact up to rounding, O(d²) memory. `auto` picks (see
/// `TruncatedSVDConfig.autoMethod`). Float64 throughout; a weight is a multiplicity (rows scaled by √w).
///
/// **Guarantee.** `tail_energy_bound` ≥ ‖A − A_k‖_F² = Σ_{j>k} σ_j², always, where A is the (weighted,
/// centred, decayed as configured) matrix. It is F² − Σ_{j≤k} σ̂_j² + `rounding_margin`:
/// - exact arithmetic: the sketch E satisfies E ⪯ AᵀA in the PSD order after every step (no residual direction
///   is ever dropped; eigen-truncation and the re-orthonormalisation only remove PSD mass or none), so σ̂_j² =
///   λ_j(E) ≤ σ_j² and F² − Σ_{j≤k} λ_j(E) ≥ F² − Σ_{j≤k} σ_j²; it also bounds ‖A − A V̂V̂ᵀ‖_F² for the returned
///   V̂. With `gram` the bound equals the true tail up to rounding.
/// - rounding: each step perturbs E by a symmetric H_t; by Ky Fan, Σ_{j≤k} λ_j grows by at most k·‖H_t‖₂. The
///   margin adds, per block (u = 2⁻⁵³, b rows, n = order of the small eigenproblem, λ₁ = ‖E‖₂ before the step):
///   16·k·(n + b)·u·(λ₁ + ‖C‖_F²) for forming S, the eigensolver's backward error and eigenvector
///   orthogonality, and the rotation [Q Qr]U (each ≲ n·u·‖S‖₂ in LAPACK's error model, times ‖[Q Qr]‖₂² ≤ 3);
///   (2δ + δ²)·‖C‖_F² with δ = 8·u·(d·(b+2) + k′) for the part of the block its projection and QR do not
///   represent (Higham, Thm 19.4: Householder QR backward error ≤ γ̃_{db} per column); 3·(negative
///   eigenvalues set to 0); u·(b·d + 4)·‖C‖_F² for F²'s summation (blocks are added with Neumaier's
///   compensation); centring adds the error of its shifted means (below). Each re-orthonormalisation adds
///   u·(16·d·k′·tr E + 16·k·k′·λ₁). `gram` adds k·u·((b + 2)·‖C‖_F² + 2·(F² + ‖C‖_F²)) per block and
///   16·k·d·u·λ₁ for the final eigensolver. `precision: float32` (the Gram method's chunks of 64 rows formed
///   by ssyrk, then added in float64) adds √k·γ₆₅·‖C‖_F² per block with γ₆₅ = 65·u₃₂/(1 − 65·u₃₂), u₃₂ = 2⁻²⁴
///   (|error| ≤ γ₆₅·Σ|a||a|ᵀ entrywise, whose Frobenius norm is ≤ Σ‖a‖², and a top-k sum moves by at most
///   √k times a perturbation's Frobenius norm): ≈ 1.6e-5·F² over the run at k = 16 — far above the actual
///   error (noiseFloorClearsRoundingNoise prints ≈ 3e-9·λ₁ at 2·10⁴ rows), the price of a bound that holds for
///   any data. A block whose values could overflow or underflow float32 products takes the float64 path. The
///   float64 margin is therefore O(k·(k′+b)·u·Σ_t λ₁(E_t)) — linear in the number of blocks T, at worst
///   ≈ 16·k·(k′+2b)·u·T·σ₁² (≈ 8e-8·σ₁² for k = 16, b = 32, 10⁶ rows). The whole is reported as
///   `rounding_margin`. The property tests measure the actual rounding defect (where the truth is known to
///   rounding) at ≥ 10× below it (≈ 40× at worst observed).
/// - values: 0 ≤ σ_j² − σ̂_j² ≤ `dropped_energy` + margin, where `dropped_energy` = F² − tr E is the mass the
///   sketch truncated (Weyl); the subspace angle follows by Davis–Kahan. `weyl_tail_bound` is the paper's
///   Weyl-type bound F² − (Σ of the k largest row masses) — always valid, cheap, usually loose. The paper's
///   residual bound needs a basis of the whole row space (O(d·rank A) memory), so it is not offered.
///
/// **Centring** (`center: true`, scikit-learn PCA semantics): rows are shifted by a fixed vector (the first
/// row), each block is centred on its own weighted mean and one correction row √(W_A·W_B/(W_A+W_B))·(μ_B − μ_A)
/// is appended — the exact scatter update (Chan et al.), so the sketch sees Σ w(a − μ)(a − μ)ᵀ for the running
/// weighted mean μ. `explained_variance` = σ²/(W − 1) with W the (decayed) weight sum, numpy's ddof = 1 as in
/// scikit-learn (NaN when W ≤ 1); `mean` is output. **Decay**: before each block of b rows, λ, F², the margin
/// and the weights are scaled by decay^b — the bound then refers to the matrix whose row i is weighted by
/// decay^(rows after its block began); merged shards are treated as concurrent (no decay between them).
///
/// **Output.** k values always, zero-padded: a value at or below the noise floor of a Gram-based method
/// (λ ≤ 64·u·max(d, k′+b)·λ₁, i.e. σ ≤ 8·√(u·max(…))·σ₁ ≈ 1e-6·σ₁) counts as zero, and so does its vector's
/// row; with `precision: float32` the floor is λ ≤ 16·u₃₂·λ₁ (σ ≤ 1e-3·σ₁); `numerical_rank` counts
/// the values above it (incremental: among the k′ tracked, so at most k′).
/// Vectors are rows of `right_vectors`, each with its largest-magnitude entry positive.
///
/// **Cost per row**: incremental ≈ 8·k′·d + 4·d·b + 2·k′·(k′+b)·d/b + O((k′+b)³/b) flops; gram d² flops.
/// **Memory**: incremental 2·(k′ + max(b, k′))·d + b·d doubles plus O((k′+b)²); gram d² + b·d. Never the row
/// count. **Mergeable**: the other state's Q·diag(λ)^{1/2} (plus its mean-correction row) enters as one block and
/// F², weights and margins add; the bound stays valid, the result depends on merge order (not associative).
/// **Not promised**: a-priori accuracy of the incremental values (they are certified one-sidedly, with the
/// error bars above); identical bits across machines (BLAS kernels differ in the last bits).
public struct TruncatedSVDOperator: MergeableOperator, Equatable {
    public static func == (a: TruncatedSVDOperator, b: TruncatedSVDOperator) -> Bool {
        a.config == b.config && a.columns == b.columns && a.encodeState() == b.encodeState()
    }

    public static let stateVersion: UInt16 = 2
    /// Re-orthonormalise the basis every this many blocks (cost ≈ 6·d·k′² per time, ≈ 1–3 % of the blocks').
    public static let reorthEvery: Int64 = 8
    static let u = 0x1p-53

    public let config: TruncatedSVDConfig
    public let columns: Int
    /// k′.
    let sketchSize: Int

    public internal(set) var rows: Int64 = 0
    var weightSum = 0.0
    /// Σ w with decay applied: the weight of the matrix the results describe.
    var effectiveWeight = 0.0
    /// F² (decayed, centred as configured) with its Neumaier compensation term.
    var frob = 0.0
    var frobComp = 0.0
    var margin = 0.0
    var blocks: Int64 = 0
    /// The k largest row masses seen (descending), for the Weyl bound.
    var topMasses: [Double] = []
    /// Centring: the fixed shift s, the running weighted mean of (a − s), and a bound on its rounding error.
    var hasShift = false
    var shift: [Double]
    var mean: [Double]
    var meanError = 0.0
    var sketch: SubspaceSketch?
    /// Upper triangle of the (decayed, centred) Gram matrix (method gram).
    var gram: [Double]
    /// The open block: raw rows and their weights.
    var blockCount = 0
    var blockX: [Double]
    var blockW: [Double]
    /// The block as the method sees it (√w-scaled, centred, plus a correction row).
    var cbuf: [Double]
    /// precision float32: one chunk narrowed to float32, and its Gram matrix.
    var chunk32: [Float]
    var gram32: [Float]
    /// Centred float32 blocks (scratch, not state): the rows minus the shift, their column sums and masses.
    var shifted32: [Float]
    var shiftedSum: [Double]
    var shiftedMass: [Double]

    public init(config: TruncatedSVDConfig, columns d: Int) {
        precondition(d >= 1 && config.rank >= 1 && config.blockRows >= 1)
        self.config = config
        self.columns = d
        sketchSize = config.sketchSize(columns: d)
        shift = [Double](repeating: 0, count: config.center ? d : 0)
        mean = shift
        let maxBlock = max(config.blockRows, sketchSize) + 1
        sketch = config.method == .incremental ? SubspaceSketch(dimension: d, capacity: sketchSize, maxBlock: maxBlock) : nil
        gram = [Double](repeating: 0, count: config.method == .gram ? d * d : 0)
        blockX = [Double](repeating: 0, count: config.blockRows * d)
        blockW = [Double](repeating: 0, count: config.blockRows)
        cbuf = [Double](repeating: 0, count: maxBlock * d)
        let f32 = config.precision == .float32
        chunk32 = [Float](repeating: 0, count: f32 ? TruncatedSVDConfig.float32ChunkRows * d : 0)
        gram32 = [Float](repeating: 0, count: f32 ? d * d : 0)
        let c32 = f32 && config.center && config.method == .gram
        shifted32 = [Float](repeating: 0, count: c32 ? config.blockRows * d : 0)
        shiftedSum = [Double](repeating: 0, count: c32 ? d : 0)
        shiftedMass = [Double](repeating: 0, count: c32 ? config.blockRows : 0)
    }

    /// Centred rows take the float32 Gram path (`absorbCentredFloat32`).
    var centredFloat32: Bool { config.center && config.method == .gram && config.precision == .float32 }

    /// Bytes the operator will hold, to refuse impossible parameters before reading data.
    public static func memoryEstimate(_ c: TruncatedSVDConfig, columns d: Int) -> Double {
        let kp = Double(c.sketchSize(columns: d)), b = Double(c.blockRows), dd = Double(d)
        // Block buffers, and the k × d outputs (twice: vectors and their copy for the .npy).
        let common = 8 * (2 * b + kp + 2) * dd + 16 * Double(c.rank) * dd
        switch c.method {
        case .gram:
            let f32 = c.precision == .float32 ? 4 * dd * (dd + Double(TruncatedSVDConfig.float32ChunkRows)) : 0
            return common + 8 * dd * dd * 2 + f32 + (c.precision == .float32 && c.center ? (4 * dd + 8) * b + 8 * dd : 0)
        case .incremental: return common + 8 * (3 * (kp + max(b, kp)) * dd + 4 * (kp + b) * (kp + b))
        }
    }

    // MARK: stream

    /// Rows come from the batch's float32 values when it offers them and this operator computes in float32
    /// (`readsFloat32Rows`: then the engine may leave `features` unfilled); both give the same state.
    public mutating func update(_ batch: RowBatch) throws(EngineError) {
        if readsFloat32Rows, try batch.withFloat32Rows({ (p, stride) throws(EngineError) in
            try update(batch, rows: .float32(p, stride: stride))
        }) != nil { return }
        try batch.features.withUnsafeBufferPointer { (x) throws(EngineError) in
            try update(batch, rows: .float64(x.baseAddress!))
        }
    }

    public var readsFloat32Rows: Bool { config.method == .gram && config.precision == .float32 }

    /// Where a batch's feature values are read from.
    enum Rows {
        case float64(UnsafePointer<Double>)
        case float32(UnsafePointer<Float>, stride: Int)
    }

    mutating func update(_ batch: RowBatch, rows x: Rows) throws(EngineError) {
        let d = columns, b = config.blockRows
        var r = 0
        while r < batch.count {
            // A whole unweighted, uncentred block absorbed straight from the batch buffer: the same rows and
            // the same BLAS calls as the copy path, so the state is the same bytes.
            if blockCount == 0, batch.weights == nil, !config.center, batch.count - r >= b {
                switch x {
                case let .float64(p): try absorbRaw(p + r * d, count: b)
                case let .float32(p, stride): try absorbRaw(p + r * stride, stride: stride, count: b)
                }
                rows += Int64(b)
                weightSum += Double(b)
                r += b
                continue
            }
            // The same for a centred block of float32 rows: shifted in float32 straight from the batch.
            if blockCount == 0, batch.weights == nil, centredFloat32, case let .float32(p, stride) = x, batch.count - r >= b {
                applyDecay(rows: b)
                if try !absorbCentredFloat32(p + r * stride, stride: stride, rows: b) {
                    blockX.withUnsafeMutableBufferPointer { BlockKernels.widen(p + r * stride, rows: b, columns: d, stride: stride, into: $0.baseAddress!) }
                    for i in 0..<b { blockW[i] = 1 }
                    try closeCentredFloat64(rows: b)
                }
                rows += Int64(b)
                weightSum += Double(b)
                r += b
                continue
            }
            let take = min(batch.count - r, b - blockCount)
            for i in 0..<take {
                let src = r + i, dst = blockCount + i
                switch x {
                case let .float64(p): for j in 0..<d { blockX[dst * d + j] = p[src * d + j] }
                case let .float32(p, stride):
                    blockX.withUnsafeMutableBufferPointer { BlockKernels.widen(p + src * stride, rows: 1, columns: d, stride: stride, into: $0.baseAddress! + dst * d) }
                }
                let w = batch.weight(src)
                blockW[dst] = w
                weightSum += w
            }
            blockCount += take
            rows += Int64(take)
            r += take
            if blockCount == b { try closeBlock() }
        }
    }

    /// An unweighted, uncentred block of `count` rows at x (fast path; also used by the copy path).
    mutating func absorbRaw(_ x: UnsafePointer<Double>, count n: Int) throws(EngineError) {
        applyDecay(rows: n)
        effectiveWeight += Double(n)
        let masses = noteRowMasses(x, rows: n)
        try absorbBlock(x, rows: n, masses: masses, representationError: 0)
    }

    /// The same for float32 rows `stride` floats apart (precision float32); a block float32 cannot take is
    /// widened into `cbuf` first (exactly) and takes the float64 path, as it would from `features`.
    mutating func absorbRaw(_ x: UnsafePointer<Float>, stride: Int, count n: Int) throws(EngineError) {
        applyDecay(rows: n)
        effectiveWeight += Double(n)
        let d = columns
        let masses = noteRowMasses(rows: n) { i in BlockKernels.sumOfSquares(x + i * stride, n: d) }
        if float32Eligible(masses) {
            try absorbBlock(nil, rows: n, masses: masses, representationError: 0, float32: (x, stride))
        } else {
            cbuf.withUnsafeMutableBufferPointer { BlockKernels.widen(x, rows: n, columns: d, stride: stride, into: $0.baseAddress!) }
            let block = cbuf
            try block.withUnsafeBufferPointer { (c) throws(EngineError) in
                try absorbBlock(c.baseAddress!, rows: n, masses: masses, representationError: 0)
            }
        }
    }

    /// Float32 only where no value can overflow or underflow it: |a_ij|² ≤ max‖a‖² ≤ 2¹¹², so every partial
    /// sum of a chunk stays below 2¹¹⁸; and not for blocks of tiny values (max‖a‖² < 2⁻¹⁰⁰), whose products
    /// would be subnormal. Which path a block takes depends on its values only.
    func float32Eligible(_ masses: (total: Double, max: Double)) -> Bool {
        config.precision == .float32 && masses.max <= 0x1p112 && (masses.max >= 0x1p-100 || masses.max == 0)
    }

    /// Folds the open block into the state.
    mutating func closeBlock() throws(EngineError) {
        guard blockCount > 0 else { return }
        let n = blockCount, d = columns
        defer { blockCount = 0 }
        var unweighted = true
        for i in 0..<n where blockW[i] != 1 { unweighted = false; break }
        if !config.center && unweighted {
            // A second reference to the buffer (not a copy: nothing writes it meanwhile) keeps the borrow off self.
            let raw = blockX
            try raw.withUnsafeBufferPointer { (x) throws(EngineError) in try absorbRaw(x.baseAddress!, count: n) }
            return
        }
        applyDecay(rows: n)
        if config.center {
            // Rows that are float32 values (exactly: f32 sources) take the float32 path, as they would from the
            // batch, so how the rows were batched never changes the state.
            if centredFloat32 && unweighted {
                let rounded = blockX.withUnsafeBufferPointer { bx in
                    shifted32.withUnsafeMutableBufferPointer { BlockKernels.narrow(bx.baseAddress!, count: n * d, into: $0.baseAddress!) }
                }
                if rounded == 0, try shifted32.withUnsafeBufferPointer({ (y) throws(EngineError) -> Bool in
                    // In place: the routine reads each row before it writes it.
                    try absorbCentredFloat32(y.baseAddress!, stride: d, rows: n)
                }) { return }
            }
            try closeCentredFloat64(rows: n)
            return
        }
        // Weighted, uncentred: rows scaled by √w, each value rounded by u relative.
        var wB = 0.0
        for i in 0..<n {
            let s = blockW[i].squareRoot()
            wB += blockW[i]
            for j in 0..<d { cbuf[i * d + j] = s * blockX[i * d + j] }
        }
        effectiveWeight += wB
        let block = cbuf
        let masses = block.withUnsafeBufferPointer { noteRowMasses($0.baseAddress!, rows: n) }
        try block.withUnsafeBufferPointer { (c) throws(EngineError) in
            try absorbBlock(c.baseAddress!, rows: n, masses: masses, representationError: 2 * TruncatedSVDOperator.u * masses.total.squareRoot())
        }
    }

    /// The float64 centred path: each block centred on its own weighted mean, plus the correction row (see
    /// the type's documentation), after `applyDecay`.
    mutating func closeCentredFloat64(rows n: Int) throws(EngineError) {
        let d = columns
        var rowsOut = n
        var repErr = 0.0   // a bound on ‖C_computed − C_exact‖_F
        if !hasShift {
            for j in 0..<d { shift[j] = blockX[j] }
            hasShift = true
        }
        var wB = 0.0
        var mB = [Double](repeating: 0, count: d)
        var xNormSq = 0.0
        for i in 0..<n {
            let w = blockW[i]
            wB += w
            for j in 0..<d {
                let x = blockX[i * d + j] - shift[j]
                mB[j] += w * x
                xNormSq += w * x * x
            }
        }
        if wB > 0 { for j in 0..<d { mB[j] /= wB } }
        for i in 0..<n {
            let s = blockW[i].squareRoot()
            for j in 0..<d { cbuf[i * d + j] = s * ((blockX[i * d + j] - shift[j]) - mB[j]) }
        }
        let xNorm = xNormSq.squareRoot()
        let u = TruncatedSVDOperator.u
        repErr = Double(n + 6) * u * xNorm
        let wA = effectiveWeight
        if wA > 0 && wB > 0 {
            let c = (wA * wB / (wA + wB)).squareRoot()
            var corrSq = 0.0
            for j in 0..<d {
                let v = c * (mB[j] - mean[j])
                cbuf[n * d + j] = v
                corrSq += v * v
            }
            rowsOut = n + 1
            let meanBErr = Double(n + 2) * u * xNorm / wB.squareRoot()
            repErr += c * (meanError + meanBErr) + 2 * u * corrSq.squareRoot()
        }
        updateMean(wA: wA, wB: wB, mB: mB, meanBErr: wB > 0 ? Double(n + 2) * u * xNorm / wB.squareRoot() : 0)
        effectiveWeight = wA + wB
        let block = cbuf
        let masses = block.withUnsafeBufferPointer { noteRowMasses($0.baseAddress!, rows: rowsOut) }
        try block.withUnsafeBufferPointer { (c) throws(EngineError) in
            try absorbBlock(c.baseAddress!, rows: rowsOut, masses: masses, representationError: repErr)
        }
    }


    /// A centred, unweighted block of float32 rows by the float32 Gram path; false (nothing changed) when its
    /// values are outside what float32 products can take, or the shift is not a float32 vector.
    ///
    /// Y = X − s is formed in float32 (s, the first row, is a float32 vector; each subtraction is correctly
    /// rounded, so ‖Y − (X − s)‖_F ≤ u₃₂/(1 − u₃₂)·‖Y‖_F); YᵀY is formed by ssyrk in chunks of 64 rows at
    /// fixed offsets and added in float64, as for uncentred rows; the block's own centring is then the exact
    /// rank-one identity Σ(y − m)(y − m)ᵀ = YᵀY − n·m mᵀ (m the block mean of Y, in float64), and the
    /// correction row follows as in the float64 path. Rounding, added to `margin`: the float32 chunks,
    /// √k·γ₆₅·‖Y‖_F² (bounded by the *shifted* rows' mass, which the cancellation in YᵀY − n·m mᵀ does not
    /// shrink: hence the shift, which keeps ‖Y‖ near the rows' spread rather than their distance from 0);
    /// the float64 adds and the two rank-one updates, k·u·(…); and Y's representation error e, counted twice
    /// (F² and the Gram matrix each move by ≤ 2e‖C‖_F + e²), with the block mean's error carried into the
    /// running mean's.
    mutating func absorbCentredFloat32(_ x: UnsafePointer<Float>, stride: Int, rows n: Int) throws(EngineError) -> Bool {
        let d = columns, u = TruncatedSVDOperator.u, u32 = 0x1p-24, k = Double(config.rank)
        if !hasShift {
            for j in 0..<d { shift[j] = Double(x[j]) }
            hasShift = true
        }
        for j in 0..<d where Double(Float(shift[j])) != shift[j] { return false }
        var shiftedTotal = 0.0, shiftedMax = 0.0
        shifted32.withUnsafeMutableBufferPointer { yp in
            shiftedSum.withUnsafeMutableBufferPointer { sp in
                shiftedMass.withUnsafeMutableBufferPointer { mp in
                    sp.update(repeating: 0)
                    let s32 = shift.map(Float.init)
                    s32.withUnsafeBufferPointer { s in
                        for i in 0..<n {
                            let y = yp.baseAddress! + i * d
                            BlockKernels.subtract(x + i * stride, s.baseAddress!, n: d, into: y, addingTo: sp.baseAddress!)
                            let m = BlockKernels.sumOfSquares(UnsafePointer(y), n: d)
                            mp[i] = m
                            shiftedTotal += m
                            shiftedMax = max(shiftedMax, m)
                        }
                    }
                }
            }
        }
        guard shiftedTotal.isFinite, float32Eligible((shiftedTotal, shiftedMax)) else { return false }
        let wA = effectiveWeight, wB = Double(n)
        let mB = shiftedSum.map { $0 / wB }
        var mNormSq = 0.0
        for v in mB { mNormSq += v * v }
        // The block-centred rows' masses ‖y − m‖² = ‖y‖² − 2y·m + ‖m‖² (for F² and the Weyl bound), then the
        // correction row's.
        let ys = shifted32, ms = shiftedMass   // references, not copies: keeps the borrows off self
        var masses = ys.withUnsafeBufferPointer { yp in
            mB.withUnsafeBufferPointer { mp in
                noteRowMasses(rows: n) { i in
                    max(0, ms[i] - 2 * BlockKernels.dot(yp.baseAddress! + i * d, mp.baseAddress!, n: d) + mNormSq)
                }
            }
        }
        var corr: [Double] = [], corrSq = 0.0, c = 0.0
        if wA > 0 {
            c = (wA * wB / (wA + wB)).squareRoot()
            corr = (0..<d).map { c * (mB[$0] - mean[$0]) }
            for v in corr { corrSq += v * v }
            let m = noteRowMasses(rows: 1) { _ in corrSq }
            masses = (masses.total + m.total, max(masses.max, m.max))
        }
        let normSq = masses.total
        guard normSq.isFinite else {
            throw .data("truncated-svd", "non-finite values (or squares beyond the float64 range) in a block",
                        hint: "the SVD needs finite rows; keep source.allow_nonfinite false or clean the input")
        }
        addFrob(normSq)
        _ = ys.withUnsafeBufferPointer { gramFloat32(nil, rows: n, float32: ($0.baseAddress!, d)) }
        gram.withUnsafeMutableBufferPointer { g in
            mB.withUnsafeBufferPointer { BlockKernels.syrUpper(-wB, $0.baseAddress!, n: d, into: g.baseAddress!) }
            if !corr.isEmpty { corr.withUnsafeBufferPointer { BlockKernels.syrUpper(1, $0.baseAddress!, n: d, into: g.baseAddress!) } }
        }
        let chunkRows = Double(TruncatedSVDConfig.float32ChunkRows + 1)
        let chunks = Double((n + TruncatedSVDConfig.float32ChunkRows - 1) / TruncatedSVDConfig.float32ChunkRows)
        margin += u * Double(n * d + 4) * (shiftedTotal + normSq)
        margin += k.squareRoot() * (chunkRows * u32 / (1 - chunkRows * u32) * shiftedTotal + chunks * Double(d) * chunkRows * 0x1p-149)
        margin += k * u * (Double(n + 2) * shiftedTotal + 2 * (frob + shiftedTotal))
        margin += k * 4 * u * (wB * mNormSq + corrSq)
        let eY = u32 / (1 - u32) * shiftedTotal.squareRoot()
        // m is Y's mean: off from (X − s)'s by ≤ e_Y/√n (Cauchy–Schwarz), plus its float64 summation.
        let meanBErr = (eY + Double(n + 2) * u * shiftedTotal.squareRoot()) / wB.squareRoot()
        let e = eY + c * (meanError + meanBErr) + 2 * u * corrSq.squareRoot()
        margin += 2 * (2 * e * normSq.squareRoot() + e * e)
        updateMean(wA: wA, wB: wB, mB: mB, meanBErr: meanBErr)
        effectiveWeight = wA + wB
        return true
    }

    /// m_A ← m_A + (W_B/W)(m_B − m_A), and the running bound on its rounding error.
    mutating func updateMean(wA: Double, wB: Double, mB: [Double], meanBErr: Double) {
        guard wB > 0 else { return }
        let f = wB / (wA + wB)
        var na = 0.0, nb = 0.0
        for j in 0..<columns {
            na += mean[j] * mean[j]; nb += mB[j] * mB[j]
            mean[j] += f * (mB[j] - mean[j])
        }
        meanError = (1 - f) * meanError + f * meanBErr + 4 * TruncatedSVDOperator.u * (na.squareRoot() + nb.squareRoot())
    }

    /// Scales everything accumulated by decay^rows (before a block of that many rows).
    mutating func applyDecay(rows n: Int) {
        guard config.decay < 1 else { return }
        let g = pow(config.decay, Double(n)), u = TruncatedSVDOperator.u, k = Double(config.rank)
        // Old rounding errors shrink with the matrix they were made on.
        margin = margin * g * (1 + 2 * u)
        frob *= g; frobComp *= g
        effectiveWeight *= g
        for i in 0..<topMasses.count { topMasses[i] *= g }
        // Scaling rounds every entry by u relative: F² by u·F², and E (or G) by a perturbation of norm ≤ u·tr,
        // which moves the top-k sum by at most k·u·tr (Ky Fan).
        margin += 2 * u * frob
        switch config.method {
        case .incremental:
            sketch!.scale(by: g)
            margin += k * u * sketch!.trace
        case .gram:
            for i in 0..<gram.count { gram[i] *= g }
            margin += k * u * frob
        }
    }

    /// Σ and max of the rows' squared norms; keeps the k largest for the Weyl bound.
    mutating func noteRowMasses(_ x: UnsafePointer<Double>, rows n: Int) -> (total: Double, max: Double) {
        let d = columns
        return noteRowMasses(rows: n) { i in BlockKernels.sumOfSquares(x + i * d, n: d) }
    }

    @inline(__always)
    mutating func noteRowMasses(rows n: Int, _ mass: (Int) -> Double) -> (total: Double, max: Double) {
        var total = 0.0, largest = 0.0
        for i in 0..<n {
            let s = mass(i)
            total += s
            largest = max(largest, s)
            insertMass(s)
        }
        return (total, largest)
    }

    /// Adds F² (compensated) and the rows to the method's state, and this block's rounding margin.
    /// `c` may be nil only with `float32` rows that are `float32Eligible`.
    mutating func absorbBlock(_ c: UnsafePointer<Double>?, rows n: Int, masses: (total: Double, max: Double),
                                      representationError e0: Double, float32: (UnsafePointer<Float>, Int)? = nil) throws(EngineError) {
        let u = TruncatedSVDOperator.u, d = columns, k = Double(config.rank), normSq = masses.total
        var e = e0
        guard normSq.isFinite else {
            throw .data("truncated-svd", "non-finite values (or squares beyond the float64 range) in a block",
                        hint: "the SVD needs finite rows; keep source.allow_nonfinite false or clean the input")
        }
        addFrob(normSq)
        margin += u * Double(n * d + 4) * normSq
        switch config.method {
        case .gram:
            if float32Eligible(masses) {
                e += gramFloat32(c, rows: n, float32: float32)
                // Per chunk of m rows the float32 Gram is off by H with |H| ≤ γ_{m+1}·Σ|a||a|ᵀ entrywise, so
                // ‖H‖_F ≤ γ_{m+1}·‖Σ|a||a|ᵀ‖_F ≤ γ_{m+1}·Σ‖a‖², plus (m+1)·2⁻¹⁴⁹ per entry for subnormal
                // results; the top-k sum moves by at most Σ_{j≤k} σ_j(H) ≤ √k·‖H‖_F. Adding the chunk in float64
                // is covered below.
                let m = Double(TruncatedSVDConfig.float32ChunkRows + 1), u32 = 0x1p-24
                let chunks = Double((n + TruncatedSVDConfig.float32ChunkRows - 1) / TruncatedSVDConfig.float32ChunkRows)
                margin += k.squareRoot() * (m * u32 / (1 - m * u32) * normSq + chunks * Double(d) * m * 0x1p-149)
            } else {
                gram.withUnsafeMutableBufferPointer { g in BlockKernels.syrkUpper(c!, rows: n, n: d, into: g.baseAddress!) }
            }
            margin += k * u * (Double(n + 2) * normSq + 2 * (frob + normSq))
        case .incremental:
            let rep: SketchStepReport
            do { rep = try sketch!.absorb(c!, rows: n) } catch { throw .internal("truncated-svd", error.description) }
            margin += stepMargin(rep, blockRows: n, normSq: normSq)
            blocks += 1
            if blocks % TruncatedSVDOperator.reorthEvery == 0 { try reorthonormalize() }
        }
        // The rows used differ from the exact ones by Δ (‖Δ‖_F ≤ e): ‖C̃ᵀC̃ − CᵀC‖_* ≤ 2e‖C‖_F + e².
        if e > 0 { margin += 2 * e * normSq.squareRoot() + e * e }
    }

    /// Adds the block's Gram matrix chunk by chunk (`float32ChunkRows` rows at fixed offsets in the block):
    /// ssyrk in float32, then the chunk's result added in float64. The rows come from `float32` when given
    /// (the batch's own float32 values) and are otherwise narrowed from `c` — the same values when the input
    /// was float32. Returns ‖C̃ − C‖_F for the narrowed rows C̃ (0 when nothing was rounded).
    mutating func gramFloat32(_ c: UnsafePointer<Double>?, rows n: Int, float32: (UnsafePointer<Float>, Int)?) -> Double {
        let d = columns, m = TruncatedSVDConfig.float32ChunkRows
        var rounded = 0.0
        var r = 0
        while r < n {
            let rows = min(m, n - r)
            gram32.withUnsafeMutableBufferPointer { t in
                if let (p, stride) = float32 {
                    BlockKernels.syrkUpperFloat32(p + r * stride, rows: rows, n: d, lda: stride, into: t.baseAddress!)
                } else {
                    chunk32.withUnsafeMutableBufferPointer { x in
                        rounded += BlockKernels.narrow(c! + r * d, count: rows * d, into: x.baseAddress!)
                        BlockKernels.syrkUpperFloat32(x.baseAddress!, rows: rows, n: d, lda: d, into: t.baseAddress!)
                    }
                }
                gram.withUnsafeMutableBufferPointer { g in BlockKernels.addUpper(t.baseAddress!, n: d, into: g.baseAddress!) }
            }
            r += rows
        }
        // The squared differences are exact-ish (each Δ is a float64 value); 2u covers their summation.
        return (rounded * (1 + 0x1p-50)).squareRoot()
    }

    /// The rounding allowance for one incremental step (see the type's documentation).
    func stepMargin(_ r: SketchStepReport, blockRows b: Int, normSq: Double) -> Double {
        let u = TruncatedSVDOperator.u, k = Double(config.rank), d = Double(columns), kp = Double(sketchSize)
        var m = 16 * k * Double(r.order + b) * u * (r.previousTop + normSq) + 3 * r.clamped
        if !r.dense {
            let delta = 8 * u * (d * Double(b + 2) + kp)
            m += (2 * delta + delta * delta) * normSq
        }
        return m
    }

    mutating func reorthonormalize() throws(EngineError) {
        guard sketch != nil else { return }
        let rep: SketchStepReport
        do { rep = try sketch!.reorthonormalize() } catch { throw .internal("truncated-svd", error.description) }
        let u = TruncatedSVDOperator.u, k = Double(config.rank), d = Double(columns), kp = Double(sketchSize)
        margin += u * (16 * d * kp * rep.previousTrace + 16 * k * kp * rep.previousTop) + 3 * rep.clamped
    }

    mutating func addFrob(_ x: Double) {
        // Neumaier: the sum of block masses keeps its low-order bits, so F²'s error does not grow with T.
        let t = frob + x
        if abs(frob) >= abs(x) { frobComp += (frob - t) + x } else { frobComp += (x - t) + frob }
        frob = t
    }

    var frobeniusSq: Double { frob + frobComp }

    // MARK: results

    /// The factorisation as it stands (the open block folded in, the basis re-orthonormalised), on a copy.
    public struct Result: Sendable {
        /// k values (zero-padded), descending.
        public var singularValues: [Double]
        /// k × d, row-major (zero rows where padded).
        public var rightVectors: [Double]
        public var numericalRank: Int
        public var frobeniusSq: Double
        public var tailBound: Double
        public var relativeErrorBound: Double
        public var weylTailBound: Double
        public var roundingMargin: Double
        public var droppedEnergy: Double
        public var mean: [Double]?
        public var effectiveWeight: Double
    }

    public func result() throws(EngineError) -> Result {
        var c = self
        try c.closeBlock()
        let d = columns, k = config.rank, u = TruncatedSVDOperator.u
        var values: [Double]
        var vectors: [Double]
        var order: Int
        switch config.method {
        case .incremental:
            try c.reorthonormalize()
            let sk = c.sketch!
            values = sk.values
            vectors = sk.basis
            order = max(d, sketchSize + config.blockRows)
        case .gram:
            var g = Matrix(rows: d, cols: d, storage: c.gram)
            g.symmetrizeFromUpper()
            let e: (values: [Double], vectors: Matrix)
            do { e = try LAPACK.symmetricEigen(g) } catch { throw .data("truncated-svd", "eigensolver failed: \(error.description)") }
            values = e.values.map { max(0, $0) }
            vectors = e.vectors.storage
            c.margin += 16 * Double(k) * Double(d) * u * (values.first ?? 0)
            for v in e.values where v < 0 { c.margin += 3 * -v }
            order = d
        }
        let top = values.first ?? 0
        var floor = 64 * u * Double(order) * top
        // Chunks formed in float32 leave noise eigenvalues on rank-deficient float32 inputs of ≈ u₃₂·λ₁ when one
        // chunk holds all the rows (nothing averages) and ≈ 3e-9·λ₁ at 2·10⁴ rows (noiseFloorClearsRoundingNoise
        // prints both, d = 64 and 256); 16·u₃₂·λ₁ sits ≥ 8× above the first (asserted there), ≈ 300× above the
        // second.
        if config.method == .gram && config.precision == .float32 { floor = max(floor, 16 * 0x1p-24 * top) }
        let rank = values.prefix { $0 > floor }.count
        var sv = [Double](repeating: 0, count: k)
        var rv = [Double](repeating: 0, count: k * d)
        var kept = 0.0
        for j in 0..<min(k, rank) {
            sv[j] = values[j].squareRoot()
            kept += values[j]
            // Sign: the largest-magnitude entry positive (the first one on ties).
            var best = 0
            for i in 0..<d where abs(vectors[j * d + i]) > abs(vectors[j * d + best]) { best = i }
            let s: Double = vectors[j * d + best] < 0 ? -1 : 1
            for i in 0..<d { rv[j * d + i] = s * vectors[j * d + i] }
        }
        let f = c.frobeniusSq
        let bound = max(0, f - kept + c.margin)
        let tracked = values.reduce(0, +)
        let weyl = max(0, f - c.topMasses.reduce(0, +)) + c.margin
        return Result(singularValues: sv, rightVectors: rv, numericalRank: rank, frobeniusSq: f, tailBound: bound,
                      relativeErrorBound: f > 0 ? min(1, (bound / f).squareRoot()) : 0, weylTailBound: weyl,
                      roundingMargin: c.margin, droppedEnergy: max(0, f - tracked),
                      mean: config.center ? (0..<d).map { c.shift[$0] + c.mean[$0] } : nil,
                      effectiveWeight: c.effectiveWeight)
    }

    /// tr(V E Vᵀ) for the rows of V (m × d, row-major): the energy the state holds in that subspace (the open
    /// block folded in). E ⪯ AᵀA, so this is at most ‖A Vᵀ‖_F² up to rounding.
    public func energy(in v: [Double], rows m: Int) throws(EngineError) -> Double {
        var c = self
        try c.closeBlock()
        let d = columns
        precondition(v.count == m * d)
        var total = 0.0
        switch config.method {
        case .incremental:
            let sk = c.sketch!, q = sk.basis
            for i in 0..<sk.count {
                for r in 0..<m {
                    var s = 0.0
                    for t in 0..<d { s += q[i * d + t] * v[r * d + t] }
                    total += sk.values[i] * s * s
                }
            }
        case .gram:
            var g = Matrix(rows: d, cols: d, storage: c.gram)
            g.symmetrizeFromUpper()
            for r in 0..<m {
                let x = Array(v[r * d..<(r + 1) * d])
                let gx = g.multiplied(by: x)
                for t in 0..<d { total += x[t] * gx[t] }
            }
        }
        return total
    }

    func scalars(_ r: Result) -> [(String, JSON)] {
        var s: [(String, JSON)] = [
            ("rows", .int(rows)), ("weight_sum", .double(weightSum)),
            ("rank", .int(Int64(config.rank))), ("numerical_rank", .int(Int64(r.numericalRank))),
            ("frobenius_norm_sq", .double(r.frobeniusSq)), ("tail_energy_bound", .double(r.tailBound)),
            ("relative_error_bound", .double(r.relativeErrorBound)), ("method", .string(config.method.rawValue)),
            ("weyl_tail_bound", .double(r.weylTailBound)), ("rounding_margin", .double(r.roundingMargin)),
            ("dropped_energy", .double(r.droppedEnergy)),
            ("oversample", .int(Int64(config.oversample))), ("block_rows", .int(Int64(config.blockRows))),
            ("columns", .int(Int64(columns))), ("center", .bool(config.center)),
        ]
        if config.method == .gram { s.append(("precision", .string(config.precision.rawValue))) }
        if config.decay < 1 { s.append(("effective_weight", .double(r.effectiveWeight))) }
        return s
    }

    public func currentSummary() -> [(String, JSON)] { currentEmit().summary }

    /// The summary and the factors so far, from one `result()`: with `decay` < 1 they follow a drifting stream.
    public func currentEmit() -> (summary: [(String, JSON)], arrays: [NamedArray]) {
        guard let r = try? result() else { return ([("rows", .int(rows)), ("weight_sum", .double(weightSum))], []) }
        // The k values are small enough for an emit line; the vectors (k×d) go to files.
        return (scalars(r) + [("singular_values", .array(r.singularValues.map { .double($0) }))], rows > 0 ? factorArrays(r) : [])
    }

    /// singular_values, right_vectors and, when centring, mean.
    func factorArrays(_ r: Result) -> [NamedArray] {
        var arrays = [NamedArray("singular_values", shape: [config.rank], float64: r.singularValues),
                      NamedArray("right_vectors", shape: [config.rank, columns], float64: r.rightVectors)]
        if let m = r.mean { arrays.append(NamedArray("mean", shape: [columns], float64: m)) }
        return arrays
    }

    public mutating func finish() throws(EngineError) -> OperatorOutput {
        let r = try result()
        let k = config.rank
        var arrays = factorArrays(r)
        if r.mean != nil {
            let w = r.effectiveWeight
            let ev = r.singularValues.map { w > 1 ? $0 * $0 / (w - 1) : .nan }
            let total = w > 1 ? r.frobeniusSq / (w - 1) : .nan
            arrays.append(NamedArray("explained_variance", shape: [k], float64: ev))
            arrays.append(NamedArray("explained_variance_ratio", shape: [k], float64: ev.map { total > 0 ? $0 / total : .nan }))
        }
        return OperatorOutput(arrays: arrays, summary: scalars(r))
    }

    // MARK: state
}

// MARK: state
