#!/usr/bin/env python3
"""Small-job overhead: a 10-sample projection DPP on 10^5 x 20 float64 rows, rowflow's whole process
against DPPy's GS sampler (load + QR set-up + 10 samples), paired runs, medians. rowflow's `repeated` mode
with 10 repetitions draws 10 independent projection samples, the same law as DPPy's 10 sample_exact calls.

Usage: python3 text/bench_small_job.py --rowflow ../.build/release/rowflow --python .venv/bin/python [--runs 5]
"""
import argparse, json, os, platform, resource, subprocess, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(argv, env=None, faults=None):
    """Wall time and stdout of one run; its minor page faults appended to `faults` (children run one at a
    time, so the growth of RUSAGE_CHILDREN's ru_minflt across the run is this child's, re-exec included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    t = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, env=env)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{p.stderr.decode()[-2000:]}")
    if faults is not None:
        faults.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before)
    return wall, p.stdout.decode()


def median(xs):
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rowflow", required=True)
    ap.add_argument("--python", default="python3", help="a Python with dppy 0.3.2 (make -C Benchmarks venv)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--data", default=os.path.join(HERE, "..", "data"))
    a = ap.parse_args()
    bin_ = os.path.abspath(a.rowflow)
    data = os.path.join(a.data, "legendre-100000x20-s1.npy")
    if not os.path.exists(data):
        subprocess.run([bin_, "gen", "legendre", "--rows", "100000", "--cols", "20", "--seed", "1", "--format", "npy",
                        "--out", data + ".partial"], check=True)
        os.replace(data + ".partial", data)
    out = tempfile.mkdtemp(prefix="rowflow-smalljob-")
    manifest = os.path.join(HERE, "..", "manifests", "legendre20-dpp-repeated10.yaml")
    rf, rf_in, dp, dp_in, faults, start, start_pinned = [], [], [], [], [], [], []
    pinned = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    load = [os.getloadavg()[0]]
    for _ in range(a.runs):
        # Process start alone: `--version` as a user runs it (rowflow re-executes itself to pin OpenBLAS to one
        # thread), and with OPENBLAS_NUM_THREADS=1 already set (no re-exec); the difference is the re-exec.
        start.append(timed([bin_, "--version"])[0])
        start_pinned.append(timed([bin_, "--version"], env=pinned)[0])
        w, _ = timed([bin_, "run", manifest, "--input", data, "--out", out, "--progress", "never"], faults=faults)
        rf.append(w)
        with open(os.path.join(out, "run.json")) as f:
            rf_in.append(json.load(f)["seconds"])
        w, text = timed([a.python, os.path.join(HERE, "..", "peers", "dppy_peer.py"), "sample", data, "20", "10", "1"])
        dp.append(w)
        j = json.loads(text.strip().splitlines()[-1])
        dp_in.append(j["load_seconds"] + j["setup_seconds"] + sum(j["sample_seconds_all"]))
    load.append(os.getloadavg()[0])
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    version = ", ".join(timed([bin_, "--version"])[1].strip().splitlines())
    print(f"### Small job: 10 projection-DPP samples, 10^5 x 20 ({a.runs} paired runs, load {load[0]:.2f} → {load[1]:.2f})\n")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; `rowflow --version`: {version}.\n")
    print("| contender | wall s (median) | in-process s (median) |\n|---|--:|--:|")
    print(f"| rowflow dpp-sample repeated (10 samples) | {median(rf):.3f} | {median(rf_in):.3f} |")
    print(f"| DPPy 0.3.2 GS, load + set-up + 10 samples | {median(dp):.3f} | {median(dp_in):.3f} |")
    print(f"\nDPPy ÷ rowflow: wall ×{median(dp) / median(rf):.1f}; DPPy in-process ÷ rowflow wall ×{median(dp_in) / median(rf):.1f} "
          f"(goal ≥ 20×). rowflow wall minus in-process (process start, the BLAS re-exec, exit): {median(rf) - median(rf_in):.3f} s. "
          f"`rowflow --version`: {median(start) * 1000:.1f} ms, {median(start_pinned) * 1000:.1f} ms with OPENBLAS_NUM_THREADS=1 "
          f"set (no re-exec). Minor page faults of the rowflow run: {median(faults):.0f}.")


if __name__ == "__main__":
    main()
