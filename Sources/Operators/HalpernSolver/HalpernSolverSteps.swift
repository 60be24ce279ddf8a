import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// The iterations: deterministic Halpern, Algorithm 1 (variance-reduced, with restarts in epochs), and
/// inexact Halpern for matrix games with its two inner solvers (Cai, Alacaoglu & Diakonikolas 2024).
extension HalpernSolver {
    /// One deterministic Halpern iteration (one full pass).
    mutating func deterministicStep(_ rows: RowStoreReader) {
        if shouldStop() { phase = .done; return }
        maybeRestart()
        var next = [Double](repeating: 0, count: iterate.count)
        halpernUpdate(into: &next)
        swap(&iterate, &next)
        evaluateFresh(rows)
        if shouldStop() { phase = .done }
    }

    /// Algorithm 1 iterations until about n oracle calls were spent (a step of bounded work).
    mutating func vrStep(_ rows: RowStoreReader) {
        let callsAtStart = oracleCalls
        let b = config.restarts ? Self.epochBatch(n) : Int(Double(n).squareRoot().rounded(.up))
        let epoch = Self.epochLength(n)
        let refresh = CounterRandom(seed: seed, shard: shard, purpose: purpose ^ Self.purposeRefresh)
        let sampler = CounterRandom(seed: seed, shard: shard, purpose: purpose ^ Self.purposeSample)
        var next = [Double](repeating: 0, count: iterate.count)
        var delta = [Double](repeating: 0, count: iterate.count)
        var one = RowBatch(columns: columns, capacity: 1, hasTarget: rows.hasTarget, hasWeight: true)
        let d = columns, problem = config.problem, scale = Double(n) / Double(b), lam = smoothLambda
        if importance && cumulative.count != n + 1 { buildCumulative(rows) }
        let total = importance ? cumulative[n] : 0
        repeat {
            if fresh {
                if shouldStop() { phase = .done; return }
                maybeRestart()
            } else if outOfResources() != nil {
                // Budget or clock spent between refreshes: one more pass so the reported residual is the true one.
                evaluateFresh(rows)
                if !shouldStop() { stop = outOfResources() ?? .budget }
                phase = .done
                return
            }
            halpernUpdate(into: &next)
            let full: Bool
            if config.restarts {
                // Restarted: fixed epochs (see the type's comment). `innerJ` counts the mini-batch steps since
                // the last full pass and is state, so a resumed solve refreshes where the uninterrupted one does.
                innerJ += 1
                full = innerJ >= epoch
            } else {
                // Plain Halpern (the paper's O(1/ε) regime): the loopless schedule. It follows the global
                // iteration count t, not a restart-local count (re-running 4/(k+5) from k = 0 after each
                // restart only buys full passes).
                let p = max(4 / Double(t + 4), 1 / Double(n).squareRoot())
                full = refresh.uniform(index: UInt64(t)) < p
            }
            if full {
                innerJ = 0
                swap(&iterate, &next)
                evaluateFresh(rows)
            } else {
                toOriginal(next, into: &xBuf)
                toOriginal(iterate, into: &xBuf2)
                let newIntercept = hasIntercept ? xBuf[d] : 0, oldIntercept = hasIntercept ? xBuf2[d] : 0
                for q in delta.indices { delta[q] = 0 }
                for j in 0..<b {
                    let u = sampler.uniform(index: UInt64(t), lane: UInt32(j))
                    let i = importance ? importanceDraw(u) : min(n - 1, Int(u * Double(n)))
                    rows.read(i, 1, into: &one)
                    var zNew = newIntercept, zOld = oldIntercept
                    for q in 0..<d { let a = one.features[q]; zNew += a * xBuf[q]; zOld += a * xBuf2[q] }
                    let y = one.targets?[0] ?? 0
                    let diff = Self.derivative(problem, zNew, y) - Self.derivative(problem, zOld, y)
                    // Uniform: (n/b)·w_i·ΔF_i. Importance, q_i = w_i‖Pᵀã_i‖²/T: w_i·ΔF_i/(b·q_i) = T·ΔF_i/(b‖Pᵀã_i‖²).
                    let c: Double
                    if importance {
                        let norm2 = scaledRowNorm2(one, 0)
                        c = norm2 > 0 ? total / (Double(b) * norm2) * diff : 0
                    } else {
                        c = scale * one.weight(0) * diff
                    }
                    if c != 0 {
                        for q in 0..<d { delta[q] += c * one.features[q] }
                        if hasIntercept { delta[d] += c }
                    }
                }
                if lam != 0 { for q in 0..<d { delta[q] += lam * (xBuf[q] - xBuf2[q]) } }
                gradientToScaled(&delta)
                for q in estimate.indices { estimate[q] += delta[q] }
                oracleCalls += Int64(2 * b)
                fresh = false
                swap(&iterate, &next)
            }
        } while oracleCalls - callsAtStart < Int64(n)
        if fresh && shouldStop() { phase = .done }
    }

    /// One inner fixed-point step of the inexact Halpern iteration for games (one full pass).
    mutating func gameStep(_ rows: RowStoreReader) {
        if innerJ == 0 {
            // inner == iterate and `estimate` = F(iterate): the residual and gap are current.
            if shouldStop() { phase = .done; return }
            maybeRestart()
        }
        var z = work
        work = []
        for i in z.indices { z[i] = iterate[i] - eta * estimate[i] }
        applyResolvent(&z, step: eta, scaled: false)
        var diff = 0.0
        for i in z.indices { let e = z[i] - inner[i]; diff += e * e }
        diff = diff.squareRoot()
        inner = z
        work = z
        innerJ += 1
        let kk = Double(k + 2)
        if diff <= eta * anchorResidual / (kk * kk) || innerJ >= Self.innerCap || diff == 0 {
            let lam = 1 / kk
            for i in iterate.indices { iterate[i] = lam * anchor[i] + (1 - lam) * inner[i] }
            k += 1; t += 1; iterations += 1
            innerJ = 0
            evaluateFresh(rows)
            if shouldStop() { phase = .done }
        } else {
            fullF(rows, at: inner)
        }
    }

    /// Algorithm 2 for games: inner VR-extragradient steps (and the outer updates they complete) until about
    /// n oracle calls were spent. Invariant between inner steps: `estimate` = F(`snapshot`).
    mutating func vrGameStep(_ rows: RowStoreReader) {
        let callsAtStart = oracleCalls
        let m = n + columns, d = columns
        let b = min(n, max(Self.minGameBatch, Int(Double(n).squareRoot().rounded(.up))))
        let p = min(1, Double(b) / Double(n))
        let normB = 1.1 * lipschitz
        let lHat = normB * (1 + Double(n) / Double(b)).squareRoot() + 1 / eta
        let tau = 0.9 * p.squareRoot() / lHat
        let scale = Double(n) / Double(b)
        let refresh = CounterRandom(seed: seed, shard: shard, purpose: purpose ^ Self.purposeInnerRefresh)
        let sampler = CounterRandom(seed: seed, shard: shard, purpose: purpose ^ Self.purposeInnerSample)
        let innerCap = Self.innerPassCap * n / (2 * b) + 1
        if vrScratch.count != 4 || vrScratch[0].count != m { vrScratch = [[Double]](repeating: [Double](repeating: 0, count: m), count: 4) }
        var zbar = vrScratch[0], g = vrScratch[1], half = vrScratch[2], dir = vrScratch[3]
        vrScratch = []
        defer { vrScratch = [zbar, g, half, dir] }
        var one = RowBatch(columns: columns, capacity: 1, hasTarget: rows.hasTarget, hasWeight: true)
        repeat {
            if innerJ == 0 {
                // `iterate` was just evaluated: residual and gap are current.
                if shouldStop() { phase = .done; return }
                maybeRestart()
            } else if let reason = outOfResources() {
                stop = reason
                phase = .done  // `iterate` has not moved since its fresh evaluation
                return
            }
            // ĝ(w) = F(w) + (w − u_k)/η, the inner operator at the snapshot.
            for i in 0..<m {
                zbar[i] = (1 - p) * inner[i] + p * snapshot[i]
                g[i] = estimate[i] + (snapshot[i] - iterate[i]) / eta
                half[i] = zbar[i] - tau * g[i]
            }
            applyResolvent(&half, step: tau, scaled: false)
            // dir = ĝ(w) + (z½ − w)/η + (n/b)Σ_{i∈S}(F_i(z½) − F_i(w)); F_i(x, y) = (e_i·B_i y, −x_i·B_iᵀ).
            for i in 0..<m { dir[i] = g[i] + (half[i] - snapshot[i]) / eta }
            for j in 0..<b {
                let i = min(n - 1, Int(sampler.uniform(index: UInt64(t), lane: UInt32(j)) * Double(n)))
                rows.read(i, 1, into: &one)
                var dy = 0.0
                for q in 0..<d { dy += one.features[q] * (half[n + q] - snapshot[n + q]) }
                dir[i] += scale * dy
                let dx = scale * (half[i] - snapshot[i])
                if dx != 0 { for q in 0..<d { dir[n + q] -= dx * one.features[q] } }
            }
            oracleCalls += Int64(2 * b)
            var z = inner
            inner = []
            for i in 0..<m { z[i] = zbar[i] - tau * dir[i] }
            applyResolvent(&z, step: tau, scaled: false)
            inner = z
            innerJ += 1
            t += 1
            fresh = false
            if innerJ >= innerCap || refresh.uniform(index: UInt64(t)) < p {
                snapshot = inner
                fullF(rows, at: snapshot)
                // ‖w − z*‖ ≤ (3 + η‖B‖)·‖w − Π(u_k − ηF(w))‖ (μ = 1/η strong monotonicity of the inner problem).
                for i in 0..<m { half[i] = iterate[i] - eta * estimate[i] }
                applyResolvent(&half, step: eta, scaled: false)
                var r = 0.0
                for i in 0..<m { let e = snapshot[i] - half[i]; r += e * e }
                let kk = Double(k + 2)
                if (3 + eta * normB) * r.squareRoot() <= eta * anchorResidual / (kk * kk) || innerJ >= innerCap {
                    let lam = 1 / kk
                    for i in 0..<m { iterate[i] = lam * anchor[i] + (1 - lam) * snapshot[i] }
                    k += 1; iterations += 1
                    innerJ = 0
                    evaluateFresh(rows)
                    if shouldStop() { phase = .done; return }
                }
            }
        } while oracleCalls - callsAtStart < Int64(n)
    }
}
