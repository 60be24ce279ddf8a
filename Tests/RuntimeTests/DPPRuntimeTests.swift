import EngineCore
import Foundation
import LinearAlgebra
import Manifest
import Operators
import RowIO
@testable import Runtime
import TestSupport
import Testing

/// dpp-sample inside the engine: the row store (spilled or not), checkpoints between its steps, a sampler
/// feeding a downstream operator.
@Suite struct DPPRuntimeTests {
    let dir = temporaryDirectory("dpp-runtime")

    func legendre(_ path: String, rows: Int, cols: Int, seed: UInt64) throws {
        var g = GenOptions()
        g.kind = .legendre; g.rows = rows; g.cols = cols; g.seed = seed; g.format = .npy; g.out = path
        try Generator(g).run()
    }

    func files(_ out: String, _ ids: [String]) -> [String: Data] {
        var d: [String: Data] = [:]
        for id in ids {
            for f in (try? FileManager.default.contentsOfDirectory(atPath: out + "/" + id)) ?? [] {
                d[id + "/" + f] = FileManager.default.contents(atPath: out + "/" + id + "/" + f)
            }
        }
        return d
    }

    /// rowstore.memory_mb: 1 holds ~9,400 rows of 10 features (+4 doubles); 30,000 rows spill two thirds to
    /// the spill file. Every output byte equals the in-memory run's, for every mode, and the
    /// sampler's weighted rows reach a downstream gram (whose ridge-0 solution is the sample's weighted
    /// least squares: the same coefficients to 1e-10, a Cholesky against dgelsd on a κ ≈ 2 system).
    @Test func spilledRowStoreGivesTheSameBytes() throws {
        try legendre(dir + "/in.npy", rows: 30_000, cols: 10, seed: 3)
        var outs: [[String: Data]] = []
        for mb in [1, 1024] {
            writeFile(dir + "/m\(mb).yaml", """
            version: 1
            source: { target: last, batch_rows: 3000 }
            rowstore: { memory_mb: \(mb) }
            operators:
              - { id: p, op: dpp-sample, params: { mode: repeated, repetitions: 3 } }
              - { id: v, op: dpp-sample, params: { mode: volume-rescaled, samples: 25 } }
              - { id: i, op: dpp-sample, params: { mode: iid, samples: 40 } }
              - { id: g, op: gram, input: v, params: { solve: ridge, lambda: 0 } }
            """)
            var o = RunOptions(manifestPath: dir + "/m\(mb).yaml")
            o.input = dir + "/in.npy"; o.out = dir + "/out\(mb)"; o.seed = 9
            try Runner(options: o).run()
            outs.append(files(o.out, ["p", "v", "i", "g"]))
        }
        #expect(FileManager.default.fileExists(atPath: dir + "/out1/rowstore/source.rows"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/out1024/rowstore/source.rows"))
        #expect(outs[0].count >= 19 && outs[0] == outs[1])
        let c = try loadNpy(dir + "/out1/v/coefficients.npy"), s = try loadNpy(dir + "/out1/g/solution.npy")
        #expect(relativeError(s, c) < 1e-10)
        let gs = try loadJSON(dir + "/out1/g/summary.json"), ws = try loadNpy(dir + "/out1/v/weights.npy")
        #expect(gs["rows"] as? Int == 25 && abs((gs["weight_sum"] as! Double) - ws.reduce(0, +)) < 1e-9)
    }

    /// Records wider than a 2 MiB chunk (300,000 columns: 2.4 MB a record) get chunks of 4 MiB, one record
    /// each; three fit the 8 MiB budget, the other two spill, and all five read back exactly.
    @Test func rowStoreHoldsRecordsWiderThanAChunk() throws {
        let cols = 300_000, n = 5
        let store = try RowStore(columns: cols, hasTarget: false, memoryBytes: 8 << 20, spillPath: dir + "/wide/source.rows")
        var b = RowBatch(columns: cols, capacity: n, hasTarget: false, hasWeight: false)
        for i in 0..<n {
            let s = b.appendSlot(index: Int64(i))
            for j in stride(from: 0, to: cols, by: 997) { b.features[s * cols + j] = Double(i * cols + j) }
            b.features[s * cols + cols - 1] = -Double(i)
        }
        try store.append(b)
        try store.seal()
        #expect(store.count == n && store.spilled == 2)
        var out = RowBatch(columns: cols, capacity: n, hasTarget: false, hasWeight: false)
        store.read(0, n, into: &out)
        #expect(out.count == n && out.features == b.features && out.indices == b.indices)
    }

    /// The row store keeps each row's shard: the one a merged sampler tagged it with, else the run's (the
    /// store's `shard`), in memory and in the spill file alike. Reads cross the memory/file boundary and the
    /// 1 MiB pread chunks (18,724 records of 7 doubles) exactly; a batch without a shard column reads the same
    /// rows; a spill file cut short after sealing is a read error (exit 74), not a crash or a silent short read.
    /// With 2.5 MiB of memory the in-memory rows span two 2 MiB chunks (37,449 records each), the second one
    /// only partly filled before the rest spills.
    @Test(arguments: [4096, 5 << 19]) func rowStoreKeepsShardsAndReadsBackExactly(memoryBytes: Int) throws {
        let cols = 3, n = 50_000
        let path = dir + "/rs\(memoryBytes)/source.rows"
        let store = try RowStore(columns: cols, hasTarget: true, memoryBytes: memoryBytes, spillPath: path, shard: 5)
        var b = RowBatch(columns: cols, capacity: 1000, hasTarget: true, hasWeight: true)
        func value(_ i: Int, _ j: Int) -> Double { Double(i) * 10 + Double(j) + 0.25 }
        for start in stride(from: 0, to: n, by: 1000) {
            b.reset()
            // The second half arrives tagged (as a merged sampler's rows do): shard = index mod 3.
            if start >= n / 2 { b.shards = [Int64](repeating: 0, count: 1000) } else { b.shards = nil }
            for i in start..<start + 1000 {
                let s = b.appendSlot(index: Int64(i))
                for j in 0..<cols { b.features[s * cols + j] = value(i, j) }
                b.targets![s] = -Double(i); b.weights![s] = 2
                if b.shards != nil { b.shards![s] = Int64(i % 3) }
            }
            try store.append(b)
        }
        try store.seal()
        #expect(store.count == n && store.spilled == n - memoryBytes / 56)   // records of 56 bytes
        var out = RowBatch(columns: cols, capacity: 30_000, hasTarget: true, hasWeight: true)
        out.shards = [Int64](repeating: -1, count: 30_000)
        for (start, len) in [(0, 30_000), (30_000, 30_000), (60, 20), (17_000, 4096), (37_440, 20), (46_800, 20), (n - 5, 10)] {
            store.read(start, len, into: &out)
            #expect(out.count == min(len, n - start))
            var bad = 0
            for r in 0..<out.count {
                let i = start + r
                let shard: Int64 = i >= n / 2 ? Int64(i % 3) : 5
                if out.indices[r] != Int64(i) || out.targets![r] != -Double(i) || out.weights![r] != 2 || out.shards![r] != shard
                    || (0..<cols).contains(where: { out.features[r * cols + $0] != value(i, $0) }) { bad += 1 }
            }
            #expect(bad == 0, "read(\(start), \(len)): \(bad) rows differ")
        }
        var plain = RowBatch(columns: cols, capacity: 10, hasTarget: true, hasWeight: true)
        store.read(n - 10, 10, into: &plain)
        #expect(plain.count == 10 && plain.shards == nil && plain.features[0] == value(n - 10, 0))
        #expect(store.readError == nil)
        #expect(truncate(path, off_t(1000 * 56)) == 0)
        store.read(n - 10, 10, into: &plain)
        #expect(plain.count == 0 && store.readError?.status == .ioError, "\(String(describing: store.readError))")
    }

    /// Checkpoints between the steps (every step, keep all): resuming from each of them — after the stream,
    /// after the basis, after each repetition — gives the uninterrupted run's bytes. The durable row store is
    /// truncated back to the checkpoint's length and the leverage cache rebuilt from it.
    @Test func resumesFromEveryStepCheckpoint() throws {
        try legendre(dir + "/in.npy", rows: 12_000, cols: 8, seed: 4)
        writeFile(dir + "/m.yaml", """
        version: 1
        source: { target: last, batch_rows: 1000 }
        operators:
          - { id: d, op: dpp-sample, params: { mode: repeated, repetitions: 4 } }
          - { id: m, op: moments, input: d }
        checkpoint: { every_rows: 4000, keep: 1000 }
        """)
        var o = RunOptions(manifestPath: dir + "/m.yaml")
        o.input = dir + "/in.npy"; o.out = dir + "/whole"; o.stepCheckpointSeconds = 0
        try Runner(options: o).run()
        let want = files(o.out, ["d", "m"])
        #expect(want.count >= 7)
        let ckpts = try FileManager.default.contentsOfDirectory(atPath: o.out + "/checkpoints").filter { $0.hasPrefix("ckpt-") }.sorted()
        #expect(ckpts.count == 3 + 5, "\(ckpts)")   // 3 in the stream, then after the basis and 4 repetitions
        for (k, name) in ckpts.enumerated() {
            let copy = dir + "/resume\(k)"
            try FileManager.default.copyItem(atPath: o.out, toPath: copy)
            for later in ckpts[(k + 1)...] { try FileManager.default.removeItem(atPath: copy + "/checkpoints/" + later) }
            for id in ["d", "m"] { try FileManager.default.removeItem(atPath: copy + "/" + id) }
            var r = o
            r.out = copy; r.resume = true
            let log = LockedBox()
            try Runner(options: r, stderr: { log.append($0) }).run()
            #expect(files(copy, ["d", "m"]) == want, "resumed from \(name): \(log.all)")
        }
    }
}
