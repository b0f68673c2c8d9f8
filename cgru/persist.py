"""Saving and loading models: one .npz holding a JSON header and the weights.

Files are read with ``allow_pickle=False``: opening one never runs code. Anything that is not
a complete, consistent cgru file (truncated, from another program, missing or misshapen
weights, an unknown format version) is a ValueError that says what is wrong.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "cgru"
FORMAT_VERSION = 1
HEADER_KEY = "__cgru__"


def save(module, path):
    """Write `module` (a GRU, GRUCell or their quantized versions) to `path` as .npz (no
    suffix is added), atomically: the file appears complete or not at all."""
    header = {"format": FORMAT, "version": FORMAT_VERSION, "class": type(module).__name__,
              "config": module._config()}
    arrays = {HEADER_KEY: np.array(json.dumps(header))}
    arrays.update(module.state_dict())
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".cgru-", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path):
    """Read a model written by `save` (or `module.save`); returns a GRU, GRUCell,
    QuantizedGRU or QuantizedGRUCell."""
    from .cell import GRUCell
    from .gru import GRU
    from .quantized import QuantizedGRU, QuantizedGRUCell

    classes = {"GRU": GRU, "GRUCell": GRUCell, "QuantizedGRU": QuantizedGRU,
               "QuantizedGRUCell": QuantizedGRUCell}
    path = os.fspath(path)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not a saved model")
        with data:
            if HEADER_KEY not in data.files:
                raise ValueError("it has no cgru header")
            header = json.loads(str(data[HEADER_KEY]))
            weights = {k: data[k] for k in data.files if k != HEADER_KEY}
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError,
            json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable cgru model file: {error}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a cgru model file (header {header!r})")
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} has cgru format version {header.get('version')!r}; this "
                         f"cgru reads version {FORMAT_VERSION}")
    cls = classes.get(header.get("class"))
    if cls is None or not isinstance(header.get("config"), dict):
        raise ValueError(f"{path}: unknown model class {header.get('class')!r} or no config")
    try:
        if hasattr(cls, "_from_saved"):     # quantized: stored arrays, no load_state_dict
            module = cls._from_saved(header["config"], weights)
        else:
            module = cls(**header["config"])
            module.load_state_dict(weights, strict=True)
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"{path} is inconsistent: {error}") from None
    return module
