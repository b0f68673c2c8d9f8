# Design:
# One call of `gru_layer` runs one GRU layer, both directions, over a whole batch of sequences.
#
# Sequences arrive as time-major packed rows, PyTorch's PackedSequence layout: the rows of step t
# are x[offsets[t] : offsets[t] + batch_sizes[t]], and batch sizes never grow with t. A padded
# (L, N, I) batch is the special case batch_sizes = [N] * L. So the active rows of step t are always
# rows 0 .. batch_sizes[t]-1 of the hidden state, and ended sequences cost nothing.
#
# Four levels:
#   gru_layer (def)     takes the memoryviews and the LayerWeights, releases the GIL once;
#                       _run_layer allocates the workspace and opens one OpenMP parallel region
#                       for the whole sequence.
#   _worker (nogil)     one thread's schedule: which direction(s) it runs, in which team.
#   _direction (nogil)  one direction as one member of its team: per block of steps, its share of
#                       the input-projection GEMM (unless the projection is fused into the step);
#                       per step, its tiles.
#   _tile_step (nogil)  one step of one direction on one tile (rows x blocks of hidden units): the
#                       products (register-blocked panels, or BLAS for large tiles), then the fused
#                       gate pass (pyx/include/cgru_gates.h).
#
# Weights arrive pre-laid-out by cgru/_layout.py, once per parameter change, 64-byte aligned:
#   * transposed, (K, 3H), so BLAS products are plain row-major NN GEMMs (OpenBLAS's transposed
#     path is slow for small matrices), with gate columns grouped by blocks of UNIT_BLOCK hidden
#     units, [r | z | n] within each block: a thread owning a range of hidden units owns one
#     contiguous range of columns;
#   * W_hh and W_ih also as one (K, 48) panel per block of units, for the register-blocked
#     products: BLAS re-packs its operand on every call (12% of S6's time), which dominates at
#     small batch, and its call overhead dominates one-step calls.
#
# State: h(t) is written once, into the output rows of step t, and step t+1 reads it there
# (a reverse sequence that has not started yet reads h_0); h_n is gathered at the end.
#
# Threads: with two directions and two or more threads, the directions run on separate teams
# (thread id modulo 2) in lock-step. Within a direction, a team splits the sequences when there
# are enough of them (fixed, work-balanced slices: no barrier per step), and the hidden-unit
# blocks otherwise (small batches: each thread keeps its slice of the weights in its own cache,
# one barrier per step). Which of the two, and every other choice of path (panels or BLAS for a
# tile and for a block's input projection, the projection fused into the step or not, the
# steps per block), is policy: cgru/_run.py decides and passes the decisions in, and the kernel
# only clamps what its workspace could not hold (see gru_layer).

from cython cimport floating
from cython.parallel cimport parallel
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from _blas cimport gemm
from _inner cimport (CGRU_PANEL_ROWS, CGRU_PANEL_ROWS_D, CGRU_PANEL_ROWS_F, cgru_alloc,
                     cgru_free, cgru_gate_rows_double, cgru_gate_rows_float,
                     cgru_panel_tile_cols_double, cgru_panel_tile_cols_float, cgru_prefetch_rows,
                     cgru_stream_fence)
from _openmp cimport CGRU_OPENMP, cgru_barrier, omp_get_num_threads, omp_get_thread_num

UNIT_BLOCK = 16          # hidden units per gate-column block; cgru/_layout.py reads it here
PANEL_WIDTH = 48         # columns of a weight panel: r, z, n of one block, zero padded
OPENMP_ENABLED = bool(CGRU_OPENMP)
# Rows of the register block of this build, float and double: cgru/_run.py's policy reads them
# (PANEL_ROWS_MAX bounds gru_layer's projection_panel_rows)
PANEL_ROWS_FLOAT = CGRU_PANEL_ROWS_F
PANEL_ROWS_DOUBLE = CGRU_PANEL_ROWS_D
PANEL_ROWS_MAX = CGRU_PANEL_ROWS

cdef enum:
    _UB = 16
    _PANEL = 48
    _K_CHUNK = 128      # float rows of a panel chunk kept in L1: 128 x 48 x 4 B = 24 KB


cdef enum:
    QUANT_BF16 = 1      # Shape.quant: W_hh panels in bfloat16 (pyx/_quant.pxi)
    QUANT_INT8 = 2      # int8 weights, h quantized per step and row


cdef struct Shape:
    int n_dirs, n_steps, steps_per_block, input_size, hidden, batch, n_blocks
    int64_t gi_rows          # rows of the input-projection workspace per direction
    int panel_max_rows       # tiles of at most this many rows use the W_hh panels, others BLAS
    int projection_panel_rows  # a block's input projection of at most this many rows per
                             # thread of the team uses the W_ih panels, more one BLAS GEMM
    bint split_rows          # a team splits the sequences (else the hidden units of each step)
    bint fused               # input projection computed per step from the W_ih panels
    int acc_rows             # rows of a thread's panel accumulators: the largest panel tile
    int64_t acc_stride       # floats of a thread's workspace: accumulators (+ quantized rows)
    # Reduced precision (pyx/_quant.pxi; float only): 0 float weights, else QUANT_BF16 or
    # QUANT_INT8, the W_hh panels then in q_hh_panels (k-paired) and the products on them.
    int quant
    const void *q_hh_panels  # (D, K, ceil(H/2), 48) words: bf16 pairs, or int8 pairs
    const float *q_hh_scales # int8: (D, K, 48) the weight scale of each panel column
    const void *q_ih_panels  # int8: (D, K, ceil(I/2), 48, 2) W_ih's panels, k-paired; NULL:
                             # the input projection runs in float32 (sgemm), as for bfloat16
    const float *q_ih_scales # int8: (D, K, 48)


cdef inline void _split(int n, int parts, int part, int *start, int *stop) noexcept nogil:
    """Contiguous share `part` of range(n) cut into `parts` near-equal pieces."""
    start[0] = <int> ((<int64_t> n * part) // parts)
    stop[0] = <int> ((<int64_t> n * (part + 1)) // parts)


cdef inline int _panel_rows(const floating *dtype_only) noexcept nogil:
    """Rows the register-blocked product handles at once for this dtype and build."""
    if floating is float:
        return CGRU_PANEL_ROWS_F
    else:
        return CGRU_PANEL_ROWS_D


cdef void _tile_product(int b0, int b1, int depth, const floating *h, long ldh,
                        const floating *panel, floating *acc__r48, bint single_chain,
                        int cols) noexcept nogil:
    """acc[b - b0] = h[b] @ panel for rows b0..b1, k-blocked: a chunk of the panel (24 KB)
    stays in L1 while every row group of the tile uses it, where a whole K x 48 panel (96 KB
    at K = 512) was re-read from L2 by each group of rows. single_chain: sum every row in the
    one order that does not depend on the rows around it, as the callers ask whenever the
    rows that must agree are spread over more than one register block or thread (see
    cgru_panel_tile in pyx/include/cgru_panels.h). cols: the panel columns wanted (the
    first 16, 32 or all 48 are computed)."""
    cdef int kc, kn
    cdef int chunk = _K_CHUNK if floating is float else _K_CHUNK // 2
    kc = 0
    while kc < depth:
        kn = min(chunk, depth - kc)
        if floating is float:
            cgru_panel_tile_cols_float(b1 - b0, cols, kn, h + <int64_t> b0 * ldh + kc, ldh,
                                       panel + <int64_t> kc * _PANEL, acc__r48, kc > 0,
                                       single_chain)
        else:
            cgru_panel_tile_cols_double(b1 - b0, cols, kn, h + <int64_t> b0 * ldh + kc, ldh,
                                        panel + <int64_t> kc * _PANEL, acc__r48, kc > 0,
                                        single_chain)
        kc += kn


cdef inline void _gate_rows(int rows, int u, const floating *gi, long ld_gi, int si,
                            const floating *gh, long ld_gh, int sh, const floating *bias_gi,
                            const floating *bias_hn, const floating *h_prev, long ld_prev,
                            floating *h_next, long ld_next, floating *save,
                            long ld_save, floating *save_h, long ld_save_h) noexcept nogil:
    """Gates of one block of u units of `rows` rows; bias_gi in the compact layout (stride u).
    save: NULL, or where row m's r | z | n | W_hn h + b_hn go (save + m * ld_save, stride u),
    and save_h where its h(t-1) goes (save_h + m * ld_save_h)."""
    if floating is float:
        cgru_gate_rows_float(rows, u, gi, ld_gi, si, gh, ld_gh, sh, bias_gi, u, bias_hn,
                             h_prev, ld_prev, h_next, ld_next, save, ld_save, save_h,
                             ld_save_h)
    else:
        cgru_gate_rows_double(rows, u, gi, ld_gi, si, gh, ld_gh, sh, bias_gi, u, bias_hn,
                              h_prev, ld_prev, h_next, ld_next, save, ld_save, save_h,
                              ld_save_h)


cdef inline floating *_saved_at(floating *save__n4h, int b, int hidden, int u0) noexcept nogil:
    """Row b, unit block at u0 of a step's saved gates (NULL when nothing is saved)."""
    if save__n4h == NULL:
        return NULL
    return save__n4h + <int64_t> b * 4 * hidden + 4 * u0


cdef inline floating *_saved_state_at(floating *states__nh, int b, int hidden,
                                      int u0) noexcept nogil:
    """Row b, units from u0 of a step's saved h(t-1) (NULL when nothing is saved)."""
    if states__nh == NULL:
        return NULL
    return states__nh + <int64_t> b * hidden + u0


cdef void _tile_step(const Shape *shape, int d, int b0, int b1, int k0, int k1, bint backwards,
                     const floating *gi__n3h, const floating *x__ni,
                     const floating *ih_panels__ki48, const floating *w_hh__h3h,
                     const floating *panels__kh48, const floating *bias_gi__3h,
                     const floating *bias_hn__h, const floating *h_prev, int ld_prev,
                     floating *h_next, int ld_next, floating *gh__n3h,
                     floating *acc__r48, floating *save__n4h, floating *states__nh,
                     bint single_chain) noexcept nogil:
    """Rows b0..b1, unit blocks k0..k1 of one step of one direction.

    gi__n3h:  this step's input projections (bias not added), row b at gi__n3h + b * 3H; or,
              when the projection is fused (shape.fused), NULL, and x__ni this step's input
              rows (row b at x__ni + b * I), projected here through the W_ih panels.
    gh__n3h:  workspace for the BLAS path's recurrent products, same layout.
    acc__r48: this thread's 2 x acc_rows x 48 accumulators for the panel path.
    h_prev:   h(t-1), row b at h_prev + b * ld_prev (the previous step's output rows, or h_0).
    h_next:   this step's output rows, row b at h_next + b * ld_next: the state lives there.
    backwards: visit the unit blocks from k1 - 1 down to k0 (panel path).
    d:        the direction, for the reduced-precision panels (shape.quant).
    save__n4h: NULL, or this step's saved gates for the backward pass: row b at
              save__n4h + b * 4H, unit block k's r | z | n | W_hn h + b_hn at 4 * 16k;
    states__nh: with save__n4h, where row b's h(t-1) is saved (states__nh + b * H).
    single_chain: the step's rows span more than one register block or thread
              (see _tile_product)
    """
    cdef int hidden = shape.hidden
    cdef int g3 = 3 * hidden
    cdef int units_from = k0 * _UB
    cdef int units_to = min(k1 * _UB, hidden)
    cdef int kq, k, u0, u, c0, c1
    cdef floating *acc_x = acc__r48 + <int64_t> shape.acc_rows * _PANEL

    if b1 - b0 <= shape.panel_max_rows:
        # Register-blocked products against each unit block's panels, the gates straight
        # after, while the products are still in cache.
        if floating is float:
            if shape.quant == QUANT_INT8:   # h(t-1) quantized once per step, not per block
                _quantize_tile_rows(shape, b0, b1, h_prev, ld_prev, acc__r48)
        for kq in range(k0, k1):
            k = k0 + k1 - 1 - kq if backwards else kq
            u0 = k * _UB
            u = min(_UB, hidden - u0)
            if floating is float:
                if shape.quant:
                    _quant_tile_product(shape, d, k, b0, b1, h_prev, ld_prev, acc__r48)
                else:
                    _tile_product(b0, b1, hidden, h_prev, ld_prev,
                                  panels__kh48 + <int64_t> k * hidden * _PANEL, acc__r48,
                                  single_chain, _PANEL)
            else:
                _tile_product(b0, b1, hidden, h_prev, ld_prev,
                              panels__kh48 + <int64_t> k * hidden * _PANEL, acc__r48,
                              single_chain, _PANEL)
            if shape.fused:
                _tile_product(b0, b1, shape.input_size, x__ni, shape.input_size,
                              ih_panels__ki48 + <int64_t> k * shape.input_size * _PANEL, acc_x,
                              single_chain, _PANEL)
            _gate_rows(b1 - b0, u,
                       <const floating *> acc_x if shape.fused
                       else gi__n3h + <int64_t> b0 * g3 + 3 * u0,
                       _PANEL if shape.fused else g3, _UB if shape.fused else u,
                       acc__r48, _PANEL, _UB, bias_gi__3h + 3 * u0, bias_hn__h + u0,
                       h_prev + <int64_t> b0 * ld_prev + u0, ld_prev,
                       h_next + <int64_t> b0 * ld_next + u0, ld_next,
                       _saved_at(save__n4h, b0, hidden, u0), 4 * hidden,
                       _saved_state_at(states__nh, b0, hidden, u0), hidden)
    else:
        # Large tile: one BLAS GEMM for the tile's columns, then the gate pass.
        c0 = 3 * units_from     # a block's columns start at 3 * u0: earlier blocks are full
        c1 = 3 * units_to
        gemm(False, False, b1 - b0, c1 - c0, hidden, h_prev + <int64_t> b0 * ld_prev, ld_prev,
             w_hh__h3h + c0, g3, 0.0, gh__n3h + <int64_t> b0 * g3 + c0, g3)
        for k in range(k0, k1):
            u0 = k * _UB
            u = min(_UB, hidden - u0)
            _gate_rows(b1 - b0, u, gi__n3h + <int64_t> b0 * g3 + 3 * u0, g3, u,
                       gh__n3h + <int64_t> b0 * g3 + 3 * u0, g3, u, bias_gi__3h + 3 * u0,
                       bias_hn__h + u0, h_prev + <int64_t> b0 * ld_prev + u0, ld_prev,
                       h_next + <int64_t> b0 * ld_next + u0, ld_next,
                       _saved_at(save__n4h, b0, hidden, u0), 4 * hidden,
                       _saved_state_at(states__nh, b0, hidden, u0), hidden)


cdef void _panel_projection(const Shape *shape, int rows, const floating *x__ri,
                            const floating *panels__ki48, floating *gi__r3h,
                            floating *acc__r48, bint single_chain) noexcept nogil:
    """gi = x @ W_ih^T for a few rows (at most CGRU_PANEL_ROWS, the accumulators' least rows),
    through the W_ih panels, into
    gi's compact layout. single_chain: the block's rows span more than one register block
    or thread (see _tile_product)."""
    cdef int hidden = shape.hidden
    cdef int k, m, g, u0, u
    for k in range(shape.n_blocks):
        u0 = k * _UB
        u = min(_UB, hidden - u0)
        _tile_product(0, rows, shape.input_size, x__ri, shape.input_size,
                      panels__ki48 + <int64_t> k * shape.input_size * _PANEL, acc__r48,
                      single_chain, _PANEL)
        for m in range(rows):
            for g in range(3):
                memcpy(gi__r3h + <int64_t> m * 3 * hidden + 3 * u0 + g * u,
                       acc__r48 + m * _PANEL + g * _UB, u * sizeof(floating))


cdef void _balanced_rows(const int64_t *lengths, int n_rows, int t_lo, int t_hi, int parts,
                         int part, int *b0, int *b1) noexcept nogil:
    """Rows b0..b1 of 0..n_rows, cut so that each part has about the same number of active
    (row, step) pairs for steps t_lo..t_hi-1; row b is active while t < lengths[b]."""
    cdef int64_t total = 0, done = 0
    cdef int b
    for b in range(n_rows):
        total += max(0, min(lengths[b], t_hi) - t_lo)
    b0[0] = n_rows
    b1[0] = n_rows
    for b in range(n_rows):
        # row b goes to part floor(done * parts / total): contiguous, since done only grows
        if b0[0] == n_rows and done * parts >= part * total:
            b0[0] = b
        if done * parts >= (part + 1) * total:
            b1[0] = b
            break
        done += max(0, min(lengths[b], t_hi) - t_lo)


cdef void _worker(const Shape *shape, int tid, int n_threads,
                  const int64_t *batch_sizes, const int64_t *offsets, const int64_t *lengths,
                  const floating *x__ri, floating *out__r2h,
                  const floating *w_ih__di3h, const floating *ih_panels__dki48,
                  const floating *w_hh__dh3h, const floating *panels__dkh48,
                  const floating *bias_gi__d3h, const floating *bias_hn__dh,
                  floating *gi__dr3h, floating *gh__dn3h, const floating *h0__dnh,
                  floating *acc__tr48, floating *save__dr4h,
                  floating *states__drh) noexcept nogil:
    """The whole schedule of thread `tid` of `n_threads` for one layer: the direction (or, on
    one thread, the directions) it runs, and its place in that direction's team."""
    cdef int n_dirs = shape.n_dirs
    cdef int d, team, team_size, largest_team
    cdef bint split_rows
    if n_threads >= n_dirs:
        # one team per direction, lock-step; team d is the threads with tid % n_dirs == d
        d = tid % n_dirs
        team = tid // n_dirs
        team_size = (n_threads - d + n_dirs - 1) // n_dirs
        largest_team = (n_threads + n_dirs - 1) // n_dirs
        # The caller's choice, the same for every thread, so every thread meets the same
        # barriers; a team of one has nothing to split, and by rows it meets no per-step one.
        split_rows = shape.split_rows or largest_team == 1
        _direction(shape, d, team, team_size, split_rows, batch_sizes, offsets, lengths, x__ri,
                   out__r2h, w_ih__di3h, ih_panels__dki48, w_hh__dh3h, panels__dkh48,
                   bias_gi__d3h, bias_hn__dh, gi__dr3h, gh__dn3h, h0__dnh,
                   acc__tr48 + tid * shape.acc_stride, save__dr4h, states__drh)
        return
    # One thread, two directions: all of one direction's steps, then all of the other's, so
    # that a direction's weights stay in L2 for all its steps. S5's first layer (1.5 MB of
    # weights per direction, 2 MB of L2) ran at 149 GFLOP/s alternating the directions step
    # by step, against 160 for one direction alone; S5 at one thread, with the alternating
    # block order of _tile_step: 167.9 -> 158.5 ms.
    for d in range(n_dirs):
        _direction(shape, d, 0, 1, True, batch_sizes, offsets, lengths, x__ri, out__r2h,
                   w_ih__di3h, ih_panels__dki48, w_hh__dh3h, panels__dkh48, bias_gi__d3h,
                   bias_hn__dh, gi__dr3h, gh__dn3h, h0__dnh, acc__tr48, save__dr4h,
                   states__drh)


cdef void _direction(const Shape *shape, int d, int team, int team_size, bint split_rows,
                     const int64_t *batch_sizes, const int64_t *offsets,
                     const int64_t *lengths, const floating *x__ri, floating *out__r2h,
                     const floating *w_ih__di3h, const floating *ih_panels__dki48,
                     const floating *w_hh__dh3h, const floating *panels__dkh48,
                     const floating *bias_gi__d3h, const floating *bias_hn__dh,
                     floating *gi__dr3h, floating *gh__dn3h, const floating *h0__dnh,
                     floating *acc__r48, floating *save__dr4h,
                     floating *states__drh) noexcept nogil:
    """Direction d's steps, as thread `team` of that direction's team of `team_size`.

    The weight, bias, workspace and h_0 arguments hold every direction (leading axis d);
    acc__r48 is this thread's accumulators.
    Row split (split_rows): each thread of the team owns a fixed slice of the sequences,
    balanced by their active steps, so steps need no barrier: for the whole call when the
    input projection is fused, else for a block of steps, whose shared input-projection GEMM
    is fenced by two barriers.
    Per-step barriers made 2-thread calls 20x slower whenever another process or thread pool
    held a core (the waiting thread sleeps through the other's time slice, every step).
    Unit split (a few sequences): the team splits the hidden units of every step, and a
    barrier per step separates reading h(t-1) from writing h(t) (they are different output
    rows: the state lives in the output, h(t-1) in step t-1's rows, so nothing is copied).
    Every thread of the layer, whatever its direction, meets the same barriers.
    """
    cdef int n_steps = shape.n_steps
    cdef int hidden = shape.hidden
    cdef int batch = shape.batch
    cdef int g3 = 3 * hidden
    cdef int ld_out = shape.n_dirs * hidden
    cdef int s0, s1, s, t, t_lo, r0, r1, bs, b0, b1, k0, k1, tp, cont, part, lo, hi
    cdef int block_rows
    cdef int own_b0 = 0, own_b1 = 0
    cdef int64_t block_start
    cdef const floating *h_out
    cdef const floating *h_start = h0__dnh + <int64_t> d * batch * hidden
    cdef const floating *w_ih__i3h = w_ih__di3h + <int64_t> d * shape.input_size * g3
    cdef const floating *ih_panels__ki48 = (ih_panels__dki48 + <int64_t> d * shape.n_blocks
                                            * shape.input_size * _PANEL)
    cdef floating *gi__r3h = gi__dr3h + d * shape.gi_rows * g3
    cdef floating *save__r4h = (NULL if save__dr4h == NULL else
                                save__dr4h + <int64_t> d * offsets[n_steps] * 4 * hidden)
    cdef floating *states__rh = (NULL if save__dr4h == NULL else
                                 states__drh + <int64_t> d * offsets[n_steps] * hidden)

    if split_rows and shape.fused:
        # No barrier ever: each thread owns the same sequences for the whole call, balanced
        # by their lengths (re-balancing per block would hand a sequence to another thread
        # while its previous owner may still be writing its last state).
        _balanced_rows(lengths, batch, 0, n_steps, team_size, team, &own_b0, &own_b1)

    s0 = 0
    while s0 < n_steps:
        s1 = min(s0 + shape.steps_per_block, n_steps)
        # Input projections of this block of steps: one GEMM over its rows, split across the
        # team. The reverse direction takes its blocks from the end of the sequence.
        block_start = offsets[s0] if d == 0 else offsets[n_steps - s1]
        block_rows = <int> ((offsets[s1] if d == 0 else offsets[n_steps - s0]) - block_start)
        _split(block_rows, team_size, team, &r0, &r1)
        if shape.fused:
            pass            # projected step by step, inside _tile_step
        elif shape.quant == QUANT_INT8 and shape.q_ih_panels != NULL:
            if floating is float:   # int8 products on rows of x quantized (pyx/_quant.pxi)
                if r1 > r0:
                    _quant_projection(shape, d, r1 - r0,
                                      x__ri + (block_start + r0) * shape.input_size,
                                      gi__r3h + r0 * g3, acc__r48)
        elif block_rows > shape.projection_panel_rows * team_size:
            # decided on the block, not this thread's share, so that all its rows are
            # projected alike (a share of 8 rows by panels, one of 9 by BLAS, would sum them in
            # different orders)
            if r1 > r0:
                gemm(False, False, r1 - r0, g3, shape.input_size,
                     x__ri + (block_start + r0) * shape.input_size, shape.input_size,
                     w_ih__i3h, g3, 0.0, gi__r3h + r0 * g3, g3)
        elif r1 > r0:   # a register block of rows or less (one-step calls): no BLAS overhead
            _panel_projection(shape, r1 - r0, x__ri + (block_start + r0) * shape.input_size,
                              ih_panels__ki48, gi__r3h + r0 * g3, acc__r48,
                              block_rows > r1 - r0 or block_rows > _panel_rows(x__ri))
        if split_rows and not shape.fused:
            # this thread's sequences for the block (the barriers around the block's GEMM
            # separate it from the previous owners): the block's first time step, in time
            # order, has the most active rows
            t_lo = s0 if d == 0 else n_steps - s1
            _balanced_rows(lengths, <int> batch_sizes[t_lo], t_lo,
                           s1 if d == 0 else n_steps - s0, team_size, team, &own_b0, &own_b1)
        if not shape.fused:
            cgru_barrier()      # the block's projections are complete

        for s in range(s0, s1):
            t = s if d == 0 else n_steps - 1 - s
            bs = <int> batch_sizes[t]
            if split_rows:
                b0 = own_b0
                b1 = min(own_b1, bs)
                k0 = 0
                k1 = shape.n_blocks
            else:
                b0 = 0
                b1 = bs
                _split(shape.n_blocks, team_size, team, &k0, &k1)
            if b1 > b0 and k1 > k0:
                # h(t-1) is in the previous step's output rows; a sequence that has not
                # started yet (reverse direction, packed) starts from h_0
                h_out = h_start
                cont = 0
                if s > 0:
                    tp = t - 1 if d == 0 else t + 1
                    cont = <int> batch_sizes[tp]
                    h_out = out__r2h + offsets[tp] * ld_out + d * hidden
                if not split_rows and s > 0:
                    # the other threads wrote parts of these rows: request them all at once
                    # (S3, 2 threads: 3.5% faster)
                    cgru_prefetch_rows(h_out, ld_out * sizeof(floating), min(b1, cont),
                                       hidden * sizeof(floating))
                for part in range(2):   # rows continuing from h(t-1), then rows starting now
                    lo = b0 if part == 0 else max(b0, cont)
                    hi = min(b1, cont) if part == 0 else b1
                    if lo >= hi:
                        continue
                    # Unit blocks in alternating order: a step starts with the weight panels
                    # the previous one used last, still in L2 when the panels of a direction
                    # outgrow it (S5's second layer: 2.4 MB against 2 MB; visited in a
                    # cycle, every panel missed L2; products 3.5% faster).
                    _tile_step(shape, d, lo, hi, k0, k1, s % 2 == 1,
                               NULL if shape.fused else
                               gi__r3h + (offsets[t] - block_start) * g3,
                               x__ri + offsets[t] * shape.input_size, ih_panels__ki48,
                               w_hh__dh3h + <int64_t> d * hidden * g3,
                               panels__dkh48 + <int64_t> d * shape.n_blocks * hidden * _PANEL,
                               bias_gi__d3h + <int64_t> d * g3,
                               bias_hn__dh + <int64_t> d * hidden,
                               h_out if part == 0 else h_start, ld_out if part == 0 else hidden,
                               out__r2h + offsets[t] * ld_out + d * hidden, ld_out,
                               gh__dn3h + <int64_t> d * batch * g3, acc__r48,
                               NULL if save__r4h == NULL else
                               save__r4h + offsets[t] * 4 * hidden,
                               NULL if save__r4h == NULL else
                               states__rh + offsets[t] * hidden,
                               split_rows or bs > _panel_rows(x__ri))
            if not split_rows:
                cgru_barrier()
        if split_rows and not shape.fused and s1 < n_steps:
            cgru_barrier()      # the next block's GEMM overwrites gi
        s0 = s1
    if save__r4h != NULL:
        cgru_stream_fence()     # the saved gates' non-temporal stores, before the next barrier


cdef void _gather_final_states(const Shape *shape, const int64_t *batch_sizes,
                               const int64_t *offsets, const floating *out__r2h,
                               floating *h__dnh) noexcept nogil:
    """h_n from the output rows: forward sequences end at their own last step, reverse ones
    at step 0."""
    cdef int hidden = shape.hidden
    cdef int ld_out = shape.n_dirs * hidden
    cdef int d, t, b, ended_from
    for d in range(shape.n_dirs):
        for t in range(shape.n_steps if d == 0 else 1):
            # forward: rows bs[t+1] .. bs[t]-1 are active at t and not after; reverse: all at t=0
            ended_from = (<int> batch_sizes[t + 1]
                          if (d == 0 and t + 1 < shape.n_steps) else 0)
            for b in range(ended_from, <int> batch_sizes[t]):
                memcpy(h__dnh + (<int64_t> d * shape.batch + b) * hidden,
                       out__r2h + (offsets[t] + b) * ld_out + d * hidden,
                       hidden * sizeof(floating))


cdef int _run_layer(Shape *shape, int n_threads, const floating *x, const floating *w_ih,
                    const floating *w_ih_panels, const floating *w_hh,
                    const floating *w_hh_panels,
                    const floating *bias_gi, const floating *bias_hn,
                    const int64_t *batch_sizes, floating *h, floating *out,
                    floating *save, floating *states) noexcept nogil:
    """Allocate the workspace (once per call, in C: cheaper than NumPy for one-step calls),
    run every thread's schedule, gather h_n. Returns 0, or -1 when out of memory."""
    cdef int n_steps = shape.n_steps
    cdef int spb = shape.steps_per_block
    cdef int t, d
    cdef int64_t g3 = 3 * shape.hidden
    cdef int b
    cdef int64_t *offsets = <int64_t *> cgru_alloc((n_steps + 1) * sizeof(int64_t))
    cdef int64_t *lengths = <int64_t *> cgru_alloc(shape.batch * sizeof(int64_t))
    if offsets == NULL or lengths == NULL:
        cgru_free(offsets); cgru_free(lengths)
        return -1
    offsets[0] = 0
    for t in range(n_steps):
        offsets[t + 1] = offsets[t] + batch_sizes[t]
        # rows bs[t+1] .. bs[t]-1 are active for the last time at step t
        for b in range(<int> batch_sizes[t + 1] if t + 1 < n_steps else 0, <int> batch_sizes[t]):
            lengths[b] = t + 1
    shape.gi_rows = 0
    t = 0
    while t < n_steps:      # forward blocks, and the reverse ones cut from the end
        shape.gi_rows = max(shape.gi_rows, offsets[min(t + spb, n_steps)] - offsets[t],
                            offsets[n_steps - t] - offsets[max(n_steps - t - spb, 0)])
        t += spb

    if shape.fused:
        shape.gi_rows = 0      # no projection workspace
    cdef floating *gi = <floating *> cgru_alloc(shape.n_dirs * shape.gi_rows * g3
                                                * sizeof(floating))
    cdef floating *gh = <floating *> cgru_alloc(shape.n_dirs * shape.batch * g3
                                                * sizeof(floating))
    shape.acc_rows = max(CGRU_PANEL_ROWS, min(shape.batch, shape.panel_max_rows))
    # a whole number of cache lines per thread, so each thread's accumulators start on one
    shape.acc_stride = (2 * shape.acc_rows * _PANEL + _quant_workspace(shape) + 15) // 16 * 16
    cdef floating *acc = <floating *> cgru_alloc(n_threads * shape.acc_stride
                                             * sizeof(floating))
    if gi == NULL or gh == NULL or acc == NULL:
        cgru_free(offsets); cgru_free(lengths); cgru_free(gi); cgru_free(gh); cgru_free(acc)
        return -1

    if n_threads == 1:
        _worker(shape, 0, 1, batch_sizes, offsets, lengths, x, out, w_ih, w_ih_panels, w_hh,
                w_hh_panels, bias_gi, bias_hn, gi, gh, h, acc, save, states)
    else:
        with parallel(num_threads=n_threads):
            _worker(shape, omp_get_thread_num(), omp_get_num_threads(), batch_sizes, offsets,
                    lengths, x, out, w_ih, w_ih_panels, w_hh, w_hh_panels, bias_gi, bias_hn, gi,
                    gh, h, acc, save, states)
    _gather_final_states(shape, batch_sizes, offsets, out, h)
    cgru_free(offsets); cgru_free(lengths); cgru_free(gi); cgru_free(gh); cgru_free(acc)
    return 0


cdef inline void _take_choices(Shape *shape, int panel_max_rows, int projection_panel_rows,
                               bint split_rows) noexcept nogil:
    """The caller's decisions, clamped where the workspace needs it: a share of a block's
    input projection on the panels must fit the accumulators (CGRU_PANEL_ROWS rows)."""
    shape.panel_max_rows = panel_max_rows
    shape.projection_panel_rows = max(0, min(projection_panel_rows, CGRU_PANEL_ROWS))
    shape.split_rows = split_rows


cdef class LayerWeights:
    """One layer's weights in the kernel's layout, their addresses taken once.

    cgru/_layout.py builds the arrays, C-contiguous and of one dtype (float32 or float64), where
    D directions, I inputs, H hidden units, K = ceil(H / 16):
        w_ih        (D, I, 3H)     transposed, gate columns in unit blocks
        w_ih_panels (D, K, I, 48)  w_ih again as zero-padded r|z|n panels, for few-row blocks
        w_hh        (D, H, 3H)     likewise
        w_hh_panels (D, K, H, 48)  w_hh again, one zero-padded r|z|n panel per unit block
        bias_gi     (D, 3H)        b_ih + b_hh for r and z, b_in for n, same column order
        bias_hn     (D, H)         b_hn, added inside r * (...)
        back_panels (D, J, 3H, 48) optional, for the backward pass (pyx/_gru_backward.pxi):
                                   w_hh's rows as panels of 48 hidden units, J = ceil(H / 48)
    Holding the addresses spares every call six buffer acquisitions (about 1 us of a 8 us
    one-step call).
    """
    cdef readonly tuple arrays
    cdef readonly object back_panels
    cdef readonly bint is_double
    cdef readonly int n_dirs, input_size, hidden, n_blocks
    cdef const void *w_ih
    cdef const void *w_ih_panels
    cdef const void *w_hh
    cdef const void *w_hh_panels
    cdef const void *bias_gi
    cdef const void *bias_hn

    def __init__(self, w_ih, w_ih_panels, w_hh, w_hh_panels, bias_gi, bias_hn,
                 back_panels=None):
        self.arrays = (w_ih, w_ih_panels, w_hh, w_hh_panels, bias_gi, bias_hn)
        self.back_panels = back_panels
        # (dtype.char, not dtype.name: this runs after every optimizer step, and building
        # the names was a tenth of re-laying out a small layer)
        dtypes = {a.dtype.char for a in self.arrays}
        if dtypes not in ({"f"}, {"d"}) or not all(a.flags.c_contiguous for a in self.arrays):
            raise ValueError(f"LayerWeights needs C-contiguous arrays of one float dtype, "
                             f"got {sorted(a.dtype.name for a in self.arrays)}")
        self.is_double = dtypes == {"d"}
        self.n_dirs = w_ih.shape[0]
        self.input_size = w_ih.shape[1]
        self.hidden = w_hh.shape[1]
        self.n_blocks = w_hh_panels.shape[1]
        self.w_ih = _address(w_ih)
        self.w_ih_panels = _address(w_ih_panels)
        self.w_hh = _address(w_hh)
        self.w_hh_panels = _address(w_hh_panels)
        self.bias_gi = _address(bias_gi)
        self.bias_hn = _address(bias_hn)

    def __reduce__(self):
        return LayerWeights, self.arrays + (self.back_panels,)


cdef inline const void *_address(a) except? NULL:
    """The data pointer of a C-contiguous array (through the buffer protocol: reading
    __array_interface__ builds a dict, 3 us a call). Valid while the array lives."""
    cdef Py_buffer view
    PyObject_GetBuffer(a, &view, PyBUF_SIMPLE)
    cdef const void *data = view.buf
    PyBuffer_Release(&view)
    return data


def gru_layer(const floating[:, ::1] x,
              LayerWeights weights,
              const int64_t[::1] batch_sizes,
              floating[:, :, ::1] h,
              floating[:, ::1] out,
              int n_threads,
              int steps_per_block,
              int panel_max_rows,
              int projection_panel_rows,
              bint split_rows,
              bint fused,
              floating[:, :, ::1] save=None,
              floating[:, :, ::1] states=None):
    """Run one GRU layer, all its directions, over packed time-major rows.

    Shapes, where R = sum(batch_sizes), L = len(batch_sizes), N = batch_sizes[0], D directions,
    I input features, H hidden units:
        x           (R, I)         rows of step t follow those of step t-1
        weights     LayerWeights   of x's dtype
        batch_sizes (L,)           non-increasing, >= 1; the caller has checked this
        h           (D, N, H)      in: h_0; out: each sequence's state after its last step
        out         (R, D*H)       written: every row's new hidden state, directions side by side
    The caller decides (cgru/_run.py's policy); the kernel only keeps them safe:
        steps_per_block        bounds the input-projection workspace to about
                               steps_per_block * N rows (clamped to 1 .. L)
        panel_max_rows         tiles of at most this many rows multiply W_hh by the panels,
                               larger ones by BLAS
        projection_panel_rows  a block of steps whose input projection has at most this many
                               rows per thread of its team uses the W_ih panels, else one BLAS
                               GEMM (clamped to 0 .. PANEL_ROWS_MAX, the accumulators' rows)
        split_rows             a team of threads splits the sequences (True) or the hidden
                               units of every step (False); True wherever a team has one thread
        fused                  the input is projected step by step through the W_ih panels
                               instead of one GEMM per block of steps; only where
                               N <= panel_max_rows (every tile on the panel path)
        save        (D, R, 4H)     optional, written: what the backward pass needs of each row,
                                   r | z | n | W_hn h + b_hn per block of 16 units
                                   (pyx/_gru_backward.pxi reads it)
        states      (D, R, H)      with save: written, each row's h(t-1), the state its step
                                   started from (the output rows of the step before, or h_0)
    Shapes are not checked here: cgru/gru.py validates every argument before calling.
    """
    cdef Shape shape
    cdef int status
    if weights.is_double != (sizeof(floating) == sizeof(double)):
        raise TypeError("gru_layer: weights and input differ in dtype")
    shape.n_steps = batch_sizes.shape[0]
    shape.n_dirs = weights.n_dirs
    shape.input_size = x.shape[1]
    shape.hidden = h.shape[2]
    shape.batch = h.shape[1]
    shape.n_blocks = weights.n_blocks
    _take_choices(&shape, panel_max_rows, projection_panel_rows, split_rows)
    # the fused projection needs every tile on the panel path (the accumulators hold its rows)
    shape.fused = fused and shape.batch <= panel_max_rows
    shape.steps_per_block = max(1, min(steps_per_block, shape.n_steps))
    shape.quant = 0
    n_threads = max(1, min(n_threads, shape.n_dirs * max(shape.batch, shape.n_blocks)))
    cdef floating *save_rows = NULL
    cdef floating *state_rows = NULL
    if save is not None:
        if states is None:
            raise TypeError("gru_layer: save needs states")
        save_rows = &save[0, 0, 0]
        state_rows = &states[0, 0, 0]
    with nogil:
        status = _run_layer(&shape, n_threads, &x[0, 0], <const floating *> weights.w_ih,
                            <const floating *> weights.w_ih_panels,
                            <const floating *> weights.w_hh,
                            <const floating *> weights.w_hh_panels,
                            <const floating *> weights.bias_gi,
                            <const floating *> weights.bias_hn,
                            &batch_sizes[0], &h[0, 0, 0], &out[0, 0],
                            save_rows, state_rows)
    if status != 0:
        raise MemoryError("cgru: could not allocate the GRU workspace")
