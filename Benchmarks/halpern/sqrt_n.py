"""Oracle calls to a relative residual (default 1e-4) as n grows 10× and 100×: rowflow's deterministic Halpern against
vr-halpern (uniform and importance sampling), on least squares whose Lipschitz constants scale exactly with n.

usage: sqrt_n.py ROWFLOW_BIN [--sizes 1000,10000,100000,1000000] [--tolerance 1e-4] [--no-restarts] [--precondition auto|none]
A fixed 1000-row base (4 columns scaled 1, 1, 0.3, 0.1; rows normalised to unit length, so κ(AᵀA) ≈ 100 and
n·maxᵢ‖a_i‖²/‖A‖² is the same for every n) is tiled n/1000 times, as in HalpernSolverTests.oracleCallsGrowSlowerThanN:
the deterministic iteration count is then independent of n, so its calls grow like n, and the paper's
Õ(n + √n·L/ε) predicts vr-halpern's grow like √n once √n·L/ε dominates (plain Halpern, --no-restarts: the
paper's loopless schedule). With restarts (the default) both are linear-rate and vr-halpern runs in epochs of
one full pass plus ≈ 2√n mini-batches of ⌈√n/8⌉ rows, so its calls are O(n·log 1/ε) with a smaller constant.
Oracle calls are deterministic.
"""
import argparse, json, math, os, subprocess, sys, tempfile, time

import numpy as np


def problem(n):
    rng = np.random.default_rng(70)
    base = rng.standard_normal((1000, 4)) * np.array([1.0, 1.0, 0.3, 0.1])
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    y = base[:, 0] - base[:, 2] + 0.5 * rng.standard_normal(1000)
    reps = n // 1000
    return np.hstack([np.tile(base, (reps, 1)), np.tile(y, reps)[:, None]])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rowflow")
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--tolerance", default="1.0e-4")
    ap.add_argument("--no-restarts", action="store_true", help="plain Halpern (O(1/k)): the regime of the paper's bound")
    ap.add_argument("--precondition", default="auto", help="auto (diagonal, the default) or none (keeps κ ≈ 100)")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    extra = (", restarts: false" if a.no_restarts else "") + f", precondition: {a.precondition}"
    variants = [("halpern", "algorithm: halpern" + extra), ("vr-halpern, uniform", "algorithm: vr-halpern" + extra),
                ("vr-halpern, importance", "algorithm: vr-halpern, sampling: importance" + extra)]
    table = {}
    with tempfile.TemporaryDirectory() as work:
        for n in sizes:
            path = os.path.join(work, f"ls-{n}.npy")
            np.save(path, problem(n))
            for name, params in variants:
                manifest = os.path.join(work, "m.yaml")
                with open(manifest, "w") as fh:
                    fh.write("version: 1\nsource:\n  target: last\noperators:\n  - id: s\n    op: halpern-solver\n"
                             f"    params: {{ problem: least-squares, {params}, tolerance: {a.tolerance}, max_oracle_calls: {20000 * n} }}\n")
                out = os.path.join(work, "out")
                t0 = time.perf_counter()
                subprocess.run([a.rowflow, "run", manifest, "--input", path, "--out", out, "--progress", "never"], check=True)
                wall = time.perf_counter() - t0
                s = json.load(open(os.path.join(out, "s", "summary.json")))
                table[(n, name)] = (s["oracle_calls"], s["converged"], wall)
    print(f"## halpern-solver: oracle calls to relative residual {a.tolerance} as n grows"
          f"{' (no restarts)' if a.no_restarts else ' (restarts)'}, precondition: {a.precondition} — {time.strftime('%a %b %d %Y %H:%M UTC', time.gmtime())}\n")
    print("| n | " + " | ".join(f"{name}: calls (passes)" for name, _ in variants) + " | halpern ÷ vr uniform | halpern ÷ vr importance |")
    print("|--:|" + "--:|" * (len(variants) + 2))
    for n in sizes:
        cells = []
        for name, _ in variants:
            calls, conv, wall = table[(n, name)]
            cells.append(f"{calls:,} ({calls / n:.0f}){'' if conv else ' not converged'}")
        det = table[(n, "halpern")][0]
        print(f"| {n:,} | " + " | ".join(cells) + f" | {det / table[(n, 'vr-halpern, uniform')][0]:.2f} | {det / table[(n, 'vr-halpern, importance')][0]:.2f} |")
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        print("\nLog–log slope of calls in n over " + f"{lo:,} … {hi:,}: " + ", ".join(
            f"{name} {math.log(table[(hi, name)][0] / table[(lo, name)][0]) / math.log(hi / lo):.2f}" for name, _ in variants)
            + " (deterministic ≈ 1; √n would be 0.5).")
    print("\nWall seconds (noisy, include process start and the row-store pass): " + "; ".join(
        f"n = {n:,}: " + ", ".join(f"{name} {table[(n, name)][2]:.2f}" for name, _ in variants) for n in sizes))


if __name__ == "__main__":
    main()
