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
///    never overwriting); the old one stays. States from before golden files existed are in
///    Fixtures/states/old (OldStateTests).
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

/// Golden states of versions this build no longer writes, kept as earlier builds wrote them
/// (Fixtures/states/old/<kind>.v<version>.<what>.state): each is refused by its version with exit 65 and a
/// message naming it, before its payload is decoded — never misread as the current layout.
@Suite struct OldStateTests {
    @Test func oldVersionsAreRefusedByVersion() throws {
        let dir = packageRoot + "/Fixtures/states/old"
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".state") }.sorted()
        #expect(!files.isEmpty)
        for f in files {
            let env = try StateEnvelope.decode([UInt8](FileManager.default.contents(atPath: dir + "/" + f)!), location: f)
            let d = try #require(OperatorRegistry.standard[env.kind], "\(f): kind \(env.kind) is not registered")
            #expect(f.hasPrefix("\(env.kind).v\(env.stateVersion)."), "\(f) holds \(env.kind) v\(env.stateVersion)")
            #expect(env.stateVersion < d.stateVersion, "\(f) is not older than this build's version \(d.stateVersion)")
            let params = ParamValues(d.parameters.map { p in (p.name, p.defaultValue ?? (p.required ? .int(2) : .null)) })
            let ctx = OperatorContext(shape: StreamShape(columns: env.columns, hasTarget: env.hasTarget), seed: env.seed, shard: env.shard, purpose: 0)
            do throws(EngineError) {
                _ = try d.restore(kind: env.kind, version: env.stateVersion, payload: env.payload, params: params, context: ctx, location: f)
                Issue.record("\(f): a version-\(env.stateVersion) state was accepted")
            } catch {
                #expect(error.status == .dataError && error.message.contains("state version \(env.stateVersion)"), "\(f): \(error)")
            }
        }
    }
}

extension LawExample: CustomTestStringConvertible {
    public var testDescription: String { name }
}
