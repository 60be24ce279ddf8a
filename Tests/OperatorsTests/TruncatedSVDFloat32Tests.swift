import EngineCore
import LinearAlgebra
@testable import Operators
import TestSupport
import Testing

/// `precision: float32` (the Gram method's 64-row chunks formed by ssyrk, added in float64).
@Suite struct TruncatedSVDFloat32Tests {
    /// Batches whose rows arrive the way the engine's float32 fast path delivers them: staged float32 values,
    /// then either widened (`materialize`) or only checked (`checkStaged`, `features` left unfilled).
    func stagedBatches(_ a: Matrix, batchRows: Int, widen: Bool) throws -> [RowBatch] {
        var out: [RowBatch] = []
        var r = 0
        while r < a.rows {
            let n = min(batchRows, a.rows - r)
            var b = RowBatch(columns: a.cols, capacity: n, hasTarget: false, hasWeight: false)
            b.enableStaging()
            try b.withStaging(fromRow: 0) { (p, _) throws(EngineError) in
                let f = p.assumingMemoryBound(to: Float.self)
                for i in 0..<n { for j in 0..<a.cols { f[i * a.cols + j] = Float(a[r + i, j]) } }
            }
            b.commitStaged(n, firstIndex: Int64(r))
            if widen { try b.materialize() } else { try b.checkStaged() }
            out.append(b)
            r += n
        }
        return out
    }

    func config(rank: Int, blockRows: Int, center: Bool = false, decay: Double = 1) -> TruncatedSVDConfig {
        TruncatedSVDConfig(rank: rank, method: .gram, blockRows: blockRows, center: center, decay: decay, precision: .float32)
    }

    /// The bound holds for float32 chunks on random instances — float32 data of random spectra, sizes, block
    /// and batch sizes, weights, centring and decay (the narrowing path, whose rounding enters as a
    /// representation error), and rows scaled by 2^±100 (blocks float32 cannot take fall back to float64).
    /// Reference: dgesdd in float64 on the effective matrix. Where rank ≤ k the bound must equal the truth to
    /// twice the margin, and the measured defect must stay below the margin. The actual float32 error is
    /// orders of magnitude below the worst case, so the defect check alone would not catch a margin that is
    /// too small by a constant (γ for one row instead of 65): every instance whose blocks all took the float32
    /// path is therefore also checked against the worst case itself, margin ≥ √k·γ₆₅·F² (Higham's bound on a
    /// 64-row chunk's float32 Gram, summed over chunks, moved into the top-k sum by at most √k·‖H‖_F).
    @Test func boundHoldsOnRandomInstances() throws {
        let rng = CounterRandom(seed: 3232, shard: 0, purpose: 9)
        var lane: UInt32 = 0
        func uni(_ i: Int) -> Double { lane += 1; return rng.uniform(index: UInt64(i), lane: lane) }
        var lowRank = 0, fallbacks = 0, worstDefect = 0.0
        for inst in 0..<160 {
            lane = 0
            let n = 1 + Int(uni(inst) * 500), d = 1 + Int(uni(inst) * 40)
            let k = 1 + Int(uni(inst) * 6)
            let planted = uni(inst) < 0.4 ? max(1, min(d, Int(uni(inst) * Double(k)) + 1)) : d
            let decayS = 0.3 + 0.7 * uni(inst)
            var sigma = (0..<d).map { j in j < planted ? Foundation_pow(decayS, Double(j)) * (0.5 + uni(inst)) : 0 }
            sigma.sort(by: >)
            var a = spectrumData(rows: n, sigma: sigma, seed: UInt64(inst) + 500)
            let center = uni(inst) < 0.2, weighted = uni(inst) < 0.2, decayed = uni(inst) < 0.15
            let extreme = uni(inst) < 0.2
            if extreme {
                // Whole stretches of rows at 2^±100: their blocks cannot be formed in float32.
                for i in 0..<n where (i / 37) % 3 == 1 { let s = (i / 37) % 2 == 0 ? 0x1p100 : 0x1p-100; for j in 0..<d { a[i, j] *= s } }
            }
            for i in 0..<n { for j in 0..<d { a[i, j] = Double(Float(a[i, j])) } }
            let weights: [Double]? = weighted ? (0..<n).map { _ in uni(inst) < 0.1 ? 0 : 3 * uni(inst) } : nil
            let b = 1 + Int(uni(inst) * 200)
            let decay = decayed ? 1 - 0.02 * uni(inst) : 1
            let op = try fed(TruncatedSVDOperator(config: config(rank: k, blockRows: b, center: center, decay: decay), columns: d),
                             batches(a, weights: weights, batchRows: 1 + Int(uni(inst) * 90)))
            let r = try op.result()
            let eff = effectiveMatrix(a, weights: weights, center: center, decay: decay, blockRows: b)
            let ref = try reference(eff)
            let truth = ref.tail(k), refErr = ref.tailError(k, n: n)
            let tag = "instance \(inst): n \(n) d \(d) k \(k) b \(b) center \(center) weights \(weighted) decay \(decay) extreme \(extreme) planted \(planted)"
            #expect(r.tailBound >= truth - refErr, "\(tag): bound \(r.tailBound) < truth \(truth)")
            if !extreme && !center && !decayed {
                let gamma65 = 65 * 0x1p-24 / (1 - 65 * 0x1p-24)
                #expect(r.roundingMargin >= Double(k).squareRoot() * gamma65 * r.frobeniusSq,
                        "\(tag): margin \(r.roundingMargin) below the float32 worst case")
            }
            if extreme { fallbacks += 1 }
            if planted <= k && !center && !decayed && weights == nil && !extreme {
                lowRank += 1
                #expect(r.tailBound - truth <= 2 * r.roundingMargin + refErr, "\(tag): bound \(r.tailBound) vs truth \(truth), margin \(r.roundingMargin)")
                if n >= 4 * planted { #expect(r.numericalRank == planted, "\(tag): numerical rank \(r.numericalRank)") }
                let defect = r.singularValues.prefix(k).reduce(0) { $0 + $1 * $1 } - ref.s.prefix(k).reduce(0) { $0 + $1 * $1 } - refErr
                if defect > 0 && r.roundingMargin > 0 {
                    worstDefect = max(worstDefect, defect / r.roundingMargin)
                    #expect(defect <= r.roundingMargin, "\(tag): defect \(defect) vs margin \(r.roundingMargin)")
                }
            }
        }
        #expect(lowRank >= 20 && fallbacks >= 10)
        print("truncated-svd float32 property: \(lowRank) rank ≤ k instances, \(fallbacks) with 2^±100 rows, worst defect/margin \(worstDefect)")
    }

    /// Values against dgesdd on 20,000 float32 rows (d = 64, slow spectrum): within the run's own certificate
    /// (σ² − σ̂² and σ̂² − σ² ≤ margin + the reference's error), and the same certificate is ≤ √k·γ₆₅·F²
    /// plus the float64 terms — the margin the documentation states.
    @Test func valuesWithinCertificate() throws {
        let d = 64, k = 8, n = 20_000
        var a = spectrumData(rows: n, sigma: (0..<d).map { Foundation_pow(0.9, Double($0)) }, seed: 77)
        for i in 0..<n { for j in 0..<d { a[i, j] = Double(Float(a[i, j])) } }
        let r = try fed(TruncatedSVDOperator(config: config(rank: k, blockRows: 1000), columns: d), batches(a, batchRows: 4096)).result()
        let ref = try reference(a)
        let refErr = 20 * Double(n) * unitRoundoff * ref.s[0] * ref.s[0]
        for j in 0..<k {
            let est = r.singularValues[j] * r.singularValues[j], truth = ref.s[j] * ref.s[j]
            #expect(abs(est - truth) <= r.roundingMargin + refErr, "σ_\(j): \(r.singularValues[j]) vs \(ref.s[j])")
        }
        let gamma = 65 * 0x1p-24 / (1 - 65 * 0x1p-24)
        let stated = Double(k).squareRoot() * gamma * r.frobeniusSq
        #expect(r.roundingMargin >= stated && r.roundingMargin <= 1.01 * stated)
        print("truncated-svd float32: max relative σ error \(relativeError(Array(r.singularValues.prefix(k)), Array(ref.s.prefix(k)))), margin/F² \(r.roundingMargin / r.frobeniusSq)")
    }

    /// Centred float32 (PCA on rows whose column means, +2, are far from zero: the case the shift is for)
    /// against dgesdd in float64 on the exactly centred matrix: the tail bound holds, every σ² is within the
    /// run's certificate, the certificate is within 2× of the stated float32 term √k·γ₆₅·‖Y‖_F² (Y the shifted
    /// rows, ‖Y‖_F² ≤ 2·(F² + n·‖μ − s‖²)), and the explained variances agree with float64 to 1e-6 relative —
    /// what scikit-learn's IncrementalPCA reaches on float32 input (its own arithmetic is float32).
    @Test func centredAgainstFloat64() throws {
        let d = 48, k = 6, n = 30_000
        var a = spectrumData(rows: n, sigma: (0..<d).map { 3 * Foundation_pow(0.85, Double($0)) }, seed: 79)
        for i in 0..<n { for j in 0..<d { a[i, j] = Double(Float(a[i, j] + 2 + 0.01 * Double(j))) } }
        let blockRows = TruncatedSVDConfig.gramBlockRows(columns: d)
        let r = try fed(TruncatedSVDOperator(config: config(rank: k, blockRows: blockRows, center: true), columns: d),
                        stagedBatches(a, batchRows: 4096, widen: false)).result()
        let r64 = try fed(TruncatedSVDOperator(config: TruncatedSVDConfig(rank: k, method: .gram, blockRows: blockRows, center: true), columns: d),
                          batches(a, batchRows: 4096)).result()
        let ref = try reference(effectiveMatrix(a, center: true))
        let refErr = 20 * Double(n) * unitRoundoff * ref.s[0] * ref.s[0]
        #expect(r.tailBound >= ref.tail(k) - refErr)
        for j in 0..<k {
            let est = r.singularValues[j] * r.singularValues[j], truth = ref.s[j] * ref.s[j]
            #expect(abs(est - truth) <= r.roundingMargin + refErr, "σ_\(j): \(r.singularValues[j]) vs \(ref.s[j])")
            #expect(abs(est - r64.singularValues[j] * r64.singularValues[j]) <= 1e-6 * truth, "σ_\(j) float32 vs float64")
        }
        let gamma = 65 * 0x1p-24 / (1 - 65 * 0x1p-24)
        #expect(r.roundingMargin <= 2 * Double(k).squareRoot() * gamma * 2 * r.frobeniusSq * 1.01)
        print("truncated-svd centred float32: max relative σ error \(relativeError(Array(r.singularValues.prefix(k)), Array(ref.s.prefix(k)))), margin/F² \(r.roundingMargin / r.frobeniusSq)")
    }

    /// The noise floor (λ ≤ 16·u₃₂·λ₁) against the noise it is there for: on exactly rank-3 float32 rows the
    /// float32-chunked Gram matrix's other eigenvalues are pure rounding. They must sit ≥ 8× below the floor
    /// (the margin the comment in `result()` claims) for one chunk of rows (the noisiest case: nothing
    /// averages) at d = 64 and 256 and for 2·10⁴ rows, and numerical_rank must be 3.
    @Test(arguments: [(64, 64), (64, 256), (20_000, 64)])
    func noiseFloorClearsRoundingNoise(rows n: Int, columns d: Int) throws {
        let f = gaussianMatrix(rows: n, cols: 3, seed: 83), w = gaussianMatrix(rows: 3, cols: d, seed: 84)
        var a = f.multiplied(by: w)
        for i in 0..<n { for j in 0..<d { a[i, j] = Double(Float(a[i, j])) } }
        var op = try fed(TruncatedSVDOperator(config: config(rank: 6, blockRows: 1000), columns: d), batches(a, batchRows: 4096))
        #expect(try op.result().numericalRank == 3)
        try op.closeBlock()
        var g = Matrix(rows: d, cols: d, storage: op.gram)
        g.symmetrizeFromUpper()
        let values = try LAPACK.symmetricEigen(g).values
        let noise = max(abs(values[3]), abs(values.last!)) / values[0]
        let floor = 16 * 0x1p-24
        print("truncated-svd float32 noise, \(n) rank-3 rows of \(d): λ_noise/λ₁ = \(noise) (floor \(floor))")
        #expect(noise * 8 <= floor)
    }

    /// The same state, to the byte, whether rows come as float64 `features`, as staged float32 rows widened,
    /// or as staged rows never widened (`features` unfilled) — the three ways the engine delivers float32
    /// input — for batch sizes that cut blocks and chunks anywhere; uncentred and centred (whose whole blocks
    /// from a staged batch take the shifted float32 path straight from the batch, the others via the block).
    @Test(arguments: [1, 63, 64, 1000, 4096], [false, true])
    func deliveryDoesNotChangeState(batchRows: Int, center: Bool) throws {
        let d = 24
        var a = spectrumData(rows: 5000, sigma: (0..<d).map { Foundation_pow(0.8, Double($0)) }, seed: 78)
        for i in 0..<a.rows { for j in 0..<d { a[i, j] = Double(Float(a[i, j] + (center ? 2 : 0))) } }
        let blockRows = TruncatedSVDConfig.gramBlockRows(columns: d)
        let cfg = config(rank: 4, blockRows: blockRows, center: center)
        let plain = try fed(TruncatedSVDOperator(config: cfg, columns: d), batches(a, batchRows: 777))
        let widened = try fed(TruncatedSVDOperator(config: cfg, columns: d), stagedBatches(a, batchRows: batchRows, widen: true))
        let unfilled = try fed(TruncatedSVDOperator(config: cfg, columns: d), stagedBatches(a, batchRows: batchRows, widen: false))
        #expect(widened.encodeState() == plain.encodeState())
        #expect(unfilled.encodeState() == plain.encodeState())
        #expect(plain.readsFloat32Rows)
    }

    /// `precision: auto` takes float32 only for gram on float32 sources with rank ≤ 24 (centred or not); explicit values win; the
    /// incremental method ignores it; a float64 state is refused by a float32 operator.
    @Test func resolution() throws {
        let desc = OperatorRegistry.standard["truncated-svd"]!
        func params(_ extra: [(String, JSON)]) -> ParamValues {
            var v = desc.parameters.map { ($0.name, $0.defaultValue ?? .null) }
            for (k, x) in [("rank", JSON.int(4))] + extra { v = v.map { $0.0 == k ? (k, x) : $0 } }
            return ParamValues(v)
        }
        let gram: [(String, JSON)] = [("method", .string("gram"))]
        #expect(try TruncatedSVDConfig.resolve(params(gram), columns: 8, float32Values: true).precision == .float32)
        #expect(try TruncatedSVDConfig.resolve(params(gram), columns: 8, float32Values: false).precision == .float64)
        #expect(try TruncatedSVDConfig.resolve(params(gram + [("center", .bool(true))]), columns: 8, float32Values: true).precision == .float32)
        #expect(try TruncatedSVDConfig.resolve(params(gram + [("rank", .int(25))]), columns: 64, float32Values: true).precision == .float64)
        #expect(try TruncatedSVDConfig.resolve(params(gram + [("precision", .string("float64"))]), columns: 8, float32Values: true).precision == .float64)
        #expect(try TruncatedSVDConfig.resolve(params(gram + [("precision", .string("float32"))]), columns: 8, float32Values: false).precision == .float32)
        #expect(try TruncatedSVDConfig.resolve(params([("method", .string("incremental")), ("precision", .string("float32"))]), columns: 8).precision == .float64)
        let f64 = TruncatedSVDOperator(config: TruncatedSVDConfig(rank: 2, method: .gram, blockRows: 16), columns: 4)
        #expect(throws: EngineError.self) { try TruncatedSVDOperator(config: config(rank: 2, blockRows: 16), columns: 4, state: f64.encodeState(), location: "t") }
    }

    /// `checkStaged` raises the error `materialize` would, for the same row.
    @Test func checkStagedNamesTheBadRow() throws {
        func batch() throws -> RowBatch {
            var b = RowBatch(columns: 3, capacity: 40, hasTarget: false, hasWeight: false)
            b.enableStaging()
            try b.withStaging(fromRow: 0) { (p, _) throws(EngineError) in
                let f = p.assumingMemoryBound(to: Float.self)
                for i in 0..<120 { f[i] = Float(i) }
                f[3 * 17 + 2] = .infinity
                f[3 * 30] = .nan
            }
            b.commitStaged(40, firstIndex: 0)
            b.stagedSource = "in.f32"
            return b
        }
        var x = try batch(), y = try batch()
        var e1 = "", e2 = ""
        do { try x.materialize() } catch { e1 = error.description }
        do { try y.checkStaged() } catch { e2 = error.description }
        #expect(e1.contains("row 18") && e1 == e2, "\(e1) | \(e2)")
    }
}
