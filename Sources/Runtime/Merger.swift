import EngineCore
import LinearAlgebra
import Manifest
import Operators
import RowIO

/// `rowflow merge`: combines the states of shard runs into the output layout of one run (docs/checkpoints-and-merge.md).
///
/// Inputs are shard run directories (`<run-dir>/<id>/state.bin`), state blobs (`rowflow run --state-out`;
/// binary files, or text files of base64 lines, one blob per line) or `-` (base64 lines on stdin). States must
/// come from the same manifest parameters and shape; operators that read the source must be mergeable (exit 64
/// otherwise); operators downstream of a merged sampler run on the merged sample. Inputs are merged in the
/// order given (lines of a file in order); empty shards are skipped; a shard number met twice is refused
/// (double counting). `--out` writes the layout of one run, `--state-out` the merged states as one blob again
/// (for tree reductions); at least one of them.
public struct Merger: Sendable {
    public let manifestPath: String
    public let inputs: [String]
    public let out: String?
    public let stateOut: String?
    let registry: OperatorRegistry
    let stdout: @Sendable (String) -> Void
    let stderr: @Sendable (String) -> Void

    public init(manifestPath: String, inputs: [String], out: String?, stateOut: String? = nil, registry: OperatorRegistry = .standard,
                stdout: @escaping @Sendable (String) -> Void = Console.out, stderr: @escaping @Sendable (String) -> Void = Console.err) {
        self.manifestPath = manifestPath
        self.inputs = inputs
        self.out = out
        self.stateOut = stateOut
        self.registry = registry
        self.stdout = stdout
        self.stderr = stderr
    }

    /// One shard's contribution: its states by operator id and its counters.
    struct Part {
        var label: String
        var envelopes: [String: [UInt8]]
        var rows: Int64 = 0, skipped: Int64 = 0, quarantined: Int64 = 0, bytesIn: Int64 = 0
        var seed: UInt64 = 0
        /// The shard numbers it covers; nil when unknown (a run directory without run.json).
        var shards: [Int64]?
        var manifestSHA256: [UInt8]?
        var isEmpty: Bool { envelopes.isEmpty }
    }

    public func run() throws(EngineError) {
        let started = monotonicSeconds()
        let spec = try ManifestParser.load(manifestPath, registry: registry)
        guard !inputs.isEmpty else { throw .usage("merge", "no shard runs or state blobs given") }
        guard out != nil || stateOut != nil else { throw .usage("merge", "nowhere to write", hint: "give --out <dir>, --state-out <path>|-, or both") }
        for s in spec.consumers(of: "source") where !s.descriptor.mergeable {
            throw .usage(s.location, "operator '\(s.id)' (\(s.kind)) is not mergeable, so shard runs cannot be combined",
                         hint: s.descriptor.mergeHint ?? "run it on the whole input, or use a mergeable operator (\(registry.mergeableKinds.joined(separator: ", "))) on the source")
        }
        let sources = spec.consumers(of: "source")
        var parts: [Part] = []
        for path in inputs { parts += try load(path, spec: spec) }

        // A shard counted twice would be counted twice in every sum: refuse rather than guess.
        var seen: [Int64: String] = [:]
        for p in parts where !p.isEmpty {
            for k in p.shards ?? [] {
                if let first = seen[k] {
                    throw .usage(p.label, "shard \(k) is also in \(first): merging it twice would count its rows twice",
                                 hint: "give each shard once (keep only the blob of the successful attempt)")
                }
                seen[k] = p.label
            }
        }
        let digest = StateBlob.digest(hex: spec.sha256)
        for p in parts where p.manifestSHA256 != nil && p.manifestSHA256! != digest {
            stderr("rowflow: warning: \(p.label): written with a manifest whose sha256 differs from \(manifestPath)'s (operator parameters are still checked)\n")
        }
        let full = parts.filter { !$0.isEmpty }
        guard let first = full.first else {
            if out == nil, let stateOut {
                // A tree reduction may pair two empty shards: their merge is an empty blob covering both.
                let blob = StateBlob(manifestSHA256: digest, seed: parts.first?.seed ?? 0, rowsRead: 0,
                                     rowsSkipped: UInt64(parts.reduce(0) { $0 + $1.skipped }),
                                     rowsQuarantined: UInt64(parts.reduce(0) { $0 + $1.quarantined }),
                                     bytesIn: UInt64(parts.reduce(0) { $0 + $1.bytesIn }),
                                     shards: parts.flatMap { $0.shards ?? [] }.sorted(), operators: []).encoded()
                try RunRecord.writeBlob(blob, to: stateOut, stdout: stdout)
                return
            }
            throw .data("merge", "no rows: every input is an empty shard")
        }

        // Every source operator's state from every non-empty shard, checked against this manifest.
        var merged: [String: any StreamOperator] = [:]
        var origin: [String: StateEnvelope] = [:]
        var shape: StreamShape?
        for p in full {
            for id in p.envelopes.keys where spec.op(id)?.input != "source" {
                throw .usage(p.label, "holds a state for operator '\(id)', which does not read the source in \(manifestPath)",
                             hint: "merge with the manifest the shards ran with")
            }
            for s in sources {
                let file = FileBytes.isDirectory(p.label) ? p.label + "/" + s.id + "/state.bin" : p.label + ": '" + s.id + "'"
                guard let bytes = p.envelopes[s.id] else {
                    throw .usage(p.label, "no state for operator '\(s.id)' (\(s.kind))", hint: "merge with the manifest the shards ran with")
                }
                let env = try StateEnvelope.decode(bytes, location: file)
                guard env.kind == s.kind else {
                    throw .usage(file, "state is of operator kind '\(env.kind)', the manifest's '\(s.id)' is '\(s.kind)'")
                }
                guard env.paramsDigest == s.stateDigest else {
                    throw .usage(file, "state was written with different parameters for '\(s.id)' than this manifest's",
                                 hint: "merge with the manifest the shards ran with")
                }
                let sh = StreamShape(columns: env.columns, hasTarget: env.hasTarget, float32Values: spec.source.float32Values)
                if let prev = shape, prev != sh {
                    throw .usage(file, "shard shapes differ: \(prev.columns) columns (target: \(prev.hasTarget)) vs \(sh.columns) (target: \(sh.hasTarget))")
                }
                shape = sh
                let ctx = OperatorContext(shape: sh, seed: env.seed, shard: env.shard, purpose: CRC32C.checksum(Array(s.id.utf8)))
                let op = try s.descriptor.restore(kind: env.kind, version: env.stateVersion, payload: env.payload, params: s.params,
                                                  context: ctx, location: file)
                if var acc = merged[s.id] {
                    try s.descriptor.merge(&acc, op)
                    merged[s.id] = acc
                } else {
                    merged[s.id] = op
                    origin[s.id] = env
                }
            }
        }
        let rows = parts.reduce(Int64(0)) { $0 + $1.rows }
        let shards = parts.contains { $0.shards == nil } ? nil : parts.flatMap { $0.shards! }.sorted()

        if let stateOut {
            // The merged states, enveloped as the first shard's were: finish() leaves these operators' states
            // as they are, so no finish is needed for the blob.
            var entries: [StateBlob.Entry] = []
            for s in sources {
                let o = origin[s.id]!
                let env = StateEnvelope(kind: s.kind, stateVersion: s.descriptor.stateVersion, paramsDigest: s.stateDigest,
                                        columns: o.columns, hasTarget: o.hasTarget, shard: o.shard, seed: o.seed,
                                        payload: merged[s.id]!.encodeState())
                entries.append(StateBlob.Entry(id: s.id, envelope: env.encoded()))
            }
            let blob = StateBlob(manifestSHA256: digest, seed: first.seed, rowsRead: UInt64(rows),
                                 rowsSkipped: UInt64(parts.reduce(0) { $0 + $1.skipped }),
                                 rowsQuarantined: UInt64(parts.reduce(0) { $0 + $1.quarantined }),
                                 bytesIn: UInt64(parts.reduce(0) { $0 + $1.bytesIn }),
                                 shards: shards ?? parts.flatMap { $0.shards ?? [] }.sorted(), operators: entries).encoded()
            try RunRecord.writeBlob(blob, to: stateOut, stdout: stdout)
        }
        guard let out else { return }
        let writer = OutputWriter(dir: out)
        try writer.prepare()
        defer { OutputLock.release(out) }
        let graph = try Graph(spec: spec, shape: shape!, seed: first.seed, shard: 0, rowStoreDir: out + "/rowstore")
        for (id, op) in merged { graph.ops[id] = op }
        var record = RunRecord(manifest: manifestPath)
        try graph.finishAll(finished: { (id, o) throws(EngineError) in
            try writer.writeOperator(spec.op(id)!, output: o, state: graph.stateBytes(id))
            for w in o.warnings {
                stderr(w.line(id: id))
                record.warnings.append((id, w))
            }
        })
        // A merge reads no rows itself: rows_per_s stays 0 (newRows 0).
        record.status = "complete"
        record.rowsRead = rows
        record.rowsSkipped = parts.reduce(0) { $0 + $1.skipped }
        record.rowsQuarantined = parts.reduce(0) { $0 + $1.quarantined }
        record.bytesIn = parts.reduce(0) { $0 + $1.bytesIn }
        record.seconds = monotonicSeconds() - started
        record.manifestSHA256 = spec.sha256
        record.seed = first.seed
        record.mergedFrom = inputs
        record.shards = shards
        record.operators = spec.operators.map(\.id)
        try writer.writeRunJSON(record.json)
    }

    /// The shard parts in one input: a run directory (one part), a blob file or stdin (one part per blob).
    func load(_ path: String, spec: PipelineSpec) throws(EngineError) -> [Part] {
        if path != "-" && FileBytes.isDirectory(path) { return [try loadRunDirectory(path, spec: spec)] }
        if path != "-" && !FileBytes.exists(path) { throw .notFound(path, "no such shard run directory or state blob") }
        let bytes = try FileBytes.read(path == "-" ? "/dev/stdin" : path, what: "state blob")
        let label = path == "-" ? "stdin" : path
        guard StateBlob.looksLikeBlob(bytes) else {
            throw .usage(label, "not a shard run directory or a rowflow state blob",
                         hint: "give run directories (rowflow run --out) or blobs (rowflow run --state-out)")
        }
        let blobs = try StateBlob.decodeAll(bytes, location: label)
        return blobs.enumerated().map { (i, b) in
            var envs: [String: [UInt8]] = [:]
            for e in b.operators { envs[e.id] = e.envelope }
            return Part(label: blobs.count == 1 ? label : "\(label):\(i + 1)", envelopes: envs, rows: Int64(b.rowsRead),
                        skipped: Int64(b.rowsSkipped), quarantined: Int64(b.rowsQuarantined), bytesIn: Int64(b.bytesIn),
                        seed: b.seed, shards: b.shards, manifestSHA256: b.manifestSHA256)
        }
    }

    /// A run directory: each source operator's `state.bin` and run.json's counters. A directory with no state
    /// files and no rows read is an empty shard.
    func loadRunDirectory(_ dir: String, spec: PipelineSpec) throws(EngineError) -> Part {
        // No run.json reads as an empty one; a run.json that does not parse is an error, not a shard to trust.
        let runPath = dir + "/run.json"
        let run = FileBytes.exists(runPath) ? try JSONObject.read(runPath) : JSONObject(.object([]))
        func int(_ k: String) -> Int64 { run.int64(k) ?? 0 }
        var part = Part(label: dir, envelopes: [:], rows: int("rows_read"), skipped: int("rows_skipped"),
                        quarantined: int("rows_quarantined"), bytesIn: int("bytes_in"),
                        seed: UInt64(bitPattern: int("seed")))
        if let list = run.value["shards"]?.array {
            part.shards = list.compactMap(\.int64)
        } else if run.value["shard"] != nil {
            part.shards = [int("shard")]
        }
        // A run that failed only at finish (failed_operators) read its input in full: its states are whole.
        if let s = run.string("status"), s != "complete", !(s == "failed" && run.value["failed_operators"] != nil) {
            throw .usage(dir, "the shard run's status is '\(s)', not complete", hint: "re-run (or --resume) that shard first")
        }
        let sources = spec.consumers(of: "source")
        let present = sources.filter { FileBytes.exists(dir + "/" + $0.id + "/state.bin") }
        if present.isEmpty && part.rows == 0 && !run.pairs.isEmpty { return part }
        for s in sources {
            let file = dir + "/" + s.id + "/state.bin"
            part.envelopes[s.id] = try FileBytes.read(file, what: "state")
        }
        return part
    }
}
