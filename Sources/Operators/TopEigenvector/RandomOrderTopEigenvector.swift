import EngineCore
import LinearAlgebra
#if canImport(Glibc)
import Glibc
#endif

/// The top eigenvector v₁ of AᵀA over a stream in uniformly random order: Kacham & Woodruff, "Approximating
/// the Top Eigenvector in Random Order Streams" (NeurIPS 2024, arXiv 2412.11963): their block power method
/// over a random-order stream, heavy rows kept exactly (without the optional row-norm sampling of light rows).
///
/// Algorithm. A row is *heavy* when w‖a‖² ≥ F̂²/(d·ℓ²), ℓ = max(1, log₂ d), with F̂² a running estimate of
/// ‖A‖_F²: N × (mean w‖a‖² of the rows before it), each row's share of the mean capped at 8× the mean so far
/// and the excess above the cap added once (so one huge early row cannot lift the threshold above itself);
/// N is the expected stream length. The first row is always kept.
/// Heavy rows are kept exactly (as rows while they fit the memory budget, then as HᵀH); light rows fill `blocks`
/// consecutive blocks (T), cut at fixed row positions; inside a block y += w⟨a, x⟩a with x fixed, and at the
/// block's end x ← normalize(s·y + Hᵀ(Hx)), s = (light weight so far)/(light weight of the block) — the
/// paper's T·y when blocks are equal and all rows were light, scaled to the prefix in earlier blocks so that
/// the light estimate and the heavy rows seen so far describe the same prefix of the stream.
/// Block sizes need n: `rowsKnown` when the input gives it (npy shape, raw file size, zstd content size);
/// otherwise, and for rows beyond a wrong n, doubling epochs: epoch j has E₀·2ʲ rows (E₀ = 64·T) cut into T
/// equal blocks, the vector carries over (so every epoch adds T power steps, with blocks twice as large as
/// the last epoch's), and the heavy threshold is fixed per epoch with N = the epoch's end — 0 in the first
/// epoch, which keeps every row — and kept rows that fall below a new epoch's threshold are demoted to the
/// light rows (see `startEpoch`). At the end of the stream an unfinished block is used for a last step when
/// it holds at least half its planned rows (or no step was taken yet); otherwise the vector of the last
/// complete block — computed from the largest blocks so far — is the answer. When every row was kept (short
/// streams: with n known, every w‖a‖² ≥ (n/(d·ℓ²))·mean, e.g. n ≪ d·ℓ² and rows of similar norm; n unknown,
/// inside the first epoch) the kept rows are the whole matrix and the answer is LAPACK's (dsyevd): exact.
/// Guarantee (random order, gap R = σ₁²/σ₂² = Ω(1)): correlation ⟨v, v₁⟩² ≥ 1 − O(1/√R) with constant
/// probability (the paper's main result). On Gaussian spectrum data the error 1 − ⟨v, v₁⟩² measured
/// ≈ 5·10⁻⁴·(10⁵/n)/R (the last block's sampling noise), i.e. it falls like 1/R. `eigenvalue`: the light
/// Rayleigh quotients ⟨x_t, y_t⟩ of the last ⌈T/3⌉ steps per unit light weight, times the stream's light
/// weight, plus x_prevᵀHᵀHx_prev exactly — an estimate of σ₁² (sampling error ~√(6/n) relative).
/// `eigenvalue_bound` [lower, upper] contains σ₁² in any order (see `eigenvalueBound`), and an estimate
/// outside it is moved to its nearer end, so the number is right under the assumption and bounded without it.
/// Not promised: anything when the order is not random (adversarial orders can give an arbitrary vector;
/// `order_suspect` flags groups of consecutive rows whose mean ‖a‖² a random order would not produce — a
/// check, not a proof), nor a tight certified error bound (`last_step_change`, 1 − ⟨x_prev, x⟩², tracks convergence). Not mergeable (Price & Xun: a mergeable summary needs
/// R = Ω̃(√d) at Õ(d) space).
/// Cost per row: O(d) (a norm, and the row's share of two dgemv per fixed chunk); O(h·d) per block end.
/// Memory: O(h·d + d) — kept rows as rows while they fit `heavy_memory_mb`, then as HᵀH (d×d) when that fits;
/// beyond, further heavy rows are treated as light and counted in `heavy_overflow`.
public struct RandomOrderTopEigenvector: StreamOperator, Equatable {
    public static func == (a: RandomOrderTopEigenvector, b: RandomOrderTopEigenvector) -> Bool {
        a.encodeState() == b.encodeState()
    }

    public let columns: Int
    /// T, the power steps per schedule.
    public let blocks: Int
    /// N, when the input says how many rows it has.
    public let rowsKnown: Int64?
    let heavyDenominator: Double
    /// Kept rows the memory budget holds (d numbers, q and w each).
    let budgetRows: Int
    /// HᵀH (d×d) fits the budget.
    let gramAllowed: Bool
    /// Rows per fixed chunk: the unit of the two dgemv calls (≈ 512 KiB of rows).
    let chunkRows: Int
    /// E₀, rows of the first doubling epoch.
    let epochBase: Int64
    let seed: UInt64
    let shard: Int64
    let purpose: UInt32

    // Totals.
    public private(set) var rows: Int64 = 0
    var weightSum = 0.0
    /// Σ min(w‖a‖², 8·rate) and the excess above it: the running ‖A‖_F² estimate is
    /// N·(winsorised mass)/(rows) + (excess seen).
    var winsorMass = 0.0
    var excessMass = 0.0
    var lightWeight = 0.0

    // The schedule: block k covers rows [blockStart, blockEnd).
    var block = 0
    var blockStart: Int64 = 0
    var blockEnd: Int64 = 0
    var blockNref: Int64 = 0

    // The open block.
    var x: [Double]
    var y: [Double]
    var blockLightWeight = 0.0
    var blockMass = 0.0
    var blockMass2 = 0.0

    // The last power step: the vector it started from and its light Rayleigh part ⟨x_prev, y⟩ and weight.
    var steps = 0
    var xPrev: [Double]
    var lastLightDot = 0.0
    var lastLightWeight = 0.0
    var lastChange = Double.nan

    // Heavy rows: √w-scaled rows (row-major) with each row's w‖a‖² and w, or the upper triangle of HᵀH.
    var heavyCount: Int64 = 0
    var heavyOverflow: Int64 = 0
    var heavyDemoted: Int64 = 0
    var heavyAsGram = false
    var heavyRows: [Double] = []
    var heavyQ: [Double] = []
    var heavyW: [Double] = []
    var heavyGram: [Double] = []
    /// The threshold of the current doubling epoch (fixed for the epoch, never decreasing), and the block whose
    /// first row set it (epochs start when their first row arrives, not when the previous block closes).
    var epochTau = 0.0
    var epochBlock = -1

    // The open chunk: rows copied when a chunk spans batches, and each row's coefficient (w, 0 if heavy).
    var chunk: [Double]
    var coef: [Double]
    var chunkCount = 0
    /// ⟨a, x⟩ per chunk row (scratch, not state).
    var scratch: [Double]

    /// Closed blocks' statistics: rows, Σ w‖a‖² and Σ (w‖a‖²)² over all their rows (the order check), and
    /// the step's light Rayleigh part ⟨x, y⟩ with its light weight (the eigenvalue estimate).
    struct BlockStat: Equatable {
        var rows: Int64
        var mass: Double
        var mass2: Double
        var lightDot: Double
        var lightWeight: Double
        /// A power step was taken with this block (an unfinished last block may not be).
        var stepped: Bool
    }
    var stats: [BlockStat] = []
    /// (rows, eigenvalue estimate, heavy rows kept) after every power step and at the end:
    /// `eigenvalue_history.npy`.
    var history = BoundedHistory(width: 3)

    public init(columns: Int, blocks: Int?, rowsKnown: Int64?, heavyMemoryMB: Int, seed: UInt64, shard: Int64, purpose: UInt32) {
        let d = columns
        self.columns = d
        self.blocks = max(1, blocks ?? TopEigenvector.autoBlocks(columns: d))
        self.rowsKnown = (rowsKnown ?? 0) > 0 ? rowsKnown : nil
        heavyDenominator = TopEigenvector.heavyDenominator(columns: d)
        let budget = max(1, heavyMemoryMB) << 20
        gramAllowed = d * d * 8 <= budget
        budgetRows = max(1, budget / (8 * (d + 2)))
        chunkRows = max(16, min(1024, 65536 / max(1, d)))
        epochBase = Int64(self.blocks) * 64
        self.seed = seed
        self.shard = shard
        self.purpose = purpose
        x = TopEigenvector.initialVector(columns: d, seed: seed, shard: shard, purpose: purpose)
        xPrev = x
        y = [Double](repeating: 0, count: d)
        chunk = [Double](repeating: 0, count: chunkRows * d)
        coef = [Double](repeating: 0, count: chunkRows)
        scratch = coef
        (blockStart, blockEnd, blockNref) = (0, 0, 0)
        block = -1
        advanceBlock()
    }

    // MARK: schedule

    /// Whether block k belongs to the doubling schedule (n unknown, or rows beyond a known n).
    func isDoubling(_ k: Int) -> Bool { rowsKnown == nil || k >= blocks }

    /// Block k's rows and the stream length N the heavy threshold assumes while it is open.
    func blockRange(_ k: Int) -> (start: Int64, end: Int64, nref: Int64) {
        let t = Int64(blocks)
        var k = Int64(k)
        var offset: Int64 = 0
        if let n = rowsKnown {
            if k < t { return ((k * n) / t, ((k + 1) * n) / t, n) }
            k -= t
            offset = n
        }
        // Doubling epochs after `offset`: epoch j starts at E₀(2ʲ − 1) and has E₀·2ʲ rows in T blocks.
        let j = k / t, i = k % t
        let len = epochBase << j
        let start = offset + epochBase * ((1 << j) - 1)
        return (start + (i * len) / t, start + ((i + 1) * len) / t, start + len)
    }

    /// Moves to the next non-empty block; a doubling epoch's first block fixes the epoch's threshold.
    mutating func advanceBlock() {
        repeat {
            block += 1
            (blockStart, blockEnd, blockNref) = blockRange(block)
        } while blockEnd <= blockStart
    }

    /// Whether block k opens a doubling epoch.
    func opensEpoch(_ k: Int) -> Bool { isDoubling(k) && (rowsKnown == nil ? k : k - blocks) % blocks == 0 }

    /// A doubling epoch's threshold, F̂²/(d·ℓ²) with N = the epoch's end, fixed for the whole epoch (0 for
    /// the first, which then keeps every row) and never lower than the last. Kept rows now below it are
    /// *demoted*: dropped from H and counted with the light rows, so that the light rows of the prefix are
    /// exactly its rows with w‖a‖² below the current threshold — the population the block's light rows
    /// sample. (Without this, rows kept under an earlier, lower threshold would count twice: exactly, and
    /// through the light estimate; that biased σ₁² by ~10% at n = 2·10⁴.) In the HᵀH form rows cannot be
    /// taken out, so from the switch on that bias returns (limited to rows kept after the switch).
    mutating func startEpoch() {
        guard rows > 0 else { return }
        let rate = winsorMass / Double(rows)
        epochTau = max(epochTau, (Double(blockNref) * rate + excessMass) / heavyDenominator)
        guard !heavyAsGram, heavyQ.contains(where: { $0 < epochTau }) else { return }
        let d = columns
        var rowsOut: [Double] = [], qOut: [Double] = [], wOut: [Double] = []
        for i in 0..<heavyQ.count {
            if heavyQ[i] < epochTau {
                lightWeight += heavyW[i]
                heavyCount -= 1
                heavyDemoted += 1
            } else {
                rowsOut.append(contentsOf: heavyRows[i * d..<(i + 1) * d]); qOut.append(heavyQ[i]); wOut.append(heavyW[i])
            }
        }
        heavyRows = rowsOut; heavyQ = qOut; heavyW = wOut
    }

    // MARK: update

    public mutating func update(_ batch: RowBatch) throws(EngineError) {
        let d = columns
        var r = 0
        while r < batch.count {
            if epochBlock != block && opensEpoch(block) {
                startEpoch()
                epochBlock = block
            }
            let pos = rows
            let segStart = max(blockStart, (pos / Int64(chunkRows)) * Int64(chunkRows))
            let segEnd = min(blockEnd, (pos / Int64(chunkRows) + 1) * Int64(chunkRows))
            let take = min(batch.count - r, Int(segEnd - pos))
            let direct = pos == segStart && take == Int(segEnd - pos)
            batch.features.withUnsafeBufferPointer { f in
                let base = f.baseAddress! + r * d
                for i in 0..<take {
                    let w = batch.weight(r + i)
                    let c = classify(base + i * d, weight: w, before: pos + Int64(i))
                    coef[chunkCount + i] = c
                    if !direct {
                        chunk.withUnsafeMutableBufferPointer { dst in
                            (dst.baseAddress! + (chunkCount + i) * d).update(from: base + i * d, count: d)
                        }
                    }
                }
                rows += Int64(take)
                if direct {
                    accumulate(base, count: take)
                } else {
                    chunkCount += take
                    if rows == segEnd { flushChunk() }
                }
            }
            r += take
            if rows == blockEnd { closeBlock() }
        }
        for i in 0..<batch.count { weightSum += batch.weight(i) }
    }

    /// Decides heavy or light for one row (in stream order), keeps a heavy row, returns its coefficient
    /// in the block sum: its weight when light, 0 when heavy.
    mutating func classify(_ a: UnsafePointer<Double>, weight w: Double, before: Int64) -> Double {
        let d = columns
        let q = w * BlockKernels.dot(a, a, n: d)
        blockMass += q
        blockMass2 += q * q
        let heavy: Bool
        if before == 0 {
            heavy = true   // nothing to compare with yet: keeping the first row costs d numbers
            winsorMass = q
        } else {
            // n × (mean w‖a‖² so far), the mean winsorised at 8× itself: a huge early row scaled by n/rows
            // would otherwise raise the threshold above itself and hide; its excess counts once, exactly.
            let rate = winsorMass / Double(before)
            if isDoubling(block) {
                heavy = q >= epochTau
            } else {
                heavy = q >= (Double(blockNref) * rate + excessMass) / heavyDenominator
            }
            let kept = min(q, TopEigenvector.winsorFactor * rate)
            winsorMass += kept
            excessMass += q - kept
        }
        if heavy && keepHeavy(a, weight: w, q: q) {
            heavyCount += 1
            return 0
        }
        if heavy { heavyOverflow += 1 }
        lightWeight += w
        blockLightWeight += w
        return w
    }

    /// Stores √w·a; false when the memory budget is full (the row is then treated as light).
    /// As rows (with w‖a‖² and w, so they can be demoted) while they fit the budget, then as HᵀH if it fits.
    mutating func keepHeavy(_ a: UnsafePointer<Double>, weight w: Double, q: Double) -> Bool {
        let d = columns
        if heavyAsGram {
            heavyGram.withUnsafeMutableBufferPointer { g in BlockKernels.syrUpper(w, a, n: d, into: g.baseAddress!) }
            return true
        }
        if heavyQ.count >= budgetRows {
            guard gramAllowed else { return false }
            heavyGram = [Double](repeating: 0, count: d * d)
            let h = heavyQ.count
            heavyRows.withUnsafeBufferPointer { hr in
                heavyGram.withUnsafeMutableBufferPointer { g in BlockKernels.syrkUpper(hr.baseAddress!, rows: h, n: d, into: g.baseAddress!) }
            }
            heavyRows = []; heavyQ = []; heavyW = []
            heavyAsGram = true
            heavyGram.withUnsafeMutableBufferPointer { g in BlockKernels.syrUpper(w, a, n: d, into: g.baseAddress!) }
            return true
        }
        let s = w.squareRoot()
        for j in 0..<d { heavyRows.append(s * a[j]) }
        heavyQ.append(q)
        heavyW.append(w)
        return true
    }

    /// y += Σ coef_i ⟨a_i, x⟩ a_i over `count` rows at `a` (coefficients in `coef[0..<count]`): two dgemv.
    mutating func accumulate(_ a: UnsafePointer<Double>, count: Int) {
        let d = columns
        x.withUnsafeBufferPointer { xp in
            scratch.withUnsafeMutableBufferPointer { pp in
                BlockKernels.gemvRows(a, rows: count, n: d, v: xp.baseAddress!, into: pp.baseAddress!)
                for i in 0..<count { pp[i] *= coef[i] }
                y.withUnsafeMutableBufferPointer { yp in
                    BlockKernels.gemvTransposedAccumulate(a, rows: count, n: d, v: UnsafePointer(pp.baseAddress!), into: yp.baseAddress!)
                }
            }
        }
    }

    mutating func flushChunk() {
        guard chunkCount > 0 else { return }
        let n = chunkCount
        let c = chunk
        c.withUnsafeBufferPointer { accumulate($0.baseAddress!, count: n) }
        chunkCount = 0
    }

    /// Hᵀ(Hx) (or HᵀH x) for the heavy rows kept so far.
    func heavyTimes(_ v: [Double]) -> [Double] {
        let d = columns
        var out = [Double](repeating: 0, count: d)
        if heavyAsGram {
            heavyGram.withUnsafeBufferPointer { g in
                v.withUnsafeBufferPointer { vp in
                    out.withUnsafeMutableBufferPointer { o in BlockKernels.symvUpper(g.baseAddress!, n: d, x: vp.baseAddress!, beta: 0, into: o.baseAddress!) }
                }
            }
        } else if !heavyRows.isEmpty {
            let h = heavyRows.count / d
            var t = [Double](repeating: 0, count: h)
            heavyRows.withUnsafeBufferPointer { hr in
                v.withUnsafeBufferPointer { vp in
                    t.withUnsafeMutableBufferPointer { tp in BlockKernels.gemvRows(hr.baseAddress!, rows: h, n: d, v: vp.baseAddress!, into: tp.baseAddress!) }
                }
                t.withUnsafeBufferPointer { tp in
                    out.withUnsafeMutableBufferPointer { o in BlockKernels.gemvTransposedAccumulate(hr.baseAddress!, rows: h, n: d, v: tp.baseAddress!, into: o.baseAddress!) }
                }
            }
        }
        return out
    }

    /// One power step with the open block: x ← normalize(s·y + Hᵀ(Hx)).
    mutating func step() {
        let scale = blockLightWeight > 0 ? lightWeight / blockLightWeight : 0
        var z = heavyTimes(x)
        for j in 0..<columns { z[j] += scale * y[j] }
        lastLightDot = TopEigenvector.dot(x, y)
        lastLightWeight = blockLightWeight
        xPrev = x
        if let nx = TopEigenvector.normalized(z) {
            let c = TopEigenvector.dot(xPrev, nx)
            lastChange = max(0, 1 - c * c)
            x = nx
        }
        steps += 1
    }

    /// Ends the open block: a power step, its statistics, and the next block.
    mutating func closeBlock() {
        flushChunk()
        step()
        recordStats(stepped: true)
        history.record([Double(rows), boundedEstimate(), Double(heavyCount)])
        advanceBlock()
    }

    mutating func recordStats(stepped: Bool) {
        stats.append(BlockStat(rows: rows - blockStart, mass: blockMass, mass2: blockMass2,
                               lightDot: stepped ? lastLightDot : 0, lightWeight: stepped ? lastLightWeight : 0, stepped: stepped))
        for j in 0..<columns { y[j] = 0 }
        blockLightWeight = 0; blockMass = 0; blockMass2 = 0
    }

    // MARK: results

    /// Steps whose light Rayleigh parts are averaged in `eigenvalue`: the last ⌈T/3⌉ (after most of the
    /// convergence, and ⌈T/3⌉ times the rows of one block, which cuts the sampling noise).
    var eigenSteps: Int { (blocks + 2) / 3 }

    /// The estimate of σ₁²: the light Rayleigh quotient per unit light weight over the last ⌈T/3⌉ steps,
    /// times the light weight of the whole stream, plus x_prevᵀHᵀHx_prev for the vector entering the last
    /// step with every heavy row kept so far.
    func eigenvalueEstimate() -> Double {
        guard steps > 0 else { return 0 }
        var dot = 0.0, lw = 0.0
        for s in stats.filter(\.stepped).suffix(eigenSteps) where s.lightWeight > 0 { dot += s.lightDot; lw += s.lightWeight }
        let light = lw > 0 ? dot / lw * lightWeight : 0
        return light + TopEigenvector.dot(xPrev, heavyTimes(xPrev))
    }

    /// summary.json's `eigenvalue_bound` [lower, upper], which contains λ₁(AᵀWA) of the rows seen whatever the
    /// order (the random-order assumption is not used): the light rows of the last stepped block and the kept
    /// rows are distinct rows (a row is light or kept, and a demoted row leaves H), so AᵀWA ⪰ their Gram and
    /// λ₁ ≥ ⟨x_prev, y⟩ + x_prevᵀHᵀHx_prev for the unit x_prev that block was scored with, λ₁ ≥ xᵀHᵀHx for the
    /// current unit x, and λ₁ ≥ w‖a‖² of any kept row; λ₁ ≤ trace = Σ w‖a‖². Exact-arithmetic bounds (the sums' own rounding, ≤ rows·2⁻⁵³ relative,
    /// is not added). The lower end holds the heavy rows and about 1/T of the light ones; the upper end is loose
    /// by up to the rank: a certificate for when the order is in doubt, not an estimate.
    func eigenvalueBound() -> (lower: Double, upper: Double) {
        var lower = steps > 0 ? max(0, lastLightDot) : 0
        lower += TopEigenvector.dot(xPrev, heavyTimes(xPrev))
        // The kept rows alone with the current vector: heavy rows that came late turn x but not x_prev.
        lower = max(lower, TopEigenvector.dot(x, heavyTimes(x)), heavyQ.max() ?? 0)
        return (lower, winsorMass + excessMass)
    }

    /// The order check: consecutive blocks pooled into ~8 groups of ≥ n/8 rows each; per group
    /// z = (mean w‖a‖² − pooled mean) / √(pooled variance / rows · (1 − rows/n)), ≈ N(0, 1) in random order.
    /// Returns max |z|. One extreme row alone moves its group's z to at most √7 ≈ 2.6.
    func orderStatistic(extra: BlockStat?) -> Double {
        let all = stats + (extra.map { [$0] } ?? [])
        var n = 0.0, s1 = 0.0, s2 = 0.0
        for b in all { n += Double(b.rows); s1 += b.mass; s2 += b.mass2 }
        guard n >= 64 else { return 0 }
        let mu = s1 / n, v = max(0, s2 / n - mu * mu)
        guard v > 0 else { return 0 }
        var z = 0.0
        var gRows = 0.0, gMass = 0.0
        for (i, b) in all.enumerated() {
            gRows += Double(b.rows); gMass += b.mass
            if gRows >= n / 8 || i == all.count - 1 {
                if gRows >= 32 && gRows < n {
                    z = max(z, abs((gMass / gRows - mu) / (v / gRows * (1 - gRows / n)).squareRoot()))
                }
                gRows = 0; gMass = 0
            }
        }
        return z
    }

    func summaryPairs(eigenvalue: Double, exact: Bool, extra: BlockStat?) -> [(String, JSON)] {
        let z = orderStatistic(extra: extra)
        // An exact answer (every row kept) is its own bound.
        let bound = exact ? (lower: eigenvalue, upper: eigenvalue) : eigenvalueBound()
        let schedule: String
        if let n = rowsKnown { schedule = rows > n ? "fixed+doubling" : "fixed" } else { schedule = "doubling" }
        return [
            ("rows", .int(rows)), ("weight_sum", .double(weightSum)),
            ("eigenvalue", .double(eigenvalue)),
            ("eigenvalue_bound", .array([.double(bound.lower), .double(bound.upper)])),
            ("eigenvalue_meaning", .string(TopEigenvector.meaningRandomOrder)),
            ("variant", .string(TopEigenvector.Variant.randomOrder.rawValue)),
            ("rows_known", rowsKnown.map { .int($0) } ?? .null),
            ("blocks", .int(Int64(blocks))), ("schedule", .string(schedule)), ("steps", .int(Int64(steps))),
            ("heavy_rows", .int(heavyCount)), ("heavy_storage", .string(heavyAsGram ? "gram" : "rows")),
            ("heavy_overflow", .int(heavyOverflow)), ("heavy_demoted", .int(heavyDemoted)),
            ("exact", .bool(exact)),
            ("last_step_change", lastChange.isNaN ? .null : .double(lastChange)),
            ("order_z", .double(z)), ("order_suspect", .bool(z > TopEigenvector.orderZLimit)),
            ("assumption", .string(TopEigenvector.assumptionRandomOrder)),
        ]
    }

    func openStat() -> BlockStat? {
        rows > blockStart ? BlockStat(rows: rows - blockStart, mass: blockMass, mass2: blockMass2, lightDot: 0, lightWeight: 0, stepped: false) : nil
    }

    public func currentSummary() -> [(String, JSON)] {
        summaryPairs(eigenvalue: boundedEstimate(), exact: false, extra: openStat())
    }

    /// The estimate moved into `eigenvalue_bound` when it falls outside: the bound holds in any order, so outside
    /// it the estimate is certainly wrong (heavy rows the last steps barely saw) and the nearer end is closer.
    func boundedEstimate() -> Double {
        let b = eigenvalueBound()
        return min(max(eigenvalueEstimate(), b.lower), b.upper)
    }

    public mutating func finish() throws(EngineError) -> OperatorOutput {
        flushChunk()
        if rows > blockStart {
            // An unfinished block: a last step when it is at least half its planned size (or nothing else ran).
            let extra = openStat()
            if 2 * (rows - blockStart) >= blockEnd - blockStart || steps == 0 {
                step()
                recordStats(stepped: true)
            } else if let e = extra {
                stats.append(e)
            }
        }
        var vector = x
        var eigenvalue = boundedEstimate()
        var exact = false
        if lightWeight == 0 && heavyCount > 0 {
            // Every row was kept: the exact answer from the kept rows.
            let (value, v) = try exactTop()
            vector = v
            eigenvalue = value
            exact = true
        }
        let final = [Double(rows), eigenvalue, Double(heavyCount)]
        let z = orderStatistic(extra: nil)
        var warnings: [OperatorWarning] = []
        if z > TopEigenvector.orderZLimit && !exact {
            // The vector's guarantee assumes a random row order; a z this large is not a chance event.
            warnings.append(OperatorWarning(
                "order_suspect: consecutive rows differ in mean squared norm by z = \((z * 10).rounded() / 10) standard errors "
                    + "(limit \(TopEigenvector.orderZLimit)); the random-order guarantee may not hold and the vector can be wrong",
                hint: "shuffle the input before the run, or use variant: oja, or truncated-svd for an order-free answer"))
        }
        return OperatorOutput(arrays: [NamedArray("vector", shape: [columns], float64: TopEigenvector.signFixed(vector))]
                                  + [history.array("eigenvalue_history", closing: final)].compactMap { $0 },
                              summary: summaryPairs(eigenvalue: eigenvalue, exact: exact, extra: nil), warnings: warnings)
    }

    /// Top eigenpair of HᵀH from the kept rows: dsyevd of HHᵀ (h×h) when h < d, else of HᵀH.
    func exactTop() throws(EngineError) -> (Double, [Double]) {
        let d = columns
        do {
            if heavyAsGram {
                var g = Matrix(rows: d, cols: d, storage: heavyGram)
                g.symmetrizeFromUpper()
                let e = try LAPACK.symmetricEigen(g)
                return (max(0, e.values[0]), (0..<d).map { e.vectors[0, $0] })
            }
            let h = heavyRows.count / d
            let hm = Matrix(rows: h, cols: d, storage: heavyRows)
            let e = try LAPACK.symmetricEigen(hm.multiplied(by: hm.transposed))
            let u = (0..<h).map { e.vectors[0, $0] }
            let v = hm.transposed.multiplied(by: u)
            return (max(0, e.values[0]), TopEigenvector.normalized(v) ?? x)
        } catch {
            throw .internal("top-eigenvector", error.description)
        }
    }

    // MARK: state
}

// MARK: state

/// State payload, version 3 (random-order):
///
/// ```
/// offset  size   field
///      0     1   variant tag (u8, 0)      1  8  columns d (u64)    9  8  blocks T (u64)   17  8  rows known (i64, 0: none)
///     25     8   rows (i64)   33  8  weight sum (f64)   41  8  winsorised mass (f64)   49  8  excess mass (f64)
///     57     8   light weight (f64)      65  8  current block (u64)
///     73  8+8d   x, the power iterate ([f64])   …  8+8d  y, the block's AᵀA x ([f64])
///      …     8   block light weight, block mass, block mass² (f64 each)
///      …     8   steps (u64)   …  8+8d  previous x ([f64])   …  8  last light ⟨a,x⟩², last light weight, last change (f64 each)
///      …     8   heavy rows, overflowed, demoted (i64 each)   …  1  heavy rows held as a Gram (u8)
///      …          heavy rows, their Q, their weights, their Gram ([f64] each)   …  8  epoch τ (f64)   …  8  epoch block (i64)
///      …     8   rows in the open chunk c (u64)   …  8+8cd  its rows ([f64])   …  8+8c  their coefficients ([f64])
///      …     8   block statistics b (u64), then b × (rows i64, mass f64, mass² f64, light dot f64, light weight f64, stepped u8)
///      …          eigenvalue history (`BoundedHistory.encode`)
/// ```
/// Integers and floats little-endian; `[f64]` is a u64 count then the values (`BinaryWriter.f64s`). Restoring
/// checks every count and length against the parameters, so a damaged payload is an error, never a trap.
extension RandomOrderTopEigenvector {
    public func encodeState() -> [UInt8] {
        var w = BinaryWriter()
        w.u8(0)   // variant tag: random-order
        w.u64(UInt64(columns)); w.u64(UInt64(blocks)); w.i64(rowsKnown ?? 0)
        w.i64(rows); w.f64(weightSum); w.f64(winsorMass); w.f64(excessMass); w.f64(lightWeight)
        w.u64(UInt64(block))
        w.f64s(x); w.f64s(y)
        w.f64(blockLightWeight); w.f64(blockMass); w.f64(blockMass2)
        w.u64(UInt64(steps)); w.f64s(xPrev); w.f64(lastLightDot); w.f64(lastLightWeight); w.f64(lastChange)
        w.i64(heavyCount); w.i64(heavyOverflow); w.i64(heavyDemoted); w.bool(heavyAsGram)
        w.f64s(heavyRows); w.f64s(heavyQ); w.f64s(heavyW); w.f64s(heavyGram); w.f64(epochTau); w.i64(Int64(epochBlock))
        w.u64(UInt64(chunkCount))
        w.f64s(Array(chunk[0..<chunkCount * columns])); w.f64s(Array(coef[0..<chunkCount]))
        w.u64(UInt64(stats.count))
        for s in stats { w.i64(s.rows); w.f64(s.mass); w.f64(s.mass2); w.f64(s.lightDot); w.f64(s.lightWeight); w.bool(s.stepped) }
        history.encode(&w)
        return w.bytes
    }

    public init(columns: Int, blocks: Int?, rowsKnown: Int64?, heavyMemoryMB: Int, seed: UInt64, shard: Int64,
                purpose: UInt32, state: [UInt8], location: String) throws(EngineError) {
        self.init(columns: columns, blocks: blocks, rowsKnown: rowsKnown, heavyMemoryMB: heavyMemoryMB, seed: seed,
                  shard: shard, purpose: purpose)
        let d = columns
        var r = BinaryReader(state, location: location)
        let tag = try r.u8()
        let c = Int(try r.u64()), t = Int(try r.u64()), n = try r.i64()
        guard tag == 0, c == d, t == self.blocks, n == (self.rowsKnown ?? 0) else {
            throw .data(location, "top-eigenvector state is for variant \(tag), \(c) columns, \(t) blocks, \(n) known rows; expected random-order, \(d), \(self.blocks), \(self.rowsKnown ?? 0)")
        }
        rows = try r.i64(); weightSum = try r.f64(); winsorMass = try r.f64(); excessMass = try r.f64(); lightWeight = try r.f64()
        let k = Int(try r.u64())
        guard k < 1 << 20 else { throw .data(location, "top-eigenvector state names block \(k)") }
        block = k
        (blockStart, blockEnd, blockNref) = blockRange(k)
        x = try r.f64s(); y = try r.f64s()
        blockLightWeight = try r.f64(); blockMass = try r.f64(); blockMass2 = try r.f64()
        steps = Int(try r.u64()); xPrev = try r.f64s(); lastLightDot = try r.f64(); lastLightWeight = try r.f64(); lastChange = try r.f64()
        heavyCount = try r.i64(); heavyOverflow = try r.i64(); heavyDemoted = try r.i64(); heavyAsGram = try r.bool()
        heavyRows = try r.f64s(); heavyQ = try r.f64s(); heavyW = try r.f64s(); heavyGram = try r.f64s(); epochTau = try r.f64(); epochBlock = Int(try r.i64())
        chunkCount = Int(try r.u64())
        let ch = try r.f64s(), co = try r.f64s()
        let ns = try r.count(elementSize: 41)
        stats = []
        for _ in 0..<ns {
            stats.append(BlockStat(rows: try r.i64(), mass: try r.f64(), mass2: try r.f64(), lightDot: try r.f64(), lightWeight: try r.f64(),
                                   stepped: try r.bool()))
        }
        try history.decode(&r, what: "top-eigenvector")
        guard x.count == d, y.count == d, xPrev.count == d, heavyRows.count == heavyQ.count * d, heavyW.count == heavyQ.count,
              heavyAsGram || heavyCount == Int64(heavyQ.count),
              heavyGram.count == (heavyAsGram ? d * d : 0), !(heavyAsGram && !heavyRows.isEmpty),
              chunkCount < chunkRows, ch.count == chunkCount * d, co.count == chunkCount,
              rows >= blockStart, rows < blockEnd, r.remaining == 0 else {
            throw .data(location, "top-eigenvector state is inconsistent (array lengths, block or chunk position)")
        }
        for i in 0..<ch.count { chunk[i] = ch[i] }
        for i in 0..<co.count { coef[i] = co[i] }
    }
}
