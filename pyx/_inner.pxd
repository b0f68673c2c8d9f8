# The innermost loops of a step, in C so that their pointers can be `restrict` (Cython has no
# restrict, and without it GCC needs more run-time alias checks than it allows, 10, and leaves the
# loops scalar). Each is one template instantiated for float and double.
#
# Sigmoid and tanh that compilers vectorize: Cephes-style exp (about 1 ulp in float, a few ulps
# in double) with branch-free range reduction and the power of two built from the exponent bits,
# so a loop of gate arithmetic becomes SIMD code instead of a libm call per element. Scalar
# expf/tanhf made the gate pass the most expensive part of a step (S6: 420 ms vs 226 ms of GEMM).
# Absolute error of sigmoid and tanh: below 2.5e-7 (float), 5e-16 (double), checked in the tests.

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    static inline float cgru_expf(float x) {
        x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
        /* n = round(x / ln 2) with the 1.5 * 2^23 trick: no libm call, vectorizes */
        float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
        float r = x - n * 0.693359375f;
        r = r + n * 2.12194440e-4f;
        float p = 1.9875691500e-4f;
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        p = p * r * r + r + 1.0f;
        /* 2^n: n + 127 sits in the low mantissa bits of n + 127 + 2^23; shift it to the exponent */
        float biased = n + (127.0f + 8388608.0f);
        uint32_t bits;
        memcpy(&bits, &biased, sizeof bits);
        bits <<= 23;
        float scale;
        memcpy(&scale, &bits, sizeof scale);
        return p * scale;
    }

    static inline double cgru_exp(double x) {
        x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
        double n = (x * 1.4426950408889634074 + 6755399441055744.0) - 6755399441055744.0;
        double r = x - n * 6.93145751953125e-1;
        r = r - n * 1.42860682030941723212e-6;
        double rr = r * r;
        double px = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
                         + 9.99999999999999999910e-1);
        double qx = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
                     + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0;
        double e = 1.0 + 2.0 * (px / (qx - px));
        double biased = n + (1023.0 + 4503599627370496.0);
        uint64_t bits;
        memcpy(&bits, &biased, sizeof bits);
        bits <<= 52;
        double scale;
        memcpy(&scale, &bits, sizeof scale);
        return e * scale;
    }

    /* Workspace on 64-byte boundaries: a vector load across two cache lines costs two. */
    #include <stdlib.h>
    #if defined(_WIN32)
    #include <malloc.h>
    static inline void *cgru_alloc(size_t n) { return _aligned_malloc(n ? n : 64, 64); }
    static inline void cgru_free(void *p) { _aligned_free(p); }
    #else
    static inline void *cgru_alloc(size_t n) {
        void *p = NULL;
        return posix_memalign(&p, 64, n ? n : 64) == 0 ? p : NULL;
    }
    static inline void cgru_free(void *p) { free(p); }
    #endif

    static inline float cgru_sigmoidf(float x) { return 1.0f / (1.0f + cgru_expf(-x)); }
    static inline double cgru_sigmoid(double x) { return 1.0 / (1.0 + cgru_exp(-x)); }
    static inline float cgru_tanhf(float x) { return 2.0f / (1.0f + cgru_expf(-2.0f * x)) - 1.0f; }
    static inline double cgru_tanh(double x) { return 2.0 / (1.0 + cgru_exp(-2.0 * x)) - 1.0; }

    /* The fused gate pass over one block of u <= 16 hidden units of one row.
       gi: input products [r | z | n], gate g at gi + g * si; gh: recurrent products, gate g at
       gh + g * sh; bias_gi: b_ih + b_hh for r and z, b_in for n, gate g at bias_gi + g * sb;
       bias_hn (u); h_prev, h_next (u). */
    #define CGRU_GATE_BLOCK(T, NAME, SIGMOID, TANH)                                          \
    static inline void NAME(int u, const T *restrict gi, int si, const T *restrict gh, int sh, \
                            const T *restrict bias_gi, int sb, const T *restrict bias_hn,     \
                            const T *restrict h_prev, T *restrict h_next) {                   \
        for (int j = 0; j < u; j++) {                                                         \
            T r = SIGMOID(gi[j] + bias_gi[j] + gh[j]);                                        \
            T z = SIGMOID(gi[si + j] + bias_gi[sb + j] + gh[sh + j]);                         \
            T n = TANH(gi[2 * si + j] + bias_gi[2 * sb + j] + r * (gh[2 * sh + j] + bias_hn[j])); \
            /* h' = (1 - z) * n + z * h, written as ATen's CPU cell writes it */              \
            h_next[j] = n + z * (h_prev[j] - n);                                              \
        }                                                                                     \
    }
    CGRU_GATE_BLOCK(float, cgru_gate_block_f, cgru_sigmoidf, cgru_tanhf)
    CGRU_GATE_BLOCK(double, cgru_gate_block_d, cgru_sigmoid, cgru_tanh)

    /* Recurrent products of `rows` rows against one weight panel: acc[m][c] =
       sum_k h[m * ldh + k] * panel[k * 48 + c] for c < 48, the r|z|n columns (16 each, zero
       padded) of one block of hidden units. The panel is read once per group of rows, and the
       accumulators stay in vector registers: the loops are instantiated for 4, 2 and 1 rows so
       the compiler can unroll them completely (4 x 48 floats fit AVX-512's 32 registers, 2 x 48
       AVX2's 16; a run-time row count made GCC keep the accumulators on the stack). */
    #if defined(__AVX512F__)
    #define CGRU_PANEL_ROWS_F 8    /* 8 x 3 = 24 of AVX-512's 32 registers accumulate */
    #define CGRU_PANEL_ROWS_D 4    /* 4 x 6 = 24: a double row of 48 takes 6 registers */
    #elif defined(__AVX2__)
    #define CGRU_PANEL_ROWS_F 2
    #define CGRU_PANEL_ROWS_D 1
    #else
    #define CGRU_PANEL_ROWS_F 1    /* SSE2's 16 registers hold one row of 48 floats */
    #define CGRU_PANEL_ROWS_D 1
    #endif
    #define CGRU_PANEL_ROWS CGRU_PANEL_ROWS_F   /* the most of either: sizes the buffers */
    #define CGRU_PANEL 48
    /* S independent partial sums over k per accumulator: with one or two rows, a single chain
       of FMAs per register waits on the FMA latency (4 cycles) every step of k; two chains
       halve that (batch-1 steps 1.4x faster here). */
    #define CGRU_PANEL_ROWS_KERNEL(T, NAME, R, S)                                             \
    static inline void NAME(int K, const T *restrict h, long ldh, const T *restrict panel,    \
                            T *restrict acc, int accumulate) {                                \
        T a[S][R][CGRU_PANEL];                                                                \
        for (int s = 0; s < S; s++)                                                           \
            for (int m = 0; m < R; m++)                                                       \
                for (int c = 0; c < CGRU_PANEL; c++)                                          \
                    a[s][m][c] = (s == 0 && accumulate) ? acc[m * CGRU_PANEL + c] : 0;        \
        int k = 0;                                                                            \
        for (; k + S <= K; k += S)                                                            \
            for (int s = 0; s < S; s++) {                                                     \
                const T *restrict w = panel + (long)(k + s) * CGRU_PANEL;                     \
                for (int m = 0; m < R; m++) {                                                 \
                    T hk = h[m * ldh + k + s];                                                \
                    for (int c = 0; c < CGRU_PANEL; c++) a[s][m][c] += hk * w[c];             \
                }                                                                             \
            }                                                                                 \
        for (; k < K; k++) {                                                                  \
            const T *restrict w = panel + (long)k * CGRU_PANEL;                               \
            for (int m = 0; m < R; m++) {                                                     \
                T hk = h[m * ldh + k];                                                        \
                for (int c = 0; c < CGRU_PANEL; c++) a[0][m][c] += hk * w[c];                 \
            }                                                                                 \
        }                                                                                     \
        for (int m = 0; m < R; m++)                                                           \
            for (int c = 0; c < CGRU_PANEL; c++) {                                            \
                T total = a[0][m][c];                                                         \
                for (int s = 1; s < S; s++) total += a[s][m][c];                              \
                acc[m * CGRU_PANEL + c] = total;                                              \
            }                                                                                 \
    }
    #define CGRU_PANEL_PRODUCT(T, NAME, MAX_ROWS)                                             \
    CGRU_PANEL_ROWS_KERNEL(T, NAME##_8, 8, 1)                                                 \
    CGRU_PANEL_ROWS_KERNEL(T, NAME##_4, 4, 1)                                                 \
    CGRU_PANEL_ROWS_KERNEL(T, NAME##_2, 2, 2)                                                 \
    CGRU_PANEL_ROWS_KERNEL(T, NAME##_1, 1, 4)                                                 \
    /* rows <= MAX_ROWS; accumulate: add to acc instead of overwriting it */                  \
    static inline void NAME(int rows, int K, const T *restrict h, long ldh,                   \
                            const T *restrict panel, T *restrict acc, int accumulate) {        \
        if (MAX_ROWS >= 8 && rows == 8) { NAME##_8(K, h, ldh, panel, acc, accumulate); return; } \
        for (; MAX_ROWS >= 4 && rows >= 4; rows -= 4) {                                       \
            NAME##_4(K, h, ldh, panel, acc, accumulate);                                      \
            h += 4 * ldh; acc += 4 * CGRU_PANEL;                                              \
        }                                                                                     \
        for (; MAX_ROWS >= 2 && rows >= 2; rows -= 2) {                                       \
            NAME##_2(K, h, ldh, panel, acc, accumulate);                                      \
            h += 2 * ldh; acc += 2 * CGRU_PANEL;                                              \
        }                                                                                     \
        for (; rows >= 1; rows--) {                                                           \
            NAME##_1(K, h, ldh, panel, acc, accumulate);                                      \
            h += ldh; acc += CGRU_PANEL;                                                      \
        }                                                                                     \
    }
    CGRU_PANEL_PRODUCT(float, cgru_panel_product_f, CGRU_PANEL_ROWS_F)
    CGRU_PANEL_PRODUCT(double, cgru_panel_product_d, CGRU_PANEL_ROWS_D)
    """
    float cgru_sigmoidf(float x) noexcept nogil
    double cgru_sigmoid(double x) noexcept nogil
    float cgru_tanhf(float x) noexcept nogil
    double cgru_tanh(double x) noexcept nogil
    int CGRU_PANEL_ROWS
    void *cgru_alloc(size_t n) noexcept nogil
    void cgru_free(void *p) noexcept nogil
    int CGRU_PANEL_ROWS_F
    int CGRU_PANEL_ROWS_D
    void cgru_gate_block_f(int u, const float *gi, int si, const float *gh, int sh,
                           const float *bias_gi, int sb, const float *bias_hn,
                           const float *h_prev, float *h_next) noexcept nogil
    void cgru_gate_block_d(int u, const double *gi, int si, const double *gh, int sh,
                           const double *bias_gi, int sb, const double *bias_hn,
                           const double *h_prev, double *h_next) noexcept nogil
    void cgru_panel_product_f(int rows, int K, const float *h, long ldh, const float *panel,
                              float *acc, int accumulate) noexcept nogil
    void cgru_panel_product_d(int rows, int K, const double *h, long ldh, const double *panel,
                              double *acc, int accumulate) noexcept nogil
