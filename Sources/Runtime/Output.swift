import EngineCore
import Manifest
import Operators
import RowIO

/// Writes the output layout of DESIGN.md §4. Every file goes to a temporary name and is renamed into
/// place, so a reader never sees half a file; run.json is written `running` first and its final status last.
public struct OutputWriter: Sendable {
    public let dir: String

    public init(dir: String) { self.dir = dir }

    public var runJSONPath: String { dir + "/run.json" }
    public func operatorDir(_ id: String) -> String { dir + "/" + id }

    /// Creates `dir` and proves it writable (exit 74 otherwise) before any data is read.
    public func prepare() throws(EngineError) {
        try FileBytes.makeDirectory(dir)
        try FileBytes.writeAtomically(Array("{}\n".utf8), to: dir + "/.rowflow-write-test")
        _ = unlinkFile(dir + "/.rowflow-write-test")
    }

    public func writeRunJSON(_ json: JSON) throws(EngineError) {
        try FileBytes.writeAtomically(Array((json.encoded(pretty: true) + "\n").utf8), to: runJSONPath, sync: true)
    }

    /// summary.json = id, op, the operator's scalars (which start with rows and weight_sum), then params.
    public func writeOperator(_ spec: OperatorSpec, output: OperatorOutput, state: [UInt8]?, extra: [(String, JSON)] = []) throws(EngineError) {
        let d = operatorDir(spec.id)
        try FileBytes.makeDirectory(d)
        for a in output.arrays {
            try NpyWriter.write(a, to: d + "/" + a.name + ".npy")
        }
        if let state { try FileBytes.writeAtomically(state, to: d + "/state.bin") }
        let summary = JSON.object([("id", .string(spec.id)), ("op", .string(spec.kind))] + output.summary + extra
                                  + [("params", spec.params.json)])
        try FileBytes.writeAtomically(Array((summary.encoded(pretty: true) + "\n").utf8), to: d + "/summary.json")
    }
}

#if canImport(Glibc)
import Glibc
func unlinkFile(_ p: String) -> Int32 { unlink(p) }
#endif

/// Monotonic seconds.
func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
