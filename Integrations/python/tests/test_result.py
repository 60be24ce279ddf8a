"""Result and OperatorResult: run.json, warnings, summaries, arrays (memory-mapped when large), load, report,
the temporary output directory's lifetime."""

import gc
import json
import os
import stat

import numpy as np
import pytest

import rowflow
from rowflow._result import MMAP_BYTES


@pytest.fixture(scope="module")
def wide(rowflow_bin, tmp_path_factory):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((600, 400))
    out = tmp_path_factory.mktemp("wide") / "run"
    res = rowflow.run({"version": 1, "operators": [{"id": "g", "op": "gram"}, {"id": "m", "op": "moments"}]}, x,
                      out=out, binary=rowflow_bin)
    return x, res


def test_arrays_summaries_and_run(wide):
    x, res = wide
    assert res.run["status"] == "complete" and res.run["rows_read"] == 600
    assert res.ids == ["g", "m"] and list(res) == ["g", "m"] and len(res) == 2
    assert res["g"].arrays == ["gram"] and res["m"].arrays == ["mean", "variance"]
    assert res["g"].summary["rows"] == 600 and res["g"].summary["op"] == "gram"
    g = res["g"]["gram"]
    assert g.nbytes > MMAP_BYTES and isinstance(g, np.memmap) and not g.flags.writeable   # 1.28 MB: mapped
    assert np.allclose(g, x.T @ x, rtol=1e-12, atol=1e-9)
    mean = res["m"]["mean"]
    assert not isinstance(mean, np.memmap) and np.allclose(mean, x.mean(axis=0), rtol=1e-12, atol=1e-14)
    assert res.warnings == []
    with pytest.raises(KeyError, match="did you mean 'g'"):
        res["gg"]
    with pytest.raises(KeyError, match="did you mean 'gram'"):
        res["g"]["grams"]


def test_repr_names_status_operators_and_shapes(wide):
    _, res = wide
    text = repr(res)
    assert "complete" in text and res.path in text and "g (gram): gram" in text and "m (moments): mean, variance" in text
    assert repr(res["g"]) == "<rowflow operator g (gram), rows=600: gram[400, 400]>"


def test_load_and_report(wide, rowflow_bin, monkeypatch):
    _, res = wide
    monkeypatch.setenv("ROWFLOW_BIN", rowflow_bin)
    again = rowflow.load(res.path)
    assert again.run == res.run
    assert np.array_equal(again["g"]["gram"], res["g"]["gram"])
    assert "res.report()" in again._repr_html_()
    page = again.report()
    assert page == os.path.join(res.path, "report.html") and os.path.getsize(page) > 1000
    with open(page, encoding="utf-8") as f:
        assert "<svg" in f.read()
    assert f'href="file://{page}"' in again._repr_html_()
    with pytest.raises(rowflow.RowflowError) as e:
        rowflow.load(os.path.dirname(res.path))
    assert e.value.exit_code == 66


def test_a_temporary_output_lives_as_long_as_the_result(rowflow_bin):
    res = rowflow.run({"version": 1, "operators": [{"id": "m", "op": "moments"}]}, np.ones((5, 2)), binary=rowflow_bin)
    path = res.path
    assert os.path.exists(os.path.join(path, "m", "mean.npy"))
    del res
    gc.collect()
    assert not os.path.exists(path)
    # A chained expression: the operator keeps the Result (and its directory) alive until its array is read.
    m = {"version": 1, "operators": [{"id": "m", "op": "moments"}]}
    assert rowflow.run(m, np.arange(6.0).reshape(3, 2), binary=rowflow_bin)["m"]["mean"].tolist() == [2.0, 3.0]
    op = rowflow.run(m, np.arange(6.0).reshape(3, 2), binary=rowflow_bin)["m"]
    gc.collect()
    assert op.arrays == ["mean", "variance"] and op["variance"].tolist() == [8 / 3, 8 / 3]


def test_warnings_from_run_json_are_python_warnings(tmp_path):
    """A stand-in binary that writes a run directory whose run.json lists a warning (no operator of the current
    binary emits one on small data): run() returns it in res.warnings and issues a RowflowWarning."""
    fake = tmp_path / "fake-rowflow"
    fake.write_text("""#!/bin/sh
cat > /dev/null
while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
mkdir -p "$out/h"
echo '{"op": "halpern-solver", "rows": 3}' > "$out/h/summary.json"
echo '{"status": "complete", "operators": ["h"], "warnings": [{"id": "h", "what": "stopped before its tolerance", "hint": "raise max_oracle_calls"}]}' > "$out/run.json"
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with pytest.warns(rowflow.RowflowWarning, match="h: stopped before its tolerance .hint: raise max_oracle_calls"):
        res = rowflow.run({"version": 1, "operators": [{"id": "h", "op": "halpern-solver"}]}, np.ones((3, 2)),
                          binary=str(fake))
    assert res.warnings == [{"id": "h", "what": "stopped before its tolerance", "hint": "raise max_oracle_calls"}]
    assert "warning: h: stopped before its tolerance" in repr(res)


def test_the_manifest_run_is_kept_beside_the_outputs(rowflow_bin, tmp_path):
    import pandas as pd

    df = pd.DataFrame({"a": [1.0, 2.0, 4.0], "y": [1.0, 0.0, 1.0]})
    res = rowflow.run({"version": 1, "source": {"target": "last"}, "operators": [{"id": "m", "op": "moments"}]}, df,
                      out=tmp_path / "o", binary=rowflow_bin)
    import yaml

    with open(tmp_path / "o" / "manifest.yaml") as f:
        m = yaml.safe_load(f)
    assert m["source"]["format"] == "f64" and m["source"]["columns"] == 2 and m["source"]["target"] == "last"
    assert res.run["manifest"] == str(tmp_path / "o" / "manifest.yaml")
