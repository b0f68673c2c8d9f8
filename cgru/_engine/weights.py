"""Weights in the layout the kernel wants, built once when parameters change.

The kernel computes both products as row-major NN GEMMs, so the (3H, K) PyTorch matrices are
stored transposed, (K, 3H). Their 3H gate columns are regrouped by blocks of UNIT_BLOCK hidden
units, [r | z | n] within each block, so that a thread owning a range of hidden units owns one
contiguous range of columns (one GEMM call per step, gates of a unit close together in memory).
"""
import functools
import math

import numpy as np

from .. import _rows
from .aligned import ALIGNMENT, aligned_empty
from .isa import kernel

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


def weight_panels(weight):
    """A (3H, K) weight as ceil(H / 16) panels (ceil(H / 16), K, 48): panel k holds the r, z
    and n rows of hidden units 16k .. 16k+15, transposed, each gate padded with zeros to 16."""
    h, depth = weight.shape[0] // 3, weight.shape[1]
    out = np.empty((-(-h // UNIT_BLOCK), depth, PANEL_WIDTH), dtype=weight.dtype)
    _write_weight_panels(weight, out)
    return out


def _write_weight_panels(weight, out):
    """weight_panels(weight), written into out (ceil(H / 16), K, 48)."""
    h, depth = weight.shape[0] // 3, weight.shape[1]
    full = h // UNIT_BLOCK                    # blocks without padding
    # out[k, :, 16 g + u] = weight[g H + 16 k + u, :]
    by_gate = out.reshape(out.shape[0], depth, 3, UNIT_BLOCK)
    gates = weight.reshape(3, h, depth)
    if full:
        by_gate[:full] = gates[:, :full * UNIT_BLOCK].reshape(
            3, full, UNIT_BLOCK, depth).transpose(1, 3, 0, 2)
    if full < out.shape[0]:
        rest = h - full * UNIT_BLOCK
        by_gate[full] = 0
        by_gate[full, :, :, :rest] = gates[:, full * UNIT_BLOCK:].transpose(2, 0, 1)


def _write_panels_of_packed(packed, out):
    """The panels of a weight (as weight_panels), written into out (ceil(H / 16), K, 48) from
    its packed layout (K, 3H): panel k is packed columns 48k .. 48k+47 (r, z, n of units
    16k .. 16k+15); in a last block of fewer units, each gate is zero padded to 16. Read from
    the packed layout, a panel's rows are 48 contiguous values, where the PyTorch layout has
    them a column apart: S3's W_hh panels, 165 -> 41 us."""
    depth, h = packed.shape[0], packed.shape[1] // 3
    full = h // UNIT_BLOCK
    if full:
        out[:full] = packed[:, :PANEL_WIDTH * full].reshape(
            depth, full, PANEL_WIDTH).transpose(1, 0, 2)
    if full < out.shape[0]:
        rest = h - full * UNIT_BLOCK     # the last block's columns: r | z | n of `rest` units
        by_gate = out[full].reshape(depth, 3, UNIT_BLOCK)
        by_gate[:, :, rest:] = 0
        by_gate[:, :, :rest] = packed[:, PANEL_WIDTH * full:].reshape(depth, 3, rest)


def _write_backward_panels(rows_w_hh, out):
    """The backward pass's recurrent weights, written into out (J, 3H, 48), J = ceil(H / 48):
    panel j holds hidden units 48j .. 48j+47 of every gate row of W_hh, zero padded, so that
    dL/dh(t-1) = dG_h @ W_hh is a register-blocked product per 48 units. rows_w_hh: W_hh
    (3H, H) with its rows in the packed gate order (the packed layout transposed)."""
    g3, h = rows_w_hh.shape
    full = h // PANEL_WIDTH
    if full:
        out[:full] = rows_w_hh[:, :full * PANEL_WIDTH].reshape(
            g3, full, PANEL_WIDTH).transpose(1, 0, 2)
    if full < out.shape[0]:
        rest = h - full * PANEL_WIDTH
        out[full, :, rest:] = 0
        out[full, :, :rest] = rows_w_hh[:, full * PANEL_WIDTH:]


def pack_layer(directions, hidden_size, dtype):
    """Stack the directions of one layer in the kernel's layout.

    directions: one (w_ih (3H, I), w_hh (3H, H), b_ih (3H,) or None, b_hh (3H,) or None) per
    direction. Returns the kernel's LayerWeights of (w_ih (D, I, 3H), w_ih_panels (D, K, I, 48),
    w_hh (D, H, 3H), w_hh_panels (D, K, H, 48), bias_gi (D, 3H), bias_hn (D, H)) and
    back_panels (D, J, 3H, 48) for the backward pass, where K = ceil(H / 16), J = ceil(H / 48)
    and bias_gi = b_ih + b_hh for the r and z gates and b_in for n (b_hn must stay inside
    r * (...)).

    Each array is written once, in place, into one aligned allocation: this runs after every
    optimizer step, and for a small model (H = 64) building the pieces and then stacking them
    took as long as the training step's forward pass.
    """
    order = gate_column_order(hidden_size)
    h, d = hidden_size, len(directions)
    i = directions[0][0].shape[1]
    k, j = -(-h // UNIT_BLOCK), -(-h // PANEL_WIDTH)
    w_ih, ih_panels, w_hh, hh_panels, bias_gi, bias_hn, back = _aligned_arrays(
        [(d, i, 3 * h), (d, k, i, PANEL_WIDTH), (d, h, 3 * h), (d, k, h, PANEL_WIDTH),
         (d, 3 * h), (d, h), (d, j, 3 * h, PANEL_WIDTH)], dtype)
    for direction, (weight_ih, weight_hh, b_ih, b_hh) in enumerate(directions):
        _rows.gather_transpose(np.ascontiguousarray(weight_ih, dtype), order, w_ih[direction])
        _write_panels_of_packed(w_ih[direction], ih_panels[direction])
        weight_hh = np.ascontiguousarray(weight_hh, dtype)
        _rows.gather_transpose(weight_hh, order, w_hh[direction])
        _write_panels_of_packed(w_hh[direction], hh_panels[direction])
        _write_backward_panels(weight_hh.take(order, axis=0), back[direction])
        if b_ih is None:
            bias_gi[direction] = 0
            bias_hn[direction] = 0
        else:
            combined = b_ih.copy()
            combined[: 2 * h] += b_hh[: 2 * h]
            np.take(combined, order, out=bias_gi[direction])
            bias_hn[direction] = b_hh[2 * h:]
    return kernel.LayerWeights(w_ih, ih_panels, w_hh, hh_panels, bias_gi, bias_hn, back)


def aligned_stack(parts, dtype):
    """np.stack(parts) as one aligned C-contiguous array, written once."""
    out = aligned_empty((len(parts),) + parts[0].shape, dtype)
    for d, part in enumerate(parts):
        out[d] = part
    return out


def _aligned_arrays(shapes, dtype):
    """Uninitialised C-contiguous arrays of these shapes, carved from one allocation, each
    starting on a 64-byte boundary (when the allocation is large enough to be aligned)."""
    per_line = ALIGNMENT // np.dtype(dtype).itemsize
    sizes = [math.prod(shape) for shape in shapes]
    starts, total = [], 0
    for size in sizes:
        starts.append(total)
        total += -(-size // per_line) * per_line
    flat = aligned_empty((total,), dtype)
    return [flat[start:start + size].reshape(shape)
            for start, size, shape in zip(starts, sizes, shapes)]


def unpack_layer_grads(grads, hidden_size):
    """The kernel's gradients of one layer (dw_ih (D, 3H, I), dw_hh (D, 3H, H), db_ih (D, 3H),
    db_hh (D, 3H), gates in the packed order) as PyTorch's: per direction, (weight_ih
    (3H, I), weight_hh (3H, H), bias_ih (3H,), bias_hh (3H,)), new C-contiguous arrays."""
    rows = _packed_row_of(hidden_size)
    dw_ih, dw_hh, db_ih, db_hh = grads
    # A gather of rows: take for matrices, indexing for vectors, the faster of the two for
    # each (a one-step backward's four, as scatters by gate_column_order: 27 -> 17 us).
    return [[dw_ih[d].take(rows, axis=0), dw_hh[d].take(rows, axis=0),
             db_ih[d][rows], db_hh[d][rows]] for d in range(dw_ih.shape[0])]


@functools.lru_cache(maxsize=16)
def _packed_row_of(hidden_size):
    """Index array q such that PyTorch row r of a (3H, K) weight is packed row q[r]: the
    inverse of gate_column_order."""
    rows = np.argsort(gate_column_order(hidden_size))
    rows.flags.writeable = False
    return rows
