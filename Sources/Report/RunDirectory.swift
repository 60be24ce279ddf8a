import EngineCore
import Manifest
import RowIO


/// One operator's output folder.
public struct OperatorRun: Sendable {
    public let id: String
    public let dir: String
    /// nil when the operator wrote no summary.json (it did not finish).
    public let summary: JSONObject?
    public var kind: String? { summary?.string("op") }

    /// `<dir>/<name>.npy`, or nil when absent or unreadable (a report never fails on one missing plot).
    public func array(_ name: String) -> NpyReader.Array2D? {
        let p = dir + "/" + name + ".npy"
        guard FileBytes.exists(p) else { return nil }
        return try? NpyReader.read(p)
    }
}

/// A run directory as the report reads it: run.json, each operator's folder, and the manifest when it can
/// still be found (run.json records the path it was run with; it counts only when its sha256 matches).
public struct RunDirectory: Sendable {
    public let path: String
    public let run: JSONObject
    public let operators: [OperatorRun]
    public let manifest: PipelineSpec?
    /// Why the manifest could not be used (shown under the graph), nil when it was.
    public let manifestNote: String?

    public init(_ path: String, registry: OperatorRegistry) throws(EngineError) {
        guard FileBytes.exists(path) else { throw .notFound(path, "no such directory") }
        guard FileBytes.isDirectory(path) else {
            throw .usage(path, "not a directory", hint: "give the --out directory of a `rowflow run`")
        }
        let runPath = path + "/run.json"
        guard FileBytes.exists(runPath) else {
            throw .usage(path, "no run.json: not a rowflow run directory", hint: "give the --out directory of a `rowflow run`")
        }
        self.path = path
        run = try JSONObject.read(runPath)
        guard run.string("status") != nil else { throw .data(runPath, "run.json has no status: not written by rowflow") }

        var spec: PipelineSpec?
        var note: String?
        if let m = run.string("manifest") {
            // A relative path was relative to where `rowflow run` ran: try it as given, then beside the run dir.
            let candidates = m.hasPrefix("/") ? [m] : [m, path + "/../" + m]
            var found = false
            for c in candidates where FileBytes.exists(c) {
                found = true
                if let s = try? ManifestParser.load(c, registry: registry) {
                    if s.sha256 == run.string("manifest_sha256") { spec = s; break }
                    note = "the manifest at \(m) has changed since the run (sha256 differs)"
                } else {
                    note = "the manifest at \(m) no longer parses"
                }
            }
            if !found { note = "the manifest \(m) is not reachable from here" }
        } else {
            note = "run.json names no manifest"
        }
        manifest = spec
        manifestNote = spec == nil ? note : nil

        var ids = run.strings("operators") ?? []
        if ids.isEmpty, let s = spec { ids = s.operators.map(\.id) }
        operators = ids.map { id in
            let d = path + "/" + id
            let s = FileBytes.exists(d + "/summary.json") ? try? JSONObject.read(d + "/summary.json") : nil
            return OperatorRun(id: id, dir: d, summary: s)
        }
    }

    public var status: String { run.string("status") ?? "unknown" }

    /// The operator an operator reads from: "source" or a sampler's id (nil when the manifest is unknown).
    public func input(of id: String) -> String? { manifest?.op(id)?.input }
}
