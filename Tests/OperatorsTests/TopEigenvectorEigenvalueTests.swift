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
    /// rows that passed earlier (issue 17: 29.7 for 156.2).
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
        for variant in placement == "late" ? ["oja"] : ["oja", "random-order"] {
            let out: OperatorOutput
            if variant == "oja" { out = try runOp(oja(columns: d, seed: 5), bs).1 } else { out = try runOp(randomOrder(columns: d, rowsKnown: Int64(n), seed: 5), bs).1 }
            let v = vectorOf(out), est = summaryDouble(out, "eigenvalue")
            var rq = 0.0
            for p in 0..<d { for q in 0..<d { rq += v[p] * g[p, q] * v[q] } }
            let sin2 = eigError(v, ref.v1)
            print("top-eigenvector \(variant), heavy rows \(placement): eigenvalue \(est), λ₁ \(ref.l1) (rel \(est / ref.l1 - 1)), vᵀGv \(rq), sin²θ \(sin2), heavy_rows \(summaryDouble(out, "heavy_rows"))")
            if variant == "oja" {
                // The certified interval contains λ₁ whatever happened to the vector.
                guard case let .array(b)? = summaryValue(out, "eigenvalue_bound"), case let .double(lo) = b[0], case let .double(hi) = b[1] else {
                    Issue.record("no eigenvalue_bound"); continue
                }
                #expect(lo <= ref.l1 * (1 + 1e-12) && ref.l1 <= hi * (1 + 1e-12), "[\(lo), \(hi)] vs λ₁ \(ref.l1)")
                print("  oja eigenvalue_bound [\(lo), \(hi)]")
            }
            switch (variant, placement) {
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

    /// A drifting stream (the first half's rows have covariance diag(9, 1, …), the second half's
    /// diag(1, 1, 4, 1, …)): oja's eigenvalue is the last half's average and has no guarantee here, but its
    /// eigenvalue_bound must contain λ₁; random-order must flag the order (summary and run warning).
    @Test func driftingStream() throws {
        let n = 20_000, d = 10
        var a = gaussianMatrix(rows: n, cols: d, seed: 71)
        for i in 0..<n { if i < n / 2 { a[i, 0] *= 3 } else { a[i, 2] *= 2 } }
        let g = naiveGram(a)
        let ref = topEigen(g)
        let bs = batches(a, batchRows: 1000)
        let oo = try runOp(oja(columns: d, seed: 5), bs).1
        guard case let .array(b)? = summaryValue(oo, "eigenvalue_bound"), case let .double(lo) = b[0], case let .double(hi) = b[1] else {
            Issue.record("no eigenvalue_bound"); return
        }
        print("drifting: oja eigenvalue \(summaryDouble(oo, "eigenvalue")), bound [\(lo), \(hi)], λ₁ \(ref.l1)")
        #expect(lo <= ref.l1 * (1 + 1e-12) && ref.l1 <= hi * (1 + 1e-12))
        let ro = try runOp(randomOrder(columns: d, rowsKnown: Int64(n), seed: 5), bs).1
        print("drifting: random-order eigenvalue \(summaryDouble(ro, "eigenvalue")), order_z \(summaryDouble(ro, "order_z"))")
        #expect(summaryBool(ro, "order_suspect"))
        #expect(ro.warnings.contains { $0.what.hasPrefix("order_suspect") })
    }
}
