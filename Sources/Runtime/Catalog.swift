import EngineCore
import Operators

/// `rowflow operators`: every operator with its parameters, defaults, required flags and outputs.
public enum Catalog {
    public static func json(_ registry: OperatorRegistry = .standard) -> JSON {
        .array(registry.descriptors.map { d in
            .object([
                ("op", .string(d.kind)),
                ("summary", .string(d.summary)),
                ("mergeable", .bool(d.mergeable)),
                ("multi_pass", .bool(d.multiPass)),
                ("emits_rows", .bool(d.emitsRows)),
                ("parameters", .array(d.parameters.map { p in
                    .object([("name", .string(p.name)), ("type", .string(p.kind.typeName)),
                             ("default", p.defaultValue ?? .null), ("required", .bool(p.required)), ("doc", .string(p.doc))])
                })),
                ("outputs", .array(d.outputs.map { .string($0) })),
                ("examples", .array(d.info.examples.map { e in
                    .object([("name", .string(e.name)), ("params", .object(e.params)), ("target", .bool(e.target)),
                             ("weighted", .bool(e.weighted)), ("grouped", .bool(e.grouped)),
                             ("merge_tolerance", e.mergeTolerance.map { .double($0) } ?? .null)])
                })),
            ])
        })
    }

    public static func text(_ registry: OperatorRegistry = .standard) -> String {
        var lines: [String] = []
        for d in registry.descriptors {
            lines.append("\(d.kind)\(d.mergeable ? "  [mergeable]" : "")\(d.multiPass ? "  [multi-pass]" : "")")
            lines.append("  \(d.summary)")
            if d.parameters.isEmpty { lines.append("  parameters: none") }
            for p in d.parameters {
                let def = p.required ? "required" : "default \(p.defaultValue?.encoded() ?? "none")"
                lines.append("  \(p.name): \(p.kind.typeName), \(def) — \(p.doc)")
            }
            lines.append("  outputs: " + d.outputs.joined(separator: ", ") + ", summary.json" + (d.mergeable ? ", state.bin" : ""))
            for e in d.info.examples {
                lines.append("  example: { " + e.params.map { "\($0.0): \($0.1.encoded())" }.joined(separator: ", ") + " }")
            }
            lines.append("")
        }
        return lines.joined(separator: "\n")
    }
}
