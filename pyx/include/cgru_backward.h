/* The elementwise core of the backward pass, in C for `restrict`: one pass per row over the
   saved gates turns dL/dh(t) into the gradients of the six pre-activations and the direct part
   of dL/dh(t-1). Plain loops over each block of u <= 16 units, which GCC vectorizes at the
   build's width; they are a few percent of the backward's time, the products being the rest.

   With h' = n + z * (h - n), n = tanh(a_n), a_n = gi_n + r * hn, hn = W_hn h + b_hn,
   r = sigmoid(a_r), z = sigmoid(a_z), and g = dL/dh':
     da_n = g * (1 - z) * (1 - n^2)
     da_r = da_n * hn * r * (1 - r)
     da_z = g * (h - n) * z * (1 - z)
     dL/dgi = [da_r | da_z | da_n],  dL/dgh = [da_r | da_z | da_n * r],  dL/dh (direct) = g * z */

#ifndef CGRU_BACKWARD_H
#define CGRU_BACKWARD_H

#include "cgru_vec.h"   /* CGRU_FMAS */

/* rows of one step: save (row m at save + m * 4H; unit block k's r | z | n | hn at 4 * 16k,
   gate stride u); h_prev, the rows' h(t-1) (row m at h_prev + m * H); g = dL/dh' from the
   later steps (row m at
   g + m * ld_g; replaced by g * z), to which g_out, the output's gradient (row m at
   g_out + m * ld_out), is added first, and g_out2 likewise unless it is NULL (the other
   direction's share of dL/dx of the layer above: added here, not by a pass of its own); dgi and dgh (row m at + m * 3H; block k's gates at
   3 * 16k, gate stride u: the forward's projection layout); db, the rows' sums so far (block
   k's sum(da_r) | sum(da_z) | sum(da_n) | sum(da_n * r) at 4 * 16k, gate stride u, as save):
   summed here, while the row is in registers, the bias gradients cost no second pass over
   dgi and dgh (S5 backward, one thread: that pass took 6 ms of 535). */
#define CGRU_GATE_GRADS(T) \
static inline void cgru_gate_grads_##T(int rows, int hidden, const T *restrict save, \
                                       const T *restrict h_prev, \
                                       const T *restrict g_out, \
                                       const T *restrict g_out2, long ld_out, \
                                       T *restrict g, long ld_g, T *restrict dgi, \
                                       T *restrict dgh, T *restrict db) { \
    for (int m = 0; m < rows; m++) { \
        const T *sv_row = save + (long)m * 4 * hidden; \
        const T *hp_row = h_prev + (long)m * hidden; \
        const T *go_row = g_out + m * ld_out; \
        T *g_row = g + m * ld_g; \
        T *gi_row = dgi + (long)m * 3 * hidden, *gh_row = dgh + (long)m * 3 * hidden; \
        if (g_out2 != NULL) { \
            const T *restrict go2_row = g_out2 + m * ld_out; \
            for (int j = 0; j < hidden; j++) \
                g_row[j] += go2_row[j]; \
        } \
        for (int u0 = 0; u0 < hidden; u0 += 16) { \
            const int u = hidden - u0 < 16 ? hidden - u0 : 16; \
            const T *restrict r = sv_row + 4 * u0, *restrict z = r + u; \
            const T *restrict n = r + 2 * u, *restrict hn = r + 3 * u; \
            const T *restrict hp = hp_row + u0, *restrict go = go_row + u0; \
            T *restrict gg = g_row + u0; \
            T *restrict gi = gi_row + 3 * u0, *restrict gh = gh_row + 3 * u0; \
            T *restrict sr = db + 4 * u0, *restrict sz = sr + u; \
            T *restrict sn = sr + 2 * u, *restrict snr = sr + 3 * u; \
            _Pragma("GCC ivdep") \
            for (int j = 0; j < u; j++) { \
                const T gj = gg[j] + go[j], rj = r[j], zj = z[j], nj = n[j]; \
                const T dan = gj * (1 - zj) * CGRU_FMAS(T, -nj, nj, 1); \
                const T dar = dan * hn[j] * rj * (1 - rj); \
                const T daz = gj * (hp[j] - nj) * zj * (1 - zj); \
                gi[j] = dar; gi[u + j] = daz; gi[2 * u + j] = dan; \
                gh[j] = dar; gh[u + j] = daz; gh[2 * u + j] = dan * rj; \
                gg[j] = gj * zj; \
                sr[j] += dar; sz[j] += daz; sn[j] += dan; snr[j] += dan * rj; \
            } \
        } \
    } \
}
CGRU_GATE_GRADS(float)
CGRU_GATE_GRADS(double)

#endif  /* CGRU_BACKWARD_H */
