"""rowflow from Python: run a pipeline manifest on numpy arrays, pandas/polars DataFrames, Arrow tables or
Parquet files, and read its outputs back as numpy arrays.

    >>> import rowflow
    >>> res = rowflow.run("Pipelines/quickstart.yaml", df)        # or input="data/*.parquet folder"
    >>> res["ridge"]["solution"]

The numerics run in the `rowflow` binary (found from `binary=`, $ROWFLOW_BIN, then PATH); rows are streamed to
its stdin in bounded memory. `rowflow.spark` runs pipelines on Apache Spark partitions.
"""

from ._errors import RowflowError, RowflowWarning
from ._result import OperatorResult, Result, load
from ._run import find_binary, run

__version__ = "0.1.0"
__all__ = ["run", "load", "Result", "OperatorResult", "RowflowError", "RowflowWarning", "find_binary"]
