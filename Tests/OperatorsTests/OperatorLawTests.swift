import EngineCore
import Foundation
import LinearAlgebra
import Operators
import TestSupport
import Testing

/// The laws every operator obeys, run over every operator the registry ships, through the registry alone
/// (`make`, `restore`, `merge`: the paths the engine takes), each on the operator's law examples:
///
/// 1. batch-size invariance — the same rows in batches of 1, 7, 64 and all at once give the same state bytes
///    and the same outputs (internal blocks are cut at fixed row positions, never at batch boundaries);
/// 2. round trip — stop after a row that is not a batch boundary, encode, restore into a fresh instance,
///    continue: the outputs are bit-for-bit those of a run that never stopped; multi-pass operators also
///    stop between two of their steps;
/// 3. merge — k shard states, each sent through bytes as `rowflow merge` receives them, merged: equal to one
///    run over all rows within the operator's stated tolerance (exact sums to rounding), or, where a merged
///    result is not the one run's (samplers, the order-dependent incremental sketch), a complete state:
///    encoding and restoring it finishes to the same outputs;
/// 4. corrupt states — every flipped byte of a state's envelope is refused;
/// 5. golden states — a state file recorded for every example at every state version is kept in
///    Fixtures/states and loaded by every later build: restored and finished, it gives the outputs
///    recorded beside it (within 1e-10 relative: BLAS kernels order sums differently); a version this build
///    no longer reads is refused with an error naming the version. A state-version bump therefore needs a
///    new golden file (`ROWFLOW_RECORD_STATES=1 swift test --filter OperatorLawTests` writes missing ones,
///    never overwriting).
///
/// The examples are the operators' own (`OperatorInfo.examples`): a new operator gets the laws by declaring them.
@Suite struct OperatorLawTests {
    static let registry = OperatorRegistry.standard
    static let examples: [LawExample] = registry.descriptors.flatMap { d in d.info.examples.map { LawExample(kind: d.kind, $0) } }

    @Test func everyRegisteredOperatorHasAnExample() {
        for d in Self.registry.descriptors {
            #expect(!d.info.examples.isEmpty, "operator '\(d.kind)' declares no examples (OperatorInfo.examples)")
        }
        #expect(Set(Self.examples.map(\.name)).count == Self.examples.count, "example names must be unique")
    }

    @Test(arguments: examples)
    func batchSizeDoesNotMatter(_ ex: LawExample) throws {
        let law = try OperatorLaw(ex, registry: Self.registry)
        let reference = try law.run(batchRows: 64)
        for b in [1, 7, law.rows] {
            let r = try law.run(batchRows: b)
            #expect(r.state == reference.state, "\(ex.name): state after batches of \(b) differs from batches of 64")
            #expect(r.output == reference.output, "\(ex.name): outputs after batches of \(b) differ from batches of 64")
        }
    }

    @Test(arguments: examples)
    func roundTripContinuesAsIfNeverStopped(_ ex: LawExample) throws {
        let law = try OperatorLaw(ex, registry: Self.registry)
        let reference = try law.run(batchRows: 64)
        for cut in [1, 257, law.rows] {
            let r = try law.run(batchRows: 64, stopAfterRow: cut)
            #expect(r.output == reference.output, "\(ex.name): stopped after row \(cut), restored and continued: outputs differ")
        }
        if law.descriptor.multiPass {
            for steps in [1, 3] {
                let r = try law.run(batchRows: 64, stopAfterStep: steps)
                #expect(r.output == reference.output, "\(ex.name): stopped after step \(steps), restored and continued: outputs differ")
            }
        }
    }

    @Test(arguments: examples.filter { registry[$0.kind]?.mergeable == true })
    func shardsMergeIntoOneRun(_ ex: LawExample) throws {
        let law = try OperatorLaw(ex, registry: Self.registry)
        let whole = try law.run(batchRows: 64)
        for k in [2, 3] {
            var merged = try law.mergedShards(k)
            if let tol = ex.mergeTolerance {
                let out = try merged.finish()
                #expect(LawOutput(out).close(to: whole.output, relative: tol), "\(ex.name): \(k) shards merged differ from one run by more than \(tol)")
            } else {
                let again = try law.descriptor.restore(merged.encodeState(), law.params, law.context(rowsKnown: nil), location: "law")
                let a = LawOutput(try merged.finish())
                var b = again
                #expect(a == LawOutput(try b.finish()), "\(ex.name): the merged state does not restore to itself")
            }
        }
    }

    @Test(arguments: examples)
    func everyFlippedByteIsRefused(_ ex: LawExample) throws {
        let law = try OperatorLaw(ex, registry: Self.registry)
        let bytes = try law.envelope(afterRows: 300).encoded()
        // Every byte position once (states here are a few KiB), with a bit that depends on the position.
        for i in 0..<bytes.count {
            var b = bytes
            b[i] ^= UInt8(1 << (i % 8))
            #expect(throws: EngineError.self, "\(ex.name): byte \(i) of \(bytes.count) flipped was accepted") {
                _ = try StateEnvelope.decode(b, location: "law")
            }
        }
        #expect(try StateEnvelope.decode(bytes, location: "law").payload.count > 0)
    }

    /// Golden states: see the suite's documentation (law 5).
    @Test func goldenStatesLoad() throws {
        let dir = packageRoot + "/Fixtures/states"
        if ProcessInfo.processInfo.environment["ROWFLOW_RECORD_STATES"] != nil {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for ex in Self.examples {
                let law = try OperatorLaw(ex, registry: Self.registry)
                let base = dir + "/\(ex.name).v\(law.descriptor.stateVersion)"
                if FileManager.default.fileExists(atPath: base + ".state") { continue }
                let env = try law.envelope(afterRows: law.rows)
                var op = try law.descriptor.restore(env.payload, law.params, law.context(rowsKnown: law.rowsKnown), location: "golden")
                try law.finishSteps(&op)
                writeBytes(base + ".state", env.encoded())
                writeFile(base + ".json", LawOutput(try op.finish()).json(example: ex.name).encoded(pretty: true) + "\n")
            }
        }
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir))?.filter { $0.hasSuffix(".state") }.sorted() ?? []
        for ex in Self.examples {
            let v = Self.registry[ex.kind]!.stateVersion
            #expect(files.contains("\(ex.name).v\(v).state"),
                    "no golden state Fixtures/states/\(ex.name).v\(v).state (ROWFLOW_RECORD_STATES=1 records it)")
        }
        for f in files {
            let name = String(f.dropLast(".state".count))
            guard let dot = name.lastIndex(of: "."), let ex = Self.examples.first(where: { $0.name == name[..<dot] }) else {
                Issue.record("Fixtures/states/\(f) matches no law example"); continue
            }
            let law = try OperatorLaw(ex, registry: Self.registry)
            let env = try StateEnvelope.decode([UInt8](FileManager.default.contents(atPath: dir + "/" + f)!), location: f)
            #expect(env.kind == ex.kind && "v\(env.stateVersion)" == name[name.index(after: dot)...], "\(f): holds \(env.kind) v\(env.stateVersion)")
            #expect(env.paramsDigest == law.descriptor.stateDigest(law.params), "\(f): recorded with other parameters than the example's")
            let ctx = law.context(rowsKnown: law.rowsKnown)
            guard env.stateVersion == law.descriptor.stateVersion else {
                // A version this build no longer reads: refused (exit 65) by the path every restore takes,
                // naming the version, before its payload is decoded.
                #expect(throws: EngineError.self, "\(f): an old state version was not refused") {
                    _ = try law.descriptor.restore(kind: env.kind, version: env.stateVersion, payload: env.payload, params: law.params,
                                                   context: ctx, location: f)
                }
                do throws(EngineError) {
                    _ = try law.descriptor.restore(kind: env.kind, version: env.stateVersion, payload: env.payload, params: law.params,
                                                   context: ctx, location: f)
                } catch {
                    #expect(error.status == .dataError && error.message.contains("state version \(env.stateVersion)"), "\(f): \(error)")
                }
                continue
            }
            var op = try law.descriptor.restore(kind: env.kind, version: env.stateVersion, payload: env.payload, params: law.params,
                                                context: ctx, location: f)
            try law.finishSteps(&op)
            let got = LawOutput(try op.finish())
            let expected = try LawOutput(json: try loadJSON(dir + "/\(name).json"))
            #expect(got.close(to: expected, relative: 1e-10), "\(f): finishing the golden state no longer gives the recorded outputs")
        }
    }
}

/// One example of one operator kind (`OperatorInfo.examples`).
struct LawExample: Sendable, CustomTestStringConvertible {
    let kind: String
    let example: OperatorExample
    init(kind: String, _ example: OperatorExample) { self.kind = kind; self.example = example }
    var name: String { example.name }
    var params: [(String, JSON)] { example.params }
    var target: Bool { example.target }
    var weighted: Bool { example.weighted }
    var mergeTolerance: Double? { example.mergeTolerance }
    var testDescription: String { name }
}

/// Outputs reduced to what the laws compare: arrays by name, and the summary's scalars.
struct LawOutput: Equatable {
    var arrays: [String: [Double]]
    var ints: [String: [Int64]]
    var summary: JSON

    init(_ out: OperatorOutput) {
        arrays = [:]; ints = [:]
        for a in out.arrays {
            switch a.values {
            case let .float64(v): arrays[a.name] = v
            case let .int64(v): ints[a.name] = v
            }
        }
        summary = .object(out.summary)
    }

    init(json: [String: Any]) throws {
        arrays = (json["arrays"] as? [String: [Any]] ?? [:]).mapValues { values in
            values.map { v in (v as? Double) ?? ["nan": .nan, "inf": .infinity, "-inf": -.infinity][v as? String ?? ""] ?? .nan }
        }
        ints = (json["ints"] as? [String: [Int]] ?? [:]).mapValues { $0.map(Int64.init) }
        summary = .null
    }

    func json(example: String) -> JSON {
        .object([("example", .string(example)),
                 ("arrays", .object(arrays.keys.sorted().map { k in
                     (k, .array(arrays[k]!.map { $0.isFinite ? .double($0) : .string($0.isNaN ? "nan" : $0 > 0 ? "inf" : "-inf") }))
                 })),
                 ("ints", .object(ints.keys.sorted().map { k in (k, .array(ints[k]!.map { .int($0) })) }))])
    }

    static func == (a: LawOutput, b: LawOutput) -> Bool {
        a.ints == b.ints && a.summary == b.summary && a.arrays.keys == b.arrays.keys
            && a.arrays.allSatisfy { k, v in
                let w = b.arrays[k]!
                return v.count == w.count && zip(v, w).allSatisfy { $0.bitPattern == $1.bitPattern }
            }
    }

    /// Same arrays and integer arrays, float arrays within `relative` of `other`'s scale (NaN where it is NaN).
    func close(to other: LawOutput, relative: Double) -> Bool {
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
struct OperatorLaw {
    let example: LawExample
    let descriptor: OperatorDescriptor
    let params: ParamValues
    let rows = 600
    let x: Matrix
    let y: [Double]?
    let w: [Double]?
    var rowsKnown: Int64 { Int64(rows) }

    init(_ ex: LawExample, registry: OperatorRegistry) throws {
        example = ex
        descriptor = try #require(registry[ex.kind], "no operator '\(ex.kind)'")
        // Every declared parameter with its given or default value, as the manifest validator passes them.
        params = ParamValues(descriptor.parameters.map { p in (p.name, ex.params.first { $0.0 == p.name }?.1 ?? p.defaultValue ?? .null) })
        var a = gaussianMatrix(rows: rows, cols: 5, seed: 4242, scale: [3, 2, 1, 0.5, 0.2])
        if ex.example.grouped { for i in 0..<rows { a[i, 0] = Double(i % 5) } }
        x = a
        y = ex.target ? (0..<rows).map { i in a[i, 1] - 2 * a[i, 2] + 0.5 * a[i, 3] + 0.1 * Double((i * 7919) % 13) / 13 } : nil
        w = ex.weighted ? (0..<rows).map { Double(($0 * 31) % 4) } : nil
    }

    func context(rowsKnown: Int64?, shard: Int64 = 0) -> OperatorContext {
        OperatorContext(shape: StreamShape(columns: x.cols, hasTarget: example.target, rowsKnown: rowsKnown), seed: 99, shard: shard, purpose: 17)
    }

    func batchesOf(_ batchRows: Int, from lo: Int, to hi: Int) -> [RowBatch] {
        batches(x, targets: y, weights: w, batchRows: batchRows, start: lo, count: hi - lo)
    }

    func store(_ lo: Int, _ hi: Int) -> MemoryRowStore {
        let part = Matrix(rows: hi - lo, cols: x.cols, storage: Array(x.storage[lo * x.cols..<hi * x.cols]))
        return MemoryRowStore(part, targets: y.map { Array($0[lo..<hi]) }, weights: w.map { Array($0[lo..<hi]) })
    }

    /// Runs a multi-pass operator's steps to the end over all rows.
    func finishSteps(_ op: inout any StreamOperator, lo: Int = 0, hi: Int? = nil) throws {
        guard var it = op as? any IterativeOperator else { return }
        let s = store(lo, hi ?? rows)
        while try it.step(s) == .more {}
        op = it
    }

    /// One run over all rows in batches of `batchRows`, optionally stopped (encoded, restored through the
    /// registry into a fresh instance) after a row or after a step.
    func run(batchRows: Int, stopAfterRow: Int? = nil, stopAfterStep: Int? = nil) throws -> (state: [UInt8], output: LawOutput) {
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
    func envelope(afterRows n: Int) throws -> StateEnvelope {
        let ctx = context(rowsKnown: rowsKnown)
        var op = try descriptor.make(params, ctx)
        for b in batchesOf(64, from: 0, to: n) { try op.update(b) }
        return StateEnvelope(kind: descriptor.kind, stateVersion: descriptor.stateVersion, paramsDigest: descriptor.stateDigest(params),
                             columns: x.cols, hasTarget: example.target, shard: 0, seed: 99, payload: op.encodeState())
    }

    /// k contiguous shards, each run apart (its own shard number), sent through bytes and merged in order.
    func mergedShards(_ k: Int) throws -> any StreamOperator {
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
