"""GRUCell: one step of a GRU, PyTorch's nn.GRUCell, for streaming one input at a time."""
import math

import numpy as np

from ._backward import Backward, CellLayout
from ._checks import as_float_array, check_dtype, check_rng, check_size
from ._layout import pack_layer
from ._module import ParameterModule
from ._run import LayerStack, dense_batch_sizes


class GRUCell(ParameterModule):
    """A gated recurrent unit cell with exactly the behaviour of PyTorch's nn.GRUCell::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    Parameters
    ----------
    input_size, hidden_size : int
    bias : bool, default True
        If False, the cell has no bias parameters.
    dtype : numpy.float32 or numpy.float64, keyword-only
    seed : None, int or numpy.random.Generator, keyword-only
        Makes the initialisation U(-k, k), k = 1/sqrt(hidden_size), reproducible.

    Parameters are read-only NumPy arrays with PyTorch's names: weight_ih (3*H, H_in),
    weight_hh (3*H, H), bias_ih and bias_hh (3*H,), gates in the order r | z | n. A cell has no
    dropout; ``train()`` and ``eval()`` exist for symmetry with GRU.
    """

    def __init__(self, input_size, hidden_size, bias=True, *, dtype=np.float32, seed=None):
        self._input_size = check_size("input_size", input_size)
        self._hidden_size = check_size("hidden_size", hidden_size)
        self._bias = bool(bias)
        self._dtype = check_dtype(dtype)
        self.training = False
        self._packed = [None]
        self._stack = LayerStack(self._input_size, self._hidden_size, 1, 1, self._dtype)
        self._init_parameters(check_rng(seed), 1.0 / math.sqrt(self._hidden_size))

    input_size = property(lambda self: self._input_size)
    hidden_size = property(lambda self: self._hidden_size)
    bias = property(lambda self: self._bias)
    dtype = property(lambda self: self._dtype)

    @classmethod
    def from_torch(cls, module):
        """A GRUCell with the configuration and weights of a torch.nn.GRUCell."""
        from ._torch_interop import cell_from_torch
        return cell_from_torch(cls, module)

    def to_torch(self):
        """The equivalent torch.nn.GRUCell."""
        from ._torch_interop import cell_to_torch
        return cell_to_torch(self)

    def _config(self):
        return dict(input_size=self._input_size, hidden_size=self._hidden_size, bias=self._bias,
                    dtype=self._dtype.name)

    def __repr__(self):
        extra = "" if self._bias else ", bias=False"
        extra += "" if self._dtype == np.float32 else ", dtype=float64"
        return f"GRUCell({self._input_size}, {self._hidden_size}{extra})"

    def _expected_shapes(self):
        h = self._hidden_size
        shapes = {"weight_ih": (3 * h, self._input_size), "weight_hh": (3 * h, h)}
        if self._bias:
            shapes.update(bias_ih=(3 * h,), bias_hh=(3 * h,))
        return shapes

    def _parameters_changed(self, names):
        p = self._params
        self._packed[0] = pack_layer([(p["weight_ih"], p["weight_hh"], p.get("bias_ih"),
                                       p.get("bias_hh"))], self._hidden_size, self._dtype)

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
        rows = self._stack.run(self._packed, np.ascontiguousarray(x),
                               dense_batch_sizes(1, batch), h)
        return rows if batched else rows[0]

    def vjp(self, input, hx=None):
        """The step, exactly as ``self(input, hx)``, and its vector-Jacobian product.

        Returns ``h1, backward``: h1 as forward returns it, and ``backward(grad_h1)``, which
        returns the gradients of sum(h1 * grad_h1) as a dict of new arrays: "input" (like
        input), "hx" (like h1, also when hx is None), "weight_ih", "weight_hh", and
        "bias_ih", "bias_hh" when the cell has biases. grad_h1 None means zeros. backward
        may be called any number of times; it uses the weights of this step even if the
        cell's parameters change meanwhile.
        """
        x, batched = self._check_step_input(input)
        batch = x.shape[0]
        h = np.ascontiguousarray(self._initial_state(hx, batch, batched))
        batch_sizes = dense_batch_sizes(1, batch)
        rows, tape = self._stack.run_saving(self._packed, x, batch_sizes, h)
        layout = CellLayout(batch, batched)
        names = [[["weight_ih", "weight_hh", "bias_ih" if self._bias else None,
                   "bias_hh" if self._bias else None]]]
        backward = Backward(self._stack, tape, batch_sizes, layout, names, self._input_size)

        def cell_backward(grad_h1=None):
            return backward(grad_h1, None)

        cell_backward.__doc__ = ("backward(grad_h1) -> dict of gradients: input, hx, "
                                 "weight_ih, weight_hh (and bias_ih, bias_hh).")
        return layout.from_rows(rows.copy()), cell_backward

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
