"""QuantizedGRU and QuantizedGRUCell: inference with bfloat16 or int8 weights.

Made by ``GRU.quantize(precision)`` / ``GRUCell.quantize(precision)`` (or from a PyTorch
``quantize_dynamic`` GRU by ``GRU.from_torch``), called exactly like the float module, outputs
float32. Inference only: no vjp, no training mode, no load_state_dict (quantize again after
changing the weights).

What is rounded, per precision (everything else is float32: biases, gates, the hidden state
and the outputs):
    bfloat16  every weight, to nearest, ties to even. The input projections run as one sgemm
              per block of steps through W_ih widened to float32 once per call (the inputs are
              not rounded); the recurrent product reads W_hh as bfloat16 (half the bytes per
              step) and accumulates in float32 with h in float32 (not rounded either: on CPUs
              without bfloat16 dot products, rounding h would only add work and error).
    int8      every weight, symmetric per output row (scale max|row| / 127); every row of the
              input and, per step, of h(t-1) is quantized symmetrically per row (scale
              max|row| / 127: finer than PyTorch's one unsigned scale per tensor and call), the
              products are summed exactly in int32, then scaled to float32.
"""
import numpy as np

from . import _npz
from ._engine import (LayerStack, check_precision, dequantize, pack_quant_layer,
                      quantize_int8_rows, to_bfloat16)
from ._nn.checks import check_size
from ._nn.inputs import SequenceCall, StepCall


def _quantize_state(state, precision):
    """A float module's state_dict as stored arrays: weights as bfloat16 bits, or int8 with
    '<name>_scale' per row; biases float32."""
    stored = {}
    for name, value in state.items():
        if not name.startswith("weight"):
            stored[name] = value.astype(np.float32)
        elif precision == "bfloat16":
            stored[name] = to_bfloat16(value)
        else:
            stored[name], stored[name + "_scale"] = quantize_int8_rows(value)
    return stored


def _frozen(array):
    array = np.array(array, order="C", copy=True)
    array.flags.writeable = False
    return array


class _Quantized:
    """What both quantized modules share: stored weights by name, state_dict, repr of the
    precision, eval, pickling and save."""

    _dtype = np.dtype(np.float32)
    dtype = property(lambda self: self._dtype)
    precision = property(lambda self: self._precision)
    training = property(lambda self: False)

    def _store(self, stored):
        """stored: name -> array (weights: uint16 bits or int8; '<name>_scale' for int8;
        biases float32), frozen here; then the kernel's layout is built."""
        self._weights = {k: _frozen(v) for k, v in stored.items()}
        self._layers = [self._pack(layer) for layer in range(self._n_layers())]

    def _pack_directions(self, prefixes):
        directions = []
        for prefix in prefixes:
            w = self._weights
            weights = (w["weight_ih" + prefix], w["weight_hh" + prefix])
            scales = ((w["weight_ih" + prefix + "_scale"], w["weight_hh" + prefix + "_scale"])
                      if self._precision == "int8" else None)
            biases = ((w["bias_ih" + prefix], w["bias_hh" + prefix]) if self._bias
                      else (None, None))
            directions.append((weights, scales, biases))
        return pack_quant_layer(directions, self._hidden_size, self._precision)

    def state_dict(self):
        """A dict of copies of the stored arrays: weights as uint16 bfloat16 bits or int8
        values (with '<name>_scale' (3*H,) float32 per row for int8), biases float32."""
        return {name: value.copy() for name, value in self._weights.items()}

    def dequantized(self):
        """The float32 weights this module computes with, by PyTorch name (new arrays): load
        them into a float GRU to see what quantization changed."""
        out = {}
        for name, value in self._weights.items():
            if name.endswith("_scale"):
                continue
            if name.startswith("weight"):
                out[name] = dequantize(value, self._precision,
                                       self._weights.get(name + "_scale"))
            else:
                out[name] = value.copy()
        return out

    def eval(self):
        """Returns the module (always in evaluation mode)."""
        return self

    def train(self, mode=True):
        """Only train(False) is possible: a quantized module is inference-only."""
        if mode:
            raise ValueError(f"{type(self).__name__} is inference-only: quantize the trained "
                             f"float module again instead of training this one")
        return self

    def __reduce__(self):
        return _restore, (type(self), self._config(), self.state_dict())

    def save(self, path):
        """Write the configuration, precision and stored weights to one .npz (cgru.load)."""
        _npz.write(path, type(self).__name__, self._config(), self.state_dict())

    @classmethod
    def from_stored(cls, config, weights):
        """The module from a saved configuration (its constructor's keywords and precision)
        and stored arrays (state_dict()'s), checking every name, shape and dtype: how
        cgru.load and GRU.from_torch build one."""
        config = dict(config)
        precision = check_precision(config.pop("precision", None))
        module = cls._blank(precision, **config)
        expected = module._expected_arrays()
        missing = sorted(set(expected) - set(weights))
        unexpected = sorted(set(weights) - set(expected))
        if missing or unexpected:
            raise KeyError(f"missing arrays {missing}, unexpected arrays {unexpected}")
        for name, (shape, dtype) in expected.items():
            got = np.asarray(weights[name])
            if got.shape != shape or got.dtype != dtype:
                raise ValueError(f"{name}: expected {dtype} {shape}, got {got.dtype} "
                                 f"{got.shape}")
        module._store({name: weights[name] for name in expected})
        return module

    def _expected_arrays(self):
        """name -> (shape, dtype) of every stored array, in state_dict order."""
        weight_dtype = np.dtype(np.uint16 if self._precision == "bfloat16" else np.int8)
        out = {}
        for name, shape in self._float_shapes().items():
            if name.startswith("weight"):
                out[name] = (shape, weight_dtype)
                if self._precision == "int8":
                    out[name + "_scale"] = ((shape[0],), np.dtype(np.float32))
            else:
                out[name] = (shape, np.dtype(np.float32))
        return out


class QuantizedGRU(SequenceCall, _Quantized):
    """A GRU with bfloat16 or int8 weights, for inference: ``gru.quantize(precision)``.

    Called exactly like cgru.GRU: input (L, N, H_in), (N, L, H_in) if batch_first, (L, H_in)
    unbatched, or a PackedSequence; hx (D*num_layers, N, H); returns (output, h_n) in float32,
    in the same shapes, where D = 2 if bidirectional else 1. Attributes: the float module's
    configuration (input_size, hidden_size, num_layers, bias, batch_first, dropout (not
    applied: inference only), bidirectional), precision ("bfloat16" or "int8"), dtype
    (float32, the dtype of inputs and outputs).
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("QuantizedGRU is made by GRU.quantize(precision), GRU.from_torch or "
                        "cgru.load")

    @classmethod
    def _blank(cls, precision, input_size, hidden_size, num_layers=1, bias=True,
               batch_first=False, dropout=0.0, bidirectional=False, dtype="float32"):
        module = object.__new__(cls)
        module._precision = precision
        module._input_size = check_size("input_size", input_size)
        module._hidden_size = check_size("hidden_size", hidden_size)
        module._num_layers = check_size("num_layers", num_layers)
        module._bias = bool(bias)
        module.batch_first = bool(batch_first)
        module._dropout = float(dropout)
        module._bidirectional = bool(bidirectional)
        module._stack = LayerStack(module._input_size, module._hidden_size,
                                   module._num_layers, module.num_directions, np.float32)
        return module

    @classmethod
    def from_float(cls, gru, precision):
        """The quantized version of a cgru.GRU (its weights now; later changes to gru are not
        seen)."""
        precision = check_precision(precision)
        module = cls._blank(precision, gru.input_size, gru.hidden_size, gru.num_layers,
                            gru.bias, gru.batch_first, gru.dropout, gru.bidirectional)
        module._store(_quantize_state(gru.state_dict(), precision))
        return module

    input_size = property(lambda self: self._input_size)
    hidden_size = property(lambda self: self._hidden_size)
    num_layers = property(lambda self: self._num_layers)
    bias = property(lambda self: self._bias)
    bidirectional = property(lambda self: self._bidirectional)
    dropout = property(lambda self: self._dropout)

    @property
    def num_directions(self):
        return 2 if self._bidirectional else 1

    def _n_layers(self):
        return self._num_layers

    def _pack(self, layer):
        return self._pack_directions([f"_l{layer}" + ("_reverse" if d else "")
                                      for d in range(self.num_directions)])

    def _float_shapes(self):
        h, d = self._hidden_size, self.num_directions
        shapes = {}
        for layer in range(self._num_layers):
            inputs = self._input_size if layer == 0 else d * h
            for direction in range(d):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                shapes["weight_ih" + suffix] = (3 * h, inputs)
                shapes["weight_hh" + suffix] = (3 * h, h)
                if self._bias:
                    shapes["bias_ih" + suffix] = (3 * h,)
                    shapes["bias_hh" + suffix] = (3 * h,)
        return shapes

    def _config(self):
        return dict(input_size=self._input_size, hidden_size=self._hidden_size,
                    num_layers=self._num_layers, bias=self._bias, batch_first=self.batch_first,
                    dropout=self._dropout, bidirectional=self._bidirectional,
                    precision=self._precision)

    def __repr__(self):
        args = self._repr_args() + [f"precision={self._precision!r}"]
        return f"QuantizedGRU({', '.join(args)})"

    def _run(self, x, batch_sizes, h0):
        """All layers over packed rows x (R, I); returns rows (R, D*H), the final states
        written into h0 (D*layers, N, H)."""
        return self._stack.forward(self._layers, x, batch_sizes, h0, precision=self._precision)


class QuantizedGRUCell(StepCall, _Quantized):
    """A GRUCell with bfloat16 or int8 weights, for inference: ``cell.quantize(precision)``.

    Called exactly like cgru.GRUCell: input (N, H_in) or (H_in,), hx (N, H) or (H,); returns
    h' (N, H) or (H,) in float32. Attributes: input_size, hidden_size, bias, precision, dtype.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("QuantizedGRUCell is made by GRUCell.quantize(precision) or cgru.load")

    @classmethod
    def _blank(cls, precision, input_size, hidden_size, bias=True, dtype="float32"):
        module = object.__new__(cls)
        module._precision = precision
        module._input_size = check_size("input_size", input_size)
        module._hidden_size = check_size("hidden_size", hidden_size)
        module._bias = bool(bias)
        module._stack = LayerStack(module._input_size, module._hidden_size, 1, 1, np.float32)
        return module

    @classmethod
    def from_float(cls, cell, precision):
        """The quantized version of a cgru.GRUCell."""
        precision = check_precision(precision)
        module = cls._blank(precision, cell.input_size, cell.hidden_size, cell.bias)
        module._store(_quantize_state(cell.state_dict(), precision))
        return module

    input_size = property(lambda self: self._input_size)
    hidden_size = property(lambda self: self._hidden_size)
    bias = property(lambda self: self._bias)

    def _n_layers(self):
        return 1

    def _pack(self, layer):
        return self._pack_directions([""])

    def _float_shapes(self):
        h = self._hidden_size
        shapes = {"weight_ih": (3 * h, self._input_size), "weight_hh": (3 * h, h)}
        if self._bias:
            shapes.update(bias_ih=(3 * h,), bias_hh=(3 * h,))
        return shapes

    def _config(self):
        return dict(input_size=self._input_size, hidden_size=self._hidden_size,
                    bias=self._bias, precision=self._precision)

    def __repr__(self):
        extra = "" if self._bias else ", bias=False"
        return (f"QuantizedGRUCell({self._input_size}, {self._hidden_size}{extra}, "
                f"precision={self._precision!r})")

    def _run(self, x, batch_sizes, h):
        """One step of rows x (N, I) from h (1, N, H); returns h' (N, H)."""
        return self._stack.forward(self._layers, x, batch_sizes, h, precision=self._precision)


def _restore(cls, config, state):
    return cls.from_stored(config, state)

