# Design:
# Reduced-precision inference (bfloat16 or int8 weights) runs on the float32 engine of
# pyx/_gru.pxi: the same schedule (threads, teams, blocks of steps, packed rows, both
# directions), the same fused gate pass in float32; only the recurrent product of the panel path
# differs, switched by Shape.quant inside _tile_step.
#
#   quant_layer (def)    takes a QuantLayerWeights and runs _run_layer with Shape.quant set.
#                        bfloat16: W_ih is widened to float32 once per call and the input
#                        projections of a block of steps are one sgemm, as in float32 (on CPUs
#                        without bf16 dot-product instructions that is the fastest product there
#                        is, and it rounds nothing). int8: _quant_projection, int8 products of
#                        rows of x quantized like h against k-paired W_ih panels (pmaddwd
#                        multiplies two k per instruction where an FMA does one).
#   _quant_tile_product  per step and unit block, the product of the tile's rows of h(t-1) with
#                        the W_hh panel read in its stored precision (pyx/include/cgru_quant.h):
#                        bfloat16 widened in registers, h in float32, float32 accumulation; int8
#                        times h quantized per row (symmetric, max|h| / 127, by
#                        _quantize_tile_rows once per step), exact int32 sums, then scaled to
#                        float32 for the gates.
# Tiles of more rows than panel_max_rows take the BLAS path on W_hh widened to float32 once per
# call (cgru/quantized.py says when and why).

from libc.stdint cimport int8_t, int16_t, uint16_t, uint32_t

from _inner_quant cimport (CGRU_BF16_PRODUCT, CGRU_BF16_ROWS, CGRU_QI_PRODUCT,
                           CGRU_QI_ROWS, cgru_bf16_panel_product, cgru_dequantize_acc, cgru_int8_panel_product,
                           cgru_quantize_rows)

QUANT_ROWS_INT8 = CGRU_QI_ROWS      # rows of the int8 register block (cgru/quantized.py)
# The instructions the recurrent products compile to in this build (cgru/_engine/isa.py)
QUANT_PRODUCTS = {"bfloat16": CGRU_BF16_PRODUCT.decode("ascii"),
                  "int8": CGRU_QI_PRODUCT.decode("ascii")}

cdef enum:
    _Q_CHUNK = 256      # k of a panel chunk kept in L1: bf16 256 x 48 x 2 B, int8 256 x 48 B
    _Q_PROJ_ROWS = 32   # rows of x quantized at a time for the int8 input projection


cdef inline int _even(int n) noexcept nogil:
    return n + (n & 1)


cdef int64_t _quant_workspace(const Shape *shape) noexcept nogil:
    """Floats of a thread's workspace beyond its accumulators: for int8, acc_rows rows of
    quantized h (int16 slots, even-padded) and their scales."""
    if shape.quant != QUANT_INT8:
        return 0
    return (<int64_t> shape.acc_rows * (_even(shape.hidden) // 2 + 1)
            + <int64_t> _Q_PROJ_ROWS * (_even(shape.input_size) // 2 + 1 + _PANEL))


cdef inline short *_q_rows(const Shape *shape, float *acc__r48) noexcept nogil:
    return <short *> (acc__r48 + 2 * <int64_t> shape.acc_rows * _PANEL)


cdef inline float *_q_scales(const Shape *shape, float *acc__r48) noexcept nogil:
    return (acc__r48 + 2 * <int64_t> shape.acc_rows * _PANEL
            + <int64_t> shape.acc_rows * (_even(shape.hidden) // 2))


cdef void _quantize_tile_rows(const Shape *shape, int b0, int b1, const float *h_prev,
                              int ld_prev, float *acc__r48) noexcept nogil:
    """Rows b0..b1 of h(t-1) as int8 values (int16 slots) and per-row scales, into this
    thread's workspace."""
    cgru_quantize_rows(b1 - b0, shape.hidden, h_prev + <int64_t> b0 * ld_prev, ld_prev,
                       _q_rows(shape, acc__r48), _even(shape.hidden),
                       _q_scales(shape, acc__r48))


cdef void _quant_tile_product(const Shape *shape, int d, int k, int b0, int b1,
                              const float *h_prev, int ld_prev,
                              float *acc__r48) noexcept nogil:
    """acc[b - b0] = h[b] @ W_hh panel of unit block k, direction d, for rows b0..b1, in
    float32; k-blocked like _tile_product, so a chunk of the panel stays in L1."""
    cdef int hidden = shape.hidden
    cdef int pairs = _even(hidden) // 2
    cdef int64_t block = <int64_t> d * shape.n_blocks + k
    cdef int kc, kn, b, rows
    cdef const uint32_t *words
    cdef const int8_t *bytes_
    cdef short *q
    if shape.quant == QUANT_BF16:
        words = <const uint32_t *> shape.q_hh_panels + block * pairs * _PANEL
        kc = 0
        while kc < hidden:
            kn = min(<int> _Q_CHUNK, hidden - kc)
            b = b0
            while b < b1:
                rows = min(CGRU_BF16_ROWS, b1 - b)
                cgru_bf16_panel_product(rows, kn, h_prev + <int64_t> b * ld_prev + kc, ld_prev,
                                        words + <int64_t> (kc // 2) * _PANEL,
                                        acc__r48 + <int64_t> (b - b0) * _PANEL, kc > 0)
                b += rows
            kc += kn
        return
    bytes_ = <const int8_t *> shape.q_hh_panels + block * pairs * 2 * _PANEL
    q = _q_rows(shape, acc__r48)
    kc = 0
    while kc < pairs:
        kn = min(<int> _Q_CHUNK // 2, pairs - kc)
        b = b0
        while b < b1:
            rows = min(CGRU_QI_ROWS, b1 - b)
            cgru_int8_panel_product(rows, kn, q + <int64_t> (b - b0) * 2 * pairs + 2 * kc,
                                    2 * pairs, <const signed char *> bytes_
                                    + <int64_t> kc * 2 * _PANEL,
                                    <int *> (acc__r48 + <int64_t> (b - b0) * _PANEL), kc > 0)
            b += rows
        kc += kn
    cgru_dequantize_acc(b1 - b0, acc__r48, _q_scales(shape, acc__r48),
                        shape.q_hh_scales + block * _PANEL)


cdef void _quant_projection(const Shape *shape, int d, int rows, const float *x__ri,
                            float *gi__r3h, float *acc__r48) noexcept nogil:
    """gi = x @ W_ih^T for `rows` rows of x, into gi's compact layout, with int8 products: per
    group of rows, each row quantized symmetrically (as h is), then per unit block the int32
    sums against the k-paired W_ih panel, scaled to float32."""
    cdef int hidden = shape.hidden
    cdef int inputs = shape.input_size
    cdef int pairs = _even(inputs) // 2
    cdef float *base = (acc__r48 + 2 * <int64_t> shape.acc_rows * _PANEL
                        + <int64_t> shape.acc_rows * (_even(hidden) // 2 + 1))
    cdef short *q = <short *> base
    cdef float *scales = base + <int64_t> _Q_PROJ_ROWS * pairs
    cdef float *acc = scales + <int>_Q_PROJ_ROWS
    cdef const int8_t *panel
    cdef int g0, group, k, u0, u, kc, kn, b, n, m, gate
    cdef int64_t block
    g0 = 0
    while g0 < rows:
        group = min(<int> _Q_PROJ_ROWS, rows - g0)
        cgru_quantize_rows(group, inputs, x__ri + <int64_t> g0 * inputs, inputs, q, 2 * pairs,
                           scales)
        for k in range(shape.n_blocks):
            u0 = k * _UB
            u = min(_UB, hidden - u0)
            block = <int64_t> d * shape.n_blocks + k
            panel = <const int8_t *> shape.q_ih_panels + block * pairs * 2 * _PANEL
            kc = 0
            while kc < pairs:
                kn = min(<int> _Q_CHUNK // 2, pairs - kc)
                b = 0
                while b < group:
                    n = min(CGRU_QI_ROWS, group - b)
                    cgru_int8_panel_product(n, kn, q + <int64_t> b * 2 * pairs + 2 * kc,
                                            2 * pairs, <const signed char *> panel
                                            + <int64_t> kc * 2 * _PANEL,
                                            <int *> (acc + b * _PANEL), kc > 0)
                    b += n
                kc += kn
            cgru_dequantize_acc(group, acc, scales, shape.q_ih_scales + block * _PANEL)
            for m in range(group):
                for gate in range(3):
                    memcpy(gi__r3h + <int64_t> (g0 + m) * 3 * hidden + 3 * u0 + gate * u,
                           acc + m * _PANEL + gate * _UB, u * sizeof(float))
        g0 += group


cdef void _widen(int mode, int64_t groups, int64_t per_group, int cols, const void *q,
                 const float *scales, float *out) noexcept nogil:
    """Stored weights (groups, per_group, cols) as float32: bfloat16 bits shifted into the top
    half, or int8 values times the scale of their (group, column)."""
    cdef int64_t g, r, i = 0
    cdef int c
    cdef const uint16_t *bits = <const uint16_t *> q
    cdef const int8_t *values = <const int8_t *> q
    cdef uint32_t word
    for g in range(groups):
        for r in range(per_group):
            if mode == QUANT_BF16:
                for c in range(cols):
                    word = (<uint32_t> bits[i + c]) << 16
                    memcpy(&out[i + c], &word, 4)
            else:
                for c in range(cols):
                    out[i + c] = values[i + c] * scales[g * cols + c]
            i += cols


cdef class QuantLayerWeights:
    """One layer's reduced-precision weights in the kernel's layout, their addresses taken once.

    cgru/quantized.py builds the arrays, C-contiguous, where D directions, I inputs, H hidden
    units, K = ceil(H / 16), P = ceil(H / 2):
        mode          1 (bfloat16: uint16 bits) or 2 (int8)
        w_ih          (D, I, 3H)        uint16 or int8, LayerWeights.w_ih's layout
        w_ih_panels   (D, K, I, 48)     uint16 or int8, LayerWeights.w_ih_panels' layout
        w_hh          (D, H, 3H)        uint16 or int8, for the BLAS path of large tiles
        hh_panels     (D, K, P, 48)     uint32 (bf16 pairs) or (D, K, P, 48, 2) int8: W_hh's
                                        panels, rows 2p and 2p + 1 side by side
        ih_scales     (D, 3H)           float32: int8 scale of each w_ih column (bf16: unused)
        ih_panel_scales (D, K, 48)      float32: the same per panel column
        hh_scales     (D, 3H)           float32: per w_hh column
        hh_panel_scales (D, K, 48)      float32: per hh_panels column
        ih_pairs      (D, K, ceil(I/2), 48, 2) int8: W_ih's panels k-paired, for the int8
                                        input projection; one zero: project in float32
                                        through w_ih widened (bfloat16, and int8 by default)
        bias_gi       (D, 3H), bias_hn (D, H)   float32, as LayerWeights
    """
    cdef readonly tuple arrays
    cdef readonly int mode, n_dirs, input_size, hidden, n_blocks
    cdef readonly bint int8_projection
    cdef const void *w_ih
    cdef const void *w_ih_panels
    cdef const void *w_hh
    cdef const void *hh_panels
    cdef const float *ih_scales
    cdef const float *ih_panel_scales
    cdef const float *hh_scales
    cdef const float *hh_panel_scales
    cdef const float *bias_gi
    cdef const float *bias_hn
    cdef const void *ih_pairs

    def __init__(self, int mode, w_ih, w_ih_panels, w_hh, hh_panels, ih_scales,
                 ih_panel_scales, hh_scales, hh_panel_scales, bias_gi, bias_hn, ih_pairs):
        if mode not in (QUANT_BF16, QUANT_INT8):
            raise ValueError(f"QuantLayerWeights: mode must be 1 (bfloat16) or 2 (int8), "
                             f"got {mode}")
        self.arrays = (w_ih, w_ih_panels, w_hh, hh_panels, ih_scales, ih_panel_scales,
                       hh_scales, hh_panel_scales, bias_gi, bias_hn, ih_pairs)
        weight_dtype = "uint16" if mode == QUANT_BF16 else "int8"
        want = ([weight_dtype] * 3 + ["uint32" if mode == QUANT_BF16 else "int8"]
                + ["float32"] * 6 + ["int8"])
        got = [a.dtype.name for a in self.arrays]
        if got != want or not all(a.flags.c_contiguous for a in self.arrays):
            raise ValueError(f"QuantLayerWeights needs C-contiguous arrays of dtypes {want}, "
                             f"got {got}")
        self.mode = mode
        self.n_dirs = w_ih.shape[0]
        self.input_size = w_ih.shape[1]
        self.hidden = w_hh.shape[1]
        self.n_blocks = w_ih_panels.shape[1]
        self.w_ih = _address(w_ih)
        self.w_ih_panels = _address(w_ih_panels)
        self.w_hh = _address(w_hh)
        self.hh_panels = _address(hh_panels)
        self.ih_scales = <const float *> _address(ih_scales)
        self.ih_panel_scales = <const float *> _address(ih_panel_scales)
        self.hh_scales = <const float *> _address(hh_scales)
        self.hh_panel_scales = <const float *> _address(hh_panel_scales)
        self.bias_gi = <const float *> _address(bias_gi)
        self.bias_hn = <const float *> _address(bias_hn)
        self.ih_pairs = _address(ih_pairs)
        self.int8_projection = mode == QUANT_INT8 and ih_pairs.size > 1

    def __reduce__(self):
        return QuantLayerWeights, (self.mode,) + self.arrays


def quant_layer(const float[:, ::1] x,
                QuantLayerWeights weights,
                const int64_t[::1] batch_sizes,
                float[:, :, ::1] h,
                float[:, ::1] out,
                int n_threads,
                int steps_per_block,
                int panel_max_rows,
                int projection_panel_rows,
                bint split_rows):
    """Run one GRU layer with reduced-precision weights, all its directions, over packed
    time-major rows: gru_layer's arguments and shapes (float32 only), where tiles of at most
    panel_max_rows rows multiply by the stored W_hh panels and larger ones by BLAS on W_hh
    widened to float32; projection_panel_rows and split_rows as gru_layer's (no fused
    projection). Shapes are not checked here: cgru/quantized.py validates every
    argument before calling.
    """
    cdef Shape shape
    cdef int status = 0
    cdef int mode = weights.mode
    shape.n_steps = batch_sizes.shape[0]
    shape.n_dirs = weights.n_dirs
    shape.input_size = x.shape[1]
    shape.hidden = h.shape[2]
    shape.batch = h.shape[1]
    shape.n_blocks = weights.n_blocks
    _take_choices(&shape, panel_max_rows, projection_panel_rows, split_rows)
    shape.fused = False
    shape.steps_per_block = max(1, min(steps_per_block, shape.n_steps))
    shape.quant = mode
    shape.q_hh_panels = weights.hh_panels
    shape.q_hh_scales = weights.hh_panel_scales
    shape.q_ih_panels = weights.ih_pairs if weights.int8_projection else NULL
    shape.q_ih_scales = weights.ih_panel_scales
    n_threads = max(1, min(n_threads, shape.n_dirs * max(shape.batch, shape.n_blocks)))
    cdef int64_t d = shape.n_dirs, i_ = shape.input_size, g3 = 3 * shape.hidden
    cdef int64_t kb = shape.n_blocks
    cdef bint blas_tiles = shape.batch > panel_max_rows
    # an int8 projection goes through its own panels: no float32 W_ih
    cdef bint widen_ih = not weights.int8_projection
    cdef int64_t float_ih = d * i_ * g3 if widen_ih else 1
    cdef int64_t float_panels = d * kb * i_ * _PANEL if widen_ih else 1
    cdef float *w_ih = NULL
    cdef float *ih_panels = NULL
    cdef float *w_hh = NULL
    with nogil:
        w_ih = <float *> cgru_alloc(float_ih * sizeof(float))
        ih_panels = <float *> cgru_alloc(float_panels * sizeof(float))
        w_hh = <float *> cgru_alloc((d * shape.hidden * g3 if blas_tiles else 1) * sizeof(float))
        if w_ih == NULL or ih_panels == NULL or w_hh == NULL:
            status = -1
        else:
            if widen_ih:
                _widen(mode, d, i_, <int> g3, weights.w_ih, weights.ih_scales, w_ih)
                _widen(mode, d * kb, i_, _PANEL, weights.w_ih_panels, weights.ih_panel_scales,
                       ih_panels)
            if blas_tiles:
                _widen(mode, d, shape.hidden, <int> g3, weights.w_hh, weights.hh_scales, w_hh)
            status = _run_layer(&shape, n_threads, &x[0, 0], w_ih, ih_panels, w_hh,
                                <const float *> NULL, weights.bias_gi, weights.bias_hn,
                                &batch_sizes[0], &h[0, 0, 0], &out[0, 0], <float *> NULL,
                                <float *> NULL)
        cgru_free(w_ih); cgru_free(ih_panels); cgru_free(w_hh)
    if status != 0:
        raise MemoryError("cgru: could not allocate the GRU workspace")
