import EngineCore
import Foundation
import LinearAlgebra
import TestSupport
import Testing

/// `sensitivity-sample` through the binary: the coreset feeds `gram (solve: ridge)`, shards run apart and
/// merge (downstream solve included), and the manifest validator enforces epsilon xor samples.
@Suite(.serialized) struct CoresetCommandLineTests {
    let dir = temporaryDirectory("coreset")

    func manifest(_ body: String) -> String { writeManifest(in: dir, body) }

    /// Rows of [A | y] with column scales over four orders of magnitude, 1 % heavy rows, y = Aβ + noise.
    func data(rows n: Int, seed: UInt64) -> (a: Matrix, y: [Double]) {
        let scales = [1e-2, 1, 10, 100, 0.5, 3]
        var a = gaussianMatrix(rows: n, cols: 6, seed: seed, scale: scales)
        let r = CounterRandom(seed: seed, shard: 0, purpose: 93)
        for i in 0..<n where r.uniform(index: UInt64(i)) < 0.01 { for j in 0..<6 { a[i, j] *= 15 } }
        let y = (0..<n).map { i in (0..<6).reduce(0.0) { $0 + a[i, $1] / scales[$1] * Double($1 % 3 - 1) } + 0.5 * r.normal(index: UInt64(i), lane: 1) }
        return (a, y)
    }

    func f32Bytes(_ a: Matrix, _ y: [Double], rows: Range<Int>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(rows.count * 7 * 4)
        for i in rows {
            for v in (0..<6).map({ Float(a[i, $0]) }) + [Float(y[i])] {
                withUnsafeBytes(of: v.bitPattern.littleEndian) { out += $0 }
            }
        }
        return out
    }

    /// The data as the binary sees it (float32-rounded).
    func rounded(_ a: Matrix, _ y: [Double]) -> (Matrix, [Double]) {
        (Matrix(rows: a.rows, cols: a.cols, storage: a.storage.map { Double(Float($0)) }), y.map { Double(Float($0)) })
    }

    /// ½‖Ax − y‖² + ½λ‖x‖² on all rows (docs/outputs.md).
    func ridgeObjective(_ a: Matrix, _ y: [Double], _ x: [Double], lambda: Double) -> Double {
        let ax = a.multiplied(by: x)
        var s = 0.0
        for i in 0..<a.rows { s += (ax[i] - y[i]) * (ax[i] - y[i]) }
        return 0.5 * s + 0.5 * lambda * x.reduce(0) { $0 + $1 * $1 }
    }

    static let pipeline = """
    source: { format: f32, columns: 7, target: last }
    operators:
      - { id: core, op: sensitivity-sample, params: { PARAMS } }
      - { id: fit, op: gram, input: core, params: { solve: ridge, lambda: 1.0 } }
      - { id: exact, op: gram, params: { solve: ridge, lambda: 1.0 } }

    """

    /// sensitivity-sample → gram (solve: ridge) on 100,000 rows: the coreset's ridge solution has a full-data
    /// objective ≤ (1 + ε)·the exact optimum (the embedding of [A | y] with ε = 0.5 gives (1+ε)/(1−ε) plus
    /// the ridge term; 1 + ε is the "1 + O(ε)" with constant 1), gram downstream saw exactly the coreset
    /// (rows = size, weight_sum = Σ weights), and the coreset is a small fraction of the rows.
    @Test func coresetFeedsRidge() throws {
        let n = 100_000
        let (a0, y0) = data(rows: n, seed: 71)
        writeBytes(dir + "/all.f32", f32Bytes(a0, y0, rows: 0..<n))
        let (a, y) = rounded(a0, y0)
        let m = manifest(Self.pipeline.replacingOccurrences(of: "PARAMS", with: "epsilon: 0.5"))
        let r = rowflow(["run", m, "--input", dir + "/all.f32", "--out", dir + "/o", "--progress", "never"])
        #expect(r.status == 0, "\(r.stderr)")
        let core = try loadJSON(dir + "/o/core/summary.json"), fit = try loadJSON(dir + "/o/fit/summary.json")
        let size = core["size"] as! Int
        #expect(size < n / 10, "coreset of \(size) rows")
        #expect(fit["rows"] as? Int == size)
        #expect(abs((fit["weight_sum"] as! Double) - (core["sample_weight_sum"] as! Double)) <= 1e-9 * Double(n))
        #expect(try loadNpy(dir + "/o/core/rows.npy").count == size * 6)
        #expect(!FileManager.default.fileExists(atPath: dir + "/o/core/shard.npy"), "no shard column without --shard")
        let xHat = try loadNpy(dir + "/o/fit/solution.npy"), xOpt = try loadNpy(dir + "/o/exact/solution.npy")
        let ratio = ridgeObjective(a, y, xHat, lambda: 1) / ridgeObjective(a, y, xOpt, lambda: 1)
        print("coreset → ridge: \(size) of \(n) rows, objective ratio \(ratio)")
        #expect(ratio >= 1 - 1e-12 && ratio <= 1.5)
    }

    /// Shards run apart with `--shard k`, merged with `rowflow merge`: the merged coreset carries a `shard`
    /// column naming every shard, indices local to their shard (checked against the data), at most
    /// `samples` rows (+5√s for the last thinning's spread), and the ridge solve downstream of the merged
    /// coreset is run by merge (objective ratio ≤ 1 + the ε bound the merged summary reports). Draws differ
    /// per shard: the same file as shard 0 and as shard 1 gives different samples. (For p = 1 the ridge
    /// objective is not what the coreset preserves; that case checks the merge-reduce path end to end and
    /// only a sanity bound of 2 on the ratio.)
    @Test(arguments: ["samples: 2000", "p: 1, samples: 2000", "epsilon: 0.5"])
    func shardsMergeThenSolve(params: String) throws {
        let n = 60_000, shards = 3
        let (a0, y0) = data(rows: n, seed: 72)
        let (a, y) = rounded(a0, y0)
        let m = manifest(Self.pipeline.replacingOccurrences(of: "PARAMS", with: params)
                            .replacingOccurrences(of: "  - { id: exact, op: gram, params: { solve: ridge, lambda: 1.0 } }\n", with: ""))
        var runs: [String] = []
        for k in 0..<shards {
            let file = dir + "/part\(k).f32"
            if !FileManager.default.fileExists(atPath: file) { writeBytes(file, f32Bytes(a0, y0, rows: (k * n / shards)..<((k + 1) * n / shards))) }
            let out = dir + "/shard-\(params.hashValue)-\(k)"
            let r = rowflow(["run", m, "--input", file, "--out", out, "--shard", "\(k)", "--progress", "never"])
            #expect(r.status == 0, "\(r.stderr)")
            let shardColumn = try loadNpy(out + "/core/shard.npy")
            #expect(!shardColumn.isEmpty && shardColumn.allSatisfy { $0 == Double(k) })
            runs.append(out)
        }
        let merged = dir + "/merged-\(params.hashValue)"
        let r = rowflow(["merge", m] + runs + ["--out", merged])
        #expect(r.status == 0, "\(r.stderr)")
        let shard = try loadNpy(merged + "/core/shard.npy"), idx = try loadNpy(merged + "/core/indices.npy")
        let rows = try loadNpy(merged + "/core/rows.npy"), t = try loadNpy(merged + "/core/targets.npy")
        #expect(Set(shard) == Set((0..<shards).map(Double.init)))
        for i in 0..<idx.count {
            let g = Int(shard[i]) * n / shards + Int(idx[i])
            #expect(rows[i * 6 + 3] == a[g, 3] && t[i] == y[g], "row \(i): shard \(shard[i]) index \(idx[i])")
        }
        let core = try loadJSON(merged + "/core/summary.json")
        let size = core["size"] as! Int
        if params.contains("samples") { #expect(Double(size) <= 2000 + 5 * 2000.0.squareRoot()) }
        #expect(core["rows"] as? Int == n)
        #expect(try loadJSON(merged + "/fit/summary.json")["rows"] as? Int == size)
        // The full-data optimum, independently: dgels on [A; I] x ≈ [y; 0] (λ = 1).
        var aug = Matrix(rows: n + 6, cols: 6)
        for i in 0..<n { for j in 0..<6 { aug[i, j] = a[i, j] } }
        for j in 0..<6 { aug[n + j, j] = 1 }
        let xOpt = try LAPACK.leastSquares(aug, y + [Double](repeating: 0, count: 6))
        let ratio = ridgeObjective(a, y, try loadNpy(merged + "/fit/solution.npy"), lambda: 1) / ridgeObjective(a, y, xOpt, lambda: 1)
        let eps = min(core["epsilon_bound"] as? Double ?? 1, 1)
        print("merge \(shards) shards, \(params): \(size) rows, ridge objective ratio \(ratio), ε bound \(eps)")
        #expect(ratio >= 1 - 1e-9 && ratio <= 1 + eps)
        // The same file as shard 0 and shard 1: different draws.
        let s1 = dir + "/same-\(params.hashValue)"
        #expect(rowflow(["run", m, "--input", dir + "/part0.f32", "--out", s1, "--shard", "1", "--progress", "never"]).status == 0)
        #expect(try loadNpy(s1 + "/core/indices.npy") != (try loadNpy(runs[0] + "/core/indices.npy")))
    }

    /// epsilon and samples: exactly one, enforced by `rowflow validate` (exit 64, file:line:column).
    @Test func validateEnforcesEpsilonXorSamples() {
        for (params, fragment) in [("epsilon: 0.5, samples: 10", "not both"), ("p: 2", "needs epsilon"),
                                   ("p: 1, method: online, samples: 5", "p = 2 only"), ("epsilon: 1.5", "out of range")] {
            let m = manifest("operators: [{ id: s, op: sensitivity-sample, params: { \(params) } }]\n")
            let r = rowflow(["validate", m])
            #expect(r.status == 64 && r.stderr.contains(fragment) && r.stderr.contains(".yaml:"), "\(params): \(r.stderr)")
        }
        let ok = manifest("source: { target: last }\noperators:\n  - { id: s, op: sensitivity-sample, params: { samples: 100 } }\n  - { id: g, op: gram, input: s, params: { solve: ridge } }\n")
        #expect(rowflow(["validate", ok]).status == 0)
    }
}
