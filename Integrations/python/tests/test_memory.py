"""Bounded memory: 2·10⁷ rows (320 MB of float64) from a generator of chunks run with the Python process's peak
RSS at most 32 MiB above what it was after the imports (measured here: ≈ 5 MiB above; one 1.6 MB chunk and one
≤ 4 MiB block in flight), in a fresh interpreter so that nothing else this test run did counts."""

import json
import subprocess
import sys
import textwrap

BOUND_KIB = 32 * 1024

SCRIPT = textwrap.dedent("""
    import json, resource, sys, numpy as np, rowflow
    N, C = 20_000_000, 100_000
    def chunks():
        for s in range(0, N, C):
            a = np.empty((C, 2))
            a[:, 0] = np.arange(s, s + C)
            a[:, 1] = 1.0
            yield a
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss      # KiB on Linux
    res = rowflow.run({"version": 1, "operators": [{"id": "m", "op": "moments"}]}, chunks(), binary=sys.argv[1])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base": base, "peak": peak, "rows": res.run["rows_read"], "mean": res["m"]["mean"].tolist(),
                      "variance": res["m"]["variance"].tolist()}))
""")


def test_twenty_million_rows_from_a_generator_in_bounded_memory(rowflow_bin):
    r = subprocess.run([sys.executable, "-c", SCRIPT, rowflow_bin], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    n = 20_000_000
    assert m["rows"] == n
    # Column 0 is 0, 1, …, n−1: mean (n−1)/2, population variance (n²−1)/12; column 1 is all ones.
    assert abs(m["mean"][0] - (n - 1) / 2) <= 1e-12 * n
    assert abs(m["variance"][0] - (n * n - 1) / 12) <= 1e-10 * n * n
    assert m["mean"][1] == 1.0 and m["variance"][1] == 0.0
    # 320 MB went through the pipe; the Python process grew by a few MiB.
    assert m["peak"] - m["base"] <= BOUND_KIB, m
