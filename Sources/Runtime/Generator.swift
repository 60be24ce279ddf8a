import EngineCore
import LinearAlgebra
import RowIO

public struct GenOptions: Sendable {
    public enum Kind: String, Sendable { case spectrum, regression, legendre }
    /// Target functions of `gen legendre` (f on [−1, 1]).
    public enum Target: String, Sendable, CaseIterable { case runge, abs, exp, step, none }
    public enum Format: String, Sendable { case csv, tsv, f32, f64, npy, libsvm }
    public var kind: Kind = .spectrum
    public var rows = 10000
    public var cols = 16
    public var seed: UInt64 = 0
    public var format: Format = .csv
    public var zstd = false
    public var gap = 4.0
    public var decay = 0.9
    public var heavy = 0
    /// Added to every feature of a spectrum row (column means far from zero, for PCA).
    public var offset = 0.0
    /// Noise standard deviation; nil: 0.1 for regression, 0 for legendre.
    public var noise: Double?
    public var target: Target = .runge
    public var out: String?
    public var truth: String?
    public init() {}
}

/// `rowflow gen`: seeded synthetic rows with known structure, so no test or benchmark needs outside data.
///
/// - `spectrum`: rows a = Σⱼ σⱼ zⱼ vⱼ with z standard normal and V a random orthogonal basis, so
///   E[AᵀA]/n = V diag(σ²) Vᵀ: σ₂ = 1, σ₁ = √gap (σ₁²/σ₂² = gap), σⱼ = decay^(j−2) beyond. `heavy` planted rows
///   along v₂ (each of squared norm 0.1·n·Σσ²/heavy) at seeded positions.
/// - `regression`: x standard normal, y = xᵀβ + noise·ε with β standard normal; y is the last column (libsvm:
///   the label).
/// - `legendre`: the feature map of a weighted least-squares experiment (Nouy & Michel §5): x ~ U[−1, 1],
///   features φ_k(x) = √(2k+1)·P_k(x), k < cols (Legendre polynomials, orthonormal for the uniform measure),
///   then the target f(x) + noise·ε as the last column: runge 1/(1 + 25x²), abs |x|, exp eˣ, step 1[x > 0];
///   `none` writes the features only.
/// Every value is addressed by (seed, purpose, row, column), so the same arguments give the same bytes.
public struct Generator: Sendable {
    let o: GenOptions
    public init(_ o: GenOptions) { self.o = o }

    static let purposeRows: UInt32 = 1, purposeBasis: UInt32 = 2, purposeBeta: UInt32 = 3, purposeNoise: UInt32 = 4, purposeHeavy: UInt32 = 5

    public func run() throws(EngineError) {
        if o.kind == .legendre { return try runLegendre() }
        let d = o.cols
        let rng = { (p: UInt32) in CounterRandom(seed: o.seed, shard: 0, purpose: p) }
        var sigma = [Double](repeating: 0, count: d)
        var basis = Matrix.identity(d)
        var beta = [Double]()
        var heavyRows: [Int] = []
        if o.kind == .spectrum {
            for j in 0..<d { sigma[j] = j == 0 ? o.gap.squareRoot() : pow(o.decay, Double(j - 1)) }
            var g = Matrix(rows: d, cols: d)
            let r = rng(Generator.purposeBasis)
            for i in 0..<d { for j in 0..<d { g[i, j] = r.normal(index: UInt64(i * d + j)) } }
            do { basis = try LAPACK.orthonormalColumns(g).transposed } catch {
                throw .internal("gen", error.description)
            }
            if o.heavy > 0 && o.rows > 0 {
                let hr = rng(Generator.purposeHeavy)
                var set = Set<Int>()
                var k: UInt64 = 0
                while set.count < min(o.heavy, o.rows) { set.insert(Int(hr.uniform(index: k) * Double(o.rows))); k += 1 }
                heavyRows = set.sorted()
            }
        } else {
            let r = rng(Generator.purposeBeta)
            beta = (0..<d).map { r.normal(index: UInt64($0)) }
        }
        let trace = sigma.reduce(0) { $0 + $1 * $1 }
        let heavyNorm = o.heavy > 0 ? (0.1 * Double(o.rows) * trace / Double(o.heavy)).squareRoot() : 0
        let fieldCount = o.kind == .regression ? d + 1 : d
        let sink = try ByteSink(path: o.out, zstd: o.zstd, pledgedBytes: binarySize(fields: fieldCount))
        if o.format == .npy { try sink.write(NpyWriter.header(descr: "<f8", shape: [o.rows, fieldCount])) }
        let block = 4096
        let rows = rng(Generator.purposeRows), noise = rng(Generator.purposeNoise)
        var heavyIdx = 0
        var start = 0
        while start < o.rows {
            let b = min(block, o.rows - start)
            var z = Matrix(rows: b, cols: d)
            for i in 0..<b {
                for j in 0..<d { z[i, j] = rows.normal(index: UInt64((start + i) * d + j)) * (o.kind == .spectrum ? sigma[j] : 1) }
            }
            let x = o.kind == .spectrum ? z.multiplied(by: basis) : z
            for i in 0..<b {
                let g = start + i
                var row = Array(x.storage[i * d..<(i + 1) * d])
                if heavyIdx < heavyRows.count && heavyRows[heavyIdx] == g {
                    for j in 0..<d { row[j] = heavyNorm * basis[1, j] }
                    heavyIdx += 1
                }
                if o.kind == .spectrum && o.offset != 0 { for j in 0..<d { row[j] += o.offset } }
                var y: Double?
                if o.kind == .regression {
                    var s = 0.0
                    for j in 0..<d { s += row[j] * beta[j] }
                    y = s + (o.noise ?? 0.1) * noise.normal(index: UInt64(g))
                }
                try emit(row, y: y, to: sink)
            }
            start += b
        }
        try sink.close()
        if let t = o.truth {
            var pairs: [(String, JSON)] = [("kind", .string(o.kind.rawValue)), ("rows", .int(Int64(o.rows))),
                                           ("cols", .int(Int64(d))), ("seed", .int(Int64(bitPattern: o.seed)))]
            if o.kind == .spectrum {
                pairs.append(("sigma", .array(sigma.map { .double($0) })))
                pairs.append(("gap", .double(o.gap)))
                if o.offset != 0 { pairs.append(("offset", .double(o.offset))) }
                pairs.append(("v1", .array((0..<d).map { .double(basis[0, $0]) })))
                pairs.append(("v2", .array((0..<d).map { .double(basis[1, $0]) })))
                pairs.append(("heavy_rows", .array(heavyRows.map { .int(Int64($0)) })))
            } else {
                pairs.append(("beta", .array(beta.map { .double($0) })))
                pairs.append(("noise", .double(o.noise ?? 0.1)))
            }
            try FileBytes.writeAtomically(Array((JSON.object(pairs).encoded(pretty: true) + "\n").utf8), to: t)
        }
    }

    /// The target functions of `gen legendre`.
    public static func evaluate(_ t: GenOptions.Target, _ x: Double) -> Double? {
        switch t {
        case .runge: return 1 / (1 + 25 * x * x)
        case .abs: return Swift.abs(x)
        case .exp: return exp(x)
        case .step: return x > 0 ? 1 : 0
        case .none: return nil
        }
    }

    /// The output's exact size for binary formats (so a zstd frame can declare its content size and readers
    /// know the row count); nil for text, whose length depends on the digits.
    func binarySize(fields: Int) -> Int64? {
        switch o.format {
        case .f32: return Int64(o.rows) * Int64(fields) * 4
        case .f64: return Int64(o.rows) * Int64(fields) * 8
        case .npy: return Int64(NpyWriter.header(descr: "<f8", shape: [o.rows, fields]).count) + Int64(o.rows) * Int64(fields) * 8
        default: return nil
        }
    }

    func runLegendre() throws(EngineError) {
        let m = o.cols
        let xs = CounterRandom(seed: o.seed, shard: 0, purpose: Generator.purposeRows)
        let noise = CounterRandom(seed: o.seed, shard: 0, purpose: Generator.purposeNoise)
        let sigma = o.noise ?? 0
        let fields = m + (o.target == .none ? 0 : 1)
        let sink = try ByteSink(path: o.out, zstd: o.zstd, pledgedBytes: binarySize(fields: fields))
        if o.format == .npy { try sink.write(NpyWriter.header(descr: "<f8", shape: [o.rows, fields])) }
        var row = [Double](repeating: 0, count: m)
        for i in 0..<o.rows {
            let x = 2 * xs.uniform(index: UInt64(i)) - 1
            row.withUnsafeMutableBufferPointer { Legendre.orthonormal(x, into: $0.baseAddress!, count: m) }
            let y = Generator.evaluate(o.target, x).map { $0 + sigma * noise.normal(index: UInt64(i)) }
            try emit(row, y: y, to: sink)
        }
        try sink.close()
        if let t = o.truth {
            let pairs: [(String, JSON)] = [
                ("kind", .string("legendre")), ("rows", .int(Int64(o.rows))), ("cols", .int(Int64(m))),
                ("seed", .int(Int64(bitPattern: o.seed))), ("target", .string(o.target.rawValue)), ("noise", .double(sigma)),
                ("x", .string("uniform on [-1, 1]")),
                ("features", .string("sqrt(2k+1)·P_k(x), k = 0..cols-1: Legendre polynomials orthonormal for the uniform measure")),
            ]
            try FileBytes.writeAtomically(Array((JSON.object(pairs).encoded(pretty: true) + "\n").utf8), to: t)
        }
    }

    func emit(_ row: [Double], y: Double?, to sink: ByteSink) throws(EngineError) {
        switch o.format {
        case .csv, .tsv:
            let sep = o.format == .csv ? "," : "\t"
            var line = row.map { "\($0)" }.joined(separator: sep)
            if let y { line += sep + "\(y)" }
            try sink.write(line + "\n")
        case .libsvm:
            var line = "\(y ?? 0)"
            for (j, v) in row.enumerated() where v != 0 { line += " \(j + 1):\(v)" }
            try sink.write(line + "\n")
        case .f32:
            var bytes: [UInt8] = []
            bytes.reserveCapacity(4 * (row.count + 1))
            for v in row + (y.map { [$0] } ?? []) { withUnsafeBytes(of: Float(v).bitPattern.littleEndian) { bytes += $0 } }
            try sink.write(bytes)
        case .f64, .npy:
            var bytes: [UInt8] = []
            bytes.reserveCapacity(8 * (row.count + 1))
            for v in row + (y.map { [$0] } ?? []) { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
            try sink.write(bytes)
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

