import Foundation
import EngineCore
import Manifest
import Operators
import RowIO

/// `rowflow merge`: combines the states of shard runs (`<run-dir>/<id>/state.bin`) into the output layout of
/// one run (DESIGN.md §7). States must come from the same manifest parameters and shape; operators that read
/// the source must be mergeable (exit 64 otherwise); operators downstream of a merged sampler run on the
/// merged sample. Shards are merged in the order given.
public struct Merger: Sendable {
    public let manifestPath: String
    public let inputs: [String]
    public let out: String
    let registry: OperatorRegistry

    public init(manifestPath: String, inputs: [String], out: String, registry: OperatorRegistry = .standard) {
        self.manifestPath = manifestPath
        self.inputs = inputs
        self.out = out
        self.registry = registry
    }

    public func run() throws(EngineError) {
        let started = monotonicSeconds()
        let spec = try ManifestParser.load(manifestPath, registry: registry)
        guard !inputs.isEmpty else { throw .usage("merge", "no shard runs given") }
        for s in spec.consumers(of: "source") where !s.descriptor.mergeable {
            throw .usage(s.location, "operator '\(s.id)' (\(s.kind)) is not mergeable, so shard runs cannot be combined",
                         hint: s.descriptor.mergeHint ?? "run it on the whole input, or use a mergeable operator (gram, moments, truncated-svd, sensitivity-sample) on the source")
        }
        // Every source operator's state from every shard, checked against this manifest.
        var merged: [String: any StreamOperator] = [:]
        var shape: StreamShape?
        var rows: Int64 = 0
        for (k, path) in inputs.enumerated() {
            guard FileBytes.isDirectory(path) else {
                throw .usage(path, "expected a shard run directory (state blobs are not supported by this build)")
            }
            for s in spec.consumers(of: "source") {
                let file = path + "/" + s.id + "/state.bin"
                let env = try StateEnvelope.decode(try FileBytes.read(file, what: "state"), context: file)
                guard env.kind == s.kind else {
                    throw .usage(file, "state is of operator kind '\(env.kind)', the manifest's '\(s.id)' is '\(s.kind)'")
                }
                guard env.paramsDigest == s.params.digest else {
                    throw .usage(file, "state was written with different parameters for '\(s.id)' than this manifest's",
                                 hint: "merge with the manifest the shards ran with")
                }
                guard env.stateVersion == s.descriptor.stateVersion else {
                    throw .data(file, "state version \(env.stateVersion), this rowflow reads \(s.descriptor.stateVersion)")
                }
                let sh = StreamShape(columns: env.columns, hasTarget: env.hasTarget)
                if let prev = shape, prev != sh {
                    throw .usage(file, "shard shapes differ: \(prev.columns) columns (target: \(prev.hasTarget)) vs \(sh.columns) (target: \(sh.hasTarget))")
                }
                shape = sh
                let ctx = OperatorContext(shape: sh, seed: env.seed, shard: env.shard, purpose: CRC32C.checksum(Array(s.id.utf8)))
                let op = try s.descriptor.restore(s.params, ctx, env.payload, file)
                if k == 0 {
                    merged[s.id] = op
                } else {
                    var acc = merged[s.id]!
                    try s.descriptor.merge!(&acc, op)
                    merged[s.id] = acc
                }
            }
            rows += shardRows(path)
        }
        let writer = OutputWriter(dir: out)
        try writer.prepare()
        let graph = try Graph(spec: spec, shape: shape!, seed: 0, shard: 0, rowStoreDir: out + "/rowstore")
        for (id, op) in merged { graph.ops[id] = op }
        try graph.finishAll { (id, o) throws(EngineError) in
            try writer.writeOperator(spec.op(id)!, output: o, state: graph.stateBytes(id))
        }
        let seconds = monotonicSeconds() - started
        try writer.writeRunJSON(.object([
            ("status", .string("complete")), ("rows_read", .int(rows)), ("rows_skipped", .int(0)),
            ("rows_quarantined", .int(0)), ("bytes_in", .int(0)), ("seconds", .double((seconds * 1000).rounded() / 1000)),
            ("rows_per_s", .double(0)), ("manifest_sha256", .string(spec.sha256)), ("seed", .int(0)), ("shard", .int(0)),
            ("version", .string(RowflowVersion.string)), ("resumed_from_row", .int(0)),
            ("merged_from", .array(inputs.map { .string($0) })), ("manifest", .string(manifestPath)),
            ("operators", .array(spec.operators.map { .string($0.id) })),
        ]))
    }

    /// rows_read of a shard run, from its run.json (0 when absent).
    func shardRows(_ dir: String) -> Int64 {
        guard let bytes = try? FileBytes.read(dir + "/run.json", what: "run.json") else { return 0 }
        let text = String(decoding: bytes, as: UTF8.self)
        guard let r = text.range(of: "\"rows_read\": ") else { return 0 }
        return Int64(text[r.upperBound...].prefix { $0.isNumber }) ?? 0
    }
}
