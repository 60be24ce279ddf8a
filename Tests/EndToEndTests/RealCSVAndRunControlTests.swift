import EngineCore
import Foundation
import TestSupport
import Testing

/// Columns by name, hostile headers and cells, warnings, partial failure, the output lock and signals in
/// multi-pass runs — each error with its exit code and a message naming the place.
@Suite(.serialized) struct RealCSVAndRunControlTests {
    let dir = temporaryDirectory("realcsv")

    func manifest(_ body: String) -> String { writeManifest(in: dir, body) }

    /// `rowflow run m --input - --out out` with stdin a pipe this test holds open (the run waits on it).
    func runOnOpenPipe(_ m: String, out: String) throws -> (Process, Pipe, Pipe) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: rowflowBinary)
        p.arguments = ["run", m, "--input", "-", "--out", out, "--progress", "never"]
        let stdin = Pipe(), err = Pipe()
        p.standardInput = stdin
        p.standardError = err
        try p.run()
        return (p, stdin, err)
    }
    func run(_ m: String, _ input: String, _ extra: [String] = []) -> (ProcessResult, String) {
        let out = dir + "/out-\(UUID().uuidString.prefix(8))"
        return (rowflow(["run", m, "--input", input, "--out", out, "--progress", "never"] + extra), out)
    }

    /// A header with a BOM, spaces, quotes (with an escaped quote and a comma), non-ASCII and a duplicate name;
    /// text, dates, a quoted field with a newline, a quote mid-field and text after a closing quote in unselected
    /// columns: the named columns are found, the
    /// rest is only delimited, and the results equal those of a clean numeric file with the same numbers.
    @Test func hostileHeaderAndTextColumns() throws {
        let text = "\u{FEFF}id,\" total price \",\"a \"\"quoted\"\", name\",Größe (m²),note,note,when\r\n"
            + "1, 10.5 ,2,3.25,\"two\nlines\",x,2024-01-02T03:04:05Z\r\n"
            + "2,20,4,1.5,\"a, b\",y,2024-01-03\r\n"
            + "3,31,6,0.75,12\" pipe, \"q, r\"x,\r\n"   // a quote mid-field is a byte; blank, quoted, then text
        writeFile(dir + "/hostile.csv", text)
        writeFile(dir + "/clean.csv", "10.5,2,3.25\n20,4,1.5\n31,6,0.75\n")
        let named = manifest("""
            source: { format: csv, target: " total price ", select: ["a \\"quoted\\", name", "Größe (m²)"] }
            operators: [{ id: g, op: gram, params: { solve: least-squares } }, { id: m, op: moments }]
            """)
        let plain = manifest("source: { format: csv, target: first }\noperators: [{ id: g, op: gram, params: { solve: least-squares } }, { id: m, op: moments }]\n")
        let (a, outA) = run(named, dir + "/hostile.csv")
        let (b, outB) = run(plain, dir + "/clean.csv")
        #expect(a.status == 0, "\(a.stderr)")
        #expect(b.status == 0, "\(b.stderr)")
        for f in ["g/solution.npy", "g/gram.npy", "m/mean.npy", "m/variance.npy"] {
            #expect(try loadNpy(outA + "/" + f) == loadNpy(outB + "/" + f), "\(f)")
        }
        #expect(try loadJSON(outA + "/g/summary.json")["feature_names"] as? [String] == ["a \"quoted\", name", "Größe (m²)"])
        // The same file without its last line end: the last record (with its quotes) ends at the input's end.
        writeFile(dir + "/nolf.csv", String(text.dropLast()))   // CR LF is one Character in Swift
        let (n, outN) = run(named, dir + "/nolf.csv")
        #expect(n.status == 0, "\(n.stderr)")
        #expect(try loadNpy(outN + "/m/mean.npy") == loadNpy(outA + "/m/mean.npy"))
        // The file's 4th record starts on line 5 (the quoted newline took a line): a bad cell there says so.
        writeFile(dir + "/bad.csv", text + "4,x,8,1,n,n,d\r\n")
        let (c, _) = run(named, dir + "/bad.csv")
        #expect(c.status == 65)
        #expect(c.stderr.contains("bad.csv:6:3:") && c.stderr.contains("' total price '"), "\(c.stderr)")
        // A duplicated header name used by name is refused; the same column by index is fine.
        let dup = manifest("source: { format: csv, target: first, select: [note] }\noperators: [{ id: m, op: moments }]\n")
        let (d, _) = run(dup, dir + "/hostile.csv")
        #expect(d.status == 65 && d.stderr.contains("2 columns 'note'"), "\(d.stderr)")
    }

    /// A selected column that is sometimes text: with on_bad_row: skip those rows go, counted under that column;
    /// a missing cell and NA likewise; unselected text never counts.
    @Test func sometimesTextColumnIsCountedPerColumn() throws {
        writeFile(dir + "/mixed.csv", "name,x,y,z\na,1,2,3\nb,n/a,2,3\nc,1,,3\nd,1,2,NA\ne,4,5,6\nf,oops,5,6\n")
        let m = manifest("source: { format: csv, target: z, select: [x, y], on_bad_row: skip }\noperators: [{ id: m, op: moments }]\n")
        let (r, out) = run(m, dir + "/mixed.csv")
        #expect(r.status == 0, "\(r.stderr)")
        let run = try loadJSON(out + "/run.json")
        #expect(run["rows_skipped"] as? Int == 4)
        #expect(canonical(run["bad_by_column"] ?? [:]) == canonical(["x": 2, "y": 1, "z": 1]))
        #expect(try loadNpy(out + "/m/mean.npy") == [2.5, 3.5])
    }

    /// Every new error: exit code and a one-line message naming the place.
    @Test func newErrorsNameThePlace() throws {
        writeFile(dir + "/h.csv", "price,area,rooms\n1,2,3\n4,5,6\n")
        writeFile(dir + "/nohead.csv", "1,2,3\n4,5,6\n")
        let cases: [(String, String, Int32, [String])] = [
            ("source: { target: prise }\noperators: [{ id: m, op: moments }]\n", "h.csv", 65, [".yaml:2:", "did you mean 'price'"]),
            ("source: { target: price, select: [aera] }\noperators: [{ id: m, op: moments }]\n", "h.csv", 65, ["did you mean 'area'"]),
            ("source: { target: price, select: [price] }\noperators: [{ id: m, op: moments }]\n", "h.csv", 65, ["is the target column"]),
            ("source: { target: price }\noperators: [{ id: m, op: moments }]\n", "nohead.csv", 65, ["looks like data, not a header"]),
            ("source: { format: f64, columns: 3, target: price }\noperators: [{ id: m, op: moments }]\n", "h.csv", 65, ["no header"]),
            ("source: { format: csv, names: [a, b] }\noperators: [{ id: m, op: moments }]\n", "nohead.csv", 64, ["source.names lists 2 names"]),
        ]
        for (body, input, code, fragments) in cases {
            let (r, _) = run(manifest(body), dir + "/" + input)
            #expect(r.status == code, "\(body): \(r.stderr)")
            #expect(r.stderr.hasPrefix("rowflow: error: ") && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
            for f in fragments { #expect(r.stderr.contains(f), "\(body): \(r.stderr)") }
        }
        // validate: integer columns against a declared columns, before any data.
        let v = rowflow(["validate", manifest("source: { format: f32, columns: 4, target: 1, select: [3] }\noperators: [{ id: m, op: moments }]\n")])
        #expect(v.status == 64 && v.stderr.contains("source.select names feature 3") && v.stderr.contains(":2:"), "\(v.stderr)")
        let g = rowflow(["validate", manifest("source: { format: f32, columns: 4 }\noperators: [{ id: t, op: truncated-svd, params: { rank: 1, group: 4, epsilon: 0.1 } }]\n")])
        #expect(g.status == 64 && g.stderr.contains("params.group is feature column 4"), "\(g.stderr)")
        // --checkpoint-every must be positive.
        let (ce, _) = run(manifest("operators: [{ id: m, op: moments }]\n"), dir + "/nohead.csv", ["--checkpoint-every", "0"])
        #expect(ce.status == 64 && ce.stderr.contains("--checkpoint-every"), "\(ce.stderr)")
    }

    /// source.names gives raw rows names: the same results as the header would.
    @Test func sourceNamesForRawRows() throws {
        let values: [Float] = [1, 2, 3, 4, 5, 7, 7, 8, 10]
        writeBytes(dir + "/x.f32", f32Bytes(values))
        writeFile(dir + "/x.csv", "a,b,y\n1,2,3\n4,5,7\n7,8,10\n")
        let raw = manifest("source: { format: f32, columns: 3, names: [a, b, y], target: y, select: [b] }\noperators: [{ id: m, op: moments }]\n")
        let csv = manifest("source: { format: csv, target: y, select: [b] }\noperators: [{ id: m, op: moments }]\n")
        let (r1, o1) = run(raw, dir + "/x.f32"), (r2, o2) = run(csv, dir + "/x.csv")
        #expect(r1.status == 0 && r2.status == 0, "\(r1.stderr)\(r2.stderr)")
        #expect(try loadNpy(o1 + "/m/mean.npy") == loadNpy(o2 + "/m/mean.npy"))
        #expect(try loadJSON(o1 + "/m/summary.json")["feature_names"] as? [String] == ["b"])
    }

    /// A rank-deficient least-squares solve warns (stderr line and run.json), and the report page shows it.
    @Test func rankDeficiencyIsAWarning() throws {
        writeFile(dir + "/col.csv", "a,b,c,y\n1,2,3,1\n2,1,3,2\n3,5,8,2\n4,4,8,5\n5,0,5,3\n")
        let m = manifest("source: { target: y }\noperators: [{ id: ls, op: gram, params: { solve: least-squares, intercept: true } }]\n")
        let (r, out) = run(m, dir + "/col.csv")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("rowflow: warning: ls: rank-deficient least squares: rank 2 of 3"), "\(r.stderr)")
        let w = try loadJSON(out + "/run.json")["warnings"] as? [[String: Any]]
        #expect(w?.count == 1 && w?[0]["id"] as? String == "ls")
        #expect(rowflow(["report", out]).status == 0)
        let html = try String(contentsOfFile: out + "/report.html", encoding: .utf8)
        #expect(html.contains("data-warnings=\"1\"") && html.contains("rank-deficient"))
    }

    /// One operator failing at finish (an intercept where every weight is 0) does not take the others down:
    /// they are written, run.json says failed with failed_operators, the exit code is the failure's, and the
    /// failed operator's state.bin is kept — merging it with another shard's finishes it without re-reading,
    /// under a manifest whose finish-only parameters changed (ridge → least-squares).
    @Test func partialFailureKeepsTheOthersAndTheState() throws {
        writeFile(dir + "/zero.csv", "x1,x2,y,w\n1,2,3,0\n2,1,1,0\n3,5,2,0\n")
        writeFile(dir + "/good.csv", "x1,x2,y,w\n1,1,2,1\n2,3,1,2\n4,1,5,1\n5,2,2,1\n")
        let body = "source: { target: y, weight: w }\noperators: [{ id: m, op: moments }, { id: r, op: gram, params: { solve: ridge, lambda: 1, intercept: true } }]\n"
        let m = manifest(body)
        let out0 = dir + "/shard0", out1 = dir + "/shard1"
        let a = rowflow(["run", m, "--input", dir + "/zero.csv", "--out", out0, "--shard", "0"])
        #expect(a.status == 65 && a.stderr.contains("operator 'r' failed"), "\(a.stderr)")
        #expect(a.stderr.contains("operator 'r' failed: ") && !a.stderr.contains("failed: rowflow: error"), "\(a.stderr)")
        let run = try loadJSON(out0 + "/run.json")
        #expect(run["status"] as? String == "failed")
        #expect((run["failed_operators"] as? [String: Any])?["r"] != nil)
        #expect(FileManager.default.fileExists(atPath: out0 + "/m/mean.npy"))
        #expect(FileManager.default.fileExists(atPath: out0 + "/r/state.bin") && !FileManager.default.fileExists(atPath: out0 + "/r/solution.npy"))
        // The failed shard's directory merges with a good shard under a manifest whose finish-only parameters
        // changed (ridge → least-squares): its gram state comes from the kept state.bin, the input is not read.
        #expect(rowflow(["run", m, "--input", dir + "/good.csv", "--out", out1, "--shard", "1"]).status == 0)
        let fixed = manifest(body.replacingOccurrences(of: "solve: ridge, lambda: 1", with: "solve: least-squares"))
        let merged = dir + "/merged", ref = dir + "/ref"
        let mr = rowflow(["merge", fixed, out0, out1, "--out", merged])
        #expect(mr.status == 0, "\(mr.stderr)")
        // Reference: the good rows alone under the fixed manifest (zero-weight rows add nothing; the shard's
        // other shift changes only rounding: κ²·u of a κ ≈ 10 problem, 1e-12 asked).
        #expect(rowflow(["run", fixed, "--input", dir + "/good.csv", "--out", ref]).status == 0)
        #expect(relativeError(try loadNpy(merged + "/r/solution.npy"), try loadNpy(ref + "/r/solution.npy")) < 1e-12)
        // Other state-shaping parameters must still match.
        let other = manifest(body.replacingOccurrences(of: "intercept: true", with: "intercept: false"))
        #expect(rowflow(["merge", other, out0, out1, "--out", dir + "/merged2"]).status == 64)
    }

    /// One writer per --out: a second run on a directory held by a live run exits 73 naming its pid; once the
    /// holder is killed the directory is free.
    /// A writer killed mid-write leaves `<name>.tmp-<pid>`; the next run in that directory (holding its lock)
    /// removes such files in the directory, its operator folders and their subfolders, and nothing else.
    @Test func staleTemporariesOfAKilledWriterAreRemoved() throws {
        let m = manifest("source: { format: csv }\noperators: [{ id: m, op: moments }]\n")
        writeFile(dir + "/x.csv", "1,2\n3,4\n")
        let out = dir + "/stale"
        try FileManager.default.createDirectory(atPath: out + "/m/current", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: out + "/checkpoints", withIntermediateDirectories: true)
        let stale = ["run.json.tmp-4242", "m/state.bin.tmp-17", "m/current/mean.npy.tmp-9", "checkpoints/ckpt-3.bin.tmp-123"]
        let kept = ["m/notes.tmp-draft", "user.tmp"]
        for f in stale + kept { writeFile(out + "/" + f, "x") }
        let r = rowflow(["run", m, "--input", dir + "/x.csv", "--out", out, "--progress", "never"])
        #expect(r.status == 0, "\(r.stderr)")
        for f in stale { #expect(!FileManager.default.fileExists(atPath: out + "/" + f), "\(f) left behind") }
        for f in kept { #expect(FileManager.default.fileExists(atPath: out + "/" + f), "\(f) removed") }
    }

    @Test func secondWriterIsRefusedWhileTheFirstLives() throws {
        let m = manifest("source: { format: csv, columns: 2 }\noperators: [{ id: m, op: moments }]\n")
        let out = dir + "/locked"
        writeFile(dir + "/x.csv", "1,2\n3,4\n")
        let (p, stdin, _) = try runOnOpenPipe(m, out: out)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        try withExtendedLifetime(stdin) {   // the open pipe keeps the first run waiting, and holding the lock
            // Wait until the first run has taken the lock (run.json says running).
            var waited = 0
            while (try? loadJSON(out + "/run.json"))?["status"] as? String != "running" && waited < 200 { usleep(50_000); waited += 1 }
            let second = rowflow(["run", m, "--input", dir + "/x.csv", "--out", out])
            #expect(second.status == 73, "\(second.stderr)")
            #expect(second.stderr.contains("pid \(p.processIdentifier)"), "\(second.stderr)")
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        let third = rowflow(["run", m, "--input", dir + "/x.csv", "--out", out])
        #expect(third.status == 0, "\(third.stderr)")
    }

    /// SIGINT in a multi-pass run without checkpoint settings (its row store lives in memory): exit 130,
    /// run.json interrupted, no checkpoint. The input is a pipe that stays open, so the signal always arrives
    /// during the run.
    @Test func sigintInMultiPassRunWithoutCheckpoints() throws {
        let m = manifest("source: { format: csv, columns: 3, target: last }\noperators: [{ id: s, op: halpern-solver, params: { problem: ridge, lambda: 1 } }]\n")
        let out = dir + "/sigint"
        let (p, stdin, err) = try runOnOpenPipe(m, out: out)
        stdin.fileHandleForWriting.write(Data(String(repeating: "1,2,3\n4,5,6\n", count: 20_000).utf8))
        var waited = 0
        while ((try? loadJSON(out + "/run.json"))?["rows_read"] as? Int ?? 0) == 0 && waited < 10 { usleep(100_000); waited += 1 }
        usleep(300_000)
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus == 130, "\(stderr)")
        #expect(try loadJSON(out + "/run.json")["status"] as? String == "interrupted")
        #expect(!FileManager.default.fileExists(atPath: out + "/checkpoints") || ((try? FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints")) ?? []).isEmpty)
    }

    /// inspect reads a checkpoint; --resume with another --shard is refused; an empty shard with --out and no
    /// source.columns writes a valid empty result.
    @Test func inspectResumeShardAndEmptyShard() throws {
        writeFile(dir + "/rows.csv", (0..<3000).map { "\($0 % 7),\($0 % 5)" }.joined(separator: "\n") + "\n")
        let m = manifest("source: { batch_rows: 500 }\noperators: [{ id: m, op: moments }]\ncheckpoint: { every_rows: 1000 }\n")
        let out = dir + "/ck"
        #expect(rowflow(["run", m, "--input", dir + "/rows.csv", "--out", out, "--shard", "2"]).status == 0)
        let ck = try FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints").sorted().last!
        let i = rowflow(["inspect", out + "/checkpoints/" + ck])
        #expect(i.status == 0 && i.stdout.contains("rowflow checkpoint") && i.stdout.contains("shard: 2"), "\(i.stdout)\(i.stderr)")
        let r = rowflow(["run", m, "--input", dir + "/rows.csv", "--out", out, "--shard", "3", "--resume"])
        #expect(r.status == 64 && r.stderr.contains("checkpoint is of shard 2"), "\(r.stderr)")
        writeFile(dir + "/empty.csv", "")
        let e = rowflow(["run", manifest("operators: [{ id: m, op: moments }]\n"), "--input", dir + "/empty.csv", "--out", dir + "/empty", "--shard", "0"])
        #expect(e.status == 0, "\(e.stderr)")
        #expect(try loadJSON(dir + "/empty/run.json")["status"] as? String == "complete")
    }
}
