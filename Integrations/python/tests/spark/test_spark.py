"""rowflow on Spark (`local[2,4]`) against one `rowflow run` on the whole input (SPARK.md).

The data are float32 values (written to text as the shortest decimal that parses back to the same value), so
the text, Parquet and raw-f32 paths feed rowflow identical numbers and only the grouping of the float64 sums
differs between a merge and one run: that is what the 1e-12 relative tolerance covers (n·ε ≈ 1e-11 would be
the worst case of naive summation; the sums here are blocked, so their error is far smaller).
"""

import json
import os
import stat
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rowflow.spark import (RowflowBinary, RowflowTaskError, binary_files_states, merge_on_driver, parquet_states,
                           text_states, tree_merge)
from rowflow.spark import cli

N, D = 40_000, 8          # rows; features (column 0 is the constant 1, so Σ weights is a quadratic form)
LAMBDA = 0.5
OPERATORS = f"""operators:
  - {{ id: g, op: gram, params: {{ solve: ridge, lambda: {LAMBDA} }} }}
  - {{ id: m, op: moments }}
  - {{ id: svd, op: truncated-svd, params: {{ rank: 3 }} }}
  - {{ id: core, op: sensitivity-sample, params: {{ epsilon: 0.5 }} }}
  - {{ id: fit, op: gram, input: core, params: {{ solve: ridge, lambda: {LAMBDA} }} }}
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory, rowflow):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(7)
    z = rng.standard_normal((N, D - 1)) * (3 * 0.6 ** np.arange(D - 1))
    q, _ = np.linalg.qr(rng.standard_normal((D - 1, D - 1)))
    x = np.hstack([np.ones((N, 1)), z @ q.T]).astype(np.float32)
    beta = rng.standard_normal(D)
    y = (x.astype(np.float64) @ beta + 0.3 * rng.standard_normal(N)).astype(np.float32)
    rows = np.hstack([x, y[:, None]]).astype(np.float32)
    csv = d / "all.csv"
    with open(csv, "w") as f:
        for r in rows.tolist():
            f.write(",".join(repr(v) for v in r) + "\n")
    (d / "all.f32").write_bytes(rows.astype("<f4").tobytes())
    (d / "text.yaml").write_text(f"version: 1\nsource: {{ format: csv, columns: {D + 1}, target: last }}\n" + OPERATORS)
    (d / "raw.yaml").write_text(f"version: 1\nsource: {{ format: f32, columns: {D + 1}, target: last }}\n" + OPERATORS)
    whole = d / "whole"
    r = subprocess.run([rowflow, "run", str(d / "text.yaml"), "--input", str(csv), "--out", str(whole), "--progress", "never"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return {"dir": d, "rows": rows.astype(np.float64), "csv": str(csv), "text": str(d / "text.yaml"),
            "raw": str(d / "raw.yaml"), "whole": str(whole)}


def load(run, path):
    return np.load(os.path.join(run, path))


def summary(run, op):
    with open(os.path.join(run, op, "summary.json")) as f:
        return json.load(f)


def rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def assert_exact_parts_equal(run, whole, tol=1e-12):
    for f in ["g/gram.npy", "g/xty.npy", "g/solution.npy", "m/mean.npy", "m/variance.npy"]:
        assert rel(load(run, f), load(whole, f)) < tol, f
    with open(os.path.join(run, "run.json")) as f:
        assert json.load(f)["rows_read"] == N


@pytest.fixture(scope="module")
def text_merged(spark, data, rowflow, tmp_path_factory):
    """8 textFile partitions → 8 blobs → one driver merge."""
    sc = spark.sparkContext
    rdd = sc.textFile(data["csv"], minPartitions=8, use_unicode=False)
    assert rdd.getNumPartitions() == 8
    states = text_states(sc, rdd, data["text"], RowflowBinary(rowflow)).collect()
    assert sorted(s[0] for s in states) == [(k,) for k in range(8)]
    out = str(tmp_path_factory.mktemp("text") / "merged")
    merge_on_driver(states, data["text"], out, RowflowBinary(rowflow))
    return out, states


def test_text_partitions_merge_to_the_single_run(data, text_merged):
    out, _ = text_merged
    whole = data["whole"]
    assert_exact_parts_equal(out, whole)
    rows = data["rows"]
    x, y = rows[:, :D], rows[:, D]

    # truncated-svd: the certified bound covers the true tail, and every value sits in its error bar.
    s = summary(out, "svd")
    sigma = np.linalg.svd(x, compute_uv=False)
    tail = float(np.sum(sigma[3:] ** 2))
    assert s["tail_energy_bound"] >= tail * (1 - 1e-12)
    got = load(out, "svd/singular_values.npy")
    # Error bar of docs/operators.md (truncated-svd): σ² ∈ [σ̂², σ̂² + dropped_energy + rounding_margin] (1e-10: float64 SVD of x).
    slack = s["dropped_energy"] + s["rounding_margin"] + 1e-10 * sigma[0] ** 2
    assert np.all(got ** 2 <= sigma[:3] ** 2 + 1e-10 * sigma[0] ** 2)
    assert np.all(sigma[:3] ** 2 <= got ** 2 + slack)
    assert rel(got, load(whole, "svd/singular_values.npy")) < 1e-9

    # sensitivity-sample: (1−ε)BᵀB − δI ⪯ SᵀS ⪯ (1+ε)BᵀB + δI on B = [A | y], ε and δ as the merged summary states.
    c = summary(out, "core")
    eps, delta = c["epsilon_bound"], c["ridge"]
    assert eps <= 0.5 + 1e-12
    w = load(out, "core/weights.npy")
    sb = np.hstack([load(out, "core/rows.npy"), load(out, "core/targets.npy")[:, None]])
    b = np.hstack([x, y[:, None]])
    m, sm = b.T @ b, sb.T @ (sb * w[:, None])
    scale = np.linalg.norm(m, 2)
    assert np.linalg.eigvalsh(sm - (1 + eps) * m - delta * np.eye(D + 1)).max() <= 1e-9 * scale
    assert np.linalg.eigvalsh(sm - (1 - eps) * m + delta * np.eye(D + 1)).min() >= -1e-9 * scale
    # Column 0 is all ones: e₀ᵀSᵀSe₀ = Σw and e₀ᵀBᵀBe₀ = n, so the same bound gives the total weight.
    assert abs(w.sum() - N) <= eps * N + delta
    assert c["sample_weight_sum"] == pytest.approx(w.sum(), rel=1e-12)
    assert len(w) == c["size"] < N
    assert set(load(out, "core/shard.npy").tolist()) == set(range(8))

    # The solver downstream of the merged coreset ran on it, and its ridge objective on all rows is within
    # (1 + ε) of the exact optimum (the embedding bound applied to ½‖[A y][x; −1]‖² + ½λ‖x‖²).
    assert summary(out, "fit")["rows"] == c["size"]

    def objective(beta):
        r = x @ beta - y
        return 0.5 * r @ r + 0.5 * LAMBDA * beta @ beta

    ratio = objective(load(out, "fit/solution.npy")) / objective(load(out, "g/solution.npy"))
    assert 1 - 1e-9 <= ratio <= 1 + eps


def test_parquet_through_map_in_arrow_equals_text(spark, data, rowflow, text_merged, tmp_path):
    pdir = tmp_path / "parquet"
    pdir.mkdir()
    rows = data["rows"].astype(np.float32)
    names = [f"c{j}" for j in range(D)] + ["y"]
    for k, part in enumerate(np.array_split(rows, 5)):
        pq.write_table(pa.table({n: part[:, j] for j, n in enumerate(names)}), pdir / f"part-{k}.parquet")
    (pdir / "_SUCCESS").write_text("")
    df = spark.read.parquet(str(pdir))
    states = parquet_states(df, names, data["raw"], RowflowBinary(rowflow)).collect()
    out = str(tmp_path / "merged")
    merge_on_driver(states, data["raw"], out, RowflowBinary(rowflow))
    assert_exact_parts_equal(out, text_merged[0])
    assert_exact_parts_equal(out, data["whole"])


def test_binary_files_raw_and_zstd_with_an_empty_shard(spark, data, rowflow, tmp_path):
    bdir = tmp_path / "bin"
    bdir.mkdir()
    rows = data["rows"].astype("<f4")
    parts = np.array_split(rows, 3)
    (bdir / "part-0.f32").write_bytes(parts[0].tobytes())
    (bdir / "part-1.f32").write_bytes(parts[1].tobytes())
    subprocess.run(["zstd", "-q", "-f", str(bdir / "part-1.f32"), "-o", str(bdir / "part-1.f32.zst")], check=True)
    os.remove(bdir / "part-1.f32")
    (bdir / "part-2.f32").write_bytes(parts[2].tobytes())
    (bdir / "part-3.f32").write_bytes(b"")            # an empty shard is valid
    (bdir / "_SUCCESS").write_text("")                 # Hadoop/Spark leftovers are skipped
    (bdir / ".part-0.f32.crc").write_bytes(b"\0\1")
    states = binary_files_states(spark.sparkContext, str(bdir), data["raw"], RowflowBinary(rowflow), partitions=2).collect()
    assert sorted(s[0] for s in states) == [(0,), (1,), (2,), (3,)]
    out = str(tmp_path / "merged")
    merge_on_driver(states, data["raw"], out, RowflowBinary(rowflow))
    assert_exact_parts_equal(out, data["whole"])


def test_empty_partitions_of_unknown_shape(spark, rowflow, tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("version: 1\nsource: { format: csv }\noperators: [{ id: g, op: gram }]\n")
    rdd = spark.sparkContext.parallelize(["1,2", "3,4"], 4)
    states = text_states(spark.sparkContext, rdd, str(m), RowflowBinary(rowflow)).collect()
    assert len(states) == 4
    merge_on_driver(states, str(m), str(tmp_path / "o"), RowflowBinary(rowflow))
    assert load(str(tmp_path / "o"), "g/gram.npy").tolist() == [[10.0, 14.0], [14.0, 20.0]]


FLAKY = """#!/bin/bash
# Test double: shard $FAIL_SHARD fails (once, or always with FAIL_ALWAYS=1) after reading part of its input and
# printing half a state blob on stdout, which must never reach a merge; every other call is rowflow itself.
shard=""; prev=""
for a in "$@"; do [ "$prev" = "--shard" ] && shard="$a"; prev="$a"; done
if [ "$shard" = "$FAIL_SHARD" ]; then
  echo attempt >> "$FAIL_LOG"
  if [ -n "$FAIL_ALWAYS" ] || [ ! -e "$FAIL_MARKER" ]; then
    touch "$FAIL_MARKER"
    head -c 1000 > /dev/null
    echo "UkZCTE9CMDEpartial"
    echo "rowflow: error: simulated failure of shard $shard" >&2
    exit 3
  fi
fi
exec "$REAL_ROWFLOW" "$@"
"""


def flaky_binary(tmp_path, rowflow, always):
    script = tmp_path / "flaky-rowflow"
    script.write_text(FLAKY)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {"REAL_ROWFLOW": rowflow, "FAIL_SHARD": "3", "FAIL_MARKER": str(tmp_path / "failed-once"),
           "FAIL_LOG": str(tmp_path / "attempts")}
    if always:
        env["FAIL_ALWAYS"] = "1"
    return RowflowBinary(str(script), env=env)


def test_a_partition_that_fails_once_is_retried_and_exact(spark, data, rowflow, text_merged, tmp_path):
    sc = spark.sparkContext
    rdd = sc.textFile(data["csv"], minPartitions=8, use_unicode=False)
    states = text_states(sc, rdd, data["text"], flaky_binary(tmp_path, rowflow, always=False)).collect()
    assert (tmp_path / "failed-once").exists()
    assert (tmp_path / "attempts").read_text().count("attempt") == 2
    # The retried shard's blob is the one an undisturbed run returns: the whole result is unchanged.
    assert sorted(states) == sorted(text_merged[1])
    out = str(tmp_path / "merged")
    merge_on_driver(states, data["text"], out, RowflowBinary(rowflow))
    for f in ["g/gram.npy", "m/variance.npy", "svd/singular_values.npy", "core/weights.npy", "fit/solution.npy"]:
        assert np.array_equal(load(out, f), load(text_merged[0], f)), f


def test_a_partition_that_always_fails_fails_the_job(spark, data, rowflow, tmp_path):
    sc = spark.sparkContext
    rdd = sc.textFile(data["csv"], minPartitions=8, use_unicode=False)
    with pytest.raises(Exception) as e:
        text_states(sc, rdd, data["text"], flaky_binary(tmp_path, rowflow, always=True)).collect()
    assert "exit code 3 on shard 3" in str(e.value) and "simulated failure of shard 3" in str(e.value)
    assert (tmp_path / "attempts").read_text().count("attempt") == 4   # local[2,4]: four attempts


def test_bad_data_fails_the_job_with_rowflows_error(spark, data, rowflow, tmp_path):
    rdd = spark.sparkContext.parallelize(["1,2,3,4,5,6,7,8,9"] * 10 + ["1,2,x,4,5,6,7,8,9"], 2)
    with pytest.raises(Exception) as e:
        text_states(spark.sparkContext, rdd, data["text"], RowflowBinary(rowflow)).collect()
    assert "exit code 65" in str(e.value) and "bad value" in str(e.value)


def test_cli_with_tree_merge(spark, data, rowflow, tmp_path, capsys):
    out = str(tmp_path / "cli")
    assert cli.main([data["text"], "--text", data["csv"], "--partitions", "6", "--out", out, "--rowflow", rowflow,
                     "--tree-depth", "2"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["partials"] == 1
    assert_exact_parts_equal(out, data["whole"])
    with open(os.path.join(out, "run.json")) as f:
        assert json.load(f)["shards"] == list(range(6))


def test_task_error_names_code_and_message():
    e = RowflowTaskError(4, 65, "rowflow: error: -:3:2: bad value")
    assert "exit code 65 on shard 4" in str(e) and "bad value" in str(e)


def test_binary_shipped_as_an_archive(spark, rowflow, tmp_path):
    """package-rowflow.sh's archive through addArchive (what spark-submit --archives does): the task finds
    rf/bin/rowflow relative to SparkFiles and loads the libraries shipped beside it."""
    from pyspark import SparkFiles

    archive = tmp_path / "rowflow-test.tar"
    subprocess.run([os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "package-rowflow.sh"), rowflow, str(archive)],
                   check=True, capture_output=True)
    sc = spark.sparkContext
    sc.addArchive(str(archive) + "#rf")
    m = tmp_path / "m.yaml"
    m.write_text("version: 1\nsource: { format: csv, columns: 2 }\noperators: [{ id: g, op: gram }]\n")
    shipped = RowflowBinary("rf/bin/rowflow", lib_dir="rf/lib")
    states = text_states(sc, sc.parallelize(["1,2", "3,4", "5,6"], 2), str(m), shipped).collect()
    merge_on_driver(states, str(m), str(tmp_path / "o"), RowflowBinary(rowflow))
    assert load(str(tmp_path / "o"), "g/gram.npy").tolist() == [[35.0, 44.0], [44.0, 56.0]]
    root = os.path.join(SparkFiles.getRootDirectory(), "rf")
    exe, env = shipped.resolve()
    assert exe == os.path.join(root, "bin", "rowflow") and env["LD_LIBRARY_PATH"].startswith(os.path.join(root, "lib"))
    libs = subprocess.run(["ldd", exe], env={"LD_LIBRARY_PATH": env["LD_LIBRARY_PATH"]}, capture_output=True, text=True).stdout
    # Every library the binary loads comes from the archive, glibc's aside (the node's own). The Swift runtime is
    # among them for a debug build and linked in for `make build`'s (static); OpenBLAS is always shipped.
    loaded = [line.split("=>")[1].split()[0] for line in libs.splitlines() if "=> /" in line]
    glibc = ("libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so", "ld-linux")
    assert os.path.join(root, "lib", "libopenblas.so.0") in loaded, libs
    assert all(p.startswith(os.path.join(root, "lib") + os.sep) for p in loaded if not os.path.basename(p).startswith(glibc)), libs
