import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#endif

/// The resolved parameters of `truncated-svd` (what `auto` became is recorded here and in summary.json).
public struct TruncatedSVDConfig: Sendable, Equatable {
    public enum Method: String, Sendable { case incremental, gram }
    /// What the Gram method accumulates each chunk of `float32ChunkRows` rows in (always float64 across chunks).
    public enum Precision: String, Sendable { case float64, float32 }
    /// k: singular values and vectors returned.
    public var rank: Int
    public var oversample: Int
    public var method: Method
    /// Rows per internal block (fixed row positions).
    public var blockRows: Int
    public var center: Bool
    /// Forgetting factor per row, 0 < decay ≤ 1.
    public var decay: Double
    /// Gram method only (the incremental sketch is float64 throughout).
    public var precision: Precision

    public init(rank: Int, oversample: Int = 5, method: Method = .incremental, blockRows: Int, center: Bool = false, decay: Double = 1,
                precision: Precision = .float64) {
        self.rank = rank; self.oversample = oversample; self.method = method; self.blockRows = blockRows
        self.center = center; self.decay = decay; self.precision = method == .gram ? precision : .float64
    }

    /// Rows whose Gram matrix ssyrk forms in float32 before it is added in float64: the float32 error bound
    /// grows with it (γ₆₅ ≈ 3.9e-6 relative to Σ‖a‖²), the per-chunk float64 addition of the d×d result
    /// shrinks with it. `make -C Benchmarks kernels` (d = 256, 10⁶ rows, one core): 32 rows 1.7 s, 64 1.2 s,
    /// 128 1.0 s, 512 0.9 s, against 1.7 s for dsyrk.
    public static let float32ChunkRows = 64

    /// `precision: auto`: float32 chunks when the rows are float32 values to begin with (nothing is rounded
    /// on the way in; centred rows are shifted in float32 with a certified rounding, see
    /// `absorbCentredFloat32`), the method is gram and k ≤ 24 — so that float32's worst-case
    /// margin √k·γ₆₅·F² stays ≤ 2e-5·F² (at d = 1000, k = 100 it would be 3.9e-5·F², loosening a relative bound
    /// of 2.5e-5 to 6e-3 for a 1.2× speed-up); float64 otherwise.
    public static func autoPrecision(method: Method, rank: Int, float32Values: Bool) -> Precision {
        method == .gram && float32Values && rank <= 24 ? .float32 : .float64
    }

    /// Basis vectors the incremental sketch keeps: k′ = k + oversample, at most d.
    public func sketchSize(columns d: Int) -> Int { min(rank + oversample, d) }

    /// Default rows per block of the incremental method, a function of d only (so a manifest gives the same
    /// blocks on every input of that width). Per row the step costs ≈ 8·k′·d (projections) + 4·d·b (QR) +
    /// 2·k′·(k′+b)·d/b (rotation) + ~10·(k′+b)³/b (eigenproblem): small b pays the per-block eigenproblem and
    /// rotation too often, large b grows the QR. Measured (release, one BLAS thread, 10⁵ rows): d = 256,
    /// k = 16: b = 16 and 32 equal within noise, 8 is ≈ 20 % and 64 ≈ 30 % slower; d = 1000, k = 100: b = 64 is
    /// ≈ 13 % faster than 32 — larger k favours larger blocks, but `auto` takes the Gram path there anyway.
    /// Narrow inputs take fewer rows so a block stays a thin slice of the column space.
    public static func incrementalBlockRows(columns d: Int) -> Int { max(4, min(32, d / 4)) }

    /// Default rows per block of the Gram method (≈4 MiB of rows; only summation order and decay/centring
    /// granularity depend on it).
    public static func gramBlockRows(columns d: Int) -> Int { GramOperator.blockRows(columns: d) }

    /// `method: auto`: the exact Gram path when it is also the faster one. Gram costs d² flops per row (dsyrk,
    /// ≈ 45 GFLOP/s on one core) plus one d³-order eigenproblem at the end; the incremental step costs
    /// ≈ 8·k′·d + 4·d·b + 2·k′·(k′+b)·d/b flops per row at a lower rate (small BLAS-3 calls and a small dense
    /// eigenproblem per block, ≈ 15–20 GFLOP/s measured). Gram is chosen when d² ≤ 2.5 × that, i.e.
    /// d ≤ 2.5·(8k′ + 4b + 2k′(k′+b)/b), and d ≤ 4096 (its matrix ≤ 128 MiB). Measured on the development
    /// machine (2·10⁴ rows): d = 256, k = 16: gram 3.5× faster; d = 1000, k = 100: gram 3× faster; d = 2000,
    /// k = 16: incremental 3× faster; d = 2000, k = 100: about equal.
    public static func autoMethod(columns d: Int, sketch kp: Int, blockRows b: Int) -> Method {
        let perColumn = 8.0 * Double(kp) + 4 * Double(b) + 2 * Double(kp) * Double(kp + b) / Double(b)
        return d <= 4096 && Double(d) <= 2.5 * perColumn ? .gram : .incremental
    }

    /// From validated parameters (the descriptor's kinds already checked types and ranges).
    public static func resolve(_ p: ParamValues, columns d: Int, float32Values: Bool = false) throws(EngineError) -> TruncatedSVDConfig {
        guard let k = p.int("rank") else { throw .usage("truncated-svd", "parameter 'rank' is required") }
        let over = Int(p.int("oversample") ?? 5)
        let kp = min(Int(k) + over, d)
        let given = p.int("block_rows").map(Int.init)
        let method: Method
        switch p.string("method") ?? "auto" {
        case "gram": method = .gram
        case "incremental": method = .incremental
        default: method = autoMethod(columns: d, sketch: kp, blockRows: given ?? incrementalBlockRows(columns: d))
        }
        let b = given ?? (method == .gram ? gramBlockRows(columns: d) : incrementalBlockRows(columns: d))
        let center = p.bool("center") ?? false
        let precision: Precision
        switch p.string("precision") ?? "auto" {
        case "float32": precision = .float32
        case "float64": precision = .float64
        default: precision = autoPrecision(method: method, rank: Int(k), float32Values: float32Values)
        }
        return TruncatedSVDConfig(rank: Int(k), oversample: over, method: method, blockRows: b,
                                  center: center, decay: p.double("decay") ?? 1, precision: precision)
    }
}
