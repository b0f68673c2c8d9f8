"""The call of a sequence module, shared by GRU and QuantizedGRU: input validation and
normalisation (dense, batch-first, unbatched, packed; hx), then one `_run` over packed rows."""
import numpy as np

from ._checks import as_float_array
from ._run import dense_batch_sizes
from .packing import PackedSequence, check_packed


class SequenceCall:
    """Mixin: forward and its checks. The class provides _dtype, _input_size, _hidden_size,
    _num_layers, num_directions, batch_first and _run(x (R, I), batch_sizes (L,), h0
    (D*num_layers, N, H)) -> (rows (R, D*H), h_n (D*num_layers, N, H))."""

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
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        x = as_float_array(input, "input", self._dtype) if not _is_ready(input, self._dtype) \
            else input
        if x.ndim not in (2, 3):
            raise ValueError(f"GRU: Expected input to be 2D or 3D, got {x.ndim}D instead")
        batched = x.ndim == 3
        if not batched:
            x = x[:, None, :]
        elif self.batch_first:
            x = x.transpose(1, 0, 2)
        seq_len, batch, features = x.shape
        self._check_input(seq_len, batch, features)
        h0 = self._initial_state(hx, batch, batched)
        x = np.ascontiguousarray(x).reshape(seq_len * batch, features)
        batch_sizes = dense_batch_sizes(seq_len, batch)

        rows, h_n = self._run(x, batch_sizes, h0)

        output = rows.reshape(seq_len, batch, -1)
        if not batched:
            return output[:, 0, :], h_n[:, 0, :]
        if self.batch_first:
            output = np.ascontiguousarray(output.transpose(1, 0, 2))
        return output, h_n

    def _forward_packed(self, sequence, hx):
        data, batch_sizes, sorted_indices, unsorted_indices = check_packed(sequence, self._dtype)
        if data.ndim != 2:
            raise ValueError(f"GRU: Expected packed data to be 2D (sum(lengths), input_size), "
                             f"got {data.ndim}D instead")
        self._check_input(len(batch_sizes), int(batch_sizes[0]), data.shape[1])
        h0 = self._initial_state(hx, int(batch_sizes[0]), batched=True)
        if sorted_indices is not None:
            h0 = np.ascontiguousarray(h0[:, sorted_indices])  # the kernel's (sorted) order
        rows, h_n = self._run(data, batch_sizes, h0)
        if unsorted_indices is not None:
            h_n = np.ascontiguousarray(h_n[:, unsorted_indices])
        return PackedSequence(rows, batch_sizes, sorted_indices, unsorted_indices), h_n

    def _check_input(self, seq_len, batch, features):
        if features != self._input_size:
            raise ValueError(f"input.size(-1) must be equal to input_size. "
                             f"Expected {self._input_size}, got {features}")
        if seq_len == 0:
            raise ValueError("Expected sequence length to be larger than 0 in RNN")
        if batch == 0:
            raise ValueError("GRU: Expected a non-empty batch, got batch size 0")

    def _initial_state(self, hx, batch, batched):
        """h_0 as a new (D * num_layers, N, H) array of the module's dtype."""
        shape = (self.num_directions * self._num_layers, batch, self._hidden_size)
        if hx is None:
            return np.zeros(shape, dtype=self._dtype)
        h0 = as_float_array(hx, "hx", self._dtype)
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




class StepCall:
    """Mixin: a cell's forward and its checks. The class provides _dtype, _input_size,
    _hidden_size and _run_step(x (N, I), h (1, N, H)) -> h' (N, H)."""

    def __call__(self, input, hx=None):
        return self.forward(input, hx)

    def forward(self, input, hx=None):
        """One step for a batch.

        input : array-like (N, H_in), or (H_in,) unbatched
        hx : array-like (N, H), or (H,) unbatched; zeros if None
        Returns h' : ndarray (N, H), or (H,) unbatched, a new array of the cell's dtype.
        """
        x = input if (type(input) is np.ndarray and input.dtype == self._dtype) \
            else as_float_array(input, "input", self._dtype)
        if x.ndim not in (1, 2):
            raise ValueError(f"GRUCell: Expected input to be 1D or 2D, got {x.ndim}D instead")
        batched = x.ndim == 2
        if not batched:
            x = x[None, :]
        batch, features = x.shape
        if features != self._input_size:
            raise ValueError(f"input has inconsistent input_size: got {features} "
                             f"expected {self._input_size}")
        if batch == 0:
            raise ValueError("GRUCell: Expected a non-empty batch, got batch size 0")
        h = self._initial_state(hx, batch, batched)
        rows = self._run_step(np.ascontiguousarray(x), h)
        return rows if batched else rows[0]

    def _check_step_input(self, input):
        """(input as new (N, H_in) rows, batched) after the checks forward makes."""
        x = as_float_array(input, "input", self._dtype)
        if x.ndim not in (1, 2):
            raise ValueError(f"GRUCell: Expected input to be 1D or 2D, got {x.ndim}D instead")
        batched = x.ndim == 2
        if not batched:
            x = x[None, :]
        if x.shape[1] != self._input_size:
            raise ValueError(f"input has inconsistent input_size: got {x.shape[1]} "
                             f"expected {self._input_size}")
        if x.shape[0] == 0:
            raise ValueError("GRUCell: Expected a non-empty batch, got batch size 0")
        return np.ascontiguousarray(x), batched

    def _initial_state(self, hx, batch, batched):
        """h as a new (1, N, H) array (the kernel's layer-state layout)."""
        if hx is None:
            return np.zeros((1, batch, self._hidden_size), dtype=self._dtype)
        h = as_float_array(hx, "hx", self._dtype)
        want = (batch, self._hidden_size) if batched else (self._hidden_size,)
        if h.ndim != len(want):
            raise ValueError(f"GRUCell: Expected hx to be {len(want)}D {want} for "
                             f"{'batched' if batched else 'unbatched'} input, got {h.ndim}D "
                             f"{h.shape} instead")
        if batched and h.shape[0] != batch:
            raise ValueError(f"Input batch size {batch} doesn't match hidden0 batch size "
                             f"{h.shape[0]}")
        if h.shape[-1] != self._hidden_size:
            raise ValueError(f"hidden0 has inconsistent hidden_size: got {h.shape[-1]}, "
                             f"expected {self._hidden_size}")
        return h.reshape(1, batch, self._hidden_size)


def _is_ready(value, dtype):
    """Fast path: already an ndarray of our dtype (it is only read, never written)."""
    return isinstance(value, np.ndarray) and value.dtype == dtype
