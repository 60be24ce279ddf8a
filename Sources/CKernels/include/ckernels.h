#ifndef ROWFLOW_CKERNELS_H
#define ROWFLOW_CKERNELS_H
/* Fixed-order float32 kernels: bit-identical on every x86-64 CPU and in every build (see ckernels.c). */
#include <stddef.h>

/* Z <- Z·R in place for a row-major m×n block Z and an upper-triangular n×n R (row-major, strict lower part
   ignored). acc: scratch of n floats. */
void rowflow_trmm_right_upper_f32(const float *r, ptrdiff_t n, ptrdiff_t m, float *z, float *acc);

#endif
