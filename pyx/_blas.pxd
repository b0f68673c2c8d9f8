# Row-major BLAS over scipy.linalg.cython_blas, for float32 and float64: one entry point, as
# scikit-learn's _cython_blas._gemm. BLAS is column-major: the row-major product C = op(A) op(B)
# is the column-major product C^T = op(B)^T op(A)^T, so the call swaps the operands (and their
# transpose flags with them). Integer and const casts live here only.

from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      const floating *a, int lda, const floating *b, int ldb,
                      floating beta, floating *c, int ldc) noexcept nogil:
    """C (m, n) = op(A) @ op(B) + beta * C, all row-major with the given row strides, where
    op(A) is (m, k): A is (m, k), or (k, m) when trans_a; op(B) is (k, n): B is (k, n), or
    (n, k) when trans_b."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef floating one = 1.0
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &one, <float *> b, &ldb, <float *> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &one, <double *> b, &ldb, <double *> a, &lda,
              &beta, c, &ldc)
