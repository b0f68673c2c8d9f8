# Design:
# One call of `gru_layer` runs one GRU layer, both directions, over a whole batch of sequences.
#
# Sequences arrive as time-major packed rows, PyTorch's PackedSequence layout: the rows of step t
# are x[offsets[t] : offsets[t] + batch_sizes[t]], and batch sizes never grow with t. A padded
# (L, N, I) batch is the special case batch_sizes = [N] * L. So the active rows of step t are always
# rows 0 .. batch_sizes[t]-1 of the hidden state, and ended sequences cost nothing.
#
# Three levels:
#   gru_layer (def)       unpacks memoryviews, allocates the workspace, releases the GIL once and
#                         opens one OpenMP parallel region for the whole sequence.
#   _worker (nogil)       one thread's schedule: per block of steps, its share of the input-projection
#                         GEMM; per step, its tile of the recurrent GEMM and the fused gate pass; one
#                         barrier per step.
#   _tile_step (nogil)    one step of one direction on one tile (rows x hidden-unit blocks).
#
# Weights arrive pre-laid-out by cgru/_layout.py: transposed, so both products are plain row-major
# NN GEMMs (OpenBLAS's transposed path is slow for small matrices), and with gate columns grouped by
# blocks of UNIT_BLOCK hidden units, [r | z | n] within each block, so a thread that owns a range of
# hidden units owns one contiguous range of columns and needs one GEMM call per step.
#
# Threads: with two directions and two or more threads, the directions run on separate teams
# (thread id modulo 2) in lock-step. Within a direction, a team splits the active rows when there
# are enough of them, and the hidden-unit blocks otherwise (small batches). The hidden state is
# double-buffered so that one barrier per step separates reading h(t-1) from writing h(t).

from cython cimport floating
from cython.parallel cimport parallel
from libc.stdint cimport int64_t
from libc.string cimport memcpy

import numpy as np

from _blas cimport gemm_nn
from _gatemath cimport cgru_gate_block_d, cgru_gate_block_f
from _openmp cimport CGRU_OPENMP, cgru_barrier, omp_get_num_threads, omp_get_thread_num

UNIT_BLOCK = 16          # hidden units per gate-column block; must match cgru/_layout.py
cdef int _UNIT_BLOCK = 16
# A team splits rows, not hidden units, once every thread gets at least this many rows: below
# it the per-thread GEMM degenerates to a matrix-vector product that re-reads all of W_hh.
cdef int _MIN_ROWS_PER_THREAD = 8

OPENMP_ENABLED = bool(CGRU_OPENMP)


cdef inline void _split(int n, int parts, int part, int *start, int *stop) noexcept nogil:
    """Contiguous share `part` of range(n) cut into `parts` near-equal pieces."""
    start[0] = <int> ((<int64_t> n * part) // parts)
    stop[0] = <int> ((<int64_t> n * (part + 1)) // parts)


cdef void _gates(int b0, int b1, int k0, int k1, int hidden,
                 const floating *gi__r3h, const floating *gh__n3h,
                 const floating *bias_gi__3h, const floating *bias_hn__h,
                 const floating *h_prev__nh, floating *h_next__nh,
                 floating *out__r, int ld_out) noexcept nogil:
    """Fused gate pass for rows b0..b1 and unit blocks k0..k1 of one step.

    gi__r3h: this step's input projections, row b at gi__r3h + b * 3H (bias not yet added).
    gh__n3h: the recurrent products h(t-1) @ W_hh^T, row b at gh__n3h + b * 3H.
    out__r:  this step's output rows, row b at out__r + b * ld_out.
    """
    cdef int g3 = 3 * hidden
    cdef int units_from = k0 * _UNIT_BLOCK
    cdef int units_to = min(k1 * _UNIT_BLOCK, hidden)
    cdef int b, k, u0, u
    cdef int64_t gi_row, gh_row, h_row
    for b in range(b0, b1):
        gi_row = <int64_t> b * g3
        gh_row = <int64_t> b * g3
        h_row = <int64_t> b * hidden
        for k in range(k0, k1):
            u0 = k * _UNIT_BLOCK
            u = min(_UNIT_BLOCK, hidden - u0)
            # a block's columns start at 3 * u0: every block before it is full
            if floating is float:
                cgru_gate_block_f(u, gi__r3h + gi_row + 3 * u0, gh__n3h + gh_row + 3 * u0,
                                  bias_gi__3h + 3 * u0, bias_hn__h + u0,
                                  h_prev__nh + h_row + u0, h_next__nh + h_row + u0)
            else:
                cgru_gate_block_d(u, gi__r3h + gi_row + 3 * u0, gh__n3h + gh_row + 3 * u0,
                                  bias_gi__3h + 3 * u0, bias_hn__h + u0,
                                  h_prev__nh + h_row + u0, h_next__nh + h_row + u0)
        memcpy(out__r + <int64_t> b * ld_out + units_from, h_next__nh + h_row + units_from,
               (units_to - units_from) * sizeof(floating))


cdef void _worker(int tid, int n_threads, int n_dirs, int n_steps, int steps_per_block,
                  int input_size, int hidden,
                  const int64_t *batch_sizes, const int64_t *offsets,
                  const floating *x__ri, floating *out__r2h,
                  const floating *w_ih__di3h, const floating *w_hh__dh3h,
                  const floating *bias_gi__d3h, const floating *bias_hn__dh,
                  floating *gi__dr3h, int64_t gi_rows,
                  floating *gh__dn3h, floating *h__d2nh, int batch) noexcept nogil:
    """The whole schedule of thread `tid` of `n_threads` for one layer."""
    cdef int g3 = 3 * hidden
    cdef int ld_out = n_dirs * hidden
    cdef int n_blocks = (hidden + _UNIT_BLOCK - 1) // _UNIT_BLOCK
    cdef int d_first, d_last, team, team_size, d
    cdef int s0, s1, s, t, rows_lo, rows_hi, r0, r1, bs, b0, b1, k0, k1, c0, c1
    cdef int64_t row_start, row_stop
    cdef const floating *w_hh
    cdef floating *gi
    cdef floating *gh
    cdef floating *h_prev
    cdef floating *h_next

    if n_threads >= n_dirs:
        # one team per direction, lock-step; team d is the threads with tid % n_dirs == d
        d_first = tid % n_dirs
        d_last = d_first + 1
        team = tid // n_dirs
        team_size = (n_threads - d_first + n_dirs - 1) // n_dirs
    else:
        # a single thread runs both directions in turn
        d_first = 0
        d_last = n_dirs
        team = tid
        team_size = n_threads

    s0 = 0
    while s0 < n_steps:
        s1 = min(s0 + steps_per_block, n_steps)
        # Input projections of this block of steps: one GEMM over its rows, split across the team.
        for d in range(d_first, d_last):
            if d == 0:
                row_start = offsets[s0]
                row_stop = offsets[s1]
            else:
                row_start = offsets[n_steps - s1]
                row_stop = offsets[n_steps - s0]
            _split(<int> (row_stop - row_start), team_size, team, &r0, &r1)
            if r1 > r0:
                gemm_nn(r1 - r0, g3, input_size,
                        x__ri + (row_start + r0) * input_size, input_size,
                        w_ih__di3h + <int64_t> d * input_size * g3, g3,
                        0.0, gi__dr3h + (d * gi_rows + r0) * g3, g3)
        cgru_barrier()

        for s in range(s0, s1):
            for d in range(d_first, d_last):
                t = s if d == 0 else n_steps - 1 - s
                bs = <int> batch_sizes[t]
                if bs >= team_size * _MIN_ROWS_PER_THREAD or n_blocks < team_size:
                    _split(bs, team_size, team, &b0, &b1)
                    k0 = 0
                    k1 = n_blocks
                else:
                    b0 = 0
                    b1 = bs
                    _split(n_blocks, team_size, team, &k0, &k1)
                if b1 <= b0 or k1 <= k0:
                    continue
                row_start = offsets[s0] if d == 0 else offsets[n_steps - s1]
                gi = gi__dr3h + (d * gi_rows + offsets[t] - row_start) * g3
                gh = gh__dn3h + <int64_t> d * batch * g3
                h_prev = h__d2nh + (<int64_t> (2 * d + s % 2) * batch) * hidden
                h_next = h__d2nh + (<int64_t> (2 * d + (s + 1) % 2) * batch) * hidden
                w_hh = w_hh__dh3h + <int64_t> d * hidden * g3
                c0 = 3 * _UNIT_BLOCK * k0
                c1 = min(3 * _UNIT_BLOCK * k1, g3)
                gemm_nn(b1 - b0, c1 - c0, hidden,
                        h_prev + <int64_t> b0 * hidden, hidden,
                        w_hh + c0, g3,
                        0.0, gh + <int64_t> b0 * g3 + c0, g3)
                _gates(b0, b1, k0, k1, hidden, gi, gh,
                       bias_gi__d3h + <int64_t> d * g3, bias_hn__dh + <int64_t> d * hidden,
                       h_prev, h_next, out__r2h + offsets[t] * ld_out + d * hidden, ld_out)
            cgru_barrier()
        s0 = s1


cdef void _gather_final_states(const int64_t *batch_sizes, const int64_t *offsets,
                               int n_steps, int n_dirs, int hidden,
                               const floating *out__r2h, floating *h__dnh, int batch) noexcept nogil:
    """h_n from the output rows: a forward sequence ends at its own last step, a reverse one at 0."""
    cdef int ld_out = n_dirs * hidden
    cdef int d, t, b, j, ended_from
    cdef const floating *src
    cdef floating *dst
    for d in range(n_dirs):
        for t in range(n_steps if d == 0 else 1):
            # rows bs[t+1] .. bs[t]-1 are active at t and not at t+1 (forward); all rows at t=0 (reverse)
            ended_from = <int> batch_sizes[t + 1] if (d == 0 and t + 1 < n_steps) else 0
            for b in range(ended_from, <int> batch_sizes[t]):
                src = out__r2h + (offsets[t] + b) * ld_out + d * hidden
                dst = h__dnh + (<int64_t> d * batch + b) * hidden
                for j in range(hidden):
                    dst[j] = src[j]


def gru_layer(const floating[:, ::1] x,
              const floating[:, :, ::1] w_ih,
              const floating[:, :, ::1] w_hh,
              const floating[:, ::1] bias_gi,
              const floating[:, ::1] bias_hn,
              const int64_t[::1] batch_sizes,
              floating[:, :, ::1] h,
              floating[:, ::1] out,
              int n_threads,
              int steps_per_block):
    """Run one GRU layer, all its directions, over packed time-major rows.

    Shapes, where R = sum(batch_sizes), L = len(batch_sizes), N = batch_sizes[0], D directions,
    I input features, H hidden units, and weights laid out by cgru/_layout.py:
        x           (R, I)       rows of step t follow those of step t-1
        w_ih        (D, I, 3H)   transposed, gate columns in unit blocks
        w_hh        (D, H, 3H)   likewise
        bias_gi     (D, 3H)      b_ih + b_hh for r and z, b_in for n, same column order
        bias_hn     (D, H)       b_hn, added inside r * (...)
        batch_sizes (L,)         non-increasing, >= 1; the caller has checked this
        h           (D, N, H)    in: h_0; out: each sequence's state after its last step
        out         (R, D*H)     written: every row's new hidden state, directions side by side
    steps_per_block bounds the input-projection workspace to about steps_per_block * N rows.
    Nothing is checked here: cgru/gru.py validates every argument before calling.
    """
    cdef int n_steps = batch_sizes.shape[0]
    cdef int n_dirs = w_ih.shape[0]
    cdef int input_size = x.shape[1]
    cdef int hidden = h.shape[2]
    cdef int batch = h.shape[1]
    cdef int g3 = 3 * hidden
    cdef int t, d, b, n_blocks
    cdef int64_t gi_rows = 0
    cdef int64_t[::1] offsets = np.zeros(n_steps + 1, dtype=np.int64)

    for t in range(n_steps):
        offsets[t + 1] = offsets[t] + batch_sizes[t]
    steps_per_block = max(1, min(steps_per_block, n_steps))
    for t in range(0, n_steps, steps_per_block):
        gi_rows = max(gi_rows, offsets[min(t + steps_per_block, n_steps)] - offsets[t])
    if n_dirs == 2:  # the reverse direction cuts its blocks from the other end
        for t in range(n_steps, 0, -steps_per_block):
            gi_rows = max(gi_rows, offsets[t] - offsets[max(t - steps_per_block, 0)])

    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, :, ::1] gi = np.empty((n_dirs, gi_rows, g3), dtype=dtype)
    cdef floating[:, :, ::1] gh = np.empty((n_dirs, batch, g3), dtype=dtype)
    cdef floating[:, :, :, ::1] h2 = np.empty((n_dirs, 2, batch, hidden), dtype=dtype)
    h2[:, 0] = h
    h2[:, 1] = h   # a reverse sequence that joins late starts from h_0 in either buffer

    n_blocks = (hidden + _UNIT_BLOCK - 1) // _UNIT_BLOCK
    n_threads = max(1, min(n_threads, n_dirs * max(batch, n_blocks)))

    with nogil:
        if n_threads == 1:
            _worker(0, 1, n_dirs, n_steps, steps_per_block, input_size, hidden,
                    &batch_sizes[0], &offsets[0], &x[0, 0], &out[0, 0],
                    &w_ih[0, 0, 0], &w_hh[0, 0, 0], &bias_gi[0, 0], &bias_hn[0, 0],
                    &gi[0, 0, 0], gi_rows, &gh[0, 0, 0], &h2[0, 0, 0, 0], batch)
        else:
            with parallel(num_threads=n_threads):
                _worker(omp_get_thread_num(), omp_get_num_threads(), n_dirs, n_steps,
                        steps_per_block, input_size, hidden,
                        &batch_sizes[0], &offsets[0], &x[0, 0], &out[0, 0],
                        &w_ih[0, 0, 0], &w_hh[0, 0, 0], &bias_gi[0, 0], &bias_hn[0, 0],
                        &gi[0, 0, 0], gi_rows, &gh[0, 0, 0], &h2[0, 0, 0, 0], batch)

        _gather_final_states(&batch_sizes[0], &offsets[0], n_steps, n_dirs, hidden,
                             &out[0, 0], &h[0, 0, 0], batch)
