import EngineCore
import Foundation
import LinearAlgebra
@testable import Operators
import TestSupport
import Testing

/// top-eigenvector against LAPACK (dsyevd) on the exact AᵀA in float64. Data are `rowflow gen spectrum`-style
/// rows (SpectrumData): iid rows, so the order is uniformly random unless a test reorders them.
///
/// Statistical tests run on fixed seeds, so each is deterministic; their thresholds were calibrated on
/// seeds 1–10 (TopEigenvectorCalibration.swift: the TOPEIG_CALIBRATE run, and a test re-checking two seeds) and carry a stated margin over
/// the worst seed seen — the false-failure rate quoted is the chance that another seed exceeds that margin.
@Suite struct TopEigenvectorAccuracyTests {
    /// Per-(d, variant) constant C of err(R) ≤ C/√R, at n = 2·10⁴ (d = 50) and n = 10⁵ (d = 500).
    /// Calibration (TOPEIG_CALIBRATE, seeds 1–10, R = 2 … 1024): the largest √R·err over all gaps and seeds was
    /// 2.8·10⁻³ (d = 50, random-order; median seed 1.2·10⁻³), 8.6·10⁻⁴ (d = 500, random-order; median
    /// 2.3·10⁻⁴), 8.0·10⁻³ (d = 50, oja; median 2.5·10⁻³), 1.7·10⁻³ (d = 500, oja; median 6.5·10⁻⁴), always
    /// at R ≤ 4 — the error falls like 1/R, faster than the 1/√R the theorem promises. C is twice the worst of
    /// the ten seeds: no seed came within a factor 2 of C (a rough estimate of the false-failure rate for an
    /// arbitrary seed: below 1 in 10); the pinned seed 1 sits below C/2.
    static func bound(d: Int, oja: Bool) -> Double {
        switch (d, oja) {
        case (50, false): return 6e-3
        case (500, false): return 1.8e-3
        case (50, true): return 1.6e-2
        default: return 3.5e-3
        }
    }

    /// err = 1 − ⟨v, v₁⟩² over gaps R = 2, 4, …, 1024: below C/√R at every R, and the least-squares slope of
    /// log err against log R at most −1/2 (measured ≈ −1: the last block's sampling noise, ∝ 1/(nR)).
    /// The eigenvalue: within 5% of λ₁ — the estimate averages ⟨a, x⟩² over the last ⌈T/3⌉ blocks (≥ 7,500
    /// rows here), whose relative sampling sd is √(2/7500) ≈ 1.6%; 5% is 3 sd (calibration: at most 1.9%).
    @Test(arguments: [50, 500])
    func errorFallsWithTheGap(d: Int) throws {
        let n = d == 50 ? 20_000 : 100_000
        let base = SpectrumData(n: n, d: d, gap: 2, seed: 1)
        var errs: [(Double, Double, Double)] = []
        for k in 1...10 {
            let r = Double(1 << k)
            let data = SpectrumData(copying: base, gap: r)
            let ref = topEigen(data.gram())
            var ro = randomOrder(columns: d, rowsKnown: Int64(n), seed: 1), oj = oja(columns: d, seed: 1)
            try data.forEachBatch(batchRows: 8192) { b in try ro.update(b); try oj.update(b) }
            let out = try ro.finish(), oo = try oj.finish()
            let e = eigError(vectorOf(out), ref.v1), eo = eigError(vectorOf(oo), ref.v1)
            errs.append((r, e, eo))
            #expect(e <= Self.bound(d: d, oja: false) / r.squareRoot(), "random-order d=\(d) R=\(r): err \(e)")
            #expect(eo <= Self.bound(d: d, oja: true) / r.squareRoot(), "oja d=\(d) R=\(r): err \(eo)")
            #expect(abs(summaryDouble(out, "eigenvalue") / ref.l1 - 1) < 0.05, "eigenvalue at R=\(r)")
            #expect(!summaryBool(out, "order_suspect"), "random order flagged at R=\(r)")
            #expect(out.warnings.isEmpty, "a random order raised warnings: \(out.warnings)")
        }
        for oja in [false, true] {
            let xs = errs.map { log($0.0) }, ys = errs.map { log(oja ? $0.2 : $0.1) }
            let mx = xs.reduce(0, +) / Double(xs.count), my = ys.reduce(0, +) / Double(ys.count)
            var sxy = 0.0, sxx = 0.0
            for i in 0..<xs.count { sxy += (xs[i] - mx) * (ys[i] - my); sxx += (xs[i] - mx) * (xs[i] - mx) }
            #expect(sxy / sxx <= -0.5, "d=\(d) \(oja ? "oja" : "random-order"): slope \(sxy / sxx)")
        }
    }

    /// Planted heavy rows along v₂ (h = 1, 10, 100; together 10% of ‖A‖_F², gen's recipe), R = 9, d = 50,
    /// n = 2·10⁴ in random order: every planted row is kept exactly — v₂ᵀ(HᵀH)v₂ holds their whole mass —
    /// and the error stays within the gap bound C/√R of the clean test (v₂'s eigenvalue grows by
    /// 0.1·‖A‖_F² ≈ 0.25·λ₁, so the effective gap is ≈ 3, where the clean error is 3× smaller than C/√9).
    /// Oja, which keeps no rows, must raise `step_warning` when a planted row has η‖a‖² > 1/4.
    @Test(arguments: [1, 10, 100])
    func plantedHeavyRowsAreKept(h: Int) throws {
        let n = 20_000, d = 50
        let data = SpectrumData(n: n, d: d, gap: 9, seed: 2, heavyRows: h)
        let ref = topEigen(data.gram())
        let bs = data.batches(batchRows: 1000)
        let (op, out) = try runOp(randomOrder(columns: d, rowsKnown: Int64(n), seed: 2), bs)
        let e = eigError(vectorOf(out), ref.v1)
        #expect(e <= TopEigenvectorAccuracyTests.bound(d: 50, oja: false) / 3, "h=\(h): err \(e)")
        #expect(summaryDouble(out, "heavy_rows") >= Double(h))
        var planted = 0.0
        for (_, row) in data.heavy { planted += row.reduce(0) { $0 + $1 * $1 } }
        let v2 = (0..<d).map { data.v[1, $0] }
        let kept = TopEigenvector.dot(v2, op.heavyTimes(v2))
        // The kept rows hold at least the planted mass along v₂ (other kept rows add a little more).
        #expect(kept >= planted * (1 - 1e-9), "h=\(h): v₂ᵀHᵀHv₂ = \(kept), planted \(planted)")
        // Oja keeps no rows. Each planted row has w‖a‖² ≈ (0.09/h)·n × the mean, so with the winning γ ≈ 2⁻⁸…2⁻¹⁰
        // (η = γ/mean) η‖a‖² ≈ 7, 0.7, 0.07 for h = 1, 10, 100: it must flag the first two (> 1/4), and at h = 100
        // (mild rows) be correct within its own clean bound.
        let (_, oo) = try runOp(oja(columns: d, seed: 2), bs)
        let eo = eigError(vectorOf(oo), ref.v1)
        print("planted h=\(h): random-order err \(e), oja err \(eo), oja step_max \(summaryDouble(oo, "step_max"))")
        #expect(summaryBool(oo, "step_warning") == (summaryDouble(oo, "step_max") > OjaTopEigenvector.stepLimit))
        if h < 100 {
            #expect(summaryBool(oo, "step_warning"), "oja did not flag h=\(h): step_max \(summaryDouble(oo, "step_max"))")
        } else {
            #expect(eo <= TopEigenvectorAccuracyTests.bound(d: 50, oja: true) / 3, "oja h=\(h): err \(eo)")
        }
    }

    /// Adversarial orders, d = 50, n = 2·10⁴: rows sorted by norm (ascending), the 10 planted heavy rows
    /// last, and rows sorted by their alignment with v₂ (most aligned last, so the last block's Gram points
    /// at v₂). random-order is never silently wrong: whenever its error exceeds the random-order bound C/√R,
    /// `order_suspect` is set — and it is set for all three orders (the measured errors are printed). oja, at
    /// R = 1024 ≫ log₂² d ≈ 32, is correct on every order (err ≤ 10⁻³) except that heavy rows make it
    /// raise `step_warning` instead.
    @Test(arguments: [16.0, 1024.0])
    func adversarialOrders(gap: Double) throws {
        let n = 20_000, d = 50
        let data = SpectrumData(n: n, d: d, gap: gap, seed: 3, heavyRows: 10)
        let ref = topEigen(data.gram())
        let v2 = topEigenSecond(data.gram())
        let (norms, align) = data.rowStats(along: v2)
        let byNorm = (0..<n).sorted { norms[$0] < norms[$1] }
        let heavyLast = (0..<n).filter { data.heavy[$0] == nil } + (0..<n).filter { data.heavy[$0] != nil }
        let v2Last = (0..<n).sorted { align[$0] < align[$1] }
        let bound = TopEigenvectorAccuracyTests.bound(d: 50, oja: false) / gap.squareRoot()
        for (name, order) in [("sorted by norm", byNorm), ("heavy rows last", heavyLast), ("v2-aligned last", v2Last)] {
            let bs = data.batches(batchRows: 2000, order: order)
            let (_, out) = try runOp(randomOrder(columns: d, rowsKnown: Int64(n), seed: 3), bs)
            let e = eigError(vectorOf(out), ref.v1)
            let suspect = summaryBool(out, "order_suspect")
            print("top-eigenvector random-order, R=\(gap), \(name): err \(e), order_z \(summaryDouble(out, "order_z")), suspect \(suspect)")
            #expect(e <= bound || suspect, "\(name): err \(e) and not flagged")
            #expect(suspect, "\(name): not flagged (order_z \(summaryDouble(out, "order_z")))")
            // A flag in summary.json alone is easy to miss: the run must also print it as a warning.
            #expect(out.warnings.contains { $0.what.hasPrefix("order_suspect") }, "\(name): flagged but no warning")
            if gap >= 1024 {
                let (_, oo) = try runOp(oja(columns: d, seed: 3), bs)
                let eo = eigError(vectorOf(oo), ref.v1)
                print("top-eigenvector oja, R=\(gap), \(name): err \(eo), step_warning \(summaryBool(oo, "step_warning"))")
                #expect(eo <= 1e-3 || summaryBool(oo, "step_warning"), "oja \(name): err \(eo)")
            }
        }
        // Without planted rows, sorted by norm: oja correct with no warning.
        let clean = SpectrumData(n: n, d: d, gap: gap, seed: 4)
        let cref = topEigen(clean.gram())
        let cn = clean.rowStats(along: v2).norm2
        let sorted = clean.batches(batchRows: 2000, order: (0..<n).sorted { cn[$0] < cn[$1] })
        if gap >= 1024 {
            let (_, oo) = try runOp(oja(columns: d, seed: 4), sorted)
            #expect(eigError(vectorOf(oo), cref.v1) <= 1e-3 && !summaryBool(oo, "step_warning"))
        }
    }

    /// Kacham & Woodruff show that Oja with any fixed learning rate fails on some random-order instances with
    /// R = Θ(log d / log log d). We could not consult their construction; this instance is ours, in that
    /// regime: d = 500, n = 500 rows, a ~ N(0, diag(12, 1, …, 1)) — the sample gap is R ≈ 3.3, against
    /// ln d / ln ln d = 3.4. Small η cannot lift a random start (correlation ~1/d) to v₁; large η lets the last
    /// few rows dominate. Measured: for each of 28 learning rates η·λ₁ ∈ [0.1, 3162] (log-spaced), the median
    /// error over 3 random orders of sequential single-copy Oja is ≥ 0.15 (the best η·λ₁ ≈ 7 gives 0.16),
    /// and our 12-copy grid's error is ≥ 0.15 too; the threshold 0.08 leaves a 2× margin. random-order keeps
    /// every row (n ≤ d·log₂² d, so all are heavy) and is exact: err < 10⁻¹².
    @Test func ojaFailsOnALogDOverLogLogDInstance() throws {
        let d = 500, n = 500
        var g = FastNormals(seed: 11)
        var a = Matrix(rows: n, cols: d)
        for i in 0..<n { for j in 0..<d { a[i, j] = g.normal() * (j == 0 ? 12.0.squareRoot() : 1) } }
        let gram = a.transposed.multiplied(by: a)
        let ref = topEigen(gram)
        #expect(ref.l1 / ref.l2 > 3 && ref.l1 / ref.l2 < 4, "sample gap \(ref.l1 / ref.l2)")
        var perEta: [Double] = []
        let etas = (0..<28).map { pow(10, -1 + 4.5 * Double($0) / 27) / ref.l1 }
        var orders: [[Int]] = []
        for t in 0..<3 {
            var o = Array(0..<n)
            var r = FastNormals(seed: 100 + UInt64(t))
            for i in stride(from: n - 1, to: 0, by: -1) { o.swapAt(i, Int(r.uniform() * Double(i + 1))) }
            orders.append(o)
        }
        for eta in etas {
            var es: [Double] = []
            for (t, o) in orders.enumerated() { es.append(eigError(sequentialOja(a, order: o, eta: eta, seed: UInt64(t)), ref.v1)) }
            perEta.append(es.sorted()[1])
        }
        print("KW-regime instance: best single-η Oja median error \(perEta.min()!) at η·λ₁ = \(etas[perEta.firstIndex(of: perEta.min()!)!] * ref.l1)")
        #expect(perEta.min()! >= 0.08)
        for (t, o) in orders.enumerated() {
            let bs = batchesOf(a, order: o, batchRows: 128)
            let (_, oo) = try runOp(oja(columns: d, seed: UInt64(t)), bs)
            #expect(eigError(vectorOf(oo), ref.v1) >= 0.08)
            let (_, out) = try runOp(randomOrder(columns: d, rowsKnown: Int64(n), seed: UInt64(t)), bs)
            #expect(eigError(vectorOf(out), ref.v1) < 1e-12 && summaryBool(out, "exact"))
        }
    }

    /// Unknown n (stdin): doubling epochs. Same accuracy class as with n known (bound C/√R at R = 16), and a
    /// wrong, too small n (a multi-frame zstd file reports only its first frame) continues in doubling epochs.
    @Test func unknownOrWrongRowCount() throws {
        let n = 20_000, d = 50
        let data = SpectrumData(n: n, d: d, gap: 16, seed: 5)
        let ref = topEigen(data.gram())
        let bs = data.batches(batchRows: 4096)
        for known in [nil, Int64(5000)] as [Int64?] {
            let (_, out) = try runOp(randomOrder(columns: d, rowsKnown: known, seed: 5), bs)
            #expect(eigError(vectorOf(out), ref.v1) <= TopEigenvectorAccuracyTests.bound(d: 50, oja: false) / 4)
            #expect(summaryValue(out, "schedule") == .string(known == nil ? "doubling" : "fixed+doubling"))
            #expect(abs(summaryDouble(out, "eigenvalue") / ref.l1 - 1) < 0.05)
        }
    }
}

/// Batching, snapshots, resume, corruption and edge cases (exact, not statistical).
@Suite struct TopEigenvectorStateTests {
    /// d = 12, n = 5000 with planted heavy rows (h = 5, 20; each with 2% of ‖A‖_F², far above the threshold),
    /// weights, n known or not (doubling epochs, demotions), kept rows as rows or — with a 1 MiB budget — as
    /// HᵀH: byte-identical states for batches of 1, 2, 7, 64 and n — blocks and chunks are cut at fixed row
    /// positions, each row is classified in stream order.
    @Test(arguments: [1, 2, 7, 64, 5000])
    func batchSizeInvariance(batchRows: Int) throws {
        let n = 5000, d = 12
        for h in [5, 20] {
            var data = SpectrumData(n: n, d: d, gap: 4, seed: 6)
            let big = (0.02 * Double(n) * 6.3).squareRoot()
            for k in 0..<h { data.heavy[7 + 241 * k] = (0..<d).map { big * data.v[1, $0] } }
            let w = (0..<n).map { Double($0 % 3) + 0.5 }
            for known in [Int64(n), nil] as [Int64?] {
                let ref = try runOp(randomOrder(columns: d, rowsKnown: known, blocks: 5), data.batches(batchRows: n, weights: w)).0
                let got = try runOp(randomOrder(columns: d, rowsKnown: known, blocks: 5), data.batches(batchRows: batchRows, weights: w)).0
                #expect(got.encodeState() == ref.encodeState(), "h=\(h) known=\(String(describing: known))")
                if known == nil { #expect(ref.heavyDemoted > 0, "demotions are exercised") }
            }
            let oref = try runOp(oja(columns: d), data.batches(batchRows: n, weights: w)).0
            let ogot = try runOp(oja(columns: d), data.batches(batchRows: batchRows, weights: w)).0
            #expect(ogot.encodeState() == oref.encodeState())
        }
        // HᵀH: d = 300, n = 1500 rows nearly all heavy (threshold ≈ 0.075× the mean), 1 MiB holds 434 kept rows
        // and HᵀH (0.7 MiB) fits, so the rows are folded into HᵀH part way.
        let wide = SpectrumData(n: 1500, d: 300, gap: 4, seed: 6)
        for known in [Int64(1500), nil] as [Int64?] {
            let mk = { randomOrder(columns: 300, rowsKnown: known, heavyMemoryMB: 1) }
            let ref = try runOp(mk(), wide.batches(batchRows: 1500)).0
            let got = try runOp(mk(), wide.batches(batchRows: batchRows)).0
            #expect(ref.heavyAsGram, "the HᵀH form is exercised")
            #expect(got.encodeState() == ref.encodeState(), "HᵀH known=\(String(describing: known))")
        }
    }

    /// Snapshot after k rows (mid-chunk, mid-block, before and after the switch to HᵀH), restore into a fresh
    /// instance, continue with other batch sizes: the final state and outputs equal the uninterrupted run's.
    @Test func snapshotRoundTripAndResume() throws {
        let n = 6000, d = 12
        let data = SpectrumData(n: n, d: d, gap: 4, seed: 7, heavyRows: 30)
        let whole = try runOp(randomOrder(columns: d, rowsKnown: Int64(n)), data.batches(batchRows: 500))
        let owhole = try runOp(oja(columns: d), data.batches(batchRows: 500))
        let all = data.batches(batchRows: 1)
        for k in [1, 17, 1203, 3001, 5999] {
            var first = randomOrder(columns: d, rowsKnown: Int64(n))
            var ofirst = oja(columns: d)
            for b in all[0..<k] { try first.update(b); try ofirst.update(b) }
            var restored = try RandomOrderTopEigenvector(columns: d, blocks: nil, rowsKnown: Int64(n), heavyMemoryMB: 256, seed: 0,
                                                         shard: 0, purpose: 99, state: first.encodeState(), location: "t")
            var orestored = try OjaTopEigenvector(columns: d, rowsKnown: nil, seed: 0, shard: 0, purpose: 99,
                                                  state: ofirst.encodeState(), location: "t")
            #expect(restored.encodeState() == first.encodeState())
            #expect(orestored.encodeState() == ofirst.encodeState())
            var rest = all[k...].makeIterator()
            var chunk: [RowBatch] = []
            while let b = rest.next() { chunk.append(b) }
            for b in chunk { try restored.update(b); try orestored.update(b) }
            #expect(restored.encodeState() == whole.0.encodeState(), "random-order resumed at \(k)")
            #expect(orestored.encodeState() == owhole.0.encodeState(), "oja resumed at \(k)")
            let out = try restored.finish(), oout = try orestored.finish()
            #expect(vectorOf(out) == vectorOf(whole.1) && vectorOf(oout) == vectorOf(owhole.1))
        }
    }

    @Test func corruptStateRejected() throws {
        let data = SpectrumData(n: 300, d: 6, gap: 4, seed: 8)
        let op = try runOp(randomOrder(columns: 6, rowsKnown: 300), data.batches(batchRows: 100)).0
        let s = op.encodeState()
        func restore(_ b: [UInt8], columns: Int = 6, known: Int64? = 300) throws {
            _ = try RandomOrderTopEigenvector(columns: columns, blocks: nil, rowsKnown: known, heavyMemoryMB: 256, seed: 0,
                                              shard: 0, purpose: 99, state: b, location: "t")
        }
        #expect(throws: EngineError.self) { try restore(s, columns: 7) }
        #expect(throws: EngineError.self) { try restore(s, known: nil) }
        #expect(throws: EngineError.self) { try restore(Array(s.dropLast(5))) }
        #expect(throws: EngineError.self) { try restore(s + [0]) }
        var tag = s; tag[0] = 1
        #expect(throws: EngineError.self) { try restore(tag) }
        let o = try runOp(oja(columns: 6), data.batches(batchRows: 100)).0
        #expect(throws: EngineError.self) {
            _ = try OjaTopEigenvector(columns: 6, rowsKnown: nil, seed: 0, shard: 0, purpose: 99, state: s, location: "t")
        }
        #expect(throws: EngineError.self) {
            _ = try OjaTopEigenvector(columns: 6, rowsKnown: nil, seed: 0, shard: 0, purpose: 99, state: Array(o.encodeState().dropLast(8)), location: "t")
        }
    }

    /// One row: kept (the first row always is), so the answer is exact: ±a/‖a‖ with the largest entry
    /// positive and eigenvalue w‖a‖². d = 1: the vector is [1] and the eigenvalue Σ w a².
    @Test func oneRowAndOneColumn() throws {
        var b = RowBatch(columns: 3, capacity: 1, hasTarget: false, hasWeight: true)
        _ = b.appendSlot(index: 0)
        b.features = [1, -4, 2]; b.weights = [2]
        let (_, out) = try runOp(randomOrder(columns: 3, rowsKnown: 1), [b])
        let norm = 21.0.squareRoot()
        #expect(relativeError(vectorOf(out), [-1 / norm, 4 / norm, -2 / norm]) < 1e-15)
        #expect(abs(summaryDouble(out, "eigenvalue") - 42) < 1e-12 && summaryBool(out, "exact"))
        // Oja takes one small step (γ ≤ 1/16) from its random start: only a finite unit vector is promised.
        let (_, oo) = try runOp(oja(columns: 3), [b])
        #expect(abs(vectorOf(oo).reduce(0) { $0 + $1 * $1 } - 1) < 1e-12)
        let col = Matrix(rows: 1000, cols: 1, storage: (0..<1000).map { Double($0 % 7) - 3 })
        let sum = col.storage.reduce(0) { $0 + $1 * $1 }
        for known in [Int64(1000), nil] as [Int64?] {
            let (_, o1) = try runOp(randomOrder(columns: 1, rowsKnown: known), batches(col, batchRows: 64))
            #expect(vectorOf(o1) == [1])
            // d = 1: ℓ = 1, so rows above F²/1 are heavy — only the first; the light part is extrapolated from
            // the last blocks, a sampling estimate: within 10% of Σa² here (values in −3…3, n = 1000).
            #expect(abs(summaryDouble(o1, "eigenvalue") / sum - 1) < 0.1)
            let (_, o2) = try runOp(oja(columns: 1), batches(col, batchRows: 64))
            #expect(vectorOf(o2) == [1])
        }
    }

    /// Weights are multiplicities. When every row is heavy — here n = 100 ≪ d·log₂² d = 1138, so the threshold
    /// is 0.09× the mean w‖a‖², below every row's (χ²₄₀/40 ≥ 0.5, weights 1…4) — the answer is exact:
    /// LAPACK on AᵀWA, to 1e-12 (two dsyevd on the same matrix in different forms agree to ~κ·ε).
    @Test func weightedExactPath() throws {
        let a = gaussianMatrix(rows: 100, cols: 40, seed: 9, scale: (0..<40).map { $0 == 3 ? 3 : 1 })
        let w = (0..<100).map { Double($0 % 4) + 1 }
        let ref = topEigen(naiveGram(a, weights: w))
        let (_, out) = try runOp(randomOrder(columns: 40, rowsKnown: 100), batches(a, weights: w, batchRows: 33))
        #expect(summaryBool(out, "exact"))
        #expect(eigError(vectorOf(out), ref.v1) < 1e-12)
        #expect(abs(summaryDouble(out, "eigenvalue") - ref.l1) / ref.l1 < 1e-12)
        #expect(summaryDouble(out, "weight_sum") == w.reduce(0, +))
    }

    /// Zero rows: a finite unit vector and eigenvalue 0; an empty stream (an empty shard): the seeded start.
    @Test func zeroAndEmpty() throws {
        let z = Matrix(rows: 50, cols: 4)
        for op in [try runOp(randomOrder(columns: 4, rowsKnown: 50), batches(z, batchRows: 7)).1,
                   try runOp(oja(columns: 4), batches(z, batchRows: 7)).1,
                   try runOp(randomOrder(columns: 4, rowsKnown: nil), []).1] {
            let v = vectorOf(op)
            #expect(v.allSatisfy { $0.isFinite } && abs(v.reduce(0) { $0 + $1 * $1 } - 1) < 1e-12)
            #expect(summaryDouble(op, "eigenvalue") == 0)
        }
    }

    /// The memory cap: with heavy_memory_mb too small for HᵀH, kept rows stop at the cap and further heavy rows
    /// are counted in `heavy_overflow` (treated as light), never dropped silently.
    @Test func heavyMemoryCap() throws {
        let d = 600, n = 800   // all heavy (n ≤ d·log₂²d); HᵀH would need 2.9 MB > 1 MB
        let data = SpectrumData(n: n, d: d, gap: 4, seed: 10)
        let (op, out) = try runOp(randomOrder(columns: d, rowsKnown: Int64(n), heavyMemoryMB: 1), data.batches(batchRows: 100))
        let cap = (1 << 20) / (8 * (d + 2))
        #expect(!op.heavyAsGram && op.heavyQ.count == cap)
        #expect(summaryDouble(out, "heavy_overflow") == Double(n - cap))
        #expect(summaryDouble(out, "heavy_rows") + summaryDouble(out, "heavy_overflow") == Double(n))
        #expect(!summaryBool(out, "exact"))
    }
}

/// The second eigenvector of AᵀA.
func topEigenSecond(_ g: Matrix) -> [Double] {
    let e = try! LAPACK.symmetricEigen(g)
    return (0..<g.rows).map { e.vectors[1, $0] }
}

/// Sequential single-copy Oja (the textbook rule, normalised every row) from the same seeded start kind.
func sequentialOja(_ a: Matrix, order: [Int], eta: Double, seed: UInt64) -> [Double] {
    let d = a.cols
    var v = TopEigenvector.initialVector(columns: d, seed: seed, shard: 0, purpose: 99)
    a.storage.withUnsafeBufferPointer { ap in
        v.withUnsafeMutableBufferPointer { vp in
            for r in order {
                let row = ap.baseAddress! + r * d
                let c = eta * BlockKernels.dot(row, UnsafePointer(vp.baseAddress!), n: d)
                var s = 0.0
                for j in 0..<d { vp[j] += c * row[j]; s += vp[j] * vp[j] }
                let inv = 1 / s.squareRoot()
                for j in 0..<d { vp[j] *= inv }
            }
        }
    }
    return v
}

/// Rows of a matrix in a given order, as batches.
func batchesOf(_ a: Matrix, order: [Int], batchRows: Int) -> [RowBatch] {
    var out: [RowBatch] = []
    var s = 0
    while s < order.count {
        let n = min(batchRows, order.count - s)
        var b = RowBatch(columns: a.cols, capacity: n, hasTarget: false, hasWeight: false)
        for i in 0..<n {
            let r = order[s + i]
            let k = b.appendSlot(index: Int64(r))
            for j in 0..<a.cols { b.features[k * a.cols + j] = a[r, j] }
        }
        out.append(b)
        s += n
    }
    return out
}
