# Design (the backward pass; included after _gru.pxi, so it shares its helpers and panels):
# One call of `gru_layer_backward` runs the backward pass of one GRU layer, both directions,
# over the packed rows of a forward pass that saved its gates (gru_layer(..., save=...)).
#
# Per direction, in reverse order of the forward's time, by blocks of steps:
#   recurrence (per step, each thread on its own sequences, no barrier): the fused gate pass
#       (pyx/include/cgru_backward.h) adds the output's gradient to dL/dh(t) and turns it into
#       the pre-activation gradients dG_i, dG_h of the block's rows, their bias sums and the
#       direct part g * z of dL/dh(t-1); then dL/dh(t-1) += dG_h @ W_hh, from register-blocked
#       panels of W_hh (few rows) or one BLAS GEMM (many).
#   weight gradients (per block, after a barrier, the team splitting the gates): a few large
#       GEMMs over all the block's rows: dW_ih += dG_i^T X, dW_hh += dG_h^T H_prev (H_prev
#       read in place from the saved states), and dX = dG_i W_ih (the team splitting the
#       rows; at one thread, the second direction adds to the first's dX).
# The bias sums of each thread are added up after the parallel region, in thread order.
# Saved per row by the forward: r | z | n | W_hn h + b_hn (4H values), and apart from them
# h(t-1) (H values), not recomputed: the recomputation would cost a forward pass of GEMMs, the
# saving one store per gate. The forward's output rows and h_0 are not needed.
# Weight gradients are PyTorch's (3H, I) and (3H, H), their gate rows in the kernel's order
# (blocks of 16 units, as the columns of LayerWeights): as fast a GEMM as the transposed
# layout, and unpacking them is a row gather, not a transpose.
#
# Threads: as the forward: one team per direction; a team splits the sequences for the whole
# call, balanced by their lengths; every thread of the layer meets the same two barriers per
# block (both directions have as many blocks).

from libc.string cimport memset

from _blas cimport gemm
from _inner_backward cimport cgru_gate_grads_double, cgru_gate_grads_float


cdef struct BackShape:
    int n_dirs, n_steps, input_size, hidden, batch, steps_per_block
    int64_t block_rows       # rows of a direction's block workspace: its largest block
    int panel_max_rows       # recurrent products of at most this many rows use the panels
    int acc_rows             # rows of a thread's panel accumulators
    int n_col_blocks         # ceil(H / 48): panels of the backward's recurrent product
    int dx_shared            # the directions, one after the other, sum dL/dx in one array


cdef inline void _gate_grads(int rows, int hidden, const floating *save,
                             const floating *h_prev, const floating *g_out,
                             const floating *g_out2, long ld_out, floating *g, long ld_g,
                             floating *dgi, floating *dgh, floating *db) noexcept nogil:
    if floating is float:
        cgru_gate_grads_float(rows, hidden, save, h_prev, g_out, g_out2, ld_out, g, ld_g, dgi,
                              dgh, db)
    else:
        cgru_gate_grads_double(rows, hidden, save, h_prev, g_out, g_out2, ld_out, g, ld_g,
                               dgi, dgh, db)


cdef void _back_product(const BackShape *shape, int b0, int b1, const floating *dgh__n3h,
                        const floating *w_hh__h3h, const floating *bpanels__j3h48,
                        floating *dh__nh, floating *acc__r48) noexcept nogil:
    """dh[b] += dgh[b] @ W_hh for rows b0..b1 (row b of dgh at dgh__n3h + b * 3H)."""
    cdef int hidden = shape.hidden
    cdef int g3 = 3 * hidden
    cdef int j, c0, cols, b, c
    cdef floating *row
    cdef const floating *acc_row
    if b1 - b0 <= shape.panel_max_rows:
        for j in range(shape.n_col_blocks):
            c0 = j * _PANEL
            cols = min(_PANEL, hidden - c0)
            _tile_product(b0, b1, g3, dgh__n3h, g3, bpanels__j3h48 + <int64_t> j * g3 * _PANEL,
                          acc__r48, b1 - b0 > _panel_rows(dgh__n3h), cols)
            for b in range(b0, b1):
                row = dh__nh + <int64_t> b * hidden + c0
                acc_row = acc__r48 + <int64_t> (b - b0) * _PANEL
                for c in range(cols):
                    row[c] += acc_row[c]
    else:
        gemm(False, True, b1 - b0, hidden, g3, dgh__n3h + <int64_t> b0 * g3, g3, w_hh__h3h, g3,
             1.0, dh__nh + <int64_t> b0 * hidden, hidden)


cdef void _back_block_gemms(const BackShape *shape, int team, int team_size, int64_t rows,
                            const floating *x__qi, const floating *hp__qh, long ld_hp,
                            const floating *dgi__q3h, const floating *dgh__q3h,
                            const floating *w_ih__i3h, floating *dx__qi, floating beta_dx,
                            floating *dw_ih__3hi, floating *dw_hh__3hh) noexcept nogil:
    """This thread's share of one block's weight gradients (a slice of the gate rows) and
    input gradients (a slice of the rows). Accumulates into dw_*; dx = dG_i W_ih + beta_dx * dx
    unless dx is NULL."""
    cdef int hidden = shape.hidden
    cdef int g3 = 3 * hidden
    cdef int i = shape.input_size
    cdef int c0, c1, r0, r1
    if rows == 0:
        return
    _split(g3, team_size, team, &c0, &c1)
    if c1 > c0:
        gemm(True, False, c1 - c0, i, <int> rows, dgi__q3h + c0, g3, x__qi, i, 1.0,
             dw_ih__3hi + <int64_t> c0 * i, i)
        gemm(True, False, c1 - c0, hidden, <int> rows, dgh__q3h + c0, g3, hp__qh, ld_hp, 1.0,
             dw_hh__3hh + <int64_t> c0 * hidden, hidden)
    if dx__qi == NULL:      # the caller asked for no input gradient
        return
    _split(<int> rows, team_size, team, &r0, &r1)
    if r1 > r0:
        gemm(False, True, r1 - r0, i, g3, dgi__q3h + <int64_t> r0 * g3, g3, w_ih__i3h, g3,
             beta_dx, dx__qi + <int64_t> r0 * i, i)


cdef void _back_direction(const BackShape *shape, int d, int team, int team_size,
                          const int64_t *batch_sizes, const int64_t *offsets,
                          const int64_t *lengths, const floating *x__ri,
                          const floating *save__dr4h, const floating *states__drh,
                          const floating *gout__r2h, const floating *gout2__r2h,
                          const floating *w_ih__di3h, const floating *w_hh__dh3h,
                          const floating *bpanels__dj3h48, floating *dh__dnh,
                          floating *dx__dri, floating *dw_ih__d3hi, floating *dw_hh__d3hh,
                          floating *dgi__dq3h, floating *dgh__dq3h, floating *acc__r48,
                          floating *bsum__4h) noexcept nogil:
    """Direction d's backward pass, as thread `team` of its team of `team_size`. The
    arguments with a leading d hold every direction; acc__r48 and bsum__4h (the bias sums of
    its rows, in save's layout) are this thread's."""
    cdef int n_steps = shape.n_steps
    cdef int hidden = shape.hidden
    cdef int g3 = 3 * hidden
    cdef int i = shape.input_size
    cdef int ld_out = shape.n_dirs * hidden
    cdef int64_t n_rows = offsets[n_steps]
    cdef int own_b0 = 0, own_b1 = 0
    cdef int s0, s1, s, t, bs, lo, hi
    cdef int64_t block_start, block_stop, row0
    cdef floating *dh__nh = dh__dnh + <int64_t> d * shape.batch * hidden
    cdef const floating *save__r4h = save__dr4h + <int64_t> d * n_rows * 4 * hidden
    cdef const floating *states__rh = states__drh + <int64_t> d * n_rows * hidden
    cdef floating *dgi__q3h = dgi__dq3h + <int64_t> d * shape.block_rows * g3
    cdef floating *dgh__q3h = dgh__dq3h + <int64_t> d * shape.block_rows * g3
    cdef const floating *w_hh__h3h = w_hh__dh3h + <int64_t> d * hidden * g3

    # Each thread owns the same sequences for the whole call (dL/dh of a sequence stays with
    # it); the barriers around each block's GEMMs separate the blocks.
    _balanced_rows(lengths, shape.batch, 0, n_steps, team_size, team, &own_b0, &own_b1)

    s0 = 0
    while s0 < n_steps:
        s1 = min(s0 + shape.steps_per_block, n_steps)
        # the forward direction runs back from the end, the reverse one forward from step 0
        block_start = offsets[n_steps - s1] if d == 0 else offsets[s0]
        block_stop = offsets[n_steps - s0] if d == 0 else offsets[s1]
        for s in range(s0, s1):
            t = n_steps - 1 - s if d == 0 else s
            bs = <int> batch_sizes[t]
            row0 = offsets[t]
            lo = own_b0
            hi = min(own_b1, bs)
            if hi <= lo:
                continue
            _gate_grads(hi - lo, hidden, save__r4h + (row0 + lo) * 4 * hidden,
                        states__rh + (row0 + lo) * hidden,
                        gout__r2h + (row0 + lo) * ld_out + d * hidden,
                        NULL if gout2__r2h == NULL
                        else gout2__r2h + (row0 + lo) * ld_out + d * hidden, ld_out,
                        dh__nh + <int64_t> lo * hidden, hidden,
                        dgi__q3h + (row0 - block_start + lo) * g3,
                        dgh__q3h + (row0 - block_start + lo) * g3, bsum__4h)
            _back_product(shape, lo, hi, dgh__q3h + (row0 - block_start) * g3, w_hh__h3h,
                          bpanels__dj3h48 + <int64_t> d * shape.n_col_blocks * g3 * _PANEL,
                          dh__nh, acc__r48)
        cgru_barrier()      # the block's gradients dG are complete
        _back_block_gemms(shape, team, team_size, block_stop - block_start,
                          x__ri + block_start * i,
                          states__rh + block_start * hidden, hidden,
                          dgi__q3h, dgh__q3h, w_ih__di3h + <int64_t> d * i * g3,
                          NULL if dx__dri == NULL
                          else dx__dri + ((0 if shape.dx_shared else <int64_t> d * n_rows)
                                          + block_start) * i,
                          1.0 if shape.dx_shared and d > 0 else 0.0,
                          dw_ih__d3hi + <int64_t> d * g3 * i,
                          dw_hh__d3hh + <int64_t> d * g3 * hidden)
        cgru_barrier()      # the next block overwrites the workspace
        s0 = s1


cdef void _back_worker(const BackShape *shape, int tid, int n_threads,
                       const int64_t *batch_sizes, const int64_t *offsets,
                       const int64_t *lengths, const floating *x, const floating *save,
                       const floating *states, const floating *gout,
                       const floating *gout2, const floating *w_ih,
                       const floating *w_hh, const floating *bpanels, floating *dh,
                       floating *dx, floating *dw_ih, floating *dw_hh, floating *dgi,
                       floating *dgh, floating *acc__tr48,
                       floating *bsums__td4h) noexcept nogil:
    """Thread tid's share: one team per direction when there are threads enough (thread tid
    in team tid // D of direction tid % D), else the directions one after the other."""
    cdef int n_dirs = shape.n_dirs
    cdef int d
    cdef floating *acc__r48 = acc__tr48 + <int64_t> tid * shape.acc_rows * _PANEL
    cdef floating *bsums__d4h = bsums__td4h + <int64_t> tid * n_dirs * 4 * shape.hidden
    if n_threads >= n_dirs:
        d = tid % n_dirs
        _back_direction(shape, d, tid // n_dirs, (n_threads - d + n_dirs - 1) // n_dirs,
                        batch_sizes, offsets, lengths, x, save, states, gout, gout2, w_ih,
                        w_hh, bpanels, dh, dx, dw_ih, dw_hh, dgi, dgh, acc__r48,
                        bsums__d4h + <int64_t> d * 4 * shape.hidden)
        return
    for d in range(n_dirs):
        _back_direction(shape, d, 0, 1, batch_sizes, offsets, lengths, x, save, states, gout,
                        gout2, w_ih, w_hh, bpanels, dh, dx, dw_ih, dw_hh, dgi, dgh, acc__r48,
                        bsums__d4h + <int64_t> d * 4 * shape.hidden)


cdef int _run_layer_backward(BackShape *shape, int n_threads, const int64_t *batch_sizes,
                             const floating *x, const floating *save,
                             const floating *states, const floating *gout,
                             const floating *gout2, const floating *w_ih, const floating *w_hh,
                             const floating *bpanels, floating *dh, floating *dx,
                             floating *dw_ih, floating *dw_hh, floating *db_i,
                             floating *db_h, floating *work, int64_t work_size) noexcept nogil:
    """Run every thread's share, dG_i and dG_h in `work` (work_size values). Returns 0, -1
    when out of memory, or -2 when work is smaller than the blocks need."""
    cdef int n_steps = shape.n_steps
    cdef int spb = shape.steps_per_block
    cdef int t, b
    cdef int64_t g3 = 3 * shape.hidden
    cdef int64_t *offsets = <int64_t *> cgru_alloc((n_steps + 1) * sizeof(int64_t))
    cdef int64_t *lengths = <int64_t *> cgru_alloc(shape.batch * sizeof(int64_t))
    if offsets == NULL or lengths == NULL:
        cgru_free(offsets); cgru_free(lengths)
        return -1
    offsets[0] = 0
    for t in range(n_steps):
        offsets[t + 1] = offsets[t] + batch_sizes[t]
        for b in range(<int> batch_sizes[t + 1] if t + 1 < n_steps else 0, <int> batch_sizes[t]):
            lengths[b] = t + 1
    shape.block_rows = 0
    t = 0
    while t < n_steps:      # the reverse direction's blocks, and the forward's cut from the end
        shape.block_rows = max(shape.block_rows,
                               offsets[min(t + spb, n_steps)] - offsets[t],
                               offsets[n_steps - t] - offsets[max(n_steps - t - spb, 0)])
        t += spb
    cdef int64_t q = shape.n_dirs * shape.block_rows
    if 2 * q * g3 > work_size:
        cgru_free(offsets); cgru_free(lengths)
        return -2
    cdef floating *dgi = work
    cdef floating *dgh = work + q * g3
    shape.acc_rows = max(CGRU_PANEL_ROWS, min(shape.batch, shape.panel_max_rows))
    cdef floating *acc = <floating *> cgru_alloc(n_threads * shape.acc_rows * _PANEL
                                                 * sizeof(floating))
    cdef int64_t n_sums = <int64_t> n_threads * shape.n_dirs * 4 * shape.hidden
    cdef floating *bsums = <floating *> cgru_alloc(n_sums * sizeof(floating))
    if acc == NULL or bsums == NULL:
        cgru_free(offsets); cgru_free(lengths); cgru_free(acc); cgru_free(bsums)
        return -1
    memset(bsums, 0, n_sums * sizeof(floating))

    if n_threads == 1:
        _back_worker(shape, 0, 1, batch_sizes, offsets, lengths, x, save, states, gout, gout2,
                     w_ih, w_hh, bpanels, dh, dx, dw_ih, dw_hh, dgi, dgh, acc, bsums)
    else:
        with parallel(num_threads=n_threads):
            _back_worker(shape, omp_get_thread_num(), omp_get_num_threads(), batch_sizes,
                         offsets, lengths, x, save, states, gout, gout2, w_ih, w_hh, bpanels,
                         dh, dx, dw_ih, dw_hh, dgi, dgh, acc, bsums)
    _add_bias_sums(shape, n_threads, bsums, db_i, db_h)
    cgru_free(offsets); cgru_free(lengths); cgru_free(acc); cgru_free(bsums)
    return 0


cdef void _add_bias_sums(const BackShape *shape, int n_threads, const floating *bsums__td4h,
                         floating *db_i__d3h, floating *db_h__d3h) noexcept nogil:
    """Add every thread's bias sums (per direction: sum(da_r) | sum(da_z) | sum(da_n) |
    sum(da_n * r) by blocks of 16 units, as save) to the bias gradients (the gate columns'
    layout: r | z | n by blocks of 16 units), thread by thread in order: the same sums for the
    same threads, whatever ran first."""
    cdef int hidden = shape.hidden
    cdef int tid, d, u0, u, j
    cdef const floating *sums
    cdef floating *db_i
    cdef floating *db_h
    for tid in range(n_threads):
        for d in range(shape.n_dirs):
            sums = bsums__td4h + (<int64_t> tid * shape.n_dirs + d) * 4 * hidden
            db_i = db_i__d3h + <int64_t> d * 3 * hidden
            db_h = db_h__d3h + <int64_t> d * 3 * hidden
            for u0 in range(0, hidden, 16):
                u = min(16, hidden - u0)
                for j in range(u):
                    db_i[3 * u0 + j] += sums[4 * u0 + j]                  # r
                    db_h[3 * u0 + j] += sums[4 * u0 + j]
                    db_i[3 * u0 + u + j] += sums[4 * u0 + u + j]          # z
                    db_h[3 * u0 + u + j] += sums[4 * u0 + u + j]
                    db_i[3 * u0 + 2 * u + j] += sums[4 * u0 + 2 * u + j]  # n: da_n
                    db_h[3 * u0 + 2 * u + j] += sums[4 * u0 + 3 * u + j]  #    da_n * r


def gru_layer_backward(const floating[:, ::1] x,
                       LayerWeights weights,
                       const floating[:, :, :, ::1] back_panels,
                       const int64_t[::1] batch_sizes,
                       const floating[:, :, ::1] save,
                       const floating[:, :, ::1] states,
                       const floating[:, ::1] grad_out,
                       floating[:, :, ::1] dh,
                       floating[:, :, ::1] grad_x,     # None: no input gradient
                       floating[:, :, ::1] grad_w_ih,
                       floating[:, :, ::1] grad_w_hh,
                       floating[:, ::1] grad_b_ih,
                       floating[:, ::1] grad_b_hh,
                       floating[::1] workspace,
                       int n_threads,
                       int steps_per_block,
                       int panel_max_rows,
                       const floating[:, ::1] grad_out_more=None):
    """The backward pass of one GRU layer, all its directions, over packed time-major rows.

    Shapes, where R = sum(batch_sizes), L = len(batch_sizes), N = batch_sizes[0], D directions,
    I input features, H hidden units, J = ceil(H / 48); the kernel's column order (gates in
    blocks of 16 units, as LayerWeights) throughout:
        x           (R, I)         the layer's input rows of the forward pass
        weights     LayerWeights   the weights of that forward pass
        back_panels (D, J, 3H, 48) W_hh as panels of 48 hidden units (cgru/_layout.py)
        batch_sizes (L,)           as the forward's
        save        (D, R, 4H)     the gates the forward saved (gru_layer(..., save, states))
        states      (D, R, H)      each row's h(t-1), as the forward saved it
        grad_out    (R, D*H)       dL/d out
        grad_out_more  (R, D*H)    None, or more of dL/d out, added to grad_out's (the other
                                   direction's dL/dx of the layer above: no pass to sum them)
        dh          (D, N, H)      in: dL/dh_n; out: dL/dh_0
        grad_x      (D, R, I)      written: each direction's share of dL/dx; None skips
                                   its GEMM (the first layer, when the input needs none);
                                   (1, R, I) with one thread: their sum
        grad_w_ih   (D, 3H, I)     accumulated: dL/dW_ih, rows in the kernel's gate order
        grad_w_hh   (D, 3H, H)     accumulated: dL/dW_hh, likewise
        grad_b_ih   (D, 3H)        accumulated: dL/d(input-side biases)
        grad_b_hh   (D, 3H)        accumulated: dL/d(recurrent biases)
        workspace   (W,)           scratch: dG_i and dG_h of a block, W >= 2 * D * 3H * the
                                   rows of the largest block (steps_per_block * N will do)
    The blocks of steps_per_block steps bound the workspace (6H values per row of a
    block and direction); recurrent products of at most panel_max_rows rows use the panels, larger ones BLAS.
    Shapes are not checked here: cgru/_engine/stack.py passes what the forward pass used.
    """
    cdef BackShape shape
    cdef int status
    cdef floating *dx = NULL if grad_x is None else &grad_x[0, 0, 0]
    cdef const floating *gout_more = NULL
    if grad_out_more is not None:
        if grad_out_more.shape[0] != grad_out.shape[0] or \
                grad_out_more.shape[1] != grad_out.shape[1]:
            raise ValueError(f"gru_layer_backward: grad_out_more of shape "
                             f"({grad_out_more.shape[0]}, {grad_out_more.shape[1]}), grad_out "
                             f"({grad_out.shape[0]}, {grad_out.shape[1]})")
        gout_more = &grad_out_more[0, 0]
    if weights.is_double != (sizeof(floating) == sizeof(double)):
        raise TypeError("gru_layer_backward: weights and input differ in dtype")
    shape.n_steps = batch_sizes.shape[0]
    shape.n_dirs = weights.n_dirs
    shape.input_size = x.shape[1]
    shape.hidden = dh.shape[2]
    shape.batch = dh.shape[1]
    shape.panel_max_rows = panel_max_rows
    shape.n_col_blocks = back_panels.shape[1]
    shape.steps_per_block = max(1, min(steps_per_block, shape.n_steps))
    n_threads = max(1, n_threads)
    shape.dx_shared = grad_x is not None and grad_x.shape[0] < shape.n_dirs
    if shape.dx_shared and (grad_x.shape[0] != 1 or n_threads != 1):
        raise ValueError(f"gru_layer_backward: grad_x of {grad_x.shape[0]} directions needs "
                         f"{shape.n_dirs}, or 1 with one thread (got {n_threads})")
    with nogil:
        status = _run_layer_backward(&shape, n_threads, &batch_sizes[0], &x[0, 0],
                                     &save[0, 0, 0], &states[0, 0, 0], &grad_out[0, 0],
                                     gout_more,
                                     <const floating *> weights.w_ih,
                                     <const floating *> weights.w_hh, &back_panels[0, 0, 0, 0],
                                     &dh[0, 0, 0], dx, &grad_w_ih[0, 0, 0],
                                     &grad_w_hh[0, 0, 0], &grad_b_ih[0, 0], &grad_b_hh[0, 0],
                                     &workspace[0], workspace.shape[0])
    if status == -2:
        raise ValueError(f"gru_layer_backward: a workspace of {workspace.shape[0]} values is "
                         f"smaller than blocks of {shape.steps_per_block} steps need")
    if status != 0:
        raise MemoryError("cgru: could not allocate the GRU backward workspace")
