import EngineCore
import Foundation
import LinearAlgebra
@testable import Operators
import TestSupport

/// SplitMix64 normals (Box–Muller): ~10× faster than Philox in a debug build, which matters for the 10⁷
/// draws of these tests. Test data only; the operators use CounterRandom.
struct FastNormals {
    var state: UInt64
    var spare: Double?
    init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1 }
    mutating func next() -> UInt64 {
        state = state &+ 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Double { (Double(next() >> 11) + 0.5) * 0x1p-53 }
    mutating func normal() -> Double {
        if let s = spare { spare = nil; return s }
        let r = (-2 * log(uniform())).squareRoot(), t = 2 * Double.pi * uniform()
        spare = r * sin(t)
        return r * cos(t)
    }
}

/// Rows built like `rowflow gen spectrum`: a = Σⱼ σⱼ zⱼ vⱼ with z standard normal and V a random orthonormal
/// set, σ₁ = √R, σⱼ = 0.9^(j−2) beyond — truncated at m directions (0.9^(2·40) < 3·10⁻⁴ of σ₂², so the tail
/// cut changes nothing the tests measure and keeps generation cheap). Optional planted heavy rows along v₂
/// (squared norm 0.1·n·Σσ²/h each, as gen plants them). Rows are made batch by batch (one dgemm each), in
/// any order; the exact AᵀA is Bᵀ(ZᵀZ)B plus the planted rows, in float64.
struct SpectrumData {
    let n: Int
    let d: Int
    let m: Int
    /// n×m standard normals.
    let z: [Double]
    /// ZᵀZ over the rows that are not planted (m×m, symmetric).
    let zz: Matrix
    /// B = diag(σ)·V (m×d): row i of A is z_i·B.
    let b: Matrix
    let v: Matrix
    var heavy: [Int: [Double]] = [:]

    init(n: Int, d: Int, gap: Double, seed: UInt64, directions: Int = 40, heavyRows: Int = 0) {
        self.n = n
        self.d = d
        let m = min(d, directions)
        self.m = m
        var g = FastNormals(seed: seed)
        var gauss = Matrix(rows: d, cols: m)
        gauss.storage.withUnsafeMutableBufferPointer { p in for i in 0..<(d * m) { p[i] = g.normal() } }
        v = try! LAPACK.orthonormalColumns(gauss).transposed
        let sigma = (0..<m).map { $0 == 0 ? gap.squareRoot() : pow(0.9, Double($0 - 1)) }
        var bm = v
        for i in 0..<m { for j in 0..<d { bm[i, j] *= sigma[i] } }
        b = bm
        var zv = [Double](repeating: 0, count: n * m)
        zv.withUnsafeMutableBufferPointer { p in for i in 0..<(n * m) { p[i] = g.normal() } }
        z = zv
        var planted: [Int: [Double]] = [:]
        if heavyRows > 0 {
            let trace = sigma.reduce(0) { $0 + $1 * $1 }
            let norm = (0.1 * Double(n) * trace / Double(heavyRows)).squareRoot()
            var set = Set<Int>()
            while set.count < heavyRows { set.insert(Int(g.uniform() * Double(n))) }
            for r in set { planted[r] = (0..<d).map { norm * bm[1, $0] / sigma[1] } }
        }
        heavy = planted
        var s = Matrix(rows: m, cols: m)
        s.storage.withUnsafeMutableBufferPointer { sp in
            zv.withUnsafeBufferPointer { BlockKernels.syrkUpper($0.baseAddress!, rows: n, n: m, into: sp.baseAddress!) }
        }
        for r in planted.keys { for p in 0..<m { for q in p..<m { s[p, q] -= zv[r * m + p] * zv[r * m + q] } } }
        s.symmetrizeFromUpper()
        zz = s
    }

    /// The same draws with another gap (only σ₁ changes).
    init(copying o: SpectrumData, gap: Double) {
        n = o.n; d = o.d; m = o.m; z = o.z; zz = o.zz; v = o.v; heavy = o.heavy
        var bm = o.b
        let s1 = gap.squareRoot()
        for j in 0..<d { bm[0, j] = s1 * o.v[0, j] }
        b = bm
    }

    /// The rows in `order` (default: as generated) as batches of `batchRows`. Row values do not depend on
    /// the batching (a dgemm's rounding depends on its shape): in generation order they come from fixed
    /// 4096-row dgemm chunks, in any other order from one dgemv per row.
    func batches(batchRows: Int, order: [Int]? = nil, weights: [Double]? = nil) -> [RowBatch] {
        var out: [RowBatch] = []
        forEachBatch(batchRows: batchRows, order: order, weights: weights) { out.append($0) }
        return out
    }

    /// The same batches, one at a time (so a test holds one batch, not the whole matrix: the test process's
    /// peak RSS is inherited by the binaries other tests spawn, and RobustnessTests bounds theirs).
    func forEachBatch(batchRows: Int, order: [Int]? = nil, weights: [Double]? = nil, _ body: (RowBatch) throws -> Void) rethrows {
        var start = 0
        let genChunk = 4096
        var cache = [Double](repeating: 0, count: genChunk * d)
        var cached = -1
        var zb = [Double](repeating: 0, count: genChunk * m)
        while start < n {
            let cnt = min(batchRows, n - start)
            var batch = RowBatch(columns: d, capacity: cnt, hasTarget: false, hasWeight: weights != nil)
            for i in 0..<cnt {
                let r = order?[start + i] ?? start + i
                let slot = batch.appendSlot(index: Int64(r))
                if let w = weights { batch.weights![slot] = w[r] }
                if let h = heavy[r] {
                    for j in 0..<d { batch.features[slot * d + j] = h[j] }
                    continue
                }
                if order == nil {
                    let c = r / genChunk
                    if c != cached {
                        let rowsIn = min(genChunk, n - c * genChunk)
                        z.withUnsafeBufferPointer { zp in
                            zb.withUnsafeMutableBufferPointer { zbp in
                                zbp.baseAddress!.update(from: zp.baseAddress! + c * genChunk * m, count: rowsIn * m)
                            }
                        }
                        zb.withUnsafeBufferPointer { zbp in
                            b.storage.withUnsafeBufferPointer { bp in
                                cache.withUnsafeMutableBufferPointer { cp in
                                    BlockKernels.gemm(zbp.baseAddress!, rows: rowsIn, n: m, bp.baseAddress!, cols: d, into: cp.baseAddress!)
                                }
                            }
                        }
                        cached = c
                    }
                    let off = (r - c * genChunk) * d
                    cache.withUnsafeBufferPointer { cp in
                        batch.features.withUnsafeMutableBufferPointer { f in
                            (f.baseAddress! + slot * d).update(from: cp.baseAddress! + off, count: d)
                        }
                    }
                } else {
                    z.withUnsafeBufferPointer { zp in
                        b.storage.withUnsafeBufferPointer { bp in
                            batch.features.withUnsafeMutableBufferPointer { f in
                                let dst = f.baseAddress! + slot * d
                                for j in 0..<d { dst[j] = 0 }
                                BlockKernels.gemvTransposedAccumulate(bp.baseAddress!, rows: m, n: d, v: zp.baseAddress! + r * m, into: dst)
                            }
                        }
                    }
                }
            }
            try body(batch)
            start += cnt
        }
    }

    /// AᵀA in float64: Bᵀ(ZᵀZ)B over the non-planted rows, plus Σ planted h hᵀ.
    func gram() -> Matrix {
        var g = b.transposed.multiplied(by: zz).multiplied(by: b)
        for (_, h) in heavy { for p in 0..<d { for q in 0..<d { g[p, q] += h[p] * h[q] } } }
        return g
    }

    /// Row i's squared norm and squared cosine with u, in generation order.
    func rowStats(along u: [Double]) -> (norm2: [Double], cos2: [Double]) {
        var nn = [Double](), cc = [Double]()
        for bt in batches(batchRows: 4096) {
            bt.features.withUnsafeBufferPointer { f in
                u.withUnsafeBufferPointer { up in
                    for r in 0..<bt.count {
                        let a = f.baseAddress! + r * d
                        let q = BlockKernels.dot(a, a, n: d), c = BlockKernels.dot(a, up.baseAddress!, n: d)
                        nn.append(q); cc.append(q > 0 ? c * c / q : 0)
                    }
                }
            }
        }
        return (nn, cc)
    }
}

/// LAPACK dsyevd on AᵀA: (λ₁, λ₂, v₁).
func topEigen(_ g: Matrix) -> (l1: Double, l2: Double, v1: [Double]) {
    let e = try! LAPACK.symmetricEigen(g)
    return (e.values[0], e.values.count > 1 ? e.values[1] : 0, (0..<g.rows).map { e.vectors[0, $0] })
}

/// 1 − ⟨v, v₁⟩², both unit vectors.
func eigError(_ v: [Double], _ v1: [Double]) -> Double {
    var c = 0.0
    for i in 0..<v.count { c += v[i] * v1[i] }
    return max(0, 1 - c * c)
}

func vectorOf(_ out: OperatorOutput) -> [Double] {
    for a in out.arrays where a.name == "vector" { if case let .float64(v) = a.values { return v } }
    return []
}

func summaryValue(_ out: OperatorOutput, _ key: String) -> JSON? { out.summary.first { $0.0 == key }?.1 }

func summaryDouble(_ out: OperatorOutput, _ key: String) -> Double {
    switch summaryValue(out, key) {
    case let .double(x)?: return x
    case let .int(i)?: return Double(i)
    default: return .nan
    }
}

func summaryBool(_ out: OperatorOutput, _ key: String) -> Bool {
    if case let .bool(b)? = summaryValue(out, key) { return b }
    return false
}

func randomOrder(columns: Int, rowsKnown: Int64?, blocks: Int? = nil, heavyMemoryMB: Int = 256, seed: UInt64 = 0) -> RandomOrderTopEigenvector {
    RandomOrderTopEigenvector(columns: columns, blocks: blocks, rowsKnown: rowsKnown, heavyMemoryMB: heavyMemoryMB,
                              seed: seed, shard: 0, purpose: 99)
}

func oja(columns: Int, rowsKnown: Int64? = nil, seed: UInt64 = 0) -> OjaTopEigenvector {
    OjaTopEigenvector(columns: columns, rowsKnown: rowsKnown, seed: seed, shard: 0, purpose: 99)
}

/// Runs an operator over batches and finishes it.
func runOp<T: StreamOperator>(_ op: T, _ bs: [RowBatch]) throws -> (T, OperatorOutput) {
    var o = op
    for b in bs { try o.update(b) }
    let out = try o.finish()
    return (o, out)
}
