"""Entry script for spark-submit (which wants a file, not `-m`): `spark-submit … Integrations/spark/submit.py
<manifest> --text … --out …`, with the package shipped by `--py-files rowflow_spark.zip`."""

import sys

from rowflow_spark.cli import main

sys.exit(main())
