import EngineCore

/// One operator in a validated pipeline.
public struct OperatorSpec: Sendable {
    public let id: String
    public let kind: String
    /// "source" or the id of an upstream operator that emits rows.
    public let input: String
    public let params: ParamValues
    public let descriptor: OperatorDescriptor
    /// Where the operator was declared (`file:line:column`).
    public let location: String
    /// The parameters' digest in this operator's state envelope (finish-only parameters left out).
    public var stateDigest: String { descriptor.stateDigest(params) }
}

public struct CheckpointSpec: Sendable, Equatable {
    public var everyRows: Int64
    public var keep: Int
}

/// A manifest after every check of docs/manifest.md: operators in topological order (each after its input).
public struct PipelineSpec: Sendable {
    public var path: String
    public var text: String
    public var sha256: String
    public var source: SourceConfig
    public var rowstoreMemoryMB: Int
    public var operators: [OperatorSpec]
    public var checkpoint: CheckpointSpec?

    public func op(_ id: String) -> OperatorSpec? { operators.first { $0.id == id } }
    /// Operators reading from `id` ("source" for the stream).
    public func consumers(of id: String) -> [OperatorSpec] { operators.filter { $0.input == id } }
    /// Whether rows reaching operator `id` carry a target.
    public var hasTarget: Bool { source.hasTarget }

    /// A plain-text rendering of the graph (for `rowflow validate`).
    public func describe() -> String {
        var lines = ["manifest \(path) (sha256 \(sha256.prefix(16))…)"]
        var src = "source: format \(source.format.rawValue)"
        if let c = source.columns { src += ", \(c) columns" }
        if source.target != .none { src += ", target \(source.target)" }
        if source.shuffle > 0 { src += ", shuffle buffer \(source.shuffle) rows" }
        src += ", batch_rows \(source.batchRows)"
        lines.append(src)
        func walk(_ id: String, depth: Int) {
            for o in consumers(of: id) {
                let params = o.params.values.map { "\($0.0)=\($0.1.encoded())" }.joined(separator: " ")
                lines.append(String(repeating: "  ", count: depth) + "└─ \(o.id) (\(o.kind))" + (params.isEmpty ? "" : "  " + params))
                walk(o.id, depth: depth + 1)
            }
        }
        walk("source", depth: 1)
        if let c = checkpoint { lines.append("checkpoint: every \(c.everyRows) rows, keep \(c.keep)") }
        lines.append("rowstore: \(rowstoreMemoryMB) MB in memory")
        return lines.joined(separator: "\n")
    }
}
