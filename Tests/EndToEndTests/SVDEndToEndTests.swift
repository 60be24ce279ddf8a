import EngineCore
import Foundation
import LinearAlgebra
import TestSupport
import Testing

/// truncated-svd through the binary: `rowflow gen spectrum` data in f32 and f64, shard runs merged with
/// `rowflow merge`, emitted lines and the parameters refused at validation.
@Suite(.serialized) struct SVDEndToEndTests {
    let dir = temporaryDirectory("svd")

    func manifest(_ body: String) -> String { writeManifest(in: dir, body) }

    /// Raw little-endian f32/f64 rows as a row-major float64 matrix (f32 → f64 is exact, as in the engine).
    func load(_ path: String, columns d: Int, f32: Bool) throws -> Matrix {
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let size = f32 ? 4 : 8
        let n = data.count / size / d
        var m = Matrix(rows: n, cols: d)
        for i in 0..<n * d {
            var bits: UInt64 = 0
            for b in 0..<size { bits |= UInt64(data[i * size + b]) << (8 * UInt64(b)) }
            m.storage[i] = f32 ? Double(Float(bitPattern: UInt32(bits))) : Double(bitPattern: bits)
        }
        return m
    }

    func summary(_ out: String, _ id: String) throws -> [String: Any] { try loadJSON(out + "/" + id + "/summary.json") }

    /// Values and subspace against dgesdd on the data as read, for f32 and f64 input and fast (0.5) and slow
    /// (0.95) decay of `gen spectrum`, incremental and auto (= gram at d = 64). Tolerances from the run's own
    /// certificate (summary.json): σ² − σ̂² ≤ dropped_energy + rounding_margin and σ̂² ≤ σ² + margin (plus the
    /// reference's 20·n·u·σ₁²); sin θ by Davis–Kahan over the observed gap; tail bound ≥ the true tail.
    @Test(arguments: [("f32", 0.5), ("f32", 0.95), ("f64", 0.5), ("f64", 0.95)])
    func againstGesdd(format: String, decay: Double) throws {
        let d = 64, n = 20_000, k = 8
        let input = dir + "/spec-\(format)-\(decay).\(format)"
        #expect(rowflow(["gen", "spectrum", "--rows", "\(n)", "--cols", "\(d)", "--seed", "7", "--decay", "\(decay)",
                         "--format", format, "--out", input]).status == 0)
        let m = manifest("""
        source: { format: \(format), columns: \(d) }
        operators:
          - { id: inc, op: truncated-svd, params: { rank: \(k), method: incremental } }
          - { id: auto, op: truncated-svd, params: { rank: \(k) } }
        """)
        let out = dir + "/o-\(format)-\(decay)"
        let r = rowflow(["run", m, "--input", input, "--out", out, "--progress", "never"])
        #expect(r.status == 0, "\(r.stderr)")
        let a = try load(input, columns: d, f32: format == "f32")
        let (_, s, vt) = try LAPACK.svd(a)
        let refErr = 20 * Double(n) * 0x1p-53 * s[0] * s[0]
        let trueTail = s.dropFirst(k).reduce(0) { $0 + $1 * $1 }
        for id in ["inc", "auto"] {
            let sm = try summary(out, id)
            #expect(sm["method"] as? String == (id == "inc" ? "incremental" : "gram"))
            let sv = try loadNpy(out + "/\(id)/singular_values.npy"), v = try loadNpy(out + "/\(id)/right_vectors.npy")
            let margin = sm["rounding_margin"] as! Double, dropped = sm["dropped_energy"] as! Double
            for j in 0..<k {
                let est = sv[j] * sv[j], truth = s[j] * s[j]
                #expect(est <= truth + margin + refErr && truth - est <= dropped + margin + refErr, "\(id) σ_\(j): \(sv[j]) vs \(s[j])")
            }
            #expect(sm["tail_energy_bound"] as! Double >= trueTail - refErr)
            // Principal angle: ‖V̂ − (V̂Vᵀ)V‖₂ over the reference's top-k rows.
            var c = Matrix(rows: k, cols: k), res = Matrix(rows: k, cols: d)
            for i in 0..<k { for j in 0..<k { for t in 0..<d { c[i, j] += v[i * d + t] * vt[j, t] } } }
            for i in 0..<k { for t in 0..<d { var x = v[i * d + t]; for j in 0..<k { x -= c[i, j] * vt[j, t] }; res[i, t] = x } }
            let sinT = try LAPACK.singularValues(res)[0]
            let gap = sv[k - 1] * sv[k - 1] - s[k] * s[k]
            #expect(sinT <= (dropped + margin + refErr) / gap + 1e-12, "\(id): sin θ \(sinT)")
            print("truncated-svd e2e \(format) decay \(decay) \(id): max relative σ error \(relativeError(Array(sv.prefix(k)), Array(s.prefix(k)))), sin θ \(sinT)")
        }
    }

    /// A stream split into 2 and 8 shard runs (`--shard k`), merged by `rowflow merge`: the bound still valid
    /// for the whole stream (dgesdd), values within the merged certificate, rows counted, and a state from other
    /// parameters refused.
    @Test(arguments: [2, 8])
    func mergeShards(shards: Int) throws {
        let d = 32, n = 16_000, k = 5
        let input = dir + "/whole.f64"
        #expect(rowflow(["gen", "spectrum", "--rows", "\(n)", "--cols", "\(d)", "--seed", "8", "--decay", "0.8",
                         "--format", "f64", "--out", input]).status == 0)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: input)))
        let body = "source: { format: f64, columns: \(d) }\noperators:\n  - { id: s, op: truncated-svd, params: { rank: \(k), method: incremental, center: true } }\n"
        let m = manifest(body)
        var runs: [String] = []
        for sh in 0..<shards {
            let part = dir + "/part\(shards)-\(sh).f64"
            writeBytes(part, Array(bytes[(sh * n / shards * d * 8)..<((sh + 1) * n / shards * d * 8)]))
            let out = dir + "/shard\(shards)-\(sh)"
            let r = rowflow(["run", m, "--input", part, "--out", out, "--shard", "\(sh)", "--progress", "never"])
            #expect(r.status == 0, "\(r.stderr)")
            runs.append(out)
        }
        let merged = dir + "/merged\(shards)"
        let r = rowflow(["merge", m] + runs + ["--out", merged])
        #expect(r.status == 0, "\(r.stderr)")
        let a = try load(input, columns: d, f32: false)
        var c = a
        let mean = twoPassMoments(a).mean
        for i in 0..<n { for j in 0..<d { c[i, j] -= mean[j] } }
        let s = try LAPACK.singularValues(c)
        let sm = try summary(merged, "s")
        #expect(sm["rows"] as? Int == n)
        #expect(sm["tail_energy_bound"] as! Double >= s.dropFirst(k).reduce(0) { $0 + $1 * $1 } * (1 - 1e-12))
        let sv = try loadNpy(merged + "/s/singular_values.npy")
        let margin = sm["rounding_margin"] as! Double, dropped = sm["dropped_energy"] as! Double
        for j in 0..<k { #expect(s[j] * s[j] - sv[j] * sv[j] <= dropped + margin + 1e-10 * s[0] * s[0] && sv[j] <= s[j] * (1 + 1e-12)) }
        #expect(relativeError(try loadNpy(merged + "/s/mean.npy"), mean) < 1e-12)
        let other = manifest(body.replacingOccurrences(of: "rank: \(k)", with: "rank: \(k + 1)"))
        let bad = rowflow(["merge", other] + runs + ["--out", dir + "/merged-bad"])
        #expect(bad.status == 64 && bad.stderr.contains("different parameters"), "\(bad.stderr)")
    }

    /// `--emit-every` streams the current singular values and factors; `group` without `epsilon` is refused at validation
    /// (exit 64, with file:line:column); a missing rank names the parameter.
    @Test func emitAndValidation() throws {
        let input = dir + "/emit.f64"
        #expect(rowflow(["gen", "spectrum", "--rows", "3000", "--cols", "8", "--seed", "9", "--format", "f64", "--out", input]).status == 0)
        let m = manifest("source: { format: f64, columns: 8 }\noperators:\n  - { id: s, op: truncated-svd, params: { rank: 2, method: incremental } }\n")
        let e = rowflow(["run", m, "--input", input, "--out", dir + "/o-emit", "--emit-every", "1000", "--progress", "never"])
        #expect(e.status == 0, "\(e.stderr)")
        let lines = e.stdout.split(separator: "\n")
        #expect(lines.count == 3 && lines.allSatisfy { $0.contains("\"singular_values\"") && $0.contains("\"tail_energy_bound\"") }, "\(e.stdout)")
        // The factors stream too: the last emit (at row 3000, the end) left the current factors, which must be
        // byte-identical to the final outputs (same state, same computation); the line names their folder.
        #expect(lines.allSatisfy { $0.contains("\"current\":\"\(dir)/o-emit/s/current\"") }, "\(e.stdout)")
        for name in ["singular_values", "right_vectors"] {
            let current = try Data(contentsOf: URL(fileURLWithPath: dir + "/o-emit/s/current/\(name).npy"))
            let final = try Data(contentsOf: URL(fileURLWithPath: dir + "/o-emit/s/\(name).npy"))
            #expect(current == final, "\(name)")
        }
        let g = manifest("source: { format: f64, columns: 8 }\noperators:\n  - { id: s, op: truncated-svd, params: { rank: 2, group: 3 } }\n")
        let v = rowflow(["validate", g])
        #expect(v.status == 64 && v.stderr.contains("needs params.epsilon") && v.stderr.contains(".yaml:"), "\(v.stderr)")
        let noRank = manifest("source: { format: f64, columns: 8 }\noperators:\n  - { id: s, op: truncated-svd }\n")
        let nr = rowflow(["validate", noRank])
        #expect(nr.status == 64 && nr.stderr.contains("rank"), "\(nr.stderr)")
    }

    /// group + epsilon through the binary: CSV rows whose first column is a group id (9 groups from 3 rank-2
    /// subspaces); one run and a merge of two shard runs (groups split across them) both give 3 clusters that
    /// follow the subspaces, each with a relative error bound ≤ epsilon; a fractional group id is exit 65.
    @Test func groupClustering() throws {
        let d = 10
        let bases = (0..<3).map { s in try! LAPACK.orthonormalColumns(gaussianMatrix(rows: d, cols: 2, seed: UInt64(80 + s))).transposed }
        var lines: [String] = []
        for g in 0..<9 {
            let n = 30 + 10 * g
            let z = gaussianMatrix(rows: n, cols: 2, seed: UInt64(200 + g), scale: [3, 1])
            for i in 0..<n {
                let row = (0..<d).map { t in Double(g + 1) * (z[i, 0] * bases[g % 3][0, t] + z[i, 1] * bases[g % 3][1, t]) }
                lines.append("\(g * 10)," + row.map { "\($0)" }.joined(separator: ","))
            }
        }
        // Interleave groups: stride through the lines.
        var rows: [String] = []
        for s in 0..<5 { rows += stride(from: s, to: lines.count, by: 5).map { lines[$0] } }
        writeFile(dir + "/groups.csv", rows.joined(separator: "\n") + "\n")
        writeFile(dir + "/g0.csv", rows.prefix(300).joined(separator: "\n") + "\n")
        writeFile(dir + "/g1.csv", rows.dropFirst(300).joined(separator: "\n") + "\n")
        let m = manifest("source: { format: csv }\noperators:\n  - { id: c, op: truncated-svd, params: { rank: 2, group: 0, epsilon: 0.01, method: incremental } }\n")
        #expect(rowflow(["run", m, "--input", dir + "/groups.csv", "--out", dir + "/o-groups", "--progress", "never"]).status == 0)
        for k in 0..<2 { #expect(rowflow(["run", m, "--input", dir + "/g\(k).csv", "--out", dir + "/o-g\(k)", "--shard", "\(k)", "--progress", "never"]).status == 0) }
        let r = rowflow(["merge", m, dir + "/o-g0", dir + "/o-g1", "--out", dir + "/o-gm"])
        #expect(r.status == 0, "\(r.stderr)")
        for out in [dir + "/o-groups", dir + "/o-gm"] {
            let sm = try loadJSON(out + "/c/summary.json")
            #expect(sm["clusters"] as? Int == 3 && sm["groups"] as? Int == 9 && sm["rows"] as? Int == lines.count, "\(out): \(sm)")
            let labels = try loadNpy(out + "/c/labels.npy"), groups = try loadNpy(out + "/c/groups.npy")
            #expect(groups == (0..<9).map { Double($0 * 10) })
            for g in 0..<9 { #expect(labels[g] == labels[g % 3], "\(out): group \(g * 10) in cluster \(labels[g])") }
            #expect(try loadNpy(out + "/c/cluster_relative_error_bound.npy").allSatisfy { $0 <= 0.01 })
            #expect(try loadNpy(out + "/c/cluster_right_vectors.npy").count == 3 * 2 * d)
        }
        writeFile(dir + "/badgroup.csv", "1,2,3\n2.5,1,1\n")
        let bad = rowflow(["run", m, "--input", dir + "/badgroup.csv", "--out", dir + "/o-bad"])
        #expect(bad.status == 65 && bad.stderr.contains("row 2") && bad.stderr.contains("integer group id"), "\(bad.stderr)")
    }
}
