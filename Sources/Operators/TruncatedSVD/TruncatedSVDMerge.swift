import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#endif

/// Merging shard sketches: their Grams or sketches added, F², weights and margins summed, so the bound stays
/// valid (the incremental result depends on merge order; docs/checkpoints-and-merge.md).
extension TruncatedSVDOperator {
    public mutating func merge(_ other: TruncatedSVDOperator) throws(EngineError) {
        guard other.columns == columns, other.config == config else {
            throw .usage("merge", "truncated-svd states differ in shape or parameters (\(columns) vs \(other.columns) columns)")
        }
        var o = other
        try o.closeBlock()
        let d = columns, u = TruncatedSVDOperator.u
        // The other's sketch as rows √λ_j q_j (or its Gram matrix), plus the mean-correction row.
        var extra: [Double] = []
        var corrSq = 0.0
        var repErr = 0.0
        if config.center && o.effectiveWeight > 0 {
            if !hasShift { shift = o.shift; hasShift = true; mean = [Double](repeating: 0, count: d) }
            var mB = [Double](repeating: 0, count: d)
            for j in 0..<d { mB[j] = (o.shift[j] - shift[j]) + o.mean[j] }
            let wA = effectiveWeight, wB = o.effectiveWeight
            if wA > 0 {
                let c = (wA * wB / (wA + wB)).squareRoot()
                extra = (0..<d).map { c * (mB[$0] - mean[$0]) }
                corrSq = extra.reduce(0) { $0 + $1 * $1 }
                var sn = 0.0
                for j in 0..<d { sn += o.shift[j] * o.shift[j] + shift[j] * shift[j] }
                repErr = c * (meanError + o.meanError + 4 * u * sn.squareRoot()) + 2 * u * corrSq.squareRoot()
            }
            updateMean(wA: wA, wB: wB, mB: mB, meanBErr: o.meanError + 4 * u * (o.shift.reduce(0) { $0 + $1 * $1 }).squareRoot())
            effectiveWeight = wA + wB
        } else {
            effectiveWeight += o.effectiveWeight
        }
        rows += o.rows
        weightSum += o.weightSum
        addFrob(o.frobeniusSq)
        margin += o.margin
        for m in o.topMasses { insertMass(m) }
        if corrSq > 0 { insertMass(corrSq) }
        switch config.method {
        case .gram:
            for i in 0..<gram.count { gram[i] += o.gram[i] }
            margin += Double(config.rank) * u * 2 * (frob + o.frob)
            if !extra.isEmpty {
                extra.withUnsafeBufferPointer { x in
                    gram.withUnsafeMutableBufferPointer { g in BlockKernels.syrkUpper(x.baseAddress!, rows: 1, n: d, into: g.baseAddress!) }
                }
                addFrob(corrSq)
                margin += 2 * repErr * corrSq.squareRoot() + repErr * repErr
            }
        case .incremental:
            let sk = o.sketch!
            let kb = sk.count
            let basis = sk.basis
            for i in 0..<kb {
                let s = sk.values[i].squareRoot()
                for j in 0..<d { cbuf[i * d + j] = s * basis[i * d + j] }
            }
            var n = kb
            if !extra.isEmpty {
                for j in 0..<d { cbuf[kb * d + j] = extra[j] }
                n += 1
            }
            guard n > 0 else { return }
            var normSq = 0.0
            for i in 0..<n * d { normSq += cbuf[i] * cbuf[i] }
            addFrob(corrSq)
            margin += u * Double(n * d + 4) * normSq
            // Forming √λ·q rounds each entry by u relative; the correction row carries repErr.
            let e = 2 * u * normSq.squareRoot() + repErr
            margin += 2 * e * normSq.squareRoot() + e * e
            let rep: SketchStepReport
            let block = cbuf
            do { rep = try block.withUnsafeBufferPointer { (c) throws(LinearAlgebraError) in try sketch!.absorb(c.baseAddress!, rows: n) } }
            catch { throw .internal("truncated-svd", error.description) }
            margin += stepMargin(rep, blockRows: n, normSq: normSq)
            try reorthonormalize()
        }
    }

    mutating func insertMass(_ s: Double) {
        let k = config.rank
        guard topMasses.count < k || s > topMasses[topMasses.count - 1] else { return }
        var pos = topMasses.count
        while pos > 0 && topMasses[pos - 1] < s { pos -= 1 }
        topMasses.insert(s, at: pos)
        if topMasses.count > k { topMasses.removeLast() }
    }
}
