"""GRUCell: one step of a GRU, PyTorch's nn.GRUCell, for streaming one input at a time."""
import math

import numpy as np

from ._engine import LayerStack, pack_layer
from ._nn.checks import check_dtype, check_rng, check_size
from ._nn.inputs import StepCall
from ._nn.parameters import ParameterModule
from ._nn.tape import Backward


class GRUCell(StepCall, ParameterModule):
    """A gated recurrent unit cell with exactly the behaviour of PyTorch's nn.GRUCell: one
    step of cgru.GRU's equations, h' = (1 - z) * n + z * h, with r, z and n from x and h.

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
        self._layer_weights = [None]     # the kernel's layout
        self._stack = LayerStack(self._input_size, self._hidden_size, 1, 1, self._dtype)
        self._init_parameters(check_rng(seed), 1.0 / math.sqrt(self._hidden_size))

    input_size = property(lambda self: self._input_size)
    hidden_size = property(lambda self: self._hidden_size)
    bias = property(lambda self: self._bias)
    dtype = property(lambda self: self._dtype)

    @classmethod
    def from_torch(cls, module):
        """A GRUCell with the configuration and weights of a torch.nn.GRUCell."""
        from ._interop.torch import cell_from_torch     # (interop sits above the modules)
        return cell_from_torch(cls, module)

    def to_torch(self):
        """The equivalent torch.nn.GRUCell."""
        from ._interop.torch import cell_to_torch
        return cell_to_torch(self)

    def quantize(self, precision):
        """An inference-only copy with "bfloat16" or "int8" weights (cgru.QuantizedGRUCell)."""
        from .quantized import QuantizedGRUCell
        return QuantizedGRUCell.from_float(self, precision)

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
        self._layer_weights[0] = pack_layer([(p["weight_ih"], p["weight_hh"], p.get("bias_ih"),
                                       p.get("bias_hh"))], self._hidden_size, self._dtype)

    def vjp(self, input, hx=None):
        """The step, exactly as ``self(input, hx)``, and its vector-Jacobian product.

        Returns ``h1, backward``: h1 as forward returns it, and ``backward(grad_h1, *,
        input_grad=True)``, which returns the gradients of sum(h1 * grad_h1) as a dict of new
        arrays: "input" (like input; left out, and not computed, with ``input_grad=False``),
        "hx" (like h1, also when hx is None), "weight_ih", "weight_hh", and "bias_ih",
        "bias_hh" when the cell has biases. grad_h1 None means zeros. backward may be called
        any number of times; it uses the weights of this step even if the cell's parameters
        change meanwhile.
        """
        rows, batch_sizes, h0, layout, kept_rows = self._prepare(input, hx, private_rows=True)
        tape = []
        out = self._stack.forward(self._layer_weights, rows, batch_sizes, h0, tape=tape,
                                  tape_input=kept_rows)
        names = [[["weight_ih", "weight_hh", "bias_ih" if self._bias else None,
                   "bias_hh" if self._bias else None]]]
        backward = Backward(self._stack, tape, batch_sizes, layout, names)

        def cell_backward(grad_h1=None, *, input_grad=True):
            return backward(grad_h1, None, input_grad=input_grad)

        cell_backward.__doc__ = ("backward(grad_h1, *, input_grad=True) -> dict of gradients: "
                                 "input (unless input_grad is False), hx, weight_ih, weight_hh "
                                 "(and bias_ih, bias_hh).")
        return layout.outputs(out, h0), cell_backward

    def _run(self, x, batch_sizes, h):
        """One step of rows x (N, I) from h (1, N, H); returns h' (N, H)."""
        return self._stack.forward(self._layer_weights, x, batch_sizes, h)
