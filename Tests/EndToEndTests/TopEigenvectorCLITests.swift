import EngineCore
import Foundation
import TestSupport
import Testing

/// top-eigenvector through the binary: merge refusal, --emit-every, stdin (n unknown) against a file (n known),
/// and the operator catalogue.
@Suite(.serialized) struct TopEigenvectorCLITests {
    let dir = temporaryDirectory("topeig-cli")

    func manifest(_ body: String) -> String { writeManifest(in: dir, body) }

    /// Not mergeable (Price & Xun): `rowflow merge` refuses with exit 64 before reading any state, and the hint
    /// names the mergeable alternatives.
    @Test func mergeIsRefusedWithAHint() throws {
        let m = manifest("source: { format: f32, columns: 8 }\noperators:\n  - { id: top, op: top-eigenvector }\n")
        var runs: [String] = []
        for k in 0..<2 {
            let input = dir + "/p\(k).f32"
            #expect(rowflow(["gen", "spectrum", "--rows", "3000", "--cols", "8", "--seed", "\(k + 1)", "--format", "f32", "--out", input]).status == 0)
            let out = dir + "/shard\(k)"
            let r = rowflow(["run", m, "--input", input, "--out", out, "--shard", "\(k)", "--progress", "never"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out + "/top/state.bin"), "no state.bin for a non-mergeable operator")
            runs.append(out)
        }
        let r = rowflow(["merge", m] + runs + ["--out", dir + "/merged"])
        #expect(r.status == 64, "\(r.stderr)")
        #expect(r.stderr.hasPrefix("rowflow: error: ") && r.stderr.contains("not mergeable"), "\(r.stderr)")
        #expect(r.stderr.contains("gram") && r.stderr.contains("truncated-svd"), "\(r.stderr)")
    }

    /// --emit-every 2000 on 6000 rows: one line per emit, with the current eigenvalue estimate and row count.
    @Test func emitEveryStreamsTheEstimate() throws {
        let input = dir + "/e.f32"
        #expect(rowflow(["gen", "spectrum", "--rows", "6000", "--cols", "8", "--gap", "9", "--seed", "4", "--format", "f32", "--out", input]).status == 0)
        let m = manifest("source: { format: f32, columns: 8, batch_rows: 700 }\noperators:\n  - { id: top, op: top-eigenvector }\n  - { id: oja, op: top-eigenvector, params: { variant: oja } }\n")
        let r = rowflow(["run", m, "--input", input, "--out", dir + "/emit", "--emit-every", "2000", "--progress", "never"])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        #expect(lines.count == 6)
        for (i, l) in lines.enumerated() {
            #expect(l["rows"] as? Int == 2000 * (i / 2 + 1))
            let s = l["summary"] as! [String: Any]
            #expect((s["eigenvalue"] as? Double ?? 0) > 0 && s["variant"] != nil, "\(l)")
        }
    }

    /// stdin (n unknown: doubling epochs) and the file (n known from its size) both find gen's v₁: gap 9,
    /// n = 20,000, d = 16 — the sample's top eigenvector is within ~d/(n·(R−1)) ≈ 10⁻⁴ of the population's, and
    /// the streaming error adds ~10⁻⁴; 0.99 leaves a wide margin.
    @Test func stdinAndFileBothFindTheTopDirection() throws {
        let input = dir + "/s.f32", truth = dir + "/s.json"
        #expect(rowflow(["gen", "spectrum", "--rows", "20000", "--cols", "16", "--gap", "9", "--seed", "5", "--format", "f32",
                         "--out", input, "--truth", truth]).status == 0)
        let v1 = try loadJSON(truth)["v1"] as! [Double]
        let m = manifest("source: { format: f32, columns: 16 }\noperators:\n  - { id: top, op: top-eigenvector }\n")
        #expect(rowflow(["run", m, "--input", input, "--out", dir + "/file", "--progress", "never"]).status == 0)
        let r = rowflow(["run", m, "--out", dir + "/stdin", "--progress", "never"], stdin: [UInt8](try Data(contentsOf: URL(fileURLWithPath: input))))
        #expect(r.status == 0, "\(r.stderr)")
        for (out, schedule) in [("file", "fixed"), ("stdin", "doubling")] {
            let v = try loadNpy(dir + "/" + out + "/top/vector.npy")
            let c = zip(v, v1).reduce(0) { $0 + $1.0 * $1.1 }
            #expect(c * c > 0.99, "\(out): correlation \(c * c)")
            let s = try loadJSON(dir + "/" + out + "/top/summary.json")
            #expect(s["schedule"] as? String == schedule)
            #expect((s["rows_known"] as? Int) == (schedule == "fixed" ? 20000 : nil))
        }
    }

    @Test func catalogueListsIt() throws {
        let o = rowflow(["operators", "--json"])
        let list = try JSONSerialization.jsonObject(with: Data(o.stdout.utf8)) as! [[String: Any]]
        let top = list.first { $0["op"] as? String == "top-eigenvector" }!
        #expect((top["parameters"] as! [[String: Any]]).map { $0["name"] as! String } == ["variant", "blocks", "heavy_memory_mb"])
        #expect(top["mergeable"] as? Bool == false)
    }
}
