# Peer for csv-parse: pyarrow.csv.read_csv single-threaded (rowflow's parser is one thread too), then column means.
# Prints JSON on stdout: seconds spent loading + reducing (interpreter start and imports excluded), rows, means.
import json, sys, time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as csv

t0 = time.perf_counter()
# The generated CSV has no header line.
table = csv.read_csv(sys.argv[1], read_options=csv.ReadOptions(use_threads=False, autogenerate_column_names=True))
means = [pc.mean(col).as_py() for col in table.columns]
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "rows": table.num_rows, "means": means,
                  "version": "pyarrow " + pa.__version__}))
