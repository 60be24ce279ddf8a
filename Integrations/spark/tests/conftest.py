"""One local Spark session per test run, `local[2,4]`: two cores and up to four attempts per task, so retries
really happen (plain `local[N]` never retries). The rowflow binary under test is $ROWFLOW_BIN (`make test`
passes the one it just built), else the repository's release or debug build."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(PACKAGE_ROOT))
sys.path.insert(0, PACKAGE_ROOT)
# Python workers are separate processes: they find rowflow_spark through PYTHONPATH (on a cluster: --py-files).
os.environ["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


def rowflow_binary() -> str:
    b = os.environ.get("ROWFLOW_BIN")
    if b:
        return os.path.abspath(b)
    for c in [".build/release/rowflow", ".build/debug/rowflow"]:
        p = os.path.join(REPO, c)
        if os.access(p, os.X_OK):
            return p
    raise RuntimeError("no rowflow binary: build it (make build / swift build) or set ROWFLOW_BIN")


@pytest.fixture(scope="session")
def rowflow():
    return rowflow_binary()


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    s = (SparkSession.builder.master("local[2,4]").appName("rowflow-tests")
         .config("spark.ui.enabled", "false")
         .config("spark.sql.shuffle.partitions", "4")
         .config("spark.driver.memory", "1g")
         .getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()
