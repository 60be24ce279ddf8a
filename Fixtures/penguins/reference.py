"""References for Pipelines/penguins.yaml, computed the way a pandas/scikit-learn user would, written to
reference.json beside this file (re-run: python3 Fixtures/penguins/reference.py). The rows are those with
no missing cell in a used column (pandas dropna on them), as rowflow's on_bad_row: skip keeps."""
import json, os
import numpy as np, pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, Ridge

here = os.path.dirname(os.path.abspath(__file__))
features = ["Culmen Length (mm)", "Culmen Depth (mm)", "Flipper Length (mm)", "Delta 15 N (o/oo)", "Delta 13 C (o/oo)"]
target = "Body Mass (g)"
import io, subprocess
raw = pd.read_csv(io.BytesIO(subprocess.run(["zstd", "-dc", os.path.join(here, "input.csv.zst")], check=True, capture_output=True).stdout))
d = raw.dropna(subset=features + [target])
X, y = d[features].to_numpy(float), d[target].to_numpy(float)
ols = LinearRegression().fit(X, y)
ridge = Ridge(alpha=10.0).fit(X, y)           # ‖y − Xw − b‖² + α‖w‖²: the minimiser of ½‖·‖² + ½α‖w‖²
pca = PCA(n_components=3).fit(X)
comps = pca.components_.copy()
for c in comps:                                # rowflow's sign convention: largest-magnitude entry positive
    if c[np.argmax(np.abs(c))] < 0:
        c *= -1
xc = X - X.mean(0)
# The column each dropped row was dropped for: its first missing used cell in file order (as rowflow reads it).
used = [c for c in raw.columns if c in features + [target]]
first_bad = raw.loc[raw[used].isna().any(axis=1), used].isna().idxmax(axis=1).value_counts()
ref = {
    "rows": int(len(d)),
    "skipped": int(len(raw) - len(d)),
    "missing_by_column": {c: int(raw[c].isna().sum()) for c in features + [target]},
    "bad_by_column": {c: int(n) for c, n in first_bad.items()},
    "mean": X.mean(0).tolist(),
    "variance": X.var(0).tolist(),
    "ols_coef": ols.coef_.tolist(), "ols_intercept": float(ols.intercept_),
    "ridge_coef": ridge.coef_.tolist(), "ridge_intercept": float(ridge.intercept_),
    "condition_number": float(np.linalg.cond(xc)),
    "pca_explained_variance": pca.explained_variance_.tolist(),
    "pca_components": comps.tolist(),
    "feature_names": features,
}
with open(os.path.join(here, "reference.json"), "w") as f:
    json.dump(ref, f, indent=1)
    f.write("\n")
