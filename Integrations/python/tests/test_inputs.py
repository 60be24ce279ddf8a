"""Every kind of input `rowflow.run` takes gives the outputs of the CLI run on a file holding the same bytes.

The reference is `rowflow run` on a raw .f64 (or .f32) file written by numpy from the same rows: the package
must feed the binary exactly those bytes (row-major, little-endian), in any chunking, so every .npy of
moments and gram (with a ridge solve) must be byte-identical — batches are cut at fixed row positions, so
neither the chunk sizes nor stdin vs file may change a bit.
"""

import os
import subprocess

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rowflow

N, D = 30_000, 5
NAMES = [f"x{j}" for j in range(D)] + ["y"]
OPS = [{"id": "m", "op": "moments"},
       {"id": "g", "op": "gram", "params": {"solve": "ridge", "lambda": 0.5}}]
MANIFEST = {"version": 1, "source": {"target": "last"}, "operators": OPS}


def npy_files(run):
    out = {}
    for op in sorted(os.listdir(run)):
        d = os.path.join(run, op)
        if os.path.isdir(d):
            for f in sorted(os.listdir(d)):
                if f.endswith(".npy"):
                    with open(os.path.join(d, f), "rb") as fh:
                        out[f"{op}/{f}"] = fh.read()
    return out


def cli_run(binary, rows, tmp, fmt):
    path = os.path.join(tmp, f"rows.{fmt}")
    rows.astype("<f4" if fmt == "f32" else "<f8").tofile(path)
    m = os.path.join(tmp, f"cli-{fmt}.yaml")
    with open(m, "w") as f:
        f.write(f"version: 1\nsource: {{ format: {fmt}, columns: {rows.shape[1]}, target: last }}\noperators:\n"
                "  - { id: m, op: moments }\n  - { id: g, op: gram, params: { solve: ridge, lambda: 0.5 } }\n")
    out = os.path.join(tmp, f"cli-{fmt}")
    r = subprocess.run([binary, "run", m, "--input", path, "--out", out, "--progress", "never"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, D)) * np.array([1, 2, 3, 0.5, 10])
    y = x @ rng.standard_normal(D) + rng.standard_normal(N)
    return np.hstack([x, y[:, None]])


@pytest.fixture(scope="module")
def reference(rows, rowflow_bin, tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("cli"))
    out64 = cli_run(rowflow_bin, rows, tmp, "f64")
    out32 = cli_run(rowflow_bin, rows.astype(np.float32), tmp, "f32")
    files = npy_files(out64)
    assert set(files) == {"m/mean.npy", "m/variance.npy", "g/gram.npy", "g/xty.npy", "g/solution.npy"}
    # The reference itself is right: numpy on the same rows (float64 sums, so to rounding only).
    g = np.load(os.path.join(out64, "g", "gram.npy"))
    x = rows[:, :D]
    assert np.allclose(g, x.T @ x, rtol=1e-12, atol=0)
    return {"f64": files, "f32": npy_files(out32)}


def check(res, reference, fmt="f64"):
    assert res.run["status"] == "complete"
    assert res.run["rows_read"] == N
    assert res.run["format"] == fmt
    got = npy_files(res.path)
    assert got.keys() == reference[fmt].keys()
    for k in got:
        assert got[k] == reference[fmt][k], f"{k} differs from the CLI run on the same bytes"
    assert res["m"].summary["rows"] == N


def table(rows):
    return pa.table({n: rows[:, j] for j, n in enumerate(NAMES)})


def test_numpy(rows, reference, rowflow_bin):
    check(rowflow.run(MANIFEST, rows, binary=rowflow_bin), reference)


def test_numpy_not_contiguous_and_integer(rows, reference, rowflow_bin, tmp_path):
    # A Fortran-order array goes through the block copy instead of the zero-copy path: same bytes.
    check(rowflow.run(MANIFEST, np.asfortranarray(rows), binary=rowflow_bin), reference)
    ints = np.arange(12, dtype=np.int32).reshape(4, 3)
    res = rowflow.run({"version": 1, "operators": [{"id": "g", "op": "gram"}]}, ints, binary=rowflow_bin)
    assert res.run["format"] == "f64"
    assert np.array_equal(res["g"]["gram"], ints.T.astype(float) @ ints.astype(float))


def test_float32_numpy_streams_f32(rows, reference, rowflow_bin):
    check(rowflow.run(MANIFEST, rows.astype(np.float32), binary=rowflow_bin), reference, "f32")


def test_pandas(rows, reference, rowflow_bin):
    check(rowflow.run(MANIFEST, pd.DataFrame(rows, columns=NAMES), binary=rowflow_bin), reference)


def test_polars(rows, reference, rowflow_bin):
    check(rowflow.run(MANIFEST, pl.DataFrame({n: rows[:, j] for j, n in enumerate(NAMES)}), binary=rowflow_bin),
          reference)


def test_polars_float32(rows, reference, rowflow_bin):
    df = pl.DataFrame({n: rows[:, j].astype(np.float32) for j, n in enumerate(NAMES)})
    check(rowflow.run(MANIFEST, df, binary=rowflow_bin), reference, "f32")


def test_arrow_table_with_several_chunks(rows, reference, rowflow_bin):
    t = pa.concat_tables([table(rows[:7000]), table(rows[7000:])])
    assert t.column(0).num_chunks == 2
    check(rowflow.run(MANIFEST, t, binary=rowflow_bin), reference)


def test_record_batch_reader(rows, reference, rowflow_bin):
    batches = table(rows).to_batches(max_chunksize=4096)
    reader = pa.RecordBatchReader.from_batches(batches[0].schema, iter(batches))
    check(rowflow.run(MANIFEST, reader, binary=rowflow_bin), reference)


def test_parquet_file_with_several_row_groups(rows, reference, rowflow_bin, tmp_path):
    p = tmp_path / "rows.parquet"
    pq.write_table(table(rows), p, row_group_size=6000, compression="snappy")
    assert pq.ParquetFile(p).num_row_groups == 5
    check(rowflow.run(MANIFEST, input=p, binary=rowflow_bin), reference)


def test_parquet_folder(rows, reference, rowflow_bin, tmp_path):
    d = tmp_path / "table"
    d.mkdir()
    for k, part in enumerate(np.array_split(rows, 3)):
        pq.write_table(table(part), d / f"part-{k:05d}.parquet", row_group_size=4000)
    (d / "_SUCCESS").write_text("")
    (d / ".part-00000.parquet.crc").write_bytes(b"\0")
    check(rowflow.run(MANIFEST, input=str(d), binary=rowflow_bin), reference)


def test_iterable_of_chunks(rows, reference, rowflow_bin):
    def chunks():  # uneven pandas chunks, one empty
        for a, b in [(0, 1), (1, 1), (1, 9999), (9999, 20000), (20000, N)]:
            yield pd.DataFrame(rows[a:b], columns=NAMES)

    check(rowflow.run(MANIFEST, chunks(), binary=rowflow_bin), reference)
    check(rowflow.run(MANIFEST, [rows[:10], rows[10:]], binary=rowflow_bin), reference)
    check(rowflow.run(MANIFEST, (table(rows[i:i + 3000]) for i in range(0, N, 3000)), binary=rowflow_bin), reference)


def test_a_path_rowflow_reads_is_passed_through(rows, reference, rowflow_bin, tmp_path):
    p = tmp_path / "rows.f64"
    rows.tofile(p)
    m = {"version": 1, "source": {"format": "f64", "columns": D + 1, "target": "last"}, "operators": OPS}
    res = rowflow.run(m, input=p, binary=rowflow_bin, out=tmp_path / "o")
    check(res, reference)
    assert res.run["input"] == str(p)
    assert res.path == str(tmp_path / "o")


def test_manifest_file_and_seed_and_shard(rows, reference, rowflow_bin, tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("version: 1\nsource:\n  target: last\n  header: yes   # dropped: the rows are streamed raw\n"
                 "operators:\n  - { id: m, op: moments }\n  - { id: g, op: gram, params: { solve: ridge, lambda: 0.5 } }\n")
    res = rowflow.run(str(m), pd.DataFrame(rows, columns=NAMES), binary=rowflow_bin, seed=7, shard=3)
    check(res, reference)
    assert res.run["seed"] == 7 and res.run["shard"] == 3


def test_the_readme_quickstart(rowflow_bin):
    """The main README's Python quickstart on the bundled fixture: the ridge coefficients are those the data
    were generated with (as `make demo` shows for the CLI) and equal the CLI's on the same file."""
    import json

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    res = rowflow.run(os.path.join(repo, "Pipelines", "quickstart.yaml"),
                      input=os.path.join(repo, "Fixtures", "quickstart", "input.csv.zst"), binary=rowflow_bin)
    with open(os.path.join(repo, "Fixtures", "quickstart", "truth.json")) as f:
        beta = np.array(json.load(f)["beta"])
    assert res["stats"].summary["rows"] == 5000
    assert np.max(np.abs(res["ridge"]["solution"] - beta)) < 0.05
    expected = os.path.join(repo, "Fixtures", "quickstart", "expected", "ridge", "solution.npy")
    assert np.allclose(res["ridge"]["solution"], np.load(expected), rtol=1e-12)
