import EngineCore
import Foundation
import TestSupport
import Testing

/// `rowflow run --state-out` and `rowflow merge` of blobs (docs/commands.md, docs/checkpoints-and-merge.md): the blob merge equals the run
/// directory merge byte for byte and one run on the whole input to rounding; corrupt blobs, empty shards,
/// repeated shards and non-mergeable operators each get their exit code.
@Suite(.serialized) struct StateBlobEndToEndTests {
    let dir = temporaryDirectory("blob")

    func manifest(_ body: String) -> String { writeManifest(in: dir, body) }

    func f32(_ values: [Float]) -> [UInt8] { f32Bytes(values) }

    static let pipeline = """
    source: { format: f32, columns: 7, target: last }
    operators:
      - { id: g, op: gram, params: { solve: ridge, lambda: 0.5 } }
      - { id: m, op: moments }
      - { id: svd, op: truncated-svd, params: { rank: 3 } }
      - { id: core, op: sensitivity-sample, params: { epsilon: 0.5 } }
      - { id: fit, op: gram, input: core, params: { solve: ridge, lambda: 0.5 } }

    """

    /// 8 shards as blobs (one base64 line each on stdout, nothing else there; no output directory written),
    /// merged from one text file: byte-identical to merging the 8 run directories, and gram/moments within
    /// 1e-12 relative of one run on the whole input (the same float64 sums, regrouped: rounding only).
    @Test func blobsMergeLikeDirectoriesAndLikeOneRun() throws {
        let m = manifest(Self.pipeline)
        let n = 16_000, shards = 8
        let g = gaussianMatrix(rows: n, cols: 7, seed: 44, scale: [1, 2, 0.5, 1, 3, 1, 1])
        let values = (0..<(n * 7)).map { i in Float(g.storage[i] + (i % 7 == 1 ? 2 : 0)) }
        writeBytes(dir + "/all.f32", f32(values))
        #expect(rowflow(["run", m, "--input", dir + "/all.f32", "--out", dir + "/whole", "--progress", "never"]).status == 0)
        var lines: [String] = [], runs: [String] = []
        let cwd = dir + "/cwd"
        try FileManager.default.createDirectory(atPath: cwd, withIntermediateDirectories: true)
        for k in 0..<shards {
            let part = dir + "/p\(k).f32"
            writeBytes(part, f32(Array(values[(k * n / shards * 7)..<((k + 1) * n / shards * 7)])))
            let r = rowflow(["run", m, "--input", part, "--shard", "\(k)", "--state-out", "-", "--progress", "never"], cwd: cwd)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.hasSuffix("\n") && r.stdout.filter { $0 == "\n" }.count == 1 && r.stdout.hasPrefix(StateBlob.base64Prefix))
            lines.append(r.stdout)
            runs.append(dir + "/d\(k)")
            #expect(rowflow(["run", m, "--input", part, "--shard", "\(k)", "--out", runs[k], "--progress", "never"]).status == 0)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: cwd).isEmpty, "--state-out without --out writes no directory")
        writeFile(dir + "/blobs.txt", lines.joined())
        let i = rowflow(["inspect", dir + "/blobs.txt"])
        #expect(i.status == 0 && i.stdout.contains("shards: 7") && i.stdout.contains("core: sensitivity-sample"))
        #expect(rowflow(["merge", m, dir + "/blobs.txt", "--out", dir + "/mb"]).status == 0)
        #expect(rowflow(["merge", m] + runs + ["--out", dir + "/md"]).status == 0)
        for f in ["g/gram.npy", "g/xty.npy", "g/solution.npy", "m/mean.npy", "m/variance.npy", "svd/singular_values.npy",
                  "svd/right_vectors.npy", "core/rows.npy", "core/weights.npy", "core/shard.npy", "fit/solution.npy"] {
            #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/mb/" + f)) == Data(contentsOf: URL(fileURLWithPath: dir + "/md/" + f)), "\(f)")
        }
        for f in ["g/gram.npy", "g/xty.npy", "g/solution.npy", "m/mean.npy", "m/variance.npy"] {
            let err = relativeError(try loadNpy(dir + "/mb/" + f), try loadNpy(dir + "/whole/" + f))
            #expect(err < 1e-12, "\(f): \(err)")
        }
        let run = try loadJSON(dir + "/mb/run.json")
        #expect(run["rows_read"] as? Int == n && run["shards"] as? [Int] == Array(0..<shards))
        #expect(try loadJSON(dir + "/mb/fit/summary.json")["rows"] as? Int == (try loadJSON(dir + "/mb/core/summary.json"))["size"] as? Int)

        // A tree: two halves merged into blobs, then merged: gram still within rounding of the whole.
        writeFile(dir + "/lo.txt", lines[0..<4].joined())
        writeFile(dir + "/hi.txt", lines[4...].joined())
        let lo = rowflow(["merge", m, dir + "/lo.txt", "--state-out", "-"])
        #expect(lo.status == 0 && lo.stdout.hasPrefix(StateBlob.base64Prefix), "\(lo.stderr)")
        #expect(rowflow(["merge", m, dir + "/hi.txt", "--state-out", dir + "/hi.blob"]).status == 0)
        let t = rowflow(["merge", m, "-", dir + "/hi.blob", "--out", dir + "/tree"], stdin: Array(lo.stdout.utf8))
        #expect(t.status == 0, "\(t.stderr)")
        #expect(try loadJSON(dir + "/tree/run.json")["rows_read"] as? Int == n)
        for f in ["g/gram.npy", "m/variance.npy"] {
            #expect(relativeError(try loadNpy(dir + "/tree/" + f), try loadNpy(dir + "/whole/" + f)) < 1e-12, "\(f)")
        }

        // The same shard twice would double-count: refused.
        let twice = rowflow(["merge", m, dir + "/blobs.txt", dir + "/d3", "--out", dir + "/twice"])
        #expect(twice.status == 64 && twice.stderr.contains("shard 3"), "\(twice.stderr)")
    }

    /// A flipped byte in a binary blob, or a changed character in a base64 one: exit 65, one line naming
    /// the file and the checksum.
    @Test func corruptBlobIsRefused() throws {
        let m = manifest("source: { format: f32, columns: 3 }\noperators: [{ id: g, op: gram }]\n")
        writeBytes(dir + "/x.f32", f32((0..<300).map { Float($0 % 17) }))
        #expect(rowflow(["run", m, "--input", dir + "/x.f32", "--shard", "0", "--state-out", dir + "/x.blob"]).status == 0)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/x.blob")))
        #expect(rowflow(["inspect", dir + "/x.blob"]).stdout.contains("checksum OK"))
        bytes[bytes.count / 2] ^= 0x04
        writeBytes(dir + "/bad.blob", bytes)
        let r = rowflow(["merge", m, dir + "/bad.blob", "--out", dir + "/o"])
        #expect(r.status == 65, "\(r.stderr)")
        #expect(r.stderr.hasPrefix("rowflow: error: " + dir + "/bad.blob") && r.stderr.contains("checksum mismatch")
                && r.stderr.filter { $0 == "\n" }.count == 1, "\(r.stderr)")
        let line = rowflow(["run", m, "--input", dir + "/x.f32", "--shard", "0", "--state-out", "-"]).stdout
        var chars = Array(line.utf8)
        let at = chars.count / 2
        chars[at] = chars[at] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        writeBytes(dir + "/bad.txt", chars)
        let t = rowflow(["merge", m, dir + "/bad.txt", "--out", dir + "/o2"])
        #expect(t.status == 65 && t.stderr.contains("checksum mismatch"), "\(t.stderr)")
        let i = rowflow(["inspect", dir + "/bad.txt"])
        #expect(i.status == 65)
    }

    /// An empty shard is valid: with no stated shape (csv, no source.columns) and with one (f32), its blob
    /// holds no states, merge skips it and counts its rows as 0; merging only empty shards has no rows (65).
    @Test func emptyShards() throws {
        let csv = manifest("source: { format: csv, target: last }\noperators:\n  - { id: g, op: gram, params: { solve: ridge, lambda: 0 } }\n  - { id: m, op: moments }\n")
        writeFile(dir + "/empty.csv", "")
        writeFile(dir + "/rows.csv", "1,2,3\n4,5,6\n7,8,10\n2,1,1\n")
        let e = rowflow(["run", csv, "--input", dir + "/empty.csv", "--shard", "3", "--state-out", "-"])
        #expect(e.status == 0 && e.stdout.hasPrefix(StateBlob.base64Prefix), "\(e.stderr)")
        writeFile(dir + "/e.txt", e.stdout)
        #expect(rowflow(["inspect", dir + "/e.txt"]).stdout.contains("empty shard"))
        let full = rowflow(["run", csv, "--input", dir + "/rows.csv", "--shard", "0", "--state-out", dir + "/f.blob"])
        #expect(full.status == 0, "\(full.stderr)")
        #expect(rowflow(["merge", csv, dir + "/e.txt", dir + "/f.blob", "--out", dir + "/me"]).status == 0)
        #expect(rowflow(["run", csv, "--input", dir + "/rows.csv", "--out", dir + "/one"]).status == 0)
        #expect(try loadNpy(dir + "/me/g/gram.npy") == (try loadNpy(dir + "/one/g/gram.npy")))
        #expect(try loadJSON(dir + "/me/run.json")["rows_read"] as? Int == 4)
        let none = rowflow(["merge", csv, dir + "/e.txt", "--out", dir + "/mn"])
        #expect(none.status == 65 && none.stderr.contains("empty shard"), "\(none.stderr)")
        // …but two empty shards in a tree reduction merge into an empty blob covering both.
        let e2 = rowflow(["run", csv, "--input", dir + "/empty.csv", "--shard", "4", "--state-out", dir + "/e4.blob"])
        #expect(e2.status == 0)
        let pair = rowflow(["merge", csv, dir + "/e.txt", dir + "/e4.blob", "--state-out", "-"])
        #expect(pair.status == 0, "\(pair.stderr)")
        writeFile(dir + "/pair.txt", pair.stdout)
        #expect(rowflow(["inspect", dir + "/pair.txt"]).stdout.contains("shards: 3, 4"))
        // Without --shard an empty input is still "no rows".
        #expect(rowflow(["run", csv, "--input", dir + "/empty.csv", "--state-out", "-"]).status == 65)
        // Known shape (f32): also an empty blob, merged with a full one.
        let raw = manifest("source: { format: f32, columns: 2 }\noperators: [{ id: g, op: gram }]\n")
        writeBytes(dir + "/empty.f32", [])
        writeBytes(dir + "/two.f32", f32([1, 2, 3, 4]))
        #expect(rowflow(["run", raw, "--input", dir + "/empty.f32", "--shard", "1", "--state-out", dir + "/e1.blob"]).status == 0)
        #expect(rowflow(["run", raw, "--input", dir + "/two.f32", "--shard", "0", "--state-out", dir + "/t0.blob"]).status == 0)
        #expect(rowflow(["merge", raw, dir + "/e1.blob", dir + "/t0.blob", "--out", dir + "/mr"]).status == 0)
        #expect(try loadNpy(dir + "/mr/g/gram.npy") == [10, 14, 14, 20])
    }

    /// Refused before any row is read (64): a non-mergeable operator on the source, --emit-every into the
    /// blob's stdout, checkpoints with nowhere to write; a blob of another manifest's parameters at merge.
    @Test func refusals() throws {
        let top = manifest("source: { format: f32, columns: 2 }\noperators: [{ id: t, op: top-eigenvector }]\n")
        writeBytes(dir + "/two.f32", f32([1, 2, 3, 4]))
        let r = rowflow(["run", top, "--input", dir + "/two.f32", "--shard", "0", "--state-out", "-"])
        #expect(r.status == 64 && r.stdout.isEmpty && r.stderr.contains("not mergeable"), "\(r.stderr)")
        let g = manifest("source: { format: f32, columns: 2 }\noperators: [{ id: g, op: gram }]\n")
        #expect(rowflow(["run", g, "--input", dir + "/two.f32", "--state-out", "-", "--emit-every", "1"]).status == 64)
        #expect(rowflow(["run", g, "--input", dir + "/two.f32", "--state-out", "-", "--checkpoint-every", "1"]).status == 64)
        #expect(rowflow(["run", g, "--input", dir + "/two.f32", "--state-out", dir + "/e.blob", "--emit-every", "1"]).status == 64)
        #expect(rowflow(["run", g, "--input", dir + "/two.f32", "--state-out", dir + "/e.blob", "--emit-every", "1", "--out", dir + "/eo"]).status == 0)
        let both = rowflow(["run", g, "--input", dir + "/two.f32", "--shard", "2", "--state-out", dir + "/g.blob", "--out", dir + "/gout"])
        #expect(both.status == 0 && FileManager.default.fileExists(atPath: dir + "/gout/g/state.bin"))
        // Another operator under the same id is refused (lambda alone would not be: it acts only at finish).
        let g2 = manifest("source: { format: f32, columns: 2 }\noperators: [{ id: g, op: truncated-svd, params: { rank: 1 } }]\n")
        let bad = rowflow(["merge", g2, dir + "/g.blob", "--out", dir + "/x"])
        #expect(bad.status == 64 && bad.stderr.contains("operator kind 'gram'"), "\(bad.stderr)")
        let notBlob = rowflow(["merge", g, dir + "/two.f32", "--out", dir + "/y"])
        #expect(notBlob.status == 64, "\(notBlob.stderr)")
        // A shard directory whose run.json does not parse is not trusted as complete (65, naming the file);
        // its seed, written as an integer, comes back exact.
        let seeded = rowflow(["run", g, "--input", dir + "/two.f32", "--shard", "0", "--seed", "18446744073709551557", "--out", dir + "/s0"])
        #expect(seeded.status == 0, "\(seeded.stderr)")
        let merged = rowflow(["merge", g, dir + "/s0", "--out", dir + "/sm"])
        #expect(merged.status == 0, "\(merged.stderr)")
        let mergedRun = try loadJSON(dir + "/sm/run.json")
        #expect((mergedRun["seed"] as? NSNumber)?.int64Value == Int64(bitPattern: 18446744073709551557))
        writeFile(dir + "/s0/run.json", "{\"status\": \"complete\", ")
        let broken = rowflow(["merge", g, dir + "/s0", "--out", dir + "/sb"])
        #expect(broken.status == 65 && broken.stderr.contains("s0/run.json"), "\(broken.stderr)")
    }
}
