"""Weights in the layout the kernel wants, built once when parameters change.

The kernel computes both products as row-major NN GEMMs, so the (3H, K) PyTorch matrices are
stored transposed, (K, 3H). Their 3H gate columns are regrouped by blocks of UNIT_BLOCK hidden
units, [r | z | n] within each block, so that a thread owning a range of hidden units owns one
contiguous range of columns (one GEMM call per step, gates of a unit close together in memory).
"""
import functools

import numpy as np

from ._aligned import aligned_empty
from ._engine import kernel

UNIT_BLOCK = kernel.UNIT_BLOCK
PANEL_WIDTH = kernel.PANEL_WIDTH


@functools.lru_cache(maxsize=16)
def gate_column_order(hidden_size):
    """Index array p such that packed column c holds PyTorch row p[c] of a (3H, K) weight."""
    order = []
    for start in range(0, hidden_size, UNIT_BLOCK):
        units = np.arange(start, min(start + UNIT_BLOCK, hidden_size))
        for gate in range(3):
            order.append(gate * hidden_size + units)
    order = np.concatenate(order)
    order.flags.writeable = False
    return order


def _pad_rows(array, multiple):
    """array (n, ...) with zero rows appended up to a multiple of `multiple`."""
    n = array.shape[0]
    if n % multiple == 0:
        return array
    padded = np.zeros((-(-n // multiple) * multiple,) + array.shape[1:], dtype=array.dtype)
    padded[:n] = array
    return padded


def weight_panels(weight):
    """A (3H, K) weight as ceil(H / 16) panels (ceil(H / 16), K, 48): panel k holds the r, z
    and n rows of hidden units 16k .. 16k+15, transposed, each gate padded with zeros to 16."""
    h, depth = weight.shape[0] // 3, weight.shape[1]
    gates = np.stack([_pad_rows(weight[g * h:(g + 1) * h], UNIT_BLOCK) for g in range(3)])
    # (3, K16 * 16, depth) -> (blocks, depth, gate, unit)
    blocks = gates.reshape(3, -1, UNIT_BLOCK, depth).transpose(1, 3, 0, 2)
    return blocks.reshape(blocks.shape[0], depth, PANEL_WIDTH)


def backward_panels(packed_w_hh):
    """The backward pass's recurrent weights: packed w_hh (H, 3H) as ceil(H / 48) panels
    (J, 3H, 48), panel j holding hidden units 48j .. 48j+47 of every row, zero padded, so that
    dL/dh(t-1) = dG_h @ W_hh is a register-blocked product per 48 units."""
    padded = _pad_rows(packed_w_hh, PANEL_WIDTH)
    return padded.reshape(-1, PANEL_WIDTH, padded.shape[1]).transpose(0, 2, 1)


def pack_layer(directions, hidden_size, dtype):
    """Stack the directions of one layer in the kernel's layout.

    directions: one (w_ih (3H, I), w_hh (3H, H), b_ih (3H,) or None, b_hh (3H,) or None) per
    direction. Returns the kernel's LayerWeights of (w_ih (D, I, 3H), w_ih_panels (D, K, I, 48),
    w_hh (D, H, 3H), w_hh_panels (D, K, H, 48), bias_gi (D, 3H), bias_hn (D, H)) and
    back_panels (D, J, 3H, 48) for the backward pass, where K = ceil(H / 16), J = ceil(H / 48)
    and bias_gi = b_ih + b_hh for the r and z gates and b_in for n (b_hn must stay inside
    r * (...)).
    """
    order = gate_column_order(hidden_size)
    h = hidden_size
    w_ih, ih_panels, w_hh, hh_panels, bias_gi, bias_hn, back = [], [], [], [], [], [], []
    for weight_ih, weight_hh, b_ih, b_hh in directions:
        w_ih.append(weight_ih[order].T)
        ih_panels.append(weight_panels(weight_ih))
        w_hh.append(weight_hh[order].T)
        hh_panels.append(weight_panels(weight_hh))
        back.append(backward_panels(w_hh[-1]))
        if b_ih is None:
            b_ih = np.zeros(3 * h, dtype=dtype)
            b_hh = np.zeros(3 * h, dtype=dtype)
        combined = b_ih.copy()
        combined[: 2 * h] += b_hh[: 2 * h]
        bias_gi.append(combined[order])
        bias_hn.append(b_hh[2 * h:])
    return kernel.LayerWeights(*(_aligned_stack(parts, dtype) for parts in (
        w_ih, ih_panels, w_hh, hh_panels, bias_gi, bias_hn, back)))


def _aligned_stack(parts, dtype):
    """np.stack(parts) as one aligned C-contiguous array, written once."""
    out = aligned_empty((len(parts),) + parts[0].shape, dtype)
    for d, part in enumerate(parts):
        out[d] = part
    return out


def unpack_layer_grads(grads, hidden_size):
    """The kernel's gradients of one layer (dw_ih (D, I, 3H), dw_hh (D, H, 3H), db_ih (D, 3H),
    db_hh (D, 3H), columns in the packed order) as PyTorch's: per direction, (weight_ih
    (3H, I), weight_hh (3H, H), bias_ih (3H,), bias_hh (3H,)), new C-contiguous arrays."""
    order = gate_column_order(hidden_size)
    dw_ih, dw_hh, db_ih, db_hh = grads
    directions = []
    for d in range(dw_ih.shape[0]):
        parts = []
        for packed in (dw_ih[d].T, dw_hh[d].T, db_ih[d], db_hh[d]):
            grad = np.empty(packed.shape, dtype=packed.dtype)
            grad[order] = packed
            parts.append(grad)
        directions.append(parts)
    return directions
