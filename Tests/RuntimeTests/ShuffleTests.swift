import EngineCore
import Foundation
import LinearAlgebra
import Manifest
import Operators
import RowIO
@testable import Runtime
import TestSupport
import Testing

/// Records the source positions (`indices`) of the rows it receives, in arrival order; can fail at a given
/// row to simulate a crash.
struct OrderRecorder: StreamOperator {
    var order: [Int64] = []
    let crashAt: Int64?
    init(crashAt: Int64? = nil) { self.crashAt = crashAt }
    init(state: [UInt8]) throws(EngineError) {
        crashAt = nil
        var r = BinaryReader(state, location: "order-recorder")
        order = try r.i64s()
    }
    mutating func update(_ batch: RowBatch) throws(EngineError) {
        for r in 0..<batch.count {
            if let c = crashAt, Int64(order.count) == c { throw .internal("order-recorder", "simulated crash at row \(c)") }
            order.append(batch.indices[r])
        }
    }
    func currentSummary() -> [(String, JSON)] { [("rows", .int(Int64(order.count)))] }
    mutating func finish() throws(EngineError) -> OperatorOutput {
        OperatorOutput(arrays: [NamedArray("order", shape: [order.count], int64: order)],
                       summary: [("rows", .int(Int64(order.count))), ("weight_sum", .double(Double(order.count)))])
    }
    func encodeState() -> [UInt8] { var w = BinaryWriter(); w.i64s(order); return w.bytes }
}

/// The order recorder registered as a kind; `crashAt: 7500` registers one that fails at that row.
func recorderRegistry(crashAt: Int64? = nil) -> OperatorRegistry {
    precondition(crashAt == nil || crashAt == CrashingOrderRecorderKind.crashAt)
    var r = OperatorRegistry.standard
    r.add(crashAt == nil ? OrderRecorderKind.self : CrashingOrderRecorderKind.self)
    return r
}

enum OrderRecorderKind: OperatorKind {
    static let info = OperatorInfo(kind: "order-recorder", summary: "test", parameters: [], outputs: ["order"], stateVersion: 1, examples: [])
    static func make(_ p: ParamValues, _ c: OperatorContext) -> any StreamOperator { OrderRecorder(crashAt: nil) }
    static func restore(_ b: [UInt8], _ p: ParamValues, _ c: OperatorContext, location: String) throws(EngineError) -> any StreamOperator {
        try OrderRecorder(state: b)
    }
}

enum CrashingOrderRecorderKind: OperatorKind {
    static let crashAt: Int64 = 7500
    static let info = OrderRecorderKind.info
    static func make(_ p: ParamValues, _ c: OperatorContext) -> any StreamOperator { OrderRecorder(crashAt: crashAt) }
    static func restore(_ b: [UInt8], _ p: ParamValues, _ c: OperatorContext, location: String) throws(EngineError) -> any StreamOperator {
        try OrderRecorder(state: b)
    }
}

/// `source.shuffle`: the seeded bounded shuffle buffer (Sources/Runtime/ShuffleBuffer.swift).
@Suite struct ShuffleTests {
    let dir = temporaryDirectory("shuffle")

    /// n rows of raw f64, 3 columns; column 0 is the row's position (so a reordering is visible in the data).
    func writeInput(rows n: Int) -> String {
        let g = gaussianMatrix(rows: n, cols: 3, seed: 51)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(n * 24)
        for i in 0..<n {
            for v in [Double(i), g[i, 1], g[i, 2]] { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
        }
        let p = dir + "/in.f64"
        writeBytes(p, bytes)
        return p
    }

    func manifest(shuffle: Int, batch: Int, checkpoint: Bool = false) -> String {
        let p = dir + "/m-\(shuffle)-\(batch)-\(checkpoint).yaml"
        writeFile(p, """
        version: 1
        source: { format: f64, columns: 3, shuffle: \(shuffle), batch_rows: \(batch) }
        operators:
          - { id: rec, op: order-recorder }
          - { id: top, op: top-eigenvector }
        \(checkpoint ? "checkpoint: { every_rows: 3000, keep: 2 }" : "")
        """)
        return p
    }

    func run(_ m: String, input: String, out: String, threads: Int = 2, seed: UInt64 = 0,
             registry: OperatorRegistry = recorderRegistry(), resume: Bool = false) throws -> [Int64] {
        var o = RunOptions(manifestPath: m)
        o.input = input; o.out = out; o.threads = threads; o.seed = seed; o.resume = resume
        try Runner(options: o, registry: registry, stderr: { _ in }).run()
        return try NpyReader.read(out + "/rec/order.npy").values.map { Int64($0) }
    }

    /// A permutation of the source positions (indices stay pre-shuffle), the same for any batch size and
    /// thread count, different for another seed; no row comes out more than B − 1 places early (row p is
    /// emitted at output position ≥ p − B + 1); the data rows travel with their indices; and it really
    /// mixes: the mean displacement is of the order of B (a row waits a geometric time, mean B).
    @Test func permutationBoundedAndDeterministic() throws {
        let n = 20_000, b = 1000
        let input = writeInput(rows: n)
        var orders: [[Int64]] = []
        for (threads, batch) in [(2, 8192), (1, 777), (2, 1), (1, 4096)] {
            orders.append(try run(manifest(shuffle: b, batch: batch), input: input, out: dir + "/o\(threads)-\(batch)", threads: threads))
        }
        for o in orders.dropFirst() { #expect(o == orders[0]) }
        let order = orders[0]
        #expect(order.sorted() == (0..<Int64(n)).map { $0 })
        for (t, p) in order.enumerated() { #expect(p <= Int64(t + b - 1), "row \(p) emitted at \(t)") }
        let meanShift = order.enumerated().reduce(0.0) { $0 + abs(Double($1.element) - Double($1.offset)) } / Double(n)
        #expect(meanShift > Double(b) / 4 && meanShift < Double(b) * 4, "mean displacement \(meanShift)")
        let other = try run(manifest(shuffle: b, batch: 8192), input: input, out: dir + "/seed1", seed: 1)
        #expect(other != order && other.sorted() == order.sorted())
        // The top-eigenvector saw the same rows: identical vector bytes for every batching.
        let v0 = FileManager.default.contents(atPath: dir + "/o2-8192/top/vector.npy")
        #expect(v0 != nil && FileManager.default.contents(atPath: dir + "/o1-777/top/vector.npy") == v0)
    }

    /// Killed (a simulated crash in an operator at delivered row 7,500, checkpoints every 3,000 source rows,
    /// so the newest checkpoint holds a full buffer of rows not yet passed on) and resumed: the order and every
    /// output equal the uninterrupted run's. The checkpoint carries the buffer (format version 2).
    @Test func resumeWithShuffleIsByteIdentical() throws {
        let n = 20_000
        let input = writeInput(rows: n)
        let m = manifest(shuffle: 2500, batch: 1000, checkpoint: true)
        let whole = try run(m, input: input, out: dir + "/whole")
        #expect(throws: EngineError.self) { _ = try run(m, input: input, out: dir + "/crashed", registry: recorderRegistry(crashAt: 7500)) }
        let ck = try FileManager.default.contentsOfDirectory(atPath: dir + "/crashed/checkpoints").sorted().last!
        let c = try Checkpoint.decode([UInt8](FileManager.default.contents(atPath: dir + "/crashed/checkpoints/" + ck)!), location: ck)
        #expect(!c.shuffle.isEmpty && c.rowsFed == 9000)
        let resumed = try run(m, input: input, out: dir + "/crashed", resume: true)
        #expect(resumed == whole)
        for f in ["top/vector.npy", "top/summary.json", "rec/summary.json"] {
            #expect(FileManager.default.contents(atPath: dir + "/whole/" + f) == FileManager.default.contents(atPath: dir + "/crashed/" + f), "\(f)")
        }
        #expect(try loadJSON(dir + "/crashed/run.json")["rows_read"] as? Int == n)
    }

    /// A buffer whose contents would make every checkpoint larger than 1 GiB is refused up front when
    /// checkpoints are on (exit 64, naming source.shuffle); the same buffer without checkpoints runs.
    @Test func hugeBufferWithCheckpointsIsRefused() throws {
        let input = writeInput(rows: 100)
        let m = manifest(shuffle: 1 << 26, batch: 1000, checkpoint: true)
        var o = RunOptions(manifestPath: m)
        o.input = input; o.out = dir + "/huge"
        do {
            try Runner(options: o, registry: recorderRegistry(), stderr: { _ in }).run()
            Issue.record("expected a refusal")
        } catch {
            #expect(error.status == .usage && error.message.contains("source.shuffle"), "\(error)")
        }
        let small = try run(manifest(shuffle: 1 << 10, batch: 1000), input: input, out: dir + "/small")
        #expect(small.sorted() == (0..<100).map { Int64($0) }, "B ≥ n: everything is flushed in a random order")
        #expect(small != (0..<100).map { Int64($0) })
    }
}

@Suite struct CheckpointFormatTests {
    func sample(shuffle: [UInt8]) -> Checkpoint {
        Checkpoint(manifestSHA256: [UInt8](repeating: 7, count: 32), seed: 3, shard: 1, finishing: false, rowsFed: 9000,
                   rowsConsumed: 9001, rowsSkipped: 1, rowsQuarantined: 0, quarantineBytes: 0, fingerprint: 42, bytesIn: 1234,
                   finishIndex: 0, stores: [], operators: [.init(id: "t", kind: "top-eigenvector", version: 1, state: [1, 2, 3])],
                   shuffle: shuffle)
    }

    /// Version 2 carries the shuffle buffer; version 1 files (written before it existed) still decode, with
    /// no buffer.
    @Test func versionTwoRoundTripAndVersionOneStillReads() throws {
        let c = sample(shuffle: [9, 8, 7, 6])
        #expect(try Checkpoint.decode(c.encoded(), location: "t") == c)
        // A version-1 file: the same bytes without the shuffle blob, version 1, checksum redone.
        var v1 = Array(sample(shuffle: []).encoded().dropLast(4 + 8))
        v1[8] = 1; v1[9] = 0
        let crc = CRC32C.checksum(v1)
        for i in 0..<4 { v1.append(UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i)))) }
        #expect(try Checkpoint.decode(v1, location: "t") == sample(shuffle: []))
        var v3 = c.encoded()
        v3[8] = 3
        #expect(throws: EngineError.self) { _ = try Checkpoint.decode(v3, location: "t") }
    }
}
