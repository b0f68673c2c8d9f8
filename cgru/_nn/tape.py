"""The vector-Jacobian product of one forward pass: what GRU.vjp and GRUCell.vjp return.

A `Backward` holds the forward pass's tape (each layer's input, saved gates and states, and
weights) and maps the caller's upstream gradients to the kernel's packed rows and back.
"""
import numpy as np

from .._engine import unpack_layer_grads
from .inputs import array_of_shape


class Backward:
    """backward(grad_output=None, grad_h_n=None, *, input_grad=True) -> dict of gradients,
    for one forward pass.

    Returned by GRU.vjp (and, wrapped, by GRUCell.vjp). Holds what that forward pass kept
    (per layer: its input rows, 5H saved values per row and direction, and the weights of the
    time), so that it may be called any number of times, from any thread,
    whatever happens to the module meanwhile; all of it is freed with this object.
    """

    def __init__(self, stack, tape, batch_sizes, layout, names):
        """names: per layer and direction, the state_dict names of (weight_ih, weight_hh,
        bias_ih, bias_hh), None for an absent bias."""
        self._stack, self._tape, self._batch_sizes = stack, tape, batch_sizes
        self._layout, self._names = layout, names

    def __call__(self, grad_output=None, grad_h_n=None, *, input_grad=True):
        """The vector-Jacobian product for upstream gradients of (output, h_n).

        grad_output : like the forward's output (for packed input: a PackedSequence with its
            batch_sizes, or an array shaped like output.data), or None for zeros.
        grad_h_n : like h_n, or None for zeros.
        input_grad : False skips the gradient of the input (the first layer's dL/dx, a
            third of the backward's products when the input is as wide as the state): the
            common case in training, where the input is data or an embedding's output.

        Returns a dict of new C-contiguous arrays of the module's dtype: "input" (shaped like
        the input; like input.data when packed; absent when input_grad is False), "hx" (like
        hx, also when hx was None), then every parameter by its state_dict name, in
        state_dict order.
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
            grad_state = array_of_shape(grad_h_n, "grad_h_n", dtype, state_shape, "h_n")
        grad_state = layout.state_to_kernel(grad_state)

        grad_x, grad_h0, layer_grads = stack.backward(self._tape, self._batch_sizes,
                                                      grad_rows, grad_state,
                                                      input_grad=bool(input_grad))
        grads = {} if grad_x is None else {"input": layout.from_rows(grad_x)}
        grads["hx"] = layout.state_from_kernel(grad_h0)
        for layer, kernel_grads in enumerate(layer_grads):
            for names, values in zip(self._names[layer], unpack_layer_grads(kernel_grads,
                                                                            hidden)):
                for name, value in zip(names, values):
                    if name is not None:
                        grads[name] = value
        return grads
