"""A stack of GRU layers over packed rows: the one Python that calls the compiled kernel.

Each call asks the policy (policy.py) for a Plan once, then runs every layer under it; the
same loop serves the plain forward, the forward of vjp (which keeps a tape) and the
reduced-precision forward, and `backward` walks the tape back.
"""
import functools
from typing import NamedTuple, Optional

import numpy as np

from . import policy
from .aligned import SMALL_BYTES, aligned_empty
from .blas_threads import blas_single_threaded
from .isa import kernel
from .policy import NO_GUARD, plan
from .recycle import recycled_empty, recycled_zeros

# The kernel's float and double specializations, looked up once: calling a fused Cython function
# through its dispatcher costs microseconds per call.
_LAYER_KERNELS = {np.dtype(np.float32): kernel.gru_layer["float"],
                  np.dtype(np.float64): kernel.gru_layer["double"]}
_BACKWARD_KERNELS = {np.dtype(np.float32): kernel.gru_layer_backward["float"],
                     np.dtype(np.float64): kernel.gru_layer_backward["double"]}
_QUANT_KERNEL = kernel.quant_layer


class LayerTape(NamedTuple):
    """What the backward pass of one layer needs of its forward pass (not its output rows:
    the kernel saves each row's h(t-1) with its gates)."""
    x: np.ndarray           # (R, I) the layer's input rows (after the dropout below it)
    save: np.ndarray        # (D, R, 4H) each row's gates, as the kernel saved them
    states: np.ndarray      # (D, R, H) each row's h(t-1), as the kernel saved them
    weights: object         # the LayerWeights of that forward pass
    mask: Optional[np.ndarray]  # (R, D*H) the dropout applied to its output (scale included),
                                # or None


@functools.lru_cache(maxsize=64)
def dense_batch_sizes(seq_len, batch):
    """[batch] * seq_len as the kernel's int64 array (read-only: it is shared between calls)."""
    sizes = np.full(seq_len, batch, dtype=np.int64)
    sizes.flags.writeable = False
    return sizes


def dropout_mask(rng, p, shape, dtype):
    """The factor inverted dropout multiplies rows by: 0 with probability p, else 1 / (1 - p)."""
    if p >= 1:
        return np.zeros(shape, dtype=dtype)
    keep = rng.random(shape, dtype=dtype) >= p
    return keep * dtype.type(1.0 / (1.0 - p))


def _aligned_rows(rows):
    """rows, or an aligned copy: the kernel reads each value as its C type, which must be
    aligned (NumPy's views into bytes, e.g. dask's deserialised chunks, need not be)."""
    return rows if rows.flags.aligned else rows.copy()


class LayerStack:
    """Layers of one module: sizes, dtype and the policy's view of them, fixed at construction.

    Rows are packed time-major, PyTorch's PackedSequence layout: x (R, I) with the rows of step
    t after those of step t-1, batch_sizes (L,) int64 non-increasing, h_n (D*layers, N, H) in
    the kernel's (sorted) batch order, where R = sum(batch_sizes), N = batch_sizes[0].
    """

    def __init__(self, input_size, hidden_size, num_layers, num_directions, dtype):
        self.input_size = input_size
        self.hidden = hidden_size
        self.dirs = num_directions
        self.num_layers = num_layers
        self.dtype = np.dtype(dtype)
        self.shape = policy.stack_shape(input_size, hidden_size, num_layers, num_directions,
                                        self.dtype)
        self._layer_kernel = _LAYER_KERNELS[self.dtype]
        self._backward_kernel = _BACKWARD_KERNELS[self.dtype]

    def forward(self, layer_weights, x, batch_sizes, h_n, dropout=None, tape=None,
                precision=None, tape_input=None):
        """All layers over packed rows x (R, I); returns the last layer's rows (R, D*H).

        layer_weights: each layer's LayerWeights (QuantLayerWeights with `precision`, which
        is "bfloat16" or "int8" for float32 rows). h_n: a private C-contiguous array, h_0 on
        entry and the final states on return. dropout: None, or a function shape -> mask
        (scale included) multiplying a layer's output rows on their way to the next layer.
        tape: None, or a list that receives one LayerTape per layer (for `backward`).
        tape_input: with tape, the rows its first layer keeps as its input (a private copy of
        x, equal to it), or None for x itself.
        """
        d, h = self.dirs, self.hidden
        if not x.flags.aligned:
            x = _aligned_rows(x)
        rows = x.shape[0]
        call_plan = plan(self.shape, rows, batch_sizes, "forward", precision)
        args = call_plan.kernel_args
        last = self.num_layers - 1
        # (the guard inline: a function call is a tenth of S1's Python side)
        with blas_single_threaded() if call_plan.limit_blas else NO_GUARD:
            for layer in range(self.num_layers):
                weights = layer_weights[layer]
                states = h_n[layer * d:(layer + 1) * d]
                out = recycled_empty((rows, d * h), self.dtype)
                if precision is not None:
                    _QUANT_KERNEL(x, weights, batch_sizes, states, out, *args[:5])
                elif tape is None:
                    self._layer_kernel(x, weights, batch_sizes, states, out, *args)
                else:
                    save, started = self._tape_arrays(rows)
                    self._layer_kernel(x, weights, batch_sizes, states, out, *args, save,
                                       started)
                mask = None if dropout is None or layer == last else dropout(out.shape)
                if tape is not None:
                    kept = x if layer or tape_input is None else tape_input
                    tape.append(LayerTape(kept, save, started, weights, mask))
                x = out if mask is None else np.multiply(out, mask, out=out)
        return x

    def _tape_arrays(self, rows):
        """What a layer's kernel saves for the backward pass over `rows` rows: its gates
        (D, R, 4H) and states (D, R, H), uninitialised."""
        d, h, dtype = self.dirs, self.hidden, self.dtype
        if rows * 5 * d * h * dtype.itemsize < SMALL_BYTES:
            # one-step calls (S1): NumPy's own arrays, without recycled_empty's size checks
            # (1.2 us of the 9 that a one-step vjp added to its forward)
            return np.empty((d, rows, 4 * h), dtype), np.empty((d, rows, h), dtype)
        return recycled_empty((d, rows, 4 * h), dtype), recycled_empty((d, rows, h), dtype)

    def backward(self, tape, batch_sizes, grad_rows, grad_h_n, *, input_grad=True):
        """The backward pass through every layer of a forward that kept `tape`.

        grad_rows (R, D*H): dL/d(last layer's output rows); grad_h_n (D*layers, N, H), in the
        kernel's (sorted) batch order. Returns (dL/dx (R, I), or None without input_grad,
        dL/dh_0 (D*layers, N, H), and per layer (dw_ih (D, 3H, I), dw_hh (D, 3H, H),
        db_ih (D, 3H), db_hh (D, 3H)) in the kernel's gate order), all new arrays.
        """
        d, h = self.dirs, self.hidden
        grad_rows = _aligned_rows(grad_rows)
        rows, batch = grad_rows.shape[0], int(batch_sizes[0])
        call_plan = plan(self.shape, rows, batch_sizes, task="backward")
        run_backward = self._backward_kernel
        dx_dirs = 1 if policy.directions_share_input_grad(call_plan, d) else d
        # dG_i and dG_h of one block of steps, for every layer. Not on recycled memory: that
        # raised S3's peak memory a step from 9.7 to 12.1 MB (median of 9 fresh processes)
        block_rows = min(call_plan.steps_per_block, len(batch_sizes)) * batch
        workspace = aligned_empty((2 * d * block_rows * 3 * h,), self.dtype)
        grad_h0 = np.empty((d * self.num_layers, batch, h), dtype=self.dtype)
        layer_grads = [None] * self.num_layers
        grad_rows_more = None     # the other direction's share of grad_rows, or None
        with policy.blas_guard(call_plan):
            for layer in reversed(range(self.num_layers)):
                record = tape[layer]
                inputs = record.x.shape[1]
                dh = np.array(grad_h_n[layer * d:(layer + 1) * d], dtype=self.dtype, order="C")
                wants_grad_x = layer > 0 or input_grad
                grad_x = (recycled_empty((dx_dirs, rows, inputs), self.dtype) if wants_grad_x
                          else None)
                grads = (recycled_zeros((d, 3 * h, inputs), self.dtype),
                         recycled_zeros((d, 3 * h, h), self.dtype),
                         np.zeros((d, 3 * h), dtype=self.dtype),
                         np.zeros((d, 3 * h), dtype=self.dtype))
                run_backward(record.x, record.weights, record.weights.back_panels, batch_sizes,
                             record.save, record.states, grad_rows, dh, grad_x, *grads,
                             workspace, call_plan.n_threads, call_plan.steps_per_block,
                             call_plan.panel_max_rows, grad_rows_more)
                grad_h0[layer * d:(layer + 1) * d] = dh
                layer_grads[layer] = grads
                if not wants_grad_x:
                    grad_rows = None
                    break
                mask = tape[layer - 1].mask if layer > 0 else None
                if dx_dirs == 1:
                    grad_rows, grad_rows_more = grad_x[0], None
                elif layer > 0 and mask is None:    # the layer below adds them as it reads
                    grad_rows, grad_rows_more = grad_x[0], grad_x[1]
                else:
                    grad_rows, grad_rows_more = np.add(grad_x[0], grad_x[1]), None
                if mask is not None:
                    grad_rows *= mask
        return grad_rows, grad_h0, layer_grads
