"""DPPy peer of the dpp case: projection DPP sampling with DPPy's Gram-Schmidt chain rule.

Modes (one JSON line on stdout):
  sample FILE M SAMPLES SEED   load FILE (.npy, N x (M+1): M features then the target), orthonormal basis U of
                               the M feature columns by numpy QR, FiniteDPP('correlation', projection=True,
                               K_eig_dec=(ones, U)) -- the kernel K = U U^T = Phi (Phi^T Phi)^-1 Phi^T, the one
                               rowflow's dpp-sample draws from -- then SAMPLES x sample_exact(mode='GS').
                               Times load, set-up (QR + FiniteDPP, which checks U^T U = I) and each sample
                               separately.
  law FILE M SAMPLES SEED ROWFLOW_RUN_DIR ID
                               first-order agreement in law on a small case: inclusion counts of SAMPLES DPPy
                               samples and of rowflow's `repeated` sample (SAMPLES pooled projection samples,
                               ROWFLOW_RUN_DIR/ID/indices.npy) against K_ii, and rowflow's kernel diagonal
                               (l_i = 1/(s*w_i) from its weights) against ||U_i||^2.
"""
import json
import resource
import sys
import time

import numpy as np


def versions():
    import dppy
    return f"dppy {getattr(dppy, '__version__', '0.3.2')}, numpy {np.__version__}"


def basis(x, m):
    phi = np.ascontiguousarray(x[:, :m])
    u, _ = np.linalg.qr(phi)  # reduced: N x m, orthonormal columns spanning Phi's
    return u


def sample(path, m, samples, seed):
    from dppy.finite_dpps import FiniteDPP
    t0 = time.perf_counter()
    x = np.load(path)
    t1 = time.perf_counter()
    u = basis(x, m)
    dpp = FiniteDPP('correlation', projection=True, K_eig_dec=(np.ones(m), u))
    t2 = time.perf_counter()
    rng = np.random.RandomState(seed)
    per, cpu = [], []
    sizes = set()
    for _ in range(samples):
        t, c = time.perf_counter(), time.process_time()
        s = dpp.sample_exact(mode='GS', random_state=rng)
        per.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)  # all threads' CPU time: less sensitive to other processes
        sizes.add(len(set(s)))
    end = time.perf_counter()
    print(json.dumps({
        "seconds": end - t0, "load_seconds": t1 - t0, "setup_seconds": t2 - t1,
        "sample_seconds": float(np.median(per)), "sample_seconds_all": per,
        "sample_cpu_seconds": float(np.median(cpu)), "samples": samples,
        "sample_sizes": sorted(sizes), "rows": int(x.shape[0]), "version": versions(),
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }))


def law(path, m, samples, seed, run_dir, op_id):
    from dppy.finite_dpps import FiniteDPP
    x = np.load(path)
    n = x.shape[0]
    u = basis(x, m)
    k = np.einsum('ij,ij->i', u, u)  # K_ii
    dpp = FiniteDPP('correlation', projection=True, K_eig_dec=(np.ones(m), u))
    rng = np.random.RandomState(seed)
    dppy_counts = np.zeros(n)
    for _ in range(samples):
        s = dpp.sample_exact(mode='GS', random_state=rng)
        dppy_counts[s] += 1
    idx = np.load(f"{run_dir}/{op_id}/indices.npy")
    w = np.load(f"{run_dir}/{op_id}/weights.npy")
    rf_counts = np.bincount(idx, minlength=n).astype(float)
    # repeated: w = r / (n_total * l) with n_total = s * r, so l = 1 / (s * w).
    lev = 1.0 / (samples * w)
    kernel_diff = float(np.max(np.abs(lev - k[idx])))

    def stats(c):
        # Each count is Binomial(s, K_ii): E[X2] = N (the terms are correlated, so X2 is only roughly
        # chi-square with N degrees of freedom: sd ~ sqrt(2N)).
        z = (c - samples * k) / np.sqrt(samples * k * (1 - k))
        return float(np.sum(z * z) / n), float(np.max(np.abs(z)))

    both = dppy_counts + rf_counts
    two = float(np.sum((dppy_counts - rf_counts)[both > 0] ** 2 / both[both > 0]) / n)
    x2_dppy, z_dppy = stats(dppy_counts)
    x2_rf, z_rf = stats(rf_counts)
    print(json.dumps({
        "rows": n, "samples": samples, "rank": m, "sizes_ok": bool(len(idx) == samples * m),
        "x2n_dppy": x2_dppy, "maxz_dppy": z_dppy, "x2n_rowflow": x2_rf, "maxz_rowflow": z_rf,
        "two_sample_x2n": two, "kernel_diag_max_abs_diff": kernel_diff,
        "k_min": float(k.min()), "k_max": float(k.max()), "version": versions(),
    }))


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "sample":
        sample(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif mode == "law":
        law(args[0], int(args[1]), int(args[2]), int(args[3]), args[4], args[5])
    else:
        sys.exit(f"unknown mode {mode}")
