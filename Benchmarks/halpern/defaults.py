"""halpern-solver with its default parameters on the cases its defaults were tuned on (preconditioning and
restarted vr-halpern's epochs), against the same solve with `precondition: none` and/or the other
algorithm. Prints a markdown section; oracle calls are deterministic, wall times are not.

usage: defaults.py ROWFLOW_BIN

Cases (seeded):
- well-conditioned least squares: n = 10⁵, d = 30, N(0, 1) columns scaled linearly 1 … 3 (κ(AᵀA) ≈ 9),
  y = Aβ + N(0, 1), tolerance 1e-9: vr-halpern against halpern, each with and without the preconditioner;
- badly scaled least squares: n = 10⁵, d = 8, columns scaled log-uniformly 1 … 5,000, tolerance 1e-8.
"""
import json, os, subprocess, sys, tempfile, time

import numpy as np


def run(binary, work, data, params):
    path = os.path.join(work, "in.npy")
    np.save(path, data)
    manifest = os.path.join(work, "m.yaml")
    with open(manifest, "w") as fh:
        fh.write("version: 1\nsource:\n  target: last\noperators:\n  - id: s\n    op: halpern-solver\n"
                 f"    params: {{ {params} }}\n")
    out = os.path.join(work, "out")
    t0 = time.perf_counter()
    p = subprocess.run([binary, "run", manifest, "--input", path, "--out", out, "--progress", "never"],
                       check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    return json.load(open(os.path.join(out, "s", "summary.json"))), wall, p.stderr.strip()


def main():
    binary = sys.argv[1]
    rng = np.random.default_rng(1)
    n = 100_000
    a = rng.standard_normal((n, 30)) * np.linspace(1, 3, 30)
    y = a @ rng.standard_normal(30) + rng.standard_normal(n)
    well = np.hstack([a, y[:, None]])
    b = rng.standard_normal((n, 8)) * np.logspace(0, np.log10(5000), 8)
    yb = b @ (rng.standard_normal(8) / np.logspace(0, np.log10(5000), 8)) + rng.standard_normal(n)
    bad = np.hstack([b, yb[:, None]])
    cases = [("n = 10⁵, d = 30, columns 1…3, tol 1e-9", well, "tolerance: 1.0e-9"),
             ("n = 10⁵, d = 8, columns 1…5,000, tol 1e-8", bad, "tolerance: 1.0e-8")]
    print(f"## halpern-solver defaults on least squares — {time.strftime('%a %b %d %Y %H:%M UTC', time.gmtime())}\n")
    print("| case | algorithm | precondition | oracle calls | passes | converged (stop reason) | wall s | calls ÷ halpern's (same precondition) |")
    print("|---|---|---|--:|--:|:-:|--:|--:|")
    with tempfile.TemporaryDirectory() as work:
        for name, data, tol in cases:
            det = {}
            for pre in ["auto", "none"]:
                for alg in ["halpern", "vr-halpern"]:
                    s, wall, err = run(binary, work, data, f"problem: least-squares, algorithm: {alg}, precondition: {pre}, {tol}")
                    if alg == "halpern":
                        det[pre] = s["oracle_calls"]
                    print(f"| {name} | {alg} | {pre}{' (default)' if pre == 'auto' else ''} | {s['oracle_calls']:,} | {s['passes']:.0f} | "
                          f"{'yes' if s['converged'] else 'no'} ({s['stop_reason']}) | {wall:.2f} | {s['oracle_calls'] / det[pre]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
