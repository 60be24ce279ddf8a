// The dpp case: rowflow dpp-sample (projection DPP) against DPPy's Gram-Schmidt chain rule on the same kernel,
// for N Legendre candidates with m = 20 features. rowflow's time per sample is the
// marginal cost of one more projection sample: (in-process seconds of `repeated`, 200 samples, minus those of
// `projection`, 1 sample) / 199 — what is left after ingest, QR, the basis pass and the residual pass, which
// both runs share. DPPy's set-up (load, numpy QR, FiniteDPP with its orthonormality check) is timed apart from
// its samples (peers/dppy_peer.py). A small case checks that both samplers agree in law.
import Foundation

let dppScript = "dppy_peer.py"
let dppFeatures = 20
let dppRepetitions = 200
/// Law check: candidates and pooled samples (each side).
let dppLawRows = 500, dppLawSamples = 2000

/// DPPy's samples per run: ~0.1 s each at 10⁴ rows, ~5 s at 10⁶.
func dppySamples(_ n: Int) -> Int { n <= 20_000 ? 10 : n <= 200_000 ? 5 : 3 }

func medianOf(_ r: Result, _ key: String) -> Double? {
    let xs = r.jsons.compactMap { ($0[key] as? Double) ?? ($0[key] as? Int).map(Double.init) }
    return xs.isEmpty ? nil : median(xs)
}

func dppCase(_ env: BenchEnv, sizes: [Int], runs: Int) -> Section {
    let m = dppFeatures
    var contenders: [Contender] = []
    var files: [Int: String] = [:]
    for n in sizes {
        let file = dataFile(env, kind: "legendre", rows: n, cols: m, format: "npy", zstd: false)
        files[n] = file
        contenders += [
            .rowflow(env, "rowflow dpp-sample projection (1 sample), N = \(n)", manifest: "legendre20-dpp-projection.yaml",
                     input: file, out: "dpp-p-\(n)"),
            .rowflow(env, "rowflow dpp-sample repeated (\(dppRepetitions) samples), N = \(n)",
                     manifest: "legendre20-dpp-repeated\(dppRepetitions).yaml", input: file, out: "dpp-r-\(n)"),
            .peer(env, "DPPy 0.3.2 FiniteDPP sample_exact GS (\(dppySamples(n)) samples), N = \(n)", script: dppScript,
                  input: file, args: ["sample", file, "\(m)", "\(dppySamples(n))", "1"], maxRuns: n >= 1_000_000 ? 1 : nil),
        ]
    }
    let (results, background) = measure(env, contenders, runs: runs)
    var dppyWall: [String: Double] = [:]
    for k in sizes.indices where results[3 * k + 2].ok {
        for i in 0..<3 { dppyWall[results[3 * k + i].contender.name] = results[3 * k + 2].wall }
    }

    // The main table: every contender as measured (in-process s: rowflow's run.json seconds, DPPy's whole
    // script after imports), then the per-N comparison.
    let metrics = [
        Metric(header: "run.json peak_rss_kib (MiB)") { r in num(r, "peak_rss_kib").map { f($0 / 1024, 1) } ?? "—" },
    ]
    var text = """
        N candidates x ~ U[−1, 1] with m = \(m) orthonormal Legendre features (rowflow gen legendre --cols \(m) \
        --seed 1, .npy float64, Runge target last). Both samplers draw from the same projection DPP: \
        K = Φ(ΦᵀΦ)⁻¹Φᵀ, rank 20. rowflow: dpp-sample with `rowstore.memory_mb: 16` (rows beyond 16 MiB spill to \
        a file read back with pread), OpenBLAS single-threaded, reading the .npy file; \
        `projection` draws 1 sample, `repeated` \(dppRepetitions) independent ones. DPPy 0.3.2 (numpy default \
        threads): np.load, U = numpy QR of Φ (reduced), FiniteDPP('correlation', projection=True, \
        K_eig_dec=(ones, U)), then sample_exact(mode='GS') repeatedly. Peak RSS: GNU time's; rowflow's own VmHWM \
        (run.json `peak_rss_kib`) beside it.

        \(opTable(results, ratioHeader: "DPPy wall ÷ this (same N)", ratio: { (dppyWall[$0.contender.name] ?? .nan) / $0.wall }, metrics: metrics))

        Per sample and set-up. rowflow per sample = (in-process s of `repeated` − of `projection`) / \
        \(dppRepetitions - 1), the marginal cost of one more sample (medians over runs); rowflow one-sample run = \
        the whole `projection` run in-process (read + QR while streaming, basis pass, 1 sample, residual pass). \
        DPPy set-up = QR + FiniteDPP (load apart); DPPy per sample = median over its samples (and runs). The \
        CPU columns repeat the per-sample comparison in CPU time (rowflow: the process's user + system time, \
        difference of the two runs' medians; DPPy: time.process_time around each sample), which other processes \
        on the machine disturb much less than wall time.

        | N | DPPy load s | DPPy set-up s | DPPy s/sample | rowflow s/sample | per-sample ratio DPPy ÷ rowflow | DPPy CPU s/sample | rowflow CPU s/sample | CPU ratio | rowflow one-sample run s | DPPy load + set-up + 1 sample s | end-to-end ratio | DPPy peak RSS MiB | rowflow peak RSS MiB (run.json) | row store MiB (on disk) |
        |--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|

        """
    var perSampleRatio: [Int: Double] = [:], cpuRatio: [Int: Double] = [:]
    var rowflowRSS: [Int: Double] = [:]
    for (k, n) in sizes.enumerated() {
        let p = results[3 * k], r = results[3 * k + 1], py = results[3 * k + 2]
        let rfPer = (p.ok && r.ok) ? (median(r.inProcess) - median(p.inProcess)) / Double(dppRepetitions - 1) : .nan
        let pyPer = py.ok ? medianOf(py, "sample_seconds") ?? .nan : .nan
        let pyCPU = py.ok ? medianOf(py, "sample_cpu_seconds") ?? .nan : .nan
        let rfCPU = (p.ok && r.ok)
            ? (median(r.runs.map(\.cpuSeconds)) - median(p.runs.map(\.cpuSeconds))) / Double(dppRepetitions - 1) : .nan
        let load = py.ok ? medianOf(py, "load_seconds") ?? .nan : .nan
        let setup = py.ok ? medianOf(py, "setup_seconds") ?? .nan : .nan
        let one = p.ok ? median(p.inProcess) : .nan
        let pyOne = load + setup + pyPer
        let rss = p.ok ? (num(p, "peak_rss_kib") ?? .nan) / 1024 : .nan
        let spilled = p.contender.outDir.map { Double(fileBytes($0 + "/rowstore/source.rows")) / 1_048_576 } ?? .nan
        let store = Double(n) * Double(m + 4) * 8 / 1_048_576
        perSampleRatio[n] = pyPer / rfPer
        cpuRatio[n] = pyCPU / rfCPU
        rowflowRSS[n] = rss
        text += "| \(n) | \(f(load)) | \(f(setup)) | \(f(pyPer)) | \(sci(rfPer)) | \(f(pyPer / rfPer, 0)) | "
            + "\(f(pyCPU)) | \(sci(rfCPU)) | \(f(pyCPU / rfCPU, 0)) | \(f(one)) | "
            + "\(f(pyOne)) | \(f(pyOne / one, 1)) | \(f(py.rssMiB, 1)) | \(f(rss, 1)) | \(f(store, 1)) (\(f(spilled, 1))) |\n"
    }
    for n in [100_000, 1_000_000] where sizes.contains(n) {
        // A wall-time difference at or below 0 means background load swamped the samples' cost: then only
        // the CPU-time ratio decides (and the line says so).
        let wall = perSampleRatio[n] ?? .nan, cpu = cpuRatio[n] ?? .nan
        let wallOK = wall.isFinite && wall > 0
        text += "\nGoal ≥ 20× DPPy per sample at N = \(n): "
            + (!cpu.isFinite ? "**not measured** (a contender failed)."
               : wallOK ? "\(verdict(wall >= 20 && cpu >= 20)) (×\(f(wall, 0)) wall time, ×\(f(cpu, 0)) CPU time)."
               : "\(verdict(cpu >= 20)) on CPU time (×\(f(cpu, 0))); the wall-time difference was lost in background load.")
    }
    // Bounded RAM: both runs spill (16 MiB hold ~87,000 rows), so only the leverage cache ((N/b)·r² doubles,
    // 0.3 → 3 MiB) should grow with N; the flat-RSS criterion of rss-flat, relaxed to 1.25 for that cache.
    let ref = sizes.contains(100_000) ? 100_000 : sizes.min()!
    if let big = sizes.max(), big > ref, let a = rowflowRSS[ref], let b = rowflowRSS[big], a.isFinite, b.isFinite {
        text += "\nGoal bounded RAM (rowflow peak RSS at N = \(big) ≤ 1.25 × at N = \(ref), rowstore.memory_mb 16): "
            + "\(verdict(b / a <= 1.25)) (\(f(a, 1)) → \(f(b, 1)) MiB, ×\(f(b / a, 2)), while the row store grows to "
            + "\(f(Double(big) * Double(m + 4) * 8 / 1_048_576, 0)) MiB and DPPy's peak RSS is \(f(results[3 * sizes.firstIndex(of: big)! + 2].rssMiB, 0)) MiB)."
    }
    text += "\n\n" + dppLaw(env) + "\n\n"
        + (sizes.contains { $0 >= 1_000_000 } ? "DPPy at 10⁶ ran once (slow peer), every other contender \(runs) times. " : "")
        + background
    return Section(name: "dpp", text: text, versions: peerVersion(results))
}

/// Agreement in law on a small case, untimed: rowflow's `repeated` sample of 2000 projection samples and
/// 2000 DPPy samples, inclusion counts against K_ii.
func dppLaw(_ env: BenchEnv) -> String {
    let n = dppLawRows, m = dppFeatures
    let file = dataFile(env, kind: "legendre", rows: n, cols: m, format: "npy", zstd: false)
    let out = env.data + "/out/dpp-law"
    try? FileManager.default.removeItem(atPath: out)
    do {
        _ = try spawn([env.bin, "run", env.dir + "/manifests/legendre20-dpp-repeated\(dppLawSamples).yaml", "--input", file,
                       "--out", out, "--seed", "7", "--progress", "never"],
                      stdout: env.data + "/child.stdout", stderr: env.data + "/child.stderr")
    } catch { return "Law check: **not measured** (rowflow: \(error))." }
    guard let j = pyJSON(env, ["law", file, "\(m)", "\(dppLawSamples)", "7", out, "d"], script: dppScript) else {
        return "Law check: **not measured** (the DPPy peer failed; see data/py.stderr)."
    }
    func d(_ k: String) -> Double { (j[k] as? Double) ?? .nan }
    // E[X²/N] = 1 for each sampler (each count is Binomial(s, K_ii)); the terms are correlated, so the spread
    // is only roughly χ²'s, sd ≈ √(2/N) = 0.063 at N = 500: ±5 sd as the band.
    let band = 5 * (2.0 / Double(n)).squareRoot()
    let agree = [d("x2n_dppy"), d("x2n_rowflow"), d("two_sample_x2n")].allSatisfy { abs($0 - 1) <= band }
    return """
        Same law (small case, untimed): N = \(n) candidates (same generator, m = \(m)), \(dppLawSamples) rowflow \
        projection samples (`repeated`, repetitions \(dppLawSamples), seed 7) and \(dppLawSamples) DPPy samples. \
        The kernels are identical by construction (K = UUᵀ for any orthonormal basis U of Φ's columns) and to \
        rounding in practice: rowflow's leverage of each sampled row, ℓ_i = 1/(s·w_i) from its weights, differs \
        from DPPy's K_ii = ‖U_i‖² by at most \(sci(d("kernel_diag_max_abs_diff"))) (K_ii in \
        [\(f(d("k_min"), 4)), \(f(d("k_max"), 4))]). Inclusion counts c_i against Binomial(s, K_ii): \
        X²/N = Σ(c_i − sK_ii)²/(sK_ii(1 − K_ii))/N = \(f(d("x2n_rowflow"), 3)) for rowflow (max |z| \
        \(f(d("maxz_rowflow"), 2))), \(f(d("x2n_dppy"), 3)) for DPPy (max |z| \(f(d("maxz_dppy"), 2))); \
        two-sample Σ(c_rowflow − c_DPPy)²/(c_rowflow + c_DPPy)/N = \(f(d("two_sample_x2n"), 3)). Expected ≈ 1 \
        each (band ±\(f(band, 2)), 5 × √(2/N)): \(agree ? "**agree**" : "**disagree**").
        """
}
