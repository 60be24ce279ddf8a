// The vocabulary in which an operator describes itself: its parameters (what the manifest validator checks
// and `rowflow operators` prints), its documentation and outputs, how it is built and restored. It lives here,
// beside the operator protocols, so the manifest parser, the report and the engine depend on the vocabulary
// and never on the operators; the list of operators a build ships is `OperatorRegistry.standard`, in
// Operators.

/// The type and range of one operator parameter, as the manifest validator checks it.
public enum ParameterKind: Sendable, Equatable {
    case int(min: Int64, max: Int64)
    /// A float in [min, max] (or (min, max] when `openMin`).
    case double(min: Double, max: Double, openMin: Bool)
    case choice([String])
    case bool
    /// A 0-based column number or a column name.
    case column
    /// An int, or the string "auto".
    case intOrAuto(min: Int64, max: Int64)

    public var typeName: String {
        switch self {
        case let .int(lo, hi): return "integer in [\(lo), \(hi)]"
        case let .double(lo, hi, open): return "number in \(open ? "(" : "[")\(JSON.format(lo)), \(JSON.format(hi))]"
        case let .choice(c): return "one of " + c.joined(separator: " | ")
        case .bool: return "true or false"
        case .column: return "a 0-based column number or a header name"
        case let .intOrAuto(lo, hi): return "auto or an integer in [\(lo), \(hi)]"
        }
    }
}

public struct ParameterSpec: Sendable {
    public let name: String
    public let kind: ParameterKind
    /// nil when there is no default (required, or absent means "off").
    public let defaultValue: JSON?
    public let required: Bool
    public let doc: String

    public init(_ name: String, _ kind: ParameterKind, default value: JSON? = nil, required: Bool = false, doc: String) {
        self.name = name; self.kind = kind; self.defaultValue = value; self.required = required; self.doc = doc
    }
}

/// Parameters after validation: every declared parameter with its given or default value.
public struct ParamValues: Sendable, Equatable {
    public var values: [(String, JSON)]
    public init(_ values: [(String, JSON)]) { self.values = values }
    public static func == (a: ParamValues, b: ParamValues) -> Bool { JSON.object(a.values) == JSON.object(b.values) }

    public subscript(_ name: String) -> JSON? { values.first { $0.0 == name }?.1 }
    public func string(_ name: String) -> String? { if case let .string(s)? = self[name] { return s }; return nil }
    public func double(_ name: String) -> Double? {
        switch self[name] {
        case let .double(d)?: return d
        case let .int(i)?: return Double(i)
        default: return nil
        }
    }
    public func int(_ name: String) -> Int64? { if case let .int(i)? = self[name] { return i }; return nil }
    public func bool(_ name: String) -> Bool? { if case let .bool(b)? = self[name] { return b }; return nil }
    /// The canonical JSON of the parameters: echoed in summary.json and digested into states.
    public var json: JSON { .object(values) }
    public var digest: String { SHA256.hex(Array(json.encoded().utf8)) }
}

/// Which of the report page's plots shows an operator's outputs (`rowflow report`; docs/outputs.md).
public enum ReportPlot: String, Sendable {
    /// σ̂ₖ with the certified tail bound per k.
    case spectrum
    /// The eigenvalue estimate over the stream.
    case eigenvalueTrace
    /// The sample's weights and kept rows over the stream.
    case coreset
    /// The sample over the candidates, and residual ratios between samples.
    case dppSample
    /// Residual against oracle calls, every solver of the run on one plot.
    case solverResidual
}

/// A parameter set that exercises one of an operator's main paths, on rows of the shape it names. `rowflow
/// operators` prints them; the shared law tests (batch-size invariance, round trip, merge, corrupt states,
/// golden states) and the all-operator kill-and-resume test run every one — so a new operator is covered by
/// declaring its examples.
public struct OperatorExample: Sendable {
    /// Unique across the registry; names golden state files (Fixtures/states/<name>.v<version>.state).
    public var name: String
    public var params: [(String, JSON)]
    /// The rows carry a target.
    public var target: Bool
    /// The rows carry weights (multiplicities 0…3).
    public var weighted: Bool
    /// Feature column 0 holds an integer group id (0…4).
    public var grouped: Bool
    /// k shard states merged equal one run's outputs within this relative tolerance (the operator's stated
    /// bound); nil where a merged result is not one run's (samplers, order-dependent sketches).
    public var mergeTolerance: Double?

    public init(_ name: String, _ params: [(String, JSON)] = [], target: Bool = true, weighted: Bool = false, grouped: Bool = false,
                mergeTolerance: Double? = nil) {
        self.name = name; self.params = params; self.target = target; self.weighted = weighted; self.grouped = grouped
        self.mergeTolerance = mergeTolerance
    }
}

/// What an operator kind says of itself: everything but how it is built.
public struct OperatorInfo: Sendable {
    /// The manifest's `op:` value.
    public var kind: String
    /// One paragraph for `rowflow operators`.
    public var summary: String
    public var parameters: [ParameterSpec]
    /// The arrays it writes (with the conditions they depend on); summary.json (and state.bin when mergeable)
    /// always come too.
    public var outputs: [String]
    /// The version of the state it encodes; bumped whenever the encoding changes.
    public var stateVersion: UInt16
    /// Needs the engine's row store and steps after the stream.
    public var multiPass: Bool
    /// Its rows feed downstream operators (a sampler).
    public var emitsRows: Bool
    /// For operators that are not mergeable: what `rowflow merge` suggests instead.
    public var mergeHint: String?
    /// Parameters that act only at finish (a gram's solve and lambda): a state carries no trace of them, so
    /// `rowflow merge` may finish it under other values — to fix a solve that failed without re-reading the input.
    public var finishOnly: Set<String>
    /// The report page's plot for its outputs; nil: a table of its summary only.
    public var report: ReportPlot?
    /// Parameter sets covering its main paths (at least one).
    public var examples: [OperatorExample]
    /// Checks that need the stream's shape (e.g. a target); returns the problem, or nil.
    public var check: @Sendable (ParamValues, _ hasTarget: Bool) -> String?

    public init(kind: String, summary: String, parameters: [ParameterSpec], outputs: [String], stateVersion: UInt16,
                multiPass: Bool = false, emitsRows: Bool = false, mergeHint: String? = nil, finishOnly: Set<String> = [],
                report: ReportPlot? = nil, examples: [OperatorExample],
                check: @escaping @Sendable (ParamValues, Bool) -> String? = { _, _ in nil }) {
        self.kind = kind; self.summary = summary; self.parameters = parameters; self.outputs = outputs
        self.stateVersion = stateVersion; self.multiPass = multiPass; self.emitsRows = emitsRows
        self.mergeHint = mergeHint; self.finishOnly = finishOnly; self.report = report; self.examples = examples; self.check = check
    }
}

/// One operator kind, self-described: a type (the operator itself, or a namespace over the types that
/// implement its variants) that says what it is and how to build, restore and merge it. The engine, the
/// manifest validator, `rowflow operators`, the report and the shared law tests ask these — nothing lists
/// operators by hand but `OperatorRegistry.standard`.
public protocol OperatorKind: Sendable {
    static var info: OperatorInfo { get }
    /// A new instance for a stream of `context.shape`, with validated parameters.
    static func make(_ params: ParamValues, _ context: OperatorContext) throws(EngineError) -> any StreamOperator
    /// An instance from a payload its `encodeState()` wrote (the envelope checked and removed); `location`
    /// names the file in errors.
    static func restore(_ state: [UInt8], _ params: ParamValues, _ context: OperatorContext,
                        location: String) throws(EngineError) -> any StreamOperator
    /// Whether shard states combine (`rowflow merge`).
    static var mergeable: Bool { get }
    /// Merges the second instance into the first (both built by this kind with the same parameters).
    static func merge(_ a: inout any StreamOperator, _ b: any StreamOperator) throws(EngineError)
}

extension OperatorKind {
    public static var mergeable: Bool { false }
    public static func merge(_ a: inout any StreamOperator, _ b: any StreamOperator) throws(EngineError) {
        throw .internal(info.kind, "operator kind '\(info.kind)' is not mergeable")
    }
}

/// A kind implemented by one operator type, built from its parameters and restored from its state.
public protocol SelfDescribingOperator: OperatorKind, StreamOperator {
    init(params: ParamValues, context: OperatorContext) throws(EngineError)
    init(restoring state: [UInt8], params: ParamValues, context: OperatorContext, location: String) throws(EngineError)
}

extension SelfDescribingOperator {
    public static func make(_ params: ParamValues, _ context: OperatorContext) throws(EngineError) -> any StreamOperator {
        try Self(params: params, context: context)
    }
    public static func restore(_ state: [UInt8], _ params: ParamValues, _ context: OperatorContext,
                               location: String) throws(EngineError) -> any StreamOperator {
        try Self(restoring: state, params: params, context: context, location: location)
    }
}

extension SelfDescribingOperator where Self: MergeableOperator {
    public static var mergeable: Bool { true }
    public static func merge(_ a: inout any StreamOperator, _ b: any StreamOperator) throws(EngineError) {
        try mergeInstances(Self.self, &a, b)
    }
}

/// The typed merge behind a kind's `merge`: both instances must be of type `T`.
public func mergeInstances<T: MergeableOperator>(_: T.Type, _ a: inout any StreamOperator, _ b: any StreamOperator) throws(EngineError) {
    guard var x = a as? T, let y = b as? T else { throw .internal("merge", "operator types differ: \(type(of: a)) and \(type(of: b))") }
    try x.merge(y)
    a = x
}

/// An operator kind as the engine holds it: its `info`, and its build, restore and merge.
public struct OperatorDescriptor: Sendable {
    public let type: any OperatorKind.Type
    public let info: OperatorInfo
    public init(_ type: any OperatorKind.Type) { self.type = type; self.info = type.info }

    public var kind: String { info.kind }
    public var summary: String { info.summary }
    public var parameters: [ParameterSpec] { info.parameters }
    public var outputs: [String] { info.outputs }
    public var stateVersion: UInt16 { info.stateVersion }
    public var multiPass: Bool { info.multiPass }
    public var emitsRows: Bool { info.emitsRows }
    public var mergeHint: String? { info.mergeHint }
    public var finishOnly: Set<String> { info.finishOnly }
    public var mergeable: Bool { type.mergeable }
    public func check(_ params: ParamValues, hasTarget: Bool) -> String? { info.check(params, hasTarget) }

    public func make(_ params: ParamValues, _ context: OperatorContext) throws(EngineError) -> any StreamOperator {
        try type.make(params, context)
    }
    public func restore(_ state: [UInt8], _ params: ParamValues, _ context: OperatorContext, location: String) throws(EngineError) -> any StreamOperator {
        try type.restore(state, params, context, location: location)
    }
    public func merge(_ a: inout any StreamOperator, _ b: any StreamOperator) throws(EngineError) { try type.merge(&a, b) }

    /// Restores a state the engine wrote — from a checkpoint, a `state.bin` or a blob — after refusing one of
    /// another kind or of a state version this build does not read, each with its own error naming the
    /// location (exit 65 for a version: the bytes are intact but not this build's). Every path that restores
    /// a state goes through here, so the refusals read the same wherever the state came from.
    public func restore(kind: String, version: UInt16, payload: [UInt8], params: ParamValues, context: OperatorContext,
                        location: String) throws(EngineError) -> any StreamOperator {
        guard kind == self.kind else {
            throw .usage(location, "state is of operator kind '\(kind)', expected '\(self.kind)'")
        }
        guard version == stateVersion else {
            throw .data(location, "\(self.kind) state version \(version); this rowflow reads version \(stateVersion)",
                        hint: version < stateVersion ? "re-run the shard or resume with the rowflow that wrote it" : "use a newer rowflow")
        }
        return try restore(payload, params, context, location: location)
    }

    /// The digest a state envelope carries: the parameters that shape the state (`finishOnly` left out).
    public func stateDigest(_ p: ParamValues) -> String {
        ParamValues(p.values.filter { !finishOnly.contains($0.0) }).digest
    }
}

/// The operators a build knows, in the order `rowflow operators` lists them. Tests may add their own.
public struct OperatorRegistry: Sendable {
    public private(set) var descriptors: [OperatorDescriptor]
    public init(_ kinds: [any OperatorKind.Type]) { descriptors = kinds.map(OperatorDescriptor.init) }
    public subscript(kind: String) -> OperatorDescriptor? { descriptors.first { $0.kind == kind } }
    public var kinds: [String] { descriptors.map(\.kind) }
    /// The kinds whose shard states merge, for hints that suggest one.
    public var mergeableKinds: [String] { descriptors.filter(\.mergeable).map(\.kind) }
    public mutating func add(_ kind: any OperatorKind.Type) { descriptors.append(OperatorDescriptor(kind)) }
}
