import EngineCore
import LinearAlgebra
import Manifest
import Operators
import RowIO
#if canImport(Glibc)
import Glibc
#endif

public enum ProgressMode: String, Sendable, CaseIterable { case auto, always, never }

/// Everything `rowflow run` takes (docs/commands.md).
public struct RunOptions: Sendable {
    public var manifestPath: String
    public var input: String? = nil
    public var out = "rowflow-out"
    public var seed: UInt64 = 0
    public var shard: Int64? = nil
    public var checkpointEvery: Int64? = nil
    public var resume = false
    /// `--state-out`: a path, or "-" for one base64 line on stdout.
    public var stateOut: String? = nil
    /// false with `--state-out` and no explicit `--out`: the blob is the whole result and nothing is written
    /// under `out` (no run.json, outputs, checkpoints or quarantine file), so concurrent shard tasks that share
    /// a working directory (Spark executors) cannot collide.
    public var writeOutputs = true
    public var emitEvery: Int64? = nil
    public var progress: ProgressMode = .auto
    public var threads = 2
    /// Minimum seconds between checkpoints taken between the steps of multi-pass operators.
    public var stepCheckpointSeconds = 1.0

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

/// Drives one run: manifest → source → operators → outputs, with checkpoints and resume (docs/checkpoints-and-merge.md).
///
/// Threads: with `threads ≥ 2` one thread decodes (decompression and parsing into recycled batch buffers)
/// while the calling thread runs the operators, with a bounded queue of batches between them; OpenBLAS is
/// kept at one thread throughout, because two BLAS threads beside a busy decode core are slower than one
/// (measured: 2× slower ssyrk beside a busy core) and because results must not depend on thread counts. With `threads == 1` decoding and
/// compute alternate on one thread. Either way the batches — cut at fixed row counts — are the same, so the
/// outputs are byte-identical.
///
/// Checkpoints are taken at batch boundaries (every `checkpoint.every_rows` rows) and between the steps of
/// multi-pass operators; SIGINT/SIGTERM finish the current batch or step, checkpoint, and exit 130/143.
/// A resumed run re-reads the input from the start, checks the fingerprint of the rows it skips, restores
/// every operator and row store, and continues: its outputs are byte-identical to an uninterrupted run's.
public final class Runner: Sendable {
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

    /// Loads the manifest, takes the output directory (its lock, run.json, checkpoints, a resume), runs, and
    /// leaves run.json saying how the run ended.
    @discardableResult
    public func run() throws(EngineError) -> RunReport {
        let started = monotonicSeconds()
        let spec = try ManifestParser.load(options.manifestPath, registry: registry)
        if options.stateOut != nil { try checkStateOut(spec) }
        let output = OutputWriter(dir: options.out)
        guard options.writeOutputs else {
            // State only: the blob is the result; nothing goes under --out.
            return try RunSession(runner: self, spec: spec, output: output, started: started, checkpoints: nil, resumeFrom: nil).execute()
        }
        try output.prepare()
        defer { OutputLock.release(options.out) }
        let every = options.checkpointEvery ?? spec.checkpoint?.everyRows
        var checkpoints: CheckpointStore?
        if every != nil || options.resume {
            checkpoints = CheckpointStore(dir: options.out + "/checkpoints", keep: spec.checkpoint?.keep ?? 2,
                                          manifestSHA256: spec.sha256)
        }
        var resumeFrom: Checkpoint?
        if options.resume, let store = checkpoints {
            resumeFrom = try store.newestUsable(warn: { self.stderr("rowflow: warning: " + $0 + "\n") })
            if let c = resumeFrom {
                if let asked = options.shard, asked != c.shard {
                    throw .usage(options.out + "/checkpoints", "resume refused: the checkpoint is of shard \(c.shard), --shard says \(asked)",
                                 hint: "resume with --shard \(c.shard), or start without --resume")
                }
                if options.seed != c.seed {
                    stderr("rowflow: note: resuming with the checkpoint's seed \(c.seed) (not --seed \(options.seed))\n")
                }
                stderr("rowflow: resuming from row \(c.rowsFed)\(c.finishing ? " (after the stream, operator \(c.finishIndex + 1) of \(spec.operators.count))" : "")\n")
            } else {
                stderr("rowflow: no checkpoint in \(options.out)/checkpoints; starting at row 0\n")
            }
        } else {
            checkpoints?.removeAll()
        }
        let session = RunSession(runner: self, spec: spec, output: output, started: started, checkpoints: checkpoints, resumeFrom: resumeFrom)
        try output.writeRunJSON(session.record(status: "running", error: nil).json)
        do {
            let report = try session.execute()
            try output.writeRunJSON(session.record(status: "complete", error: nil).json)
            return report
        } catch {
            let interrupted = error.status == .interrupted || error.status == .terminated
            try? output.writeRunJSON(session.record(status: interrupted ? "interrupted" : "failed", error: error).json)
            throw error
        }
    }

    /// `--state-out` carries only mergeable states, so a manifest with a non-mergeable operator on the source is
    /// refused before any row is read (the blob could never be merged); stdout must carry the blob alone.
    func checkStateOut(_ spec: PipelineSpec) throws(EngineError) {
        for s in spec.consumers(of: "source") where !s.descriptor.mergeable {
            throw .usage(s.location, "--state-out: operator '\(s.id)' (\(s.kind)) reads the source and is not mergeable, so a shard's state could never be merged",
                         hint: s.descriptor.mergeHint ?? "use a mergeable operator (\(registry.mergeableKinds.joined(separator: ", "))) on the source; operators reading a mergeable sampler run at merge")
        }
        if options.stateOut == "-" && options.emitEvery != nil {
            throw .usage("--state-out -", "stdout carries the state blob alone; --emit-every would mix JSON lines into it",
                         hint: "write the blob to a file (--state-out <path>) to use --emit-every")
        }
        if !options.writeOutputs {
            if options.checkpointEvery != nil || options.resume {
                throw .usage("--state-out", "checkpoints need an output directory", hint: "add --out <dir>")
            }
            if options.emitEvery != nil {
                throw .usage("--state-out", "--emit-every writes under the output directory (truncated-svd's current factors)",
                             hint: "add --out <dir>")
            }
            if spec.source.onBadRow == .quarantine {
                throw .usage("--state-out", "on_bad_row: quarantine writes <out>/quarantine.txt and needs an output directory",
                             hint: "add --out <dir>, or use on_bad_row: skip")
            }
        }
    }

}

/// One run from the moment its manifest is loaded and its output directory taken: opens the source, builds
/// the graph, hands the stream to a `StreamDriver`, runs the finish cascade and writes the outputs, the
/// state blob and the record behind run.json.
final class RunSession: @unchecked Sendable {
    let run: RunContext
    let started: Double
    let checkpoints: CheckpointStore?
    /// The counters and lists run.json reports beyond the driver's (failed operators, warnings).
    var record: RunRecord
    /// Set once the input is open (run.json written before that reports zero counters).
    var source: SourceReader?
    var driver: StreamDriver?

    init(runner: Runner, spec: PipelineSpec, output: OutputWriter, started: Double, checkpoints: CheckpointStore?, resumeFrom: Checkpoint?) {
        run = RunContext(options: runner.options, spec: spec, output: output, resumeFrom: resumeFrom,
                         seed: resumeFrom?.seed ?? runner.options.seed, shard: resumeFrom?.shard ?? runner.options.shard ?? 0,
                         stdout: runner.stdout, stderr: runner.stderr)
        self.started = started
        self.checkpoints = checkpoints
        record = RunRecord(manifest: runner.options.manifestPath)
    }

    /// run.json now.
    func record(status: String, error: EngineError?) -> RunRecord {
        var r = record
        r.status = status
        r.error = error
        let rowsFed = driver?.rowsFed ?? 0
        r.rowsRead = rowsFed
        r.newRows = rowsFed - Int64(run.resumeFrom?.rowsFed ?? 0)
        r.rowsSkipped = source?.bad.skipped ?? 0
        r.rowsQuarantined = source?.bad.quarantined ?? 0
        r.bytesIn = source?.bytesIn ?? 0
        r.seconds = max(0, monotonicSeconds() - started)
        r.manifestSHA256 = run.spec.sha256
        r.seed = run.seed
        r.shard = run.shard
        r.resumedFromRow = Int64(run.resumeFrom?.rowsFed ?? 0)
        r.input = run.options.input ?? "-"
        r.format = source?.formatUsed?.rawValue
        if let bad = source?.bad, !bad.byColumn.isEmpty {
            let names = source?.layout?.rawNames
            r.badByColumn = bad.byColumn.sorted { $0.key < $1.key }.map { (k, v) in
                (names.map { k < $0.count ? $0[k] : "column \(k)" } ?? "column \(k)", v)
            }
        }
        r.columns = source?.layout?.features
        r.operators = run.spec.operators.map(\.id)
        return r
    }

    /// Writes the blob: the mergeable states of the source's operators (none for an empty shard: `graph` nil).
    func writeStateBlob(to path: String, graph: Graph?, rowsFed: Int64) throws(EngineError) {
        var entries: [StateBlob.Entry] = []
        if let graph {
            for s in run.spec.consumers(of: "source") {
                guard let bytes = graph.stateBytes(s.id) else { throw .internal("--state-out", "no state for operator '\(s.id)'") }
                entries.append(StateBlob.Entry(id: s.id, envelope: bytes))
            }
        }
        let blob = StateBlob(manifestSHA256: StateBlob.digest(hex: run.spec.sha256), seed: run.seed, rowsRead: UInt64(rowsFed),
                             rowsSkipped: UInt64(source?.bad.skipped ?? 0), rowsQuarantined: UInt64(source?.bad.quarantined ?? 0),
                             bytesIn: UInt64(source?.bytesIn ?? 0), shards: [run.shard], operators: entries).encoded()
        try RunRecord.writeBlob(blob, to: path, stdout: run.stdout)
    }

    /// summary.json's `feature_names` (every operator sees the source's features: samplers pass them on).
    var featureNamesJSON: [(String, JSON)] {
        guard let n = source?.layout?.featureNames else { return [] }
        return [("feature_names", .array(n.map { .string($0) }))]
    }

    /// One stderr line per warning, `rowflow: warning: <id>: <what> (hint: …)`, kept for run.json.
    func warn(id: String, _ w: OperatorWarning) {
        record.warnings.append((id, w))
        run.stderr(w.line(id: id))
    }

    func execute() throws(EngineError) -> RunReport {
        let quarantinePath = run.options.out + "/quarantine.txt"
        let qfile = QuarantineFile(path: quarantinePath)
        // A resumed run re-reads the input from its first row and meets the same bad rows again, so the
        // quarantine file (and the bad-row counters) are rebuilt from scratch, identically.
        if run.spec.source.onBadRow == .quarantine { _ = unlinkFile(quarantinePath) }
        var sink: (@Sendable (String) throws(EngineError) -> Void)? = nil
        if run.spec.source.onBadRow == .quarantine {
            sink = { (line: String) throws(EngineError) -> Void in try qfile.append(line) }
        }
        let bad = BadRowHandler(policy: run.spec.source.onBadRow, quarantine: sink)
        let src = try SourceReader(path: run.options.input, config: run.spec.source, bad: bad)
        // Text parses on every core beside the compute thread: the parse threads wait whenever the batch
        // queue is full, so a heavy operator keeps its core; a light one leaves both to parsing.
        src.parseThreads = run.options.threads > 1 ? ParsePool.defaultThreads() : 1
        source = src
        if src.layout == nil && run.spec.source.columns == nil && run.options.shard != nil {
            // An empty shard whose shape nothing states: valid; its blob holds no states and its run directory
            // no outputs (merge skips both).
            if let path = run.options.stateOut { try writeStateBlob(to: path, graph: nil, rowsFed: 0) }
            return RunReport(rowsRead: 0, rowsSkipped: bad.skipped, rowsQuarantined: bad.quarantined, bytesIn: src.bytesIn,
                             seconds: monotonicSeconds() - started, outputs: [])
        }
        let shape = try streamShape(src)
        let graph = try Graph(spec: run.spec, shape: shape, seed: run.seed, shard: run.shard, sharded: run.options.shard != nil,
                          rowStoreDir: run.options.out + "/rowstore",
                          durableStores: checkpoints != nil, featureNames: src.layout?.featureNames)
        var shuffler: ShuffleBuffer?
        if run.spec.source.shuffle > 0 {
            let b = run.spec.source.shuffle
            if checkpoints != nil && ShuffleBuffer.stateBytes(capacity: b, columns: shape.columns) > ShuffleBuffer.checkpointLimit {
                throw .usage(run.options.manifestPath, "source.shuffle: \(b) rows × \(shape.columns) columns would put \(ShuffleBuffer.stateBytes(capacity: b, columns: shape.columns) >> 20) MiB into every checkpoint (limit \(ShuffleBuffer.checkpointLimit >> 20) MiB)",
                             hint: "lower source.shuffle, or run without checkpoints (no checkpoint section, no --checkpoint-every or --resume)")
            }
            shuffler = ShuffleBuffer(capacity: b, columns: shape.columns, hasTarget: shape.hasTarget,
                                     hasWeight: src.layout?.hasWeight ?? (run.spec.source.weight != nil), seed: run.seed, shard: run.shard)
        }
        if let c = run.resumeFrom {
            try graph.restore(c, location: run.options.out + "/checkpoints")
            if let sh = shuffler {
                try sh.restore(c.shuffle, location: run.options.out + "/checkpoints")
            } else if !c.shuffle.isEmpty {
                throw .usage(run.options.out + "/checkpoints", "resume refused: the checkpoint holds a shuffle buffer, this manifest has no source.shuffle")
            }
        }
        let d = StreamDriver(run: run, source: src, graph: graph, quarantine: qfile, shuffler: shuffler, checkpoints: checkpoints)
        driver = d
        let progress = ProgressReporter(mode: run.options.progress, totalBytes: src.totalBytes, stderr: run.stderr)
        BLASThreads.set(1)
        Signals.install()
        try d.stream(shape: shape, progress: progress)
        if let sh = shuffler, sh.count > 0 {
            // The stream has ended: pass on what the buffer still holds, in a random order.
            for b in sh.flush(batchRows: run.spec.source.batchRows, position: d.lastPosition) { try d.deliver(b) }
        }
        let rowsFed = d.rowsFed
        progress.finish(rows: rowsFed, bytes: src.bytesIn)
        if let c = run.resumeFrom, rowsFed < Int64(c.rowsFed) {
            throw .usage(src.displayName, "resume refused: the input has \(rowsFed) rows, the checkpoint was taken after \(c.rowsFed)",
                         hint: "resume with the same input, or start without --resume")
        }
        if rowsFed == 0 && run.options.shard == nil {
            throw .data(src.displayName, "no rows: the input holds no data rows",
                        hint: bad.skipped + bad.quarantined > 0 ? "every row was bad (\(bad.skipped + bad.quarantined) skipped)" : nil)
        }
        var outputs: [(String, OperatorOutput)] = []
        if !run.options.writeOutputs, let path = run.options.stateOut {
            // State only: the source's operators are all mergeable and their finish() leaves the state as it is,
            // so the states are final now; operators downstream of a sampler run at merge, on the merged sample.
            try writeStateBlob(to: path, graph: rowsFed == 0 ? nil : graph, rowsFed: rowsFed)
            return RunReport(rowsRead: rowsFed, rowsSkipped: bad.skipped, rowsQuarantined: bad.quarantined,
                             bytesIn: src.bytesIn, seconds: monotonicSeconds() - started, outputs: [])
        }
        let start = run.resumeFrom?.finishing == true ? Int(run.resumeFrom!.finishIndex) : 0
        try graph.finishAll(from: start, afterStep: { (i: Int) throws(EngineError) in
            try d.betweenSteps(finishIndex: i)
        }, finished: { (id: String, out: OperatorOutput) throws(EngineError) in
            try self.run.output.writeOperator(self.run.spec.op(id)!, output: out, state: graph.stateBytes(id),
                                          extra: self.featureNamesJSON)
            for w in out.warnings { self.warn(id: id, w) }
            outputs.append((id, out))
        }, failed: { (id: String, error: EngineError) throws(EngineError) in
            // The others go on; this one's mergeable state is kept so that `rowflow merge` with a corrected
            // manifest can finish it without re-reading the input.
            self.record.failedOperators.append((id, error))
            self.run.stderr("rowflow: error: operator '\(id)' failed: \(error.detail)\n")
            if let state = graph.stateBytes(id) {
                let dir = self.run.output.operatorDir(id)
                try FileBytes.makeDirectory(dir)
                try FileBytes.writeAtomically(state, to: dir + "/state.bin")
            }
        })
        try qfile.close()
        if let path = run.options.stateOut { try writeStateBlob(to: path, graph: rowsFed == 0 ? nil : graph, rowsFed: rowsFed) }
        return RunReport(rowsRead: rowsFed, rowsSkipped: bad.skipped, rowsQuarantined: bad.quarantined,
                         bytesIn: src.bytesIn, seconds: monotonicSeconds() - started, outputs: outputs)
    }

    func streamShape(_ src: SourceReader) throws(EngineError) -> StreamShape {
        let f32 = run.spec.source.float32Values
        if let l = src.layout { return StreamShape(columns: l.features, hasTarget: l.hasTarget, rowsKnown: src.rowsKnown, float32Values: f32) }
        // An empty input: the shape can only come from the manifest.
        guard let c = run.spec.source.columns else {
            if run.options.shard != nil {
                throw .usage(src.displayName, "this shard is empty and source.columns is not set, so its shape is unknown",
                             hint: "set source.columns in the manifest for shard runs")
            }
            throw .data(src.displayName, "no rows: the input is empty")
        }
        let l = try RowLayout(rawColumns: c, config: run.spec.source, location: run.options.manifestPath)
        return StreamShape(columns: l.features, hasTarget: l.hasTarget, rowsKnown: 0, float32Values: f32)
    }

}

/// What every part of one run reads and never changes: its options, the validated manifest, the output
/// directory, the checkpoint it resumes from, the seed and shard in force (the checkpoint's when resuming),
/// and where its console lines go.
struct RunContext: Sendable {
    let options: RunOptions
    let spec: PipelineSpec
    let output: OutputWriter
    let resumeFrom: Checkpoint?
    let seed: UInt64
    let shard: Int64
    let stdout: @Sendable (String) -> Void
    let stderr: @Sendable (String) -> Void
}
