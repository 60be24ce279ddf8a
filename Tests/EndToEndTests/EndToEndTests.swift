import EngineCore
import Foundation
import LinearAlgebra
import RowIO
import TestSupport
import Testing

/// The `rowflow` binary driven as a user drives it. These need `swift build` first (`make test` does it).
@Suite(.serialized) struct PipelineFixtureTests {
    static let pipelines: [String] = {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: packageRoot + "/Pipelines")) ?? []
        return names.filter { $0.hasSuffix(".yaml") }.map { String($0.dropLast(5)) }.sorted()
    }()

    /// The BLAS kernels this CPU can run (nil: OpenBLAS's own choice, or rowflow's when that is generic).
    static let kernels: [String?] = {
        let flags = BLASKernel.machine.flags
        return [nil, "Prescott"] + (flags.avx2FMA ? ["Haswell"] : []) + (flags.avx512 ? ["SkylakeX"] : [])
    }()

    /// Every Pipelines/*.yaml on its Fixtures stream against the recorded outputs, under every BLAS kernel this
    /// CPU can run (OPENBLAS_CORETYPE forced, and checked in run.json's `blas_core`). Tolerance 1e-10 relative:
    /// every operator in the fixtures sums float64 products, and a kernel changes only their order — an
    /// effect of ~n·ε ≈ 1e-12 at these sizes (1.6e-14 was the largest seen across Prescott, Haswell,
    /// SkylakeX and Cooperlake). The one float32 path in them, sensitivity-sample's scores on float32 rows,
    /// uses a fixed-order kernel (`BlockKernels.trmmRightUpperFloat32`), so its keep decisions and weights
    /// do not depend on the kernel either; they could differ only if a float64 difference of ~1e-16 flipped
    /// the float32 rounding of an entry of R⁻¹ (chance ~1e-9 per entry) and that moved a keep probability
    /// across its uniform draw (chance ~1e-7 per row) — a false failure rate far below 1e-6 per run.
    @Test(arguments: pipelines, kernels)
    func replay(name: String, kernel: String?) throws {
        let fixture = packageRoot + "/Fixtures/" + name
        let input = try #require(try FileManager.default.contentsOfDirectory(atPath: fixture).first { $0.hasPrefix("input.") },
                                 "Fixtures/\(name) has no input.* stream")
        let out = temporaryDirectory("replay") + "/out"
        var env = ProcessInfo.processInfo.environment
        if let kernel { env["OPENBLAS_CORETYPE"] = kernel }
        let r = runProcess(rowflowBinary, ["run", packageRoot + "/Pipelines/\(name).yaml", "--input", fixture + "/" + input,
                                           "--out", out, "--progress", "never"], environment: env)
        #expect(r.status == 0, "\(r.stderr)")
        if let kernel {
            #expect(try loadJSON(out + "/run.json")["blas_core"] as? String == kernel, "OPENBLAS_CORETYPE=\(kernel) did not take")
        }
        let expected = fixture + "/expected"
        let ops = try FileManager.default.contentsOfDirectory(atPath: expected)
        #expect(!ops.isEmpty)
        for op in ops {
            // An operator whose arithmetic is float32 (truncated-svd precision: float32) is compared at 1e-5, the
            // size of its stated rounding margin (√k·γ₆₅ ≈ 1.6e-5 of F² at k = 16), which is what separates two
            // kernels' last bits there; everything else at 1e-10.
            let precision = (try? loadJSON(expected + "/" + op + "/summary.json"))?["precision"] as? String
            let tol = precision == "float32" ? 1e-5 : 1e-10
            for file in try FileManager.default.contentsOfDirectory(atPath: expected + "/" + op) {
                let want = expected + "/" + op + "/" + file, got = out + "/" + op + "/" + file
                if file.hasSuffix(".npy") {
                    #expect(relativeError(try loadNpy(got), try loadNpy(want)) < tol, "\(name)/\(op)/\(file)")
                } else if file == "summary.json" {
                    let a = try loadJSON(got), b = try loadJSON(want)
                    #expect(Set(a.keys) == Set(b.keys), "\(name)/\(op)/summary.json keys")
                    for (k, v) in b {
                        if let x = v as? Double, let y = a[k] as? Double {
                            #expect(abs(x - y) <= tol * max(1, abs(x)), "\(name)/\(op) \(k): \(y) vs \(x)")
                        } else if let xs = v as? [Double], let ys = a[k] as? [Double], xs.count == ys.count {
                            // Arrays of numbers (eigenvalue_bound) carry the same kernel rounding as single numbers.
                            for (x, y) in zip(xs, ys) {
                                #expect(abs(x - y) <= tol * max(1, abs(x)), "\(name)/\(op) \(k): \(ys) vs \(xs)")
                            }
                        } else {
                            #expect(canonical(a[k]!) == canonical(v), "\(name)/\(op) \(k)")
                        }
                    }
                }
            }
        }
        let run = try loadJSON(out + "/run.json")
        #expect(run["status"] as? String == "complete")
        for key in ["status", "rows_read", "rows_skipped", "rows_quarantined", "bytes_in", "seconds", "rows_per_s",
                    "manifest_sha256", "seed", "shard", "version", "resumed_from_row", "blas_core", "cpu", "warnings"] {
            #expect(run[key] != nil, "run.json lacks \(key)")
        }
    }
}

/// JSON text with sorted keys, for comparing parsed values whatever their key order.
func canonical(_ v: Any) -> String {
    guard let d = try? JSONSerialization.data(withJSONObject: [v], options: [.sortedKeys]) else { return "\(v)" }
    return String(decoding: d, as: UTF8.self)
}

@Suite(.serialized) struct CommandLineTests {
    let dir = temporaryDirectory("cli")

    func manifest(_ body: String) -> String { writeManifest(in: dir, body) }

    func f32(_ values: [Float]) -> [UInt8] { f32Bytes(values) }

    /// Every malformed input the input formats reject: its exit code (docs/errors.md) and the place named in the message.
    @Test func malformedInputsExitWithCodeAndPlace() throws {
        let csv = manifest("source: { format: csv }\noperators: [{ id: m, op: moments }]\n")
        let csv3 = manifest("source: { format: csv, columns: 3 }\noperators: [{ id: m, op: moments }]\n")
        let raw = manifest("source: { format: f32, columns: 2 }\noperators: [{ id: m, op: moments }]\n")
        let auto = manifest("operators: [{ id: m, op: moments }]\n")
        let svm = manifest("source: { format: libsvm, columns: 3 }\noperators: [{ id: m, op: moments }]\n")
        writeFile(dir + "/bad.csv", "1,2\n3,abc\n")
        writeFile(dir + "/rag.tsv", "1\t2\n3\n")
        writeFile(dir + "/two.csv", "1,2\n3,4\n")
        writeFile(dir + "/nan.csv", "1,2\n3,NaN\n")
        writeFile(dir + "/ovf.csv", "1,2\n3,1e999\n")
        writeFile(dir + "/empty.csv", "")
        writeFile(dir + "/header-only.csv", "a,b\n")
        writeBytes(dir + "/nan.f32", f32([1, 2, .infinity, 4]))
        writeBytes(dir + "/short.f32", f32([1, 2, 3]))
        writeFile(dir + "/bad.svm", "1 0:2\n")
        let dict = Array("{'descr': '>f8', 'fortran_order': False, 'shape': (1, 2), }\n".utf8)
        writeBytes(dir + "/bad.npy", [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(dict.count), 0] + dict + [UInt8](repeating: 0, count: 16))
        let sink = try ByteSink(path: dir + "/good.csv.zst", zstd: true)
        for i in 0..<20000 { try sink.write("\(i),\(i * 3)\n") }
        try sink.close()
        let z = try Data(contentsOf: URL(fileURLWithPath: dir + "/good.csv.zst"))
        try z.prefix(z.count - 100).write(to: URL(fileURLWithPath: dir + "/cut.csv.zst"))
        var corrupt = [UInt8](z)
        corrupt[corrupt.count / 2] ^= 0xFF
        writeBytes(dir + "/corrupt.csv.zst", corrupt)
        writeFile(dir + "/afile", "x")

        let cases: [(String, String, Int32, String)] = [
            (csv, "bad.csv", 65, "bad.csv:2:3: bad value"),
            (auto, "rag.tsv", 65, "rag.tsv:2:1: ragged row"),
            (csv3, "two.csv", 65, "two.csv:1:1: expected 3 fields"),
            (csv, "nan.csv", 65, "nan.csv:2:3: bad value: non-finite"),
            (csv, "ovf.csv", 65, "ovf.csv:2:3: bad value: '1e999' overflows"),
            (csv, "empty.csv", 65, "empty.csv: no rows"),
            (csv, "header-only.csv", 65, "no rows"),
            (raw, "nan.f32", 65, "nan.f32: row 2: non-finite"),
            (raw, "short.f32", 65, "short.f32: byte 8: truncated row"),
            (svm, "bad.svm", 65, "bad.svm:1:3: feature index 0"),
            (auto, "bad.npy", 65, "bad.npy: byte 10: big-endian"),
            (csv, "cut.csv.zst", 65, "truncated zstd"),
            (csv, "corrupt.csv.zst", 65, "corrupt.csv.zst: byte"),
            (csv, "missing.csv", 66, "missing.csv: cannot open input"),
        ]
        for (m, input, code, fragment) in cases {
            let r = rowflow(["run", m, "--input", dir + "/" + input, "--out", dir + "/out-err"])
            #expect(r.status == code, "\(input): exit \(r.status), \(r.stderr)")
            #expect(r.stderr.hasPrefix("rowflow: error: ") && r.stderr.contains(fragment), "\(input): \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "one line: \(r.stderr)")
            let run = try loadJSON(dir + "/out-err/run.json")
            #expect(run["status"] as? String == "failed")
        }
        // Unwritable --out (a path under a regular file), unreadable manifest (a directory), missing manifest.
        let w = rowflow(["run", csv, "--input", dir + "/two.csv", "--out", dir + "/afile/sub"])
        #expect(w.status == 74 && w.stderr.contains("afile"), "\(w.stderr)")
        #expect(rowflow(["run", dir, "--input", dir + "/two.csv"]).status == 66)
        #expect(rowflow(["validate", dir + "/nope.yaml"]).status == 66)
    }

    @Test func badRowsSkippedAndQuarantinedAreCounted() throws {
        writeFile(dir + "/mixed.csv", "1,2\n3,x\n5,6\n7\n")
        let skip = manifest("source: { on_bad_row: skip }\noperators: [{ id: m, op: moments }]\n")
        #expect(rowflow(["run", skip, "--input", dir + "/mixed.csv", "--out", dir + "/o-skip"]).status == 0)
        let run = try loadJSON(dir + "/o-skip/run.json")
        #expect(run["rows_read"] as? Int == 2 && run["rows_skipped"] as? Int == 2)
        let q = manifest("source: { on_bad_row: quarantine }\noperators: [{ id: m, op: moments }]\n")
        #expect(rowflow(["run", q, "--input", dir + "/mixed.csv", "--out", dir + "/o-q"]).status == 0)
        let text = try String(contentsOfFile: dir + "/o-q/quarantine.txt", encoding: .utf8)
        #expect(text.contains("row 2\t") && text.contains("3,x") && text.contains("row 4\t"))
        #expect(try loadJSON(dir + "/o-q/run.json")["rows_quarantined"] as? Int == 2)
        #expect(try loadNpy(dir + "/o-q/m/mean.npy") == [3, 4])
    }

    /// stdin (zstd on a pipe) gives the same bytes as the file.
    @Test func stdinEqualsFile() throws {
        let fixture = packageRoot + "/Fixtures/quickstart/input.csv.zst"
        let m = packageRoot + "/Pipelines/quickstart.yaml"
        #expect(rowflow(["run", m, "--input", fixture, "--out", dir + "/o-file"]).status == 0)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: fixture)))
        let r = rowflow(["run", m, "--out", dir + "/o-stdin"], stdin: bytes)
        #expect(r.status == 0, "\(r.stderr)")
        for f in ["ridge/solution.npy", "ridge/gram.npy", "stats/mean.npy", "stats/variance.npy"] {
            #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/o-file/" + f)) == Data(contentsOf: URL(fileURLWithPath: dir + "/o-stdin/" + f)))
        }
    }

    /// Shards run apart (`--shard k`) and merged equal one run to 1e-12 relative (docs/checkpoints-and-merge.md).
    @Test(arguments: [2, 8])
    func mergeShards(shards: Int) throws {
        let m = manifest("source: { format: f32, columns: 6, target: last }\noperators:\n  - { id: g, op: gram, params: { solve: ridge, lambda: 0.5 } }\n  - { id: m, op: moments }\n")
        let n = 24_000
        // Gaussian columns with offsets: AᵀA + λI is well conditioned (κ ≈ 10), so the solution inherits the
        // 1e-12 agreement of gram and xty instead of amplifying it.
        let g = gaussianMatrix(rows: n, cols: 6, seed: 31, scale: [1, 2, 0.5, 1, 3, 1])
        let values = (0..<(n * 6)).map { i in Float(g.storage[i] + Double(i % 6 == 2 ? 1 : 0)) }
        writeBytes(dir + "/all.f32", f32(values))
        #expect(rowflow(["run", m, "--input", dir + "/all.f32", "--out", dir + "/whole"]).status == 0)
        var runs: [String] = []
        for k in 0..<shards {
            let part = Array(values[(k * n / shards * 6)..<((k + 1) * n / shards * 6)])
            writeBytes(dir + "/p\(k).f32", f32(part))
            let out = dir + "/s\(shards)-\(k)"
            let r = rowflow(["run", m, "--input", dir + "/p\(k).f32", "--out", out, "--shard", "\(k)"])
            #expect(r.status == 0, "\(r.stderr)")
            runs.append(out)
        }
        let r = rowflow(["merge", m] + runs + ["--out", dir + "/merged\(shards)"])
        #expect(r.status == 0, "\(r.stderr)")
        for f in ["g/gram.npy", "g/xty.npy", "g/solution.npy", "m/mean.npy", "m/variance.npy"] {
            let err = relativeError(try loadNpy(dir + "/merged\(shards)/" + f), try loadNpy(dir + "/whole/" + f))
            #expect(err < 1e-12, "\(f): \(err)")
        }
        #expect(try loadJSON(dir + "/merged\(shards)/run.json")["rows_read"] as? Int == n)
        #expect(try loadJSON(dir + "/merged\(shards)/g/summary.json")["rows"] as? Int == n)
        // A parameter that shapes the state (the intercept's shifted sums) must match; one that only acts at
        // finish (lambda) may differ: the merged run then solves with the manifest's.
        let other = manifest("source: { format: f32, columns: 6, target: last }\noperators:\n  - { id: g, op: gram, params: { solve: ridge, lambda: 2, intercept: true } }\n  - { id: m, op: moments }\n")
        let bad = rowflow(["merge", other] + runs + ["--out", dir + "/merged-bad"])
        #expect(bad.status == 64 && bad.stderr.contains("different parameters"), "\(bad.stderr)")
        let relaxed = manifest("source: { format: f32, columns: 6, target: last }\noperators:\n  - { id: g, op: gram, params: { solve: ridge, lambda: 9 } }\n  - { id: m, op: moments }\n")
        let ok = rowflow(["merge", relaxed] + runs + ["--out", dir + "/merged-relaxed"])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(try loadJSON(dir + "/merged-relaxed/g/summary.json")["lambda"] as? Double == 9)
    }

    @Test func validateOperatorsInspectAndEmit() throws {
        let v = rowflow(["validate", packageRoot + "/Pipelines/quickstart.yaml"])
        #expect(v.status == 0 && v.stdout.contains("ridge (gram)"))
        let o = rowflow(["operators", "--json"])
        #expect(o.status == 0)
        let list = try JSONSerialization.jsonObject(with: Data(o.stdout.utf8)) as! [[String: Any]]
        let gram = list.first { $0["op"] as? String == "gram" }!
        #expect((gram["parameters"] as! [[String: Any]]).map { $0["name"] as! String } == ["solve", "lambda", "intercept"])
        let out = dir + "/o-inspect"
        let fixture = packageRoot + "/Fixtures/quickstart/input.csv.zst"
        let e = rowflow(["run", packageRoot + "/Pipelines/quickstart.yaml", "--input", fixture, "--out", out, "--emit-every", "2000"])
        #expect(e.status == 0 && e.stdout.split(separator: "\n").count == 4, "two emits × two operators: \(e.stdout)")
        let i = rowflow(["inspect", out])
        #expect(i.status == 0 && i.stdout.contains("ridge (gram)") && i.stdout.contains("solution: ["))
        let n = rowflow(["inspect", out + "/ridge/solution.npy"])
        #expect(n.status == 0 && n.stdout.contains("shape [8]"))
        let s = rowflow(["inspect", out + "/ridge/state.bin"])
        #expect(s.status == 0 && s.stdout.contains("checksum OK"))
    }

    /// numpy reads the outputs, also memory-mapped (needs python3 with numpy; the CI image has both, and the
    /// test says so instead of passing silently when they are missing).
    @Test func numpyLoadsOutputs() throws {
        let probe = runProcess("/usr/bin/env", ["python3", "-c", "import numpy"])
        try #require(probe.status == 0, "python3 with numpy is needed for this test")
        let out = dir + "/o-np"
        #expect(rowflow(["run", packageRoot + "/Pipelines/quickstart.yaml", "--input", packageRoot + "/Fixtures/quickstart/input.csv.zst", "--out", out]).status == 0)
        let script = """
        import numpy as np, json
        g = np.load('\(out)/ridge/gram.npy', mmap_mode='r'); s = np.load('\(out)/ridge/solution.npy')
        assert g.dtype == np.float64 and g.shape == (8, 8) and g.flags['C_CONTIGUOUS'] and np.allclose(g, g.T)
        assert s.shape == (8,) and np.allclose(np.linalg.solve(np.asarray(g) + np.eye(8), np.load('\(out)/ridge/xty.npy')), s, rtol=1e-10)
        print(json.dumps([int(b) for b in s.view(np.int64)]))
        """
        let r = runProcess("/usr/bin/env", ["python3", "-c", script])
        #expect(r.status == 0, "\(r.stderr)")
        // Bit patterns, so no decimal round trip can blur the comparison.
        let viaNumpy = (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [NSNumber]).map { $0.int64Value }
        #expect(viaNumpy == (try loadNpy(out + "/ridge/solution.npy")).map { Int64(bitPattern: $0.bitPattern) })
    }

    /// `--progress always` prints newline-terminated progress on stderr; `never` prints nothing.
    @Test func progressLines() {
        let m = packageRoot + "/Pipelines/quickstart.yaml", input = packageRoot + "/Fixtures/quickstart/input.csv.zst"
        let a = rowflow(["run", m, "--input", input, "--out", dir + "/o-p1", "--progress", "always"])
        #expect(a.status == 0 && a.stderr.contains("rows/s") && a.stderr.hasSuffix("done\n"), "\(a.stderr)")
        let n = rowflow(["run", m, "--input", input, "--out", dir + "/o-p2", "--progress", "never"])
        #expect(n.status == 0 && n.stderr.isEmpty)
        #expect(rowflow(["run", m, "--input", input, "--progress", "sometimes"]).status == 64)
    }

    /// gen is deterministic and its structure is what it claims: the ridge solution recovers β.
    @Test func genIsSeededAndRecoverable() throws {
        for _ in 0..<2 {
            #expect(rowflow(["gen", "regression", "--rows", "3000", "--cols", "4", "--seed", "9", "--noise", "0.01",
                             "--format", "npy", "--out", dir + "/g.npy", "--truth", dir + "/g.json"]).status == 0)
        }
        let a = try Data(contentsOf: URL(fileURLWithPath: dir + "/g.npy"))
        #expect(rowflow(["gen", "regression", "--rows", "3000", "--cols", "4", "--seed", "9", "--noise", "0.01",
                         "--format", "npy", "--out", dir + "/g2.npy"]).status == 0)
        #expect(a == (try Data(contentsOf: URL(fileURLWithPath: dir + "/g2.npy"))))
        let m = manifest("source: { target: last }\noperators: [{ id: r, op: gram, params: { solve: ridge } }]\n")
        #expect(rowflow(["run", m, "--input", dir + "/g.npy", "--out", dir + "/o-gen"]).status == 0)
        let beta = (try loadJSON(dir + "/g.json")["beta"] as! [Double])
        // OLS error sd ≈ noise/√n = 0.01/√3000 ≈ 1.8e-4 per coefficient; 5e-3 is > 25 sd.
        #expect(relativeError(try loadNpy(dir + "/o-gen/r/solution.npy"), beta) < 5e-3)
    }
}

/// The shell examples of README.md and docs/*.md are run as written (from the package root, with the built
/// binary on PATH), each document's in order, since later examples read what earlier ones wrote.
@Suite struct DocumentationTests {
    static let documents = ["README.md"] + ((try? FileManager.default.contentsOfDirectory(atPath: packageRoot + "/docs")) ?? [])
        .filter { $0.hasSuffix(".md") }.sorted().map { "docs/" + $0 }

    static func shellExamples(_ document: String) throws -> [String] {
        let text = try String(contentsOfFile: packageRoot + "/" + document, encoding: .utf8)
        var commands: [String] = []
        var inBlock = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("```") { inBlock = line == "```sh"; continue }
            if inBlock, line.hasPrefix("rowflow ") || line.hasPrefix("cat ") || line.hasPrefix("zstd ") { commands.append(String(line)) }
        }
        return commands
    }

    @Test func examplesRun() throws {
        let tmp = temporaryDirectory("docs")
        let bin = URL(fileURLWithPath: rowflowBinary).deletingLastPathComponent().path
        var total = 0
        for document in Self.documents {
            for c in try Self.shellExamples(document) {
                total += 1
                let cmd = c.replacingOccurrences(of: "/tmp/rowflow-", with: tmp + "/rowflow-")
                let r = runProcess("/bin/bash", ["-o", "pipefail", "-c", cmd], cwd: packageRoot,
                                   environment: ["PATH": bin + ":/usr/bin:/bin", "HOME": tmp])
                #expect(r.status == 0, "\(document): example failed: \(c)\n\(r.stderr)")
            }
        }
        // The quickstart alone has four; the docs hold the rest (commands, operators, checkpoints, merge, report).
        #expect(try Self.shellExamples("README.md").count >= 4, "README.md lost its quickstart examples")
        #expect(total >= 20, "the documents hold only \(total) runnable examples")
    }

    /// docs/operators.md documents every registered operator (`rowflow operators --json`): a section whose
    /// heading names it, mentioning each of its parameters in backticks — so the docs cannot fall behind the
    /// registry silently.
    @Test func everyOperatorAndParameterIsDocumented() throws {
        let text = try String(contentsOfFile: packageRoot + "/docs/operators.md", encoding: .utf8)
        var sections: [(heading: String, body: String)] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("## ") { sections.append((String(line), "")) } else if !sections.isEmpty { sections[sections.count - 1].body += line + "\n" }
        }
        let r = rowflow(["operators", "--json"])
        let kinds = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]])
        for k in kinds {
            let op = k["op"] as! String
            let mine = sections.filter { $0.heading.contains(op) }
            #expect(!mine.isEmpty, "docs/operators.md has no section whose heading names '\(op)'")
            let body = mine.map(\.body).joined()
            for p in k["parameters"] as! [[String: Any]] {
                let name = p["name"] as! String
                let mentioned = ["`\(name)`", "`\(name):", "`\(name) "].contains { body.contains($0) }
                #expect(mentioned, "docs/operators.md: the \(op) section does not mention parameter `\(name)`")
            }
        }
    }

    /// Every relative link in README.md and docs/ points at a file of the repository (a document that moved
    /// or was never added would leave a reader stranded).
    @Test func relativeLinksResolve() throws {
        for document in Self.documents + ["Integrations/python/README.md", "Integrations/python/SPARK.md"] {
            let text = try String(contentsOfFile: packageRoot + "/" + document, encoding: .utf8)
            let base = URL(fileURLWithPath: packageRoot + "/" + document).deletingLastPathComponent()
            var rest = Substring(text)
            while let open = rest.range(of: "](") {
                rest = rest[open.upperBound...]
                guard let close = rest.firstIndex(of: ")") else { break }
                let target = String(rest[..<close]).split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
                rest = rest[close...]
                if target.isEmpty || target.contains("://") || target.hasPrefix("mailto:") { continue }
                let path = base.appendingPathComponent(String(target)).standardized.path
                #expect(FileManager.default.fileExists(atPath: path), "\(document): link to '\(target)' does not resolve")
            }
        }
    }
}

/// Kernel selection end to end: ROWFLOW_BLAS_SIMULATE stands in for OpenBLAS's detection and for a failed
/// self-check, so both paths run on any CPU.
@Suite(.serialized) struct KernelSelectionTests {
    let dir = temporaryDirectory("kernel")

    func run(_ env: [String: String]) throws -> (blasCore: String?, stderr: String, status: Int32) {
        let m = writeManifest(in: dir, "source: { format: csv }\noperators: [{ id: m, op: moments }]\n")
        writeFile(dir + "/x.csv", "1,2\n3,4\n")
        var e = ProcessInfo.processInfo.environment
        e["OPENBLAS_CORETYPE"] = nil
        e["ROWFLOW_BLAS_CHOICE"] = nil
        for (k, v) in env { e[k] = v }
        let out = dir + "/out-\(UUID().uuidString.prefix(6))"
        let r = runProcess(rowflowBinary, ["run", m, "--input", dir + "/x.csv", "--out", out, "--progress", "never"], environment: e)
        let core = (try? loadJSON(out + "/run.json"))?["blas_core"] as? String
        return (core, r.stderr, r.status)
    }

    /// A generic detection on a capable CPU is replaced by the matching kernel, which run.json names.
    @Test func genericDetectionIsReplaced() throws {
        guard case let .select(kernel) = BLASKernel.decide(detected: "Prescott", flags: BLASKernel.machine.flags, userCoretype: nil) else {
            return   // no AVX2 on this CPU: nothing to select (the decision table is tested in BLASKernelTests)
        }
        let r = try run(["ROWFLOW_BLAS_SIMULATE": "detected=Prescott"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.blasCore == kernel)
        #expect(!r.stderr.contains("warning"))
    }

    /// A selected kernel that fails the self-check is dropped for the detected one, with one warning line.
    @Test func failedSelfCheckFallsBackAndWarnsOnce() throws {
        guard case .select = BLASKernel.decide(detected: "Prescott", flags: BLASKernel.machine.flags, userCoretype: nil) else { return }
        let r = try run(["ROWFLOW_BLAS_SIMULATE": "detected=Prescott,selfcheck=fail"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.blasCore == "Prescott")
        #expect(r.stderr.components(separatedBy: "rowflow: warning: blas:").count == 2, "\(r.stderr)")
    }

    /// The user's OPENBLAS_CORETYPE wins over any selection.
    @Test func userSettingWins() throws {
        let r = try run(["ROWFLOW_BLAS_SIMULATE": "detected=Prescott", "OPENBLAS_CORETYPE": "Prescott"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.blasCore == "Prescott")
    }

    /// `rowflow --version` names the kernel and the CPU.
    @Test func versionNamesKernelAndCPU() {
        let r = rowflow(["--version"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("blas_core: ") && r.stdout.contains("cpu: "), "\(r.stdout)")
    }
}
