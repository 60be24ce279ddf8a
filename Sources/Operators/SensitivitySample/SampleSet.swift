import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#endif

/// Kept rows with what travels with them: the raw row [a | y], its multiplicity, its score and keep draw
/// (online), its source position and shard.
struct SampleSet: Equatable, Sendable {
    let width: Int
    private(set) var count = 0
    var rows: [Double] = []
    /// Merge-reduce: the current multiplicity. Online: the multiplicity the row arrived with.
    var weight: [Double] = []
    /// Online: the capped online leverage l_i (multiplicity included). Merge-reduce: q at the last reduction.
    var score: [Double] = []
    /// Online: the uniform draw the keep decision compared against.
    var uniform: [Double] = []
    var index: [Int64] = []
    var shard: [Int64] = []

    init(width: Int) { self.width = width }

    mutating func reserve(_ n: Int) {
        rows.reserveCapacity(n * width); weight.reserveCapacity(n); score.reserveCapacity(n)
        uniform.reserveCapacity(n); index.reserveCapacity(n); shard.reserveCapacity(n)
    }

    mutating func append(row: UnsafePointer<Double>, weight w: Double, score s: Double, uniform u: Double, index i: Int64, shard k: Int64) {
        rows.append(contentsOf: UnsafeBufferPointer(start: row, count: width))
        weight.append(w); score.append(s); uniform.append(u); index.append(i); shard.append(k)
        count += 1
    }

    mutating func append(contentsOf o: SampleSet) {
        precondition(o.width == width)
        rows += o.rows; weight += o.weight; score += o.score; uniform += o.uniform; index += o.index; shard += o.shard
        count += o.count
    }

    /// Keeps the rows whose flag is set, in order.
    mutating func filter(_ keep: [Bool]) {
        var dst = 0
        for src in 0..<count where keep[src] {
            if dst != src {
                for j in 0..<width { rows[dst * width + j] = rows[src * width + j] }
                weight[dst] = weight[src]; score[dst] = score[src]; uniform[dst] = uniform[src]
                index[dst] = index[src]; shard[dst] = shard[src]
            }
            dst += 1
        }
        rows.removeLast((count - dst) * width)
        weight.removeLast(count - dst); score.removeLast(count - dst); uniform.removeLast(count - dst)
        index.removeLast(count - dst); shard.removeLast(count - dst)
        count = dst
    }

    /// Rows in (shard, index) order: a canonical order for outputs, whatever the merge order.
    func sorted() -> SampleSet {
        // Online samples of one shard are already in stream order: no copy.
        if (1..<max(1, count)).allSatisfy({ (shard[$0 - 1], index[$0 - 1]) < (shard[$0], index[$0]) }) { return self }
        let order = (0..<count).sorted { (shard[$0], index[$0], $0) < (shard[$1], index[$1], $1) }
        var s = SampleSet(width: width)
        s.reserve(count)
        rows.withUnsafeBufferPointer { rp in
            for i in order {
                s.append(row: rp.baseAddress! + i * width, weight: weight[i], score: score[i], uniform: uniform[i], index: index[i], shard: shard[i])
            }
        }
        return s
    }

    func encode(_ w: inout BinaryWriter) {
        w.u64(UInt64(count))
        w.f64s(rows); w.f64s(weight); w.f64s(score); w.f64s(uniform); w.i64s(index); w.i64s(shard)
    }

    static func decode(_ r: inout BinaryReader, width: Int) throws(EngineError) -> SampleSet {
        var s = SampleSet(width: width)
        let n = try r.u64()
        s.rows = try r.f64s(); s.weight = try r.f64s(); s.score = try r.f64s(); s.uniform = try r.f64s()
        s.index = try r.i64s(); s.shard = try r.i64s()
        guard n <= UInt64(s.weight.count), s.rows.count == Int(n) * width,
              [s.weight.count, s.score.count, s.uniform.count, s.index.count, s.shard.count].allSatisfy({ $0 == Int(n) }) else {
            throw .data(r.location, "sensitivity-sample state is inconsistent (sample array lengths)")
        }
        s.count = Int(n)
        return s
    }
}
