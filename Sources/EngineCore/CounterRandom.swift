/// Counter-based randomness (Philox4x32-10, Salmon et al., SC'11 — the generator RandBLAS uses): every
/// draw is a pure function of (seed, shard, purpose, index, lane), so a sample does not depend on batch
/// size, thread count or where a run was resumed. There is no generator state to checkpoint.
public struct CounterRandom: Sendable, Equatable {
    public let seed: UInt64
    public let shard: UInt64
    public let purpose: UInt32

    /// `purpose` separates independent uses (each operator and each role inside it picks its own tag).
    public init(seed: UInt64, shard: UInt64, purpose: UInt32) {
        self.seed = seed
        self.shard = shard
        self.purpose = purpose
    }

    /// Four independent 32-bit words addressed by (index, lane).
    @inline(__always)
    public func block(index: UInt64, lane: UInt32 = 0) -> (UInt32, UInt32, UInt32, UInt32) {
        var c0 = UInt32(truncatingIfNeeded: index), c1 = UInt32(truncatingIfNeeded: index >> 32)
        var c2 = lane, c3 = purpose
        // The key carries seed and shard; mixing shard through splitmix keeps shard k and seed k distinct.
        let k = CounterRandom.splitmix(seed ^ CounterRandom.splitmix(shard &+ 0x9E37_79B9_7F4A_7C15))
        var k0 = UInt32(truncatingIfNeeded: k), k1 = UInt32(truncatingIfNeeded: k >> 32)
        for _ in 0..<10 {
            let p0 = UInt64(0xD251_1F53) &* UInt64(c0)
            let p1 = UInt64(0xCD9E_8D57) &* UInt64(c2)
            let hi0 = UInt32(truncatingIfNeeded: p0 >> 32), lo0 = UInt32(truncatingIfNeeded: p0)
            let hi1 = UInt32(truncatingIfNeeded: p1 >> 32), lo1 = UInt32(truncatingIfNeeded: p1)
            (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
            k0 = k0 &+ 0x9E37_79B9
            k1 = k1 &+ 0xBB67_AE85
        }
        return (c0, c1, c2, c3)
    }

    /// A uniform double in [0, 1) with 53 random bits.
    @inline(__always)
    public func uniform(index: UInt64, lane: UInt32 = 0) -> Double {
        let (a, b, _, _) = block(index: index, lane: lane)
        let bits = (UInt64(a) << 21) ^ UInt64(b >> 11)
        return Double(bits & ((1 << 53) - 1)) * 0x1p-53
    }

    /// A standard normal draw (Box–Muller on two uniforms of the same block).
    @inline(__always)
    public func normal(index: UInt64, lane: UInt32 = 0) -> Double {
        let (a, b, c, d) = block(index: index, lane: lane)
        let u1 = (Double((UInt64(a) << 21) ^ UInt64(b >> 11) & ((1 << 53) - 1)) + 1) * 0x1p-53   // (0, 1]
        let u2 = Double((UInt64(c) << 21) ^ UInt64(d >> 11) & ((1 << 53) - 1)) * 0x1p-53
        return (-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2)
    }

    @inline(__always)
    public static func splitmix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func _log(_ x: Double) -> Double { Glibc.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Glibc.cos(x) }
#else
import Darwin
@inline(__always) func _log(_ x: Double) -> Double { Darwin.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Darwin.cos(x) }
#endif
