import EngineCore
import Foundation
import LinearAlgebra
@testable import Operators
import TestSupport
import Testing

/// summary.json's `eigenvalue` on streams with a few planted heavy rows (the case where oja's used to
/// report 29.7 for a true 156.2: heavy rows that pass before the last epochs were dropped from its estimate).
@Suite struct TopEigenvectorEigenvalueTests {
    /// n light rows N(0, diag(s²)/d) with s_j from 1 to 2, and heavy rows 3·√(n/d)·u (+ 1% noise) at
    /// the given positions (λ₁ of AᵀA ≈ 11× the light rows' largest eigenvalue, along u).
    static func plantedStream(n: Int, d: Int, positions: [Int], seed: UInt64) -> Matrix {
        var a = gaussianMatrix(rows: n, cols: d, seed: seed, scale: (0..<d).map { (1 + Double($0) / Double(d)) / Double(d).squareRoot() })
        let g = gaussianMatrix(rows: 1, cols: d, seed: seed + 1).storage
        let un = g.reduce(0) { $0 + $1 * $1 }.squareRoot()
        let noise = gaussianMatrix(rows: positions.count, cols: d, seed: seed + 2)
        let scale = 3 * (Double(n) / Double(d)).squareRoot()
        for (k, r) in positions.enumerated() {
            for j in 0..<d { a[r, j] = scale * g[j] / un + 0.01 * scale * noise[k, j] }
        }
        return a
    }

    /// random-order (heavy rows kept exactly, the rest by blocks in random order): within 1% of LAPACK's λ₁
    /// of the exact Gram when the heavy rows are spread or early (measured 0.03%). Its guarantee needs a random
    /// order, so "all heavy rows in the last 1,000" is not a case for it.
    ///
    /// oja: its eigenvalue is the kept heavy rows' Σ(aᵀv)² with the final vector plus the other rows' score
    /// per unit weight over the last half of the stream, scaled to their weight. Heavy rows spread over the
    /// stream: within 1% of λ₁ (measured +0.29%; the light part averages ≥ n/2 i.i.d. rows, relative error
    /// ≈ √(2/n)). Heavy rows all in the last 1,000 rows: the vector is right (sin²θ 0.2%) but the eigenvalue
    /// +3.5% — most light rows of the last half were scored with the vector from before the heavy rows turned
    /// it toward u, and the light rows' own top direction has the larger Rayleigh quotient; the test holds it
    /// to 5%, short of the 1% goal. Heavy rows early: the vector itself is wrong (a fixed rate forgets them;
    /// sin²θ = 0.96), which oja flags (step_warning, now also a run warning), and the eigenvalue is that
    /// vector's Rayleigh quotient vᵀAᵀAv within 1% (measured 0.15%) — consistent with the vector, not with λ₁.
    /// Before, the estimate was the last epochs' average per unit weight × the whole weight, which drops heavy
    /// rows that passed earlier (the estimate this test was written against: 29.7 for 156.2).
    @Test(arguments: ["early", "late", "spread"])
    func heavyRowsEigenvalue(placement: String) throws {
        let n = 20_000, d = 20
        let positions: [Int]
        switch placement {
        case "early": positions = [100, 700, 1500, 1900, 2600]
        case "late": positions = [19_000, 19_300, 19_500, 19_800, 19_990]
        default: positions = [50, 5_000, 9_999, 14_000, 19_999]
        }
        let a = Self.plantedStream(n: n, d: d, positions: positions, seed: 61)
        let g = naiveGram(a)
        let ref = topEigen(g)
        let bs = batches(a, batchRows: 1000)
        for variant in ["oja", "random-order"] {
            let out: OperatorOutput
            if variant == "oja" { out = try runOp(oja(columns: d, seed: 5), bs).1 } else { out = try runOp(randomOrder(columns: d, rowsKnown: Int64(n), seed: 5), bs).1 }
            let v = vectorOf(out), est = summaryDouble(out, "eigenvalue")
            var rq = 0.0
            for p in 0..<d { for q in 0..<d { rq += v[p] * g[p, q] * v[q] } }
            let sin2 = eigError(v, ref.v1)
            print("top-eigenvector \(variant), heavy rows \(placement): eigenvalue \(est), λ₁ \(ref.l1) (rel \(est / ref.l1 - 1)), vᵀGv \(rq), sin²θ \(sin2), heavy_rows \(summaryDouble(out, "heavy_rows"))")
            // Both variants: the certified interval contains λ₁ whatever happened to the vector or the order.
            if let (lo, hi) = expectBoundContains(out, ref.l1, rows: n) {
                print("  \(variant) eigenvalue_bound [\(lo), \(hi)] (λ₁ at \((ref.l1 - lo) / (hi - lo)) of the width)")
                // random-order's eigenvalue estimates λ₁, so it is kept inside the interval that holds λ₁.
                if variant == "random-order" { #expect(lo <= est && est <= hi) }
            }
            switch (variant, placement) {
            case ("random-order", "late"):
                // Five heavy rows in the last 1,000 of 20,000 are not a random order: they meet only the last
                // power step (measured sin²θ 0.11; the estimate, 11% of λ₁, is raised to the bound's lower end,
                // the kept rows scored with the final vector: 85% of λ₁). Only the bound is promised, and it is
                // checked above.
                break
            case ("random-order", _):
                #expect(sin2 <= 1e-3)
                #expect(abs(est / ref.l1 - 1) <= 0.01)
            case ("oja", "early"):
                #expect(summaryBool(out, "step_warning"))
                #expect(out.warnings.contains { $0.what.hasPrefix("step_warning") }, "\(out.warnings)")
                #expect(abs(est / rq - 1) <= 0.01)
            case ("oja", "late"):
                #expect(sin2 <= 0.01)
                #expect(abs(est / ref.l1 - 1) <= 0.05)
            default:
                #expect(sin2 <= 0.01)
                #expect(summaryDouble(out, "heavy_rows") == Double(OjaTopEigenvector.keptMax))
                #expect(abs(est / ref.l1 - 1) <= 0.01)
            }
        }
    }

    /// The whole stream kept (n below the heavy threshold's d·ℓ² scale): random-order's answer is LAPACK's on the
    /// kept rows, and its bound is that number at both ends; compared with LAPACK on the exact Gram at the
    /// eigensolver's own accuracy (backward stable: ≈ d·u·λ₁; 1e-12 relative asked).
    @Test func exactAnswerIsItsOwnBound() throws {
        let n = 8, d = 16   // threshold (n/(d·log₂²d))·mean = mean/32: every χ²₁₆ row is above it
        let a = gaussianMatrix(rows: n, cols: d, seed: 81)
        let ref = topEigen(naiveGram(a))
        let out = try runOp(randomOrder(columns: d, rowsKnown: Int64(n), seed: 5), batches(a, batchRows: 5)).1
        #expect(summaryBool(out, "exact"))
        guard let (lo, hi) = expectBoundContains(out, ref.l1, rows: n) else { return }
        #expect(lo == hi && lo == summaryDouble(out, "eigenvalue"))
        #expect(abs(lo / ref.l1 - 1) <= 1e-12)
    }

    /// A drifting stream (the first half's rows have covariance diag(9, 1, …), the second half's
    /// diag(1, 1, 4, 1, …)): neither variant's eigenvalue has a guarantee here (oja's is the last half's
    /// average, random-order's assumes a random order), but both eigenvalue_bounds must contain λ₁;
    /// random-order must flag the order (summary and run warning).
    @Test func driftingStream() throws {
        let n = 20_000, d = 10
        var a = gaussianMatrix(rows: n, cols: d, seed: 71)
        for i in 0..<n { if i < n / 2 { a[i, 0] *= 3 } else { a[i, 2] *= 2 } }
        let g = naiveGram(a)
        let ref = topEigen(g)
        let bs = batches(a, batchRows: 1000)
        let oo = try runOp(oja(columns: d, seed: 5), bs).1
        let ob = expectBoundContains(oo, ref.l1, rows: n)
        print("drifting: oja eigenvalue \(summaryDouble(oo, "eigenvalue")), bound \(String(describing: ob)), λ₁ \(ref.l1)")
        let ro = try runOp(randomOrder(columns: d, rowsKnown: Int64(n), seed: 5), bs).1
        let rb = expectBoundContains(ro, ref.l1, rows: n)
        print("drifting: random-order eigenvalue \(summaryDouble(ro, "eigenvalue")), bound \(String(describing: rb)), order_z \(summaryDouble(ro, "order_z"))")
        #expect(summaryBool(ro, "order_suspect"))
        #expect(ro.warnings.contains { $0.what.hasPrefix("order_suspect") })
    }
}

/// Checks summary.json's `eigenvalue_bound` [lower, upper] against λ₁ of the exact Gram (LAPACK), and that
/// `eigenvalue_meaning` says what the number is. The bound is exact-arithmetic; the sums behind it and
/// LAPACK's λ₁ carry rounding of at most ≈ rows·2⁻⁵³ relative (sums of `rows` non-negative terms), which is
/// the slack allowed at each end. Returns the interval.
@discardableResult
func expectBoundContains(_ out: OperatorOutput, _ l1: Double, rows: Int) -> (Double, Double)? {
    #expect(summaryValue(out, "eigenvalue_meaning") != nil)
    guard case let .array(b)? = summaryValue(out, "eigenvalue_bound"), b.count == 2, case let .double(lo) = b[0], case let .double(hi) = b[1] else {
        Issue.record("no eigenvalue_bound"); return nil
    }
    let slack = 2 * Double(rows) * 0x1p-53
    #expect(lo <= l1 * (1 + slack) && l1 <= hi * (1 + slack), "[\(lo), \(hi)] vs λ₁ \(l1)")
    #expect(lo > 0 && lo <= hi)
    return (lo, hi)
}
