# Row-major BLAS wrappers over scipy.linalg.cython_blas, for float32 and float64.
# BLAS is column-major: the row-major product C = A @ B is the column-major product
# C^T = B^T @ A^T, so each wrapper swaps the operands. Integer and const casts live here only.

from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm_nn(int m, int n, int k,
                         const floating *a, int lda,
                         const floating *b, int ldb,
                         floating beta, floating *c, int ldc) noexcept nogil:
    """C (m, n) = A (m, k) @ B (k, n) + beta * C, all row-major with the given strides."""
    cdef char no = b'N'
    cdef floating one = 1.0
    if floating is float:
        sgemm(&no, &no, &n, &m, &k, &one, <float *> b, &ldb, <float *> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&no, &no, &n, &m, &k, &one, <double *> b, &ldb, <double *> a, &lda,
              &beta, c, &ldc)


cdef inline void gemm_nt(int m, int n, int k,
                         const floating *a, int lda,
                         const floating *b, int ldb,
                         floating beta, floating *c, int ldc) noexcept nogil:
    """C (m, n) = A (m, k) @ B.T + beta * C, where B is (n, k); all row-major."""
    cdef char no = b'N', tr = b'T'
    cdef floating one = 1.0
    if floating is float:
        sgemm(&tr, &no, &n, &m, &k, &one, <float *> b, &ldb, <float *> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tr, &no, &n, &m, &k, &one, <double *> b, &ldb, <double *> a, &lda,
              &beta, c, &ldc)


cdef inline void gemm_tn(int m, int n, int k,
                         const floating *a, int lda,
                         const floating *b, int ldb,
                         floating beta, floating *c, int ldc) noexcept nogil:
    """C (m, n) = A.T @ B (k, n) + beta * C, where A is (k, m); all row-major."""
    cdef char no = b'N', tr = b'T'
    cdef floating one = 1.0
    if floating is float:
        sgemm(&no, &tr, &n, &m, &k, &one, <float *> b, &ldb, <float *> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&no, &tr, &n, &m, &k, &one, <double *> b, &ldb, <double *> a, &lda,
              &beta, c, &ldc)
