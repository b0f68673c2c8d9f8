"""Calling the compiled kernel: the per-call policy (threads, workspace blocks, BLAS threads)
shared by GRU and GRUCell. Each threshold names the measurement behind it."""
import contextlib
import functools
from typing import NamedTuple, Optional

import numpy as np

from ._engine import kernel
from ._blas_threads import blas_single_threaded
from ._recycle import recycled_empty
from ._threads import get_num_threads

# The input projection of a layer is computed for a block of timesteps at a time, so the
# workspace stays bounded however long the sequence: about this many bytes per direction.
PROJECTION_WORKSPACE_BYTES = 4 << 20
# Tiles of at most this many rows multiply by the register-blocked W_hh panels, larger ones by
# a BLAS GEMM: on the development machine (AVX-512, 1 thread) the panels were 1.1-4.5x faster
# than OpenBLAS from 2 to 128 rows at H = 256 and 512, 0.9-1.4x at H = 128, and (k-blocked,
# projection fused) 3-5% faster at 256 rows, H = 512 (S6), where OpenBLAS spends 12% of its
# time re-packing the weights on every call.
# That holds where the register block is 8 rows (AVX-512). With AVX2's 2-row block (AMD EPYC
# Zen 2, 1 thread), OpenBLAS won from 32 rows: S5 576 -> 333 ms and S6 915 -> 471 ms with 16
# as the limit (and the fused projection below held to it), S2-S4 unchanged or faster.
PANEL_MAX_ROWS = 256 if kernel.PANEL_ROWS_FLOAT >= 8 else 16
# A team of threads splits the sequences when each thread gets at least this many (no barrier
# per step), else the hidden units of every step (each thread keeps its slice of the weights,
# and full 8-row register blocks, one barrier per step). 2 threads: S3 (4 rows each) units
# 1.58 ms vs rows 1.84; S4 (16 rows each) rows 1.85 ms vs units 2.2; S8 rows 5.5 vs units 6.1.
MIN_ROWS_PER_THREAD = 8
# Batches of FUSE_MIN_ROWS to FUSE_MAX_ROWS sequences project their input step by step, in
# registers, through the W_ih panels, instead of by one GEMM per block of steps: no projection
# buffer (written, zeroed by BLAS and read back) and, when threads split sequences, no barrier
# at all. Measured at H = 128 (1 thread): fused 40% slower at batch 1, even at 4, 5-10% faster
# from 8 to 256 (one GEMM over all the steps of a batch-1 sequence beats 1-row products).
FUSE_MIN_ROWS = 8
FUSE_MAX_ROWS = min(256, PANEL_MAX_ROWS)
# A block of steps whose input projection has at most this many rows per thread goes through
# the W_ih panels (one register block: no BLAS call overhead, one-step calls), more through one
# GEMM. The float register block, for float64 too, as the kernel chose before it was told.
PROJECTION_PANEL_ROWS = kernel.PANEL_ROWS_FLOAT
# Below this much work a call runs on one thread: opening a parallel region costs about 2 us,
# more than a one-step call's whole compute (S1: 9 us on 2 threads, 7 us on 1).
MIN_FLOPS_FOR_THREADS = 1 << 20
# OpenBLAS runs a GEMM on one thread when m * n * k is at most this (SMP_THRESHOLD_MIN *
# GEMM_MULTITHREAD_THRESHOLD in its interface/gemm.c): calls whose GEMMs are all that small
# need no thread limit, which saves two ctypes calls on one-step (streaming) calls.
BLAS_SINGLE_THREAD_WORK = 65536 * 4

# The backward pass works through blocks of steps whose dG_i, dG_h and h(t-1) rows (7H values a
# row) take about this many bytes per direction: its weight-gradient GEMMs then have thousands
# of rows (S6: 585, S5: 1170), while the workspace stays bounded however long the sequence.
BACKWARD_WORKSPACE_BYTES = 8 << 20

# The kernel's float and double specializations, looked up once: calling a fused Cython function
# through its dispatcher costs microseconds per call.
_LAYER_KERNELS = {np.dtype(np.float32): kernel.gru_layer["float"],
                  np.dtype(np.float64): kernel.gru_layer["double"]}
_QUANT_KERNEL = kernel.quant_layer
_BACKWARD_KERNELS = {np.dtype(np.float32): kernel.gru_layer_backward["float"],
                     np.dtype(np.float64): kernel.gru_layer_backward["double"]}


class LayerTape(NamedTuple):
    """What the backward pass of one layer needs of its forward pass."""
    x: np.ndarray           # (R, I) the layer's input rows (after the dropout below it)
    out: np.ndarray         # (R, D*H) its output rows (before dropout)
    save: np.ndarray        # (D, R, 4H) the gates the kernel saved
    weights: object         # the LayerWeights of that forward pass
    h0: np.ndarray          # (D, N, H) its initial state
    mask: Optional[np.ndarray]  # (R, D*H) the dropout applied to out (scale included), or None
_NO_GUARD = contextlib.nullcontext()


def _aligned_rows(rows):
    """rows, or an aligned copy: the kernel reads each value as its C type, which must be
    aligned (NumPy's views into bytes, e.g. dask's deserialised chunks, need not be)."""
    return rows if rows.flags.aligned else rows.copy()


@functools.lru_cache(maxsize=64)
def dense_batch_sizes(seq_len, batch):
    """[batch] * seq_len as the kernel's int64 array (read-only: it is shared between calls)."""
    sizes = np.full(seq_len, batch, dtype=np.int64)
    sizes.flags.writeable = False
    return sizes


class LayerStack:
    """What a call needs to know about a stack of layers, computed once per module."""

    def __init__(self, input_size, hidden_size, num_layers, num_directions, dtype):
        self.hidden = hidden_size
        self.dirs = num_directions
        self.num_layers = num_layers
        self.dtype = np.dtype(dtype)
        self.run_layer = _LAYER_KERNELS[self.dtype]
        widest_input = max(input_size, num_directions * hidden_size, hidden_size)
        self.flops_per_row = 6 * hidden_size * (widest_input + hidden_size) * num_directions \
            * num_layers
        self.gemm_work_per_row = 3 * hidden_size * widest_input
        self.gi_row_bytes = 3 * hidden_size * self.dtype.itemsize

    def _split_rows(self, n_threads, batch):
        """Whether a team of threads splits the sequences (else the hidden units of each
        step): when each of the largest team's threads gets MIN_ROWS_PER_THREAD of them, or
        there are fewer unit blocks than threads (the thread count as the kernel clamps it)."""
        blocks = -(-self.hidden // kernel.UNIT_BLOCK)
        n_threads = max(1, min(n_threads, self.dirs * max(batch, blocks)))
        team = -(-n_threads // self.dirs)
        return team == 1 or batch >= team * MIN_ROWS_PER_THREAD or blocks < team

    def _policy(self, rows, batch_sizes):
        """(threads, steps per projection block, split rows, fused projection, BLAS guard)."""
        batch = int(batch_sizes[0])
        n_threads = get_num_threads() if rows * self.flops_per_row >= MIN_FLOPS_FOR_THREADS else 1
        steps_per_block = max(1, PROJECTION_WORKSPACE_BYTES // (self.gi_row_bytes * batch))
        gemm_rows = max(min(steps_per_block, len(batch_sizes)) * batch,
                        batch if batch > PANEL_MAX_ROWS else 0)
        fuse_max_rows = FUSE_MAX_ROWS if batch >= FUSE_MIN_ROWS else 0
        guard = (blas_single_threaded() if gemm_rows * self.gemm_work_per_row
                 > BLAS_SINGLE_THREAD_WORK else _NO_GUARD)
        fused = batch <= min(fuse_max_rows, PANEL_MAX_ROWS)
        return n_threads, steps_per_block, self._split_rows(n_threads, batch), fused, guard

    def run_saving(self, packed_layers, x, batch_sizes, h_n, dropout_mask=None):
        """Like run, keeping what the backward pass needs: returns (rows, [LayerTape]).

        dropout_mask, if given, maps a shape to the mask (scale included) that multiplies a
        layer's output rows on their way to the next layer.
        """
        d, h = self.dirs, self.hidden
        x = _aligned_rows(x)
        rows = x.shape[0]
        h0 = h_n.copy()
        n_threads, steps_per_block, split_rows, fused, guard = self._policy(rows, batch_sizes)
        tape = []
        with guard:
            for layer in range(self.num_layers):
                weights = packed_layers[layer]
                out = recycled_empty((rows, d * h), self.dtype)
                save = recycled_empty((d, rows, 4 * h), self.dtype)
                self.run_layer(x, weights, batch_sizes, h_n[layer * d:(layer + 1) * d], out,
                               n_threads, steps_per_block, PANEL_MAX_ROWS,
                               PROJECTION_PANEL_ROWS, split_rows, fused, save)
                mask = None
                if dropout_mask is not None and layer < self.num_layers - 1:
                    mask = dropout_mask(out.shape)
                tape.append(LayerTape(x, out, save, weights, h0[layer * d:(layer + 1) * d],
                                      mask))
                x = out if mask is None else out * mask
        return x, tape

    def backward(self, tape, batch_sizes, grad_rows, grad_h_n):
        """The backward pass through every layer of a run_saving call.

        grad_rows (R, D*H): dL/d(last layer's output rows); grad_h_n (D*layers, N, H), in the
        kernel's (sorted) batch order. Returns (dL/dx (R, I), dL/dh_0 (D*layers, N, H), and per
        layer (dw_ih (D, I, 3H), dw_hh (D, H, 3H), db_ih (D, 3H), db_hh (D, 3H)) in the kernel's
        layout), all new arrays.
        """
        d, h = self.dirs, self.hidden
        grad_rows = _aligned_rows(grad_rows)
        rows, batch = grad_rows.shape[0], int(batch_sizes[0])
        n_threads = get_num_threads() if rows * self.flops_per_row >= MIN_FLOPS_FOR_THREADS else 1
        steps_per_block = max(1, BACKWARD_WORKSPACE_BYTES
                              // (7 * h * self.dtype.itemsize * batch))
        run_backward = _BACKWARD_KERNELS[self.dtype]
        grad_h0 = np.empty((d * self.num_layers, batch, h), dtype=self.dtype)
        layer_grads = [None] * self.num_layers
        guard = (blas_single_threaded() if rows * self.gemm_work_per_row
                 > BLAS_SINGLE_THREAD_WORK else _NO_GUARD)
        with guard:
            for layer in reversed(range(self.num_layers)):
                record = tape[layer]
                inputs = record.x.shape[1]
                dh = np.array(grad_h_n[layer * d:(layer + 1) * d], dtype=self.dtype, order="C")
                grad_x = recycled_empty((d, rows, inputs), self.dtype)
                grads = (np.zeros((d, inputs, 3 * h), dtype=self.dtype),
                         np.zeros((d, h, 3 * h), dtype=self.dtype),
                         np.zeros((d, 3 * h), dtype=self.dtype),
                         np.zeros((d, 3 * h), dtype=self.dtype))
                run_backward(record.x, record.weights, record.weights.back_panels, batch_sizes,
                             record.h0, record.out, record.save, grad_rows, dh, grad_x, *grads,
                             n_threads, steps_per_block, PANEL_MAX_ROWS)
                grad_h0[layer * d:(layer + 1) * d] = dh
                layer_grads[layer] = grads
                grad_rows = grad_x[0] if d == 1 else np.add(grad_x[0], grad_x[1])
                if layer > 0 and tape[layer - 1].mask is not None:
                    grad_rows *= tape[layer - 1].mask
        return grad_rows, grad_h0, layer_grads

    def run_quantized(self, quant_layers, x, batch_sizes, h_n, panel_max_rows):
        """Like run (no dropout), for float32 rows and the QuantLayerWeights of each layer
        (pyx/_quant.pxi); tiles of more than panel_max_rows rows use BLAS on W_hh widened to
        float32 once per call."""
        d, h = self.dirs, self.hidden
        x = _aligned_rows(x)
        rows = x.shape[0]
        n_threads, steps_per_block, split_rows, _, guard = self._policy(rows, batch_sizes)
        with guard:
            for layer in range(self.num_layers):
                out = recycled_empty((rows, d * h), self.dtype)
                _QUANT_KERNEL(x, quant_layers[layer], batch_sizes,
                              h_n[layer * d:(layer + 1) * d], out, n_threads, steps_per_block,
                              panel_max_rows, PROJECTION_PANEL_ROWS, split_rows)
                x = out
        return x

    def run(self, packed_layers, x, batch_sizes, h_n, dropout=None):
        """All layers over packed rows x (R, I); returns rows (R, D*H).

        batch_sizes (L,) int64, non-increasing; h_n (D*layers, N, H), a private C-contiguous
        array holding h_0 on entry and the final states on return. dropout, if given, maps a
        layer's output rows to their dropped-out version between layers.
        """
        d, h = self.dirs, self.hidden
        x = _aligned_rows(x)
        rows = x.shape[0]
        n_threads, steps_per_block, split_rows, fused, guard = self._policy(rows, batch_sizes)
        with guard:
            for layer in range(self.num_layers):
                out = recycled_empty((rows, d * h), self.dtype)
                self.run_layer(x, packed_layers[layer], batch_sizes,
                               h_n[layer * d:(layer + 1) * d], out, n_threads,
                               steps_per_block, PANEL_MAX_ROWS, PROJECTION_PANEL_ROWS,
                               split_rows, fused)
                if dropout is not None and layer < self.num_layers - 1:
                    out = dropout(out)
                x = out
        return x
