import EngineCore
import Foundation
import LinearAlgebra
@testable import Operators
import TestSupport
import Testing

/// The calibration behind the constants C of TopEigenvectorAccuracyTests (err ≤ C/√R), re-checked on seeds the
/// pinned test does not use: at d = 50, seeds 2 and 3, every gap R = 2 … 1024 keeps √R·err ≤ C/2 for both
/// variants — the calibration over seeds 1–10 found none within a factor 2 of C, so this fails only if the
/// error grew (false-failure rate: below 1 in 10 per seed, by that calibration). TOPEIG_CALIBRATE=1 runs the
/// full calibration instead (d = 50 and 500; TOPEIG_SEEDS=1,2,… picks the seeds) and prints err, √R·err, λ̂/λ₁
/// and the heavy-row count per gap.
@Suite struct TopEigCalibration {
    static var calibrating: Bool { ProcessInfo.processInfo.environment["TOPEIG_CALIBRATE"] != nil }

    @Test(arguments: calibrating ? [50, 500] : [50])
    func curve(d: Int) throws {
        let n = d == 50 ? 20_000 : 100_000
        let seeds: [UInt64] = Self.calibrating
            ? (ProcessInfo.processInfo.environment["TOPEIG_SEEDS"] ?? "1").split(separator: ",").map { UInt64($0)! } : [2, 3]
        for seed in seeds {
            var data = SpectrumData(n: n, d: d, gap: 2, seed: seed)
            let base = data
            var line = "d=\(d) seed=\(seed):"
            for k in 1...10 {
                let r = Double(1 << k)
                data = SpectrumData(copying: base, gap: r)
                let ref = topEigen(data.gram())
                let bs = data.batches(batchRows: 8192)
                let (_, out) = try runOp(randomOrder(columns: d, rowsKnown: Int64(n), seed: seed), bs)
                let (_, oo) = try runOp(oja(columns: d, seed: seed), bs)
                let e = eigError(vectorOf(out), ref.v1), eo = eigError(vectorOf(oo), ref.v1)
                if Self.calibrating {
                    line += String(format: " R=%g ro=%.2e(√R·e=%.2e, λ̂/λ=%.4f, h=%g) oja=%.2e", r, e, e * r.squareRoot(),
                                   summaryDouble(out, "eigenvalue") / ref.l1, summaryDouble(out, "heavy_rows"), eo)
                } else {
                    let c = TopEigenvectorAccuracyTests.bound(d: d, oja: false), co = TopEigenvectorAccuracyTests.bound(d: d, oja: true)
                    #expect(e * r.squareRoot() <= c / 2, "random-order d=\(d) seed \(seed) R=\(r): √R·err \(e * r.squareRoot()) > C/2 = \(c / 2)")
                    #expect(eo * r.squareRoot() <= co / 2, "oja d=\(d) seed \(seed) R=\(r): √R·err \(eo * r.squareRoot()) > C/2 = \(co / 2)")
                }
            }
            if Self.calibrating { print(line) }
        }
    }
}
