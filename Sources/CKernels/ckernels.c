#include "ckernels.h"

/* Why C, and why this loop: OpenBLAS's strmm gives different last bits on each of its kernels (Prescott,
   Haswell, SkylakeX block and vectorise the sums differently), so float32 scores computed with it made a
   sampler's weights differ between machines. Here every entry is summed in one fixed order, l = 0, 1, …, j,
   with a separate multiply and add (no fused multiply-add: contraction is off for this file), and the
   vector lanes run across j, never across l. IEEE arithmetic then gives the same bits whatever the vector
   width — the clones below only choose how many lanes run at once — and in debug and release builds alike.
   The cost is that of strmm's flops at the machine's vector width (n²/2 multiply-adds per row). */
#pragma clang fp contract(off)

#if defined(__x86_64__) && defined(__clang__)
#define ROWFLOW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ROWFLOW_CLONES
#endif

ROWFLOW_CLONES
void rowflow_trmm_right_upper_f32(const float *restrict r, ptrdiff_t n, ptrdiff_t m, float *restrict z,
                                  float *restrict acc) {
    for (ptrdiff_t i = 0; i < m; i++) {
        float *restrict zi = z + i * n;
        for (ptrdiff_t j = 0; j < n; j++) acc[j] = 0.0f;
        for (ptrdiff_t l = 0; l < n; l++) {
            const float x = zi[l];
            const float *restrict rl = r + l * n;
            for (ptrdiff_t j = l; j < n; j++) acc[j] += x * rl[j];
        }
        for (ptrdiff_t j = 0; j < n; j++) zi[j] = acc[j];
    }
}
