"""The one input path of every module: forward and the forward of vjp both take their input,
hx and lengths through `_prepare`, so the forward of vjp is the forward by construction.

A call becomes the tuple (rows, batch_sizes, h0, layout):
    rows         (R, I) the kernel's packed time-major input rows
    batch_sizes  (L,) int64, non-increasing
    h0           (layers, N, H) a private C-contiguous h_0, in the kernel's (sorted) batch order
    layout       DenseLayout, PackedLayout or CellLayout: maps results and gradients back to the
                 caller's shapes (dense, batch-first, unbatched, packed, or one step of a cell)
(a plain tuple: a NamedTuple cost a tenth of a one-step call's Python side, S1's).
"""
import functools

import numpy as np

from .._engine import dense_batch_sizes, recycled_copy
from ..packing import PackedSequence, as_packed, check_packed
from .checks import as_float_array


class SequenceCall:
    """Mixin: forward and its checks for a sequence module. The class provides _stack (its
    LayerStack: sizes and dtype, read on every call as plain attributes), the public
    configuration attributes, batch_first and
    _run(rows (R, I), batch_sizes (L,), h0 (D*num_layers, N, H)) -> rows (R, D*H), which
    writes the final states into h0."""

    def __call__(self, input, hx=None):
        return self.forward(input, hx)

    def forward(self, input, hx=None):
        """Run the layer over a batch of sequences.

        Parameters
        ----------
        input : array-like (L, N, H_in), (N, L, H_in) if batch_first, or (L, H_in) unbatched;
            or a PackedSequence.
        hx : array-like (D * num_layers, N, H), or (D * num_layers, H) for unbatched input;
            zeros if None. Never batch-first; for packed input, in the caller's batch order.

        Returns
        -------
        output : ndarray (L, N, D * H), (N, L, D * H) if batch_first, (L, D * H) unbatched;
            a PackedSequence for packed input.
        h_n : ndarray (D * num_layers, N, H), (D * num_layers, H) unbatched: the state after
            each sequence's last element.

        where L is the sequence length, N the batch size, H_in = input_size,
        H = hidden_size and D = 2 if bidirectional else 1.
        """
        x, batch_sizes, h0, layout = self._prepare(input, hx)
        return layout.outputs(self._run(x, batch_sizes, h0), h0)

    def _repr_args(self):
        """The constructor's arguments that differ from the defaults, as repr shows them."""
        args = [str(self.input_size), str(self.hidden_size)]
        if self.num_layers != 1:
            args.append(f"num_layers={self.num_layers}")
        if not self.bias:
            args.append("bias=False")
        if self.batch_first:
            args.append("batch_first=True")
        if self.dropout:
            args.append(f"dropout={self.dropout}")
        if self.bidirectional:
            args.append("bidirectional=True")
        return args

    def _prepare(self, input, hx, *, private_rows=False):
        """(rows, batch_sizes, h0, layout) for (input, hx), after every check.

        private_rows: also return, fifth, the rows vjp's tape keeps, which must not be the
        caller's memory (the tape must not see later edits): a copy where the rows are the
        caller's, else the rows themselves. The kernel reads the rows, copied or not, where
        the copy has just put them in cache."""
        stack = self._stack
        dtype = stack.dtype
        # cgru's PackedSequence, or torch's converted (an array is neither: no call)
        packed = None if type(input) is np.ndarray else as_packed(input)
        if packed is not None:
            input = packed
            x, batch_sizes, sorted_indices, unsorted_indices = check_packed(input, dtype)
            if x.ndim != 2:
                raise ValueError(f"GRU: Expected packed data to be 2D (sum(lengths), "
                                 f"input_size), got {x.ndim}D instead")
            layout = PackedLayout(batch_sizes, sorted_indices, unsorted_indices)
            _check_sizes(stack, len(batch_sizes), layout.batch, x.shape[1])
            h0 = layout.state_to_kernel(self._initial_state(hx, layout.batch, batched=True))
            if private_rows:
                kept = recycled_copy(x) if np.may_share_memory(x, _as_array(input.data)) else x
                return x, batch_sizes, np.ascontiguousarray(h0), layout, kept
            return x, batch_sizes, np.ascontiguousarray(h0), layout
        x = input if type(input) is np.ndarray and input.dtype == dtype \
            else as_float_array(input, "input", dtype)      # (only read, never written)
        if x.ndim not in (2, 3):
            raise ValueError(f"GRU: Expected input to be 2D or 3D, got {x.ndim}D instead")
        batched = x.ndim == 3
        seq_len, batch = (x.shape[1], x.shape[0]) if batched and self.batch_first else \
            (x.shape[0], x.shape[1] if batched else 1)
        _check_sizes(stack, seq_len, batch, x.shape[-1])
        layout = dense_layout(seq_len, batch, batched, self.batch_first)
        rows = layout.to_rows(x)
        h0 = self._initial_state(hx, batch, batched)
        if private_rows:
            borrowed = x is input and np.may_share_memory(rows, input)
            return rows, layout.batch_sizes, h0, layout, recycled_copy(rows) if borrowed else rows
        return rows, layout.batch_sizes, h0, layout

    def _initial_state(self, hx, batch, batched):
        """h_0 as a new (D * num_layers, N, H) array of the module's dtype."""
        stack = self._stack
        shape = (stack.dirs * stack.num_layers, batch, stack.hidden)
        if hx is None:
            return np.zeros(shape, dtype=stack.dtype)
        h0 = as_float_array(hx, "hx", stack.dtype)
        if batched and h0.ndim != 3:
            raise ValueError(f"For batched 3-D input, hx should also be 3-D but got "
                             f"{h0.ndim}-D tensor")
        if not batched:
            if h0.ndim != 2:
                raise ValueError(f"For unbatched 2-D input, hx should also be 2-D but got "
                                 f"{h0.ndim}-D tensor")
            h0 = h0[:, None, :]
        if h0.shape != shape:
            got = list(h0.shape) if batched else [h0.shape[0], h0.shape[2]]
            want = shape if batched else (shape[0], shape[2])
            raise ValueError(f"Expected hidden size {want}, got {got}")
        return np.ascontiguousarray(h0)


def check_sequence_sizes(module, seq_len, batch, features):
    """PyTorch's errors for an input of these sizes to a sequence module."""
    _check_sizes(module._stack, seq_len, batch, features)


def _check_sizes(stack, seq_len, batch, features):
    if features != stack.input_size:
        raise ValueError(f"input.size(-1) must be equal to input_size. "
                         f"Expected {stack.input_size}, got {features}")
    if seq_len == 0:
        raise ValueError("Expected sequence length to be larger than 0 in RNN")
    if batch == 0:
        raise ValueError("GRU: Expected a non-empty batch, got batch size 0")


class StepCall:
    """Mixin: a cell's forward and its checks. The class provides _stack (its LayerStack)
    and _run(rows (N, I), batch_sizes (1,), h (1, N, H)) -> h' (N, H)."""

    def __call__(self, input, hx=None):
        return self.forward(input, hx)

    def forward(self, input, hx=None):
        """One step for a batch.

        input : array-like (N, H_in), or (H_in,) unbatched
        hx : array-like (N, H), or (H,) unbatched; zeros if None
        Returns h' : ndarray (N, H), or (H,) unbatched, a new array of the cell's dtype.
        """
        x, batch_sizes, h, layout = self._prepare(input, hx)
        rows = self._run(x, batch_sizes, h)
        return rows if layout.batched else rows[0]

    def _prepare(self, input, hx, *, private_rows=False):
        """(rows, batch_sizes, h0, layout) for one step (input, hx), after every check
        (private_rows as for SequenceCall._prepare)."""
        stack = self._stack
        dtype = stack.dtype
        x = input if type(input) is np.ndarray and input.dtype == dtype \
            else as_float_array(input, "input", dtype)
        borrowed = x is input       # (only read, never written)
        if x.ndim not in (1, 2):
            raise ValueError(f"GRUCell: Expected input to be 1D or 2D, got {x.ndim}D instead")
        batched = x.ndim == 2
        if not batched:
            x = x[None, :]
        batch, features = x.shape
        if features != stack.input_size:
            raise ValueError(f"input has inconsistent input_size: got {features} "
                             f"expected {stack.input_size}")
        if batch == 0:
            raise ValueError("GRUCell: Expected a non-empty batch, got batch size 0")
        rows = np.ascontiguousarray(x)
        h = self._initial_state(hx, batch, batched)
        layout = cell_layout(batch, batched)
        if private_rows:
            borrowed = borrowed and np.may_share_memory(rows, input)
            return rows, layout.batch_sizes, h, layout, recycled_copy(rows) if borrowed else rows
        return rows, layout.batch_sizes, h, layout

    def _initial_state(self, hx, batch, batched):
        """h as a new (1, N, H) array (the kernel's layer-state layout)."""
        hidden, dtype = self._stack.hidden, self._stack.dtype
        if hx is None:
            return np.zeros((1, batch, hidden), dtype=dtype)
        h = as_float_array(hx, "hx", dtype)
        want = (batch, hidden) if batched else (hidden,)
        if h.ndim != len(want):
            raise ValueError(f"GRUCell: Expected hx to be {len(want)}D {want} for "
                             f"{'batched' if batched else 'unbatched'} input, got {h.ndim}D "
                             f"{h.shape} instead")
        if batched and h.shape[0] != batch:
            raise ValueError(f"Input batch size {batch} doesn't match hidden0 batch size "
                             f"{h.shape[0]}")
        if h.shape[-1] != hidden:
            raise ValueError(f"hidden0 has inconsistent hidden_size: got {h.shape[-1]}, "
                             f"expected {hidden}")
        return h.reshape(1, batch, hidden)


# -- layouts: the caller's shapes <-> the kernel's rows and states ------------------------------

class DenseLayout:
    """A padded batch: (L, N, C), (N, L, C) if batch_first, or (L, C) unbatched."""

    __slots__ = ("seq_len", "batch", "batched", "batch_first", "batch_sizes")

    def __init__(self, seq_len, batch, batched, batch_first):
        self.seq_len, self.batch = seq_len, batch
        self.batched, self.batch_first = batched, batch_first
        self.batch_sizes = dense_batch_sizes(seq_len, batch)    # the kernel's, shared

    def shape(self, channels):
        if not self.batched:
            return (self.seq_len, channels)
        if self.batch_first:
            return (self.batch, self.seq_len, channels)
        return (self.seq_len, self.batch, channels)

    def to_rows(self, array):
        if not self.batched:
            array = array[:, None, :]
        elif self.batch_first:
            array = array.transpose(1, 0, 2)
        return np.ascontiguousarray(array).reshape(self.seq_len * self.batch, -1)

    def from_rows(self, rows):
        array = rows.reshape(self.seq_len, self.batch, -1)
        if not self.batched:
            return array[:, 0, :]
        if self.batch_first:
            return np.ascontiguousarray(array.transpose(1, 0, 2))
        return array

    def outputs(self, rows, h_n):
        """(output, h_n) in the caller's shapes, from the kernel's rows (R, C) and states."""
        output = rows.reshape(self.seq_len, self.batch, -1)   # (from_rows and
        if not self.batched:                                  # state_from_kernel, inline:
            return output[:, 0, :], h_n[:, 0, :]              # this runs on every call)
        if self.batch_first:
            output = np.ascontiguousarray(output.transpose(1, 0, 2))
        return output, h_n

    def check_output_gradient(self, grad, dtype, channels):
        return self.to_rows(array_of_shape(grad, "grad_output", dtype, self.shape(channels),
                                            "output"))

    def state_shape(self, layers, hidden):
        return (layers, self.batch, hidden) if self.batched else (layers, hidden)

    def state_to_kernel(self, state):
        return state if self.batched else state[:, None, :]

    def state_from_kernel(self, state):
        return state if self.batched else state[:, 0, :]


@functools.lru_cache(maxsize=256)
def dense_layout(seq_len, batch, batched, batch_first):
    """The DenseLayout of these sizes (immutable, so shared: built once, not per call)."""
    return DenseLayout(seq_len, batch, batched, batch_first)


class CellLayout(DenseLayout):
    """One step of a cell: (N, C), or (C,) unbatched."""

    __slots__ = ()

    def __init__(self, batch, batched):
        super().__init__(1, batch, batched, False)

    def shape(self, channels):
        return (self.batch, channels) if self.batched else (channels,)

    def to_rows(self, array):
        return np.ascontiguousarray(array).reshape(self.batch, -1)

    def from_rows(self, rows):
        return rows.reshape(self.shape(rows.shape[1]))

    def outputs(self, rows, h_n):
        return self.from_rows(rows)

    def state_shape(self, layers, hidden):
        return self.shape(hidden)

    def state_to_kernel(self, state):
        return state.reshape(1, self.batch, -1)

    def state_from_kernel(self, state):
        return state.reshape(self.shape(state.shape[2]))


@functools.lru_cache(maxsize=256)
def cell_layout(batch, batched):
    """The CellLayout of these sizes (shared, like dense_layout's)."""
    return CellLayout(batch, batched)


class PackedLayout:
    """A PackedSequence: rows (sum(lengths), C) as the kernel has them; states in the
    caller's batch order, the kernel's sorted by length."""

    def __init__(self, batch_sizes, sorted_indices, unsorted_indices):
        self.batch_sizes = batch_sizes
        self.sorted_indices, self.unsorted_indices = sorted_indices, unsorted_indices
        self.batch = int(batch_sizes[0])

    def from_rows(self, rows):
        return rows

    def outputs(self, rows, h_n):
        return (PackedSequence(rows, self.batch_sizes, self.sorted_indices,
                               self.unsorted_indices), self.state_from_kernel(h_n))

    def check_output_gradient(self, grad, dtype, channels):
        if as_packed(grad) is not None:
            data, batch_sizes, sorted_indices, _ = check_packed(grad)
            if not np.array_equal(batch_sizes, self.batch_sizes):
                raise ValueError(f"grad_output: expected a PackedSequence with the output's "
                                 f"batch_sizes {self.batch_sizes.tolist()}, got "
                                 f"{batch_sizes.tolist()}")
            if not _same_permutation(sorted_indices, self.sorted_indices):
                raise ValueError("grad_output: expected a PackedSequence with the output's "
                                 "sorted_indices")
            grad = data
        rows = int(self.batch_sizes.sum())
        return array_of_shape(grad, "grad_output", dtype, (rows, channels), "output.data")

    def state_shape(self, layers, hidden):
        return (layers, self.batch, hidden)

    def state_to_kernel(self, state):
        if self.sorted_indices is None:
            return state
        return state[:, self.sorted_indices]

    def state_from_kernel(self, state):
        if self.unsorted_indices is None:
            return state
        return np.ascontiguousarray(state[:, self.unsorted_indices])


def _as_array(value):
    return value if isinstance(value, np.ndarray) else np.asarray(value)


def array_of_shape(value, name, dtype, shape, like):
    """value as a new C-contiguous array of dtype and exactly this shape (ValueError naming
    `like`, the array whose shape it must have)."""
    array = as_float_array(value, name, dtype)
    if array.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} (the shape of {like}), got "
                         f"{array.shape}")
    return array


def _same_permutation(a, b):
    if a is None or b is None:
        return (a is None or np.array_equal(a, np.arange(len(a)))) and \
               (b is None or np.array_equal(b, np.arange(len(b))))
    return np.array_equal(a, b)
