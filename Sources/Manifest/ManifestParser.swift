import EngineCore
import Yams

/// YAML text → a validated `PipelineSpec`. Every check happens here, before any data is read, and every
/// error names `file:line:column` with a "did you mean" hint where one helps (docs/manifest.md).
///
/// YAML aliases are resolved by sharing, so an anchor bomb costs no memory at parse time; the walk below
/// visits at most `nodeBudget` nodes and rejects anything bigger.
public struct ManifestParser {
    public static let nodeBudget = 100_000
    public static let reservedIDs: Set<String> = ["checkpoints", "rowstore", "source", "quarantine"]

    let path: String
    let registry: OperatorRegistry
    var visited = 0
    /// Features per row when source.columns declares them: operators' column parameters are checked against it.
    var declaredFeatures: Int?

    public init(path: String, registry: OperatorRegistry) {
        self.path = path
        self.registry = registry
    }

    /// Reads and parses a manifest file (exit 66 when it cannot be read).
    public static func load(_ path: String, registry: OperatorRegistry) throws(EngineError) -> PipelineSpec {
        let bytes = try FileBytes.read(path, what: "manifest")
        guard bytes.count <= 1 << 20 else { throw .usage(path, "manifest is \(bytes.count) bytes; the limit is 1 MiB") }
        guard let text = String(validating: bytes, as: UTF8.self), !bytes.contains(0) else {
            throw .usage(path, "manifest is not UTF-8 text")
        }
        var p = ManifestParser(path: path, registry: registry)
        return try p.parse(text)
    }

    func at(_ node: Node?) -> String {
        guard let m = node?.mark else { return "\(path):1:1" }
        return "\(path):\(m.line):\(m.column)"
    }

    mutating func count(_ node: Node) throws(EngineError) {
        visited += 1
        if visited > ManifestParser.nodeBudget {
            throw .usage(at(node), "manifest expands to more than \(ManifestParser.nodeBudget) YAML nodes",
                         hint: "an alias (anchor) bomb? Manifests need no aliases")
        }
    }

    /// Walks the whole composed tree once, stopping at the budget, so that no later step can be made to
    /// walk an exponential alias expansion.
    mutating func countAll(_ node: Node) throws(EngineError) {
        try count(node)
        if let m = node.mapping { for (k, v) in m { try countAll(k); try countAll(v) } }
        if let s = node.sequence { for v in s { try countAll(v) } }
    }

    public mutating func parse(_ text: String) throws(EngineError) -> PipelineSpec {
        let root: Node
        do {
            guard let r = try Yams.compose(yaml: text) else { throw EngineError.usage("\(path):1:1", "manifest is empty") }
            root = r
        } catch let e as EngineError {
            throw e
        } catch let e as YamlError {
            throw ManifestParser.yamlError(e, path: path)
        } catch {
            throw .usage(path, "cannot parse YAML: \(error)")
        }
        try countAll(root)
        guard let top = root.mapping else { throw .usage(at(root), "expected a mapping with version, source and operators") }
        let entries = try keys(top, allowed: ["version", "source", "rowstore", "operators", "checkpoint"], context: "the manifest")
        guard let versionNode = entries["version"] else {
            throw .usage(at(root), "missing required key 'version'", hint: "add `version: 1`")
        }
        let version = try int(versionNode, "version", min: 1, max: Int64.max)
        guard version == 1 else { throw .usage(at(versionNode.1), "unsupported manifest version \(version); this rowflow reads version 1") }
        var source = SourceConfig()
        if let s = entries["source"] { source = try parseSource(s.1) }
        declaredFeatures = source.declaredFeatures
        var memoryMB = 1024
        if let rs = entries["rowstore"] {
            guard let m = rs.1.mapping else { throw .usage(at(rs.1), "rowstore: expected a mapping like { memory_mb: 1024 }") }
            let e = try keys(m, allowed: ["memory_mb"], context: "rowstore")
            if let mm = e["memory_mb"] { memoryMB = Int(try int(mm, "rowstore.memory_mb", min: 1, max: 1 << 30)) }
        }
        guard let opsNode = entries["operators"] else {
            throw .usage(at(root), "missing required key 'operators'", hint: "list at least one operator, e.g. `- { id: m, op: moments }`")
        }
        let ops = try parseOperators(opsNode.1, hasTarget: source.hasTarget)
        var checkpoint: CheckpointSpec?
        if let c = entries["checkpoint"] {
            guard let m = c.1.mapping else { throw .usage(at(c.1), "checkpoint: expected a mapping like { every_rows: 1000000, keep: 2 }") }
            let e = try keys(m, allowed: ["every_rows", "keep"], context: "checkpoint")
            var spec = CheckpointSpec(everyRows: 1_000_000, keep: 2)
            if let v = e["every_rows"] { spec.everyRows = try int(v, "checkpoint.every_rows", min: 1, max: Int64.max) }
            if let v = e["keep"] { spec.keep = Int(try int(v, "checkpoint.keep", min: 1, max: 1000)) }
            checkpoint = spec
        }
        return PipelineSpec(path: path, text: text, sha256: SHA256.hex(Array(text.utf8)), source: source,
                            rowstoreMemoryMB: memoryMB, operators: ops, checkpoint: checkpoint)
    }

    static func yamlError(_ e: YamlError, path: String) -> EngineError {
        switch e {
        case let .scanner(_, problem, mark, _), let .parser(_, problem, mark, _), let .composer(_, problem, mark, _):
            return .usage("\(path):\(mark.line):\(mark.column)", "invalid YAML: \(problem)")
        case let .duplicatedKeysInMapping(duplicates, context):
            return .usage("\(path):\(context.mark.line):\(context.mark.column)", "duplicate key(s) \(duplicates.joined(separator: ", "))")
        default:
            return .usage(path, "invalid YAML: \(e)")
        }
    }

    /// The entries of a mapping as key → (key node, value node), rejecting unknown and duplicate keys.
    mutating func keys(_ m: Node.Mapping, allowed: [String], context: String) throws(EngineError) -> [String: (Node, Node)] {
        var out: [String: (Node, Node)] = [:]
        for (k, v) in m {
            try count(k); try count(v)
            guard let name = k.scalar?.string else { throw .usage(at(k), "\(context): keys must be plain names") }
            guard allowed.contains(name) else {
                throw .usage(at(k), "unknown key '\(name)' in \(context)",
                             hint: Suggest.closest(name, in: allowed).map { "did you mean '\($0)'?" } ?? "allowed: \(allowed.joined(separator: ", "))")
            }
            guard out[name] == nil else { throw .usage(at(k), "duplicate key '\(name)' in \(context)") }
            out[name] = (k, v)
        }
        return out
    }

    /// A 0-based column number (a plain integer) or a column name (any other string, or a quoted one).
    func columnRef(_ n: Node, _ what: String) throws(EngineError) -> ColumnRef {
        let t = try plainScalar(n, what, expected: "a column number or name")
        if n.scalar?.style == .plain, let k = Int(t) {
            guard k >= 0 && k < 1 << 24 else { throw .usage(at(n), "\(what): \(k) is out of range (a 0-based column number)") }
            return .index(k)
        }
        guard !t.isEmpty else { throw .usage(at(n), "\(what): expected a column number or name, found an empty string") }
        return .name(ColumnName(t, location: at(n)))
    }

    func plainScalar(_ n: Node, _ what: String, expected: String) throws(EngineError) -> String {
        guard let s = n.scalar else { throw .usage(at(n), "\(what): expected \(expected), found a \(n.mapping != nil ? "mapping" : "sequence")") }
        return s.string
    }

    func int(_ e: (Node, Node), _ what: String, min: Int64, max: Int64) throws(EngineError) -> Int64 {
        try int(e.1, what, min: min, max: max)
    }

    func int(_ n: Node, _ what: String, min: Int64, max: Int64) throws(EngineError) -> Int64 {
        let s = try plainScalar(n, what, expected: "an integer")
        guard n.scalar?.style == .plain, let v = Int64(s) else { throw .usage(at(n), "\(what): expected an integer, found '\(s)'") }
        guard v >= min && v <= max else {
            throw .usage(at(n), "\(what): \(v) is out of range [\(min), \(max == Int64.max ? "∞" : String(max))]")
        }
        return v
    }

    func bool(_ n: Node, _ what: String) throws(EngineError) -> Bool {
        let s = try plainScalar(n, what, expected: "true or false")
        switch s {
        case "true", "True", "yes": return true
        case "false", "False", "no": return false
        default: throw .usage(at(n), "\(what): expected true or false, found '\(s)'")
        }
    }

    func choice<T: RawRepresentable & CaseIterable>(_ n: Node, _ what: String, _: T.Type) throws(EngineError) -> T where T.RawValue == String {
        let names = T.allCases.map(\.rawValue)
        let s = try plainScalar(n, what, expected: "one of " + names.joined(separator: " | "))
        guard let v = T(rawValue: s) else {
            throw .usage(at(n), "\(what): '\(s)' is not one of \(names.joined(separator: " | "))",
                         hint: Suggest.closest(s, in: names).map { "did you mean '\($0)'?" })
        }
        return v
    }

    mutating func parseSource(_ n: Node) throws(EngineError) -> SourceConfig {
        guard let m = n.mapping else { throw .usage(at(n), "source: expected a mapping (format, columns, target, …)") }
        let e = try keys(m, allowed: ["format", "columns", "target", "weight", "select", "names", "header", "on_bad_row",
                                      "allow_nonfinite", "shuffle", "batch_rows"], context: "source")
        var s = SourceConfig()
        if let v = e["format"] { s.format = try choice(v.1, "source.format", SourceConfig.Format.self) }
        if let v = e["columns"] { s.columns = Int(try int(v, "source.columns", min: 1, max: 1 << 24)) }
        if let v = e["target"] {
            let t = try plainScalar(v.1, "source.target", expected: "none | last | first | a column number or name")
            // The keywords win however they are quoted (a manifest written as JSON quotes every string); a
            // column named like one is reached by its index.
            switch t {
            case "none": s.target = .none
            case "last": s.target = .last
            case "first": s.target = .first
            default:
                switch try columnRef(v.1, "source.target") {
                case let .index(k): s.target = .column(k)
                case let .name(n): s.target = .named(n)
                }
            }
        }
        if let v = e["weight"] {
            let t = try plainScalar(v.1, "source.weight", expected: "none, a column number or a column name")
            if t != "none" { s.weight = try columnRef(v.1, "source.weight") }
        }
        if let v = e["select"] {
            if let seq = v.1.sequence {
                var sel: [ColumnRef] = []
                for item in seq {
                    try count(item)
                    sel.append(try columnRef(item, "source.select entry"))
                }
                guard !sel.isEmpty else { throw .usage(at(v.1), "source.select: the list is empty") }
                for (i, x) in sel.enumerated() where sel[..<i].contains(x) {
                    throw .usage(at(seq[i]), "source.select: a column is listed twice")
                }
                s.select = sel
            } else if v.1.scalar?.string != "all" {
                throw .usage(at(v.1), "source.select: expected all or a list of feature columns, by 0-based number or header name, like [0, 3, 5] or [price, area]")
            }
        }
        if let v = e["names"] {
            guard let seq = v.1.sequence, !seq.isEmpty else {
                throw .usage(at(v.1), "source.names: expected a list of column names, one per field (target and weight included)")
            }
            var names: [String] = []
            for item in seq {
                try count(item)
                names.append(try plainScalar(item, "source.names entry", expected: "a name"))
            }
            s.names = names
        }
        if let v = e["header"] { s.header = try choice(v.1, "source.header", SourceConfig.Header.self) }
        if let v = e["on_bad_row"] { s.onBadRow = try choice(v.1, "source.on_bad_row", SourceConfig.BadRowPolicy.self) }
        if let v = e["allow_nonfinite"] { s.allowNonfinite = try bool(v.1, "source.allow_nonfinite") }
        if let v = e["shuffle"] {
            s.shuffle = Int(try int(v, "source.shuffle", min: 0, max: 1 << 26))
        }
        if let v = e["batch_rows"] { s.batchRows = Int(try int(v, "source.batch_rows", min: 1, max: 1 << 22)) }
        if case let .index(w)? = s.weight, case let .column(t) = s.target, w == t {
            throw .usage(at(e["weight"]!.1), "source.weight and source.target name the same column \(w)")
        }
        if let names = s.names, let c = s.columns, names.count != c {
            throw .usage(at(e["names"]!.1), "source.names lists \(names.count) names, but source.columns is \(c)")
        }
        // Declared columns: integer references are checked now, before any data (names wait for the header).
        if let c = s.columns, s.format != .libsvm {
            if case let .column(t) = s.target, t >= c {
                throw .usage(at(e["target"]!.1), "source.target is column \(t), but source.columns is \(c) (0-based: 0…\(c - 1))")
            }
            if case let .index(w)? = s.weight, w >= c {
                throw .usage(at(e["weight"]!.1), "source.weight is column \(w), but source.columns is \(c) (0-based: 0…\(c - 1))")
            }
            let features = c - (s.target == .none ? 0 : 1) - (s.weight == nil ? 0 : 1)
            if let sel = s.select, let seq = e["select"]?.1.sequence {
                for (i, x) in sel.enumerated() {
                    if case let .index(k) = x, k >= features {
                        throw .usage(at(seq[i]), "source.select names feature \(k), but source.columns \(c) leaves \(features) features (0-based: 0…\(features - 1))")
                    }
                }
            }
            s.declaredFeatures = features
        }
        if s.format == .libsvm && s.columns == nil {
            throw .usage(at(n), "source.columns is required for libsvm input (the number of features)")
        }
        if (s.format == .f32 || s.format == .f64) && s.columns == nil {
            throw .usage(at(n), "source.columns is required for raw \(s.format.rawValue) input (values per row)")
        }
        return s
    }

    mutating func parseOperators(_ n: Node, hasTarget: Bool) throws(EngineError) -> [OperatorSpec] {
        guard let seq = n.sequence else { throw .usage(at(n), "operators: expected a list of operators") }
        guard !seq.isEmpty else { throw .usage(at(n), "operators: the list is empty") }
        var specs: [OperatorSpec] = []
        var inputNodes: [String: Node] = [:]
        for item in seq {
            try count(item)
            guard let m = item.mapping else { throw .usage(at(item), "operators: each entry must be a mapping with id and op") }
            let e = try keys(m, allowed: ["id", "op", "input", "params"], context: "an operator")
            guard let idNode = e["id"] else { throw .usage(at(item), "operator is missing 'id'") }
            let id = try plainScalar(idNode.1, "id", expected: "a name")
            guard ManifestParser.validID(id) else {
                throw .usage(at(idNode.1), "id '\(id)' is not valid: use [a-z][a-z0-9_-]* (it names the output folder)")
            }
            guard !ManifestParser.reservedIDs.contains(id) else {
                throw .usage(at(idNode.1), "id '\(id)' is reserved (it names an engine folder or the source)")
            }
            guard !specs.contains(where: { $0.id == id }) else { throw .usage(at(idNode.1), "duplicate operator id '\(id)'") }
            guard let opNode = e["op"] else { throw .usage(at(item), "operator '\(id)' is missing 'op'", hint: "one of " + registry.kinds.joined(separator: ", ")) }
            let kind = try plainScalar(opNode.1, "op", expected: "an operator name")
            guard let desc = registry[kind] else {
                throw .usage(at(opNode.1), "unknown operator '\(kind)'",
                             hint: Suggest.closest(kind, in: registry.kinds).map { "did you mean '\($0)'?" } ?? "one of " + registry.kinds.joined(separator: ", "))
            }
            var input = "source"
            if let i = e["input"] {
                input = try plainScalar(i.1, "input", expected: "source or an operator id")
                inputNodes[id] = i.1
            }
            let params = try parseParams(e["params"]?.1, desc, opID: id, at: at(item))
            if let problem = desc.check(params, hasTarget: hasTarget) {
                throw .usage(at(e["params"]?.1 ?? item), "operator '\(id)': \(problem)")
            }
            specs.append(OperatorSpec(id: id, kind: kind, input: input, params: params, descriptor: desc, location: at(item)))
        }
        // Dangling inputs, inputs that emit no rows, and cycles.
        for s in specs where s.input != "source" {
            let node = inputNodes[s.id]
            guard let up = specs.first(where: { $0.id == s.input }) else {
                throw .usage(at(node), "operator '\(s.id)' reads from '\(s.input)', which is not an operator id",
                             hint: Suggest.closest(s.input, in: ["source"] + specs.map(\.id)).map { "did you mean '\($0)'?" })
            }
            guard up.descriptor.emitsRows else {
                throw .usage(at(node), "operator '\(s.id)' reads from '\(up.id)' (\(up.kind)), which emits no rows",
                             hint: "only samplers emit rows; read from source instead")
            }
        }
        var ordered: [OperatorSpec] = []
        var placed: Set<String> = ["source"]
        while ordered.count < specs.count {
            let ready = specs.filter { !placed.contains($0.id) && placed.contains($0.input) }
            guard !ready.isEmpty else {
                let stuck = specs.first { !placed.contains($0.id) }!
                throw .usage(at(inputNodes[stuck.id]), "operator '\(stuck.id)' is part of a cycle of inputs")
            }
            for r in ready { ordered.append(r); placed.insert(r.id) }
        }
        return ordered
    }

    static func validID(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard let f = u.first, f >= 0x61 && f <= 0x7A, u.count <= 64 else { return false }
        return u.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F || $0 == 0x2D }
    }

    mutating func parseParams(_ n: Node?, _ desc: OperatorDescriptor, opID: String, at opAt: String) throws(EngineError) -> ParamValues {
        var given: [String: Node] = [:]
        if let n {
            guard let m = n.mapping else { throw .usage(at(n), "params of '\(opID)': expected a mapping") }
            let names = desc.parameters.map(\.name)
            for (k, v) in m {
                try count(k); try count(v)
                let name = k.scalar?.string ?? ""
                guard names.contains(name) else {
                    throw .usage(at(k), "\(desc.kind) has no parameter '\(name)'",
                                 hint: Suggest.closest(name, in: names).map { "did you mean '\($0)'?" }
                                    ?? (names.isEmpty ? "\(desc.kind) takes no parameters" : "parameters: " + names.joined(separator: ", ")))
                }
                guard given[name] == nil else { throw .usage(at(k), "duplicate parameter '\(name)'") }
                given[name] = v
            }
        }
        var values: [(String, JSON)] = []
        for p in desc.parameters {
            guard let v = given[p.name] else {
                if p.required { throw .usage(opAt, "operator '\(opID)' (\(desc.kind)) needs parameter '\(p.name)': \(p.doc)") }
                values.append((p.name, p.defaultValue ?? .null))
                continue
            }
            values.append((p.name, try convert(v, p, opID: opID)))
        }
        return ParamValues(values)
    }

    func convert(_ n: Node, _ p: ParameterSpec, opID: String) throws(EngineError) -> JSON {
        let what = "\(opID).params.\(p.name)"
        switch p.kind {
        case let .int(lo, hi): return .int(try int(n, what, min: lo, max: hi))
        case let .intOrAuto(lo, hi):
            if n.scalar?.string == "auto" { return .string("auto") }
            return .int(try int(n, what, min: lo, max: hi))
        case let .double(lo, hi, open):
            let s = try plainScalar(n, what, expected: "a number")
            guard n.scalar?.style == .plain, let v = Double(s), v.isFinite else { throw .usage(at(n), "\(what): expected a number, found '\(s)'") }
            guard (open ? v > lo : v >= lo) && v <= hi else { throw .usage(at(n), "\(what): \(s) is out of range (\(p.kind.typeName))") }
            return .double(v)
        case let .choice(options):
            let s = try plainScalar(n, what, expected: "one of " + options.joined(separator: " | "))
            guard options.contains(s) else {
                throw .usage(at(n), "\(what): '\(s)' is not one of \(options.joined(separator: " | "))",
                             hint: Suggest.closest(s, in: options).map { "did you mean '\($0)'?" })
            }
            return .string(s)
        case .bool: return .bool(try bool(n, what))
        case .column:
            switch try columnRef(n, what) {
            case let .index(k):
                if let f = declaredFeatures, k >= f {
                    throw .usage(at(n), "\(what) is feature column \(k), but source.columns leaves \(f) features (0-based: 0…\(f - 1))")
                }
                return .int(Int64(k))
            case let .name(c): return .string(c.name)
            }
        }
    }
}

/// "Did you mean": the closest candidate within a small edit distance.
public enum Suggest {
    public static func closest(_ word: String, in candidates: [String]) -> String? {
        let w = Array(word.lowercased())
        var best: (String, Int)?
        for c in candidates {
            let d = ColumnNames.editDistance(w, Array(c.lowercased()))
            if d <= max(2, w.count / 3), best == nil || d < best!.1 { best = (c, d) }
        }
        return best?.0
    }

}
