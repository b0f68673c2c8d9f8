"""Saving and loading models: `save` and `load` (cgru.load), over the .npz format of
cgru/_npz.py.

Loading builds the class the header names, after checking its configuration against the
weights: anything that is not a complete, consistent cgru file (truncated, from another
program, missing or misshapen weights, an unknown format version) is a ValueError that says
what is wrong.
"""
import os

from . import _npz
from ._npz import short_repr
from .cell import GRUCell
from .gru import GRU
from .quantized import QuantizedGRU, QuantizedGRUCell

_CLASSES = {cls.__name__: cls for cls in (GRU, GRUCell, QuantizedGRU, QuantizedGRUCell)}
_QUANTIZED = (QuantizedGRU, QuantizedGRUCell)


def save(module, path):
    """Write `module` (a GRU, GRUCell or their quantized versions) to `path` as .npz (no
    suffix is added), atomically: the file appears complete or not at all. The same as
    ``module.save(path)``."""
    module.save(path)


def load(path):
    """Read a model written by `save` (or `module.save`); returns a GRU, GRUCell,
    QuantizedGRU or QuantizedGRUCell."""
    path = os.fspath(path)
    class_name, config, weights = _npz.read(path)
    cls = _CLASSES.get(class_name)
    if cls is None:
        raise ValueError(f"{path}: unknown model class {short_repr(class_name)} or no config")
    _check_config_sizes(path, cls in (GRUCell, QuantizedGRUCell), config, weights)
    try:
        if cls in _QUANTIZED:       # stored arrays as they are: no load_state_dict
            module = cls.from_stored(config, weights)
        else:
            module = cls(**config)
            module.load_state_dict(weights, strict=True)
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"{path} is inconsistent: {error}") from None
    return module


def _check_config_sizes(path, is_cell, config, weights):
    """The sizes in the config against the weights' shapes, before the module is built (its
    initial weights are allocated from the config: hidden_size=10**9 must not try)."""
    suffix = "" if is_cell else "_l0"
    implied = {}
    w_ih, w_hh = weights.get("weight_ih" + suffix), weights.get("weight_hh" + suffix)
    for name, weight in (("weight_ih" + suffix, w_ih), ("weight_hh" + suffix, w_hh)):
        if weight is None or weight.ndim != 2:
            raise ValueError(f"{path} is inconsistent: {name} is "
                             f"{'missing' if weight is None else f'of shape {weight.shape}'}")
    implied["input_size"], implied["hidden_size"] = w_ih.shape[1], w_hh.shape[1]
    if not is_cell:
        implied["num_layers"] = next(k for k in range(len(weights) + 1)
                                     if f"weight_hh_l{k}" not in weights)
    for key, value in implied.items():
        given = config.get(key)
        if isinstance(given, bool) or given != value:
            raise ValueError(f"{path} is inconsistent: its config has {key}={short_repr(given)} but "
                             f"its weights have {key}={value}")
