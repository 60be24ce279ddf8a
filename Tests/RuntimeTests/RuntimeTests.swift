import EngineCore
import Foundation
import LinearAlgebra
import Manifest
import Operators
import RowIO
@testable import Runtime
import TestSupport
import Testing

/// A sampler for engine tests: keeps rows with even source index at weight 2 and emits them at finish.
struct EvenSampler: StreamOperator {
    var kept: RowBatch
    let columns: Int
    init(columns: Int, hasTarget: Bool) {
        self.columns = columns
        kept = RowBatch(columns: columns, capacity: 100_000, hasTarget: hasTarget, hasWeight: true)
    }
    mutating func update(_ batch: RowBatch) throws(EngineError) {
        for r in 0..<batch.count where batch.indices[r] % 2 == 0 {
            kept.append(from: batch, row: r)
            kept.weights![kept.count - 1] = 2 * batch.weight(r)
        }
    }
    func currentSummary() -> [(String, JSON)] { [("rows", .int(Int64(kept.count)))] }
    mutating func finish() throws(EngineError) -> OperatorOutput {
        OperatorOutput(arrays: [], summary: [("rows", .int(Int64(kept.count))), ("weight_sum", .double(kept.weightSum))], emittedRows: [kept])
    }
    func encodeState() -> [UInt8] {
        var w = BinaryWriter()
        w.u64(UInt64(kept.count))
        w.f64s(Array(kept.features[0..<kept.count * columns]))
        w.f64s(Array((kept.targets ?? [])[0..<(kept.targets == nil ? 0 : kept.count)]))
        w.f64s(Array(kept.weights![0..<kept.count]))
        w.i64s(Array(kept.indices[0..<kept.count]))
        return w.bytes
    }
    init(columns: Int, hasTarget: Bool, state: [UInt8]) throws(EngineError) {
        self.init(columns: columns, hasTarget: hasTarget)
        var r = BinaryReader(state, location: "even-sampler")
        let n = Int(try r.u64())
        let f = try r.f64s(), t = try r.f64s(), w = try r.f64s(), i = try r.i64s()
        for k in 0..<n {
            let s = kept.appendSlot(index: i[k])
            for j in 0..<columns { kept.features[s * columns + j] = f[k * columns + j] }
            if hasTarget { kept.targets![s] = t[k] }
            kept.weights![s] = w[k]
        }
    }
}

/// A two-pass operator for engine tests: pass 1 the weighted mean, pass 2 the centred second moment, read
/// back from the row store in chunks of 1000 — the variance computed the textbook two-pass way.
struct TwoPassVariance: IterativeOperator {
    let columns: Int
    var pass = 0
    var mean: [Double]
    var m2: [Double]
    var weight = 0.0
    var rowsSeen: Int64 = 0
    /// Fails at the start of this pass: a crash between steps, for the checkpoint tests.
    var crashAtPass: Int?
    init(columns: Int, crashAtPass: Int? = nil) {
        self.columns = columns; self.crashAtPass = crashAtPass; mean = Array(repeating: 0, count: columns); m2 = mean
    }
    init(columns: Int, state: [UInt8]) throws(EngineError) {
        self.init(columns: columns)
        var r = BinaryReader(state, location: "two-pass")
        pass = Int(try r.u64()); mean = try r.f64s(); m2 = try r.f64s(); weight = try r.f64(); rowsSeen = try r.i64()
    }
    mutating func update(_ batch: RowBatch) throws(EngineError) { rowsSeen += Int64(batch.count) }
    mutating func step(_ rows: RowStoreReader) throws(EngineError) -> StepResult {
        if pass == crashAtPass { throw .internal("two-pass", "simulated crash before pass \(pass)") }
        var b = RowBatch(columns: columns, capacity: 1000, hasTarget: rows.hasTarget, hasWeight: true)
        var start = 0
        while start < rows.count {
            rows.read(start, 1000, into: &b)
            for r in 0..<b.count {
                let w = b.weight(r)
                for j in 0..<columns {
                    let x = b.features[r * columns + j]
                    if pass == 0 { mean[j] += w * x } else { m2[j] += w * (x - mean[j]) * (x - mean[j]) }
                }
                if pass == 0 { weight += w }
            }
            start += 1000
        }
        if pass == 0 { mean = mean.map { $0 / weight } }
        pass += 1
        return pass == 2 ? .done : .more
    }
    func currentSummary() -> [(String, JSON)] { [("rows", .int(rowsSeen))] }
    mutating func finish() throws(EngineError) -> OperatorOutput {
        OperatorOutput(arrays: [NamedArray("mean", shape: [columns], float64: mean),
                                NamedArray("variance", shape: [columns], float64: m2.map { $0 / weight })],
                       summary: [("rows", .int(rowsSeen)), ("weight_sum", .double(weight))])
    }
    func encodeState() -> [UInt8] {
        var w = BinaryWriter()
        w.u64(UInt64(pass)); w.f64s(mean); w.f64s(m2); w.f64(weight); w.i64(rowsSeen)
        return w.bytes
    }
}

/// The test operators, registered as kinds like the shipped ones. `crashAtPass: 1` registers a
/// two-pass-variance that fails between its steps (restored ones never do).
func testRegistry(crashAtPass: Int? = nil) -> OperatorRegistry {
    precondition(crashAtPass == nil || crashAtPass == 1, "CrashingTwoPassVariance fails at pass 1")
    var r = OperatorRegistry.standard
    r.add(EvenSamplerKind.self)
    r.add(crashAtPass == nil ? TwoPassVarianceKind.self : CrashingTwoPassVarianceKind.self)
    return r
}

enum EvenSamplerKind: OperatorKind {
    static let info = OperatorInfo(kind: "even-sampler", summary: "test", parameters: [], outputs: [], stateVersion: 1, emitsRows: true, examples: [])
    static func make(_ p: ParamValues, _ c: OperatorContext) -> any StreamOperator { EvenSampler(columns: c.shape.columns, hasTarget: c.shape.hasTarget) }
    static func restore(_ b: [UInt8], _ p: ParamValues, _ c: OperatorContext, location: String) throws(EngineError) -> any StreamOperator {
        try EvenSampler(columns: c.shape.columns, hasTarget: c.shape.hasTarget, state: b)
    }
}

enum TwoPassVarianceKind: OperatorKind {
    static let info = OperatorInfo(kind: "two-pass-variance", summary: "test", parameters: [], outputs: [], stateVersion: 1, multiPass: true, examples: [])
    static func make(_ p: ParamValues, _ c: OperatorContext) -> any StreamOperator { TwoPassVariance(columns: c.shape.columns, crashAtPass: nil) }
    static func restore(_ b: [UInt8], _ p: ParamValues, _ c: OperatorContext, location: String) throws(EngineError) -> any StreamOperator {
        try TwoPassVariance(columns: c.shape.columns, state: b)
    }
}

enum CrashingTwoPassVarianceKind: OperatorKind {
    static let info = TwoPassVarianceKind.info
    static func make(_ p: ParamValues, _ c: OperatorContext) -> any StreamOperator { TwoPassVariance(columns: c.shape.columns, crashAtPass: 1) }
    static func restore(_ b: [UInt8], _ p: ParamValues, _ c: OperatorContext, location: String) throws(EngineError) -> any StreamOperator {
        try TwoPassVariance(columns: c.shape.columns, state: b)
    }
}

@Suite struct RunnerTests {
    let dir = temporaryDirectory("runner")

    func csv(_ a: Matrix) -> String {
        var s = ""
        for i in 0..<a.rows { s += (0..<a.cols).map { "\(a[i, $0])" }.joined(separator: ",") + "\n" }
        return s
    }

    /// Source → sampler → (moments, two-pass operator over a spilling row store): the sampler's weighted
    /// rows reach both consumers; the row store spills (1 MiB holds ~18,700 rows of 4 + 3 doubles) and the
    /// two-pass result equals moments on the same weighted rows.
    @Test func samplerFeedsDownstreamAndRowStoreSpills() throws {
        let a = gaussianMatrix(rows: 60_000, cols: 4, seed: 21)
        writeFile(dir + "/in.csv", csv(a))
        writeFile(dir + "/m.yaml", """
        version: 1
        rowstore: { memory_mb: 1 }
        operators:
          - { id: s, op: even-sampler }
          - { id: mom, op: moments, input: s }
          - { id: tp, op: two-pass-variance, input: s }
        """)
        var o = RunOptions(manifestPath: dir + "/m.yaml")
        o.input = dir + "/in.csv"; o.out = dir + "/out"
        let report = try Runner(options: o, registry: testRegistry()).run()
        #expect(report.rowsRead == 60_000)
        #expect(FileManager.default.fileExists(atPath: dir + "/out/rowstore/s.rows"))
        let even = Matrix(rows: 30_000, cols: 4, storage: (0..<30_000).flatMap { i in (0..<4).map { a[2 * i, $0] } })
        let ref = twoPassMoments(even)
        #expect(relativeError(try loadNpy(dir + "/out/tp/mean.npy"), ref.mean) < 1e-12)
        #expect(relativeError(try loadNpy(dir + "/out/tp/variance.npy"), ref.variance) < 1e-12)
        #expect(relativeError(try loadNpy(dir + "/out/mom/variance.npy"), ref.variance) < 1e-12)
        let s = try loadJSON(dir + "/out/mom/summary.json")
        #expect(s["weight_sum"] as? Double == 60_000 && s["rows"] as? Int == 30_000)
        let run = try loadJSON(dir + "/out/run.json")
        #expect(run["status"] as? String == "complete" && run["rows_read"] as? Int == 60_000)
    }

    /// A multi-pass operator checkpoints between its steps: a crash in the second pass, then `--resume`,
    /// gives the uninterrupted run's bytes (the durable row store is truncated and re-read).
    @Test func multiPassResumesBetweenSteps() throws {
        let a = gaussianMatrix(rows: 30_000, cols: 4, seed: 24)
        writeFile(dir + "/in.csv", csv(a))
        writeFile(dir + "/m.yaml", """
        version: 1
        source: { batch_rows: 1000 }
        operators:
          - { id: s, op: even-sampler }
          - { id: mom, op: moments, input: s }
          - { id: tp, op: two-pass-variance, input: s }
        checkpoint: { every_rows: 7000 }
        """)
        var o = RunOptions(manifestPath: dir + "/m.yaml")
        o.input = dir + "/in.csv"; o.out = dir + "/whole"; o.stepCheckpointSeconds = 0
        try Runner(options: o, registry: testRegistry()).run()
        o.out = dir + "/crashed"
        #expect(throws: EngineError.self) { try Runner(options: o, registry: testRegistry(crashAtPass: 1)).run() }
        #expect(try loadJSON(dir + "/crashed/run.json")["status"] as? String == "failed")
        o.resume = true
        let errors = LockedBox()
        try Runner(options: o, registry: testRegistry(), stderr: { errors.append($0) }).run()
        #expect(errors.all.contains { $0.contains("after the stream, operator 3 of 3") }, "\(errors.all)")
        for f in ["tp/mean.npy", "tp/variance.npy", "tp/summary.json", "mom/mean.npy", "mom/state.bin"] {
            #expect(FileManager.default.contents(atPath: dir + "/whole/" + f) == FileManager.default.contents(atPath: dir + "/crashed/" + f), "\(f)")
        }
    }

    /// One thread or two, any batch size: the same bytes in every output file.
    @Test func threadsAndBatchSizeDoNotChangeOutputs() throws {
        let a = gaussianMatrix(rows: 20_000, cols: 6, seed: 22)
        writeFile(dir + "/in.csv", csv(a))
        var outs: [[String: Data]] = []
        for (threads, batch) in [(1, 8192), (2, 8192), (2, 1000), (1, 7)] {
            writeFile(dir + "/m.yaml", "version: 1\nsource: { target: last, batch_rows: \(batch) }\noperators:\n  - { id: g, op: gram, params: { solve: ridge, lambda: 1 } }\n  - { id: m, op: moments }\n")
            var o = RunOptions(manifestPath: dir + "/m.yaml")
            o.input = dir + "/in.csv"; o.out = dir + "/o\(threads)-\(batch)"; o.threads = threads
            try Runner(options: o).run()
            var files: [String: Data] = [:]
            for f in ["g/gram.npy", "g/xty.npy", "g/solution.npy", "g/state.bin", "m/mean.npy", "m/variance.npy", "m/state.bin"] {
                files[f] = try Data(contentsOf: URL(fileURLWithPath: o.out + "/" + f))
            }
            outs.append(files)
        }
        for o in outs.dropFirst() { #expect(o == outs[0]) }
    }

    /// --emit-every n: one line per operator exactly at rows n, 2n, …
    @Test func emitEveryLinesAtExactRows() throws {
        let a = gaussianMatrix(rows: 2500, cols: 3, seed: 23)
        writeFile(dir + "/in.csv", csv(a))
        writeFile(dir + "/m.yaml", "version: 1\nsource: { batch_rows: 333 }\noperators:\n  - { id: m, op: moments }\n")
        var o = RunOptions(manifestPath: dir + "/m.yaml")
        o.input = dir + "/in.csv"; o.out = dir + "/oe"; o.emitEvery = 1000
        let lines = LockedBox()
        try Runner(options: o, stdout: { lines.append($0) }).run()
        #expect(lines.all == [#"{"id":"m","rows":1000,"summary":{"rows":1000,"weight_sum":1000.0}}"# + "\n",
                              #"{"id":"m","rows":2000,"summary":{"rows":2000,"weight_sum":2000.0}}"# + "\n"])
    }

    @Test func failedRunSaysSoInRunJSON() throws {
        writeFile(dir + "/bad.csv", "1,2\n3,x\n")
        writeFile(dir + "/m.yaml", "version: 1\noperators:\n  - { id: m, op: moments }\n")
        var o = RunOptions(manifestPath: dir + "/m.yaml")
        o.input = dir + "/bad.csv"; o.out = dir + "/of"
        #expect(throws: EngineError.self) { try Runner(options: o).run() }
        let run = try loadJSON(dir + "/of/run.json")
        #expect(run["status"] as? String == "failed" && (run["error"] as? String)?.contains("bad.csv:2:3") == true)
        #expect(!FileManager.default.fileExists(atPath: dir + "/of/m/summary.json"))
    }
}

final class LockedBox: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func append(_ s: String) { lock.lock(); items.append(s); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return items }
}
