import Foundation
import TestSupport
import Testing

/// The CLI with `--threads 1` (one thread decodes, parses and computes) against 1, 2 and 3 parse threads,
/// with tiny blocks so that block edges fall next to bad rows, CRLF and quoted newlines: every output byte
/// (the lock file, holding a pid, apart), the quarantine file, run.json's counters and
/// bad_by_column, and a failing run's message and exit code must be the same.
@Suite struct ParallelParseEndToEndTests {
    let dir = temporaryDirectory("parallel-e2e")

    func csv() -> String {
        var s = "a,b,note,y\n"
        var state: UInt64 = 42
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 33 }
        for i in 0..<6000 {
            let a = Double(next() % 1_000_000) / 7.0, b = Double(next() % 1000) * 1e-3 - 0.5
            var fields = ["\(a)", String(format: "%.17g", b), next() % 5 == 0 ? "\"two\nlines, \"\"q\"\"\"" : "t\(i)", "\(Double(i % 13))"]
            switch next() % 60 {
            case 0: fields[1] = "oops"
            case 1: fields[0] = ""
            case 2: fields.removeLast()
            default: break
            }
            s += fields.joined(separator: ",") + (next() % 3 == 0 ? "\r\n" : "\n")
        }
        return s + "1,2,x,3"
    }

    func files(_ root: String) -> [String: Data] {
        var out: [String: Data] = [:]
        let e = FileManager.default.enumerator(atPath: root)!
        while let f = e.nextObject() as? String {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: root + "/" + f, isDirectory: &isDir), !isDir.boolValue, f != "run.json", f != ".rowflow.lock" else { continue }
            out[f] = FileManager.default.contents(atPath: root + "/" + f)
        }
        return out
    }

    @Test func sameBytesForEveryThreadCount() throws {
        writeFile(dir + "/in.csv", csv())
        for policy in ["quarantine", "fail"] {
            let m = writeManifest(in: dir, """
                source: { target: y, select: [a, b], header: yes, batch_rows: 100, on_bad_row: \(policy) }
                operators:
                  - { id: m, op: moments }
                  - { id: g, op: gram, params: { solve: ridge, lambda: 0.5 } }
                """)
            var env = ProcessInfo.processInfo.environment
            env["OPENBLAS_NUM_THREADS"] = "1"
            func run(_ tag: String, _ extra: [String: String], _ args: [String] = []) -> (ProcessResult, String) {
                var e = env
                for (k, v) in extra { e[k] = v }
                let out = dir + "/o-\(policy)-\(tag)"
                let r = runProcess(rowflowBinary, ["run", m, "--input", dir + "/in.csv", "--out", out, "--progress", "never"] + args, environment: e)
                return (r, out)
            }
            let (r0, o0) = run("t1", [:], ["--threads", "1"])
            let runs = [run("p1", ["ROWFLOW_PARSE_THREADS": "1", "ROWFLOW_PARSE_BLOCK_BYTES": "700"]),
                        run("p3", ["ROWFLOW_PARSE_THREADS": "3", "ROWFLOW_PARSE_BLOCK_BYTES": "301"]),
                        run("p2", ["ROWFLOW_PARSE_THREADS": "2"])]
            if policy == "fail" {
                #expect(r0.status == 65 && r0.stderr.contains("in.csv:"), "\(r0.stderr)")
            } else {
                #expect(r0.status == 0, "\(r0.stderr)")
                let j = try loadJSON(o0 + "/run.json")
                #expect((j["rows_quarantined"] as? Int ?? 0) > 50 && j["bad_by_column"] != nil)
            }
            let ref = files(o0)
            #expect(policy == "fail" || ref.keys.contains("quarantine.txt"))
            for (r, o) in runs {
                #expect(r.status == r0.status && r.stderr == r0.stderr, "\(r.stderr) vs \(r0.stderr)")
                #expect(files(o) == ref, "\(o)")
                let a = try loadJSON(o0 + "/run.json"), b = try loadJSON(o + "/run.json")
                for key in ["rows_read", "rows_skipped", "rows_quarantined", "status", "error", "exit_code"] {
                    #expect("\(a[key] ?? "-")" == "\(b[key] ?? "-")", "\(key)")
                }
                // As parsed (order-free), and as written: run.json lists the columns in column order either way.
                #expect(a["bad_by_column"] as? [String: Int] == b["bad_by_column"] as? [String: Int])
                func badByColumnText(_ dir: String) throws -> Substring {
                    let text = try String(contentsOfFile: dir + "/run.json", encoding: .utf8)
                    guard let s = text.range(of: "\"bad_by_column\"") else { return "" }
                    return text[s.lowerBound...].prefix { $0 != "}" }
                }
                #expect(try badByColumnText(o0) == badByColumnText(o))
            }
        }
    }
}
