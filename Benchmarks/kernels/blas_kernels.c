/* The BLAS measurements behind two of rowflow's kernel choices, on this machine's OpenBLAS, one thread
 * (run with OPENBLAS_NUM_THREADS=1; `make -C Benchmarks kernels`). Prints seconds per 10⁶ rows.
 *
 * 1. truncated-svd `precision: float32` (Sources/Operators/TruncatedSVD.swift, float32ChunkRows): AᵀA of
 *    10⁶ × 256 rows by dsyrk in blocks of 2048, against ssyrk on chunks of m rows each added into a float64
 *    upper triangle (the chunk size trades the float32 error bound, ∝ m, against the per-chunk add).
 * 2. sensitivity-sample online scores (Sources/LinearAlgebra/Sensitivity.swift, OnlineEngine.scoresInFloat32):
 *    Z = X·R⁻¹ for 10⁶ rows of 65 in blocks of 1024 — dgemm with the triangular R⁻¹ stored full, dtrmm (after
 *    copying X), strmm in float32 (after copying X), and rowflow's fixed-order float32 kernel
 *    (Sources/CKernels/ckernels.c, compiled in with the same flags as the package's release build), which
 *    gives the same bits on every CPU and kernel. The first line names the OpenBLAS kernel that ran. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../../Sources/CKernels/ckernels.c"

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static void gram(void) {
    const int d = 256, n = 1000000, block = 2048, buffered = 8192;
    float *xf = malloc(sizeof(float) * (size_t)n * d);
    double *xd = malloc(sizeof(double) * (size_t)buffered * d), *g = calloc((size_t)d * d, sizeof(double));
    float *t = calloc((size_t)d * d, sizeof(float));
    srand(1);
    for (size_t i = 0; i < (size_t)n * d; i++) xf[i] = (float)(rand() / (double)RAND_MAX - 0.5);
    for (size_t i = 0; i < (size_t)buffered * d; i++) xd[i] = xf[i];
    double t0 = now();
    for (int r = 0; r < n; r += block)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, block, 1.0, xd + (size_t)(r % buffered) * d, d, 1.0, g, d);
    printf("gram 10^6 x 256: dsyrk, blocks of %d rows              %.3f s\n", block, now() - t0);
    const int chunks[] = {32, 64, 128, 256, 512};
    for (int q = 0; q < 5; q++) {
        int m = chunks[q];
        t0 = now();
        for (int r = 0; r < n; r += m) {
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, d, m, 1.0f, xf + (size_t)r * d, d, 0.0f, t, d);
            for (int i = 0; i < d; i++) for (int j = i; j < d; j++) g[i * d + j] += t[i * d + j];
        }
        printf("gram 10^6 x 256: ssyrk, chunks of %3d rows + float64 add  %.3f s\n", m, now() - t0);
    }
    free(xf); free(xd); free(g); free(t);
}

static void scores(void) {
    const int n = 65, m = 1024, rows = 1000000;
    double *x = malloc(sizeof(double) * m * n), *z = malloc(sizeof(double) * m * n), *r = calloc(n * n, sizeof(double));
    float *xf = malloc(sizeof(float) * m * n), *zf = malloc(sizeof(float) * m * n), *rf = calloc(n * n, sizeof(float));
    srand(2);
    for (int i = 0; i < m * n; i++) { x[i] = rand() / (double)RAND_MAX; xf[i] = (float)x[i]; }
    for (int i = 0; i < n; i++) for (int j = i; j < n; j++) { r[i * n + j] = rand() / (double)RAND_MAX + (i == j ? n : 0); rf[i * n + j] = (float)r[i * n + j]; }
    double t0 = now();
    for (int k = 0; k < rows; k += m)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, n, 1, x, n, r, n, 0, z, n);
    printf("scores 10^6 x 65: dgemm (triangle stored full)           %.3f s\n", now() - t0);
    t0 = now();
    for (int k = 0; k < rows; k += m) {
        memcpy(z, x, sizeof(double) * m * n);
        cblas_dtrmm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, m, n, 1, r, n, z, n);
    }
    printf("scores 10^6 x 65: copy + dtrmm                           %.3f s\n", now() - t0);
    t0 = now();
    for (int k = 0; k < rows; k += m) {
        memcpy(zf, xf, sizeof(float) * m * n);
        cblas_strmm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, m, n, 1, rf, n, zf, n);
    }
    printf("scores 10^6 x 65: copy + strmm (float32)                 %.3f s\n", now() - t0);
    float *acc = malloc(sizeof(float) * 4 * n);
    t0 = now();
    for (int k = 0; k < rows; k += m) {
        memcpy(zf, xf, sizeof(float) * m * n);
        rowflow_trmm_right_upper_f32(rf, n, m, zf, acc);
    }
    printf("scores 10^6 x 65: copy + rowflow fixed-order (float32)   %.3f s\n", now() - t0);
    free(acc);
    free(x); free(z); free(r); free(xf); free(zf); free(rf);
}

int main(void) {
    printf("OpenBLAS kernel: %s (%s)\n", openblas_get_corename(), openblas_get_config());
    gram(); scores(); return 0;
}
