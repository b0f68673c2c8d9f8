"""The .npz model format: one archive holding a JSON header and the weights as .npy members.

A leaf: it imports nothing of cgru, so that modules can save themselves and cgru.load
(cgru/persist.py) can read files without an import circle. Files are read with
``allow_pickle=False``: opening one never runs code. Anything that is not a complete cgru
file (truncated, from another program, damaged members, an unknown format version) is a
ValueError that says what is wrong.
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


def write(path, class_name, config, arrays):
    """Write a model to `path` as .npz (no suffix is added), atomically: the file appears
    complete or not at all. config: the constructor's keyword arguments, JSON-serialisable;
    arrays: name -> array."""
    header = {"format": FORMAT, "version": FORMAT_VERSION, "class": class_name,
              "config": config}
    members = {HEADER_KEY: np.array(json.dumps(header))}
    members.update(arrays)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".cgru-", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **members)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read(path):
    """(class name, config dict, arrays by name) of a file written by `write`."""
    path = os.fspath(path)
    _check_file_kind(path)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not a saved model")
        with data:
            members = _read_members(data.zip, os.path.getsize(path))
        if HEADER_KEY not in members:
            raise ValueError("it has no cgru header")
        header = json.loads(str(members.pop(HEADER_KEY)))
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
        raise ValueError(f"{path} is not a cgru model file (header {short_repr(header)})")
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} has cgru format version {short_repr(header.get('version'))}; "
                         f"this cgru reads version {FORMAT_VERSION}")
    class_name, config = header.get("class"), header.get("config")
    if not isinstance(class_name, str) or not isinstance(config, dict):
        raise ValueError(f"{path}: unknown model class {short_repr(class_name)} or no config")
    return class_name, config, members


def _check_file_kind(path):
    """A ValueError that says what the file is, for files that are plainly not a cgru model
    (NumPy's own message for a text file is advice to load it as a pickle)."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except FileNotFoundError:
        raise
    except OSError:             # a folder, no permission: read() says so, as a ValueError
        return
    what = None
    if head == b"\x93NUMPY":
        what = "it holds a single .npy array, not a saved model"
    elif head[:1] == b"\x80":
        what = ("it holds pickled data (pickle, or torch.save's legacy format), which cgru never "
                "loads; for a PyTorch model, convert it with cgru.GRU.from_torch(module) and "
                "write it with gru.save(path)")
    elif not head.startswith(b"PK"):
        what = "it is not a .npz archive (cgru models are written by gru.save(path))"
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                torch_file = any(name.endswith("/data.pkl") or name == "data.pkl"
                                 for name in archive.namelist())
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
            torch_file = False      # (read() says what is wrong with the archive)
        if torch_file:
            raise ValueError(f"{path} is a PyTorch file (torch.save), not a cgru model file: "
                             "load it with torch, convert the module with "
                             "cgru.GRU.from_torch(module) (or a state_dict with "
                             "gru.load_state_dict(state)) and write it with gru.save(path)")
    if what:
        raise ValueError(f"{path} is not a readable cgru model file: {what}")


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


def short_repr(value):
    """repr(value), cut to 80 characters for an error message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
