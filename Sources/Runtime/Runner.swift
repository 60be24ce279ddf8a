import EngineCore
import LinearAlgebra
import Manifest
import Operators
import RowIO
#if canImport(Glibc)
import Glibc
#endif

public enum ProgressMode: String, Sendable, CaseIterable { case auto, always, never }

/// Everything `rowflow run` takes (README, "Commands").
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

/// Drives one run: manifest → source → operators → outputs, with checkpoints and resume (README, "Checkpoints and resume").
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
    var graph: Graph!
    var checkpoints: CheckpointStore?
    var seed: UInt64 = 0
    var shard: Int64 = 0
    var resumeFrom: Checkpoint?
    var quarantine: QuarantineFile?

    // Stream position: rows taken from the source (rowsFed) and rows passed to the operators (rowsDelivered;
    // fewer while a `source.shuffle` buffer holds some).
    var rowsFed: Int64 = 0
    var rowsDelivered: Int64 = 0
    var shuffler: ShuffleBuffer?
    var shuffled: RowBatch?
    var fingerprint = RowFingerprint()
    var lastCheckpointRows: Int64 = 0
    var lastCheckpointTime = 0.0
    /// The source position after the last batch the operators consumed.
    var lastPosition = SourcePosition()
    /// Operators that failed at finish while the others went on (run.json `failed_operators`).
    var failedOperators: [(id: String, error: EngineError)] = []
    /// Operators' warnings, in the order they were raised (each also printed once on stderr).
    var warnings: [(id: String, warning: OperatorWarning)] = []

    @discardableResult
    public func run() throws(EngineError) -> RunReport {
        started = monotonicSeconds()
        spec = try ManifestParser.load(options.manifestPath, registry: registry)
        if options.stateOut != nil { try checkStateOut() }
        seed = options.seed
        shard = options.shard ?? 0
        output = OutputWriter(dir: options.out)
        guard options.writeOutputs else {
            // State only: the blob is the result; nothing goes under --out.
            return try execute()
        }
        try output.prepare()
        defer { OutputLock.release(options.out) }
        let every = options.checkpointEvery ?? spec.checkpoint?.everyRows
        if every != nil || options.resume {
            checkpoints = CheckpointStore(dir: options.out + "/checkpoints", keep: spec.checkpoint?.keep ?? 2,
                                          manifestSHA256: spec.sha256)
        }
        if options.resume {
            resumeFrom = try checkpoints!.newestUsable(warn: { self.stderr("rowflow: warning: " + $0 + "\n") })
            if let c = resumeFrom {
                if let asked = options.shard, asked != c.shard {
                    throw .usage(options.out + "/checkpoints", "resume refused: the checkpoint is of shard \(c.shard), --shard says \(asked)",
                                 hint: "resume with --shard \(c.shard), or start without --resume")
                }
                seed = c.seed
                shard = c.shard
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
        try output.writeRunJSON(runJSON(status: "running", error: nil))
        do {
            let report = try execute()
            try output.writeRunJSON(runJSON(status: "complete", error: nil))
            return report
        } catch {
            let interrupted = error.status == .interrupted || error.status == .terminated
            try? output.writeRunJSON(runJSON(status: interrupted ? "interrupted" : "failed", error: error))
            throw error
        }
    }

    /// `--state-out` carries only mergeable states, so a manifest with a non-mergeable operator on the source is
    /// refused before any row is read (the blob could never be merged); stdout must carry the blob alone.
    func checkStateOut() throws(EngineError) {
        for s in spec.consumers(of: "source") where !s.descriptor.mergeable {
            throw .usage(s.location, "--state-out: operator '\(s.id)' (\(s.kind)) reads the source and is not mergeable, so a shard's state could never be merged",
                         hint: s.descriptor.mergeHint ?? "use a mergeable operator (gram, moments, truncated-svd, sensitivity-sample) on the source; operators reading a mergeable sampler run at merge")
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

    /// Writes the blob: the mergeable states of the source's operators (none for an empty shard).
    func writeStateBlob(to path: String, empty: Bool) throws(EngineError) {
        var entries: [StateBlob.Entry] = []
        if !empty, let graph {
            for s in spec.consumers(of: "source") {
                guard let bytes = graph.stateBytes(s.id) else { throw .internal("--state-out", "no state for operator '\(s.id)'") }
                entries.append(StateBlob.Entry(id: s.id, envelope: bytes))
            }
        }
        let blob = StateBlob(manifestSHA256: StateBlob.digest(hex: spec.sha256), seed: seed, rowsRead: UInt64(rowsFed),
                             rowsSkipped: UInt64(source?.bad.skipped ?? 0), rowsQuarantined: UInt64(source?.bad.quarantined ?? 0),
                             bytesIn: UInt64(source?.bytesIn ?? 0), shards: [shard], operators: entries).encoded()
        if path == "-" {
            stdout(Base64.encode(blob) + "\n")
        } else {
            try FileBytes.writeAtomically(blob, to: path, sync: true)
        }
    }

    /// summary.json's `feature_names` (every operator sees the source's features: samplers pass them on).
    var featureNamesJSON: [(String, JSON)] {
        guard let n = source?.layout?.featureNames else { return [] }
        return [("feature_names", .array(n.map { .string($0) }))]
    }

    /// One stderr line per warning, `rowflow: warning: <id>: <what> (hint: …)`, kept for run.json.
    func warn(id: String, _ w: OperatorWarning) {
        warnings.append((id, w))
        stderr(w.line(id: id))
    }

    func runJSON(status: String, error: EngineError?) -> JSON {
        let seconds = max(0, monotonicSeconds() - started)
        var pairs: [(String, JSON)] = [("status", .string(status))]
        if let error { pairs.append(("error", .string(error.description))); pairs.append(("exit_code", .int(Int64(error.status.rawValue)))) }
        let bad = source?.bad
        let newRows = rowsFed - Int64(resumeFrom?.rowsFed ?? 0)
        pairs += [
            ("rows_read", .int(rowsFed)),
            ("rows_skipped", .int(bad?.skipped ?? 0)),
            ("rows_quarantined", .int(bad?.quarantined ?? 0)),
            ("bytes_in", .int(source?.bytesIn ?? 0)),
            ("seconds", .double((seconds * 1000).rounded() / 1000)),
            ("rows_per_s", .double(seconds > 0 ? (Double(max(0, newRows)) / seconds).rounded() : 0)),
            ("manifest_sha256", .string(spec?.sha256 ?? "")),
            ("seed", .uint(seed)),
            ("shard", .int(shard)),
            ("version", .string(RowflowVersion.string)),
            ("blas_core", .string(BLASKernel.coreName)),
            ("cpu", .string(BLASKernel.machine.model)),
            ("resumed_from_row", .int(Int64(resumeFrom?.rowsFed ?? 0))),
            ("manifest", .string(options.manifestPath)),
            ("input", .string(options.input ?? "-")),
        ]
        if let f = source?.formatUsed { pairs.append(("format", .string(f.rawValue))) }
        if let bad, !bad.byColumn.isEmpty {
            let names = source?.layout?.rawNames
            pairs.append(("bad_by_column", .object(bad.byColumn.sorted { $0.key < $1.key }.map { (k, v) in
                (names.map { k < $0.count ? $0[k] : "column \(k)" } ?? "column \(k)", JSON.int(v))
            })))
        }
        if let l = source?.layout { pairs.append(("columns", .int(Int64(l.features)))) }
        pairs.append(("operators", .array(spec?.operators.map { .string($0.id) } ?? [])))
        if let kib = peakRSSKiB() { pairs.append(("peak_rss_kib", .int(kib))) }
        if !failedOperators.isEmpty {
            pairs.append(("failed_operators", .object(failedOperators.map { ($0.id, JSON.string($0.error.detail)) })))
        }
        pairs.append(("warnings", .array(warnings.map { $0.warning.json(id: $0.id) })))
        return .object(pairs)
    }

    func execute() throws(EngineError) -> RunReport {
        let quarantinePath = options.out + "/quarantine.txt"
        let qfile = QuarantineFile(path: quarantinePath)
        quarantine = qfile
        // A resumed run re-reads the input from its first row and meets the same bad rows again, so the
        // quarantine file (and the bad-row counters) are rebuilt from scratch, identically.
        if spec.source.onBadRow == .quarantine { _ = unlinkFile(quarantinePath) }
        var sink: (@Sendable (String) throws(EngineError) -> Void)? = nil
        if spec.source.onBadRow == .quarantine {
            sink = { (line: String) throws(EngineError) -> Void in try qfile.append(line) }
        }
        let bad = BadRowHandler(policy: spec.source.onBadRow, quarantine: sink)
        let src = try SourceReader(path: options.input, config: spec.source, bad: bad)
        // Text parses on every core beside the compute thread: the parse threads wait whenever the batch
        // queue is full, so a heavy operator keeps its core; a light one leaves both to parsing.
        src.parseThreads = options.threads > 1 ? ParsePool.defaultThreads() : 1
        source = src
        if src.layout == nil && spec.source.columns == nil && options.shard != nil {
            // An empty shard whose shape nothing states: valid; its blob holds no states and its run directory
            // no outputs (merge skips both).
            if let path = options.stateOut { try writeStateBlob(to: path, empty: true) }
            return RunReport(rowsRead: 0, rowsSkipped: bad.skipped, rowsQuarantined: bad.quarantined, bytesIn: src.bytesIn,
                             seconds: monotonicSeconds() - started, outputs: [])
        }
        let shape = try streamShape(src)
        graph = try Graph(spec: spec, shape: shape, seed: seed, shard: shard, sharded: options.shard != nil,
                          rowStoreDir: options.out + "/rowstore",
                          durableStores: checkpoints != nil, featureNames: src.layout?.featureNames)
        if spec.source.shuffle > 0 {
            let b = spec.source.shuffle
            if checkpoints != nil && ShuffleBuffer.stateBytes(capacity: b, columns: shape.columns) > ShuffleBuffer.checkpointLimit {
                throw .usage(options.manifestPath, "source.shuffle: \(b) rows × \(shape.columns) columns would put \(ShuffleBuffer.stateBytes(capacity: b, columns: shape.columns) >> 20) MiB into every checkpoint (limit \(ShuffleBuffer.checkpointLimit >> 20) MiB)",
                             hint: "lower source.shuffle, or run without checkpoints (no checkpoint section, no --checkpoint-every or --resume)")
            }
            shuffler = ShuffleBuffer(capacity: b, columns: shape.columns, hasTarget: shape.hasTarget,
                                     hasWeight: src.layout?.hasWeight ?? (spec.source.weight != nil), seed: seed, shard: shard)
        }
        if let c = resumeFrom {
            try graph.restore(c, context: options.out + "/checkpoints")
            if let sh = shuffler {
                try sh.restore(c.shuffle, context: options.out + "/checkpoints")
            } else if !c.shuffle.isEmpty {
                throw .usage(options.out + "/checkpoints", "resume refused: the checkpoint holds a shuffle buffer, this manifest has no source.shuffle")
            }
            rowsDelivered = Int64(c.rowsFed) - Int64(shuffler?.count ?? 0)
        }
        let progress = ProgressReporter(mode: options.progress, totalBytes: src.totalBytes, stderr: stderr)
        BLASThreads.set(1)
        Signals.install()
        lastCheckpointTime = monotonicSeconds()
        try stream(src, shape: shape, progress: progress)
        if let sh = shuffler, sh.count > 0 {
            // The stream has ended: pass on what the buffer still holds, in a random order.
            for b in sh.flush(batchRows: spec.source.batchRows, position: lastPosition) { try deliver(b) }
        }
        progress.finish(rows: rowsFed, bytes: src.bytesIn)
        if let c = resumeFrom, rowsFed < Int64(c.rowsFed) {
            throw .usage(src.displayName, "resume refused: the input has \(rowsFed) rows, the checkpoint was taken after \(c.rowsFed)",
                         hint: "resume with the same input, or start without --resume")
        }
        if rowsFed == 0 && options.shard == nil {
            throw .data(src.displayName, "no rows: the input holds no data rows",
                        hint: bad.skipped + bad.quarantined > 0 ? "every row was bad (\(bad.skipped + bad.quarantined) skipped)" : nil)
        }
        var outputs: [(String, OperatorOutput)] = []
        if !options.writeOutputs, let path = options.stateOut {
            // State only: the source's operators are all mergeable and their finish() leaves the state as it is,
            // so the states are final now; operators downstream of a sampler run at merge, on the merged sample.
            try writeStateBlob(to: path, empty: rowsFed == 0)
            return RunReport(rowsRead: rowsFed, rowsSkipped: bad.skipped, rowsQuarantined: bad.quarantined,
                             bytesIn: src.bytesIn, seconds: monotonicSeconds() - started, outputs: [])
        }
        let start = resumeFrom?.finishing == true ? Int(resumeFrom!.finishIndex) : 0
        try graph.finishAll(from: start, afterStep: { (i: Int) throws(EngineError) in
            try self.betweenSteps(finishIndex: i)
        }, finished: { (id: String, out: OperatorOutput) throws(EngineError) in
            try self.output.writeOperator(self.spec.op(id)!, output: out, state: self.graph.stateBytes(id),
                                          extra: self.featureNamesJSON)
            for w in out.warnings { self.warn(id: id, w) }
            outputs.append((id, out))
        }, failed: { (id: String, error: EngineError) throws(EngineError) in
            // The others go on; this one's mergeable state is kept so that `rowflow merge` with a corrected
            // manifest can finish it without re-reading the input.
            self.failedOperators.append((id, error))
            self.stderr("rowflow: error: operator '\(id)' failed: \(error.detail)\n")
            if let state = self.graph.stateBytes(id) {
                let dir = self.output.operatorDir(id)
                try FileBytes.makeDirectory(dir)
                try FileBytes.writeAtomically(state, to: dir + "/state.bin")
            }
        })
        try qfile.close()
        if let path = options.stateOut { try writeStateBlob(to: path, empty: rowsFed == 0) }
        return RunReport(rowsRead: rowsFed, rowsSkipped: bad.skipped, rowsQuarantined: bad.quarantined,
                         bytesIn: src.bytesIn, seconds: monotonicSeconds() - started, outputs: outputs)
    }

    func streamShape(_ src: SourceReader) throws(EngineError) -> StreamShape {
        let f32 = spec.source.format == .f32
        if let l = src.layout { return StreamShape(columns: l.features, hasTarget: l.hasTarget, rowsKnown: src.rowsKnown, float32Values: f32) }
        // An empty input: the shape can only come from the manifest.
        guard let c = spec.source.columns else {
            if options.shard != nil {
                throw .usage(src.displayName, "this shard is empty and source.columns is not set, so its shape is unknown",
                             hint: "set source.columns in the manifest for shard runs")
            }
            throw .data(src.displayName, "no rows: the input is empty")
        }
        let l = try RowLayout(rawColumns: c, config: spec.source, where: options.manifestPath)
        return StreamShape(columns: l.features, hasTarget: l.hasTarget, rowsKnown: 0, float32Values: f32)
    }

    func stream(_ src: SourceReader, shape: StreamShape, progress: ProgressReporter) throws(EngineError) {
        let cap = RowBatch.capacity(batchRows: spec.source.batchRows, columns: shape.columns)
        let hasWeight = src.layout?.hasWeight ?? (spec.source.weight != nil)
        func newBatch() -> RowBatch {
            var b = RowBatch(columns: shape.columns, capacity: cap, hasTarget: shape.hasTarget, hasWeight: hasWeight)
            // Float32 input: the decode thread only decompresses into the staging area; this thread converts.
            if options.threads > 1 && src.stagesFloat32 { b.enableStaging(withTarget: src.stagesTarget) }
            return b
        }

        if options.threads <= 1 {
            var batch = newBatch()
            while true {
                batch.reset()
                let more = try src.fill(&batch)
                batch.position = position(src)
                try consume(batch, progress: progress, src: src)
                if !more { break }
            }
            return
        }
        // Rows that only float32 readers see are checked for non-finite values but never widened (a batch cut
        // for --emit-every or shuffled is copied from `features`, so those keep the conversion).
        let float32Only = src.stagesFloat32 && options.emitEvery == nil && shuffler == nil && graph.sourceReadsFloat32Only
        func convert(_ b: inout RowBatch) throws(EngineError) { if float32Only { try b.checkStaged() } else { try b.materialize() } }
        // Two threads: decode there → queue → compute here. Three batches circulate.
        let full = BoundedQueue<Result<RowBatch?, EngineError>>(capacity: 2)
        let free = BoundedQueue<RowBatch>(capacity: 4)
        for _ in 0..<3 { free.push(newBatch()) }
        let decoder = WorkerThread {
            while true {
                guard var batch = free.pop() else { return }
                batch.reset()
                let result: Result<Bool, EngineError> = Result { () throws(EngineError) -> Bool in try src.fill(&batch, deferConversion: true) }
                batch.position = self.position(src)
                switch result {
                case let .success(more):
                    // A batch already waiting means the operators are the slower stage: convert staged float32
                    // rows here, on the core that has time to spare. The conversion is exact and its error is
                    // the one the compute thread would raise before feeding this batch, in the same order, so
                    // where it runs changes only the wall time.
                    if full.count > 0 {
                        do throws(EngineError) { try convert(&batch) } catch { full.push(.failure(error)); return }
                    }
                    // `consume`: this thread lets go of the buffers before the compute thread writes them.
                    if !full.push(.success(consume batch)) { return }
                    if !more { full.push(.success(nil)); return }
                case let .failure(error):
                    full.push(.failure(error))
                    return
                }
            }
        }
        // After a signal the decode thread may sit in a read() of a quiet pipe that no close can wake: the run
        // is ending, so it is not waited for (the process exits with it).
        defer { free.close(); full.close(); if Signals.pending == 0 { decoder.join() } }
        while true {
            var popped = full.pop(milliseconds: 200)
            switch popped {
            case .closed: return
            case .timedOut:
                // A blocked input (a quiet pipe) must not delay a requested stop.
                try checkSignals(finishing: false, finishIndex: 0)
            case let .item(.failure(e)): throw e
            case .item(.success(nil)): return
            case .item(.success(var batch?)):
                popped = .timedOut   // drop the queue's reference so the conversion below writes in place
                try convert(&batch)
                try consume(batch, progress: progress, src: src)
                free.push(consume batch)
            }
        }
    }

    /// The source's counters now (called on the decode thread, right after a fill).
    func position(_ src: SourceReader) -> SourcePosition {
        var p = SourcePosition()
        p.rowsConsumed = src.rowsConsumed
        p.rowsSkipped = src.bad.skipped
        p.rowsQuarantined = src.bad.quarantined
        p.quarantineBytes = quarantine?.length ?? 0
        p.bytesIn = src.bytesIn
        return p
    }

    /// Feeds a source batch, cutting it at `--emit-every` boundaries so emitted lines fall at exact rows.
    /// While resuming, rows up to the checkpoint only update the fingerprint, which is then checked.
    func consume(_ batch: RowBatch, progress: ProgressReporter, src: SourceReader) throws(EngineError) {
        lastPosition = batch.position
        if batch.count > 0 {
            fingerprint.absorb(batch)
            if let c = resumeFrom, rowsFed < Int64(c.rowsFed) {
                rowsFed += Int64(batch.count)
                if rowsFed > Int64(c.rowsFed) {
                    throw .internal("resume", "batch boundaries moved: row \(rowsFed) passed the checkpoint's \(c.rowsFed)")
                }
                if rowsFed == Int64(c.rowsFed) { try verifyResume(c, src: src, at: batch.position) }
                progress.tick(rows: rowsFed, bytes: src.bytesIn)
                return
            }
            if let c = resumeFrom, c.finishing {
                throw .usage(src.displayName, "resume refused: the input has more rows than the \(c.rowsFed) the checkpoint's run had read in full",
                             hint: "resume with the same input, or start without --resume")
            }
            if let sh = shuffler {
                if shuffled == nil || shuffled!.capacity < batch.count {
                    shuffled = RowBatch(columns: batch.columns, capacity: batch.capacity, hasTarget: batch.targets != nil,
                                        hasWeight: batch.weights != nil)
                }
                sh.push(batch, into: &shuffled!)
                if shuffled!.count > 0 { try deliver(shuffled!) }
            } else {
                try deliver(batch)
            }
            rowsFed += Int64(batch.count)
            progress.tick(rows: rowsFed, bytes: src.bytesIn)
            if let every = options.checkpointEvery ?? spec.checkpoint?.everyRows, rowsFed - lastCheckpointRows >= every {
                try writeCheckpoint(finishing: false, finishIndex: 0)
            }
        }
        try checkSignals(finishing: false, finishIndex: 0)
    }

    /// Feeds rows to the operators, cutting the batch at `--emit-every` boundaries so emitted lines fall at
    /// exact row counts (rows passed on, after any shuffle buffer).
    func deliver(_ batch: RowBatch) throws(EngineError) {
        guard let n = options.emitEvery else {
            try graph.feed(batch, from: "source")
            rowsDelivered += Int64(batch.count)
            return
        }
        var r = 0
        while r < batch.count {
            let take = min(Int(n - rowsDelivered % n), batch.count - r)
            try graph.feed(r == 0 && take == batch.count ? batch : batch.slice(r, take), from: "source")
            r += take
            rowsDelivered += Int64(take)
            if rowsDelivered % n == 0 { try emitLines() }
        }
    }

    /// At the checkpoint's row: the skipped rows must be the rows the checkpoint saw.
    func verifyResume(_ c: Checkpoint, src: SourceReader, at p: SourcePosition) throws(EngineError) {
        guard fingerprint.value == c.fingerprint, UInt64(p.rowsConsumed) == c.rowsConsumed else {
            throw .usage(src.displayName, "resume refused: the input differs from the one the checkpoint was taken on (fingerprint of the first \(c.rowsFed) rows)",
                         hint: "resume with the same input, or start without --resume")
        }
        // Counters continue from the checkpoint's; bad rows met while skipping were counted before.
        lastCheckpointRows = rowsFed
    }

    func betweenSteps(finishIndex i: Int) throws(EngineError) {
        if checkpoints != nil, monotonicSeconds() - lastCheckpointTime >= options.stepCheckpointSeconds {
            try writeCheckpoint(finishing: true, finishIndex: i)
        }
        try checkSignals(finishing: true, finishIndex: i)
    }

    /// After a SIGINT/SIGTERM: checkpoint, say how to resume, stop with 130/143.
    func checkSignals(finishing: Bool, finishIndex: Int) throws(EngineError) {
        let sig = Signals.pending
        guard sig != 0 else { return }
        guard options.writeOutputs else {
            // --state-out without --out has nowhere to checkpoint: stop at once; the shard is simply re-run.
            throw EngineError(sig == SIGINT ? .interrupted : .terminated, "row \(rowsFed)",
                              "interrupted by \(sig == SIGINT ? "SIGINT" : "SIGTERM") (no checkpoint: --state-out without --out)")
        }
        // While a resume is still skipping to its checkpoint, that checkpoint is already the newest one.
        let skipping = resumeFrom.map { rowsFed < Int64($0.rowsFed) } ?? false
        // A row store kept in memory (a run without checkpoint settings) cannot go into a checkpoint: stop
        // without one; the run starts over.
        if checkpoints == nil, graph?.stores.values.contains(where: { $0.memoryRows > 0 }) == true {
            stderr("rowflow: interrupted at row \(rowsFed); no checkpoint (the row store keeps rows in memory without checkpoint settings)\n")
            throw EngineError(sig == SIGINT ? .interrupted : .terminated, "row \(rowsFed)",
                              "interrupted by \(sig == SIGINT ? "SIGINT" : "SIGTERM") (no checkpoint: set checkpoint.every_rows to make multi-pass runs resumable)")
        }
        if !skipping {
            if checkpoints == nil {
                checkpoints = CheckpointStore(dir: options.out + "/checkpoints", keep: spec.checkpoint?.keep ?? 2,
                                              manifestSHA256: spec.sha256)
            }
            try writeCheckpoint(finishing: finishing, finishIndex: finishIndex)
        }
        let again = "rowflow run \(options.manifestPath) --input \(options.input ?? "-") --out \(options.out) --resume"
        stderr("rowflow: interrupted at row \(rowsFed); checkpoint written. Resume with: \(again)\n")
        throw EngineError(sig == SIGINT ? .interrupted : .terminated, "row \(rowsFed)",
                          "interrupted by \(sig == SIGINT ? "SIGINT" : "SIGTERM") after writing a checkpoint", hint: again)
    }

    func writeCheckpoint(finishing: Bool, finishIndex: Int) throws(EngineError) {
        guard let store = checkpoints, let src = source else { return }
        if graph.stores.values.contains(where: { $0.memoryRows > 0 }) {
            // A store created without checkpoints (a signal arrived in a run that had none) keeps rows in memory,
            // which a checkpoint cannot hold: stop without one rather than write one that cannot resume.
            throw .io(store.dir, "cannot checkpoint: the row store keeps rows in memory in a run without checkpoints",
                      hint: "set checkpoint.every_rows to make the row store durable")
        }
        let (states, stores) = try graph.snapshot()
        // Finishing: the whole source has been read, so its live counters are final.
        let p = finishing ? position(src) : lastPosition
        let c = Checkpoint(manifestSHA256: store.manifestDigest, seed: seed, shard: shard, finishing: finishing,
                           rowsFed: UInt64(rowsFed), rowsConsumed: UInt64(p.rowsConsumed),
                           rowsSkipped: UInt64(p.rowsSkipped), rowsQuarantined: UInt64(p.rowsQuarantined),
                           quarantineBytes: p.quarantineBytes, fingerprint: fingerprint.value,
                           bytesIn: UInt64(p.bytesIn), finishIndex: UInt32(finishIndex), stores: stores, operators: states,
                           shuffle: shuffler?.encoded() ?? [])
        try store.write(c)
        lastCheckpointRows = rowsFed
        lastCheckpointTime = monotonicSeconds()
    }

    /// One JSON line per operator; operators with current arrays (truncated-svd's factors) also get them
    /// written to `<out>/<id>/current/<name>.npy` (each renamed into place, so a reader never sees half a
    /// file), named in the line as `"current"` — written before the line, so the line never points ahead.
    func emitLines() throws(EngineError) {
        for s in spec.operators {
            let (summary, arrays) = graph.ops[s.id]!.currentEmit()
            var pairs: [(String, JSON)] = [("id", .string(s.id)), ("rows", .int(rowsDelivered)), ("summary", .object(summary))]
            if !arrays.isEmpty {
                let dir = output.operatorDir(s.id) + "/current"
                try FileBytes.makeDirectory(dir)
                for a in arrays { try NpyWriter.write(a, to: dir + "/" + a.name + ".npy") }
                pairs.append(("current", .string(dir)))
            }
            stdout(JSON.object(pairs).encoded() + "\n")
        }
    }
}

/// Appends quarantined rows to `<out>/quarantine.txt`, opened on first use.
final class QuarantineFile: @unchecked Sendable {
    let path: String
    private var fd: Int32 = -1
    private(set) var length: UInt64 = 0
    init(path: String) { self.path = path }

    func append(_ line: String) throws(EngineError) {
        if fd < 0 {
            fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw .io(path, "cannot write the quarantine file: \(String(cString: strerror(errno)))") }
        }
        let bytes = Array(line.utf8)
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else { throw .io(path, "cannot write the quarantine file: \(String(cString: strerror(errno)))") }
        length += UInt64(n)
    }

    func close() throws(EngineError) {
        if fd >= 0 { _ = Glibc.close(fd); fd = -1 }
    }
}

/// This process's peak resident set size (VmHWM), for run.json: memory is part of what a run reports.
func peakRSSKiB() -> Int64? {
    guard let bytes = try? FileBytes.read("/proc/self/status", what: "status") else { return nil }
    for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return Int64(line.dropFirst(6).filter { $0.isNumber })
    }
    return nil
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
