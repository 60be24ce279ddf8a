import LinearAlgebra
import Foundation
import TestSupport
import Testing

@Suite struct BLASKernelTests {
    typealias Flags = BLASKernel.CPUFlags
    static let avx512 = Flags(avx512: true, avx2FMA: true), avx2 = Flags(avx512: false, avx2FMA: true)
    static let sse = Flags(avx512: false, avx2FMA: false)

    /// The decision table: a generic kernel on a capable CPU is replaced, anything else is kept, and the
    /// user's OPENBLAS_CORETYPE (even an empty one) always wins.
    @Test func decisionIsAPureFunctionOfDetectionFlagsAndUser() {
        #expect(BLASKernel.decide(detected: "Prescott", flags: Self.avx512, userCoretype: nil) == .select("SkylakeX"))
        #expect(BLASKernel.decide(detected: "PRESCOTT", flags: Self.avx2, userCoretype: nil) == .select("Haswell"))
        #expect(BLASKernel.decide(detected: "Nehalem", flags: Self.avx2, userCoretype: nil) == .select("Haswell"))
        #expect(BLASKernel.decide(detected: "Core2", flags: Self.sse, userCoretype: nil) == .keep)
        #expect(BLASKernel.decide(detected: "Prescott", flags: Self.avx512, userCoretype: "Prescott") == .keep)
        #expect(BLASKernel.decide(detected: "Prescott", flags: Self.avx512, userCoretype: "") == .keep)
        for known in ["Cooperlake", "SkylakeX", "Haswell", "Zen", "SapphireRapids"] {
            #expect(BLASKernel.decide(detected: known, flags: Self.avx512, userCoretype: nil) == .keep, "\(known)")
        }
    }

    /// AVX-512 needs all four of F, BW, DQ and VL (what OpenBLAS's SkylakeX kernels use); the first
    /// processor's model and flags are read.
    @Test func cpuinfoParsing() {
        let text = """
        processor\t: 0
        vendor_id\t: GenuineIntel
        model name\t: Intel(R) Xeon(R) Platinum 8481C
        flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl
        processor\t: 1
        model name\t: Something else
        flags\t\t: fpu
        """
        let (model, flags) = BLASKernel.parseCPUInfo(text)
        #expect(model == "Intel(R) Xeon(R) Platinum 8481C")
        #expect(flags == Self.avx512)
        #expect(BLASKernel.parseCPUInfo("model name: X\nflags: avx2 avx512f avx512dq avx512vl fma").flags == Self.avx2)
        #expect(BLASKernel.parseCPUInfo("model name: X\nflags: avx2").flags == Self.sse)
        #expect(BLASKernel.parseCPUInfo("").model == "unknown")
    }

    /// Whatever kernel this process loaded (the suite runs under each in `make test-kernels`) passes.
    @Test func selfCheckPassesOnTheLoadedKernel() {
        #expect(BLASKernel.selfCheck(), "kernel \(BLASKernel.coreName)")
    }

    /// The fixed-order triangular multiply gives exactly the bits of the same order written as a scalar
    /// loop (no FMA, lanes across columns only, blocks of 32 columns, rows four at a time or one) — so no CPU
    /// or vector width can change them — and agrees with float64 within γ_n·|x||R| (Higham §3.1).
    @Test func fixedOrderTriangularMultiplyIsExactlyTheScalarOrder() {
        for (n, m) in [(1, 3), (7, 5), (65, 33), (130, 9)] {
            var s: UInt64 = UInt64(n * 1000 + m)
            func next() -> Float {
                s = s &* 6364136223846793005 &+ 1442695040888963407
                return Float(Int64(bitPattern: s >> 11) % 20001 - 10000) / 977
            }
            var r = [Float](repeating: 0, count: n * n)
            for i in 0..<n { for j in i..<n { r[i * n + j] = next() } }
            let x = (0..<(m * n)).map { _ in next() }
            var z = x, scratch = [Float](repeating: 0, count: 4 * n)
            r.withUnsafeBufferPointer { rp in
                z.withUnsafeMutableBufferPointer { zp in
                    scratch.withUnsafeMutableBufferPointer { sp in
                        BlockKernels.trmmRightUpperFloat32(rp.baseAddress!, n: n, rows: m, inPlace: zp.baseAddress!, scratch: sp.baseAddress!)
                    }
                }
            }
            let gamma = Double(n) * 0x1p-24 / (1 - Double(n) * 0x1p-24)
            for i in 0..<m {
                for j in 0..<n {
                    var acc: Float = 0, exact = 0.0, mag = 0.0
                    // The kernel's order: l = 0, 1, … to the end of j's block of 32 columns (zeros past j).
                    for l in 0..<min(n, (j / 32 + 1) * 32) {
                        let p = x[i * n + l] * r[l * n + j]
                        acc = acc + p
                        exact += Double(x[i * n + l]) * Double(r[l * n + j])
                        mag += abs(Double(x[i * n + l]) * Double(r[l * n + j]))
                    }
                    #expect(z[i * n + j].bitPattern == acc.bitPattern, "n \(n) row \(i) col \(j)")
                    #expect(abs(Double(z[i * n + j]) - exact) <= gamma * mag)
                }
            }
        }
    }
}
