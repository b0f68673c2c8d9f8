/* The fused gate pass of a step (r, z, n and the new state) over blocks of 16 hidden units,
   in C with the vector types of cgru_vec.h: see there why.

   Why not plain loops: GCC vectorized them, but it built the n gate's inputs element by element
   (vinsertps) in the gate pass, and copied the product accumulators through the stack on entry
   and exit (rep movsq), 10-30% of a 40- or 128-deep product. */

#ifndef CGRU_GATES_H
#define CGRU_GATES_H

#include "cgru_vec.h"

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
                       long ld_save, int ss, T *save_h, long ld_save_h) {                 \
    typedef cgru_v##T V;                                                                  \
    const V one = (V){0} + 1;                                                             \
    for (int c = 0; c < CGRU_UB; c += CGRU_LANES(T)) {  /* 1 to 8 vectors */              \
        const V b_r = *(const V *)(bias_gi + c), b_z = *(const V *)(bias_gi + sb + c);    \
        const V b_n = *(const V *)(bias_gi + 2 * sb + c);                                 \
        const V b_hn = *(const V *)(bias_hn + c);                                         \
        V r[P], z[P], n[P];                                                               \
        CGRU_UNROLL for (int p = 0; p < P; p++) {                                         \
            const T *x = gi + p * ld_gi + c, *y = gh + p * ld_gh + c;                     \
            r[p] = cgru_recip_##T(cgru_exp1p_##T(-(*(const V *)x + b_r                    \
                                                  + *(const V *)y)));                     \
        }                                                                                 \
        CGRU_UNROLL for (int p = 0; p < P; p++) {                                         \
            const T *x = gi + p * ld_gi + si + c, *y = gh + p * ld_gh + sh + c;           \
            z[p] = cgru_recip_##T(cgru_exp1p_##T(-(*(const V *)x + b_z                    \
                                                  + *(const V *)y)));                     \
        }                                                                                 \
        CGRU_UNROLL for (int p = 0; p < P; p++) {                                         \
            const T *x = gi + p * ld_gi + 2 * si + c, *y = gh + p * ld_gh + 2 * sh + c;   \
            V hn = *(const V *)y + b_hn;                                                  \
            V a = CGRU_FMA(T, r[p], hn, *(const V *)x + b_n);                             \
            /* n = tanh(a) = 2 / (1 + exp(-2a)) - 1 */                                    \
            n[p] = CGRU_FMA1(T, 2, cgru_recip_##T(cgru_exp1p_##T(-2 * a)), -one);         \
            if (SAVE) {   /* what the backward pass needs: r | z | n | W_hn h + b_hn */   \
                T *to = save + p * ld_save + c;                                           \
                *(V *)to = r[p];                                                          \
                *(V *)(to + ss) = z[p];                                                   \
                *(V *)(to + 2 * ss) = n[p];                                               \
                *(V *)(to + 3 * ss) = hn;                                                 \
            }                                                                             \
        }                                                                                 \
        /* h' = (1 - z) * n + z * h, written as ATen's CPU cell writes it */              \
        CGRU_UNROLL for (int p = 0; p < P; p++) {                                         \
            const V h = *(const V *)(h_prev + p * ld_prev + c);                           \
            if (SAVE)     /* and h(t-1), the backward's operand of dL/dW_hh */            \
                *(V *)(save_h + p * ld_save_h + c) = h;                                   \
            *(V *)(h_next + p * ld_next + c) = CGRU_FMA(T, z[p], h - n[p], n[p]);         \
        }                                                                                 \
    }                                                                                     \
}
/* save (NULL: the forward alone): row m's r, z, n and W_hn h + b_hn of these units at
   save + m * ld_save + g * ss, and its h(t-1) at save_h + m * ld_save_h, for the backward
   pass (the state a step starts from is what the weight gradient of W_hh multiplies: kept
   here, the tape needs no output rows, and vjp hands its output to the caller without a
   copy; kept apart from the gates, the backward reads both in order: interleaved in one
   row of 5H, its gate-gradient pass took 40% longer).
   A separate instantiation, so that the inference path carries no store and no test.
   Where the saved rows are vector-aligned, four rows at a time go through a staging block in
   L1 and on to memory by non-temporal stores, whole lines one after the other (the caller
   fences them once, cgru_stream_fence, before another thread may read them). Stored in
   place, the 4H values per row (4x the state) took the read of each line first and pushed
   the weight panels out of L2: the forward of vjp took 15% more than the forward on S4 at
   one thread, 17% on S8; staged and streamed, 6%. Streamed straight from the gate pass,
   half-lines four lines apart, it was slower still (+26%). Blocks of fewer than four rows
   never go there: the staging block's aligned stack frame, inlined into every call, made
   S2's one-row steps 5% slower. */
/* The parameters of every gate-rows function (see cgru_gate_rows_T at the end). */
#define CGRU_GATE_ROWS_PARAMS(T)                                                          \
    int rows, int u, const T *restrict gi, long ld_gi, int si, const T *restrict gh,      \
    long ld_gh, int sh, const T *restrict bias_gi, int sb, const T *restrict bias_hn,     \
    const T *restrict h_prev, long ld_prev, T *restrict h_next, long ld_next,            \
    T *restrict save, long ld_save, T *restrict save_h, long ld_save_h
#define CGRU_GATE_ROWS(T, SAVE)                                                           \
static inline void cgru_gate_rows_##T##_##SAVE(CGRU_GATE_ROWS_PARAMS(T)) {                \
    if (u == CGRU_UB) {                                                                   \
        int m = 0;                                                                        \
        for (; m + 4 <= rows; m += 4)                                                     \
            cgru_gates16_##T##_4_##SAVE(gi + m * ld_gi, ld_gi, si, gh + m * ld_gh, ld_gh, \
                                 sh, bias_gi, sb, bias_hn, h_prev + m * ld_prev, ld_prev, \
                                 h_next + m * ld_next, ld_next, save + m * ld_save,       \
                                 ld_save, CGRU_UB, save_h + m * ld_save_h, ld_save_h);    \
        for (; m + 2 <= rows; m += 2)                                                     \
            cgru_gates16_##T##_2_##SAVE(gi + m * ld_gi, ld_gi, si, gh + m * ld_gh, ld_gh, \
                                 sh, bias_gi, sb, bias_hn, h_prev + m * ld_prev, ld_prev, \
                                 h_next + m * ld_next, ld_next, save + m * ld_save,       \
                                 ld_save, CGRU_UB, save_h + m * ld_save_h, ld_save_h);    \
        if (m < rows)                                                                     \
            cgru_gates16_##T##_1_##SAVE(gi + m * ld_gi, 0, si, gh + m * ld_gh, 0, sh,     \
                                 bias_gi, sb, bias_hn, h_prev + m * ld_prev, 0,           \
                                 h_next + m * ld_next, 0, save + m * ld_save, 0,          \
                                 CGRU_UB, save_h + m * ld_save_h, ld_save_h);             \
        return;                                                                           \
    }                                                                                     \
    T bias[4][CGRU_UB] = {{0}};                                                           \
    for (int g = 0; g < 3; g++) memcpy(bias[g], bias_gi + g * sb, u * sizeof(T));         \
    memcpy(bias[3], bias_hn, u * sizeof(T));                                              \
    for (int m = 0; m < rows; m++) {                                                      \
        T in[7][CGRU_UB] = {{0}}, out[CGRU_UB], kept[5][CGRU_UB];                         \
        const T *from[7] = {gi + m * ld_gi, gi + m * ld_gi + si, gi + m * ld_gi + 2 * si, \
                            gh + m * ld_gh, gh + m * ld_gh + sh, gh + m * ld_gh + 2 * sh, \
                            h_prev + m * ld_prev};                                        \
        for (int i = 0; i < 7; i++) memcpy(in[i], from[i], u * sizeof(T));                \
        cgru_gates16_##T##_1_##SAVE(in[0], 0, CGRU_UB, in[3], 0, CGRU_UB, bias[0],        \
                             CGRU_UB, bias[3], in[6], 0, out, 0, kept[0], 0, CGRU_UB,     \
                             kept[4], 0);                                                 \
        memcpy(h_next + m * ld_next, out, u * sizeof(T));                                 \
        if (SAVE) {                                                                       \
            for (int g = 0; g < 4; g++)                                                   \
                memcpy(save + m * ld_save + g * u, kept[g], u * sizeof(T));               \
            memcpy(save_h + m * ld_save_h, kept[4], u * sizeof(T));                       \
        }                                                                                 \
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
static __attribute__((noinline)) void                                                     \
cgru_gate_rows_streamed_##T(CGRU_GATE_ROWS_PARAMS(T)) {                                   \
    /* per row: the four gates of the block, then h(t-1) */                               \
    T stage[4][5 * CGRU_UB] __attribute__((aligned(64)));                                 \
    int m = 0;                                                                            \
    for (; u == CGRU_UB && m + 4 <= rows; m += 4) {                                       \
        cgru_gates16_##T##_4_1(gi + m * ld_gi, ld_gi, si, gh + m * ld_gh, ld_gh, sh,      \
                               bias_gi, sb, bias_hn, h_prev + m * ld_prev, ld_prev,       \
                               h_next + m * ld_next, ld_next, stage[0], 5 * CGRU_UB,      \
                               CGRU_UB, stage[0] + 4 * CGRU_UB, 5 * CGRU_UB);             \
        for (int p = 0; p < 4; p++) {   /* whole lines, one after the other */            \
            for (int c = 0; c < 4 * CGRU_UB; c += CGRU_LANES(T))                          \
                CGRU_STREAM(T, save + (m + p) * ld_save + c,                              \
                            *(const cgru_v##T *)(stage[p] + c));                          \
            for (int c = 0; c < CGRU_UB; c += CGRU_LANES(T))                              \
                CGRU_STREAM(T, save_h + (m + p) * ld_save_h + c,                          \
                            *(const cgru_v##T *)(stage[p] + 4 * CGRU_UB + c));            \
        }                                                                                 \
    }                                                                                     \
    if (m < rows)                                                                         \
        cgru_gate_rows_##T##_1(rows - m, u, gi + m * ld_gi, ld_gi, si, gh + m * ld_gh,    \
                               ld_gh, sh, bias_gi, sb, bias_hn, h_prev + m * ld_prev,     \
                               ld_prev, h_next + m * ld_next, ld_next,                    \
                               save + m * ld_save, ld_save, save_h + m * ld_save_h,       \
                               ld_save_h);                                                \
}                                                                                         \
static inline void cgru_gate_rows_##T(int rows, int u, const T *gi, long ld_gi, int si,   \
                                      const T *gh, long ld_gh, int sh, const T *bias_gi,  \
                                      int sb, const T *bias_hn, const T *h_prev,          \
                                      long ld_prev, T *h_next, long ld_next, T *save,     \
                                      long ld_save, T *save_h, long ld_save_h) {          \
    if (save && rows >= 4 && u == CGRU_UB                                                 \
        && ((uintptr_t)save | (uintptr_t)save_h | (uintptr_t)(ld_save | ld_save_h)       \
            * sizeof(T)) % CGRU_VECTOR_BYTES == 0)                                        \
        cgru_gate_rows_streamed_##T(rows, u, gi, ld_gi, si, gh, ld_gh, sh, bias_gi, sb,   \
                                    bias_hn, h_prev, ld_prev, h_next, ld_next, save,      \
                                    ld_save, save_h, ld_save_h);                          \
    else if (save)                                                                        \
        cgru_gate_rows_##T##_1(rows, u, gi, ld_gi, si, gh, ld_gh, sh, bias_gi, sb,        \
                               bias_hn, h_prev, ld_prev, h_next, ld_next, save, ld_save,  \
                               save_h, ld_save_h);                                        \
    else                                                                                  \
        cgru_gate_rows_##T##_0(rows, u, gi, ld_gi, si, gh, ld_gh, sh, bias_gi, sb,        \
                               bias_hn, h_prev, ld_prev, h_next, ld_next, save, ld_save,  \
                               save_h, ld_save_h);                                        \
}
CGRU_GATE_BLOCK(float)
CGRU_GATE_BLOCK(double)

#endif  /* CGRU_GATES_H */
