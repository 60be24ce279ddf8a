// The operator cases: svd, top-eig, coreset, solver. Each runs rowflow's operator beside Python peers on the
// same zstd float32 file and checks every contender's answer against a float64 reference computed by numpy
// (peers/linalg_peers.py: `ref-*` modes, cached in data/, untimed). Peers score themselves in-process after
// their timer stops; rowflow's outputs are scored afterwards by the same script (`score-*` modes).
import Foundation

let peerScript = "linalg_peers.py"

/// Runs the peer script untimed (references, scoring) and returns its JSON line.
func pyJSON(_ env: BenchEnv, _ args: [String], script: String = peerScript) -> [String: Any]? {
    let outPath = env.data + "/py.stdout", errPath = env.data + "/py.stderr"
    do {
        let run = try spawn([env.python, env.dir + "/peers/" + script] + args, stdout: outPath, stderr: errPath)
        return try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
    } catch {
        log("  \(args.first ?? "python") failed: \(error)")
        return nil
    }
}

/// The float64 reference of an input, made once (cached by name next to it).
func reference(_ env: BenchEnv, mode: String, input: String, cols: Int) -> String {
    let path = input + ".\(mode).npz"
    if FileManager.default.fileExists(atPath: path) { return path }
    log("reference \(mode) for \(input)")
    guard pyJSON(env, [mode, input, "\(cols)", path]) != nil, FileManager.default.fileExists(atPath: path) else {
        fail("cannot compute the \(mode) reference of \(input) (see data/py.stderr)")
    }
    return path
}

/// Adds the scorer's figures to a rowflow result's JSON (which holds its run.json).
func score(_ env: BenchEnv, _ r: inout Result, _ args: [String]) {
    guard r.ok, let s = pyJSON(env, args) else { return }
    r.json = (r.json ?? [:]).merging(s) { _, new in new }
}

/// A rowflow operator's summary.json (the last run's).
func summary(_ r: Result, _ id: String) -> [String: Any]? {
    guard r.ok, let out = r.contender.outDir, let d = FileManager.default.contents(atPath: out + "/\(id)/summary.json")
    else { return nil }
    return try? JSONSerialization.jsonObject(with: d) as? [String: Any]
}

func num(_ r: Result, _ key: String) -> Double? {
    (r.json?[key] as? Double) ?? (r.json?[key] as? Int).map(Double.init)
}

func sci(_ x: Double?) -> String { x.map { $0.isFinite ? String(format: "%.2e", $0) : "—" } ?? "—" }

struct Metric {
    let header: String
    let value: (Result) -> String
}

/// The operator cases' table: rows/s instead of MB/s, the number of runs each median is of, then the case's
/// accuracy columns.
func opTable(_ results: [Result], ratioHeader: String, ratio: (Result) -> Double, metrics: [Metric]) -> String {
    var lines = [
        "| contender | rows | runs | wall s (median) | wall min–max | rows/s | in-process s | peak RSS MiB | \(ratioHeader) | "
            + metrics.map(\.header).joined(separator: " | ") + " |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|" + String(repeating: "--:|", count: metrics.count),
    ]
    for r in results {
        guard r.ok else {
            let why = (r.error ?? "no run").replacingOccurrences(of: "|", with: "/")
            lines.append("| \(r.contender.name) | failed: \(why) |" + String(repeating: " |", count: 7 + metrics.count))
            continue
        }
        let secs = r.runs.map(\.seconds)
        let rowsPerSecond = r.rows.map { f(Double($0) / r.wall, 0) } ?? "—"
        lines.append("| \(r.contender.name) | \(r.rows.map(String.init) ?? "—") | \(r.runs.count) | \(f(r.wall)) | "
            + "\(f(secs.min()!))–\(f(secs.max()!)) | \(rowsPerSecond) | "
            + "\(r.inProcess.isEmpty ? "—" : f(median(r.inProcess))) | \(f(r.rssMiB, 1)) | \(f(ratio(r), 2)) | "
            + metrics.map { $0.value(r) }.joined(separator: " | ") + " |")
    }
    return lines.joined(separator: "\n")
}

func floorContender(_ zst: String) -> Contender {
    Contender(name: "zstd -d -c > /dev/null (floor)", argv: ["sh", "-c", "exec zstd -d -c \"$0\" > /dev/null", zst],
              input: zst, outDir: nil)
}

func notMeasured(_ goal: String, _ rs: [Result]) -> String? {
    let failed = rs.filter { !$0.ok }.map(\.contender.name)
    return failed.isEmpty ? nil : "Goal \(goal): **not measured** (failed: \(failed.joined(separator: ", ")))."
}

// MARK: - svd

func svdCase(_ env: BenchEnv, rows: Int, runs: Int) -> Section {
    let cols = 256, k = 16
    let zst = dataFile(env, kind: "spectrum", rows: rows, cols: cols, format: "f32", zstd: true, truth: true)
    let ref = reference(env, mode: "ref-svd", input: zst, cols: cols)
    var (results, background) = measure(env, [
        floorContender(zst),
        .rowflow(env, "rowflow truncated-svd rank 16, incremental", manifest: "f32x256-tsvd-incremental.yaml", input: zst, out: "svd-inc"),
        .rowflow(env, "rowflow truncated-svd rank 16, auto", manifest: "f32x256-tsvd-auto.yaml", input: zst, out: "svd-auto"),
        .rowflow(env, "rowflow truncated-svd rank 16, gram, precision float64", manifest: "f32x256-tsvd-gram64.yaml", input: zst, out: "svd-gram64"),
        .peer(env, "sklearn IncrementalPCA(16, batch_size=8192), zstandard stream", script: peerScript, input: zst,
              args: ["ipca", zst, "\(cols)", "\(k)", ref], maxRuns: 1),
        .peer(env, "sklearn randomized_svd(16), in memory", script: peerScript, input: zst,
              args: ["rsvd", zst, "\(cols)", "\(k)", ref]),
    ], runs: runs)
    for i in [1, 2, 3] { score(env, &results[i], ["score-svd", ref, results[i].contender.outDir! + "/t", "false"]) }
    let floor = results[0]
    let metrics = [
        Metric(header: "σ max rel err") { $0.contender.name.contains("floor") ? "—" : sci(num($0, "sigma_rel_err")) },
        Metric(header: "largest principal angle °") { $0.contender.name.contains("floor") ? "—" : sci(num($0, "max_angle_deg")) },
        Metric(header: "reference") { r in r.json?["centered_ref"].map { ($0 as? Bool) == true ? "centred" : "uncentred" } ?? "—" },
    ]
    var text = """
        \(rows) rows × \(cols) float32 (rowflow gen spectrum, gap 4), zstd-compressed. Rank-16 truncated SVD. \
        The reference is numpy eigh of the exact Gram AᵀA accumulated in float64 over the stream (σᵢ = √λᵢ); \
        IncrementalPCA centres its data, so it is scored against the centred Gram (AᵀA − n·μμᵀ), the others \
        (rowflow's default center: false, randomized_svd) against the uncentred one. σ error: max over the 16 \
        of |σᵢ − σᵢ*| / σᵢ*; angle: the largest principal angle between the 16-dimensional right subspaces.

        \(opTable(results, ratioHeader: "wall ÷ floor", ratio: { $0.wall / floor.wall }, metrics: metrics))

        """
    let inc = results[1], auto = results[2], ipca = results[4]
    if let nm = notMeasured("rowflow incremental faster than IncrementalPCA with σ error ≤ 1e-3", [inc, ipca]) {
        text += "\n" + nm
    } else {
        let speed = ipca.wall / inc.wall, err = num(inc, "sigma_rel_err") ?? .infinity
        text += "\nGoal rowflow incremental faster than IncrementalPCA with σ error ≤ 1e-3: "
            + "\(verdict(speed > 1 && err <= 1e-3)) (×\(f(speed, 2)) wall; σ error \(sci(err)))."
    }
    if let nm = notMeasured("rowflow auto within 1.5× of the floor, σ error ≤ IncrementalPCA's", [floor, auto, ipca]) {
        text += "\n" + nm
    } else {
        let ratio = auto.wall / floor.wall
        let err = num(auto, "sigma_rel_err") ?? .infinity, peerErr = num(ipca, "sigma_rel_err") ?? 0
        text += "\nGoal rowflow auto within 1.5× of the floor, σ error ≤ IncrementalPCA's: "
            + "\(verdict(ratio <= 1.5 && err <= peerErr)) (\(f(ratio, 2)); σ error \(sci(err)) vs \(sci(peerErr)); "
            + "×\(f(ipca.wall / auto.wall, 1)) IncrementalPCA's speed)."
    }
    text += "\n\nIncrementalPCA ran once (slow peer); every other contender \(runs) times. " + background
    return Section(name: "svd", text: text, versions: peerVersion(results))
}

// MARK: - pca

/// Centred truncated SVD (PCA) on rows whose column means are far from zero: rowflow's centred float32 path
/// (auto) and its float64 path against IncrementalPCA on the same stream, all scored against the centred Gram.
func pcaCase(_ env: BenchEnv, rows: Int, runs: Int) -> Section {
    let cols = 256, k = 16
    let zst = dataFile(env, kind: "spectrum", rows: rows, cols: cols, format: "f32", zstd: true, offset: 2)
    let ref = reference(env, mode: "ref-svd", input: zst, cols: cols)
    var (results, background) = measure(env, [
        floorContender(zst),
        .rowflow(env, "rowflow truncated-svd rank 16, center, auto", manifest: "f32x256-pca-auto.yaml", input: zst, out: "pca-auto"),
        .rowflow(env, "rowflow truncated-svd rank 16, center, precision float64", manifest: "f32x256-pca-float64.yaml", input: zst, out: "pca-f64"),
        .peer(env, "sklearn IncrementalPCA(16, batch_size=8192), zstandard stream", script: peerScript, input: zst,
              args: ["ipca", zst, "\(cols)", "\(k)", ref], maxRuns: 1),
    ], runs: runs)
    for i in [1, 2] { score(env, &results[i], ["score-svd", ref, results[i].contender.outDir! + "/t", "true"]) }
    let floor = results[0], auto = results[1], ipca = results[3]
    let metrics = [
        Metric(header: "σ max rel err") { $0.contender.name.contains("floor") ? "—" : sci(num($0, "sigma_rel_err")) },
        Metric(header: "largest principal angle °") { $0.contender.name.contains("floor") ? "—" : sci(num($0, "max_angle_deg")) },
    ]
    var text = """
        \(rows) rows × \(cols) float32 (rowflow gen spectrum, gap 4, every column offset by +2.0), zstd-compressed. \
        Rank-16 PCA (centred). The reference is numpy eigh of the exactly centred Gram (AᵀA − n·μμᵀ, accumulated \
        in float64 over the stream). σ error: max over the 16 of |σᵢ − σᵢ*| / σᵢ*.

        \(opTable(results, ratioHeader: "wall ÷ floor", ratio: { $0.wall / floor.wall }, metrics: metrics))

        """
    if let nm = notMeasured("centred rowflow ≤ 1.3× the floor, ≥ 12× IncrementalPCA, σ error ≤ IncrementalPCA's", [floor, auto, ipca]) {
        text += "\n" + nm
    } else {
        let ratio = auto.wall / floor.wall, speed = ipca.wall / auto.wall
        let err = num(auto, "sigma_rel_err") ?? .infinity, peerErr = num(ipca, "sigma_rel_err") ?? 0
        text += "\nGoal centred rowflow (auto) ≤ 1.3× the floor, ≥ 12× IncrementalPCA, σ error ≤ IncrementalPCA's: "
            + "\(verdict(ratio <= 1.3 && speed >= 12 && err <= peerErr)) (\(f(ratio, 2))× the floor; ×\(f(speed, 1)) IncrementalPCA; "
            + "σ error \(sci(err)) vs \(sci(peerErr)))."
    }
    text += "\n\nIncrementalPCA ran once (slow peer); every other contender \(runs) times. " + background
    return Section(name: "pca", text: text, versions: peerVersion(results))
}

// MARK: - top-eig

func topEig(_ env: BenchEnv, rows: Int, runs: Int) -> Section {
    let cols = 256
    let zst = dataFile(env, kind: "spectrum", rows: rows, cols: cols, format: "f32", zstd: true, truth: true)
    let ref = reference(env, mode: "ref-svd", input: zst, cols: cols)
    let truth = truthPath(zst)
    var (results, background) = measure(env, [
        floorContender(zst),
        .rowflow(env, "rowflow top-eigenvector random-order", manifest: "f32x256-topeig-random-order.yaml", input: zst, out: "te-ro"),
        .rowflow(env, "rowflow top-eigenvector oja", manifest: "f32x256-topeig-oja.yaml", input: zst, out: "te-oja"),
        .peer(env, "numpy exact Gram (float64) + eigh, zstandard stream", script: peerScript, input: zst,
              args: ["gram-eigh", zst, "\(cols)", ref, truth]),
        .peer(env, "numpy mini-batch Oja (8192 rows, hand-tuned η), zstandard stream", script: peerScript, input: zst,
              args: ["oja", zst, "\(cols)", "1.0", ref, truth]),
    ], runs: runs)
    for i in [1, 2] { score(env, &results[i], ["score-vec", results[i].contender.outDir! + "/e/vector.npy", ref, truth]) }
    let floor = results[0]
    let metrics = [
        Metric(header: "⟨v, v₁⟩² (truth v1)") { $0.contender.name.contains("floor") ? "—" : num($0, "align_truth").map { f($0, 6) } ?? "—" },
        Metric(header: "⟨v, v₁⟩² (exact eigh)") { $0.contender.name.contains("floor") ? "—" : num($0, "align_exact").map { f($0, 6) } ?? "—" },
    ]
    var text = """
        \(rows) rows × \(cols) float32 (rowflow gen spectrum, gap σ₁²/σ₂² = 4), zstd-compressed. Top eigenvector of \
        AᵀA; v₁ is the generator's truth (the truth JSON) and, separately, the top eigenvector of the exact \
        float64 Gram (numpy eigh).

        \(opTable(results, ratioHeader: "wall ÷ floor", ratio: { $0.wall / floor.wall }, metrics: metrics))

        """
    for i in [1, 2] {
        let r = results[i]
        if let nm = notMeasured("\(r.contender.name) ÷ floor ≤ 1.2", [floor, r]) { text += "\n" + nm; continue }
        let ratio = r.wall / floor.wall
        text += "\nGoal \(r.contender.name) ÷ floor ≤ 1.2: \(verdict(ratio <= 1.2)) (\(f(ratio, 2)); "
            + "⟨v, v₁⟩² \(num(r, "align_truth").map { f($0, 6) } ?? "—"))."
    }
    text += "\n\n" + background
    return Section(name: "top-eig", text: text, versions: peerVersion(results))
}

// MARK: - coreset

func coreset(_ env: BenchEnv, rows: Int, runs: Int) -> Section {
    let d = 64, cols = d + 1, small = max(rows / 10, 1)
    let big = dataFile(env, kind: "regression", rows: rows, cols: d, format: "f32", zstd: true)
    let little = dataFile(env, kind: "regression", rows: small, cols: d, format: "f32", zstd: true)
    let ref = reference(env, mode: "ref-ls", input: big, cols: cols)
    let refSmall = reference(env, mode: "ref-ls", input: little, cols: cols)
    let m = "f32x64t-coreset-ridge.yaml", ms = "f32x64t-coreset-samples.yaml"
    var (results, background) = measure(env, [
        floorContender(big),
        .rowflow(env, "rowflow sensitivity-sample ε=0.5 → gram ridge, \(rows) rows", manifest: m, input: big, out: "cs-big"),
        .rowflow(env, "rowflow sensitivity-sample ε=0.5 → gram ridge, \(small) rows", manifest: m, input: little, out: "cs-small"),
        .rowflow(env, "rowflow sensitivity-sample samples=4000 → gram ridge, \(rows) rows", manifest: ms, input: big, out: "css-big"),
        .rowflow(env, "rowflow sensitivity-sample samples=4000 → gram ridge, \(small) rows", manifest: ms, input: little, out: "css-small"),
        .peer(env, "numpy exact: QR leverage in memory + sampling + lstsq, \(rows) rows", script: peerScript, input: big,
              args: ["coreset-exact", big, "\(cols)", "0.5", ref], maxRuns: 1),
    ], runs: runs)
    for (i, input, r) in [(1, big, ref), (2, little, refSmall), (3, big, ref), (4, little, refSmall)] {
        score(env, &results[i], ["score-ls", results[i].contender.outDir! + "/r/solution.npy", r, input, "\(cols)"])
        if let s = summary(results[i], "s")?["size"] { results[i].json?["coreset_size"] = s }
    }
    let floor = results[0], exact = results[5]
    let metrics = [
        Metric(header: "wall ÷ floor") { f($0.wall / floor.wall, 2) },
        Metric(header: "coreset rows") { num($0, "coreset_size").map { String(Int($0)) } ?? "—" },
        Metric(header: "objective ÷ full lstsq") { num($0, "objective_ratio").map { f($0, 4) } ?? "—" },
        Metric(header: "‖x − x*‖/‖x*‖") { sci(num($0, "rel_err")) },
    ]
    var text = """
        \(rows) rows × \(d) float32 features + target (rowflow gen regression, noise 0.1), zstd-compressed, and the \
        same at \(small) rows. rowflow keeps a sensitivity sample of [A | y] — with ε = 0.5 (online ridge leverage, \
        size from the bound) or with a target size of 4000 rows — and solves ridge (λ = 1) on it; the exact path \
        loads everything, computes leverage scores of [A | y] by QR, keeps row i with probability min(1, c·lᵢ) \
        (rowflow's constant c, ρ = 0.1) and solves weighted lstsq. Objective = ‖Ax − y‖² over all rows of that \
        input, divided by the full lstsq optimum (float64 numpy, untimed).

        \(opTable(results, ratioHeader: "wall ÷ exact path", ratio: { $0.wall / exact.wall }, metrics: metrics))

        """
    let rf = results[1], rs = results[2], sf = results[3], ss = results[4]
    if let nm = notMeasured("objective ratio ≤ 1 + ε = 1.5", [rf]) { text += "\n" + nm } else {
        let o = num(rf, "objective_ratio") ?? .infinity
        text += "\nGoal objective ratio ≤ 1 + ε = 1.5: \(verdict(o <= 1.5)) (\(f(o, 4)))."
    }
    if let nm = notMeasured("within 1.5× of the decompression floor (d = 64)", [floor, rf, sf]) { text += "\n" + nm } else {
        let r = rf.wall / floor.wall, rs2 = sf.wall / floor.wall
        text += "\nGoal within 1.5× of the decompression floor (d = 64): \(verdict(max(r, rs2) <= 1.5)) "
            + "(ε mode ×\(f(r, 2)), samples mode ×\(f(rs2, 2)))."
    }
    if let nm = notMeasured("rowflow faster than the exact in-memory path", [rf, exact]) { text += "\n" + nm } else {
        text += "\nGoal rowflow faster than the exact in-memory path: \(verdict(rf.wall < exact.wall)) "
            + "(×\(f(exact.wall / rf.wall, 2)); peak RSS \(f(rf.rssMiB, 1)) against \(f(exact.rssMiB, 1)) MiB)."
    }
    if let nm = notMeasured("coreset size and RSS flat from \(small) to \(rows) rows (≤ 1.10)", [sf, ss, rf, rs]) {
        text += "\n" + nm
    } else {
        let rss = sf.rssMiB / ss.rssMiB
        let size = (num(sf, "coreset_size") ?? .nan) / (num(ss, "coreset_size") ?? .nan)
        let eSize = (num(rf, "coreset_size") ?? .nan) / (num(rs, "coreset_size") ?? .nan)
        text += "\nGoal coreset size and RSS flat from \(small) to \(rows) rows (≤ 1.10), samples mode: "
            + "\(verdict(rss <= 1.10 && size <= 1.10)) (RSS ×\(f(rss, 2)), size ×\(f(size, 2))). ε mode grows "
            + "like the online bound's d·ln n, not like n: size ×\(f(eSize, 2)), RSS ×\(f(rf.rssMiB / rs.rssMiB, 2))."
    }
    text += "\n\nThe exact path ran once (slow peer); rowflow \(runs) times. " + background
    return Section(name: "coreset", text: text, versions: peerVersion(results))
}

// MARK: - solver

func solver(_ env: BenchEnv, rows: Int, runs: Int) -> Section {
    let d = 64, cols = d + 1
    let zst = dataFile(env, kind: "regression", rows: rows, cols: d, format: "f32", zstd: true)
    let ref = reference(env, mode: "ref-ls", input: zst, cols: cols)
    var (results, background) = measure(env, [
        .rowflow(env, "rowflow halpern-solver vr-halpern, tol 1e-6", manifest: "f32x64t-halpern-vr.yaml", input: zst, out: "hs-vr"),
        .rowflow(env, "rowflow halpern-solver halpern, tol 1e-6", manifest: "f32x64t-halpern.yaml", input: zst, out: "hs-h"),
        .rowflow(env, "rowflow gram ridge λ=1e-8", manifest: "f32x64t-gram-ridge.yaml", input: zst, out: "hs-gram"),
        .peer(env, "numpy lstsq", script: peerScript, input: zst, args: ["lstsq", zst, "\(cols)", ref]),
        .peer(env, "sklearn Ridge(alpha=1e-8)", script: peerScript, input: zst, args: ["ridge", zst, "\(cols)", "1e-8", ref]),
        .peer(env, "sklearn SGDRegressor(alpha=1e-8, tol=1e-6)", script: peerScript, input: zst,
              args: ["sgd", zst, "\(cols)", "1e-8", ref]),
    ], runs: runs)
    score(env, &results[0], ["score-ls", results[0].contender.outDir! + "/h/solution.npy", ref])
    score(env, &results[1], ["score-ls", results[1].contender.outDir! + "/h/solution.npy", ref])
    score(env, &results[2], ["score-ls", results[2].contender.outDir! + "/r/solution.npy", ref])
    for i in [0, 1] {
        for key in ["oracle_calls", "iterations", "converged"] { if let v = summary(results[i], "h")?[key] { results[i].json?[key] = v } }
    }
    let lstsq = results[3]
    let metrics = [
        Metric(header: "‖x − x*‖/‖x*‖ (x* = lstsq)") { sci(num($0, "rel_err")) },
        Metric(header: "oracle calls") { r in num(r, "oracle_calls").map { String(Int($0)) } ?? "—" },
        Metric(header: "converged / epochs") { r in
            (r.json?["converged"] as? Bool).map { $0 ? "yes" : "no" } ?? num(r, "epochs").map { "\(Int($0)) epochs" } ?? "—" },
    ]
    var text = """
        \(rows) rows × \(d) float32 features + target (rowflow gen regression, noise 0.1), zstd-compressed. Least \
        squares without intercept; x* is numpy lstsq in float64 (computed once, untimed; the `numpy lstsq` row \
        times it again). oracle calls are from rowflow's summary.json.

        \(opTable(results, ratioHeader: "wall ÷ lstsq", ratio: { $0.wall / lstsq.wall }, metrics: metrics))

        """
    for i in [0, 1] {
        let r = results[i]
        if let nm = notMeasured("\(r.contender.name) within 1e-4 of lstsq", [r]) { text += "\n" + nm; continue }
        let e = num(r, "rel_err") ?? .infinity
        text += "\nGoal \(r.contender.name) within 1e-4 of lstsq: \(verdict(e <= 1e-4)) (\(sci(e)); "
            + "wall ×\(f(r.wall / lstsq.wall, 2)) of lstsq's)."
    }
    text += "\n\n" + background
    return Section(name: "solver", text: text, versions: peerVersion(results))
}

/// The peers' most complete version string (those with scikit-learn include numpy's and zstandard's).
func peerVersion(_ results: [Result]) -> [String] {
    let vs = results.compactMap { $0.json?["version"] as? String }
    return vs.max { $0.count < $1.count }.map { [$0] } ?? []
}
