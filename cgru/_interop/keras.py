"""Keras 3 -> cgru: keras.layers.GRU and Bidirectional(GRU), or their raw weights.

Keras orders a GRU's gates z | r | h and stores weights input-major: kernel (I, 3H),
recurrent_kernel (H, 3H), bias (2, 3H) = [input bias; recurrent bias] when reset_after=True.
Only reset_after=True with tanh / sigmoid activations computes PyTorch's equations.
"""
import warnings

import numpy as np

from .onnx import torch_gate_order   # z|r|h -> r|z|n, shared with ONNX


RESET_BEFORE = ("reset_after=False computes n = tanh(W_in x + b_in + W_hn (r * h)), the reset "
                "gate applied to h before the recurrent product; PyTorch (and cgru) compute "
                "n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), the product first. Only "
                "reset_after=True layers (Keras's default) have PyTorch's equations")


def _check_layer_config(config, what):
    if not config.get("reset_after", True):
        raise ValueError(f"{what}: {RESET_BEFORE}")
    if config.get("activation", "tanh") != "tanh" or \
            config.get("recurrent_activation", "sigmoid") != "sigmoid":
        raise ValueError(f"{what}: activation={config.get('activation')!r}, "
                         f"recurrent_activation={config.get('recurrent_activation')!r}; cgru "
                         "computes PyTorch's GRU, with tanh and sigmoid only")


def _direction_weights(arrays, what):
    """(weight_ih, weight_hh, bias_ih, bias_hh or Nones) in PyTorch's layout from Keras's."""
    if len(arrays) not in (2, 3):
        raise ValueError(f"{what}: expected kernel, recurrent_kernel and optionally bias")
    kernel, recurrent = (np.asarray(a) for a in arrays[:2])
    if kernel.ndim != 2 or recurrent.ndim != 2 or recurrent.shape[1] != 3 * recurrent.shape[0] \
            or kernel.shape[1] != recurrent.shape[1]:
        raise ValueError(f"{what}: expected kernel (I, 3H) and recurrent_kernel (H, 3H), got "
                         f"{kernel.shape} and {recurrent.shape}")
    hidden = recurrent.shape[0]
    bias_ih = bias_hh = None
    if len(arrays) == 3 and arrays[2] is not None:
        bias = np.asarray(arrays[2])
        if bias.shape == (3 * hidden,):
            raise ValueError(f"{what}: a bias of shape (3H,) comes from a layer with "
                             f"{RESET_BEFORE}; expected a bias of shape (2, 3H)")
        if bias.shape != (2, 3 * hidden):
            raise ValueError(f"{what}: expected bias (2, 3H) = {(2, 3 * hidden)}, got {bias.shape}")
        bias_ih, bias_hh = (torch_gate_order(b, hidden) for b in bias)
    return (torch_gate_order(kernel.T, hidden), torch_gate_order(recurrent.T, hidden),
            bias_ih, bias_hh)


def _layer_dtype(layer):
    policy = getattr(layer, "dtype_policy", None)
    name = getattr(policy, "variable_dtype", None) or getattr(layer, "dtype", "float32")
    return np.float64 if str(name) == "float64" else np.float32


def gru_from_keras(cls, layer, batch_first=True, dtype=None):
    if hasattr(layer, "get_weights") and hasattr(layer, "get_config"):
        if hasattr(layer, "forward_layer"):           # keras.layers.Bidirectional
            if layer.merge_mode != "concat":
                raise ValueError(f"Bidirectional(merge_mode={layer.merge_mode!r}): only "
                                 "merge_mode='concat' has PyTorch's output layout")
            parts = [layer.forward_layer, layer.backward_layer]
        else:
            parts = [layer]
        for part in parts:
            if type(part).__name__ != "GRU":
                raise TypeError(f"GRU.from_keras expects keras.layers.GRU or Bidirectional(GRU), "
                                f"got {type(part).__name__}")
            _check_layer_config(part.get_config(), type(part).__name__)
        if len(parts) == 1 and layer.get_config().get("go_backwards"):
            warnings.warn("go_backwards=True is not carried over: the cgru module reads the "
                          "sequence forward in time; reverse the input yourself",
                          UserWarning, stacklevel=3)
        groups = [part.get_weights() for part in parts]
        if not all(groups):
            raise ValueError(f"{type(layer).__name__} layer {layer.name!r} has no weights yet: "
                             "build it first (call it on an input, or "
                             "layer.build((None, None, input_size)))")
        dtype = dtype or _layer_dtype(layer)
    else:
        if isinstance(layer, (str, bytes, dict)) or not hasattr(layer, "__iter__"):
            raise TypeError(f"GRU.from_keras expects a keras.layers.GRU, a "
                            f"Bidirectional(GRU) layer, or a list of weight arrays "
                            f"[kernel, recurrent_kernel(, bias)], got {type(layer).__name__}")
        arrays = list(layer)
        if len(arrays) in (2, 3):
            groups = [arrays]
        elif len(arrays) in (4, 6):
            half = len(arrays) // 2
            groups = [arrays[:half], arrays[half:]]
        else:
            raise ValueError("raw Keras weights: expected [kernel, recurrent_kernel(, bias)] "
                             f"for one direction or twice that for two, got {len(arrays)} arrays")
        dtype = dtype or np.float32
    directions = [_direction_weights(g, f"direction {i}") for i, g in enumerate(groups)]
    input_size = directions[0][0].shape[1]
    hidden = directions[0][1].shape[1]
    has_bias = directions[0][2] is not None
    if any(d[0].shape != directions[0][0].shape or (d[2] is None) != (not has_bias)
           for d in directions):
        raise ValueError("the two directions' weights differ in shape or in having a bias")
    gru = cls(input_size, hidden, 1, bias=has_bias, batch_first=batch_first,
              bidirectional=len(directions) == 2, dtype=dtype)
    state = {}
    for suffix, (w_ih, w_hh, b_ih, b_hh) in zip(["_l0", "_l0_reverse"], directions):
        state[f"weight_ih{suffix}"] = w_ih
        state[f"weight_hh{suffix}"] = w_hh
        if has_bias:
            state[f"bias_ih{suffix}"] = b_ih
            state[f"bias_hh{suffix}"] = b_hh
    gru.load_state_dict(state)
    return gru
