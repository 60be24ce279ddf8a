import EngineCore
import LinearAlgebra

/// Exact weighted Gram matrix AᵀWA (and AᵀWy, yᵀWy with a target) in float64; optionally the ridge
/// solution of ½‖Ax − y‖² + ½λ‖x‖² (DESIGN.md §4) by Cholesky of AᵀA + λI.
///
/// Guarantee: each block of `blockRows` rows (cut at fixed row positions, so independent of batch size) is
/// one dsyrk call; blocks are summed in float64, so the result equals the exact Gram up to float64 rounding
/// (relative error ≲ n_blocks·ε + blockRows·ε per entry). Shard states merge by addition.
/// Cost: O(d²) per row at BLAS-3 speed; memory O(d² + blockRows·d).
/// Limits: `solve: ridge` needs a target and a positive definite AᵀA + λI (λ > 0 or full column rank).
public struct GramOperator: MergeableOperator, Equatable {
    /// Equal states (the open block's unused buffer tail does not count).
    public static func == (a: GramOperator, b: GramOperator) -> Bool { a.encodeState() == b.encodeState() && a.solveRidge == b.solveRidge && a.lambda == b.lambda }

    public static let stateVersion: UInt16 = 1

    /// Rows per internal block: a function of d only (a ~4 MiB buffer), never of the batch size.
    public static func blockRows(columns d: Int) -> Int { max(16, min(4096, (1 << 19) / max(1, d))) }

    public let columns: Int
    public let hasTarget: Bool
    public let solveRidge: Bool
    public let lambda: Double
    let blockRows: Int

    public private(set) var rows: Int64 = 0
    var weightSum = 0.0
    /// Upper triangle of AᵀWA over closed blocks (row-major d×d).
    var gram: [Double]
    var xty: [Double]
    var yty = 0.0
    /// The open block: √w-scaled rows and targets, `blockCount` of them.
    var blockCount = 0
    var blockWeight = 0.0
    var blockX: [Double]
    var blockY: [Double]

    public init(columns: Int, hasTarget: Bool, solveRidge: Bool, lambda: Double) {
        self.columns = columns
        self.hasTarget = hasTarget
        self.solveRidge = solveRidge
        self.lambda = lambda
        self.blockRows = GramOperator.blockRows(columns: columns)
        gram = [Double](repeating: 0, count: columns * columns)
        xty = [Double](repeating: 0, count: hasTarget ? columns : 0)
        blockX = [Double](repeating: 0, count: blockRows * columns)
        blockY = [Double](repeating: 0, count: hasTarget ? blockRows : 0)
    }

    public mutating func update(_ batch: RowBatch) throws(EngineError) {
        let d = columns
        var r = 0
        while r < batch.count {
            // Fast path: a whole unweighted block straight from the batch buffer (no copy). The BLAS call is
            // the same one the copy path would make, so the result is identical.
            if blockCount == 0, batch.weights == nil, batch.count - r >= blockRows {
                batch.features.withUnsafeBufferPointer { x in
                    let ys = batch.targets.map { Array($0[r..<r + blockRows]) }
                    absorb(x.baseAddress! + r * d, targets: ys, count: blockRows, weight: Double(blockRows))
                }
                r += blockRows
                continue
            }
            let take = min(batch.count - r, blockRows - blockCount)
            for i in 0..<take {
                let src = r + i, dst = blockCount + i
                let s = batch.weights.map { $0[src].squareRoot() } ?? 1
                for j in 0..<d { blockX[dst * d + j] = s * batch.features[src * d + j] }
                if hasTarget { blockY[dst] = s * (batch.targets?[src] ?? 0) }
                blockWeight += batch.weight(src)
            }
            blockCount += take
            r += take
            if blockCount == blockRows { closeBlock() }
        }
    }

    /// Adds `count` rows at `x` (already √w-scaled) to the totals.
    private mutating func absorb(_ x: UnsafePointer<Double>, targets: [Double]?, count: Int, weight: Double) {
        let d = columns
        gram.withUnsafeMutableBufferPointer { g in BlockKernels.syrkUpper(x, rows: count, n: d, into: g.baseAddress!) }
        if hasTarget, let y = targets {
            y.withUnsafeBufferPointer { yp in
                xty.withUnsafeMutableBufferPointer { out in
                    BlockKernels.gemvTransposedAccumulate(x, rows: count, n: d, v: yp.baseAddress!, into: out.baseAddress!)
                }
                var s = 0.0
                for v in yp { s += v * v }
                yty += s
            }
        }
        rows += Int64(count)
        weightSum += weight
    }

    mutating func closeBlock() {
        guard blockCount > 0 else { return }
        let n = blockCount
        let ys = hasTarget ? Array(blockY[0..<n]) : nil
        let w = blockWeight
        blockX.withUnsafeBufferPointer { absorb($0.baseAddress!, targets: ys, count: n, weight: w) }
        blockCount = 0
        blockWeight = 0
    }

    public mutating func merge(_ other: GramOperator) throws(EngineError) {
        guard other.columns == columns, other.hasTarget == hasTarget else {
            throw .usage("merge", "gram states differ in shape (\(columns) vs \(other.columns) columns)")
        }
        var o = other
        o.closeBlock()
        closeBlock()
        for i in 0..<gram.count { gram[i] += o.gram[i] }
        for i in 0..<xty.count { xty[i] += o.xty[i] }
        yty += o.yty
        rows += o.rows
        weightSum += o.weightSum
    }

    /// Closed totals (the open block folded in), gram symmetrised.
    func totals() -> GramOperator {
        var c = self
        c.closeBlock()
        var m = Matrix(rows: columns, cols: columns, storage: c.gram)
        m.symmetrizeFromUpper()
        c.gram = m.storage
        return c
    }

    public func currentSummary() -> [(String, JSON)] {
        let t = totals()
        return [("rows", .int(t.rows)), ("weight_sum", .double(t.weightSum))]
    }

    public mutating func finish() throws(EngineError) -> OperatorOutput {
        let t = totals()
        var arrays = [NamedArray("gram", shape: [columns, columns], float64: t.gram)]
        var summary: [(String, JSON)] = [("rows", .int(t.rows)), ("weight_sum", .double(t.weightSum)),
                                         ("columns", .int(Int64(columns)))]
        if hasTarget {
            arrays.append(NamedArray("xty", shape: [columns], float64: t.xty))
            summary.append(("yty", .double(t.yty)))
        }
        if solveRidge {
            var s = Matrix(rows: columns, cols: columns, storage: t.gram)
            for i in 0..<columns { s[i, i] += lambda }
            let x: [Double]
            do {
                x = try LAPACK.choleskySolve(s, t.xty)
            } catch {
                throw .data("gram", "cannot solve ridge: AᵀA + λI is not positive definite (\(error.description))",
                            hint: lambda == 0 ? "set params.lambda > 0, or check for constant or duplicate columns" : nil)
            }
            // Objective ½‖Ax − y‖² + ½λ‖x‖² from the sufficient statistics.
            let gx = Matrix(rows: columns, cols: columns, storage: t.gram).multiplied(by: x)
            var quad = 0.0, lin = 0.0, norm = 0.0
            for i in 0..<columns { quad += x[i] * gx[i]; lin += x[i] * t.xty[i]; norm += x[i] * x[i] }
            let objective = 0.5 * (t.yty - 2 * lin + quad) + 0.5 * lambda * norm
            arrays.append(NamedArray("solution", shape: [columns], float64: x))
            summary.append(("objective", .double(objective)))
            summary.append(("lambda", .double(lambda)))
        }
        return OperatorOutput(arrays: arrays, summary: summary)
    }

    public func encodeState() -> [UInt8] {
        var w = BinaryWriter()
        w.u64(UInt64(columns)); w.bool(hasTarget); w.i64(rows); w.f64(weightSum)
        w.f64s(gram); w.f64s(xty); w.f64(yty)
        w.u64(UInt64(blockCount)); w.f64(blockWeight)
        w.f64s(Array(blockX[0..<blockCount * columns]))
        w.f64s(hasTarget ? Array(blockY[0..<blockCount]) : [])
        return w.bytes
    }

    public init(columns: Int, hasTarget: Bool, solveRidge: Bool, lambda: Double, state: [UInt8], context: String) throws(EngineError) {
        self.init(columns: columns, hasTarget: hasTarget, solveRidge: solveRidge, lambda: lambda)
        var r = BinaryReader(state, context: context)
        let c = Int(try r.u64()), t = try r.bool()
        guard c == columns, t == hasTarget else {
            throw .data(context, "gram state has \(c) columns (target: \(t)), expected \(columns) (target: \(hasTarget))")
        }
        rows = try r.i64(); weightSum = try r.f64()
        gram = try r.f64s(); xty = try r.f64s(); yty = try r.f64()
        blockCount = Int(try r.u64()); blockWeight = try r.f64()
        let bx = try r.f64s(), by = try r.f64s()
        guard gram.count == c * c, xty.count == (t ? c : 0), blockCount < blockRows,
              bx.count == blockCount * c, by.count == (t ? blockCount : 0) else {
            throw .data(context, "gram state is inconsistent (array lengths or block count)")
        }
        for i in 0..<bx.count { blockX[i] = bx[i] }
        for i in 0..<by.count { blockY[i] = by[i] }
    }
}
