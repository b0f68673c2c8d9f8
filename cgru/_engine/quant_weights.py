"""Reduced-precision weights: rounding to bfloat16, int8 quantization per output row, and the
kernel's layout of them (pyx/_quant.pxi), built once per module.

The stored form of a weight (what a QuantizedGRU saves and pickles) is PyTorch's shape:
bfloat16 as uint16 bits (3H, K); int8 as int8 values (3H, K) with one float32 scale per row
(3H,), value = q * scale.
"""
import numpy as np

from . import policy
from .isa import cpu_features, kernel
from .weights import aligned_stack, gate_column_order, weight_panels

PRECISIONS = ("bfloat16", "int8")
MODES = {"bfloat16": 1, "int8": 2}     # QuantLayerWeights.mode
# The CPU features that multiply each precision natively (dot products of bfloat16 pairs or of
# int8 quadruples, tiles), none of which a cgru kernel uses yet (issue 22)
NATIVE_FEATURES = {"bfloat16": ("avx512_bf16", "amx_bf16"),
                   "int8": ("avx512_vnni", "avx_vnni", "amx_int8")}


def reduced_precision_kernels(features=None):
    """Which kernel runs for each precision in the build that runs and with this policy:
    {precision: {"kernel": a short name, "instructions": what its products compile to in this
    build, "recurrent": the recurrent product, "inputs": the input projections, "unused": the
    CPU's features that would multiply this precision natively but that no cgru kernel uses}}.
    features: cpu_features()' dict (default: asked here)."""
    features = cpu_features() if features is None else features
    products = kernel.QUANT_PRODUCTS
    bf16_rows = policy.QUANT_PANEL_MAX_ROWS["bfloat16"]
    kernels = {
        "bfloat16": {
            "kernel": "widen-to-float32",
            "recurrent": (f"bfloat16 W_hh widened to float32 in registers, h float32, "
                          f"{products['bfloat16']}, float32 sums (tiles of more than "
                          f"{bf16_rows} rows: float32 sgemm on W_hh widened once per call)"),
            "inputs": "float32 sgemm on W_ih widened once per call (x not rounded)"},
        "int8": {
            "kernel": "pmaddwd",
            "recurrent": (f"int8 W_hh times h quantized per row, both widened to int16, "
                          f"{products['int8']}, exact int32 sums"),
            "inputs": ("int8 products like the recurrent one, on x quantized per row"
                       if policy.INT8_INPUT_PRODUCTS else
                       "float32 sgemm on W_ih dequantized once per call (x not rounded)")}}
    for precision, described in kernels.items():
        described["instructions"] = products[precision]
        described["unused"] = [name for name in NATIVE_FEATURES[precision]
                               if features.get(name)]
    return kernels


def check_precision(precision):
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, "
                         f"got {precision!r}")
    return precision


def to_bfloat16(values):
    """float32 values as bfloat16 bits (uint16), rounded to nearest, ties to even; NaN stays NaN
    (quiet, sign kept), infinities stay infinite, and values rounding past the largest bfloat16
    become infinite, as IEEE rounding does."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) \
        >> np.uint32(16)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    quiet = (bits >> np.uint32(16)) | np.uint32(0x0040)
    return np.where(nan, quiet, rounded).astype(np.uint16)


def from_bfloat16(bits):
    """bfloat16 bits (uint16) as float32 values (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def quantize_int8_rows(weight):
    """(q int8 (M, K), scale float32 (M,)) with weight[m] ~ q[m] * scale[m]: symmetric, scale
    max|weight[m]| / 127 per row (a zero row: scale 0, q 0), q = rint(weight / scale)."""
    w = np.asarray(weight, dtype=np.float32)
    amax = np.max(np.abs(w), axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    scale = (amax / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.rint(w / safe[:, None]), -127, 127).astype(np.int8)
    return q, scale


def dequantize(stored, precision, scale=None):
    """A stored weight as the float32 values the kernel multiplies by."""
    if precision == "bfloat16":
        return from_bfloat16(stored)
    return stored.astype(np.float32) * scale[:, None]


def _paired_panels(panels):
    """Panels (Kb, H, 48) with rows 2p and 2p + 1 side by side: (Kb, ceil(H / 2), 48, 2)."""
    blocks, depth, width = panels.shape
    if depth % 2:
        panels = np.concatenate([panels, np.zeros((blocks, 1, width), panels.dtype)], axis=1)
    return panels.reshape(blocks, -1, 2, width).transpose(0, 1, 3, 2)


def _column_scales(scale):
    """Row scales (3H,) of a PyTorch weight in the kernel's column order: (3H,) for the
    transposed layout and (Kb, 48) for the panels (zero in the padding)."""
    order = gate_column_order(scale.shape[0] // 3)
    panels = weight_panels(scale.reshape(-1, 1))
    return scale[order], panels.reshape(panels.shape[0], -1)


def pack_quant_layer(directions, hidden_size, precision):
    """One layer's stored weights in the kernel's layout (QuantLayerWeights). With int8 and
    policy.INT8_INPUT_PRODUCTS, the input projections are laid out for int8 products on
    quantized inputs, else for float32 sgemm through the widened weights.

    directions: per direction, (w_ih (3H, I), w_hh (3H, H)) stored (uint16 bits or int8),
    (s_ih (3H,), s_hh (3H,)) int8 scales or None, and (b_ih, b_hh) float32 (3H,) or None.
    """
    int8_projection = policy.INT8_INPUT_PRODUCTS and precision == "int8"
    order = gate_column_order(hidden_size)
    h = hidden_size
    parts = [[] for _ in range(11)]
    for (w_ih, w_hh), scales, (b_ih, b_hh) in directions:
        parts[0].append(w_ih[order].T)
        parts[1].append(weight_panels(w_ih))
        parts[2].append(w_hh[order].T)
        paired = _paired_panels(weight_panels(w_hh))
        parts[3].append(np.ascontiguousarray(paired).view(np.uint32)[..., 0]
                        if precision == "bfloat16" else paired)
        if scales is None:      # bfloat16: no scales, zeros of the right shapes
            scales = (np.zeros(3 * h, np.float32), np.zeros(3 * h, np.float32))
        for slot, scale in ((4, scales[0]), (6, scales[1])):
            columns, panel_columns = _column_scales(np.asarray(scale, np.float32))
            parts[slot].append(columns)
            parts[slot + 1].append(panel_columns)
        if b_ih is None:
            b_ih = np.zeros(3 * h, np.float32)
            b_hh = np.zeros(3 * h, np.float32)
        combined = np.array(b_ih, dtype=np.float32)
        combined[: 2 * h] += b_hh[: 2 * h]
        parts[8].append(combined[order])
        parts[9].append(np.asarray(b_hh[2 * h:], dtype=np.float32))
        if int8_projection:
            parts[10].append(_paired_panels(weight_panels(w_ih)))
    if not int8_projection:
        parts[10] = [np.zeros(1, np.int8)]     # one zero, not a panel: sgemm projections
    return kernel.QuantLayerWeights(
        MODES[precision], *(aligned_stack(p, p[0].dtype) for p in parts[:10]),
        aligned_stack(parts[10], np.int8) if int8_projection else parts[10][0])
