# Peers and scorers for the operator cases (svd, top-eig, coreset, solver).
# usage: linalg_peers.py MODE ARGS...   Every mode prints one JSON line on stdout: `seconds` (its own timing of
# the work, interpreter start and imports excluded), `rows`, `version`, and the mode's accuracy figures.
# Inputs are raw little-endian float32 rows, zstd-compressed, as `rowflow gen ... --format f32 --zstd` writes.
# Accuracy is measured against a float64 reference (`ref-*` modes, cached .npz, computed once and untimed).
import json, sys, time

import numpy as np
import zstandard

CHUNK_ROWS = 8192


def stream(path, cols):
    """Yields float32 blocks of up to CHUNK_ROWS rows × cols, stream-decompressing (never the whole file)."""
    row_bytes = 4 * cols
    want = CHUNK_ROWS * row_bytes
    with open(path, "rb") as fh:
        reader = zstandard.ZstdDecompressor().stream_reader(fh, read_size=1 << 20)
        buf = bytearray()
        while True:
            data = reader.read(want - len(buf))
            if not data:
                break
            buf += data
            if len(buf) == want:
                yield np.frombuffer(bytes(buf), dtype="<f4").reshape(-1, cols)
                buf = bytearray()
        if buf:
            assert len(buf) % row_bytes == 0, "truncated row"
            yield np.frombuffer(bytes(buf), dtype="<f4").reshape(-1, cols)


def load(path, cols):
    """The whole file in memory as float32 (n × cols)."""
    with open(path, "rb") as fh:
        raw = zstandard.ZstdDecompressor().stream_reader(fh).read()
    return np.frombuffer(raw, dtype="<f4").reshape(-1, cols)


def out(d):
    d.setdefault("version", versions())
    print(json.dumps(d))


def versions():
    v = "numpy " + np.__version__ + ", zstandard " + zstandard.__version__
    if "sklearn" in sys.modules:
        v += ", scikit-learn " + sys.modules["sklearn"].__version__
    return v


def exact_gram(path, cols):
    g = np.zeros((cols, cols))
    s = np.zeros(cols)
    n = 0
    for b in stream(path, cols):
        b64 = b.astype(np.float64)
        g += b64.T @ b64
        s += b64.sum(axis=0)
        n += b.shape[0]
    return g, s, n


def eig_desc(m):
    w, v = np.linalg.eigh(m)
    return w[::-1], v[:, ::-1]


# --- svd / top-eig -------------------------------------------------------------------------------------------

def svd_errors(ref, sv, vt, centered):
    """sv: k singular values; vt: k × d right vectors. Max relative error of σ and the largest principal angle
    (degrees) between span(vt) and the reference's top-k subspace."""
    key = "c" if centered else "u"
    w, v = ref[key + "_evals"], ref[key + "_evecs"]
    k = len(sv)
    sigma = np.sqrt(np.maximum(w[:k], 0))
    rel = float(np.max(np.abs(np.sort(sv)[::-1] - sigma) / sigma))
    q, _ = np.linalg.qr(np.asarray(vt, dtype=np.float64).T)
    cos = np.linalg.svd(v[:, :k].T @ q, compute_uv=False)
    angle = float(np.degrees(np.arccos(np.clip(cos.min(), -1, 1))))
    return {"sigma_rel_err": rel, "max_angle_deg": angle, "centered_ref": centered}


def mode_ref_svd(path, cols, ref_out):
    t0 = time.perf_counter()
    g, s, n = exact_gram(path, cols)
    uw, uv = eig_desc(g)
    cw, cv = eig_desc(g - np.outer(s, s) / n)
    np.savez(ref_out, u_evals=uw, u_evecs=uv, c_evals=cw, c_evecs=cv, n=n)
    out({"seconds": time.perf_counter() - t0, "rows": n})


def mode_gram_eigh(path, cols, ref, truth):
    """top-eig peer: exact float64 Gram over the zstandard stream, then numpy eigh; v = top eigenvector."""
    t0 = time.perf_counter()
    g, _, n = exact_gram(path, cols)
    _, v = eig_desc(g)
    secs = time.perf_counter() - t0
    out({"seconds": secs, "rows": n, **vector_scores(v[:, 0], ref, truth)})


def mode_oja(path, cols, eta_scale, ref, truth):
    """top-eig peer: mini-batch Oja in numpy over the zstandard stream, v += η·Bᵀ(Bv) per 8192-row block with
    η = eta_scale/‖B‖_F², renormalised. Hand-tuned: on the 2·10⁵ × 256 spectrum file (gap 4) eta_scale 0.1, 0.3, 1
    and 3 gave ⟨v, v₁⟩² = 0.017, 0.477, 0.99994 and 0.99985, so 1 is used."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    v = rng.standard_normal(cols)
    v /= np.linalg.norm(v)
    n = 0
    for b in stream(path, cols):
        b64 = b.astype(np.float64)
        v = v + (eta_scale / float((b64 * b64).sum())) * (b64.T @ (b64 @ v))
        v /= np.linalg.norm(v)
        n += b.shape[0]
    secs = time.perf_counter() - t0
    out({"seconds": secs, "rows": n, **vector_scores(v, ref, truth)})


def vector_scores(v, ref, truth):
    v = np.asarray(v, dtype=np.float64).ravel()
    v = v / np.linalg.norm(v)
    r = np.load(ref)
    d = {"align_exact": float((v @ r["u_evecs"][:, 0]) ** 2)}
    t = json.load(open(truth))
    v1 = np.asarray(t["v1"], dtype=np.float64)
    d["align_truth"] = float((v @ (v1 / np.linalg.norm(v1))) ** 2)
    return d


def mode_ipca(path, cols, k, ref):
    from sklearn.decomposition import IncrementalPCA
    t0 = time.perf_counter()
    ipca = IncrementalPCA(n_components=k, batch_size=CHUNK_ROWS)
    n = 0
    for b in stream(path, cols):
        ipca.partial_fit(b)
        n += b.shape[0]
    secs = time.perf_counter() - t0
    # IncrementalPCA centres: compare with the centred reference.
    out({"seconds": secs, "rows": n, **svd_errors(np.load(ref), ipca.singular_values_, ipca.components_, True)})


def mode_rsvd(path, cols, k, ref):
    from sklearn.utils.extmath import randomized_svd
    t0 = time.perf_counter()
    a = load(path, cols)
    _, s, vt = randomized_svd(a, k, random_state=0)
    secs = time.perf_counter() - t0
    out({"seconds": secs, "rows": int(a.shape[0]), **svd_errors(np.load(ref), s, vt, False)})


def mode_score_svd(ref, run_dir, centered):
    sv = np.load(run_dir + "/singular_values.npy")
    vt = np.load(run_dir + "/right_vectors.npy")
    out({**svd_errors(np.load(ref), sv, vt, centered == "true")})


def mode_score_vec(vec_path, ref, truth):
    out(vector_scores(np.load(vec_path), ref, truth))


# --- least squares: coreset and solver -----------------------------------------------------------------------

def split(a):
    return a[:, :-1].astype(np.float64), a[:, -1].astype(np.float64)


def mode_ref_ls(path, cols, ref_out):
    t0 = time.perf_counter()
    x, y = split(load(path, cols))
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    r = x @ beta - y
    np.savez(ref_out, beta=beta, objective=float(r @ r))
    out({"seconds": time.perf_counter() - t0, "rows": int(x.shape[0])})


def ls_scores(beta, ref, x=None, y=None):
    r = np.load(ref)
    b = np.asarray(beta, dtype=np.float64).ravel()
    d = {"rel_err": float(np.linalg.norm(b - r["beta"]) / np.linalg.norm(r["beta"]))}
    if x is not None:
        res = x @ b - y
        d["objective_ratio"] = float(res @ res / r["objective"])
    return d


def mode_coreset_exact(path, cols, eps, ref):
    """Exact leverage-score sampling in memory: QR of [X | y], q_i = min(1, c·l_i) with rowflow's constant
    c = 2(1 + ε/3)·ln(2d/ρ)/ε² (ρ = 0.1), keep row i with probability q_i and weight 1/q_i, weighted lstsq."""
    t0 = time.perf_counter()
    a = load(path, cols).astype(np.float64)
    q, _ = np.linalg.qr(a)
    lev = np.einsum("ij,ij->i", q, q)
    d = a.shape[1]
    c = 2 * (1 + eps / 3) * np.log(2 * d / 0.1) / eps ** 2
    p = np.minimum(1.0, c * lev)
    keep = np.random.default_rng(0).random(a.shape[0]) < p
    w = np.sqrt(1.0 / p[keep])
    xs, ys = split(a[keep])
    beta, *_ = np.linalg.lstsq(xs * w[:, None], ys * w, rcond=None)
    secs = time.perf_counter() - t0
    x, y = split(a)
    out({"seconds": secs, "rows": int(a.shape[0]), "coreset_size": int(keep.sum()), **ls_scores(beta, ref, x, y)})


def mode_lstsq(path, cols, ref):
    t0 = time.perf_counter()
    x, y = split(load(path, cols))
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    secs = time.perf_counter() - t0
    out({"seconds": secs, "rows": int(x.shape[0]), **ls_scores(beta, ref)})


def mode_sk(kind, path, cols, alpha, ref):
    from sklearn.linear_model import Ridge, SGDRegressor
    t0 = time.perf_counter()
    x, y = split(load(path, cols))
    if kind == "ridge":
        m = Ridge(alpha=alpha, fit_intercept=False).fit(x, y)
    else:
        m = SGDRegressor(alpha=alpha, fit_intercept=False, tol=1e-6, max_iter=1000, random_state=0).fit(x, y)
    secs = time.perf_counter() - t0
    d = {"seconds": secs, "rows": int(x.shape[0]), **ls_scores(m.coef_, ref)}
    if kind == "sgd":
        d["epochs"] = int(m.n_iter_)
    out(d)


def mode_score_ls(sol_path, ref, data=None, cols=None):
    beta = np.load(sol_path)
    if data:
        x, y = split(load(data, int(cols)))
        out(ls_scores(beta, ref, x, y))
    else:
        out(ls_scores(beta, ref))


if __name__ == "__main__":
    m, a = sys.argv[1], sys.argv[2:]
    if m == "ref-svd": mode_ref_svd(a[0], int(a[1]), a[2])
    elif m == "gram-eigh": mode_gram_eigh(a[0], int(a[1]), a[2], a[3])
    elif m == "oja": mode_oja(a[0], int(a[1]), float(a[2]), a[3], a[4])
    elif m == "ipca": mode_ipca(a[0], int(a[1]), int(a[2]), a[3])
    elif m == "rsvd": mode_rsvd(a[0], int(a[1]), int(a[2]), a[3])
    elif m == "score-svd": mode_score_svd(a[0], a[1], a[2])
    elif m == "score-vec": mode_score_vec(a[0], a[1], a[2])
    elif m == "ref-ls": mode_ref_ls(a[0], int(a[1]), a[2])
    elif m == "coreset-exact": mode_coreset_exact(a[0], int(a[1]), float(a[2]), a[3])
    elif m == "lstsq": mode_lstsq(a[0], int(a[1]), a[2])
    elif m in ("ridge", "sgd"): mode_sk(m, a[0], int(a[1]), float(a[2]), a[3])
    elif m == "score-ls": mode_score_ls(*a)
    else: sys.exit("unknown mode " + m)
