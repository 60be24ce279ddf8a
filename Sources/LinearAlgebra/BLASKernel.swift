import COpenBLAS
#if canImport(Glibc)
import Glibc
#endif

/// Which OpenBLAS kernel runs, and choosing a better one when OpenBLAS's own detection gives up.
///
/// Debian's OpenBLAS is built with DYNAMIC_ARCH: at load time it reads cpuid and picks a kernel by CPU
/// model. Version 0.3.21 does not know CPUs newer than itself (Sapphire Rapids, for one) and falls back to a
/// generic kernel (`Prescott`: SSE3, no AVX), about 3× slower for every level-3 call. When that happens on a
/// CPU whose flags show AVX-512 (F, BW, DQ, VL) or AVX2 + FMA, rowflow asks for the matching kernel
/// (`SkylakeX` / `Haswell`) through OPENBLAS_CORETYPE — which OpenBLAS reads only at load time, so the
/// binary re-executes itself with it set — and then trusts that kernel only after `selfCheck()`. A user's
/// own OPENBLAS_CORETYPE always wins: some machines set it on purpose (older OpenBLAS builds miscompute or
/// crash on some CPUs).
///
/// Results are byte-identical only for the same binary, OpenBLAS build and kernel: kernels block and
/// vectorise sums differently, so their results differ in the last bits (docs/reproducibility.md).
public enum BLASKernel {
    /// The kernel OpenBLAS runs in this process (`openblas_get_corename()`), e.g. "Cooperlake", "Haswell".
    public static var coreName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    /// The CPU's model name and kernel-relevant flags, from /proc/cpuinfo ("unknown" where it cannot be read).
    public static let machine: (model: String, flags: CPUFlags) = {
        let fd = open("/proc/cpuinfo", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return ("unknown", CPUFlags(avx512: false, avx2FMA: false)) }
        defer { close(fd) }
        // The first processor's block (a few KiB) is all that is needed.
        var bytes = [UInt8](repeating: 0, count: 1 << 16), count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
            if n <= 0 { break }
            count += n
        }
        return parseCPUInfo(String(decoding: bytes[0..<count], as: UTF8.self))
    }()

    /// The CPU features that decide a kernel, from /proc/cpuinfo's `flags` (which lists only what both
    /// the CPU and the kernel's saved-state support enable, so AVX-512 there is usable).
    public struct CPUFlags: Sendable, Equatable {
        public var avx512: Bool   // F, BW, DQ and VL: what OpenBLAS's SkylakeX kernels use
        public var avx2FMA: Bool  // AVX2 and FMA: Haswell's
        public init(avx512: Bool, avx2FMA: Bool) { self.avx512 = avx512; self.avx2FMA = avx2FMA }
        public init(flags: Set<Substring>) {
            avx512 = ["avx512f", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains)
            avx2FMA = flags.contains("avx2") && flags.contains("fma")
        }
    }

    /// The CPU model name and flags of the first processor in a /proc/cpuinfo text.
    public static func parseCPUInfo(_ text: String) -> (model: String, flags: CPUFlags) {
        var model = "unknown", flags: Set<Substring> = []
        var sawModel = false, sawFlags = false
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = line[..<colon].trimmingCharacters(in: " \t")
            let value = line[line.index(after: colon)...].trimmingCharacters(in: " \t")
            if key == "model name" && !sawModel { model = value; sawModel = true }
            if key == "flags" && !sawFlags { flags = Set(value.split(separator: " ")); sawFlags = true }
            if sawModel && sawFlags { break }
        }
        return (model, CPUFlags(flags: flags))
    }

    /// Kernels OpenBLAS falls back to when it does not recognise the CPU; a CPU with AVX2 or AVX-512 should
    /// never run one.
    static let generic: Set<String> = ["prescott", "core2", "nehalem", "penryn", "dunnington", "atom", "katmai",
                                       "coppermine", "northwood", "banias", "opteron", "barcelona", "bobcat",
                                       "sandybridge", "bulldozer", "piledriver", "steamroller", "excavator"]

    public enum Decision: Sendable, Equatable {
        /// Run what OpenBLAS chose (it recognised the CPU, or the CPU has nothing better, or the user chose).
        case keep
        /// Re-execute with OPENBLAS_CORETYPE set to this kernel.
        case select(String)
    }

    /// The decision as a pure function: the kernel OpenBLAS detected, the CPU's flags, and the user's
    /// OPENBLAS_CORETYPE (nil when unset; any value, even empty, counts as the user's choice).
    public static func decide(detected: String, flags: CPUFlags, userCoretype: String?) -> Decision {
        if userCoretype != nil { return .keep }
        guard generic.contains(detected.lowercased()) else { return .keep }
        if flags.avx512 { return .select("SkylakeX") }
        if flags.avx2FMA { return .select("Haswell") }
        return .keep
    }

    /// A numerical check of the kernel now loaded: sgemm, dgemm and ssyrk on a few hundred values against
    /// plain float64 loops. Each entry of a k-term product sum computed in precision u is within
    /// γ_k·Σ|a||b| of the exact value (Higham, Accuracy and Stability, §3.5: γ_k = ku/(1 − ku)), whatever
    /// the order of summation; the check allows 4·γ_k (room for FMA and blocking variants) — a kernel
    /// that is wrong, not merely reordered, misses that by orders of magnitude.
    public static func selfCheck() -> Bool {
        let m = 7, n = 9, k = 33
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Double {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Double(Int64(bitPattern: state >> 11) % 2001 - 1000) / 256   // exact in float32 too
        }
        let a = (0..<(m * k)).map { _ in next() }, b = (0..<(k * n)).map { _ in next() }
        var exact = [Double](repeating: 0, count: m * n), magnitude = exact
        for i in 0..<m { for j in 0..<n { for l in 0..<k {
            exact[i * n + j] += a[i * k + l] * b[l * n + j]
            magnitude[i * n + j] += abs(a[i * k + l] * b[l * n + j])
        } } }
        func within(_ got: [Double], _ want: [Double], _ mag: [Double], unit: Double) -> Bool {
            let gamma = Double(k) * unit / (1 - Double(k) * unit)
            return zip(zip(got, want), mag).allSatisfy { p, s in abs(p.0 - p.1) <= 4 * gamma * s }
        }
        var c64 = [Double](repeating: 0, count: m * n)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a, Int32(k), b, Int32(n), 0, &c64, Int32(n))
        let a32 = a.map(Float.init), b32 = b.map(Float.init)
        var c32 = [Float](repeating: 0, count: m * n)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1, a32, Int32(k), b32, Int32(n), 0, &c32, Int32(n))
        // ssyrk: C (k×k, upper) = AᵀA for A = the m×k matrix a, against the same loop.
        var s32 = [Float](repeating: 0, count: k * k)
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(k), Int32(m), 1, a32, Int32(k), 0, &s32, Int32(k))
        var gotS: [Double] = [], wantS: [Double] = [], magS: [Double] = []
        for i in 0..<k { for j in i..<k {
            var e = 0.0, s = 0.0
            for r in 0..<m { e += a[r * k + i] * a[r * k + j]; s += abs(a[r * k + i] * a[r * k + j]) }
            gotS.append(Double(s32[i * k + j])); wantS.append(e); magS.append(s)
        } }
        return within(c64, exact, magnitude, unit: 0x1p-53)
            && within(c32.map(Double.init), exact, magnitude, unit: 0x1p-24)
            && within(gotS, wantS, magS, unit: 0x1p-24)
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = self[...]
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
