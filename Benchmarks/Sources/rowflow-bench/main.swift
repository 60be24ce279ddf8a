// rowflow-bench: runs each case's contenders as child processes and prints a markdown section for RESULTS.md.
// Run from Benchmarks/ (the Makefile does). Environment: ROWFLOW_BIN (default ../.build/release/rowflow),
// PYTHON (default .venv/bin/python, else python3).
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Options and environment

struct Options {
    var only: Set<String> = []
    var rows: Int?
    var runs = 3
    var appendResults = false
    var svdRows = 200_000
    var solverRows = 100_000
    var dppRows = [10_000, 100_000, 1_000_000]
}

let caseNames = ["ingest-f32", "csv-parse", "rss-flat", "svd", "pca", "top-eig", "coreset", "solver", "dpp"]

let usageText = """
    usage: rowflow-bench [--only NAME[,NAME]] [--rows N] [--svd-rows N] [--solver-rows N] [--dpp-rows N[,N]] [--runs K] [--append-results]
      cases: \(caseNames.joined(separator: ", "))
      --rows N          rows of each case's main input (default 1000000; rss-flat and coreset also run N/10)
      --svd-rows N      rows × 256 of the svd and top-eig input (default 200000)
      --solver-rows N   rows × 64 (+ target) of the solver input (default 100000)
      --dpp-rows N[,N]  candidate counts of the dpp case (default 1e4,1e5,1e6)
      --runs K          runs per contender; the median is reported (default 3)
      --append-results  also append the printed section to HISTORY.md and record its goals (goals.py)
    """

func log(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

func fail(_ s: String) -> Never {
    log("rowflow-bench: " + s)
    exit(1)
}

func parseOptions(_ args: [String]) -> Options {
    var o = Options()
    var i = 0
    func value() -> String {
        i += 1
        guard i < args.count else { fail("\(args[i - 1]) needs a value") }
        return args[i]
    }
    // Accepts 1e6 as well as 1000000: row counts are easier to read that way.
    func count(_ s: String) -> Int {
        guard let d = Double(s), d >= 1, d == d.rounded() else { fail("not a positive count: \(s)") }
        return Int(d)
    }
    while i < args.count {
        switch args[i] {
        case "--only":
            for n in value().split(separator: ",").map(String.init) {
                guard caseNames.contains(n) else { fail("unknown case \(n); cases: \(caseNames.joined(separator: ", "))") }
                o.only.insert(n)
            }
        case "--rows": o.rows = count(value())
        case "--runs": o.runs = count(value())
        case "--svd-rows": o.svdRows = count(value())
        case "--solver-rows": o.solverRows = count(value())
        case "--dpp-rows": o.dppRows = value().split(separator: ",").map { count(String($0)) }
        case "--append-results": o.appendResults = true
        case "-h", "--help":
            print(usageText)
            exit(0)
        default: fail("unknown argument \(args[i])\n\(usageText)")
        }
        i += 1
    }
    return o
}

struct BenchEnv {
    let dir: String  // Benchmarks/
    let bin: String
    let python: String
    var data: String { dir + "/data" }

    static func detect() -> BenchEnv {
        let fm = FileManager.default
        let dir = fm.currentDirectoryPath
        guard fm.fileExists(atPath: dir + "/peers") else { fail("run me from Benchmarks/ (no peers/ in \(dir))") }
        let env = ProcessInfo.processInfo.environment
        var bin = env["ROWFLOW_BIN"] ?? "../.build/release/rowflow"
        if !bin.hasPrefix("/") { bin = dir + "/" + bin }
        bin = URL(fileURLWithPath: bin).standardizedFileURL.path
        guard fm.isExecutableFile(atPath: bin) else {
            fail("no rowflow binary at \(bin): build it (make build at the repo root) or set ROWFLOW_BIN")
        }
        let venv = dir + "/.venv/bin/python"
        let python = env["PYTHON"] ?? (fm.isExecutableFile(atPath: venv) ? venv : "python3")
        try? fm.createDirectory(atPath: dir + "/data/out", withIntermediateDirectories: true)
        return BenchEnv(dir: dir, bin: bin, python: python)
    }
}

// MARK: - Child processes

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ s: String) { description = s }
}

struct Run {
    let seconds: Double
    let cpuSeconds: Double
    let maxRSSKiB: Int
    let stdout: String
}

/// GNU time, the one way here to get a child's true peak RSS: a child's ru_maxrss starts at the high-water mark
/// of the process that spawned it (exec records the old address space's, which for posix_spawn is the
/// harness's own, ~20 MiB), so the measured command must be forked by a small process. GNU time is that
/// process (~1.5 MiB); it reports its child's wait4 ru_maxrss. Without it, RSS falls back to our own wait4 and
/// the report says the figures are upper bounds.
let gnuTime = FileManager.default.isExecutableFile(atPath: "/usr/bin/time") ? "/usr/bin/time" : nil

/// Spawns argv (PATH lookup), waits with wait4 and returns wall time, CPU time and peak RSS. wait4 rather than
/// Foundation's Process: its rusage is this one child's (with its waited-for children, so `sh -c` wrappers
/// are covered), where getrusage(RUSAGE_CHILDREN) would lump all children together.
func spawn(_ command: [String], stdout outPath: String, stderr errPath: String) throws -> Run {
    let rssPath = NSTemporaryDirectory() + "/rowflow-bench-\(getpid()).rss"
    defer { unlink(rssPath) }
    let argv = gnuTime.map { [$0, "-f", "%M", "-o", rssPath] + command } ?? command
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    let cArgs = argv.map { strdup($0) } + [nil]
    let cEnv = ProcessInfo.processInfo.environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { (cArgs + cEnv).forEach { free($0) } }

    var pid: pid_t = 0
    var start = timespec(), end = timespec()
    clock_gettime(CLOCK_MONOTONIC, &start)
    let rc = posix_spawnp(&pid, argv[0], &actions, nil, cArgs, cEnv)
    guard rc == 0 else { throw BenchError("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
    let name = command[0]
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
    clock_gettime(CLOCK_MONOTONIC, &end)

    let signal = status & 0x7f, code = (status >> 8) & 0xff
    guard signal == 0 && code == 0 else {
        let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        let tail = err.split(separator: "\n").suffix(3).joined(separator: " | ")
        throw BenchError("\(name) " + (signal != 0 ? "killed by signal \(signal)" : "exited \(code)") + ": " + tail)
    }
    let seconds = Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
    let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
    let cpu = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
        + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    let timed = gnuTime == nil ? nil : (try? String(contentsOfFile: rssPath, encoding: .utf8))
        .flatMap { $0.split(separator: "\n").last.flatMap { Int($0) } }
    return Run(seconds: seconds, cpuSeconds: cpu, maxRSSKiB: timed ?? Int(usage.ru_maxrss), stdout: out)
}

/// A short command whose output is wanted and whose cost is not (uname, date, versions).
func capture(_ argv: [String]) -> String {
    let p = Process(), pipe = Pipe()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = argv
    p.standardOutput = pipe
    p.standardError = FileHandle.nullDevice
    guard (try? p.run()) != nil else { return "?" }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

/// Busy CPU-seconds of the whole machine so far (/proc/stat): with the children's own CPU time subtracted, it
/// tells how much other processes ran during a case, the noise the brief warns about (occasional compiles).
func machineBusySeconds() -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
          let cpu = stat.split(separator: "\n").first else { return .nan }
    let ticks = cpu.split(separator: " ").dropFirst().compactMap { Double($0) }
    guard ticks.count >= 5 else { return .nan }
    // Fields: user nice system idle iowait irq softirq steal ...; USER_HZ is 100 on Linux.
    return (ticks.reduce(0, +) - ticks[3] - ticks[4]) / 100
}

// MARK: - Data

/// Generated inputs are cached in data/ by name, so repeated runs only pay for generation once.
/// With `truth`, rowflow's known structure (sigma, v1, v2 or beta) goes to `truthPath(path)` as well.
func dataFile(_ env: BenchEnv, kind: String, rows: Int, cols: Int, format: String, zstd: Bool,
              truth: Bool = false, offset: Double = 0) -> String {
    let path = "\(env.data)/\(kind)\(offset != 0 ? "-offset\(offset)" : "")-\(rows)x\(cols)-s1.\(format)" + (zstd ? ".zst" : "")
    let fm = FileManager.default
    if fm.fileExists(atPath: path) && (!truth || fm.fileExists(atPath: truthPath(path))) { return path }
    log("generating \(path)")
    // Written under a temporary name so an interrupted generation never leaves a truncated input behind.
    let tmp = path + ".partial"
    var argv = [env.bin, "gen", kind, "--rows", "\(rows)", "--cols", "\(cols)", "--seed", "1", "--format", format]
    if zstd { argv.append("--zstd") }
    if offset != 0 { argv += ["--offset", "\(offset)"] }
    if truth { argv += ["--truth", truthPath(path)] }
    try? fm.removeItem(atPath: path)
    do {
        _ = try spawn(argv + ["--out", tmp], stdout: "/dev/null", stderr: env.data + "/gen.stderr")
        try FileManager.default.moveItem(atPath: tmp, toPath: path)
    } catch { fail("generating \(path): \(error)") }
    return path
}

func truthPath(_ data: String) -> String { data + ".truth.json" }

func fileBytes(_ path: String) -> Int {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
}

/// Reads a 1-D little-endian float64 .npy (what rowflow writes for means).
func readNpyF64(_ path: String) -> [Double]? {
    guard let d = FileManager.default.contents(atPath: path), d.count > 10 else { return nil }
    let headerLen = Int(d[8]) | Int(d[9]) << 8
    guard String(decoding: d[10..<(10 + headerLen)], as: UTF8.self).contains("'<f8'") else { return nil }
    let body = d[(10 + headerLen)...]
    return stride(from: body.startIndex, to: body.endIndex, by: 8).map { i in
        Double(bitPattern: body[i..<(i + 8)].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * $1.offset) })
    }
}

// MARK: - Contenders and measurement

struct Contender {
    let name: String
    let argv: [String]
    let input: String
    let outDir: String?  // rowflow's --out: its run.json gives in-process seconds and rows read
    var maxRuns: Int? = nil  // a slow contender runs fewer times than the case's --runs (the report says so)

    static func rowflow(_ env: BenchEnv, _ name: String, manifest: String, input: String, out: String,
                        extra: [String] = []) -> Contender {
        let outDir = env.data + "/out/" + out
        return Contender(name: name, argv: [env.bin, "run", env.dir + "/manifests/" + manifest, "--input", input,
                                            "--out", outDir, "--progress", "never"] + extra,
                         input: input, outDir: outDir)
    }

    /// `args` replaces the default single argument (the input path).
    static func peer(_ env: BenchEnv, _ name: String, script: String, input: String, args: [String]? = nil,
                     maxRuns: Int? = nil) -> Contender {
        Contender(name: name, argv: [env.python, env.dir + "/peers/" + script] + (args ?? [input]), input: input,
                  outDir: nil, maxRuns: maxRuns)
    }
}

struct Result {
    let contender: Contender
    var runs: [Run] = []
    var inProcess: [Double] = []  // what the contender itself timed (no process start, no imports)
    var rows: Int?
    var means: [Double]?
    var version: String?
    var error: String?
    var json: [String: Any]?  // the last run's peer JSON or rowflow run.json; the operator cases add scores to it
    var jsons: [[String: Any]] = []  // every run's

    var ok: Bool { error == nil && !runs.isEmpty }
    var wall: Double { median(runs.map(\.seconds)) }
    var rssMiB: Double { median(runs.map { Double($0.maxRSSKiB) }) / 1024 }
    var mb: Double { Double(fileBytes(contender.input)) / 1e6 }
    var mbPerSecond: Double { mb / wall }
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    guard !s.isEmpty else { return .nan }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Runs round-robin (run 1 of every contender, then run 2, ...) so that a burst of background load spreads
/// over all contenders instead of landing on one of them.
func measure(_ env: BenchEnv, _ contenders: [Contender], runs: Int) -> (results: [Result], background: String) {
    var results = contenders.map { Result(contender: $0) }
    // Every input once through the page cache first: the cases measure parsing and compute, not the disk.
    for input in Set(contenders.map(\.input)) {
        _ = try? spawn(["cat", input], stdout: "/dev/null", stderr: "/dev/null")
    }
    let busyBefore = machineBusySeconds()
    var start = timespec(), end = timespec()
    clock_gettime(CLOCK_MONOTONIC, &start)
    for r in 1...runs {
        for i in results.indices where results[i].error == nil && r <= (results[i].contender.maxRuns ?? runs) {
            let c = results[i].contender
            log("  run \(r)/\(runs): \(c.name)")
            if let out = c.outDir { try? FileManager.default.removeItem(atPath: out) }
            do {
                let run = try spawn(c.argv, stdout: env.data + "/child.stdout", stderr: env.data + "/child.stderr")
                results[i].runs.append(run)
                let json: [String: Any]?
                if let out = c.outDir {
                    json = FileManager.default.contents(atPath: out + "/run.json")
                        .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
                    results[i].rows = json?["rows_read"] as? Int
                    results[i].means = readNpyF64(out + "/m/mean.npy")
                } else {
                    json = try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
                    results[i].rows = json?["rows"] as? Int
                    results[i].means = json?["means"] as? [Double]
                    results[i].version = json?["version"] as? String
                }
                if let s = json?["seconds"] as? Double { results[i].inProcess.append(s) }
                results[i].json = json
                if let json { results[i].jsons.append(json) }
            } catch {
                results[i].error = "\(error)"
                log("  failed: \(error)")
            }
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &end)
    let elapsed = Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
    let other = machineBusySeconds() - busyBefore - results.flatMap(\.runs).map(\.cpuSeconds).reduce(0, +)
    let background = "Background load: other processes used \(f(max(other, 0), 1)) CPU-s during this case's "
        + "\(f(elapsed, 1)) s of runs (\(f(max(other, 0) / elapsed * 100, 0))% of one CPU)."
    return (results, background)
}

// MARK: - Report

func f(_ x: Double, _ digits: Int = 3) -> String { x.isFinite ? String(format: "%.\(digits)f", x) : "—" }

/// One markdown table per case; `ratio` fills the last column, the case's comparison of interest.
func table(_ results: [Result], ratioHeader: String, ratio: (Result) -> Double) -> String {
    var lines = [
        "| contender | rows | input MB | wall s (median) | wall min–max | MB/s | in-process s | peak RSS MiB | \(ratioHeader) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results {
        guard r.ok else {
            lines.append("| \(r.contender.name) | failed: \(r.error ?? "no run") | | | | | | | |")
            continue
        }
        let secs = r.runs.map(\.seconds)
        lines.append("| \(r.contender.name) | \(r.rows.map(String.init) ?? "—") | \(f(r.mb, 1)) | \(f(r.wall)) | "
            + "\(f(secs.min()!))–\(f(secs.max()!)) | \(f(r.mbPerSecond, 1)) | "
            + "\(r.inProcess.isEmpty ? "—" : f(median(r.inProcess))) | \(f(r.rssMiB, 1)) | \(f(ratio(r), 2)) |")
    }
    return lines.joined(separator: "\n")
}

func verdict(_ met: Bool) -> String { met ? "**met**" : "**not met**" }

/// The goals a section's text checked: lines `Goal <goal>: <verdict> (<figure>)…` (as `verdict` writes them).
func goalLines(_ text: String) -> [(goal: String, figure: String, met: String)] {
    text.split(separator: "\n").compactMap { line -> (String, String, String)? in
        guard line.hasPrefix("Goal "), let colon = line.range(of: ": ") else { return nil }
        let goal = String(line[line.index(line.startIndex, offsetBy: 5)..<colon.lowerBound])
        let rest = line[colon.upperBound...]
        let met = rest.hasPrefix("**met**") ? "yes" : rest.hasPrefix("**not met**") ? "no" : "—"
        var figure = ""
        if let open = rest.firstIndex(of: "("), let close = rest.lastIndex(of: ")"), open < close {
            figure = String(rest[rest.index(after: open)..<close])
        } else {
            figure = String(rest.prefix(60))
        }
        return (goal, figure, met)
    }
}

struct Section {
    let name: String
    let text: String
    var versions: [String] = []
    /// The input size the case ran at ("10⁶ rows"): part of each goal's id in the ledger, because a goal met
    /// at 10⁶ rows and the same goal at 2·10⁵ (where process start weighs more) are different measurements.
    var scale = ""
}

/// 1000000 → "10⁶", 200000 → "2·10⁵", 12345 → "12345".
func powerOfTen(_ n: Int) -> String {
    let superscript: [Character] = ["⁰", "¹", "²", "³", "⁴", "⁵", "⁶", "⁷", "⁸", "⁹"]
    var m = n, e = 0
    while m >= 10, m % 10 == 0 { m /= 10; e += 1 }
    guard e >= 2, m < 10 else { return String(n) }
    let power = "10" + String(String(e).map { superscript[$0.wholeNumberValue!] })
    return m == 1 ? power : "\(m)·" + power
}

func ingestF32(_ env: BenchEnv, rows: Int, runs: Int) -> Section {
    let zst = dataFile(env, kind: "spectrum", rows: rows, cols: 64, format: "f32", zstd: true)
    let raw = dataFile(env, kind: "spectrum", rows: rows, cols: 64, format: "f32", zstd: false)
    let m = "f32x64-moments-gram.yaml"
    let (results, background) = measure(env, [
        // exec: the floor is zstd itself, not a shell waiting on it.
        Contender(name: "zstd -d -c > /dev/null (floor)", argv: ["sh", "-c", "exec zstd -d -c \"$0\" > /dev/null", zst],
                  input: zst, outDir: nil),
        .rowflow(env, "rowflow moments+gram", manifest: m, input: zst, out: "ingest"),
        .rowflow(env, "rowflow moments+gram --threads 1", manifest: m, input: zst, out: "ingest-t1", extra: ["--threads", "1"]),
        .rowflow(env, "rowflow moments+gram, uncompressed input (info)", manifest: m, input: raw, out: "ingest-raw"),
    ], runs: runs)
    let floor = results[0], rf = results[1]
    var text = """
        \(rows) rows × 64 float32, zstd-compressed. The floor only decompresses; rowflow decompresses, decodes \
        and computes moments and the Gram matrix (default 2 threads: decode overlapped with compute). The last \
        row reads the same rows uncompressed, to show rowflow's cost without zstd.

        \(table(results, ratioHeader: "wall ÷ floor") { $0.wall / floor.wall })

        """
    if floor.ok && rf.ok {
        let ratio = rf.wall / floor.wall
        text += "\nGoal rowflow ÷ floor ≤ 1.3: \(verdict(ratio <= 1.3)) (\(f(ratio, 2)))."
    } else {
        text += "\nGoal rowflow ÷ floor ≤ 1.3: not measured (a contender failed)."
    }
    text += "\n\n" + background
    return Section(name: "ingest-f32", text: text)
}

func csvParse(_ env: BenchEnv, rows: Int, runs: Int) -> Section {
    let csv = dataFile(env, kind: "regression", rows: rows, cols: 15, format: "csv", zstd: false)
    let (results, background) = measure(env, [
        .rowflow(env, "rowflow moments", manifest: "csv-moments.yaml", input: csv, out: "csv"),
        .rowflow(env, "rowflow moments --threads 1", manifest: "csv-moments.yaml", input: csv, out: "csv-t1",
                 extra: ["--threads", "1"]),
        .peer(env, "pyarrow.csv.read_csv (use_threads=False) + means", script: "pyarrow_csv.py", input: csv),
        .peer(env, "numpy.loadtxt + means", script: "numpy_loadtxt.py", input: csv),
    ], runs: runs)
    let rf = results[0]
    var text = """
        \(rows) rows × 16 float columns of CSV text (uncompressed). Every contender parses the whole file and \
        computes the column means; all of them, numpy.loadtxt included, read the full file. MB/s is text bytes \
        over wall time, which includes process start (and, for the peers, Python's start and imports); \
        in-process s is what each contender timed itself (rowflow's run.json, the peers' perf_counter around \
        load + means).

        \(table(results, ratioHeader: "rowflow MB/s ÷ this") { rf.mbPerSecond / $0.mbPerSecond })

        """
    for peer in results[2...] {
        guard rf.ok && peer.ok else {
            text += "\nGoal rowflow faster than \(peer.contender.name): not measured (a contender failed)."
            continue
        }
        let wallRatio = rf.mbPerSecond / peer.mbPerSecond
        let inRatio = median(peer.inProcess) / median(rf.inProcess)
        // Run-to-run spread here is several percent, so a margin under 5% is no win either way.
        let outcome = abs(wallRatio - 1) < 0.05 ? "**tie** (within ±5%)" : verdict(wallRatio > 1)
        text += "\nGoal rowflow faster than \(peer.contender.name): \(outcome) "
            + "(wall-time throughput ×\(f(wallRatio, 2)); in-process ×\(f(inRatio, 2)))."
    }
    // Comparable work: the means must agree, or a contender parsed something else.
    if let ref = rf.means {
        for peer in results[2...] where peer.ok {
            guard let m = peer.means, m.count == ref.count else {
                text += "\n\nWarning: \(peer.contender.name) returned \(peer.means?.count ?? 0) means, rowflow \(ref.count)."
                continue
            }
            let worst = zip(m, ref).map { abs($0 - $1) / (1 + abs($1)) }.max() ?? 0
            if worst > 1e-9 { text += "\n\nWarning: \(peer.contender.name)'s means differ from rowflow's by \(worst)." }
        }
        text += "\n\nColumn means checked against rowflow's m/mean.npy (relative 1e-9)."
    }
    text += "\n\n" + background
    return Section(name: "csv-parse", text: text, versions: results.compactMap(\.version))
}

func rssFlat(_ env: BenchEnv, rows: Int, runs: Int) -> Section {
    let small = max(rows / 10, 1)
    let contenders = [small, rows].map { n in
        Contender.rowflow(env, "rowflow moments+gram, \(n) rows", manifest: "f32x64-moments-gram.yaml",
                          input: dataFile(env, kind: "spectrum", rows: n, cols: 64, format: "f32", zstd: true),
                          out: "rss-\(n)")
    }
    let (results, background) = measure(env, contenders, runs: runs)
    var text = """
        rowflow moments+gram on zstd float32 inputs of \(small) and \(rows) rows × 64: a streaming engine's peak \
        RSS should not grow with the number of rows.

        \(table(results, ratioHeader: "RSS ÷ smaller input's") { $0.rssMiB / results[0].rssMiB })

        """
    if results.allSatisfy(\.ok) {
        let ratio = results[1].rssMiB / results[0].rssMiB
        text += "\nGoal peak RSS within 10% over 10× the rows: \(verdict(ratio <= 1.10)) (\(f(ratio, 2)))."
    } else {
        text += "\nGoal peak RSS within 10%: not measured (a run failed)."
    }
    text += "\n\n" + background
    return Section(name: "rss-flat", text: text)
}

// MARK: - Main

let options = parseOptions(Array(CommandLine.arguments.dropFirst()))
let env = BenchEnv.detect()
let rows = options.rows ?? 1_000_000
let selected = caseNames.filter { options.only.isEmpty || options.only.contains($0) }
let dateAtStart = capture(["date"])
// Other sessions may rebuild the binary while the cases run: its identity at start and end goes in the report.
func binaryStamp() -> String { capture(["sh", "-c", "stat -c %y \"$0\" | cut -c1-19; sha256sum \"$0\" | cut -c1-12", env.bin]) }
let binaryAtStart = binaryStamp()
let loadAtStart = ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?")
    .split(separator: " ").prefix(3).joined(separator: " ")

var sections: [Section] = []
for name in selected {
    log("== \(name)")
    let big = powerOfTen(rows) + " rows", svd = powerOfTen(options.svdRows) + " rows"
    var section: Section
    switch name {
    case "ingest-f32": section = ingestF32(env, rows: rows, runs: options.runs); section.scale = big
    case "csv-parse": section = csvParse(env, rows: rows, runs: options.runs); section.scale = big
    case "svd": section = svdCase(env, rows: options.svdRows, runs: options.runs); section.scale = svd
    case "pca": section = pcaCase(env, rows: options.svdRows, runs: options.runs); section.scale = svd
    case "top-eig": section = topEig(env, rows: options.svdRows, runs: options.runs); section.scale = svd
    case "coreset": section = coreset(env, rows: rows, runs: options.runs); section.scale = big
    case "solver": section = solver(env, rows: options.solverRows, runs: options.runs); section.scale = powerOfTen(options.solverRows) + " rows"
    case "dpp": section = dppCase(env, sizes: options.dppRows, runs: options.runs); section.scale = "N = " + options.dppRows.map(powerOfTen).joined(separator: ", ")
    default: section = rssFlat(env, rows: rows, runs: options.runs); section.scale = big
    }
    sections.append(section)
}

let cpuModel = ((try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "")
    .split(separator: "\n").first { $0.hasPrefix("model name") }
    .map { $0.split(separator: ":", maxSplits: 1).last!.trimmingCharacters(in: .whitespaces) } ?? "?"
let loadAtEnd = ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?")
    .split(separator: " ").prefix(3).joined(separator: " ")
let allVersions = Set(sections.flatMap(\.versions))
// A peer's version string may be a prefix of another's (numpy, zstandard ⊂ numpy, zstandard, scikit-learn).
let versions = allVersions.filter { v in !allVersions.contains { $0 != v && $0.hasPrefix(v) } }.sorted()
let binaryAtEnd = binaryStamp()
let binaryLine = binaryAtStart == binaryAtEnd
    ? "binary built \(binaryAtStart.replacingOccurrences(of: "\n", with: ", sha256 "))…"
    : "**the binary changed during the run** (\(binaryAtStart.replacingOccurrences(of: "\n", with: " ")) at start, "
        + "\(binaryAtEnd.replacingOccurrences(of: "\n", with: " ")) at end): figures mix two builds"
var report = """
    ## \(dateAtStart)

    - machine: \(capture(["uname", "-m"])), \(capture(["nproc"])) CPUs, \(cpuModel); load average \
    \(loadAtStart) at start, \(loadAtEnd) at end
    - rowflow \(capture([env.bin, "--version"])) (\(env.bin); \(binaryLine))\
    \(versions.isEmpty ? "" : "; peers: " + capture([env.python, "--version"]) + ", " + versions.joined(separator: ", "))
    - each figure is the median of \(options.runs) runs, taken round-robin across a case's contenders; wall time \
    includes process start; \(gnuTime != nil ? "peak RSS is the child's ru_maxrss from wait4 in GNU time (`/usr/bin/time -f %M`), which forks it" : "peak RSS is wait4's ru_maxrss, an upper bound: it includes the harness's own ~20 MiB (GNU time is missing)"); MB = 10⁶ bytes of the input file

    """
for s in sections { report += "\n### \(s.name)\n\n\(s.text)\n" }
print(report)

if options.appendResults {
    // The section goes to the log (HISTORY.md); each goal it checked goes to the ledger (goals.jsonl), from
    // which goals.py regenerates the current table at the top of RESULTS.md.
    let path = env.dir + "/HISTORY.md"
    if !FileManager.default.fileExists(atPath: path) {
        _ = FileManager.default.createFile(atPath: path, contents: Data("# rowflow benchmark history\n".utf8))
    }
    guard let h = FileHandle(forWritingAtPath: path) else { fail("cannot open \(path)") }
    h.seekToEndOfFile()
    h.write(Data(("\n" + report).utf8))
    h.closeFile()
    log("appended to \(path)")
    for s in sections {
        for g in goalLines(s.text) {
            let id = "\(s.name) (\(s.scale)): \(g.goal)"
            _ = capture(["python3", env.dir + "/goals.py", "record", "--id", id, "--goal", id,
                         "--figure", g.figure, "--met", g.met, "--rowflow", env.bin])
        }
    }
    _ = capture(["python3", env.dir + "/goals.py", "table"])
    log("goals recorded; RESULTS.md's table regenerated")
}
