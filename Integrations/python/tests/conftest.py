"""Shared by the package's tests: the package is imported from this checkout (no install needed), and the
rowflow binary under test is $ROWFLOW_BIN (`make test` passes the debug binary it just built), else the
repository's release or debug build."""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(PACKAGE_ROOT))
sys.path.insert(0, PACKAGE_ROOT)
# Child Python processes (Spark workers, the memory test's subprocess) find the package through PYTHONPATH.
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
def rowflow_bin() -> str:
    return rowflow_binary()
