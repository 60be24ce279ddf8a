import EngineCore

/// Exact weighted column means and population variances (denominator = weight sum, numpy `ddof=0`).
///
/// Guarantee: float64 results, backward-stable: rows are folded into fixed blocks of `blockRows` rows
/// (cut at fixed row positions) with sums shifted by the running mean, and blocks are combined with Chan,
/// Golub & LeVeque's pairwise update — so the result does not depend on the engine's batch size, and shard
/// states merge with the same formula (equal to one run up to rounding, ~1e-15 relative).
/// Cost: O(d) per row, O(d) memory. Limits: weights must be ≥ 0 (the source rejects negative ones).
public struct MomentsOperator: MergeableOperator, Equatable {
    public static let stateVersion: UInt16 = 1
    public static let blockRows = 4096

    public let columns: Int
    public private(set) var rows: Int64 = 0
    /// Totals of completed blocks: weight, mean, Σ w (x − mean)².
    var weight = 0.0
    var mean: [Double]
    var m2: [Double]
    /// The open block: rows in it, its weight, the shift, and Σ w(x − shift), Σ w(x − shift)².
    var blockCount = 0
    var blockWeight = 0.0
    var shift: [Double]
    var s1: [Double]
    var s2: [Double]

    public init(columns: Int) {
        self.columns = columns
        mean = [Double](repeating: 0, count: columns)
        m2 = mean; shift = mean; s1 = mean; s2 = mean
    }

    public mutating func update(_ batch: RowBatch) throws(EngineError) {
        let d = columns
        var r = 0
        while r < batch.count {
            if blockCount == 0 {
                // Shift by the running mean (or the block's first row) so the block's sums stay small.
                if weight > 0 { shift = mean } else { for j in 0..<d { shift[j] = batch.features[r * d + j] } }
            }
            let take = min(batch.count - r, MomentsOperator.blockRows - blockCount)
            accumulate(batch, from: r, count: take)
            r += take
            if blockCount == MomentsOperator.blockRows { closeBlock() }
        }
    }

    /// Rows [from, from + count) of the batch, all inside the open block, in row order.
    private mutating func accumulate(_ batch: RowBatch, from: Int, count: Int) {
        let d = columns
        var bw = blockWeight
        batch.features.withUnsafeBufferPointer { x in
            shift.withUnsafeBufferPointer { sh in
                s1.withUnsafeMutableBufferPointer { a in
                    s2.withUnsafeMutableBufferPointer { b in
                        for r in from..<from + count {
                            let w = batch.weight(r)
                            let row = x.baseAddress! + r * d
                            for j in 0..<d {
                                let t = row[j] - sh[j]
                                a[j] += w * t
                                b[j] += w * t * t
                            }
                            bw += w
                        }
                    }
                }
            }
        }
        blockWeight = bw
        blockCount += count
        rows += Int64(count)
    }

    /// Folds the open block into the totals (Chan et al.'s update).
    mutating func closeBlock() {
        defer {
            blockCount = 0; blockWeight = 0
            for j in 0..<columns { s1[j] = 0; s2[j] = 0 }
        }
        guard blockWeight > 0 else { return }
        var bm = [Double](repeating: 0, count: columns), bm2 = bm
        for j in 0..<columns {
            let m = s1[j] / blockWeight
            bm[j] = shift[j] + m
            bm2[j] = max(0, s2[j] - s1[j] * m)
        }
        combine(weight: blockWeight, mean: bm, m2: bm2)
    }

    mutating func combine(weight wb: Double, mean mb: [Double], m2 m2b: [Double]) {
        guard wb > 0 else { return }
        let total = weight + wb
        for j in 0..<columns {
            let delta = mb[j] - mean[j]
            mean[j] += delta * (wb / total)
            m2[j] += m2b[j] + delta * delta * (weight * wb / total)
        }
        weight = total
    }

    public mutating func merge(_ other: MomentsOperator) throws(EngineError) {
        guard other.columns == columns else {
            throw .usage("merge", "moments states have \(columns) and \(other.columns) columns")
        }
        var o = other
        o.closeBlock()
        closeBlock()
        combine(weight: o.weight, mean: o.mean, m2: o.m2)
        rows += o.rows
    }

    func totals() -> (weight: Double, mean: [Double], variance: [Double]) {
        var c = self
        c.closeBlock()
        let variance = c.m2.map { c.weight > 0 ? $0 / c.weight : .nan }
        return (c.weight, c.weight > 0 ? c.mean : [Double](repeating: .nan, count: columns), variance)
    }

    public func currentSummary() -> [(String, JSON)] {
        [("rows", .int(rows)), ("weight_sum", .double(totals().weight))]
    }

    public mutating func finish() throws(EngineError) -> OperatorOutput {
        let t = totals()
        return OperatorOutput(
            arrays: [NamedArray("mean", shape: [columns], float64: t.mean),
                     NamedArray("variance", shape: [columns], float64: t.variance)],
            summary: [("rows", .int(rows)), ("weight_sum", .double(t.weight)), ("columns", .int(Int64(columns)))])
    }
}

// MARK: state

/// State payload, version 1 (inside the state envelope):
///
/// ```
/// offset  size     field
///      0     8     columns d (u64)
///      8     8     rows (i64)
///     16     8     weight of completed blocks (f64)
///     24   8+8d    mean of completed blocks ([f64], d)
///      …   8+8d    Σ w (x − mean)² of completed blocks ([f64], d)
///      …     8     rows in the open block (u64)
///      …     8     the open block's weight (f64)
///      …   8+8d    the open block's shift ([f64], d)
///      …   8+8d    Σ w (x − shift) over the open block ([f64], d)
///      …   8+8d    Σ w (x − shift)² over the open block ([f64], d)
/// ```
/// Integers and floats little-endian; `[f64]` is a u64 count then the values (`BinaryWriter.f64s`). Restoring
/// checks every count and length against the parameters, so a damaged payload is an error, never a trap.
extension MomentsOperator {
    public func encodeState() -> [UInt8] {
        var w = BinaryWriter()
        w.u64(UInt64(columns)); w.i64(rows); w.f64(weight); w.f64s(mean); w.f64s(m2)
        w.u64(UInt64(blockCount)); w.f64(blockWeight); w.f64s(shift); w.f64s(s1); w.f64s(s2)
        return w.bytes
    }

    public init(columns: Int, state: [UInt8], location: String) throws(EngineError) {
        var r = BinaryReader(state, location: location)
        let c = Int(try r.u64())
        guard c == columns else { throw .data(location, "moments state has \(c) columns, expected \(columns)") }
        self.init(columns: columns)
        rows = try r.i64(); weight = try r.f64(); mean = try r.f64s(); m2 = try r.f64s()
        blockCount = Int(try r.u64()); blockWeight = try r.f64(); shift = try r.f64s(); s1 = try r.f64s(); s2 = try r.f64s()
        guard [mean, m2, shift, s1, s2].allSatisfy({ $0.count == columns }), blockCount < MomentsOperator.blockRows else {
            throw .data(location, "moments state is inconsistent (array lengths or block count)")
        }
    }
}

extension MomentsOperator: SelfDescribingOperator {
    public static let info = OperatorInfo(
        kind: "moments",
        summary: "Exact weighted column mean and population variance (float64, Chan et al. block merges). Mergeable.",
        parameters: [], outputs: ["mean", "variance"], stateVersion: stateVersion,
        examples: [OperatorExample("moments", mergeTolerance: 1e-12),
                   OperatorExample("moments-weighted", weighted: true, mergeTolerance: 1e-12)])

    public init(params: ParamValues, context: OperatorContext) { self.init(columns: context.shape.columns) }
    public init(restoring state: [UInt8], params: ParamValues, context: OperatorContext, location: String) throws(EngineError) {
        try self.init(columns: context.shape.columns, state: state, location: location)
    }
}
