"""The vector-Jacobian product of one forward pass: what GRU.vjp and GRUCell.vjp return.

A `Backward` holds the forward pass's tape (each layer's input, output, saved gates and
weights) and maps the caller's upstream gradients to the kernel's packed rows and back.
"""
import numpy as np

from ._checks import as_float_array
from ._layout import unpack_layer_grads
from .packing import PackedSequence, check_packed


class DenseLayout:
    """A padded batch: (L, N, C), (N, L, C) if batch_first, or (L, C) unbatched."""

    def __init__(self, seq_len, batch, batched, batch_first):
        self.seq_len, self.batch = seq_len, batch
        self.batched, self.batch_first = batched, batch_first

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
            array = array[:, 0, :]
        elif self.batch_first:
            array = array.transpose(1, 0, 2)
        return np.ascontiguousarray(array)

    def check_output_gradient(self, grad, dtype, channels):
        return self.to_rows(_array_of_shape(grad, "grad_output", dtype, self.shape(channels),
                                            "output"))

    def state_shape(self, layers, hidden):
        return (layers, self.batch, hidden) if self.batched else (layers, hidden)

    def state_to_kernel(self, state):
        return state if self.batched else state[:, None, :]

    def state_from_kernel(self, state):
        return state if self.batched else np.ascontiguousarray(state[:, 0, :])


class CellLayout(DenseLayout):
    """One step of a cell: (N, C), or (C,) unbatched."""

    def __init__(self, batch, batched):
        super().__init__(1, batch, batched, False)

    def shape(self, channels):
        return (self.batch, channels) if self.batched else (channels,)

    def to_rows(self, array):
        return np.ascontiguousarray(array).reshape(self.batch, -1)

    def from_rows(self, rows):
        return np.ascontiguousarray(rows.reshape(self.shape(rows.shape[1])))

    def state_shape(self, layers, hidden):
        return self.shape(hidden)

    def state_to_kernel(self, state):
        return state.reshape(1, self.batch, -1)

    def state_from_kernel(self, state):
        return np.ascontiguousarray(state.reshape(self.shape(state.shape[2])))


class PackedLayout:
    """A PackedSequence: rows (sum(lengths), C) as the kernel has them; states in the
    caller's batch order, the kernel's sorted by length."""

    def __init__(self, batch_sizes, sorted_indices, unsorted_indices):
        self.batch_sizes = batch_sizes
        self.sorted_indices, self.unsorted_indices = sorted_indices, unsorted_indices
        self.rows, self.batch = int(batch_sizes.sum()), int(batch_sizes[0])

    def from_rows(self, rows):
        return rows

    def check_output_gradient(self, grad, dtype, channels):
        if isinstance(grad, PackedSequence):
            data, batch_sizes, sorted_indices, _ = check_packed(grad)
            if not np.array_equal(batch_sizes, self.batch_sizes):
                raise ValueError(f"grad_output: expected a PackedSequence with the output's "
                                 f"batch_sizes {self.batch_sizes.tolist()}, got "
                                 f"{batch_sizes.tolist()}")
            if not _same_permutation(sorted_indices, self.sorted_indices):
                raise ValueError("grad_output: expected a PackedSequence with the output's "
                                 "sorted_indices")
            grad = data
        return _array_of_shape(grad, "grad_output", dtype, (self.rows, channels),
                               "output.data")

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


class Backward:
    """backward(grad_output=None, grad_h_n=None) -> dict of gradients, for one forward pass.

    Returned by GRU.vjp (and, wrapped, by GRUCell.vjp). Holds what that forward pass kept
    (per layer: its input and output rows, 4H saved gate values per row and direction, and
    the weights of the time), so that it may be called any number of times, from any thread,
    whatever happens to the module meanwhile; all of it is freed with this object.
    """

    def __init__(self, stack, tape, batch_sizes, layout, names, input_size):
        self._stack, self._tape, self._batch_sizes = stack, tape, batch_sizes
        self._layout, self._names, self._input_size = layout, names, input_size

    def __call__(self, grad_output=None, grad_h_n=None):
        """The vector-Jacobian product for upstream gradients of (output, h_n).

        grad_output : like the forward's output (for packed input: a PackedSequence with its
            batch_sizes, or an array shaped like output.data), or None for zeros.
        grad_h_n : like h_n, or None for zeros.

        Returns a dict of new C-contiguous arrays of the module's dtype: "input" (shaped like
        the input; like input.data when packed), "hx" (like hx, also when hx was None), then
        every parameter by its state_dict name, in state_dict order.
        """
        stack, layout = self._stack, self._layout
        dtype, hidden = stack.dtype, stack.hidden
        channels = stack.dirs * hidden
        state_shape = layout.state_shape(stack.dirs * stack.num_layers, hidden)
        if grad_output is None:
            grad_rows = np.zeros((int(self._batch_sizes.sum()), channels), dtype=dtype)
        else:
            grad_rows = layout.check_output_gradient(grad_output, dtype, channels)
        if grad_h_n is None:
            grad_state = np.zeros(state_shape, dtype=dtype)
        else:
            grad_state = _array_of_shape(grad_h_n, "grad_h_n", dtype, state_shape, "h_n")
        grad_state = layout.state_to_kernel(grad_state)

        grad_x, grad_h0, layer_grads = stack.backward(self._tape, self._batch_sizes,
                                                      grad_rows, grad_state)
        grads = {"input": layout.from_rows(grad_x),
                 "hx": layout.state_from_kernel(grad_h0)}
        for layer, kernel_grads in enumerate(layer_grads):
            for names, values in zip(self._names[layer], unpack_layer_grads(kernel_grads,
                                                                            hidden)):
                for name, value in zip(names, values):
                    if name is not None:
                        grads[name] = value
        return grads


def _array_of_shape(value, name, dtype, shape, like):
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
