import EngineCore
import Foundation
import LinearAlgebra

// The shared operator laws (batch-size invariance, stop-restore-continue, merge of shards, corrupt and golden
// states), driven through the registry alone: `make`, `restore` and `merge`, the paths the engine takes.
// Tests/OperatorsTests/OperatorLawTests.swift runs them over every example of every registered operator.

/// One example of one operator kind (`OperatorInfo.examples`).
public struct LawExample: Sendable {
    public let kind: String
    public let example: OperatorExample
    public init(kind: String, _ example: OperatorExample) { self.kind = kind; self.example = example }
    public var name: String { example.name }
    public var params: [(String, JSON)] { example.params }
    public var target: Bool { example.target }
    public var weighted: Bool { example.weighted }
    public var mergeTolerance: Double? { example.mergeTolerance }
}

/// Outputs reduced to what the laws compare: arrays by name, and the summary's scalars.
public struct LawOutput: Equatable {
    public var arrays: [String: [Double]]
    public var ints: [String: [Int64]]
    public var summary: JSON

    public init(_ out: OperatorOutput) {
        arrays = [:]; ints = [:]
        for a in out.arrays {
            switch a.values {
            case let .float64(v): arrays[a.name] = v
            case let .int64(v): ints[a.name] = v
            }
        }
        summary = .object(out.summary)
    }

    public init(json: [String: Any]) throws {
        arrays = (json["arrays"] as? [String: [Any]] ?? [:]).mapValues { values in
            values.map { v in (v as? Double) ?? ["nan": .nan, "inf": .infinity, "-inf": -.infinity][v as? String ?? ""] ?? .nan }
        }
        ints = (json["ints"] as? [String: [Int]] ?? [:]).mapValues { $0.map(Int64.init) }
        summary = .null
    }

    public func json(example: String) -> JSON {
        .object([("example", .string(example)),
                 ("arrays", .object(arrays.keys.sorted().map { k in
                     (k, .array(arrays[k]!.map { $0.isFinite ? .double($0) : .string($0.isNaN ? "nan" : $0 > 0 ? "inf" : "-inf") }))
                 })),
                 ("ints", .object(ints.keys.sorted().map { k in (k, .array(ints[k]!.map { .int($0) })) }))])
    }

    public static func == (a: LawOutput, b: LawOutput) -> Bool {
        a.ints == b.ints && a.summary == b.summary && a.arrays.keys == b.arrays.keys
            && a.arrays.allSatisfy { k, v in
                let w = b.arrays[k]!
                return v.count == w.count && zip(v, w).allSatisfy { $0.bitPattern == $1.bitPattern }
            }
    }

    /// Same arrays and integer arrays, float arrays within `relative` of `other`'s scale (NaN where it is NaN).
    public func close(to other: LawOutput, relative: Double) -> Bool {
        guard ints == other.ints, Set(arrays.keys) == Set(other.arrays.keys) else { return false }
        for (k, v) in arrays {
            let w = other.arrays[k]!
            guard v.count == w.count else { return false }
            let scale = w.reduce(0) { max($0, $1.isFinite ? abs($1) : 0) }
            for (x, y) in zip(v, w) {
                if y.isNaN { if !x.isNaN { return false }; continue }
                if abs(x - y) > relative * max(scale, .leastNormalMagnitude) { return false }
            }
        }
        return true
    }
}

/// Drives one example through the registry's make/restore/merge.
public struct OperatorLaw {
    public let example: LawExample
    public let descriptor: OperatorDescriptor
    public let params: ParamValues
    public let rows = 600
    let x: Matrix
    let y: [Double]?
    let w: [Double]?
    public var rowsKnown: Int64 { Int64(rows) }

    public init(_ ex: LawExample, registry: OperatorRegistry) throws {
        example = ex
        guard let d = registry[ex.kind] else { throw EngineError.usage("law", "no operator '\(ex.kind)' in the registry") }
        descriptor = d
        // Every declared parameter with its given or default value, as the manifest validator passes them.
        params = ParamValues(descriptor.parameters.map { p in (p.name, ex.params.first { $0.0 == p.name }?.1 ?? p.defaultValue ?? .null) })
        var a = gaussianMatrix(rows: rows, cols: 5, seed: 4242, scale: [3, 2, 1, 0.5, 0.2])
        if ex.example.grouped { for i in 0..<rows { a[i, 0] = Double(i % 5) } }
        x = a
        y = ex.target ? (0..<rows).map { i in a[i, 1] - 2 * a[i, 2] + 0.5 * a[i, 3] + 0.1 * Double((i * 7919) % 13) / 13 } : nil
        w = ex.weighted ? (0..<rows).map { Double(($0 * 31) % 4) } : nil
    }

    public func context(rowsKnown: Int64?, shard: Int64 = 0) -> OperatorContext {
        OperatorContext(shape: StreamShape(columns: x.cols, hasTarget: example.target, rowsKnown: rowsKnown), seed: 99, shard: shard, purpose: 17)
    }

    public func batchesOf(_ batchRows: Int, from lo: Int, to hi: Int) -> [RowBatch] {
        batches(x, targets: y, weights: w, batchRows: batchRows, start: lo, count: hi - lo)
    }

    public func store(_ lo: Int, _ hi: Int) -> MemoryRowStore {
        let part = Matrix(rows: hi - lo, cols: x.cols, storage: Array(x.storage[lo * x.cols..<hi * x.cols]))
        return MemoryRowStore(part, targets: y.map { Array($0[lo..<hi]) }, weights: w.map { Array($0[lo..<hi]) })
    }

    /// Runs a multi-pass operator's steps to the end over all rows.
    public func finishSteps(_ op: inout any StreamOperator, lo: Int = 0, hi: Int? = nil) throws {
        guard var it = op as? any IterativeOperator else { return }
        let s = store(lo, hi ?? rows)
        while try it.step(s) == .more {}
        op = it
    }

    /// One run over all rows in batches of `batchRows`, optionally stopped (encoded, restored through the
    /// registry into a fresh instance) after a row or after a step.
    public func run(batchRows: Int, stopAfterRow: Int? = nil, stopAfterStep: Int? = nil) throws -> (state: [UInt8], output: LawOutput) {
        let ctx = context(rowsKnown: rowsKnown)
        var op = try descriptor.make(params, ctx)
        let cut = stopAfterRow ?? rows
        for b in batchesOf(batchRows, from: 0, to: cut) { try op.update(b) }
        if stopAfterRow != nil { op = try descriptor.restore(op.encodeState(), params, ctx, location: "law") }
        for b in batchesOf(batchRows, from: cut, to: rows) { try op.update(b) }
        let state = op.encodeState()
        if var it = op as? any IterativeOperator {
            let s = store(0, rows)
            var steps = 0
            while try it.step(s) == .more {
                steps += 1
                if steps == stopAfterStep {
                    guard let restored = try descriptor.restore(it.encodeState(), params, ctx, location: "law") as? any IterativeOperator else {
                        throw EngineError.internal("law", "restored operator is not iterative")
                    }
                    it = restored
                }
            }
            op = it
        }
        return (state, LawOutput(try op.finish()))
    }

    /// The state after `afterRows` rows, in the envelope the engine writes.
    public func envelope(afterRows n: Int) throws -> StateEnvelope {
        let ctx = context(rowsKnown: rowsKnown)
        var op = try descriptor.make(params, ctx)
        for b in batchesOf(64, from: 0, to: n) { try op.update(b) }
        return StateEnvelope(kind: descriptor.kind, stateVersion: descriptor.stateVersion, paramsDigest: descriptor.stateDigest(params),
                             columns: x.cols, hasTarget: example.target, shard: 0, seed: 99, payload: op.encodeState())
    }

    /// k contiguous shards, each run apart (its own shard number), sent through bytes and merged in order.
    public func mergedShards(_ k: Int) throws -> any StreamOperator {
        var merged: (any StreamOperator)?
        for s in 0..<k {
            let lo = rows * s / k, hi = rows * (s + 1) / k
            let ctx = context(rowsKnown: Int64(hi - lo), shard: Int64(s))
            var op = try descriptor.make(params, ctx)
            for b in batchesOf(64, from: lo, to: hi) { try op.update(b) }
            let restored = try descriptor.restore(op.encodeState(), params, ctx, location: "shard \(s)")
            if var m = merged { try descriptor.merge(&m, restored); merged = m } else { merged = restored }
        }
        return merged!
    }
}
