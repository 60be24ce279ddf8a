import EngineCore
import LinearAlgebra
import Manifest
import Operators
import RowIO
#if canImport(Glibc)
import Glibc
#endif

public enum ProgressMode: String, Sendable, CaseIterable { case auto, always, never }

/// Everything `rowflow run` takes (DESIGN.md §1).
public struct RunOptions: Sendable {
    public var manifestPath: String
    public var input: String? = nil
    public var out = "rowflow-out"
    public var seed: UInt64 = 0
    public var shard: Int64? = nil
    public var checkpointEvery: Int64? = nil
    public var resume = false
    public var stateOut: String? = nil
    public var emitEvery: Int64? = nil
    public var progress: ProgressMode = .auto
    public var threads = 2

    public init(manifestPath: String) { self.manifestPath = manifestPath }
}

/// What a finished run reports back (also in run.json).
public struct RunReport: Sendable {
    public var rowsRead: Int64
    public var rowsSkipped: Int64
    public var rowsQuarantined: Int64
    public var bytesIn: Int64
    public var seconds: Double
    public var outputs: [(String, OperatorOutput)]
}

/// Drives one run: manifest → source → operators → outputs.
///
/// Threads: with `threads ≥ 2` one thread decodes (decompression and parsing into recycled batch buffers)
/// while the calling thread runs the operators, with a bounded queue of batches between them; OpenBLAS is
/// kept at one thread throughout, because two BLAS threads beside a busy decode core are slower than one
/// (TOOLCHAIN.md §6) and because results must not depend on thread counts. With `threads == 1` decoding and
/// compute alternate on one thread. Either way the batches — cut at fixed row counts — are the same, so the
/// outputs are byte-identical.
public final class Runner: @unchecked Sendable {
    public let options: RunOptions
    let registry: OperatorRegistry
    let stdout: @Sendable (String) -> Void
    let stderr: @Sendable (String) -> Void

    public init(options: RunOptions, registry: OperatorRegistry = .standard,
                stdout: @escaping @Sendable (String) -> Void = Console.out, stderr: @escaping @Sendable (String) -> Void = Console.err) {
        self.options = options
        self.registry = registry
        self.stdout = stdout
        self.stderr = stderr
    }

    var spec: PipelineSpec!
    var output: OutputWriter!
    var started = 0.0
    var source: SourceReader?
    var rowsFed: Int64 = 0
    var graph: Graph!

    @discardableResult
    public func run() throws(EngineError) -> RunReport {
        started = monotonicSeconds()
        spec = try ManifestParser.load(options.manifestPath, registry: registry)
        if spec.checkpoint != nil || options.checkpointEvery != nil {
            throw .usage(spec.checkpoint != nil ? options.manifestPath : "--checkpoint-every",
                         "checkpoints are not implemented yet in this build", hint: "remove the checkpoint: section / option")
        }
        if options.resume {
            throw .usage("--resume", "resume is not implemented yet in this build (checkpoints are not written)")
        }
        if options.stateOut != nil {
            throw .usage("--state-out", "state blobs are not implemented yet in this build",
                         hint: "merge run folders instead: each shard run writes <out>/<id>/state.bin")
        }
        output = OutputWriter(dir: options.out)
        try output.prepare()
        try output.writeRunJSON(runJSON(status: "running", error: nil))
        do {
            let report = try execute()
            try output.writeRunJSON(runJSON(status: "complete", error: nil))
            return report
        } catch {
            try? output.writeRunJSON(runJSON(status: "failed", error: error))
            throw error
        }
    }

    func runJSON(status: String, error: EngineError?) -> JSON {
        let seconds = max(0, monotonicSeconds() - started)
        var pairs: [(String, JSON)] = [("status", .string(status))]
        if let error { pairs.append(("error", .string(error.description))); pairs.append(("exit_code", .int(Int64(error.status.rawValue)))) }
        let bad = source?.bad
        pairs += [
            ("rows_read", .int(rowsFed)),
            ("rows_skipped", .int(bad?.skipped ?? 0)),
            ("rows_quarantined", .int(bad?.quarantined ?? 0)),
            ("bytes_in", .int(source?.bytesIn ?? 0)),
            ("seconds", .double((seconds * 1000).rounded() / 1000)),
            ("rows_per_s", .double(seconds > 0 ? (Double(rowsFed) / seconds).rounded() : 0)),
            ("manifest_sha256", .string(spec?.sha256 ?? "")),
            ("seed", .int(Int64(bitPattern: options.seed))),
            ("shard", .int(options.shard ?? 0)),
            ("version", .string(RowflowVersion.string)),
            ("resumed_from_row", .int(0)),
            ("manifest", .string(options.manifestPath)),
            ("input", .string(options.input ?? "-")),
        ]
        if let f = source?.formatUsed { pairs.append(("format", .string(f.rawValue))) }
        if let l = source?.layout { pairs.append(("columns", .int(Int64(l.features)))) }
        pairs.append(("operators", .array(spec?.operators.map { .string($0.id) } ?? [])))
        return .object(pairs)
    }

    func execute() throws(EngineError) -> RunReport {
        let quarantinePath = options.out + "/quarantine.txt"
        if spec.source.onBadRow == .quarantine { _ = unlinkFile(quarantinePath) }
        let qfile = QuarantineFile(path: quarantinePath)
        var sink: (@Sendable (String) throws(EngineError) -> Void)? = nil
        if spec.source.onBadRow == .quarantine {
            sink = { (line: String) throws(EngineError) -> Void in try qfile.append(line) }
        }
        let bad = BadRowHandler(policy: spec.source.onBadRow, quarantine: sink)
        let src = try SourceReader(path: options.input, config: spec.source, bad: bad)
        source = src
        let shape = try streamShape(src)
        graph = try Graph(spec: spec, shape: shape, seed: options.seed, shard: options.shard ?? 0,
                          rowStoreDir: options.out + "/rowstore")
        let progress = ProgressReporter(mode: options.progress, totalBytes: src.totalBytes, stderr: stderr)
        BLASThreads.set(1)
        try stream(src, shape: shape, progress: progress)
        progress.finish(rows: rowsFed, bytes: src.bytesIn)
        try qfile.close()
        if rowsFed == 0 && options.shard == nil {
            throw .data(src.displayName, "no rows: the input holds no data rows",
                        hint: bad.skipped + bad.quarantined > 0 ? "every row was bad (\(bad.skipped + bad.quarantined) skipped)" : nil)
        }
        let outputs = try graph.finishAll()
        for (id, out) in outputs {
            try output.writeOperator(spec.op(id)!, output: out, state: graph.stateBytes(id))
        }
        return RunReport(rowsRead: rowsFed, rowsSkipped: bad.skipped, rowsQuarantined: bad.quarantined,
                         bytesIn: src.bytesIn, seconds: monotonicSeconds() - started, outputs: outputs)
    }

    func streamShape(_ src: SourceReader) throws(EngineError) -> StreamShape {
        if let l = src.layout { return StreamShape(columns: l.features, hasTarget: l.hasTarget, rowsKnown: src.rowsKnown) }
        // An empty input: the shape can only come from the manifest.
        guard let c = spec.source.columns else {
            if options.shard != nil {
                throw .usage(src.displayName, "this shard is empty and source.columns is not set, so its shape is unknown",
                             hint: "set source.columns in the manifest for shard runs")
            }
            throw .data(src.displayName, "no rows: the input is empty")
        }
        let l = try RowLayout(rawColumns: c, config: spec.source, where: options.manifestPath)
        return StreamShape(columns: l.features, hasTarget: l.hasTarget, rowsKnown: 0)
    }

    func stream(_ src: SourceReader, shape: StreamShape, progress: ProgressReporter) throws(EngineError) {
        let cap = spec.source.batchRows
        let hasWeight = src.layout?.hasWeight ?? (spec.source.weight != nil)
        func newBatch() -> RowBatch { RowBatch(columns: shape.columns, capacity: cap, hasTarget: shape.hasTarget, hasWeight: hasWeight) }

        if options.threads <= 1 {
            var batch = newBatch()
            while true {
                batch.reset()
                let more = try src.fill(&batch)
                try consume(batch, progress: progress, src: src)
                if !more { break }
            }
            return
        }
        // Two threads: decode here → queue → compute on the caller. Three batches circulate.
        let full = BoundedQueue<Result<RowBatch?, EngineError>>(capacity: 2)
        let free = BoundedQueue<RowBatch>(capacity: 4)
        for _ in 0..<3 { free.push(newBatch()) }
        let decoder = WorkerThread {
            while true {
                guard var batch = free.pop() else { return }
                batch.reset()
                let result: Result<Bool, EngineError> = Result { () throws(EngineError) -> Bool in try src.fill(&batch) }
                switch result {
                case let .success(more):
                    if !full.push(.success(batch)) { return }
                    if !more { full.push(.success(nil)); return }
                case let .failure(error):
                    full.push(.failure(error))
                    return
                }
            }
        }
        defer { free.close(); full.close(); decoder.join() }
        while let item = full.pop() {
            switch item {
            case let .failure(e): throw e
            case .success(nil): return
            case let .success(batch?):
                try consume(batch, progress: progress, src: src)
                free.push(batch)
            }
        }
    }

    /// Feeds a source batch, cutting it at `--emit-every` boundaries so emitted lines fall at exact rows.
    func consume(_ batch: RowBatch, progress: ProgressReporter, src: SourceReader) throws(EngineError) {
        guard batch.count > 0 else { return }
        if let n = options.emitEvery {
            var r = 0
            while r < batch.count {
                let toBoundary = Int(n - rowsFed % n)
                let take = min(toBoundary, batch.count - r)
                if r == 0 && take == batch.count { try graph.feed(batch, from: "source") } else { try graph.feed(batch.slice(r, take), from: "source") }
                r += take
                rowsFed += Int64(take)
                if rowsFed % n == 0 { emitLines() }
            }
        } else {
            try graph.feed(batch, from: "source")
            rowsFed += Int64(batch.count)
        }
        progress.tick(rows: rowsFed, bytes: src.bytesIn)
    }

    func emitLines() {
        for s in spec.operators {
            let line = JSON.object([("id", .string(s.id)), ("rows", .int(rowsFed)),
                                    ("summary", .object(graph.ops[s.id]!.currentSummary()))])
            stdout(line.encoded() + "\n")
        }
    }

}

/// Appends quarantined rows to `<out>/quarantine.txt`, opened on first use.
final class QuarantineFile: @unchecked Sendable {
    let path: String
    private var fd: Int32 = -1
    init(path: String) { self.path = path }

    func append(_ line: String) throws(EngineError) {
        if fd < 0 {
            fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw .io(path, "cannot write the quarantine file: \(String(cString: strerror(errno)))") }
        }
        let bytes = Array(line.utf8)
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else { throw .io(path, "cannot write the quarantine file: \(String(cString: strerror(errno)))") }
    }

    func close() throws(EngineError) {
        if fd >= 0 { _ = Glibc.close(fd); fd = -1 }
    }
}

public enum RowflowVersion {
    public static let string = "0.1.0"
}

/// Unbuffered writes to the process's stdout/stderr (Swift 6: no shared mutable `stderr` global).
public enum Console {
    public static let out: @Sendable (String) -> Void = { s in writeAll(1, s) }
    public static let err: @Sendable (String) -> Void = { s in writeAll(2, s) }
    static func writeAll(_ fd: Int32, _ s: String) {
        var bytes = Array(s.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
            if n <= 0 { if errno == EINTR { continue }; return }
            off += n
        }
    }
}
