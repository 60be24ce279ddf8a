import EngineCore
import Foundation
import LinearAlgebra
@testable import Operators
import TestSupport
import Testing

/// Temporary: measure errors for calibration.
@Suite struct TopEigCalibration {
    @Test(arguments: [50, 500])
    func curve(d: Int) throws {
        guard ProcessInfo.processInfo.environment["TOPEIG_CALIBRATE"] != nil else { return }
        let n = d == 50 ? 20_000 : 100_000
        let seeds: [UInt64] = (ProcessInfo.processInfo.environment["TOPEIG_SEEDS"] ?? "1").split(separator: ",").map { UInt64($0)! }
        for seed in seeds {
            let tg = Date()
            var data = SpectrumData(n: n, d: d, gap: 2, seed: seed)
            print("gen", Date().timeIntervalSince(tg))
            let base = data
            var line = "d=\(d) seed=\(seed):"
            for k in 1...10 {
                let r = Double(1 << k)
                data = SpectrumData(copying: base, gap: r)
                let ta = Date()
                let ref = topEigen(data.gram())
                let tb = Date()
                let bs = data.batches(batchRows: 8192)
                print("gram", tb.timeIntervalSince(ta), "batches", Date().timeIntervalSince(tb))
                let t0 = Date()
                let (_, out) = try runOp(randomOrder(columns: d, rowsKnown: Int64(n), seed: seed), bs)
                let t1 = Date()
                let (_, oo) = try runOp(oja(columns: d, seed: seed), bs)
                print("oja", Date().timeIntervalSince(t1))
                let e = eigError(vectorOf(out), ref.v1), eo = eigError(vectorOf(oo), ref.v1)
                line += String(format: " R=%g ro=%.2e(√R·e=%.2e, λ̂/λ=%.4f, h=%g, %.2fs) oja=%.2e", r, e, e * r.squareRoot(),
                               summaryDouble(out, "eigenvalue") / ref.l1, summaryDouble(out, "heavy_rows"), t1.timeIntervalSince(t0), eo)
            }
            print(line)
        }
    }
}
