import EngineCore
import FuzzHarness
import Foundation
import TestSupport
import Testing

/// Fixtures/hostile: every case answered with its documented exit code and a one-line message naming the
/// place — no crash, no signal, memory bounded — and the accepted variants equal to plain LF.
@Suite(.serialized) struct HostileInputTests {
    struct Case: Sendable, CustomStringConvertible {
        var input, manifest: String
        var code: Int32
        var fragment, why: String
        var description: String { "\(input) with \(manifest): \(why)" }
    }

    static let cases: [Case] = {
        let text = (try? String(contentsOfFile: packageRoot + "/Fixtures/hostile/cases.tsv", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { line in
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            return Case(input: f[0], manifest: f[1], code: Int32(f[2])!, fragment: f[3], why: f[4])
        }
    }()

    /// 256 MiB: the engine's buffers are a few MiB; a decoder that buffered a 4 GiB bomb or a 10 MB line
    /// (× copies) would blow through it.
    static let rssLimitKiB = 256 * 1024

    @Test func corpusIsLargeEnough() { #expect(Self.cases.count >= 30) }

    @Test(arguments: cases)
    func answered(c: Case) throws {
        let dir = packageRoot + "/Fixtures/hostile"
        let out = temporaryDirectory("hostile") + "/out"
        let r = runMeasured(rowflowBinary, ["run", dir + "/manifests/" + c.manifest, "--input", dir + "/" + c.input, "--out", out])
        #expect(r.signal == 0, "killed by signal \(r.signal)")
        #expect(r.status == c.code, "exit \(r.status): \(r.stderr)")
        // The process's own peak (run.json's VmHWM): wait4's ru_maxrss would include the test process's size,
        // which a spawned child inherits at exec. Manifest errors stop before run.json and read no data.
        if let run = try? loadJSON(out + "/run.json"), let kib = run["peak_rss_kib"] as? Int {
            #expect(kib < Self.rssLimitKiB, "peak RSS \(kib) KiB")
        } else {
            #expect(c.manifest != "csv3.yaml" && c.manifest != "auto.yaml", "no run.json for a data case")
        }
        if c.code != 0 {
            let lines = r.stderr.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].hasPrefix("rowflow: error: ") && r.stderr.contains(c.fragment), "\(r.stderr)")
        } else {
            // Accepted variants: the same outputs as plain LF.
            let ref = temporaryDirectory("hostile-ref") + "/out"
            #expect(runMeasured(rowflowBinary, ["run", dir + "/manifests/" + c.manifest, "--input", dir + "/plain.csv", "--out", ref]).status == 0)
            for f in ["m/mean.npy", "m/variance.npy", "g/gram.npy"] {
                #expect(FileManager.default.contents(atPath: out + "/" + f) == FileManager.default.contents(atPath: ref + "/" + f), "\(f)")
            }
        }
    }
}

/// Checkpoints and resume through the binary (docs/checkpoints-and-merge.md).
@Suite(.serialized) struct CheckpointTests {
    let dir = temporaryDirectory("ckpt")
    /// The operators under test: every example every registered operator declares (`rowflow operators --json`,
    /// so a new operator is covered by declaring its examples), and a ridge `gram` reading each sampler's rows.
    static func operatorLines() -> [String] {
        let r = rowflow(["operators", "--json"])
        precondition(r.status == 0, r.stderr)
        guard let kinds = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]] else {
            preconditionFailure("rowflow operators --json is not a JSON array")
        }
        var lines: [String] = []
        for k in kinds {
            let op = k["op"] as! String
            for e in k["examples"] as! [[String: Any]] {
                let name = e["name"] as! String
                let params = try! JSONSerialization.data(withJSONObject: e["params"] as! [String: Any], options: [.sortedKeys])
                lines.append("  - { id: \(name), op: \(op), params: \(String(decoding: params, as: UTF8.self)) }")
                if k["emits_rows"] as? Bool == true {
                    lines.append("  - { id: \(name)-ridge, op: gram, input: \(name), params: { solve: ridge, lambda: 0.5 } }")
                }
            }
        }
        return lines
    }

    /// A pipeline with every operator's examples (see `operatorLines`) — multi-pass ones make the row store
    /// durable and add steps after the stream — bad rows quarantined, checkpoints every 3000 rows (batches of
    /// 1000), on 150,000 rows of CSV whose column 0 holds group ids (for grouped examples).
    func setUp() -> (manifest: String, input: String, reference: String) {
        let input = dir + "/in.csv"
        if !FileManager.default.fileExists(atPath: input) {
            var text = ""
            let g = gaussianMatrix(rows: 150_000, cols: 9, seed: 41)
            for i in 0..<g.rows {
                text += i % 9973 == 5 ? "oops\n" : "\(i % 5)," + (1..<9).map { "\(g[i, $0])" }.joined(separator: ",") + "\n"
            }
            writeFile(input, text)
        }
        let manifest = dir + "/m.yaml"
        writeFile(manifest, """
        version: 1
        source: { target: last, batch_rows: 1000, on_bad_row: quarantine }
        operators:
        \(Self.operatorLines().joined(separator: "\n"))
        checkpoint: { every_rows: 3000, keep: 2 }
        """)
        let reference = dir + "/reference"
        if !FileManager.default.fileExists(atPath: reference + "/run.json") {
            let r = runMeasured(rowflowBinary, ["run", manifest, "--input", input, "--out", reference])
            precondition(r.status == 0, r.stderr)
        }
        return (manifest, input, reference)
    }

    /// Every output file of the reference run (run.json, checkpoints, the row store and the lock aside) is in
    /// `b` with the same bytes, and `b` has no others.
    func sameOutputs(_ a: String, _ b: String) -> Bool {
        func files(_ root: String) -> Set<String> {
            let all = (FileManager.default.enumerator(atPath: root)?.allObjects as? [String]) ?? []
            return Set(all.filter { p in
                var dir: ObjCBool = false
                FileManager.default.fileExists(atPath: root + "/" + p, isDirectory: &dir)
                return !dir.boolValue && p != "run.json" && p != ".rowflow.lock" && !p.hasPrefix("checkpoints") && !p.hasPrefix("rowstore")
            })
        }
        let fa = files(a)
        guard !fa.isEmpty, fa == files(b) else { return false }
        return fa.allSatisfy { FileManager.default.contents(atPath: a + "/" + $0) == FileManager.default.contents(atPath: b + "/" + $0) }
    }

    /// SIGKILL at 24 seeded random moments, each resumed (twice over when the resume is killed too): every
    /// output file byte-identical to the uninterrupted run, and run.json never `complete` after a kill.
    @Test func sigkillAnywhereThenResumeIsByteIdentical() throws {
        let (manifest, input, reference) = setUp()
        let t0 = Date()
        _ = runMeasured(rowflowBinary, ["run", manifest, "--input", input, "--out", dir + "/timing"])
        let full = Date().timeIntervalSince(t0)
        let rng = CounterRandom(seed: 2026, shard: 0, purpose: 1)
        for k in 0..<24 {
            let out = dir + "/kill\(k)"
            let at = rng.uniform(index: UInt64(k)) * full
            let first = runMeasured(rowflowBinary, ["run", manifest, "--input", input, "--out", out], killAfter: at)
            if first.signal == SIGKILL {
                let run = try loadJSON(out + "/run.json")
                #expect(run["status"] as? String != "complete", "killed run claims completion")
            }
            var resumed = runMeasured(rowflowBinary, ["run", manifest, "--input", input, "--out", out, "--resume"],
                                      killAfter: k % 4 == 0 ? at / 2 : nil)
            if resumed.signal != 0 {
                resumed = runMeasured(rowflowBinary, ["run", manifest, "--input", input, "--out", out, "--resume"])
            }
            #expect(resumed.status == 0, "kill \(k) at \(at) s: \(resumed.stderr)")
            #expect(sameOutputs(out, reference), "kill \(k) at \(at) s: outputs differ")
            #expect(try loadJSON(out + "/run.json")["status"] as? String == "complete")
        }
    }

    /// SIGINT and SIGTERM: checkpoint, exit 130 / 143, run.json `interrupted`, a resume hint; then resume.
    /// The run reads stdin from a pipe that holds only the first 40% of the rows until the signal is sent
    /// (after its first checkpoint appears), so the signal always lands mid-stream, on any machine.
    @Test(arguments: [(SIGINT, Int32(130)), (SIGTERM, Int32(143))])
    func signalWritesCheckpointAndExits(sig: Int32, code: Int32) throws {
        let (manifest, input, reference) = setUp()
        let out = dir + "/sig\(sig)"
        try? FileManager.default.removeItem(atPath: out)
        let bytes = [UInt8](FileManager.default.contents(atPath: input)!)
        var cut = bytes.count * 2 / 5
        while bytes[cut - 1] != UInt8(ascii: "\n") { cut += 1 }
        signal(SIGPIPE, SIG_IGN)
        var sawCheckpoint = false
        let r = runMeasured(rowflowBinary, ["run", manifest, "--input", "-", "--out", out], feed: { fd, pid in
            var written = 0
            while written < cut {
                let n = bytes[written..<cut].withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
                if n <= 0 { return }
                written += n
            }
            for _ in 0..<1200 {   // up to 120 s for the first checkpoint on a loaded machine
                let names = (try? FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints")) ?? []
                if names.contains(where: { $0.hasSuffix(".bin") }) { sawCheckpoint = true; break }
                usleep(100_000)
            }
            kill(pid, sig)
            // Keep the pipe open (no end of input) until the run has recorded the interruption.
            for _ in 0..<600 where (try? loadJSON(out + "/run.json"))?["status"] as? String != "interrupted" { usleep(100_000) }
        })
        #expect(sawCheckpoint, "no checkpoint appeared while the first 40% of the rows were read")
        #expect(r.status == code, "\(r.stderr)")
        #expect(r.stderr.contains("--resume"))
        #expect(try loadJSON(out + "/run.json")["status"] as? String == "interrupted")
        let again = runMeasured(rowflowBinary, ["run", manifest, "--input", input, "--out", out, "--resume"])
        #expect(again.status == 0 && sameOutputs(out, reference), "\(again.stderr)")
        #expect((try loadJSON(out + "/run.json")["resumed_from_row"] as? Int ?? 0) > 0)
    }

    /// Damaged checkpoints: each its own error on stderr, the previous good one used; 65 when none is usable;
    /// another manifest's checkpoints refused with 64; no checkpoint at all starts at row 0 and says so.
    @Test func damagedCheckpointsFallBack() throws {
        let (manifest, input, reference) = setUp()
        let out = dir + "/damaged"
        // A complete run leaves its newest two checkpoints behind: damage those and resume (deterministic —
        // no race with a kill on a loaded machine).
        try? FileManager.default.removeItem(atPath: out)
        try FileManager.default.copyItem(atPath: reference, toPath: out)
        let ck = out + "/checkpoints"
        let names = try FileManager.default.contentsOfDirectory(atPath: ck).sorted()
        try #require(names.count == 2, "the reference run should leave keep = 2 checkpoints: \(names)")
        let newest = ck + "/" + names[1], older = ck + "/" + names[0]
        let good = FileManager.default.contents(atPath: newest)!, oldGood = FileManager.default.contents(atPath: older)!
        func resume() -> MeasuredResult { runMeasured(rowflowBinary, ["run", manifest, "--input", input, "--out", out, "--resume"]) }
        func damage(_ f: (inout [UInt8]) -> Void) { var b = [UInt8](good); f(&b); FileManager.default.createFile(atPath: newest, contents: Data(b)) }
        let variants: [(String, (inout [UInt8]) -> Void)] = [
            ("checksum mismatch", { $0[$0.count / 2] ^= 0x10 }),
            ("checksum mismatch", { $0.removeLast($0.count / 3) }),
            ("format version 7", { $0[8] = 7 }),
            ("bad magic", { $0[0] = 0x41 }),
        ]
        for (fragment, f) in variants {
            FileManager.default.createFile(atPath: older, contents: oldGood)
            damage(f)
            let res = resume()
            #expect(res.status == 0 && res.stderr.contains(fragment) && res.stderr.contains("trying the previous checkpoint"), "\(res.stderr)")
            #expect(sameOutputs(out, reference))
            // The run completed and its checkpoints were replaced: put the pair back for the next variant.
            try? FileManager.default.removeItem(atPath: ck)
            try FileManager.default.createDirectory(atPath: ck, withIntermediateDirectories: true)
        }
        // Both corrupt → 65.
        FileManager.default.createFile(atPath: older, contents: Data([1, 2, 3]))
        damage { $0[20] ^= 1 }
        #expect(resume().status == 65)
        // Another manifest's checkpoint → 64.
        FileManager.default.createFile(atPath: older, contents: oldGood)
        FileManager.default.createFile(atPath: newest, contents: good)
        let other = dir + "/other.yaml"
        writeFile(other, try String(contentsOfFile: manifest, encoding: .utf8).replacingOccurrences(of: "lambda: 0.5", with: "lambda: 0.6"))
        let o = runMeasured(rowflowBinary, ["run", other, "--input", input, "--out", out, "--resume"])
        #expect(o.status == 64 && o.stderr.contains("different manifest"), "\(o.stderr)")
        // A different input → 64 (fingerprint).
        writeFile(dir + "/other.csv", try String(contentsOfFile: input, encoding: .utf8).replacingOccurrences(of: "1", with: "2"))
        let d = runMeasured(rowflowBinary, ["run", manifest, "--input", dir + "/other.csv", "--out", out, "--resume"])
        #expect(d.status == 64 && d.stderr.contains("input differs"), "\(d.stderr)")
        // No checkpoint: start at row 0, say so.
        try? FileManager.default.removeItem(atPath: ck)
        let z = resume()
        #expect(z.status == 0 && z.stderr.contains("starting at row 0") && sameOutputs(out, reference))
    }

    /// Resume from stdin: the consumed rows are skipped on the re-read pipe.
    @Test func resumeFromStdin() throws {
        let (manifest, input, reference) = setUp()
        let out = dir + "/stdin"
        let sh = "/bin/sh"
        _ = reference
        // Quarantine lines name "<stdin>", so the reference is an uninterrupted stdin run.
        let stdinReference = dir + "/stdin-reference"
        #expect(runMeasured(sh, ["-c", "exec \(rowflowBinary) run \(manifest) --out \(stdinReference) < \(input)"]).status == 0)
        _ = runMeasured(sh, ["-c", "exec \(rowflowBinary) run \(manifest) --out \(out) < \(input)"], killAfter: 0.3)
        let r = runMeasured(sh, ["-c", "exec \(rowflowBinary) run \(manifest) --out \(out) --resume < \(input)"])
        #expect(r.status == 0 && sameOutputs(out, stdinReference), "\(r.stderr)")
    }
}

/// The fuzz corpus — seeds and every input that ever crashed a decoder (Fixtures/fuzz/<target>/) — replayed
/// in-process through the same harness libFuzzer drives (`make fuzz`): no crash and no trap, and each file
/// still gets the answer it was made for (a valid seed that started to be refused would stop the fuzzer
/// from reaching past the decoder's first check; a hostile one that started to be accepted is a bug).
@Suite struct FuzzRegressionTests {
    /// What each corpus file must give: accepted (decoded to its end, parsed, restored and finished) or not.
    /// A new file needs an entry here.
    static let accepted: [String: Bool] = [
        "checkpoint/seed": true, "checkpoint/seed-v2-shuffle": true,
        "libsvm/seed": true,
        "manifest/seed-bomb": false, "manifest/seed-quickstart": true,
        "npy/seed-bigendian": false, "npy/seed-valid": true,
        // gram and truncated-svd seeds are state version 1, which this build no longer reads.
        "state/seed-dpp": true, "state/seed-gram": false, "state/seed-moments": true, "state/seed-svd": false,
        "state/seed-svd-incremental": false,
        "text/seed-csv": true, "text/seed-ragged": false, "text/seed-tsv": true,
        "zstd/regression-oom-wide-row": false, "zstd/seed": true,
    ]

    @Test(arguments: FuzzHarness.targets)
    func corpusReplays(target: String) throws {
        let dir = packageRoot + "/Fixtures/fuzz/" + target
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(!files.isEmpty, "no seed for \(target)")
        for f in files {
            let bytes = [UInt8](FileManager.default.contents(atPath: dir + "/" + f)!)
            let expected = Self.accepted[target + "/" + f]
            #expect(expected != nil, "Fixtures/fuzz/\(target)/\(f) has no expected outcome in FuzzRegressionTests.accepted")
            let got = FuzzHarness.run(target, bytes)
            if let expected { #expect(got == expected, "Fixtures/fuzz/\(target)/\(f): accepted \(got), expected \(expected)") }
            // Every truncation of a seed too: decoders meet cut-off input most often.
            for cut in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 64)) { FuzzHarness.run(target, Array(bytes.prefix(cut))) }
        }
    }
}
