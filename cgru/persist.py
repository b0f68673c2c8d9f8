"""Saving and loading models: one .npz holding a JSON header and the weights.

Files are read with ``allow_pickle=False``: opening one never runs code. Anything that is not
a complete, consistent cgru file (truncated, from another program, missing or misshapen
weights, an unknown format version) is a ValueError that says what is wrong.
"""
import io
import json
import math
import os
import tempfile
import tokenize
import zipfile
import zlib

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
            members = _read_members(data.zip, os.path.getsize(path))
        if HEADER_KEY not in members:
            raise ValueError("it has no cgru header")
        header = json.loads(str(members.pop(HEADER_KEY)))
        weights = members
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, KeyError,
            zlib.error, NotImplementedError, RuntimeError, RecursionError,
            tokenize.TokenError) as error:
        # (zlib.error: a damaged compressed member; NotImplementedError: an unknown compression
        # method; RuntimeError: an encrypted member; RecursionError: JSON nested too deeply;
        # TokenError: a member's .npy header with an unclosed bracket)
        raise ValueError(f"{path} is not a readable cgru model file: "
                         f"{type(error).__name__}: {error}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a cgru model file (header {_short(header)})")
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} has cgru format version {_short(header.get('version'))}; this "
                         f"cgru reads version {FORMAT_VERSION}")
    cls = classes.get(header.get("class")) if isinstance(header.get("class"), str) else None
    if cls is None or not isinstance(header.get("config"), dict):
        raise ValueError(f"{path}: unknown model class {_short(header.get('class'))} or no "
                         "config")
    _check_config_sizes(path, cls in (GRUCell, QuantizedGRUCell), header["config"], weights)
    try:
        if hasattr(cls, "_from_saved"):     # quantized: stored arrays, no load_state_dict
            module = cls._from_saved(header["config"], weights)
        else:
            module = cls(**header["config"])
            module.load_state_dict(weights, strict=True)
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"{path} is inconsistent: {error}") from None
    return module


def _read_members(archive, file_size):
    """Every .npy member of a zip archive, by name without the suffix, as arrays.

    Each member's .npy header is checked against the bytes the member holds before NumPy
    allocates its array: a damaged header (or zip directory) could ask for exabytes.
    """
    members = {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            raise ValueError(f"member {info.filename!r} is not a .npy array")
        if info.compress_size > file_size or (
                info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size):
            raise ValueError(f"member {info.filename!r} claims {info.file_size} bytes, more than "
                             f"the file holds")
        raw = archive.read(info)
        stream = io.BytesIO(raw)
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"member {info.filename!r} has .npy format version {version}")
        if dtype.hasobject:
            raise ValueError(f"member {info.filename!r} holds Python objects (pickled data), "
                             "which cgru never loads")
        expected = math.prod(shape) * dtype.itemsize
        if len(raw) - stream.tell() != expected:
            raise ValueError(f"member {info.filename!r} declares {dtype} of shape {shape} "
                             f"({expected} bytes) but holds {len(raw) - stream.tell()} bytes")
        members[info.filename[:-len(".npy")]] = np.load(io.BytesIO(raw), allow_pickle=False)
    return members


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
            raise ValueError(f"{path} is inconsistent: its config has {key}={_short(given)} but "
                             f"its weights have {key}={value}")


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
