"""References for Pipelines/longley.yaml, written to reference.json (re-run: python3 Fixtures/longley/reference.py).
The regression coefficients are NIST StRD's certified values for the Longley data (itl.nist.gov, Statistical
Reference Datasets, linear regression, "Longley"); the means and variances are numpy's."""
import json, os
import numpy as np, pandas as pd

here = os.path.dirname(os.path.abspath(__file__))
features = ["GNPDEFL", "GNP", "UNEMP", "ARMED", "POP", "YEAR"]
d = pd.read_csv(os.path.join(here, "input.csv"))
X = d[features].to_numpy(float)
ref = {
    "rows": int(len(d)),
    # NIST certified values (intercept, then the six coefficients in the order of `features`).
    "certified_intercept": -3482258.63459582,
    "certified_coef": [15.0618722713733, -0.358191792925910e-01, -2.02022980381683, -1.03322686717359,
                       -0.511041056535807e-01, 1829.15146461355],
    "certified_residual_ss": 836424.055505915,
    "condition_number": float(np.linalg.cond(X - X.mean(0))),
    "mean": X.mean(0).tolist(),
    "variance": X.var(0).tolist(),
    "feature_names": features,
}
with open(os.path.join(here, "reference.json"), "w") as f:
    json.dump(ref, f, indent=1)
    f.write("\n")
