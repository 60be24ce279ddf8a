import EngineCore
import Foundation
import LinearAlgebra
import RowIO
import TestSupport
import Testing

/// dpp-sample and `gen legendre` through the binary.
@Suite(.serialized) struct DPPEndToEndTests {
    let dir = temporaryDirectory("dpp-e2e")

    /// `gen legendre` writes exactly the candidates the operator tests build in-process (same counter-based
    /// x, same recurrence): byte-equal float64 values, the Runge target last; `--target none` drops it.
    @Test func genLegendreIsTheReferenceFeatureMap() throws {
        let r = rowflow(["gen", "legendre", "--rows", "500", "--cols", "7", "--seed", "2026", "--format", "npy",
                         "--out", dir + "/l.npy", "--truth", dir + "/t.json"])
        #expect(r.status == 0, "\(r.stderr)")
        let got = try loadNpy(dir + "/l.npy")
        let (_, phi, y) = legendreCandidates(rows: 500, cols: 7, seed: 2026)
        #expect(got.count == 500 * 8)
        for i in 0..<500 {
            for j in 0..<7 { #expect(got[i * 8 + j] == phi[i, j]) }
            #expect(got[i * 8 + 7] == y[i])
        }
        #expect(try loadJSON(dir + "/t.json")["target"] as? String == "runge")
        #expect(rowflow(["gen", "legendre", "--rows", "3", "--cols", "4", "--target", "none", "--format", "npy", "--out", dir + "/n.npy"]).status == 0)
        #expect(try loadNpy(dir + "/n.npy").count == 12)
        let bad = rowflow(["gen", "legendre", "--target", "cosine"])
        #expect(bad.status == 64 && bad.stderr.contains("runge | abs | exp | step | none"))
    }

    /// From stdin (row count unknown, the row store fills as rows arrive) the outputs equal a file run's,
    /// byte for byte; the summary is consistent (size, rank, Σ weights ≈ rows, residual ≥ optimum).
    @Test func stdinEqualsFile() throws {
        let csv = rowflow(["gen", "legendre", "--rows", "6000", "--cols", "8", "--seed", "5", "--format", "csv"])
        #expect(csv.status == 0)
        writeFile(dir + "/in.csv", csv.stdout)
        writeFile(dir + "/m.yaml", """
        version: 1
        source: { target: last }
        operators:
          - { id: d, op: dpp-sample, params: { mode: volume-rescaled, samples: 24 } }
        """)
        let a = rowflow(["run", dir + "/m.yaml", "--input", dir + "/in.csv", "--out", dir + "/file", "--seed", "3"])
        let b = rowflow(["run", dir + "/m.yaml", "--out", dir + "/stdin", "--seed", "3"], stdin: Array(csv.stdout.utf8))
        #expect(a.status == 0 && b.status == 0, "\(a.stderr) \(b.stderr)")
        for f in ["indices.npy", "weights.npy", "rows.npy", "targets.npy", "coefficients.npy", "summary.json"] {
            #expect(FileManager.default.contents(atPath: dir + "/file/d/" + f) == FileManager.default.contents(atPath: dir + "/stdin/d/" + f), "\(f)")
        }
        let s = try loadJSON(dir + "/file/d/summary.json")
        #expect(s["size"] as? Int == 24 && s["rank_used"] as? Int == 8 && s["mode"] as? String == "volume-rescaled")
        #expect((s["residual"] as! Double) >= (s["optimal_residual"] as! Double))
        // Σw is an unbiased estimate of the 6000 rows; one sample of 24 lands within a factor 2 (loose).
        let w = try loadNpy(dir + "/file/d/weights.npy").reduce(0, +)
        #expect(w > 3000 && w < 12_000, "Σw = \(w)")
    }

    /// `--shard 3` (docs/commands.md): every dpp-sample output gains `shard.npy`, int64, one entry per sampled
    /// row, all 3; indices stay local (each sampled row equals the input's row at that index). The store
    /// spills (memory_mb: 1 holds ~13,000 rows of 6 features + 4 doubles), so the shard is read back from the
    /// spill file as well as from memory. Without `--shard`: no shard.npy.
    @Test func shardColumnUnderShard() throws {
        let n = 40_000
        #expect(rowflow(["gen", "legendre", "--rows", "\(n)", "--cols", "6", "--seed", "8", "--format", "npy", "--out", dir + "/s.npy"]).status == 0)
        let data = try loadNpy(dir + "/s.npy")
        writeFile(dir + "/shard.yaml", """
        version: 1
        source: { format: npy, target: last }
        rowstore: { memory_mb: 1 }
        operators:
          - { id: p, op: dpp-sample, params: { mode: projection } }
          - { id: i, op: dpp-sample, params: { mode: iid, samples: 50 } }
          - { id: g, op: gram, input: i }
        """)
        let r = rowflow(["run", dir + "/shard.yaml", "--input", dir + "/s.npy", "--out", dir + "/sh3", "--shard", "3", "--progress", "never"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir + "/sh3/rowstore/source.rows"))
        for (id, size) in [("p", 6), ("i", 50)] {
            let sh = try NpyReader.read(dir + "/sh3/\(id)/shard.npy")
            #expect(sh.dtype == "<i8" && sh.shape == [size], "\(id): \(sh.dtype) \(sh.shape)")
            #expect(sh.values.allSatisfy { $0 == 3 }, "\(id): \(sh.values)")
            let idx = try loadNpy(dir + "/sh3/\(id)/indices.npy"), rows = try loadNpy(dir + "/sh3/\(id)/rows.npy")
            #expect(idx.count == size)
            for k in 0..<idx.count {
                let i = Int(idx[k])
                #expect((0..<6).allSatisfy { rows[k * 6 + $0] == data[i * 7 + $0] }, "\(id) row \(k): index \(i)")
            }
        }
        let plain = rowflow(["run", dir + "/shard.yaml", "--input", dir + "/s.npy", "--out", dir + "/sh-none", "--progress", "never"])
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/sh-none/p/shard.npy"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/sh-none/i/shard.npy"))
    }

    /// sensitivity-sample → dpp-sample over 3 shards: each shard run's dpp sample has shard k; under
    /// `rowflow merge` the dpp-sample reads the merged coreset, whose rows come from all shards, and its
    /// `shard.npy` names the shard each sampled row came from: (shard, index) locates the row in the data and
    /// is one of the merged coreset's (shard, index) pairs. 60 i.i.d. draws from a coreset pooled from 3
    /// shards all land in one shard with probability ≈ 3·(1/3)^60 (the shards' leverage mass is similar).
    @Test func mergedCoresetKeepsEachRowsShard() throws {
        let n = 30_000, shards = 3
        let csv = rowflow(["gen", "legendre", "--rows", "\(n)", "--cols", "5", "--seed", "12", "--format", "csv"])
        #expect(csv.status == 0)
        let lines = csv.stdout.split(separator: "\n", omittingEmptySubsequences: true)
        #expect(lines.count == n)
        let values = lines.map { $0.split(separator: ",").map { Double($0)! } }
        writeFile(dir + "/merge.yaml", """
        version: 1
        source: { format: csv, header: no, columns: 6, target: last }
        operators:
          - { id: core, op: sensitivity-sample, params: { samples: 1500 } }
          - { id: d, op: dpp-sample, input: core, params: { mode: iid, samples: 60 } }
          - { id: v, op: dpp-sample, input: core, params: { mode: volume-rescaled, samples: 12 } }
        """)
        var runs: [String] = []
        for k in 0..<shards {
            let part = dir + "/part\(k).csv"
            writeFile(part, lines[(k * n / shards)..<((k + 1) * n / shards)].joined(separator: "\n") + "\n")
            let out = dir + "/mshard\(k)"
            let r = rowflow(["run", dir + "/merge.yaml", "--input", part, "--out", out, "--shard", "\(k)", "--progress", "never"])
            #expect(r.status == 0, "\(r.stderr)")
            for id in ["d", "v"] {
                #expect(try loadNpy(out + "/\(id)/shard.npy").allSatisfy { $0 == Double(k) }, "shard run \(k), \(id)")
            }
            runs.append(out)
        }
        let merged = dir + "/mmerged"
        let r = rowflow(["merge", dir + "/merge.yaml"] + runs + ["--out", merged])
        #expect(r.status == 0, "\(r.stderr)")
        let coreShard = try loadNpy(merged + "/core/shard.npy"), coreIdx = try loadNpy(merged + "/core/indices.npy")
        let corePairs = Set(zip(coreShard, coreIdx).map { "\(Int($0)):\(Int($1))" })
        for (id, size) in [("d", 60), ("v", 12)] {
            let sh = try NpyReader.read(merged + "/\(id)/shard.npy")
            let idx = try loadNpy(merged + "/\(id)/indices.npy"), rows = try loadNpy(merged + "/\(id)/rows.npy")
            let y = try loadNpy(merged + "/\(id)/targets.npy")
            #expect(sh.dtype == "<i8" && sh.values.count == size && idx.count == size)
            for k in 0..<size {
                let s = Int(sh.values[k]), i = Int(idx[k])
                #expect(s >= 0 && s < shards && corePairs.contains("\(s):\(i)"), "\(id) row \(k): shard \(s) index \(i)")
                let g = s * n / shards + i
                #expect((0..<5).allSatisfy { rows[k * 5 + $0] == values[g][$0] } && y[k] == values[g][5], "\(id) row \(k)")
            }
            if id == "d" { #expect(Set(sh.values).count > 1, "60 draws from one shard: \(sh.values)") }
        }
    }

    /// Listed by `rowflow operators`; mode errors caught by `validate` with the manifest location.
    @Test func catalogAndValidation() throws {
        let ops = rowflow(["operators", "--json"])
        #expect(ops.status == 0 && ops.stdout.contains("\"dpp-sample\""))
        writeFile(dir + "/bad.yaml", "version: 1\noperators:\n  - { id: d, op: dpp-sample, params: { mode: iid } }\n")
        let v = rowflow(["validate", dir + "/bad.yaml"])
        #expect(v.status == 64 && v.stderr.contains("bad.yaml:3") && v.stderr.contains("needs params.samples"), "\(v.stderr)")
        writeFile(dir + "/bad2.yaml", "version: 1\noperators:\n  - { id: d, op: dpp-sample, params: { mode: dpp } }\n")
        let v2 = rowflow(["validate", dir + "/bad2.yaml"])
        #expect(v2.status == 64 && v2.stderr.contains("volume-rescaled"), "\(v2.stderr)")
    }
}
