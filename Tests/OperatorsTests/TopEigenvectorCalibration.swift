import EngineCore
import Foundation
import LinearAlgebra
@testable import Operators
import TestSupport
import Testing

/// Not a test: the calibration run behind the constants of TopEigenvectorAccuracyTests (skipped unless
/// TOPEIG_CALIBRATE is set; TOPEIG_SEEDS=1,2,… picks the seeds). Prints err, √R·err, λ̂/λ₁ and the heavy-row
/// count per gap.
@Suite struct TopEigCalibration {
    @Test(.enabled(if: ProcessInfo.processInfo.environment["TOPEIG_CALIBRATE"] != nil), arguments: [50, 500])
    func curve(d: Int) throws {
        let n = d == 50 ? 20_000 : 100_000
        let seeds: [UInt64] = (ProcessInfo.processInfo.environment["TOPEIG_SEEDS"] ?? "1").split(separator: ",").map { UInt64($0)! }
        for seed in seeds {
            var data = SpectrumData(n: n, d: d, gap: 2, seed: seed)
            let base = data
            var line = "d=\(d) seed=\(seed):"
            for k in 1...10 {
                let r = Double(1 << k)
                data = SpectrumData(copying: base, gap: r)
                let ref = topEigen(data.gram())
                let bs = data.batches(batchRows: 8192)
                let t0 = Date()
                let (_, out) = try runOp(randomOrder(columns: d, rowsKnown: Int64(n), seed: seed), bs)
                let t1 = Date()
                let (_, oo) = try runOp(oja(columns: d, seed: seed), bs)
                let e = eigError(vectorOf(out), ref.v1), eo = eigError(vectorOf(oo), ref.v1)
                line += String(format: " R=%g ro=%.2e(√R·e=%.2e, λ̂/λ=%.4f, h=%g, %.2fs) oja=%.2e", r, e, e * r.squareRoot(),
                               summaryDouble(out, "eigenvalue") / ref.l1, summaryDouble(out, "heavy_rows"), t1.timeIntervalSince(t0), eo)
            }
            print(line)
        }
    }
}
