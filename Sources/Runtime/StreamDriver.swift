import EngineCore
import LinearAlgebra
import Manifest
import Operators
import RowIO
#if canImport(Glibc)
import Glibc
#endif

/// The stream of one run: the decode thread and the queue of batches, the source's rows fed to the graph in
/// order (through the shuffle buffer, cut at `--emit-every` rows), the fingerprint a resume checks, and the
/// checkpoints and signals between batches and between the steps after the stream. Everything it needs exists
/// before it starts; the counters are the run's position.
final class StreamDriver: @unchecked Sendable {
    let run: RunContext
    let source: SourceReader
    let graph: Graph
    let quarantine: QuarantineFile
    let shuffler: ShuffleBuffer?
    /// Created at a signal in a run that had none (so the stop can still checkpoint).
    var checkpoints: CheckpointStore?

    // Stream position: rows taken from the source (rowsFed) and rows passed to the operators (rowsDelivered;
    // fewer while a `source.shuffle` buffer holds some).
    var rowsFed: Int64 = 0
    var rowsDelivered: Int64 = 0
    var shuffled: RowBatch?
    var fingerprint = RowFingerprint()
    var lastCheckpointRows: Int64 = 0
    var lastCheckpointTime = monotonicSeconds()
    /// The source position after the last batch the operators consumed.
    var lastPosition = SourcePosition()

    init(run: RunContext, source: SourceReader, graph: Graph, quarantine: QuarantineFile, shuffler: ShuffleBuffer?,
         checkpoints: CheckpointStore?) {
        self.run = run; self.source = source; self.graph = graph; self.quarantine = quarantine; self.shuffler = shuffler
        self.checkpoints = checkpoints
        if let c = run.resumeFrom { rowsDelivered = Int64(c.rowsFed) - Int64(shuffler?.count ?? 0) }
    }

    func stream(shape: StreamShape, progress: ProgressReporter) throws(EngineError) {
        let src = source
        let cap = RowBatch.capacity(batchRows: run.spec.source.batchRows, columns: shape.columns)
        let hasWeight = src.layout?.hasWeight ?? (run.spec.source.weight != nil)
        func newBatch() -> RowBatch {
            var b = RowBatch(columns: shape.columns, capacity: cap, hasTarget: shape.hasTarget, hasWeight: hasWeight)
            // Float32 input: the decode thread only decompresses into the staging area; this thread converts.
            if run.options.threads > 1 && src.stagesFloat32 { b.enableStaging(withTarget: src.stagesTarget) }
            return b
        }

        if run.options.threads <= 1 {
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
        let float32Only = src.stagesFloat32 && run.options.emitEvery == nil && shuffler == nil && graph.sourceReadsFloat32Only
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
        p.quarantineBytes = quarantine.length
        p.bytesIn = src.bytesIn
        return p
    }

    /// Feeds a source batch, cutting it at `--emit-every` boundaries so emitted lines fall at exact rows.
    /// While resuming, rows up to the checkpoint only update the fingerprint, which is then checked.
    func consume(_ batch: RowBatch, progress: ProgressReporter, src: SourceReader) throws(EngineError) {
        lastPosition = batch.position
        if batch.count > 0 {
            fingerprint.absorb(batch)
            if let c = run.resumeFrom, rowsFed < Int64(c.rowsFed) {
                rowsFed += Int64(batch.count)
                if rowsFed > Int64(c.rowsFed) {
                    throw .internal("resume", "batch boundaries moved: row \(rowsFed) passed the checkpoint's \(c.rowsFed)")
                }
                if rowsFed == Int64(c.rowsFed) { try verifyResume(c, src: src, at: batch.position) }
                progress.tick(rows: rowsFed, bytes: src.bytesIn)
                return
            }
            if let c = run.resumeFrom, c.finishing {
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
            if let every = run.options.checkpointEvery ?? run.spec.checkpoint?.everyRows, rowsFed - lastCheckpointRows >= every {
                try writeCheckpoint(finishing: false, finishIndex: 0)
            }
        }
        try checkSignals(finishing: false, finishIndex: 0)
    }

    /// Feeds rows to the operators, cutting the batch at `--emit-every` boundaries so emitted lines fall at
    /// exact row counts (rows passed on, after any shuffle buffer).
    func deliver(_ batch: RowBatch) throws(EngineError) {
        guard let n = run.options.emitEvery else {
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
        if checkpoints != nil, monotonicSeconds() - lastCheckpointTime >= run.options.stepCheckpointSeconds {
            try writeCheckpoint(finishing: true, finishIndex: i)
        }
        try checkSignals(finishing: true, finishIndex: i)
    }

    /// After a SIGINT/SIGTERM: checkpoint, say how to resume, stop with 130/143.
    func checkSignals(finishing: Bool, finishIndex: Int) throws(EngineError) {
        let sig = Signals.pending
        guard sig != 0 else { return }
        guard run.options.writeOutputs else {
            // --state-out without --out has nowhere to checkpoint: stop at once; the shard is simply re-run.
            throw EngineError(sig == SIGINT ? .interrupted : .terminated, "row \(rowsFed)",
                              "interrupted by \(sig == SIGINT ? "SIGINT" : "SIGTERM") (no checkpoint: --state-out without --out)")
        }
        // While a resume is still skipping to its checkpoint, that checkpoint is already the newest one.
        let skipping = run.resumeFrom.map { rowsFed < Int64($0.rowsFed) } ?? false
        // A row store kept in memory (a run without checkpoint settings) cannot go into a checkpoint: stop
        // without one; the run starts over.
        if checkpoints == nil, graph.stores.values.contains(where: { $0.memoryRows > 0 }) {
            run.stderr("rowflow: interrupted at row \(rowsFed); no checkpoint (the row store keeps rows in memory without checkpoint settings)\n")
            throw EngineError(sig == SIGINT ? .interrupted : .terminated, "row \(rowsFed)",
                              "interrupted by \(sig == SIGINT ? "SIGINT" : "SIGTERM") (no checkpoint: set checkpoint.every_rows to make multi-pass runs resumable)")
        }
        if !skipping {
            if checkpoints == nil {
                checkpoints = CheckpointStore(dir: run.options.out + "/checkpoints", keep: run.spec.checkpoint?.keep ?? 2,
                                              manifestSHA256: run.spec.sha256)
            }
            try writeCheckpoint(finishing: finishing, finishIndex: finishIndex)
        }
        let again = "rowflow run \(run.options.manifestPath) --input \(run.options.input ?? "-") --out \(run.options.out) --resume"
        run.stderr("rowflow: interrupted at row \(rowsFed); checkpoint written. Resume with: \(again)\n")
        throw EngineError(sig == SIGINT ? .interrupted : .terminated, "row \(rowsFed)",
                          "interrupted by \(sig == SIGINT ? "SIGINT" : "SIGTERM") after writing a checkpoint", hint: again)
    }

    func writeCheckpoint(finishing: Bool, finishIndex: Int) throws(EngineError) {
        guard let store = checkpoints else { return }
        let src = source
        if graph.stores.values.contains(where: { $0.memoryRows > 0 }) {
            // A store created without checkpoints (a signal arrived in a run that had none) keeps rows in memory,
            // which a checkpoint cannot hold: stop without one rather than write one that cannot resume.
            throw .io(store.dir, "cannot checkpoint: the row store keeps rows in memory in a run without checkpoints",
                      hint: "set checkpoint.every_rows to make the row store durable")
        }
        let (states, stores) = try graph.snapshot()
        // Finishing: the whole source has been read, so its live counters are final.
        let p = finishing ? position(src) : lastPosition
        let c = Checkpoint(manifestSHA256: store.manifestDigest, seed: run.seed, shard: run.shard, finishing: finishing,
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
        for s in run.spec.operators {
            let (summary, arrays) = graph.ops[s.id]!.currentEmit()
            var pairs: [(String, JSON)] = [("id", .string(s.id)), ("rows", .int(rowsDelivered)), ("summary", .object(summary))]
            if !arrays.isEmpty {
                let dir = run.output.operatorDir(s.id) + "/current"
                try FileBytes.makeDirectory(dir)
                for a in arrays { try NpyWriter.write(a, to: dir + "/" + a.name + ".npy") }
                pairs.append(("current", .string(dir)))
            }
            run.stdout(JSON.object(pairs).encoded() + "\n")
        }
    }
}
