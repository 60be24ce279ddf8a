import EngineCore
import Foundation
import RowIO

/// `rowflow inspect`: a run directory (run.json and each operator's summary), a .npy file (dtype, shape, the
/// first values) or a state file (its envelope).
public enum Inspector {
    public static func describe(_ path: String) throws(EngineError) -> String {
        guard FileBytes.exists(path) else { throw .notFound(path, "no such file or directory") }
        if FileBytes.isDirectory(path) {
            var lines: [String] = []
            let run = path + "/run.json"
            if FileBytes.exists(run) {
                lines.append("== run.json")
                lines.append(String(decoding: try FileBytes.read(run, what: "run.json"), as: UTF8.self))
            } else {
                lines.append("(no run.json: not a rowflow output directory?)")
            }
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: path))?.sorted() ?? []
            for e in entries where FileBytes.exists(path + "/" + e + "/summary.json") {
                lines.append("== \(e)/summary.json")
                lines.append(String(decoding: try FileBytes.read(path + "/" + e + "/summary.json", what: "summary"), as: UTF8.self))
                let arrays = ((try? FileManager.default.contentsOfDirectory(atPath: path + "/" + e)) ?? []).filter { $0.hasSuffix(".npy") }.sorted()
                for a in arrays {
                    let arr = try NpyReader.read(path + "/" + e + "/" + a)
                    lines.append("   \(a): \(arr.dtype) shape \(arr.shape)")
                }
            }
            return lines.joined(separator: "\n")
        }
        let bytes = try FileBytes.read(path, what: "file")
        if bytes.starts(with: [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]) {
            let a = try NpyReader.read(path)
            let head = a.values.prefix(8).map { JSON.format($0) }.joined(separator: ", ")
            return "\(path): npy \(a.dtype), shape \(a.shape)\nfirst values: [\(head)\(a.values.count > 8 ? ", …" : "")]"
        }
        if bytes.starts(with: StateEnvelope.magic) {
            let e = try StateEnvelope.decode(bytes, context: path)
            return """
            \(path): rowflow state (format \(StateEnvelope.formatVersion)), checksum OK
            operator kind: \(e.kind) (state version \(e.stateVersion))
            params digest: \(e.paramsDigest)
            columns: \(e.columns), target: \(e.hasTarget), shard: \(e.shard), seed: \(e.seed)
            payload: \(e.payload.count) bytes
            """
        }
        throw .usage(path, "not a run directory, .npy file or rowflow state")
    }
}
