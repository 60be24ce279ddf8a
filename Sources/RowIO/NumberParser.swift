#if canImport(Glibc)
import Glibc
#endif

/// Parses one decimal or scientific number from a byte range, correctly rounded to float64 for every input
/// (round to nearest, ties to even — what strtod gives).
///
/// Three paths, fastest first:
/// 1. Clinger (1990): up to 19 significant digits whose integer value is ≤ 2⁵³ and a decimal exponent within
///    ±22 — then m·10^e is one correctly rounded float64 operation.
/// 2. Eisel–Lemire (Lemire, "Number Parsing at a Gigabyte per Second", Software: Practice and Experience, 2021):
///    the 19 leading significant digits times a 128-bit truncated power of ten (`pow5Table`), accepted only
///    when the product's bits prove the rounding; with more than 19 digits the digits after the 19th are
///    bounded by trying w and w+1, accepted when both round alike. Mushtak & Lemire ("Fast number parsing
///    without fallback", Software: Practice and Experience, 2023) prove the 128-bit product always decides for
///    19 digits or fewer; the check that would send such an input to the fallback stays as a cheap guard.
/// 3. strtod on a copy, for what the proof leaves open (subnormals, exact halfway ambiguities, long inputs
///    whose truncation straddles a rounding boundary).
///
/// Cost: a few ns per digit on paths 1–2, no allocation; path 3 allocates a copy. Surrounding blanks and one
/// pair of double quotes are accepted.
public enum NumberParser {
    public enum Result: Equatable {
        case value(Double)
        /// NaN, inf, NA or an empty field: bad unless non-finite values are allowed.
        case nonfinite(Double, String)
        /// Finite text whose value overflows float64 (1e999).
        case overflow
        case invalid
    }

    static let pow10: [Double] = (0...22).map { e in var v = 1.0; for _ in 0..<e { v *= 10 }; return v }

    @inline(__always)
    public static func parse(_ p: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> Result {
        var i = a, j = b
        while i < j && (p[i] == 0x20 || p[i] == 0x09) { i += 1 }
        while j > i && (p[j - 1] == 0x20 || p[j - 1] == 0x09 || p[j - 1] == 0x0D) { j -= 1 }
        if j - i >= 2 && p[i] == 0x22 && p[j - 1] == 0x22 {   // "quoted"
            i += 1; j -= 1
            while i < j && p[i] == 0x20 { i += 1 }
            while j > i && p[j - 1] == 0x20 { j -= 1 }
        }
        if i == j { return .nonfinite(.nan, "empty field") }
        let start = i
        var negative = false
        if p[i] == 0x2D { negative = true; i += 1 } else if p[i] == 0x2B { i += 1 }
        // Digits, eight at a time after the point (where full-precision values keep most of theirs). The
        // accumulator wraps past 19 digits; such inputs are re-read below by the careful loop.
        let digitsStart = i
        var mantissa: UInt64 = 0
        while i < j, p[i] &- 0x30 < 10 { mantissa = mantissa &* 10 &+ UInt64(p[i] &- 0x30); i += 1 }
        var count = i - digitsStart
        var exp10 = 0
        if i < j && p[i] == 0x2E {
            i += 1
            let fracStart = i
            while j - i >= 8 {
                let v = UnsafeRawPointer(p + i).loadUnaligned(as: UInt64.self)
                guard isEightDigits(v) else { break }
                mantissa = mantissa &* 100_000_000 &+ eightDigits(v)
                i += 8
            }
            while i < j, p[i] &- 0x30 < 10 { mantissa = mantissa &* 10 &+ UInt64(p[i] &- 0x30); i += 1 }
            exp10 = fracStart - i
            count += i - fracStart
        }
        let sawDigit = count > 0
        var truncated = false
        if count > 19 {
            var k = digitsStart
            while k < i && (p[k] == 0x30 || p[k] == 0x2E) { k += 1 }
            var significant = 0
            for x in k..<i where p[x] != 0x2E { significant += 1 }
            if significant > 19 { (mantissa, exp10, truncated) = leadingDigits(p, digitsStart, i) }
        }
        if !sawDigit { return word(p, start, j) }
        if i < j && (p[i] == 0x65 || p[i] == 0x45) {
            i += 1
            var eneg = false
            if i < j && (p[i] == 0x2D || p[i] == 0x2B) { eneg = p[i] == 0x2D; i += 1 }
            guard i < j, p[i] &- 0x30 < 10 else { return .invalid }
            var e = 0
            while i < j, p[i] &- 0x30 < 10 { if e < 100_000 { e = e * 10 + Int(p[i] &- 0x30) }; i += 1 }
            exp10 += eneg ? -e : e
        }
        guard i == j else { return .invalid }
        if mantissa == 0 { return .value(negative ? -0.0 : 0.0) }
        if !truncated && mantissa <= (1 << 53) && exp10 >= -22 && exp10 <= 22 {
            var v = Double(mantissa)
            if exp10 < 0 { v /= pow10[-exp10] } else { v *= pow10[exp10] }
            return .value(negative ? -v : v)
        }
        // Below 10^-342 even 19 nines round to zero; above 10^308 even 1 overflows.
        if exp10 < pow5MinExponent { return .value(negative ? -0.0 : 0.0) }
        if exp10 > pow5MaxExponent { return .overflow }
        if let v = eiselLemire(mantissa, exp10) {
            if !truncated || (mantissa < UInt64.max && eiselLemire(mantissa + 1, exp10) == v) {
                return .value(negative ? -v : v)
            }
        }
        return slow(p, start, j)
    }

    /// The first 19 significant digits of `[a, b)` (digits with at most one point) as an integer, the decimal
    /// exponent that scales it to the whole, and whether a nonzero digit was cut.
    static func leadingDigits(_ p: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> (UInt64, Int, Bool) {
        var mantissa: UInt64 = 0, digits = 0, exp10 = 0, truncated = false, afterPoint = false
        for i in a..<b {
            if p[i] == 0x2E { afterPoint = true; continue }
            let d = p[i] &- 0x30
            if digits < 19 {
                mantissa = mantissa &* 10 &+ UInt64(d)
                if mantissa != 0 { digits += 1 }
                if afterPoint { exp10 -= 1 }
            } else {
                if !afterPoint { exp10 += 1 }
                truncated = truncated || d != 0
            }
        }
        return (mantissa, exp10, truncated)
    }

    /// Whether the 8 bytes (little-endian) are all ASCII digits: no byte has high bits other than 0x3 and none
    /// exceeds '9' (adding 6 would carry into the high nibble).
    @inline(__always)
    static func isEightDigits(_ v: UInt64) -> Bool {
        ((v & 0xF0F0_F0F0_F0F0_F0F0) | (((v &+ 0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) >> 4)) == 0x3333_3333_3333_3333
    }

    /// The value of 8 ASCII digits, first digit at the lowest address: pairs, then quadruples, by multiplies
    /// that work on all lanes at once.
    @inline(__always)
    static func eightDigits(_ v: UInt64) -> UInt64 {
        var x = v &- 0x3030_3030_3030_3030
        x = (x &* 10) &+ (x >> 8)   // each even byte: 2-digit value of a pair
        let pairs02 = (x & 0x0000_00FF_0000_00FF) &* (100 &+ (1_000_000 << 32))
        let pairs13 = ((x >> 16) & 0x0000_00FF_0000_00FF) &* (1 &+ (10_000 << 32))
        return (pairs02 &+ pairs13) >> 32
    }

    /// The Eisel–Lemire step for w · 10^q (w ≠ 0, q within the table): the correctly rounded float64, or nil
    /// when the 128-bit product cannot decide the rounding (then the caller falls back to an exact parse).
    ///
    /// The table entry T approximates 10^q's 128-bit mantissa from below with an error under one unit, so the
    /// product w·T is below the exact w·10^q (scaled) by less than w units of its low 64 bits. The result is
    /// final unless that error can carry into the bits that decide rounding: the 9 bits below the 54 kept are
    /// all ones (then the low table word is multiplied in, and if still undecided we give up), or the product is
    /// exactly a halfway point (only possible when the product is exact; ties-to-even needs the exact value).
    /// Subnormal and overflowing results are left to the fallback.
    @inline(__always)
    static func eiselLemire(_ w: UInt64, _ q: Int) -> Double? {
        let lz = w.leadingZeroBitCount
        let m = w << UInt64(lz)
        let index = 2 * (q - pow5MinExponent)
        var (hi, lo) = m.multipliedFullWidth(by: pow5Table[index])
        if hi & 0x1FF == 0x1FF && lo &+ m < lo {
            let (yHi, yLo) = m.multipliedFullWidth(by: pow5Table[index + 1])
            let mergedLo = lo &+ yHi
            let mergedHi = mergedLo < lo ? hi &+ 1 : hi
            if mergedHi & 0x1FF == 0x1FF && mergedLo == UInt64.max && yLo &+ m < yLo { return nil }
            hi = mergedHi
            lo = mergedLo
        }
        let top = Int(hi >> 63)
        var mant = hi >> UInt64(top + 9)
        // floor(q · log2 10) for |q| ≤ 350 (217706 / 2^16 ≈ log2 10), plus the 64 bits of the product's high word.
        var exp2 = ((217706 * q) >> 16) + 64 + 1023 - lz - (1 ^ top)
        if lo == 0 && hi & 0x1FF == 0 && mant & 3 == 1 { return nil }
        mant += mant & 1
        mant >>= 1
        if mant >> 53 != 0 { mant >>= 1; exp2 += 1 }
        guard exp2 > 0 && exp2 < 0x7FF else { return nil }
        return Double(bitPattern: UInt64(exp2) << 52 | (mant & ((1 << 52) - 1)))
    }

    /// strtod on a NUL-terminated copy (the rare long or extreme-exponent number).
    static func slow(_ p: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> Result {
        var tmp = [CChar](repeating: 0, count: b - a + 1)
        for k in 0..<(b - a) { tmp[k] = CChar(bitPattern: p[a + k]) }
        var endp: UnsafeMutablePointer<CChar>?
        errno = 0
        let v = tmp.withUnsafeBufferPointer { strtod($0.baseAddress!, &endp) }
        if v.isInfinite { return .overflow }
        return .value(v)   // underflow to 0 or a subnormal is a fine value
    }

    /// nan, inf, infinity, NA (any case, optional sign).
    static func word(_ p: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> Result {
        var s = ""
        for k in a..<b { s.unicodeScalars.append(Unicode.Scalar(p[k] | (p[k] >= 0x41 && p[k] <= 0x5A ? 0x20 : 0))) }
        switch s {
        case "nan", "+nan", "-nan", "na", "n/a", "null": return .nonfinite(.nan, "non-finite value '\(s)'")
        case "inf", "+inf", "infinity", "+infinity": return .nonfinite(.infinity, "non-finite value '\(s)'")
        case "-inf", "-infinity": return .nonfinite(-.infinity, "non-finite value '\(s)'")
        default: return .invalid
        }
    }
}
