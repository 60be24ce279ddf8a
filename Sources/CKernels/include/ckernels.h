#ifndef ROWFLOW_CKERNELS_H
#define ROWFLOW_CKERNELS_H
/* Fixed-order float32 kernels: bit-identical on every x86-64 CPU and in every build (see ckernels.c). */
#include <stddef.h>

/* Columns summed together (a constant on every machine: part of the summation order). */
#define ROWFLOW_TRMM_BLOCK 32

/* Z <- Z·R in place for a row-major m×n block Z and an upper-triangular n×n R (row-major; its strictly lower
   part must hold zeros). Entry (i, j) is Σ_l z_il·r_lj over l = 0 … min(n, j0 + 32) − 1 in that order, j0 the
   start of j's block of 32 columns. acc: scratch of 4·n floats. */
void rowflow_trmm_right_upper_f32(const float *r, ptrdiff_t n, ptrdiff_t m, float *z, float *acc);

#endif
