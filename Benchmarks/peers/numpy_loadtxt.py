# Peer for csv-parse: numpy.loadtxt on the whole file, then column means (the work `rowflow moments` does).
# Prints JSON on stdout: seconds spent loading + reducing (interpreter start and imports excluded), rows, means.
import json, sys, time

import numpy as np

t0 = time.perf_counter()
a = np.loadtxt(sys.argv[1], delimiter=",", dtype=np.float64)
means = a.mean(axis=0)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "rows": int(a.shape[0]), "means": means.tolist(),
                  "version": "numpy " + np.__version__}))
