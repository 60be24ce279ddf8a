"""Writes the CSV excerpts and the reference solutions that Tests/OperatorsTests/HalpernReferenceTests.swift
replays (Swift tests cannot import scikit-learn, so the references are recorded here).

usage: python3 make_references.py   (numpy, scipy, scikit-learn; writes into this directory)

Data (both shipped inside scikit-learn's package, so this runs offline; features left unscaled on purpose):
- diabetes.csv: the 442 × 10 raw diabetes data (load_diabetes(scaled=False)) of Efron, Hastie, Johnstone &
  Tibshirani, "Least Angle Regression", Annals of Statistics 2004; last column the disease progression.
- wine.csv: the 178 × 13 wine recognition data (M. Forina et al., PARVUS; UCI Machine Learning Repository,
  CC BY 4.0, as scikit-learn's load_wine ships it); last column 1 for cultivar 0, 0 otherwise (the label
  of the logistic cases; ridge and lasso regress it as a linear probability model).
- game.csv: a seeded random 30 × 40 payoff matrix (no target), for matrix-game against scipy's HiGHS.
Licences: scikit-learn (BSD-3-Clause) ships both data files; its descr/diabetes.rst names the source (Efron et
al., via https://www4.stat.ncsu.edu/~boos/var.select/diabetes.html) but no separate licence, and
descr/wine_data.rst names the UCI repository, whose datasets are under CC BY 4.0 (attribution above).

Objectives are rowflow's (sums over rows): least squares ½‖Ax + b − y‖², ridge + ½λ‖x‖², lasso + λ‖x‖₁,
logistic Σ log(1 + exp(−y(aᵀx + b))) + ½λ‖x‖² (y ∈ {−1, 1}), b the unpenalised intercept when fitted.
scikit-learn's are scaled versions with the same minimiser: Ridge(alpha=λ) minimises 2× ours, Lasso(alpha=λ/n)
minimises ours / n, LogisticRegression(C=1/λ) minimises C × ours. Each reference records its own optimality
measure (the norm of the gradient, or lasso's subgradient violation, relative to the gradient at 0) so the
test's tolerance can be checked against how exact the reference is.
"""
import json, os, time

import numpy as np
import scipy
import sklearn
from scipy.optimize import linprog
from sklearn.datasets import load_diabetes, load_wine
from sklearn.linear_model import Lasso, LinearRegression, LogisticRegression, Ridge

HERE = os.path.dirname(os.path.abspath(__file__))


def save_csv(name, x, y=None):
    data = x if y is None else np.hstack([x, y[:, None]])
    np.savetxt(os.path.join(HERE, name), data, delimiter=",", fmt="%.12g")
    return np.loadtxt(os.path.join(HERE, name), delimiter=",")  # what the test reads back


def objective(problem, lam, x, b, a, y):
    z = a @ x + b
    if problem == "logistic":
        s = np.where(y == 0, -1.0, y)
        loss = np.logaddexp(0, -s * z).sum()
    else:
        loss = 0.5 * ((z - y) ** 2).sum()
    if problem in ("ridge", "logistic"):
        loss += 0.5 * lam * x @ x
    if problem == "lasso":
        loss += lam * np.abs(x).sum()
    return float(loss)


def gradient(problem, lam, x, b, a, y):
    z = a @ x + b
    if problem == "logistic":
        s = np.where(y == 0, -1.0, y)
        r = -s / (1 + np.exp(s * z))
    else:
        r = z - y
    g = a.T @ r
    if problem in ("ridge", "logistic"):
        g = g + lam * x
    return g, r.sum()


def optimality(problem, lam, x, b, a, y, intercept):
    """‖residual of the optimality condition‖ / ‖gradient at 0‖ (lasso: distance of −∇ to λ∂‖x‖₁)."""
    g, gb = gradient(problem, lam, x, b, a, y)
    g0, gb0 = gradient(problem, lam, np.zeros_like(x), 0.0, a, y)
    if problem == "lasso":
        v = np.where(x != 0, g + lam * np.sign(x), np.maximum(np.abs(g) - lam, 0))
        g0 = np.maximum(np.abs(g0) - lam, 0)
    else:
        v = g
    v = np.append(v, gb) if intercept else v
    g0 = np.append(g0, gb0) if intercept else g0
    return float(np.linalg.norm(v) / np.linalg.norm(g0))


def fit(problem, lam, a, y, intercept):
    n = a.shape[0]
    if problem == "least-squares":
        m = LinearRegression(fit_intercept=intercept)
    elif problem == "ridge":
        m = Ridge(alpha=lam, fit_intercept=intercept, solver="cholesky")
    elif problem == "lasso":
        m = Lasso(alpha=lam / n, fit_intercept=intercept, tol=1e-15, max_iter=10_000_000, selection="cyclic")
    else:
        m = LogisticRegression(C=1 / lam, fit_intercept=intercept, solver="newton-cholesky", tol=1e-14, max_iter=10_000)
    m.fit(a, y)
    return np.ravel(m.coef_), float(np.ravel(m.intercept_)[0]) if intercept else 0.0


def main():
    diab = load_diabetes(scaled=False)
    da = save_csv("diabetes.csv", diab.data, diab.target.astype(float))
    wine = load_wine()
    wa = save_csv("wine.csv", wine.data, (wine.target == 0).astype(float))
    sets = {"diabetes": (da[:, :-1], da[:, -1]), "wine": (wa[:, :-1], wa[:, -1])}
    cases = [
        ("diabetes", "least-squares", 0.0, True),
        ("diabetes", "ridge", 100.0, False),
        ("diabetes", "ridge", 100.0, True),
        ("diabetes", "lasso", 10.0, False),
        ("diabetes", "lasso", 2000.0, True),
        ("wine", "ridge", 1.0, True),
        ("wine", "lasso", 0.5, True),
        ("wine", "logistic", 1.0, True),
        ("wine", "logistic", 10.0, False),
    ]
    out = []
    for name, problem, lam, intercept in cases:
        a, y = sets[name]
        if problem == "logistic":
            y = np.where(y == 0, -1.0, y)
        x, b = fit(problem, lam, a, y, intercept)
        out.append({"data": name, "problem": problem, "lambda": lam, "intercept": intercept,
                    "coefficients": x.tolist(), "intercept_value": b,
                    "objective": objective(problem, lam, x, b, a, y),
                    "reference_optimality": optimality(problem, lam, x, b, a, y, intercept),
                    "nonzeros": int(np.count_nonzero(x))})
        print(name, problem, lam, intercept, "objective", out[-1]["objective"], "optimality", out[-1]["reference_optimality"],
              "nonzeros", out[-1]["nonzeros"])

    # A seeded 30 × 40 game: value and strategies from HiGHS on the textbook LP (min v s.t. Bᵀx ≤ v·1... for the
    # column player's max, as rowflow's min_x max_y xᵀBy).
    rng = np.random.default_rng(2026)
    B = save_csv("game.csv", rng.standard_normal((30, 40)))
    m, k = B.shape
    # min_x max_y xᵀBy = min v s.t. Bᵀx ≤ v, 1ᵀx = 1, x ≥ 0.
    c = np.r_[np.zeros(m), 1.0]
    t0 = time.perf_counter()
    lp = linprog(c, A_ub=np.hstack([B.T, -np.ones((k, 1))]), b_ub=np.zeros(k),
                 A_eq=np.r_[np.ones(m), 0.0][None, :], b_eq=[1.0], bounds=[(0, None)] * m + [(None, None)], method="highs")
    seconds = time.perf_counter() - t0
    x = lp.x[:m]
    games = [{"data": "game", "value": float(lp.fun), "x": x.tolist(), "highs_seconds": seconds,
              "highs_gap": float((B.T @ x).max() - lp.fun)}]
    print("game value", lp.fun, "HiGHS", seconds, "s")
    with open(os.path.join(HERE, "references.json"), "w") as fh:
        json.dump({"generator": "make_references.py", "numpy": np.__version__, "scipy": scipy.__version__,
                   "scikit_learn": sklearn.__version__, "regression": out, "games": games}, fh, indent=1)


if __name__ == "__main__":
    main()
