"""Entry script for spark-submit (which wants a file, not `-m`): `spark-submit … Integrations/python/submit.py
<manifest> --text … --out …`, with the package shipped by `--py-files rowflow.zip`."""

import sys

from rowflow.spark.cli import main

sys.exit(main())
