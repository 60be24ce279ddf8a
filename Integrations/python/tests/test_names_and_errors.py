"""Column names from DataFrames, non-numeric columns, NaN handling, and every way a run can fail: each error is
a RowflowError with the binary's exit code and one-line message, never a hang."""

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import rowflow
from rowflow._run import supports_names

N = 5000


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"a": rng.standard_normal(N), "b": rng.standard_normal(N) * 3,
                       "w": rng.integers(1, 4, N).astype(np.float64), "c": rng.standard_normal(N)})
    df["price"] = 2 * df["a"] - df["c"] + 0.1 * rng.standard_normal(N)
    return df


def needs_names(binary):
    return pytest.mark.xfail(not supports_names(binary), strict=False,
                             reason="this rowflow binary does not accept source.names yet")


def same_npy(r1, r2, op):
    for n in r1[op].arrays:
        with open(os.path.join(r1[op].path, n + ".npy"), "rb") as f1, open(os.path.join(r2[op].path, n + ".npy"), "rb") as f2:
            assert f1.read() == f2.read(), f"{op}/{n}"


def ridge(source):
    return {"version": 1, "source": source,
            "operators": [{"id": "r", "op": "gram", "params": {"solve": "ridge", "lambda": 1.0}}, {"id": "m", "op": "moments"}]}


def test_names_from_dataframes_equal_column_numbers(frame, rowflow_bin, request):
    request.applymarker(needs_names(rowflow_bin))
    # Raw columns a b w c price: target price (4), weight w (2); features a b c; select [a, c] = features 0, 2.
    by_number = rowflow.run(ridge({"target": 4, "weight": 2, "select": [0, 2]}), frame.to_numpy(), binary=rowflow_bin)
    for data in (frame, pl.from_pandas(frame), pa.Table.from_pandas(frame)):
        by_name = rowflow.run(ridge({"target": "price", "weight": "w", "select": ["a", "c"]}), data, binary=rowflow_bin)
        same_npy(by_name, by_number, "r")
        same_npy(by_name, by_number, "m")
        assert by_name["r"].summary.get("feature_names") == ["a", "c"]
    # A numpy array has no names: the manifest's own source.names give them.
    own = rowflow.run(ridge({"names": ["a", "b", "w", "c", "price"], "target": "price", "weight": "w", "select": ["a", "c"]}),
                      frame.to_numpy(), binary=rowflow_bin)
    same_npy(own, by_number, "r")
    # And the numbers are the weighted ridge solution numpy computes.
    x, y, w = frame[["a", "c"]].to_numpy(), frame["price"].to_numpy(), frame["w"].to_numpy()
    want = np.linalg.solve(x.T @ (w[:, None] * x) + np.eye(2), x.T @ (w * y))
    assert np.allclose(by_number["r"]["solution"], want, rtol=1e-10)


def test_quoted_and_plain_words_in_a_manifest_file(rowflow_bin, tmp_path, request):
    """As the binary reads YAML: `last` is the keyword whether plain or quoted (a manifest written as JSON quotes
    every string); a column named "last" is reached by its index; `1e-8` is a number. The manifest file goes
    through Python (source filled in) without changing any of that."""
    request.applymarker(needs_names(rowflow_bin))
    rng = np.random.default_rng(8)
    df = pd.DataFrame({"last": rng.standard_normal(50), "x": rng.standard_normal(50), "y": rng.standard_normal(50)})
    m = tmp_path / "m.yaml"
    m.write_text('version: 1\nsource: { target: "last" }\n'
                 "operators: [{ id: r, op: gram, params: { solve: ridge, lambda: 1e-8 } }]\n")
    by_quoted = rowflow.run(m, df, binary=rowflow_bin)
    assert by_quoted["r"].summary["feature_names"] == ["last", "x"]
    m.write_text("version: 1\nsource: { target: last }\noperators: [{ id: r, op: gram, params: { solve: ridge, lambda: 1e-8 } }]\n")
    by_plain = rowflow.run(m, df, binary=rowflow_bin)
    assert by_plain["r"].summary["feature_names"] == ["last", "x"]
    m.write_text("version: 1\nsource: { target: 0 }\noperators: [{ id: r, op: gram, params: { solve: ridge, lambda: 1e-8 } }]\n")
    by_index = rowflow.run(m, df, binary=rowflow_bin)
    assert by_index["r"].summary["feature_names"] == ["x", "y"]
    x, y = df[["x", "y"]].to_numpy(), df["last"].to_numpy()
    assert np.allclose(by_index["r"]["solution"], np.linalg.solve(x.T @ x + 1e-8 * np.eye(2), x.T @ y), rtol=1e-9)


def test_a_missing_name_is_exit_65_with_did_you_mean(frame, rowflow_bin, request):
    request.applymarker(needs_names(rowflow_bin))
    with pytest.raises(rowflow.RowflowError) as e:
        rowflow.run(ridge({"target": "prices"}), frame, binary=rowflow_bin)
    assert e.value.exit_code == 65
    assert e.value.message.startswith("rowflow: error:")
    assert "prices" in e.value.message and "price" in e.value.message.split("prices", 1)[1]


def test_a_non_numeric_used_column_fails_before_streaming(frame, rowflow_bin, tmp_path):
    df = frame.assign(city=["Oslo", "Lima"] * (N // 2))
    for data in (df, pl.from_pandas(df), pa.Table.from_pandas(df)):
        with pytest.raises(rowflow.RowflowError) as e:
            rowflow.run(ridge({"target": "last"}), data, binary=rowflow_bin, out=tmp_path / "o")
        assert e.value.exit_code == 65
        assert "column 'city'" in e.value.message and "not numeric" in e.value.message
        assert not (tmp_path / "o" / "run.json").exists()  # the binary never started
    with pytest.raises(rowflow.RowflowError, match=r"column 0 \(numpy object\) is not numeric"):
        rowflow.run({"version": 1, "operators": [{"id": "m", "op": "moments"}]}, np.array([[1, "x"]], dtype=object),
                    binary=rowflow_bin)


def test_an_unused_non_numeric_column_is_left_out(frame, rowflow_bin):
    df = frame.assign(city=["Oslo", "Lima"] * (N // 2))[["a", "city", "b", "price"]]
    res = rowflow.run(ridge({"target": "last", "select": [0, 2]}), df, binary=rowflow_bin)   # features a city b
    ref = rowflow.run(ridge({"target": "last"}), frame[["a", "b", "price"]], binary=rowflow_bin)
    same_npy(res, ref, "r")
    same_npy(res, ref, "m")


def test_parquet_reads_only_the_used_columns(frame, rowflow_bin, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    t = pa.Table.from_pandas(frame[["a", "b", "price"]].assign(city=["Oslo", "Lima"] * (N // 2))[["a", "city", "b", "price"]],
                             preserve_index=False)
    pq.write_table(t, tmp_path / "t.parquet", row_group_size=1000)
    read = []
    orig = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kw):
        read.append(tuple(columns))
        return orig(self, i, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    res = rowflow.run(ridge({"target": "last", "select": [0, 2]}), input=tmp_path / "t.parquet", binary=rowflow_bin)
    assert read == [("a", "b", "price")] * 5   # 'city' is never read: sent as zeros, never parsed
    ref = rowflow.run(ridge({"target": "last"}), frame[["a", "b", "price"]], binary=rowflow_bin)
    same_npy(res, ref, "r")


def test_nan_handling_follows_the_manifest(rowflow_bin, tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1000, 3))
    bad = [10, 500, 999]
    x_nan = x.copy()
    x_nan[bad, 1] = np.nan
    df = pd.DataFrame(x_nan, columns=["p", "q", "r"])
    # Default: a NaN is a bad value, exit 65 naming the row.
    with pytest.raises(rowflow.RowflowError) as e:
        rowflow.run({"version": 1, "operators": [{"id": "m", "op": "moments"}]}, df, binary=rowflow_bin)
    assert e.value.exit_code == 65 and "row 11" in e.value.message
    # on_bad_row: skip drops exactly those rows: the moments of the other rows.
    res = rowflow.run({"version": 1, "source": {"on_bad_row": "skip"}, "operators": [{"id": "m", "op": "moments"}]},
                      df, binary=rowflow_bin)
    keep = np.delete(x, bad, axis=0)
    assert res.run["rows_skipped"] == 3 and res["m"].summary["rows"] == 997
    assert np.allclose(res["m"]["mean"], keep.mean(axis=0), rtol=1e-12, atol=1e-15)
    assert np.allclose(res["m"]["variance"], keep.var(axis=0), rtol=1e-12)
    # allow_nonfinite: the NaN flows into the sums of its column only. A pandas null (pd.NA) is a NaN too.
    df2 = df.astype({"q": "Float64"})
    df2.loc[10, "q"] = pd.NA
    res = rowflow.run({"version": 1, "source": {"allow_nonfinite": True}, "operators": [{"id": "m", "op": "moments"}]},
                      df2, binary=rowflow_bin)
    mean = res["m"]["mean"]
    assert np.isnan(mean[1]) and np.allclose(mean[[0, 2]], x[:, [0, 2]].mean(axis=0), rtol=1e-12)


def test_a_bad_manifest_is_exit_64(rowflow_bin, tmp_path):
    with pytest.raises(rowflow.RowflowError) as e:
        rowflow.run({"version": 1, "operators": [{"id": "g", "op": "gramm"}]}, np.ones((3, 2)), binary=rowflow_bin)
    assert e.value.exit_code == 64
    assert e.value.message.startswith("rowflow: error:") and "gram" in e.value.message
    m = tmp_path / "m.yaml"
    m.write_text("version: 1\nsource: { format: csv }\noperators: [{ id: r, op: gram, params: { solve: ridge } }]\n")
    with pytest.raises(rowflow.RowflowError) as e:  # a ridge solve without a target, manifest given as a path
        rowflow.run(m, np.ones((3, 2)), binary=rowflow_bin)
    assert e.value.exit_code == 64
    with pytest.raises(rowflow.RowflowError) as e:
        rowflow.run(tmp_path / "missing.yaml", np.ones((3, 2)), binary=rowflow_bin)
    assert e.value.exit_code == 66


def test_input_errors(rowflow_bin, tmp_path):
    m = {"version": 1, "source": {"format": "csv"}, "operators": [{"id": "m", "op": "moments"}]}
    with pytest.raises(rowflow.RowflowError) as e:
        rowflow.run(m, input=tmp_path / "nope.csv", binary=rowflow_bin)
    assert e.value.exit_code == 66
    (tmp_path / "bad.csv").write_text("1,2\n3,x\n")
    with pytest.raises(rowflow.RowflowError) as e:
        rowflow.run(m, input=tmp_path / "bad.csv", binary=rowflow_bin)
    assert e.value.exit_code == 65 and "bad.csv:2:3" in e.value.message
    import json
    with open(os.path.join(e.value.path, "run.json")) as f:  # out=None: the temporary directory outlives the error
        assert json.load(f)["status"] == "failed"
    with pytest.raises(TypeError):
        rowflow.run(m, binary=rowflow_bin)
    with pytest.raises(TypeError):
        rowflow.run(m, {"a": [1.0]}, binary=rowflow_bin)
    with pytest.raises(rowflow.RowflowError) as e:
        rowflow.run(m, np.ones((3, 2)), binary=str(tmp_path / "no-such-rowflow"))
    assert e.value.exit_code == 127


def test_a_chunk_with_other_columns_stops_the_run(rowflow_bin, tmp_path):
    def chunks():
        yield pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
        yield pd.DataFrame({"a": [1.0], "c": [3.0]})

    with pytest.raises(rowflow.RowflowError, match="chunk 2 has columns") as e:
        rowflow.run({"version": 1, "operators": [{"id": "m", "op": "moments"}]}, chunks(), binary=rowflow_bin,
                    out=tmp_path / "o")
    # The binary was stopped, not left to finish on the first chunk as if it were the whole input.
    import json
    with open(tmp_path / "o" / "run.json") as f:
        assert json.load(f)["status"] != "complete"


def test_an_exception_in_the_users_iterable_is_raised_and_the_run_stopped(rowflow_bin, tmp_path):
    def chunks():
        yield np.ones((100, 2))
        raise ValueError("the database went away")

    with pytest.raises(ValueError, match="database went away"):
        rowflow.run({"version": 1, "operators": [{"id": "m", "op": "moments"}]}, chunks(), binary=rowflow_bin,
                    out=tmp_path / "o")
    import json
    with open(tmp_path / "o" / "run.json") as f:
        assert json.load(f)["status"] != "complete"


def _children(pid):
    out = []
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def test_a_killed_binary_is_an_error_not_a_hang(rowflow_bin):
    """The real binary killed mid-stream (SIGKILL) while the writer thread is pushing rows: the writer meets a
    broken pipe and stops, run() raises RowflowError with the signal."""
    killed = []

    def endless():
        k = 0
        while True:
            k += 1
            if k == 5 and not killed:
                kids = [c for c in _children(os.getpid())
                        if os.path.realpath(f"/proc/{c}/exe") == os.path.realpath(rowflow_bin)]
                assert len(kids) == 1
                os.kill(kids[0], signal.SIGKILL)
                killed.append(kids[0])
            yield np.ones((10_000, 4))

    t = time.monotonic()
    with pytest.raises(rowflow.RowflowError) as e:
        rowflow.run({"version": 1, "operators": [{"id": "m", "op": "moments"}]}, endless(), binary=rowflow_bin)
    assert killed and e.value.exit_code == -signal.SIGKILL and "SIGKILL" in e.value.message
    assert time.monotonic() - t < 30


def test_a_binary_that_dies_before_reading(tmp_path):
    fake = tmp_path / "rowflow"
    fake.write_text("#!/bin/sh\necho 'rowflow: error: simulated crash' >&2\nkill -9 $$\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(rowflow.RowflowError) as e:
        rowflow.run({"version": 1, "operators": [{"id": "m", "op": "moments"}]}, np.ones((10**6, 8)), binary=str(fake))
    assert e.value.exit_code == -9 and "simulated crash" in e.value.stderr


def test_ctrl_c_interrupts_the_run(rowflow_bin, tmp_path):
    """SIGINT to the Python process (what Jupyter's interrupt sends) while rows stream: the child gets SIGINT,
    run.json says interrupted, Python raises KeyboardInterrupt, and no rowflow process is left behind."""
    script = textwrap.dedent(f"""
        import sys, time, numpy as np, rowflow
        def slow():
            while True:
                time.sleep(0.01)
                yield np.ones((1000, 3))
        try:
            rowflow.run({{"version": 1, "operators": [{{"id": "m", "op": "moments"}}]}}, slow(),
                        out={str(tmp_path / 'o')!r}, binary={rowflow_bin!r})
        except KeyboardInterrupt as e:
            print("KeyboardInterrupt", e)
            sys.exit(3)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_json = tmp_path / "o" / "run.json"
    deadline = time.monotonic() + 20
    while not run_json.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    kids = _children(p.pid)
    assert len(kids) == 1
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 3, err
    assert "KeyboardInterrupt" in out and "interrupted" in out
    import json
    with open(run_json) as f:
        assert json.load(f)["status"] == "interrupted"
    assert not os.path.exists(f"/proc/{kids[0]}")
