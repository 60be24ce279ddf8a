#ifndef ROWFLOW_COPENBLAS_SHIM_H
#define ROWFLOW_COPENBLAS_SHIM_H
/* CBLAS from OpenBLAS plus the Fortran LAPACK symbols it exports. Debian builds OpenBLAS with NO_LAPACKE,
   so the routines are declared here by hand (gfortran ABI: every CHARACTER argument gets a hidden size_t
   length appended at the end; callers pass 1). Integers are 32-bit: Debian's OpenBLAS is not USE_64BITINT. */
#include <stddef.h>
#include <cblas.h>
typedef int lapack_int_t;

void dsyevd_(const char *jobz, const char *uplo, const lapack_int_t *n, double *a, const lapack_int_t *lda,
             double *w, double *work, const lapack_int_t *lwork, lapack_int_t *iwork,
             const lapack_int_t *liwork, lapack_int_t *info, size_t jobz_len, size_t uplo_len);
void dgesdd_(const char *jobz, const lapack_int_t *m, const lapack_int_t *n, double *a, const lapack_int_t *lda,
             double *s, double *u, const lapack_int_t *ldu, double *vt, const lapack_int_t *ldvt,
             double *work, const lapack_int_t *lwork, lapack_int_t *iwork, lapack_int_t *info, size_t jobz_len);
void dgeqrf_(const lapack_int_t *m, const lapack_int_t *n, double *a, const lapack_int_t *lda,
             double *tau, double *work, const lapack_int_t *lwork, lapack_int_t *info);
/* Recursive (Elmroth–Gustavson) Householder QR with the compact-WY factor T: BLAS-3 even for a thin panel. */
void dgeqrt3_(const lapack_int_t *m, const lapack_int_t *n, double *a, const lapack_int_t *lda, double *t,
              const lapack_int_t *ldt, lapack_int_t *info);
void dorgqr_(const lapack_int_t *m, const lapack_int_t *n, const lapack_int_t *k, double *a,
             const lapack_int_t *lda, const double *tau, double *work, const lapack_int_t *lwork,
             lapack_int_t *info);
void dpotrf_(const char *uplo, const lapack_int_t *n, double *a, const lapack_int_t *lda,
             lapack_int_t *info, size_t uplo_len);
void dpotrs_(const char *uplo, const lapack_int_t *n, const lapack_int_t *nrhs, const double *a,
             const lapack_int_t *lda, double *b, const lapack_int_t *ldb, lapack_int_t *info, size_t uplo_len);
void dtrtri_(const char *uplo, const char *diag, const lapack_int_t *n, double *a, const lapack_int_t *lda,
             lapack_int_t *info, size_t uplo_len, size_t diag_len);
void dgels_(const char *trans, const lapack_int_t *m, const lapack_int_t *n, const lapack_int_t *nrhs,
            double *a, const lapack_int_t *lda, double *b, const lapack_int_t *ldb, double *work,
            const lapack_int_t *lwork, lapack_int_t *info, size_t trans_len);
/* Minimum-norm least squares by the SVD (divide and conquer); singular values below rcond·σ₁ count as zero. */
void dgelsd_(const lapack_int_t *m, const lapack_int_t *n, const lapack_int_t *nrhs, double *a,
             const lapack_int_t *lda, double *b, const lapack_int_t *ldb, double *s, const double *rcond,
             lapack_int_t *rank, double *work, const lapack_int_t *lwork, lapack_int_t *iwork, lapack_int_t *info);
#endif
