import EngineCore
import Foundation
import LinearAlgebra
import RowIO

/// A seeded matrix of standard normals (counter-based, so tests are reproducible).
public func gaussianMatrix(rows: Int, cols: Int, seed: UInt64, scale: [Double]? = nil) -> Matrix {
    let r = CounterRandom(seed: seed, shard: 0, purpose: 777)
    var m = Matrix(rows: rows, cols: cols)
    for i in 0..<rows { for j in 0..<cols { m[i, j] = r.normal(index: UInt64(i * cols + j)) * (scale?[j] ?? 1) } }
    return m
}

/// Naive float64 AᵀWA, summed row by row: the independent reference for `gram`.
public func naiveGram(_ a: Matrix, weights: [Double]? = nil) -> Matrix {
    var g = Matrix(rows: a.cols, cols: a.cols)
    for i in 0..<a.rows {
        let w = weights?[i] ?? 1
        for p in 0..<a.cols { for q in 0..<a.cols { g[p, q] += w * a[i, p] * a[i, q] } }
    }
    return g
}

/// Two-pass float64 weighted mean and population variance: the reference for `moments`.
public func twoPassMoments(_ a: Matrix, weights: [Double]? = nil) -> (mean: [Double], variance: [Double]) {
    var mean = [Double](repeating: 0, count: a.cols), wsum = 0.0
    for i in 0..<a.rows { let w = weights?[i] ?? 1; wsum += w; for j in 0..<a.cols { mean[j] += w * a[i, j] } }
    mean = mean.map { $0 / wsum }
    var v = [Double](repeating: 0, count: a.cols)
    for i in 0..<a.rows { let w = weights?[i] ?? 1; for j in 0..<a.cols { let t = a[i, j] - mean[j]; v[j] += w * t * t } }
    return (mean, v.map { $0 / wsum })
}

/// Cuts rows [start, start+n) of a matrix into batches of `batchRows`.
public func batches(_ a: Matrix, targets: [Double]? = nil, weights: [Double]? = nil, batchRows: Int,
                    start: Int = 0, count: Int? = nil) -> [RowBatch] {
    let n = count ?? (a.rows - start)
    var out: [RowBatch] = []
    var r = start
    while r < start + n {
        let b = min(batchRows, start + n - r)
        var batch = RowBatch(columns: a.cols, capacity: b, hasTarget: targets != nil, hasWeight: weights != nil)
        for i in r..<r + b {
            let s = batch.appendSlot(index: Int64(i))
            for j in 0..<a.cols { batch.features[s * a.cols + j] = a[i, j] }
            if targets != nil { batch.targets![s] = targets![i] }
            if weights != nil { batch.weights![s] = weights![i] }
        }
        out.append(batch)
        r += b
    }
    return out
}

/// max |a − b| / max |b| (relative to the reference's scale).
public func relativeError(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count, "lengths differ: \(a.count) vs \(b.count)")
    var num = 0.0, den = 0.0
    for i in 0..<a.count { num = max(num, abs(a[i] - b[i])); den = max(den, abs(b[i])) }
    return den == 0 ? num : num / den
}

/// A fresh temporary directory for one test.
public func temporaryDirectory(_ tag: String = "t") -> String {
    let p = NSTemporaryDirectory() + "rowflow-test-\(tag)-\(UUID().uuidString)"
    try! FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
    return p
}

public func writeFile(_ path: String, _ text: String) {
    try! text.write(toFile: path, atomically: true, encoding: .utf8)
}

/// A manifest file with `body` after `version: 1`, under a fresh name in `dir`; returns its path.
public func writeManifest(in dir: String, _ body: String) -> String {
    let p = dir + "/m-\(UUID().uuidString.prefix(8)).yaml"
    writeFile(p, "version: 1\n" + body)
    return p
}

/// Little-endian float32 bytes, as `source.format: f32` reads them.
public func f32Bytes(_ values: [Float]) -> [UInt8] {
    values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
}

public func writeBytes(_ path: String, _ bytes: [UInt8]) {
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
}

/// The package root (tests run from anywhere).
public let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// The rowflow binary built by `swift build` (or $ROWFLOW_BIN).
public let rowflowBinary: String = {
    if let b = ProcessInfo.processInfo.environment["ROWFLOW_BIN"] { return b }
    for c in [".build/debug/rowflow", ".build/release/rowflow"] where FileManager.default.isExecutableFile(atPath: packageRoot + "/" + c) {
        return packageRoot + "/" + c
    }
    return packageRoot + "/.build/debug/rowflow"
}()

public struct ProcessResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs a command with optional stdin bytes; returns its exit status and output.
public func runProcess(_ executable: String, _ args: [String], stdin: [UInt8]? = nil, cwd: String? = nil,
                       environment: [String: String]? = nil) -> ProcessResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    if let environment { p.environment = environment }
    let outPipe = Pipe(), errPipe = Pipe()
    p.standardOutput = outPipe
    p.standardError = errPipe
    let inPipe = Pipe()
    p.standardInput = stdin == nil ? FileHandle.nullDevice : inPipe
    try! p.run()
    if let stdin {
        DispatchQueue.global().async {
            inPipe.fileHandleForWriting.write(Data(stdin))
            try? inPipe.fileHandleForWriting.close()
        }
    }
    // Read both pipes concurrently so a chatty child cannot block on a full pipe.
    nonisolated(unsafe) var errData = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async { errData = errPipe.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    let outData = outPipe.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    return ProcessResult(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errData, as: UTF8.self))
}

public func rowflow(_ args: [String], stdin: [UInt8]? = nil, cwd: String? = nil) -> ProcessResult {
    runProcess(rowflowBinary, args, stdin: stdin, cwd: cwd)
}

/// Reads a .npy output as float64.
public func loadNpy(_ path: String) throws -> [Double] { try NpyReader.read(path).values }

/// Parses a JSON file with Foundation.
public func loadJSON(_ path: String) throws -> [String: Any] {
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    return try JSONSerialization.jsonObject(with: data) as! [String: Any]
}

public struct MeasuredResult: Sendable {
    public var status: Int32
    /// The signal that ended the process, 0 when it exited normally.
    public var signal: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs a command with posix_spawn (stdout/stderr to temporary files) and waits with wait4, so whether it
/// died by a signal is known. (Not its peak RSS: a child inherits the spawning process's high-water mark at
/// exec; rowflow reports its own as run.json's `peak_rss_kib`.)
///
/// `feed`, when given, gets the write end of a pipe that is the child's stdin, and the child's pid; it runs
/// before the wait, and the pipe is closed after it returns — so a test can hold a run in the middle of its
/// input for as long as it needs (a signal that must arrive before the end, whatever the machine's speed).
public func runMeasured(_ executable: String, _ args: [String], environment: [String: String]? = nil,
                        killAfter seconds: Double? = nil, signal sig: Int32 = SIGKILL,
                        feed: ((_ stdin: Int32, _ pid: pid_t) -> Void)? = nil) -> MeasuredResult {
    let dir = temporaryDirectory("spawn")
    let outPath = dir + "/out", errPath = dir + "/err"
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    var pipeEnds: [Int32] = [-1, -1]
    if feed != nil {
        precondition(pipe(&pipeEnds) == 0, "pipe: \(errno)")
        posix_spawn_file_actions_adddup2(&actions, pipeEnds[0], 0)
        posix_spawn_file_actions_addclose(&actions, pipeEnds[0])
        posix_spawn_file_actions_addclose(&actions, pipeEnds[1])
    } else {
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    }
    posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    defer { posix_spawn_file_actions_destroy(&actions) }
    let argv = ([executable] + args).map { strdup($0) } + [nil]
    let env = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { for p in argv { free(p) }; for p in env { free(p) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, executable, &actions, nil, argv, env)
    precondition(rc == 0, "posix_spawn \(executable): \(rc)")
    if let feed {
        close(pipeEnds[0])
        feed(pipeEnds[1], pid)
        close(pipeEnds[1])
    }
    if let seconds {
        usleep(useconds_t(seconds * 1e6))
        kill(pid, sig)
    }
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
    let exited = (status & 0x7F) == 0
    let read = { (p: String) in (try? String(contentsOfFile: p, encoding: .utf8)) ?? "" }
    return MeasuredResult(status: exited ? (status >> 8) & 0xFF : -1, signal: exited ? 0 : status & 0x7F,
                          stdout: read(outPath), stderr: read(errPath))
}

/// Rows held in memory behind the engine's row-store protocol, for driving multi-pass operators without a
/// runtime (the records are what the runtime's RowStore would give back: features, target, weight, index).
public struct MemoryRowStore: RowStoreReader {
    public let columns: Int
    public let hasTarget: Bool
    let x: Matrix
    let y: [Double]?
    let w: [Double]?
    public init(_ x: Matrix, targets: [Double]? = nil, weights: [Double]? = nil) {
        self.x = x; self.y = targets; self.w = weights
        columns = x.cols; hasTarget = targets != nil
    }
    public var count: Int { x.rows }
    public func read(_ start: Int, _ n: Int, into batch: inout RowBatch) {
        batch.reset()
        for i in start..<min(start + n, x.rows) {
            let s = batch.appendSlot(index: Int64(i))
            for j in 0..<columns { batch.features[s * columns + j] = x[i, j] }
            if batch.targets != nil { batch.targets![s] = y?[i] ?? 0 }
            if batch.weights != nil { batch.weights![s] = w?[i] ?? 1 }
        }
    }
}

/// The candidates of `rowflow gen legendre --rows n --cols m --seed seed`: x ~ U[−1, 1] by the generator's
/// counter-based draws, orthonormal Legendre features and the Runge function 1/(1 + 25x²).
public func legendreCandidates(rows n: Int, cols m: Int, seed: UInt64) -> (x: [Double], phi: Matrix, y: [Double]) {
    let r = CounterRandom(seed: seed, shard: 0, purpose: 1)
    var phi = Matrix(rows: n, cols: m)
    var xs = [Double](repeating: 0, count: n), ys = xs
    for i in 0..<n {
        let x = 2 * r.uniform(index: UInt64(i)) - 1
        xs[i] = x
        let f = Legendre.orthonormal(x, count: m)
        for j in 0..<m { phi[i, j] = f[j] }
        ys[i] = 1 / (1 + 25 * x * x)
    }
    return (xs, phi, ys)
}

/// P(χ²_k > x): the regularized upper incomplete gamma Q(k/2, x/2) — series below a + 1, Lentz's continued
/// fraction above (Numerical Recipes §6.2), accurate to ~1e-14 relative.
public func chiSquareSurvival(_ x: Double, dof k: Int) -> Double {
    let a = Double(k) / 2, z = x / 2
    if z <= 0 { return 1 }
    let lg = Foundation.lgamma(a) as Double
    if z < a + 1 {
        var sum = 1 / a, term = sum, ap = a
        for _ in 0..<10_000 {
            ap += 1; term *= z / ap; sum += term
            if abs(term) < abs(sum) * 1e-16 { break }
        }
        return max(0, 1 - sum * exp(-z + a * log(z) - lg))
    }
    let tiny = 1e-300
    var b = z + 1 - a, c = 1 / tiny, d = 1 / b, h = d
    for i in 1..<10_000 {
        let an = -Double(i) * (Double(i) - a)
        b += 2
        d = an * d + b; if abs(d) < tiny { d = tiny }
        c = b + an / c; if abs(c) < tiny { c = tiny }
        d = 1 / d
        let del = d * c
        h *= del
        if abs(del - 1) < 1e-16 { break }
    }
    return exp(-z + a * log(z) - lg) * h
}

/// The q-quantile (0 ≤ q ≤ 1) of values, numpy's default linear interpolation.
public func quantile(_ values: [Double], _ q: Double) -> Double {
    let s = values.sorted()
    guard !s.isEmpty else { return .nan }
    let h = q * Double(s.count - 1)
    let lo = Int(h.rounded(.down)), hi = min(lo + 1, s.count - 1)
    return s[lo] + (h - Double(lo)) * (s[hi] - s[lo])
}
