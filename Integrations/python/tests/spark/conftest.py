"""One local Spark session per test run, `local[2,4]`: two cores and up to four attempts per task, so retries
really happen (plain `local[N]` never retries). The binary comes from ../conftest.py (ROWFLOW_BIN, else the
repository's build); Python workers find the package through the PYTHONPATH that file sets."""

import pytest



@pytest.fixture(scope="session")
def rowflow(rowflow_bin):
    return rowflow_bin


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
