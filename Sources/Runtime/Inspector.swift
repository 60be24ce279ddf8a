import EngineCore
import Foundation
import RowIO

/// `rowflow inspect`: a run directory (run.json and each operator's summary), a .npy file (dtype, shape, the
/// first values), a state file (its envelope) or a state blob (binary or base64 lines: its header and states).
public enum Inspector {
    public static func describe(_ path: String) throws(EngineError) -> String {
        guard FileBytes.exists(path) else { throw .notFound(path, "no such file or directory") }
        if FileBytes.isDirectory(path) { return try describeRun(path) }
        let bytes = try FileBytes.read(path, what: "file")
        if bytes.starts(with: [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]) {
            let a = try NpyReader.read(path)
            let head = a.values.prefix(8).map { JSON.format($0) }.joined(separator: ", ")
            return "\(path): npy \(a.dtype), shape \(a.shape)\nfirst values: [\(head)\(a.values.count > 8 ? ", …" : "")]"
        }
        if bytes.starts(with: StateEnvelope.magic) {
            let e = try StateEnvelope.decode(bytes, location: path)
            return """
            \(path): rowflow state (format \(StateEnvelope.formatVersion)), checksum OK
            operator kind: \(e.kind) (state version \(e.stateVersion))
            params digest: \(e.paramsDigest)
            columns: \(e.columns), target: \(e.hasTarget), shard: \(e.shard), seed: \(e.seed)
            payload: \(e.payload.count) bytes
            """
        }
        if bytes.starts(with: Checkpoint.magic) {
            let c = try Checkpoint.decode(bytes, location: path)
            var lines = [
                "\(path): rowflow checkpoint (format \(Checkpoint.formatVersion)), checksum OK",
                "manifest sha256: " + c.manifestSHA256.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(),
                "seed: \(c.seed), shard: \(c.shard)",
                "taken after \(c.rowsFed) rows fed (\(c.rowsConsumed) read, \(c.rowsSkipped) skipped, \(c.rowsQuarantined) quarantined; \(c.bytesIn) bytes in)"
                    + (c.finishing ? ", after the stream, at operator \(c.finishIndex + 1)" : ""),
            ]
            for st in c.stores { lines.append("  row store '\(st.input)': \(st.rows) rows, \(st.fileBytes) bytes on disk") }
            for o in c.operators { lines.append("  \(o.id): \(o.kind) (state version \(o.version)), \(o.state.count) bytes") }
            if !c.shuffle.isEmpty { lines.append("  shuffle buffer: \(c.shuffle.count) bytes") }
            return lines.joined(separator: "\n")
        }
        if StateBlob.looksLikeBlob(bytes) {
            let blobs = try StateBlob.decodeAll(bytes, location: path)
            var lines: [String] = []
            for (i, b) in blobs.enumerated() {
                let form = bytes.starts(with: StateBlob.magic) ? "binary" : "base64 line \(i + 1)"
                lines.append("\(path): rowflow state blob (format \(StateBlob.formatVersion), \(form)), checksum OK")
                lines.append("manifest sha256: " + b.manifestSHA256.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined())
                lines.append("shards: \(b.shards.map(String.init).joined(separator: ", ")), seed: \(b.seed)")
                lines.append("rows read \(b.rowsRead), skipped \(b.rowsSkipped), quarantined \(b.rowsQuarantined); \(b.bytesIn) bytes in")
                if b.isEmpty { lines.append("empty shard: no operator states (merge skips it)") }
                for e in b.operators {
                    let env = try StateEnvelope.decode(e.envelope, location: "\(path): '\(e.id)'")
                    lines.append("  \(e.id): \(env.kind) (state version \(env.stateVersion)), \(env.columns) columns, target: \(env.hasTarget), \(env.payload.count) bytes, params digest \(env.paramsDigest.prefix(16))…")
                }
            }
            return lines.joined(separator: "\n")
        }
        throw .usage(path, "not a run directory, .npy file, rowflow state, state blob or checkpoint")
    }

    /// A run directory in words: the run's status and counts, then each operator's scalars and arrays
    /// (short arrays in full, long ones by shape).
    static func describeRun(_ path: String) throws(EngineError) -> String {
        var lines: [String] = []
        let runPath = path + "/run.json"
        guard FileBytes.exists(runPath) else { throw .usage(path, "no run.json: not a rowflow output directory") }
        let run = try JSONObject.read(runPath)
        func field(_ k: String) -> String { run.value[k]?.description ?? "0" }
        let status = run.string("status") ?? "?"
        lines.append("run \(path): \(status)" + (status == "complete" ? "" : "  ← NOT COMPLETE"))
        if let e = run.string("error") { lines.append("  error: \(e)") }
        lines.append("  rows read \(field("rows_read")), skipped \(field("rows_skipped")), quarantined \(field("rows_quarantined")); \(field("bytes_in")) bytes in \(field("seconds")) s (\(field("rows_per_s")) rows/s)")
        for id in run.strings("operators") ?? [] {
            let sp = path + "/" + id + "/summary.json"
            guard FileBytes.exists(sp) else { lines.append("\(id): no output"); continue }
            let s = try JSONObject.read(sp)
            lines.append("\(id) (\(s.string("op") ?? "?")):")
            for (k, v) in s.pairs.sorted(by: { $0.0 < $1.0 }) where !["id", "op", "params"].contains(k) {
                lines.append("  \(k): \(v)")
            }
            let files = ((try? FileManager.default.contentsOfDirectory(atPath: path + "/" + id)) ?? []).filter { $0.hasSuffix(".npy") }.sorted()
            for f in files {
                let a = try NpyReader.read(path + "/" + id + "/" + f)
                let body = a.values.count <= 16 ? "[" + a.values.map { JSON.format(($0 * 1e6).rounded() / 1e6) }.joined(separator: ", ") + "]" : "shape \(a.shape)"
                lines.append("  \(f.dropLast(4)): \(body)")
            }
        }
        return lines.joined(separator: "\n")
    }
}
