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
