/// An array an operator outputs; written as `<out>/<id>/<name>.npy` (NEP-1, little-endian, C order).
public struct NamedArray: Sendable, Equatable {
    public enum Values: Sendable, Equatable {
        case float64([Double])
        case int64([Int64])
    }
    public let name: String
    public let shape: [Int]
    public let values: Values

    public init(_ name: String, shape: [Int], float64 v: [Double]) {
        precondition(shape.reduce(1, *) == v.count, "\(name): shape \(shape) does not hold \(v.count) values")
        self.name = name; self.shape = shape; self.values = .float64(v)
    }
    public init(_ name: String, shape: [Int], int64 v: [Int64]) {
        precondition(shape.reduce(1, *) == v.count, "\(name): shape \(shape) does not hold \(v.count) values")
        self.name = name; self.shape = shape; self.values = .int64(v)
    }
}

/// What an operator hands the engine when the stream ends: arrays, the scalars of summary.json (without
/// `params`, which the engine adds), and — for samplers — the weighted rows that feed downstream operators.
public struct OperatorOutput: Sendable {
    public var arrays: [NamedArray]
    public var summary: [(String, JSON)]
    public var emittedRows: [RowBatch]
    /// Conditions the user must hear of although the operator succeeded (a solver stopped before its
    /// tolerance, a rank-deficient solve, a suspect row order, a fallback that changes a guarantee): the
    /// engine prints each as one stderr line `rowflow: warning: <id>: <what> (hint: …)` and lists it in
    /// run.json `warnings`.
    public var warnings: [OperatorWarning]

    public init(arrays: [NamedArray], summary: [(String, JSON)], emittedRows: [RowBatch] = [],
                warnings: [OperatorWarning] = []) {
        self.arrays = arrays
        self.summary = summary
        self.emittedRows = emittedRows
        self.warnings = warnings
    }
}

/// One warning of an operator's: what happened, and what the user can do about it.
public struct OperatorWarning: Sendable, Equatable {
    public var what: String
    public var hint: String?
    public init(_ what: String, hint: String? = nil) { self.what = what; self.hint = hint }

    /// The stderr line, `rowflow: warning: <id>: <what> (hint: …)`.
    public func line(id: String) -> String { "rowflow: warning: \(id): \(what)\(hint.map { " (hint: \($0))" } ?? "")\n" }
    /// The run.json `warnings` entry.
    public func json(id: String) -> JSON { .object([("id", .string(id)), ("what", .string(what))] + (hint.map { [("hint", JSON.string($0))] } ?? [])) }
}

/// What an operator knows about its input when it is built.
public struct StreamShape: Sendable, Equatable {
    /// Features per row.
    public var columns: Int
    public var hasTarget: Bool
    /// Rows in the stream, when the input says so (npy shape, file size, zstd content size).
    public var rowsKnown: Int64?
    /// Every value the operator receives is a float32 value, unscaled (the manifest's source is `format: f32`
    /// and the operator reads the source, not a sampler's weighted rows). Decided from the manifest alone, so
    /// a run, its resume and a merge of its shards agree; operators may then accumulate in float32.
    public var float32Values: Bool
    public init(columns: Int, hasTarget: Bool, rowsKnown: Int64? = nil, float32Values: Bool = false) {
        self.columns = columns
        self.hasTarget = hasTarget
        self.rowsKnown = rowsKnown
        self.float32Values = float32Values
    }
}

/// The run-wide context every operator is built with.
public struct OperatorContext: Sendable {
    public var shape: StreamShape
    public var seed: UInt64
    public var shard: Int64
    /// A stable tag for this operator's random draws (from its id), so two operators never share draws.
    public var purpose: UInt32
    /// The run was started with `--shard`: sample outputs gain a `shard` column.
    public var sharded: Bool
    /// The features' names, when the input has them (a column parameter may name a column).
    public var featureNames: [String]?
    public init(shape: StreamShape, seed: UInt64, shard: Int64, purpose: UInt32, sharded: Bool = false, featureNames: [String]? = nil) {
        self.shape = shape; self.seed = seed; self.shard = shard; self.purpose = purpose; self.sharded = sharded
        self.featureNames = featureNames
    }
}

/// A stream operator: consumes row batches and keeps a bounded summary of every row seen.
///
/// A value type with no I/O: the runtime owns buffering, threads, output files and checkpoint timing, so a
/// test can drive an operator with no runtime. Contract: `update` gives the same state however the rows are
/// batched (internal blocks are cut at fixed row positions, never at batch boundaries); a weight is a row
/// multiplicity; `encodeState()` is complete — restoring it and continuing equals never having stopped.
public protocol StreamOperator: Sendable {
    /// Feeds one batch.
    mutating func update(_ batch: RowBatch) throws(EngineError)
    /// The summary.json scalars at this moment (for `--emit-every`); no large arrays.
    func currentSummary() -> [(String, JSON)]
    /// Ends the stream (for multi-pass operators: after their last step).
    mutating func finish() throws(EngineError) -> OperatorOutput
    /// The operator's complete state, versioned by the operator (the engine adds the envelope).
    func encodeState() -> [UInt8]
    /// What `--emit-every` reports now: the summary scalars, and arrays worth following during the stream
    /// (truncated-svd's factors under `decay`), written to `<out>/<id>/current/` beside the JSON line. One call,
    /// so an operator computes its current result once for both. Most operators have no arrays.
    func currentEmit() -> (summary: [(String, JSON)], arrays: [NamedArray])
    /// True when this operator reads a batch's features from `RowBatch.withFloat32Rows` whenever the batch
    /// offers them, never from `features`: if every reader of the source says so, the engine checks float32
    /// input for non-finite values but does not widen it into `features`.
    var readsFloat32Rows: Bool { get }
}

extension StreamOperator {
    public func currentEmit() -> (summary: [(String, JSON)], arrays: [NamedArray]) { (currentSummary(), []) }
    public var readsFloat32Rows: Bool { false }
}

/// Operators whose states combine: shard runs merge into the answer of one run (docs/checkpoints-and-merge.md).
public protocol MergeableOperator: StreamOperator {
    /// Absorbs another instance built with the same parameters and shape.
    mutating func merge(_ other: Self) throws(EngineError)
}

/// Random read access to rows the engine kept in its row store (memory up to a limit, then a spill
/// file read back with pread), for operators that need more than one pass.
public protocol RowStoreReader: Sendable {
    var count: Int { get }
    var columns: Int { get }
    var hasTarget: Bool { get }
    /// Copies rows [start, start + n) into `batch` (reset first).
    func read(_ start: Int, _ n: Int, into batch: inout RowBatch)
}

public enum StepResult: Sendable, Equatable { case more, done }

/// Operators that work after the stream (dpp-sample, halpern-solver): rows they receive in `update` are also
/// kept by the engine in a row store; after the stream the engine calls `step` until `.done`, and may
/// checkpoint between steps.
public protocol IterativeOperator: StreamOperator {
    mutating func step(_ rows: RowStoreReader) throws(EngineError) -> StepResult
}
