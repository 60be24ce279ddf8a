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
    var ops: [String: any StreamOperator] = [:]
    var stores: [String: RowStore] = [:]

    init(spec: PipelineSpec, shape: StreamShape, seed: UInt64, shard: Int64, rowStoreDir: String) throws(EngineError) {
        self.spec = spec
        self.shape = shape
        self.seed = seed
        self.shard = shard
        for s in spec.operators {
            ops[s.id] = try s.descriptor.make(s.params, context(s))
            if s.descriptor.multiPass && stores[s.input] == nil {
                stores[s.input] = RowStore(columns: shape.columns, hasTarget: shape.hasTarget,
                                           memoryBytes: spec.rowstoreMemoryMB << 20,
                                           spillPath: rowStoreDir + "/" + s.input + ".rows")
            }
        }
    }

    /// Samplers pass rows on with the same columns and target (and add weights), so every operator sees the
    /// source's shape; only the row count is unknown downstream of a sampler.
    func context(_ s: OperatorSpec) -> OperatorContext {
        var sh = shape
        if s.input != "source" { sh.rowsKnown = nil }
        return OperatorContext(shape: sh, seed: seed, shard: shard, purpose: CRC32C.checksum(Array(s.id.utf8)))
    }

    /// Feeds one batch to the consumers of `from` ("source" or a sampler's id).
    func feed(_ batch: RowBatch, from: String) throws(EngineError) {
        if let store = stores[from] { try store.append(batch) }
        for s in spec.consumers(of: from) { try ops[s.id]!.update(batch) }
    }

    /// The finish cascade: in topological order, multi-pass operators step over their row store, every
    /// operator finishes, and a sampler's rows feed its consumers before those finish.
    func finishAll() throws(EngineError) -> [(String, OperatorOutput)] {
        var outputs: [(String, OperatorOutput)] = []
        for s in spec.operators {
            var op = ops[s.id]!
            if s.descriptor.multiPass, var iterative = op as? any IterativeOperator {
                let store = stores[s.input]!
                try store.seal()
                while try iterative.step(store) == .more {}
                op = iterative
            }
            let out = try op.finish()
            ops[s.id] = op
            for b in out.emittedRows where b.count > 0 { try feed(b, from: s.id) }
            outputs.append((s.id, out))
        }
        return outputs
    }

    /// The enveloped state of a mergeable operator (state.bin), nil for the others.
    func stateBytes(_ id: String) -> [UInt8]? {
        guard let s = spec.op(id), s.descriptor.mergeable, let op = ops[id] else { return nil }
        return StateEnvelope(kind: s.kind, stateVersion: s.descriptor.stateVersion, paramsDigest: s.params.digest,
                             columns: shape.columns, hasTarget: shape.hasTarget, shard: shard, seed: seed,
                             payload: op.encodeState()).encoded()
    }
}
