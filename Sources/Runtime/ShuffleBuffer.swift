import EngineCore

/// `source.shuffle: B` — a seeded, bounded shuffle buffer between the decoder and the operators, for
/// operators that assume rows in random order (top-eigenvector's random-order variant) fed with input that
/// is not.
///
/// What it does: the first B rows fill the buffer. After that, the row taken p-th from the source replaces
/// slot j = ⌊B·U(p)⌋ and the row that held slot j is passed on; U(p) is CounterRandom(seed, shard, "shuffle")
/// at index p. At the end of the stream the rows left in the buffer are passed on in a uniformly random order
/// (Fisher–Yates, draw i at index i, lane 1). Every draw is addressed by a row position, so the output order
/// is a function of (input, seed, shard, B): batch size, threads and resume do not change it. Rows keep
/// their source position in `indices` (pre-shuffle).
///
/// What it guarantees: each row passed on is uniform among the B rows in the buffer at that moment; a row
/// is passed on at most B − 1 positions earlier than it arrived, and stays a geometric number of steps
/// (mean B) — so the output is a uniformly random permutation only when B ≥ n.
/// What it does not: rows more than a few B apart keep their relative order with high probability, so input
/// that is sorted, grouped or drifting over scales much longer than B stays so. It mixes locally; it does
/// not make a stream random-order.
/// Memory: B rows (B·(d + 2)·8 bytes + indices), and every checkpoint holds the buffer's contents.
final class ShuffleBuffer {
    static let purpose: UInt32 = 0x5348_5546   // "SHUF"
    /// Largest buffer a checkpoint may carry (a run with checkpoints and a bigger buffer is refused at start).
    static let checkpointLimit = 1 << 30

    let capacity: Int
    let columns: Int
    let hasTarget: Bool
    let hasWeight: Bool
    let rng: CounterRandom
    private(set) var count = 0
    /// Rows taken from the source so far.
    private(set) var pushed: UInt64 = 0
    var features: [Double]
    var targets: [Double]
    var weights: [Double]
    var indices: [Int64]

    init(capacity: Int, columns: Int, hasTarget: Bool, hasWeight: Bool, seed: UInt64, shard: Int64) {
        self.capacity = capacity
        self.columns = columns
        self.hasTarget = hasTarget
        self.hasWeight = hasWeight
        rng = CounterRandom(seed: seed, shard: UInt64(bitPattern: shard), purpose: ShuffleBuffer.purpose)
        features = [Double](repeating: 0, count: capacity * columns)
        targets = [Double](repeating: 0, count: hasTarget ? capacity : 0)
        weights = [Double](repeating: 0, count: hasWeight ? capacity : 0)
        indices = [Int64](repeating: 0, count: capacity)
    }

    /// Bytes one buffer takes in a checkpoint, at most.
    static func stateBytes(capacity: Int, columns: Int) -> Int { capacity * (columns + 3) * 8 + 64 }

    /// Takes every row of `batch`; the rows passed on go to `out` (reset first, capacity ≥ batch.count).
    func push(_ batch: RowBatch, into out: inout RowBatch) {
        out.reset()
        out.position = batch.position
        for r in 0..<batch.count {
            if count < capacity {
                store(batch, row: r, slot: count)
                count += 1
            } else {
                let j = min(capacity - 1, Int(rng.uniform(index: pushed) * Double(capacity)))
                emit(slot: j, into: &out)
                store(batch, row: r, slot: j)
            }
            pushed += 1
        }
    }

    /// The rows left, in a uniformly random order, as batches of `batchRows`; the buffer is empty after.
    func flush(batchRows: Int, position: SourcePosition) -> [RowBatch] {
        var i = count - 1
        while i > 0 {
            let j = min(i, Int(rng.uniform(index: UInt64(i), lane: 1) * Double(i + 1)))
            if j != i { swapSlots(i, j) }
            i -= 1
        }
        var out: [RowBatch] = []
        var s = 0
        while s < count {
            let n = min(batchRows, count - s)
            var b = RowBatch(columns: columns, capacity: n, hasTarget: hasTarget, hasWeight: hasWeight)
            b.position = position
            for k in s..<s + n { emit(slot: k, into: &b) }
            out.append(b)
            s += n
        }
        count = 0
        return out
    }

    private func store(_ batch: RowBatch, row r: Int, slot s: Int) {
        let d = columns
        batch.features.withUnsafeBufferPointer { src in
            features.withUnsafeMutableBufferPointer { dst in
                (dst.baseAddress! + s * d).update(from: src.baseAddress! + r * d, count: d)
            }
        }
        if hasTarget { targets[s] = batch.targets?[r] ?? 0 }
        if hasWeight { weights[s] = batch.weight(r) }
        indices[s] = batch.indices[r]
    }

    private func emit(slot s: Int, into out: inout RowBatch) {
        let d = columns
        let k = out.appendSlot(index: indices[s])
        features.withUnsafeBufferPointer { src in
            out.features.withUnsafeMutableBufferPointer { dst in
                (dst.baseAddress! + k * d).update(from: src.baseAddress! + s * d, count: d)
            }
        }
        if hasTarget { out.targets![k] = targets[s] }
        if hasWeight { out.weights![k] = weights[s] }
    }

    private func swapSlots(_ a: Int, _ b: Int) {
        let d = columns
        for j in 0..<d { features.swapAt(a * d + j, b * d + j) }
        if hasTarget { targets.swapAt(a, b) }
        if hasWeight { weights.swapAt(a, b) }
        indices.swapAt(a, b)
    }

    // MARK: checkpoint

    func encoded() -> [UInt8] {
        var w = BinaryWriter()
        w.u64(UInt64(capacity)); w.u64(UInt64(columns)); w.bool(hasTarget); w.bool(hasWeight)
        w.u64(UInt64(count)); w.u64(pushed)
        w.f64s(Array(features[0..<count * columns]))
        w.f64s(hasTarget ? Array(targets[0..<count]) : [])
        w.f64s(hasWeight ? Array(weights[0..<count]) : [])
        w.i64s(Array(indices[0..<count]))
        return w.bytes
    }

    func restore(_ bytes: [UInt8], location: String) throws(EngineError) {
        var r = BinaryReader(bytes, location: location)
        let cap = Int(try r.u64()), d = Int(try r.u64()), t = try r.bool(), w = try r.bool()
        guard cap == capacity, d == columns, t == hasTarget, w == hasWeight else {
            throw .usage(location, "resume refused: the checkpoint's shuffle buffer holds \(cap) rows of \(d) columns, this run's \(capacity) of \(columns)")
        }
        let n = Int(try r.u64()), p = try r.u64()
        let f = try r.f64s(), tg = try r.f64s(), wt = try r.f64s(), ix = try r.i64s()
        guard n <= cap, UInt64(n) <= p, f.count == n * d, tg.count == (t ? n : 0), wt.count == (w ? n : 0), ix.count == n,
              r.remaining == 0 else {
            throw .data(location, "the checkpoint's shuffle buffer is inconsistent")
        }
        count = n
        pushed = p
        for i in 0..<f.count { features[i] = f[i] }
        for i in 0..<tg.count { targets[i] = tg[i] }
        for i in 0..<wt.count { weights[i] = wt[i] }
        for i in 0..<n { indices[i] = ix[i] }
    }
}
