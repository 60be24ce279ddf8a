import EngineCore
import Manifest
import Operators

/// The running form of a validated pipeline: one operator instance per spec, row stores for multi-pass
/// operators, and the edges along which rows flow. Shared by `run` (fed from the source) and `merge` (fed
/// from merged states).
final class Graph: @unchecked Sendable {
    let spec: PipelineSpec
    let shape: StreamShape
    let seed: UInt64
    let shard: Int64
    /// `--shard` was given (samplers add a `shard` column).
    let sharded: Bool
    let rowStoreDir: String
    /// The features' names (header or source.names), when known.
    let featureNames: [String]?
    var ops: [String: any StreamOperator] = [:]
    var stores: [String: RowStore] = [:]

    /// `durableStores`: row stores write every row to disk (checkpointing is on).
    init(spec: PipelineSpec, shape: StreamShape, seed: UInt64, shard: Int64, sharded: Bool = false, rowStoreDir: String,
         durableStores: Bool = false, featureNames: [String]? = nil) throws(EngineError) {
        self.featureNames = featureNames
        self.spec = spec
        self.shape = shape
        self.seed = seed
        self.shard = shard
        self.sharded = sharded
        self.rowStoreDir = rowStoreDir
        for s in spec.operators {
            ops[s.id] = try s.descriptor.make(s.params, context(s))
            if s.descriptor.multiPass && stores[s.input] == nil {
                stores[s.input] = try RowStore(columns: shape.columns, hasTarget: shape.hasTarget,
                                               memoryBytes: spec.rowstoreMemoryMB << 20,
                                               spillPath: storePath(s.input), durable: durableStores, shard: shard)
            }
        }
    }

    func storePath(_ input: String) -> String { rowStoreDir + "/" + input + ".rows" }

    /// Samplers pass rows on with the same columns and target (and add weights), so every operator sees the
    /// source's shape; only the row count is unknown downstream of a sampler, and its rows are weighted.
    func context(_ s: OperatorSpec) -> OperatorContext {
        var sh = shape
        if s.input != "source" { sh.rowsKnown = nil; sh.float32Values = false }
        return OperatorContext(shape: sh, seed: seed, shard: shard, purpose: CRC32C.checksum(Array(s.id.utf8)), sharded: sharded,
                               featureNames: featureNames)
    }

    /// Every reader of the source takes float32 rows (`StreamOperator.readsFloat32Rows`) and no row store
    /// copies them: source batches need not fill `features`.
    var sourceReadsFloat32Only: Bool {
        stores["source"] == nil && spec.consumers(of: "source").allSatisfy { ops[$0.id]!.readsFloat32Rows }
    }

    /// Feeds one batch to the consumers of `from` ("source" or a sampler's id).
    func feed(_ batch: RowBatch, from: String) throws(EngineError) {
        if let store = stores[from] { try store.append(batch) }
        for s in spec.consumers(of: from) { try ops[s.id]!.update(batch) }
    }

    /// Every operator's state and every row store's length, for a checkpoint (stores are fsynced first).
    func snapshot() throws(EngineError) -> ([Checkpoint.OperatorState], [Checkpoint.Store]) {
        var states: [Checkpoint.OperatorState] = []
        for s in spec.operators {
            states.append(Checkpoint.OperatorState(id: s.id, kind: s.kind, version: s.descriptor.stateVersion,
                                                   state: ops[s.id]!.encodeState()))
        }
        var st: [Checkpoint.Store] = []
        for (input, store) in stores.sorted(by: { $0.key < $1.key }) {
            try store.sync()
            st.append(Checkpoint.Store(input: input, rows: UInt64(store.count), fileBytes: UInt64(store.fileBytes)))
        }
        return (states, st)
    }

    /// Restores operator states and row stores from a checkpoint.
    func restore(_ c: Checkpoint, location where_: String) throws(EngineError) {
        for s in spec.operators {
            guard let o = c.operators.first(where: { $0.id == s.id }), o.kind == s.kind else {
                throw .usage(where_, "the checkpoint has no state for operator '\(s.id)' (\(s.kind))")
            }
            ops[s.id] = try s.descriptor.restore(kind: o.kind, version: o.version, payload: o.state, params: s.params,
                                                 context: context(s), location: "\(where_): operator '\(s.id)'")
        }
        for (input, _) in stores {
            guard let rec = c.stores.first(where: { $0.input == input }) else {
                throw .usage(where_, "the checkpoint has no row store for '\(input)'")
            }
            stores[input] = try RowStore(columns: shape.columns, hasTarget: shape.hasTarget,
                                         memoryBytes: spec.rowstoreMemoryMB << 20, spillPath: storePath(input),
                                         durable: true, resumeRows: Int(rec.rows), shard: shard)
        }
    }

    /// The finish cascade from operator `from` on: in topological order, multi-pass operators step over their
    /// row store (`afterStep` runs between steps: checkpoints and signals), every operator finishes, its
    /// output is handed to `finished` at once, and a sampler's rows feed its consumers before those finish.
    ///
    /// An operator that fails (its own numerical failure or limit: any error but an I/O error or a signal) is
    /// handed to `failed` and the others go on — an operator reading a failed sampler fails with it; at the
    /// end the first failure is thrown, so the run still ends with that operator's exit code.
    func finishAll(from start: Int = 0,
                   afterStep: (_ index: Int) throws(EngineError) -> Void = { _ throws(EngineError) in },
                   finished: (_ id: String, _ output: OperatorOutput) throws(EngineError) -> Void,
                   failed: (_ id: String, _ error: EngineError) throws(EngineError) -> Void = { _, e throws(EngineError) in throw e })
        throws(EngineError) {
        var firstFailure: EngineError?
        var failedIDs: Set<String> = []
        for (i, s) in spec.operators.enumerated() where i >= start {
            if failedIDs.contains(s.input) {
                let e = EngineError(.dataError, s.location, "not run: its input '\(s.input)' failed")
                failedIDs.insert(s.id)
                try failed(s.id, e)
                continue
            }
            do throws(EngineError) {
                var op = ops[s.id]!
                if s.descriptor.multiPass, var iterative = op as? any IterativeOperator {
                    let store = stores[s.input]!
                    try store.seal()
                    // A failed read of the spill file surfaces here (exit 74), before the step's result is used.
                    func step() throws(EngineError) -> StepResult {
                        let r: StepResult
                        do { r = try iterative.step(store) } catch { throw store.readError ?? error }
                        if let e = store.readError { throw e }
                        return r
                    }
                    while try step() == .more {
                        ops[s.id] = iterative
                        try afterStep(i)
                    }
                    op = iterative
                }
                let out = try op.finish()
                ops[s.id] = op
                for b in out.emittedRows where b.count > 0 { try feed(b, from: s.id) }
                try finished(s.id, out)
            } catch {
                if [.ioError, .interrupted, .terminated].contains(error.status) { throw error }
                failedIDs.insert(s.id)
                if firstFailure == nil { firstFailure = error }
                try failed(s.id, error)
            }
        }
        if let firstFailure { throw firstFailure }
    }

    /// The enveloped state of a mergeable operator (state.bin), nil for the others.
    func stateBytes(_ id: String) -> [UInt8]? {
        guard let s = spec.op(id), s.descriptor.mergeable, let op = ops[id] else { return nil }
        return StateEnvelope(kind: s.kind, stateVersion: s.descriptor.stateVersion, paramsDigest: s.stateDigest,
                             columns: shape.columns, hasTarget: shape.hasTarget, shard: shard, seed: seed,
                             payload: op.encodeState()).encoded()
    }
}
