#include "ckernels.h"

/* Why C, and why this loop: OpenBLAS's strmm gives different last bits on each of its kernels (Prescott,
   Haswell, SkylakeX block and vectorise the sums differently), so float32 scores computed with it made a
   sampler's weights differ between machines. Here every entry z_ij is summed in one fixed order — l = 0, 1, …
   up to the end of its column block (R's zeros below the diagonal add nothing to a nonzero sum) — with a
   separate multiply and add (no fused multiply-add: contraction is off for this file), and the vector lanes run
   across j, never across l. The column blocks are ROWFLOW_TRMM_BLOCK wide on every machine, so IEEE arithmetic
   gives the same bits whatever the vector width — the clones below only choose how many lanes run at once —
   and in debug and release builds alike. Each block's 32 sums stay in registers while l runs: about 2.4× the
   flops of a triangular multiply at n = 65, at full vector width. */
#pragma clang fp contract(off)

#if defined(__x86_64__) && defined(__clang__)
#define ROWFLOW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ROWFLOW_CLONES
#endif

/* K rows at once: their sums are independent chains, so the adds overlap instead of waiting on each other
   (one row alone is bound by the add latency, about 4× slower); each row's order is unchanged. */
static inline __attribute__((always_inline)) void trmm_rows(const float *restrict r, ptrdiff_t n, float *restrict z,
                                                            float *restrict acc, const int K) {
    enum { B = ROWFLOW_TRMM_BLOCK };
    for (ptrdiff_t j0 = 0; j0 < n; j0 += B) {
        const ptrdiff_t w = n - j0 < B ? n - j0 : B;
        const ptrdiff_t lend = j0 + w;   /* rows of R that reach this block (R is upper triangular) */
        float s[4][B];
        for (int k = 0; k < K; k++)
            for (ptrdiff_t jj = 0; jj < B; jj++) s[k][jj] = 0.0f;
        if (w == B) {
            for (ptrdiff_t l = 0; l < lend; l++) {
                const float *restrict rl = r + l * n + j0;
                for (int k = 0; k < K; k++) {
                    const float xl = z[k * n + l];
                    for (ptrdiff_t jj = 0; jj < B; jj++) s[k][jj] += xl * rl[jj];
                }
            }
        } else {
            for (ptrdiff_t l = 0; l < lend; l++) {
                const float *restrict rl = r + l * n + j0;
                for (int k = 0; k < K; k++) {
                    const float xl = z[k * n + l];
                    for (ptrdiff_t jj = 0; jj < w; jj++) s[k][jj] += xl * rl[jj];
                }
            }
        }
        for (int k = 0; k < K; k++)
            for (ptrdiff_t jj = 0; jj < w; jj++) acc[k * n + j0 + jj] = s[k][jj];
    }
    for (int k = 0; k < K; k++)
        for (ptrdiff_t j = 0; j < n; j++) z[k * n + j] = acc[k * n + j];
}

ROWFLOW_CLONES
void rowflow_trmm_right_upper_f32(const float *restrict r, ptrdiff_t n, ptrdiff_t m, float *restrict z,
                                  float *restrict acc) {
    ptrdiff_t i = 0;
    for (; i + 4 <= m; i += 4) trmm_rows(r, n, z + i * n, acc, 4);
    for (; i < m; i++) trmm_rows(r, n, z + i * n, acc, 1);
}
