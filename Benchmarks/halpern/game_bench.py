"""A dense n × n matrix game three ways, side by side in one run: rowflow halpern-solver with deterministic Halpern
(`algorithm: halpern`), with Algorithm 2 (`vr-halpern`: variance-reduced extragradient inner loop), and scipy's
HiGHS LP solver on the textbook LP as the peer a user would otherwise pick. Prints a markdown section.

usage: game_bench.py ROWFLOW_BIN [--n 2000] [--cols N] [--tol 1e-4] [--seed 1] [--budget-passes 20000] [--lp-method highs-ipm]
B (n × cols, cols = n unless given) has i.i.d. N(0, 1) entries (seeded); rowflow reads it as a float64 .npy, one row of B per streamed row.
Every solve's duality gap is recomputed here from its strategies (weak duality: a certificate, not a claim).
"""
import argparse, json, os, platform, resource, subprocess, sys, tempfile, time

import numpy as np
import scipy
from scipy.optimize import linprog


def gap_of(b, x, y):
    return float((b.T @ x).max() - (b @ y).min())


def run_rowflow(binary, b_path, algorithm, tol, budget, work):
    manifest = os.path.join(work, f"game-{algorithm}.yaml")
    with open(manifest, "w") as fh:
        fh.write("version: 1\noperators:\n  - id: game\n    op: halpern-solver\n"
                 f"    params: {{ problem: matrix-game, algorithm: {algorithm}, tolerance: {tol}, max_oracle_calls: {budget} }}\n")
    out = os.path.join(work, f"out-{algorithm}")
    t0 = time.perf_counter()
    subprocess.run([binary, "run", manifest, "--input", b_path, "--out", out, "--progress", "never"], check=True)
    wall = time.perf_counter() - t0
    summary = json.load(open(os.path.join(out, "game", "summary.json")))
    run = json.load(open(os.path.join(out, "run.json")))
    sol = np.load(os.path.join(out, "game", "solution.npy"))
    return wall, summary, run, sol


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rowflow")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--budget-passes", type=int, default=20000)
    ap.add_argument("--lp-time-limit", type=float, default=600)
    ap.add_argument("--cols", type=int, default=None)
    ap.add_argument("--lp-method", default="highs-ipm", help="highs-ipm (dense 2000 × 2000: the simplex ran > 10 min) or highs")
    a = ap.parse_args()
    n = a.n
    k = a.cols or n
    b = np.random.default_rng(a.seed).standard_normal((n, k))
    max_abs = float(np.abs(b).max())
    with tempfile.TemporaryDirectory() as work:
        b_path = os.path.join(work, "B.npy")
        np.save(b_path, b)
        rows = []
        for algorithm in ["halpern", "vr-halpern"]:
            wall, s, run, sol = run_rowflow(a.rowflow, b_path, algorithm, a.tol, a.budget_passes * n, work)
            x, y = sol[:n], sol[n:]
            rows.append((f"rowflow halpern-solver, {algorithm}", wall, s["oracle_calls"], s["iterations"],
                         gap_of(b, x, y), s["value"], s["converged"], run.get("peak_rss_kib", 0) / 1024))
            print(f"{algorithm}: {wall:.2f} s, {s['oracle_calls']} calls, gap {rows[-1][4]:.2e}, converged {s['converged']}", file=sys.stderr)
        # The LP peer: min v s.t. Bᵀx ≤ v·1, 1ᵀx = 1, x ≥ 0 (variables x, v); HiGHS, dual for y.
        t0 = time.perf_counter()
        c = np.zeros(n + 1); c[-1] = 1
        a_ub = np.hstack([b.T, -np.ones((k, 1))])
        a_eq = np.hstack([np.ones((1, n)), np.zeros((1, 1))])
        res = linprog(c, A_ub=a_ub, b_ub=np.zeros(k), A_eq=a_eq, b_eq=[1],
                      bounds=[(0, None)] * n + [(None, None)], method=a.lp_method,
                      options={"time_limit": a.lp_time_limit})
        lp_s = time.perf_counter() - t0
        x_lp = res.x[:n]
        y_lp = -res.ineqlin.marginals
        y_lp = y_lp / y_lp.sum()
        lp_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append(("scipy linprog (HiGHS), exact LP", lp_s, None, None, gap_of(b, x_lp, y_lp), float(res.fun), res.status == 0, lp_rss))
    v_star = rows[-1][5]
    det_wall = rows[0][1]
    print(f"## matrix game {n} × {k} — {time.strftime('%a %b %d %Y %H:%M UTC', time.gmtime())}\n")
    print(f"- machine: {platform.machine()}, {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at the end; "
          f"numpy {np.__version__}, scipy {scipy.__version__}")
    print(f"- B: {n} × {k} i.i.d. N(0, 1), seed {a.seed}, max|B| = {max_abs:.3f}; rowflow stops at duality gap ≤ "
          f"{a.tol:g}·max|B| = {a.tol * max_abs:.2e} (budget {a.budget_passes} passes); gaps recomputed from the strategies\n")
    print("| contender | wall s | oracle calls | passes | outer iterations | duality gap | value − LP value | converged | peak RSS MiB | wall ÷ halpern |")
    print("|---|--:|--:|--:|--:|--:|--:|:-:|--:|--:|")
    for name, wall, calls, iters, gap, value, conv, rss in rows:
        passes = f"{calls / n:.0f}" if calls is not None else "—"
        print(f"| {name} | {wall:.2f} | {calls if calls is not None else '—'} | {passes} | {iters if iters is not None else '—'} | "
              f"{gap:.2e} | {value - v_star:+.1e} | {'yes' if conv else 'no'} | {rss:.0f} | {wall / det_wall:.2f} |")
    print(f"\nThe LP peer's peak RSS is this Python process's (it holds B and the LP). Oracle calls count row evaluations F_i "
          f"(a full pass = {n}); they are deterministic, the wall times are not.")


if __name__ == "__main__":
    main()
