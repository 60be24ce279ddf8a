import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// State payload, version 4:
///
/// ```
/// offset  size    field
///      0     8    columns d (u64)      8  1  has target (u8)
///      9     8    rows seen (i64)     17  8  weight sum (f64)
///     25     1    phase (u8)          26  8  n, rows in the store (u64)
///     34     8    max component (f64) 42  8  trace (f64)      50  8  max |value| (f64)
///     58  8+8d    preconditioner scale ([f64])   …  8+8d  centre ([f64])   …  8  Σ‖a‖⁴ scaled (f64)   …  8  trace scaled (f64)
///      …     8    power iterations (u64)   …  8+8p  power vector ([f64])   …  8  power estimate (f64)
///      …     8    L (f64)   …  8  step η (f64)   …  8  η's residual (f64)
///      …          anchor, iterate, estimate, inner, snapshot ([f64] each, d or n + d for games), inner j (u64)
///      …     8    k, t, iterations, oracle calls, restarts (i64 each)
///      …     1    fresh (u8)   …  8  residual, initial residual, anchor residual, gap, value (f64 each)
///      …     1    converged (u8)   …  1  stop reason (u8: `HalpernStop`)   …  8  best residual (f64)   …  8  its calls (i64)
///      …          residual history (`BoundedHistory.encode`)
/// ```
/// Integers and floats little-endian; `[f64]` is a u64 count then the values (`BinaryWriter.f64s`). Restoring
/// checks every count and length against the parameters, so a damaged payload is an error, never a trap.
extension HalpernSolver {
    public func encodeState() -> [UInt8] {
        var w = BinaryWriter()
        w.u64(UInt64(columns)); w.bool(hasTarget)
        w.i64(rowsSeen); w.f64(weightSum)
        w.u8(phase.rawValue); w.u64(UInt64(n))
        w.f64(maxComponent); w.f64(trace); w.f64(maxAbs)
        w.f64s(scale); w.f64s(center); w.f64(scaledNorm4); w.f64(scaledTrace)
        w.u64(UInt64(powerIter)); w.f64s(powerVector); w.f64(powerEstimate)
        w.f64(lipschitz); w.f64(eta); w.f64(etaResidual)
        w.f64s(anchor); w.f64s(iterate); w.f64s(estimate); w.f64s(inner); w.f64s(snapshot); w.u64(UInt64(innerJ))
        w.i64(k); w.i64(t); w.i64(iterations); w.i64(oracleCalls); w.i64(restartCount)
        w.bool(fresh); w.f64(residual); w.f64(initialResidual); w.f64(anchorResidual)
        w.f64(gap); w.f64(value); w.bool(converged)
        w.u8(stop.rawValue); w.f64(best); w.i64(bestCalls)
        history.encode(&w)
        return w.bytes
    }

    public init(config: HalpernConfig, columns: Int, hasTarget: Bool, seed: UInt64, shard: Int64, purpose: UInt32,
                state: [UInt8], location: String) throws(EngineError) {
        self.init(config: config, columns: columns, hasTarget: hasTarget, seed: seed, shard: shard, purpose: purpose)
        var r = BinaryReader(state, location: location)
        let c = Int(try r.u64()), ht = try r.bool()
        guard c == columns, ht == hasTarget else {
            throw .data(location, "halpern-solver state has \(c) columns (target: \(ht)), expected \(columns) (target: \(hasTarget))")
        }
        rowsSeen = try r.i64(); weightSum = try r.f64()
        guard let ph = Phase(rawValue: try r.u8()) else { throw .data(location, "halpern-solver state has an unknown phase") }
        phase = ph
        n = Int(try r.u64())
        maxComponent = try r.f64(); trace = try r.f64(); maxAbs = try r.f64()
        scale = try r.f64s(); center = try r.f64s(); scaledNorm4 = try r.f64(); scaledTrace = try r.f64()
        powerIter = Int(try r.u64()); powerVector = try r.f64s(); powerEstimate = try r.f64()
        lipschitz = try r.f64(); eta = try r.f64(); etaResidual = try r.f64()
        anchor = try r.f64s(); iterate = try r.f64s(); estimate = try r.f64s(); inner = try r.f64s()
        snapshot = try r.f64s()
        innerJ = Int(try r.u64())
        k = try r.i64(); t = try r.i64(); iterations = try r.i64(); oracleCalls = try r.i64(); restartCount = try r.i64()
        fresh = try r.bool(); residual = try r.f64(); initialResidual = try r.f64(); anchorResidual = try r.f64()
        gap = try r.f64(); value = try r.f64(); converged = try r.bool()
        guard let st = HalpernStop(rawValue: try r.u8()) else { throw .data(location, "halpern-solver state has an unknown stop reason") }
        stop = st
        best = try r.f64(); bestCalls = try r.i64()
        try history.decode(&r, what: "halpern-solver")
        let m = dimension
        let iterating = phase == .iterate || phase == .done
        guard r.remaining == 0, n >= 0, n <= 1 << 40,
              powerVector.count == (powerVector.isEmpty ? 0 : (isGame ? columns : m)),
              phase == .scan || isGame ? scale.isEmpty : scale.count == m,
              center.isEmpty || center.count == columns,
              !iterating || (anchor.count == m && iterate.count == m && estimate.count == m && inner.count == m),
              snapshot.isEmpty || snapshot.count == m else {
            throw .data(location, "halpern-solver state is inconsistent (array lengths or trailing bytes)")
        }
        if iterating {
            work = [Double](repeating: 0, count: m)
            if !isGame { xBuf = work; xBuf2 = work; gBuf = work }
        }
    }
}
