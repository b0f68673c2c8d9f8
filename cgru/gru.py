"""The GRU layer: PyTorch's nn.GRU, with NumPy arrays in and out."""
import math
import warnings

import numpy as np

from ._engine import LayerStack, dropout_mask, pack_layer
from ._nn.checks import check_dropout, check_dtype, check_rng, check_size
from ._nn.inputs import SequenceCall
from ._nn.parameters import ParameterModule
from ._nn.tape import Backward


class GRU(SequenceCall, ParameterModule):
    """A multi-layer gated recurrent unit with exactly the behaviour of PyTorch's nn.GRU.

    For each element of the input sequence, each layer computes::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    Parameters
    ----------
    input_size, hidden_size : int
        Features in the input x and in the hidden state h.
    num_layers : int, default 1
        Stacked layers; layer k > 0 reads the output of layer k - 1.
    bias : bool, default True
        If False, the layer has no bias parameters at all.
    batch_first : bool, default False
        Input and output are (N, L, *) instead of (L, N, *). hx and h_n never are.
    dropout : float, default 0.0
        In training mode, inverted dropout with this probability on the output of every
        layer but the last.
    bidirectional : bool, default False
        Run a second, reverse-time direction per layer and concatenate the two.
    dtype : numpy.float32 or numpy.float64, keyword-only
    seed : None, int or numpy.random.Generator, keyword-only
        Makes the initialisation U(-k, k), k = 1/sqrt(hidden_size), and dropout reproducible.

    Unlike PyTorch, a new module is in evaluation mode (``training is False``); call
    ``train()`` to turn dropout on.

    Parameters are NumPy arrays read as attributes with PyTorch's names and shapes, where
    D = 2 if bidirectional else 1, and gates in the order r | z | n:
        weight_ih_l{k}  (3*H, input_size) for k = 0, (3*H, D*H) otherwise
        weight_hh_l{k}  (3*H, H)
        bias_ih_l{k}, bias_hh_l{k}  (3*H,)
    with the suffix ``_reverse`` for the reverse direction. They are read-only: assign a new
    array to the attribute or use load_state_dict to change them.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, dtype=np.float32, seed=None):
        self._input_size = check_size("input_size", input_size)
        self._hidden_size = check_size("hidden_size", hidden_size)
        self._num_layers = check_size("num_layers", num_layers)
        self._bias = bool(bias)
        self._bidirectional = bool(bidirectional)
        self._dtype = check_dtype(dtype)
        self.batch_first = bool(batch_first)
        self.dropout = dropout
        if self.dropout > 0 and self._num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          "non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={self.dropout} and num_layers={self._num_layers}",
                          UserWarning, stacklevel=2)
        self.training = False
        self._rng = check_rng(seed)
        self._layer_weights = [None] * self._num_layers   # the kernel's layout, per layer
        self._stack = LayerStack(self._input_size, self._hidden_size, self._num_layers,
                                 self.num_directions, self._dtype)
        self._init_parameters(self._rng, 1.0 / math.sqrt(self._hidden_size))

    # -- configuration --------------------------------------------------------------------------
    # Sizes, bias and directions define the parameter shapes, so they are fixed at construction.

    input_size = property(lambda self: self._input_size)
    hidden_size = property(lambda self: self._hidden_size)
    num_layers = property(lambda self: self._num_layers)
    bias = property(lambda self: self._bias)
    bidirectional = property(lambda self: self._bidirectional)
    dtype = property(lambda self: self._dtype)

    @property
    def dropout(self):
        return self._dropout

    @dropout.setter
    def dropout(self, value):
        self._dropout = check_dropout(value)

    @property
    def num_directions(self):
        return 2 if self._bidirectional else 1

    def _config(self):
        return dict(input_size=self._input_size, hidden_size=self._hidden_size,
                    num_layers=self._num_layers, bias=self._bias, batch_first=self.batch_first,
                    dropout=self._dropout, bidirectional=self._bidirectional,
                    dtype=self._dtype.name)

    def __repr__(self):
        extra = [] if self._dtype == np.float32 else ["dtype=float64"]
        return f"GRU({', '.join(self._repr_args() + extra)})"

    # -- other frameworks -----------------------------------------------------------------------

    @classmethod
    def from_torch(cls, module):
        """A GRU with the configuration and weights of a torch.nn.GRU (any float dtype, any
        device; float64 stays float64, other dtypes become float32). Starts in eval mode.
        A torch.ao.nn.quantized.dynamic.GRU (quantize_dynamic with qint8) gives a
        cgru.QuantizedGRU with its int8 weights and scales as they are."""
        from ._interop.torch import gru_from_torch      # (interop sits above the modules)
        return gru_from_torch(cls, module)

    def to_torch(self):
        """The equivalent torch.nn.GRU (same configuration, weights, dtype and mode)."""
        from ._interop.torch import gru_to_torch
        return gru_to_torch(self)

    @classmethod
    def from_keras(cls, layer, *, batch_first=True, dtype=None):
        """A GRU from a Keras 3 ``keras.layers.GRU``, a ``Bidirectional(GRU(...),
        merge_mode='concat')``, or their raw weights without Keras installed:
        ``[kernel (I, 3H), recurrent_kernel (H, 3H), bias (2, 3H)]`` (bias optional), twice
        over (forward, then backward) for a bidirectional layer. Keras's gate order z|r|h
        becomes r|z|n.

        Only ``reset_after=True`` with tanh / sigmoid activations computes PyTorch's equations;
        anything else is a ValueError that says why. batch_first defaults to True, Keras's
        layout. Not carried over: return_sequences and return_state (cgru always returns the
        whole output and h_n), go_backwards (a warning: reverse the input yourself), stateful,
        dropout and recurrent_dropout (inference only), masking (use packed sequences), unroll.
        """
        from ._interop.keras import gru_from_keras
        return gru_from_keras(cls, layer, batch_first=batch_first, dtype=dtype)

    @classmethod
    def from_onnx(cls, model):
        """A GRU from an ONNX model (ModelProto, path or bytes) made of one GRU node per layer
        with linear_before_reset=1, default activations and no clip, joined only by layout
        operators. Anything else is refused with a ValueError that says what was found."""
        from ._interop.onnx import gru_from_onnx
        return gru_from_onnx(cls, model)

    def to_onnx(self, path, *, initial_state=False, opset=14):
        """Write an ONNX model computing (output, h_n) from ``input`` in this module's layout
        (and ``h0`` when initial_state), with dynamic batch and sequence axes."""
        from ._interop.onnx import to_onnx
        to_onnx(self, path, initial_state=initial_state, opset=opset)

    def quantize(self, precision):
        """An inference-only copy with reduced-precision weights: precision "bfloat16" or
        "int8" (see cgru.QuantizedGRU). Later changes to this module's weights are not seen:
        quantize again."""
        from .quantized import QuantizedGRU
        return QuantizedGRU.from_float(self, precision)

    # -- parameters -----------------------------------------------------------------------------

    def _parameter_names(self, layer, direction):
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        names = [f"weight_ih{suffix}", f"weight_hh{suffix}"]
        if self._bias:
            names += [f"bias_ih{suffix}", f"bias_hh{suffix}"]
        return names

    @property
    def all_weights(self):
        """torch's nn.GRU.all_weights: one list per layer and direction (forward, then
        reverse), each [weight_ih, weight_hh, bias_ih, bias_hh] (the biases only with bias),
        the read-only parameter arrays themselves."""
        return [[self._params[name] for name in self._parameter_names(layer, direction)]
                for layer in range(self._num_layers) for direction in range(self.num_directions)]

    def _expected_shapes(self):
        h, d = self._hidden_size, self.num_directions
        shapes = {}
        for layer in range(self._num_layers):
            layer_input = self._input_size if layer == 0 else d * h
            for direction in range(d):
                for name in self._parameter_names(layer, direction):
                    if name.startswith("weight_ih"):
                        shapes[name] = (3 * h, layer_input)
                    elif name.startswith("weight_hh"):
                        shapes[name] = (3 * h, h)
                    else:
                        shapes[name] = (3 * h,)
        return shapes

    def _parameters_changed(self, names):
        layers = {int(name.split("_l")[1].split("_")[0]) for name in names}
        for layer in layers:
            directions = []
            for direction in range(self.num_directions):
                params = [self._params[n] for n in self._parameter_names(layer, direction)]
                if not self._bias:
                    params += [None, None]
                directions.append(params)
            self._layer_weights[layer] = pack_layer(directions, self._hidden_size, self._dtype)

    # -- forward and training -------------------------------------------------------------------

    def _run(self, x, batch_sizes, h0):
        """All layers over packed rows x (R, I); returns rows (R, D*H), the final states
        written into h0 (D*layers, N, H)."""
        return self._stack.forward(self._layer_weights, x, batch_sizes, h0,
                                   self._dropout_in_use() if self.training else None)

    def vjp(self, input, hx=None):
        """The forward pass, exactly as ``self(input, hx)``, and its vector-Jacobian product.

        Returns ``(output, h_n), backward``: output and h_n as forward returns them (the
        module's current mode: in training mode, the dropout mask drawn for this pass is the
        one its backward uses), and ``backward(grad_output=None, grad_h_n=None, *,
        input_grad=True)``, which returns the gradients of sum(output * grad_output) +
        sum(h_n * grad_h_n) as a dict: "input" (shaped like input; like input.data for a
        PackedSequence; left out, and not computed, with ``input_grad=False``), "hx" (shaped
        like hx, also when hx is None), then each parameter by its state_dict name, in
        state_dict order. See cgru._nn.tape.Backward.

        backward may be called any number of times and from any thread; it uses the weights
        of this forward pass even if the module's parameters change meanwhile. What it keeps
        is freed with it: per layer, the layer's input rows (R, I) and 5H saved values per row
        and direction (its gates and the state it started from), i.e. (I + 5*D*H) values per
        row and layer (plus a dropout mask of D*H values per row below the last layer in
        training mode with dropout), where R = L*N, or sum(lengths) when packed. The output
        returned is not among them: the caller may write to it.
        """
        rows, batch_sizes, h0, layout, kept_rows = self._prepare(input, hx, private_rows=True)
        tape = []
        out = self._stack.forward(self._layer_weights, rows, batch_sizes, h0,
                                  dropout=self._dropout_in_use(), tape=tape, tape_input=kept_rows)
        backward = Backward(self._stack, tape, batch_sizes, layout, self._gradient_names())
        return layout.outputs(out, h0), backward

    def _gradient_names(self):
        """Per layer and direction, the state_dict names of the kernel's four gradients
        (None where there is no bias): fixed at construction, so built once (per call, they
        were a sixth of a one-step vjp's Python)."""
        names = self.__dict__.get("_gradient_name_table")
        if names is None:
            names = [[self._parameter_names(layer, d) + [None] * (2 * (not self._bias))
                      for d in range(self.num_directions)] for layer in range(self._num_layers)]
            self._gradient_name_table = names
        return names

    def _dropout_in_use(self):
        """None, or shape -> the mask inverted dropout multiplies a layer's output rows by."""
        if not (self.training and self._dropout > 0):
            return None
        return lambda shape: dropout_mask(self._rng, self._dropout, shape, self._dtype)
