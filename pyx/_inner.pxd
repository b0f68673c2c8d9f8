# The innermost code of a step, in C with GCC/Clang vector types: a block of 16 hidden units is
# one vector value, so the gate pass and the register-blocked products compile to straight-line
# SIMD code for whatever instruction set the build targets (one AVX-512 register holds 16
# floats, two AVX2 ones, four SSE ones). Each routine is one template for float and double.
#
# Why not plain loops: GCC vectorized them, but it built the n gate's inputs element by element
# (vinsertps) in the gate pass, and copied the product accumulators through the stack on entry
# and exit (rep movsq), 10-30% of a 40- or 128-deep product.
#
# Sigmoid and tanh: from exp, within an ulp or two (float: a 16-entry table and a cubic with
# AVX-512, else Cephes' polynomial; double: Cephes' rational). Absolute error of sigmoid and
# tanh: below 2.5e-7 (float), 5e-16 (double), which the parity tests bound.

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    #if !defined(__GNUC__)
    #error "cgru's kernel needs GCC or Clang (vector extensions); on Windows use clang-cl"
    #endif

    #define CGRU_UB 16              /* hidden units per block: one vector */
    #define CGRU_PANEL 48           /* columns of a weight panel: r, z, n of one block */
    #define CGRU_UNROLL _Pragma("GCC unroll 16")

    /* Vectors of the build's register width: wider ones (16 doubles in one vector, or 16 floats
       in an AVX2 build) made GCC pass them through the stack. aligned(element): loads and
       stores need no vector alignment (they get it anyway). */
    #if defined(__AVX512F__)
    #define CGRU_VECTOR_BYTES 64
    #elif defined(__AVX2__)
    #define CGRU_VECTOR_BYTES 32
    #else
    #define CGRU_VECTOR_BYTES 16
    #endif
    #define CGRU_LANES(T) (CGRU_VECTOR_BYTES / (int)sizeof(T))
    typedef float cgru_vfloat __attribute__((vector_size(CGRU_VECTOR_BYTES), aligned(4)));
    typedef double cgru_vdouble __attribute__((vector_size(CGRU_VECTOR_BYTES), aligned(8)));
    typedef int32_t cgru_vfloat_bits __attribute__((vector_size(CGRU_VECTOR_BYTES)));
    typedef int64_t cgru_vdouble_bits __attribute__((vector_size(CGRU_VECTOR_BYTES)));

    /* where(mask, a, b) on vectors: lanes of a where mask is all ones, else b */
    #define CGRU_WHERE(T, mask, a, b) \
        ((cgru_v##T)(((mask) & (cgru_v##T##_bits)(a)) | (~(mask) & (cgru_v##T##_bits)(b))))

    #if defined(__AVX512F__)
    #include <immintrin.h>
    /* exp(x) = 2^(k / 16) * exp(r), k = round(16 x / ln 2), |r| <= ln 2 / 32: the 16 powers
       2^(j / 16) from a register table (one permute), exp(r) by a cubic (truncation error
       9e-9), 2^floor(k / 16) by scalef. About 13 instructions against 20 for the Cephes
       polynomial below, with the same accuracy of sigmoid and tanh (max abs error 9.0e-8 and
       1.8e-7 on [-30, 30], both ways): gate pass alone 1.43 -> 1.18 ms. */
    static inline cgru_vfloat cgru_exp_float(cgru_vfloat value) {
        const __m512 table = _mm512_setr_ps(
            1.000000000e+00f, 1.044273782e+00f, 1.090507733e+00f, 1.138788635e+00f,
            1.189207115e+00f, 1.241857812e+00f, 1.296839555e+00f, 1.354255547e+00f,
            1.414213562e+00f, 1.476826146e+00f, 1.542210825e+00f, 1.610490332e+00f,
            1.681792831e+00f, 1.756252160e+00f, 1.834008086e+00f, 1.915206561e+00f);
        /* max/min return their second operand for a NaN: NaN passes through */
        __m512 x = _mm512_min_ps(_mm512_set1_ps(88.0f),
                                 _mm512_max_ps(_mm512_set1_ps(-87.0f), (__m512)value));
        /* t = 16 x / ln 2 + 1.5 * 2^23: k in its low mantissa bits, the table index in the
           lowest four (the permute reads only those) */
        __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(23.083120654223414f),
                                   _mm512_set1_ps(12582912.0f));
        __m512 k = _mm512_sub_ps(t, _mm512_set1_ps(12582912.0f));
        /* r = x - k ln2 / 16 in two parts; the first has 13 bits, so k times it is exact */
        __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.0433197021484375f), x);
        r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.996636559080e-06f), r);
        __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 6), r, _mm512_set1_ps(0.5f));
        q = _mm512_mul_ps(_mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f)), r);   /* exp(r) - 1 */
        __m512 power = _mm512_permutexvar_ps(_mm512_castps_si512(t), table);
        return (cgru_vfloat)_mm512_scalef_ps(_mm512_fmadd_ps(q, power, power),
                                             _mm512_mul_ps(k, _mm512_set1_ps(0.0625f)));
    }
    #else
    static inline cgru_vfloat cgru_exp_float(cgru_vfloat x) {
        const cgru_vfloat zero = {0};
        /* clamped to [-87, 88] so the power of two below is finite; NaN passes through */
        x = CGRU_WHERE(float, x < zero - 87.0f, zero - 87.0f, x);
        x = CGRU_WHERE(float, x > zero + 88.0f, zero + 88.0f, x);
        /* n = round(x / ln 2) with the 1.5 * 2^23 trick */
        cgru_vfloat n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
        cgru_vfloat r = x - n * 0.693359375f;
        r = r + n * 2.12194440e-4f;
        cgru_vfloat p = zero + 1.9875691500e-4f;
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        p = p * r * r + r + 1.0f;
        /* 2^n: n + 127 sits in the low mantissa bits of n + 127 + 2^23; shift it to the exponent */
        cgru_vfloat_bits bits = (cgru_vfloat_bits)(n + (127.0f + 8388608.0f)) << 23;
        return p * (cgru_vfloat)bits;
    }
    #endif

    static inline cgru_vdouble cgru_exp_double(cgru_vdouble x) {
        const cgru_vdouble zero = {0};
        x = CGRU_WHERE(double, x < zero - 708.0, zero - 708.0, x);
        x = CGRU_WHERE(double, x > zero + 709.0, zero + 709.0, x);
        cgru_vdouble n = (x * 1.4426950408889634074 + 6755399441055744.0) - 6755399441055744.0;
        cgru_vdouble r = x - n * 6.93145751953125e-1;
        r = r - n * 1.42860682030941723212e-6;
        cgru_vdouble rr = r * r;
        cgru_vdouble px = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
                               + 9.99999999999999999910e-1);
        cgru_vdouble qx = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
                           + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0;
        cgru_vdouble e = 1.0 + 2.0 * (px / (qx - px));
        cgru_vdouble_bits bits = (cgru_vdouble_bits)(n + (1023.0 + 4503599627370496.0)) << 52;
        return e * (cgru_vdouble)bits;
    }

    /* 1 / d for the gates. With AVX-512, a 14-bit reciprocal estimate refined by one Newton
       step (relative error about 2^-23, within an ulp or two) in place of a division, which
       took a third of the gate pass. */
    #if defined(__AVX512F__)
    #include <immintrin.h>
    static inline cgru_vfloat cgru_recip_float(cgru_vfloat d) {
        cgru_vfloat y = (cgru_vfloat)_mm512_rcp14_ps((__m512)d);
        return y + y * (1.0f - d * y);
    }
    #else
    static inline cgru_vfloat cgru_recip_float(cgru_vfloat d) { return 1.0f / d; }
    #endif
    static inline cgru_vdouble cgru_recip_double(cgru_vdouble d) { return 1.0 / d; }

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

    /* The fused gate pass over one block of u <= 16 hidden units of `rows` rows; row m of an
       operand starts at its pointer + m * its row stride (ld_*).
       gi: input products [r | z | n], gate g at gi + g * si; gh: recurrent products, gate g at
       gh + g * sh; bias_gi: b_ih + b_hh for r and z, b_in for n, gate g at bias_gi + g * sb;
       bias_hn (u), the same for every row; h_prev, h_next (u). The loop over rows is here, not
       in the caller, so that the constants and biases are loaded once per block. A partial
       block (the last one, when H is not a multiple of 16) goes through zero-padded copies.
       Rows go four at a time, their instructions side by side (cgru_gates16_T_4), then two,
       then one: one row is a chain of about 150 cycles of latency (exp, reciprocal, exp,
       reciprocal), and with rows one after the other the out-of-order window did not reach
       far enough to overlap them. Two rows against one: gate pass alone 11% faster, S3 4%, S8
       3%; four against two: S3 and S8 another 3%. */
    #define CGRU_GATES(T, P, SAVE)                                                            \
    static inline __attribute__((always_inline)) void                                         \
    cgru_gates16_##T##_##P##_##SAVE(const T *gi, long ld_gi, int si, const T *gh, long ld_gh, \
                           int sh, const T *bias_gi, int sb, const T *bias_hn,                \
                           const T *h_prev, long ld_prev, T *h_next, long ld_next, T *save,   \
                           long ld_save, int ss) {                                            \
        typedef cgru_v##T V;                                                                  \
        const V one = (V){0} + 1;                                                             \
        for (int c = 0; c < CGRU_UB; c += CGRU_LANES(T)) {  /* 1 to 8 vectors */              \
            const V b_r = *(const V *)(bias_gi + c), b_z = *(const V *)(bias_gi + sb + c);    \
            const V b_n = *(const V *)(bias_gi + 2 * sb + c);                                 \
            const V b_hn = *(const V *)(bias_hn + c);                                         \
            V r[P], z[P], n[P];                                                               \
            CGRU_UNROLL for (int p = 0; p < P; p++) {                                         \
                const T *x = gi + p * ld_gi + c, *y = gh + p * ld_gh + c;                     \
                r[p] = cgru_recip_##T(one + cgru_exp_##T(-(*(const V *)x + b_r               \
                                                           + *(const V *)y)));                \
            }                                                                                 \
            CGRU_UNROLL for (int p = 0; p < P; p++) {                                         \
                const T *x = gi + p * ld_gi + si + c, *y = gh + p * ld_gh + sh + c;           \
                z[p] = cgru_recip_##T(one + cgru_exp_##T(-(*(const V *)x + b_z               \
                                                           + *(const V *)y)));                \
            }                                                                                 \
            CGRU_UNROLL for (int p = 0; p < P; p++) {                                         \
                const T *x = gi + p * ld_gi + 2 * si + c, *y = gh + p * ld_gh + 2 * sh + c;   \
                V hn = *(const V *)y + b_hn;                                                  \
                V a = *(const V *)x + b_n + r[p] * hn;                                        \
                n[p] = 2 * cgru_recip_##T(one + cgru_exp_##T(-2 * a)) - 1;   /* tanh(a) */    \
                if (SAVE) {   /* what the backward pass needs: r | z | n | W_hn h + b_hn */   \
                    T *to = save + p * ld_save + c;                                           \
                    *(V *)to = r[p];                                                          \
                    *(V *)(to + ss) = z[p];                                                   \
                    *(V *)(to + 2 * ss) = n[p];                                               \
                    *(V *)(to + 3 * ss) = hn;                                                 \
                }                                                                             \
            }                                                                                 \
            /* h' = (1 - z) * n + z * h, written as ATen's CPU cell writes it */              \
            CGRU_UNROLL for (int p = 0; p < P; p++)                                           \
                *(V *)(h_next + p * ld_next + c) =                                            \
                    n[p] + z[p] * (*(const V *)(h_prev + p * ld_prev + c) - n[p]);            \
        }                                                                                     \
    }
    /* save (NULL: the forward alone): row m's r, z, n and W_hn h + b_hn of these units at
       save + m * ld_save + g * ss, for the backward pass. A separate instantiation, so that
       the inference path carries no store and no test. */
    #define CGRU_GATE_ROWS(T, SAVE)                                                           \
    static inline void cgru_gate_rows_##T##_##SAVE(int rows, int u, const T *restrict gi,     \
                                          long ld_gi, int si, const T *restrict gh,           \
                                          long ld_gh, int sh, const T *restrict bias_gi,      \
                                          int sb, const T *restrict bias_hn,                  \
                                          const T *restrict h_prev, long ld_prev,             \
                                          T *restrict h_next, long ld_next,                   \
                                          T *restrict save, long ld_save) {                   \
        if (u == CGRU_UB) {                                                                   \
            int m = 0;                                                                        \
            for (; m + 4 <= rows; m += 4)                                                     \
                cgru_gates16_##T##_4_##SAVE(gi + m * ld_gi, ld_gi, si, gh + m * ld_gh, ld_gh, \
                                     sh, bias_gi, sb, bias_hn, h_prev + m * ld_prev, ld_prev, \
                                     h_next + m * ld_next, ld_next, save + m * ld_save,       \
                                     ld_save, CGRU_UB);                                       \
            for (; m + 2 <= rows; m += 2)                                                     \
                cgru_gates16_##T##_2_##SAVE(gi + m * ld_gi, ld_gi, si, gh + m * ld_gh, ld_gh, \
                                     sh, bias_gi, sb, bias_hn, h_prev + m * ld_prev, ld_prev, \
                                     h_next + m * ld_next, ld_next, save + m * ld_save,       \
                                     ld_save, CGRU_UB);                                       \
            if (m < rows)                                                                     \
                cgru_gates16_##T##_1_##SAVE(gi + m * ld_gi, 0, si, gh + m * ld_gh, 0, sh,     \
                                     bias_gi, sb, bias_hn, h_prev + m * ld_prev, 0,           \
                                     h_next + m * ld_next, 0, save + m * ld_save, 0,          \
                                     CGRU_UB);                                                \
            return;                                                                           \
        }                                                                                     \
        T bias[4][CGRU_UB] = {{0}};                                                           \
        for (int g = 0; g < 3; g++) memcpy(bias[g], bias_gi + g * sb, u * sizeof(T));         \
        memcpy(bias[3], bias_hn, u * sizeof(T));                                              \
        for (int m = 0; m < rows; m++) {                                                      \
            T in[7][CGRU_UB] = {{0}}, out[CGRU_UB], kept[4][CGRU_UB];                         \
            const T *from[7] = {gi + m * ld_gi, gi + m * ld_gi + si, gi + m * ld_gi + 2 * si, \
                                gh + m * ld_gh, gh + m * ld_gh + sh, gh + m * ld_gh + 2 * sh, \
                                h_prev + m * ld_prev};                                        \
            for (int i = 0; i < 7; i++) memcpy(in[i], from[i], u * sizeof(T));                \
            cgru_gates16_##T##_1_##SAVE(in[0], 0, CGRU_UB, in[3], 0, CGRU_UB, bias[0],        \
                                 CGRU_UB, bias[3], in[6], 0, out, 0, kept[0], 0, CGRU_UB);    \
            memcpy(h_next + m * ld_next, out, u * sizeof(T));                                 \
            if (SAVE)                                                                         \
                for (int g = 0; g < 4; g++)                                                   \
                    memcpy(save + m * ld_save + g * u, kept[g], u * sizeof(T));               \
        }                                                                                     \
    }
    #define CGRU_GATE_BLOCK(T)                                                                \
    CGRU_GATES(T, 1, 0)                                                                       \
    CGRU_GATES(T, 2, 0)                                                                       \
    CGRU_GATES(T, 4, 0)                                                                       \
    CGRU_GATES(T, 1, 1)                                                                       \
    CGRU_GATES(T, 2, 1)                                                                       \
    CGRU_GATES(T, 4, 1)                                                                       \
    CGRU_GATE_ROWS(T, 0)                                                                      \
    CGRU_GATE_ROWS(T, 1)                                                                      \
    static inline void cgru_gate_rows_##T(int rows, int u, const T *gi, long ld_gi, int si,   \
                                          const T *gh, long ld_gh, int sh, const T *bias_gi,  \
                                          int sb, const T *bias_hn, const T *h_prev,          \
                                          long ld_prev, T *h_next, long ld_next, T *save,     \
                                          long ld_save) {                                     \
        if (save)                                                                             \
            cgru_gate_rows_##T##_1(rows, u, gi, ld_gi, si, gh, ld_gh, sh, bias_gi, sb,        \
                                   bias_hn, h_prev, ld_prev, h_next, ld_next, save, ld_save); \
        else                                                                                  \
            cgru_gate_rows_##T##_0(rows, u, gi, ld_gi, si, gh, ld_gh, sh, bias_gi, sb,        \
                                   bias_hn, h_prev, ld_prev, h_next, ld_next, save, ld_save); \
    }
    CGRU_GATE_BLOCK(float)
    CGRU_GATE_BLOCK(double)

    /* Products of `rows` rows against one weight panel: acc[m][c] = sum_k h[m * ldh + k] *
       panel[k * 48 + c] for c < 48, the r|z|n columns (16 each, zero padded) of one block of
       hidden units. The panel is read once per group of rows, and the accumulators stay in
       registers: one routine per row count, unrolled completely. */
    #if defined(__AVX512F__)
    #define CGRU_PANEL_ROWS_F 8    /* 8 x 3 = 24 of AVX-512's 32 registers accumulate */
    #define CGRU_PANEL_ROWS_D 4    /* 4 x 6 = 24: a double row of 48 takes 6 registers */
    #elif defined(__AVX2__)
    #define CGRU_PANEL_ROWS_F 2    /* 2 x 6 = 12 of AVX2's 16 registers */
    #define CGRU_PANEL_ROWS_D 1
    #else
    #define CGRU_PANEL_ROWS_F 1    /* SSE2's 16 registers hold one row of 48 floats */
    #define CGRU_PANEL_ROWS_D 1
    #endif
    #define CGRU_PANEL_ROWS CGRU_PANEL_ROWS_F   /* the most of either: sizes the buffers */
    /* S independent partial sums per accumulator, so that at least 12 chains of FMAs are in
       flight: with one or two rows, a single chain per register waits on the FMA latency
       (4 cycles) every step of k (batch-1 steps 1.4x faster with two chains here). */
    #define CGRU_CHAINS(T, R) (12 * CGRU_VECTOR_BYTES / (R * CGRU_PANEL * (int)sizeof(T)) > 1 \
                               ? 12 * CGRU_VECTOR_BYTES / (R * CGRU_PANEL * (int)sizeof(T)) : 1)
    /* NAME: the kernel's name suffix; CHAINS: its S (CGRU_CHAINS(T, R), or 1 for the
       single-chain kernels of cgru_panel_tile below) */
    #define CGRU_PANEL_ROWS_KERNEL(T, R, NAME, CHAINS)                                        \
    static inline void cgru_panel_##T##_##NAME(int K, const T *restrict h, long ldh,         \
                                               const T *restrict panel, T *restrict acc,      \
                                               int accumulate) {                              \
        typedef cgru_v##T V;                                                                  \
        enum { S = CHAINS, VL = CGRU_LANES(T), NV = CGRU_PANEL / VL };                        \
        V a[S][R][NV];                                                                        \
        CGRU_UNROLL for (int s = 0; s < S; s++)                                               \
            CGRU_UNROLL for (int m = 0; m < R; m++)                                           \
                CGRU_UNROLL for (int v = 0; v < NV; v++) a[s][m][v] = (V){0};                 \
        if (accumulate)                                                                       \
            CGRU_UNROLL for (int m = 0; m < R; m++)                                           \
                CGRU_UNROLL for (int v = 0; v < NV; v++)                                      \
                    a[0][m][v] = *(const V *)(acc + m * CGRU_PANEL + v * VL);                 \
        /* Rows addressed from two moving pointers (rows 0-3 and 4-7) plus fixed multiples of \
           ldh: 8 broadcasts with no address arithmetic, where GCC had added ldh once per row   \
           and step of k (S3 7%, S5 2.5% faster) */                                           \
        int k = 0;                                                                            \
        const T *hq = h;                                                                      \
        const T *hq4 = h + (R > 4 ? 4 * ldh : 0);                                             \
        const long l2 = 2 * ldh, l3 = 3 * ldh;                                                \
        for (; k + S <= K; k += S, hq += S, hq4 += S)                                         \
            CGRU_UNROLL for (int s = 0; s < S; s++) {                                         \
                const V *w = (const V *)(panel + (long)(k + s) * CGRU_PANEL);                 \
                CGRU_UNROLL for (int m = 0; m < R; m++) {                                     \
                    const T *base = m < 4 ? hq : hq4;                                         \
                    T hk = (m % 4 == 0) ? base[s] : (m % 4 == 1) ? base[ldh + s]              \
                           : (m % 4 == 2) ? base[l2 + s] : base[l3 + s];                      \
                    CGRU_UNROLL for (int v = 0; v < NV; v++) a[s][m][v] += hk * w[v];         \
                }                                                                             \
            }                                                                                 \
        for (; k < K; k++) {                                                                  \
            const V *w = (const V *)(panel + (long)k * CGRU_PANEL);                           \
            CGRU_UNROLL for (int m = 0; m < R; m++)                                           \
                CGRU_UNROLL for (int v = 0; v < NV; v++) a[0][m][v] += h[m * ldh + k] * w[v]; \
        }                                                                                     \
        CGRU_UNROLL for (int m = 0; m < R; m++)                                               \
            CGRU_UNROLL for (int v = 0; v < NV; v++) {                                        \
                V total = a[0][m][v];                                                         \
                CGRU_UNROLL for (int s = 1; s < S; s++) total += a[s][m][v];                  \
                *(V *)(acc + m * CGRU_PANEL + v * VL) = total;                                \
            }                                                                                 \
    }
    /* One kernel per row count, so that the rows left over after the blocks of 8 (a packed
       batch shrinks one sequence at a time) take one pass over the panel, not up to three
       (4 + 2 + 1 rows). 100 steps of H = 128, input 64 fused, gates included: 61 rows
       5.50 -> 5.35 ms, 5 rows 0.55 -> 0.51 ms, 3 rows 0.40 -> 0.35 ms. */
    #define CGRU_PANEL_CASE(T, MAX_ROWS, R, KERNEL)                                           \
        case R:                                                                               \
            if (MAX_ROWS >= R) {                                                              \
                cgru_panel_##T##_##KERNEL(K, h, ldh, panel, acc, accumulate);                 \
                return;                                                                       \
            }                                                                                 \
            break;
    #define CGRU_PANEL_PRODUCT(T, MAX_ROWS)                                                   \
    CGRU_PANEL_ROWS_KERNEL(T, 8, 8, CGRU_CHAINS(T, 8))                                        \
    CGRU_PANEL_ROWS_KERNEL(T, 7, 7, CGRU_CHAINS(T, 7))                                        \
    CGRU_PANEL_ROWS_KERNEL(T, 6, 6, CGRU_CHAINS(T, 6))                                        \
    CGRU_PANEL_ROWS_KERNEL(T, 5, 5, CGRU_CHAINS(T, 5))                                        \
    CGRU_PANEL_ROWS_KERNEL(T, 4, 4, CGRU_CHAINS(T, 4))                                        \
    CGRU_PANEL_ROWS_KERNEL(T, 3, 3, CGRU_CHAINS(T, 3))                                        \
    CGRU_PANEL_ROWS_KERNEL(T, 2, 2, CGRU_CHAINS(T, 2))                                        \
    CGRU_PANEL_ROWS_KERNEL(T, 1, 1, CGRU_CHAINS(T, 1))                                        \
    CGRU_PANEL_ROWS_KERNEL(T, 2, 2_single, 1)                                                 \
    CGRU_PANEL_ROWS_KERNEL(T, 1, 1_single, 1)                                                 \
    /* 1 <= rows <= MAX_ROWS; accumulate: add to acc instead of overwriting it; single_chain: \
       one chain per accumulator for every row count (CGRU_CHAINS is 1 from 3 rows on in    \
       every build, so only the 1- and 2-row kernels differ) */                               \
    static inline void cgru_panel_product_##T(int rows, int K, const T *restrict h, long ldh, \
                                              const T *restrict panel, T *restrict acc,       \
                                              int accumulate, int single_chain) {             \
        _Static_assert(CGRU_CHAINS(T, 3) == 1, "kernels of 3 rows and more sum in one chain");\
        if (single_chain && rows <= 2) {                                                      \
            if (rows == 2 && MAX_ROWS >= 2)                                                   \
                cgru_panel_##T##_2_single(K, h, ldh, panel, acc, accumulate);                 \
            else                                                                              \
                for (; rows > 0; rows--, h += ldh, acc += CGRU_PANEL)                         \
                    cgru_panel_##T##_1_single(K, h, ldh, panel, acc, accumulate);             \
            return;                                                                           \
        }                                                                                     \
        switch (rows) {                                                                       \
            CGRU_PANEL_CASE(T, MAX_ROWS, 8, 8)                                                \
            CGRU_PANEL_CASE(T, MAX_ROWS, 7, 7)                                                \
            CGRU_PANEL_CASE(T, MAX_ROWS, 6, 6)                                                \
            CGRU_PANEL_CASE(T, MAX_ROWS, 5, 5)                                                \
            CGRU_PANEL_CASE(T, MAX_ROWS, 4, 4)                                                \
            CGRU_PANEL_CASE(T, MAX_ROWS, 3, 3)                                                \
            CGRU_PANEL_CASE(T, MAX_ROWS, 2, 2)                                                \
            CGRU_PANEL_CASE(T, MAX_ROWS, 1, 1)                                                \
        }                                                                                     \
        /* more rows than the build's register block holds: never asked for */                \
        for (; rows > 0; rows--, h += ldh, acc += CGRU_PANEL)                                 \
            cgru_panel_##T##_1_single(K, h, ldh, panel, acc, accumulate);                     \
    }                                                                                         \
    /* The product of any number of rows (row m of h at h + m * ldh, of acc at acc + m * 48).   \
       A row's sums must not depend on the rows around it, so that a shuffled batch gives the  \
       shuffled result bit for bit: the 1- and 2-row kernels run several chains per          \
       accumulator (a different order of the sums) and are kept for calls whose every tile    \
       has that few rows. The caller says which (single_chain: the step, or the call, has     \
       more rows than one register block); more rows go in near-equal blocks of at most      \
       MAX_ROWS, so that none is left with one or two rows where it can be helped (9 rows:   \
       5 + 4, not 8 + 1: no slow single-chain row, and 5% faster in itself). */              \
    static inline void cgru_panel_tile_##T(int rows, int K, const T *restrict h, long ldh,    \
                                           const T *restrict panel, T *restrict acc,          \
                                           int accumulate, int single_chain) {                \
        if (rows <= MAX_ROWS) {                                                               \
            cgru_panel_product_##T(rows, K, h, ldh, panel, acc, accumulate, single_chain);    \
            return;                                                                           \
        }                                                                                     \
        const int blocks = (rows + MAX_ROWS - 1) / MAX_ROWS;                                  \
        const int size = rows / blocks, larger = rows % blocks;  /* the first ones: + 1 */    \
        for (int i = 0; i < blocks; i++) {                                                    \
            const int n = size + (i < larger);                                                \
            cgru_panel_product_##T(n, K, h, ldh, panel, acc, accumulate, 1);                  \
            h += n * ldh;                                                                     \
            acc += n * CGRU_PANEL;                                                            \
        }                                                                                     \
    }
    CGRU_PANEL_PRODUCT(float, CGRU_PANEL_ROWS_F)
    CGRU_PANEL_PRODUCT(double, CGRU_PANEL_ROWS_D)

    /* Start loading rows of h(t-1) that another thread wrote: with the hidden units split
       across threads, their cache-line transfers otherwise stall the products one by one. */
    static inline void cgru_prefetch_rows(const void *p, long ld_bytes, int rows, long bytes) {
        for (int m = 0; m < rows; m++)
            for (long c = 0; c < bytes; c += 64)
                __builtin_prefetch((const char *)p + m * ld_bytes + c, 0, 3);
    }
    """
    int CGRU_PANEL_ROWS
    int CGRU_PANEL_ROWS_F
    int CGRU_PANEL_ROWS_D
    void *cgru_alloc(size_t n) noexcept nogil
    void cgru_free(void *p) noexcept nogil
    void cgru_prefetch_rows(const void *p, long ld_bytes, int rows, long bytes) noexcept nogil
    void cgru_gate_rows_float(int rows, int u, const float *gi, long ld_gi, int si,
                              const float *gh, long ld_gh, int sh, const float *bias_gi, int sb,
                              const float *bias_hn, const float *h_prev, long ld_prev,
                              float *h_next, long ld_next, float *save,
                              long ld_save) noexcept nogil
    void cgru_gate_rows_double(int rows, int u, const double *gi, long ld_gi, int si,
                               const double *gh, long ld_gh, int sh, const double *bias_gi,
                               int sb, const double *bias_hn, const double *h_prev,
                               long ld_prev, double *h_next, long ld_next, double *save,
                               long ld_save) noexcept nogil
    void cgru_panel_tile_float(int rows, int K, const float *h, long ldh, const float *panel,
                               float *acc, int accumulate, int single_chain) noexcept nogil
    void cgru_panel_tile_double(int rows, int K, const double *h, long ldh,
                                const double *panel, double *acc, int accumulate,
                                int single_chain) noexcept nogil
