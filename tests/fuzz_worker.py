"""The child process of tests/test_fuzz.py: runs hostile cases against cgru's public API.

The parent (``Runner``, below) starts this module as a separate Python process (a fresh
interpreter, never a fork of one whose OpenMP runtime has started), sends it one pickled case
at a time over a pipe and reads back one verdict per case: ``("pass", outcome)`` or
``("fail", why)``. If the process dies (a signal, an abort, a hang past the timeout), the
parent reports that case as a failure with the exit status and the end of the worker's
stderr (where faulthandler prints the Python stack of a crash), and starts a new worker.

A case is a dict: ``kind`` names the entry point, the rest describes its arguments. Hostile
arrays travel as ``Arr`` recipes (pickling an array would lose its strides, alignment, byte
order and class) and are built here, just before the call. For every case the worker checks:

* the outcome is a result, ``ValueError`` or ``TypeError`` (``KeyError`` for mismatched keys in
  a strict ``load_state_dict``, as documented; ``MemoryError`` only where the call really asks
  for more memory than the worker may have: a huge broadcast view, a huge ``total_length``);
  anything else (IndexError, OverflowError, AttributeError, a ComplexWarning that silently
  drops data, ...) is a failure, reported with its traceback;
* every array the caller passed is bitwise unchanged afterwards (NaN-aware: bytes compared);
* input that the documentation promises to accept (``valid``: any numeric dtype, layout or
  array class, the right shapes) gives a result, and a result is right: shapes, dtypes,
  C-contiguous new arrays, finite where the inputs were, and equal to an independent NumPy
  reference (``reference.py``'s GRU, a pure-NumPy packing, the optimizers' formulas, the
  Python API for the command line), or, for gradients, to the same call on clean copies; a
  QuantizedGRU's or QuantizedGRUCell's result within its contract's bound of ``reference.py``
  with the float weights it was quantized from (``quant_tolerance``);
* after an error, the module (or optimizer, or output folder) is as it was before.

Memory is capped (RLIMIT_AS, ``CGRU_FUZZ_MEMORY_MB``, default 3072) so that a huge allocation
is a MemoryError here rather than the machine's OOM killer.
"""
import builtins
import contextlib
import faulthandler
import io
import json
import math
import numbers
import os
import pickle
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile

import numpy as np

TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

HUGE_BYTES = 1 << 33        # a request above this may be refused with MemoryError


# -- recipes for hostile values (built in the worker) ------------------------------------------

class Sub(np.ndarray):
    """An ndarray subclass, as a caller's own array class."""


class Arr:
    """A hostile array-like: a C-contiguous base array, layout operations applied to it, and
    the container it is handed over in.

    ops: ("F",) Fortran order; ("flip", axis) negative strides; ("step", axis) every other
    element of a doubled array; ("bcast", axis, n) a zero-stride broadcast view (when that
    axis has length 1); ("readonly",); ("unaligned",) data at an odd address; ("swap",)
    non-native byte order. wrap: ndarray, list, tuple, matrix, masked, subclass, memmap.
    """

    def __init__(self, base, ops=(), wrap="ndarray"):
        self.base, self.ops, self.wrap = np.asarray(base), tuple(ops), wrap

    def __repr__(self):
        values = np.array2string(self.base, threshold=40, separator=",").replace("\n", "")
        return (f"Arr({values} {self.base.dtype.str} {self.base.shape}, ops={self.ops}, "
                f"wrap={self.wrap!r})")

    def build(self, scratch):
        a = self.base.copy()
        for op in self.ops:
            a = _apply(a, op)
        return _wrap(a, self.wrap, scratch)


def logical_size(a):
    """Elements of an array's shape with empty dimensions counted as 1: what a loop over its
    dimensions costs ((10**12, 0) holds nothing, yet np.repeat walks 10**12 rows)."""
    return math.prod(max(1, n) for n in a.shape)


def _apply(a, op):
    name = op[0]
    if logical_size(a) > (1 << 22) and name != "readonly":
        return a              # a huge broadcast view: no copies of it
    if name == "F":
        return np.asfortranarray(a)
    if name == "readonly":
        a = a.view()
        a.flags.writeable = False
        return a
    if name == "swap":
        if a.dtype.kind in "O" or a.dtype.fields:
            return a
        return a.astype(a.dtype.newbyteorder())
    if name == "unaligned":
        if a.dtype.kind == "O" or a.dtype.itemsize < 2:
            return a
        raw = np.zeros(a.nbytes + 1, dtype=np.uint8)[1:]
        out = raw.view(a.dtype).reshape(a.shape)
        out[...] = a
        return out
    if a.ndim == 0:
        return a
    axis = op[1] % a.ndim
    if name == "flip":
        return np.flip(a, axis)
    if name == "step":
        doubled = np.repeat(a, 2, axis=axis)
        index = [slice(None)] * a.ndim
        index[axis] = slice(None, None, 2)
        return doubled[tuple(index)]
    if name == "bcast":
        if a.shape[axis] != 1:
            return a
        shape = list(a.shape)
        shape[axis] = op[2]
        return np.broadcast_to(a, tuple(shape))
    raise ValueError(f"unknown layout op {op!r}")


def _wrap(a, wrap, scratch):
    if wrap == "ndarray":
        return a
    small = logical_size(a) < 10000
    if wrap == "list":
        return a.tolist() if small else a
    if wrap == "tuple":
        return tuple(a.tolist()) if a.ndim and small else a
    if wrap == "matrix":
        return np.asmatrix(a) if a.ndim == 2 and a.dtype.kind != "O" else a
    if wrap == "masked":
        return np.ma.masked_array(a, mask=np.zeros(a.shape, dtype=bool)) \
            if a.dtype.kind in "biufc" and logical_size(a) < (1 << 20) else a
    if wrap == "subclass":
        return a.view(Sub)
    if wrap == "memmap":
        if a.dtype.kind == "O" or a.dtype.itemsize == 0 or a.size == 0 \
                or a.nbytes > (1 << 24):
            return a
        fd, path = tempfile.mkstemp(dir=scratch, suffix=".dat")
        os.close(fd)
        m = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
        m[...] = a
        m.flush()
        return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)
    raise ValueError(f"unknown wrap {wrap!r}")


class Special:
    """Hostile values that do not pickle or must be made fresh: 'generator', 'object',
    'ragged' (a list of rows of different lengths), 'set'."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"Special({self.name!r})"

    def build(self, scratch):
        if self.name == "generator":
            return (np.zeros(2) for _ in range(2))
        if self.name == "object":
            return object()
        if self.name == "ragged":
            return [[1.0, 2.0], [3.0]]
        if self.name == "set":
            return {1, 2}
        raise ValueError(self.name)


class PS:
    """A PackedSequence built by hand from these (recipes of) fields; unsorted=OMIT leaves
    the argument out (PackedSequence derives it)."""

    OMIT = "omit"

    def __init__(self, data, batch_sizes, sorted_indices=None, unsorted_indices=OMIT):
        self.fields = (data, batch_sizes, sorted_indices, unsorted_indices)

    def __repr__(self):
        return "PS(" + ", ".join(map(repr, self.fields)) + ")"


def build(value, scratch):
    """The hostile object a recipe describes (PS fields only; the PackedSequence itself is
    made by make_packed, inside the call, since its constructor is under test too)."""
    if isinstance(value, (Arr, Special)):
        return value.build(scratch)
    if isinstance(value, PS):
        return ("__PS__",) + tuple(build(f, scratch) if not isinstance(f, str) else f
                                   for f in value.fields)
    if isinstance(value, list):
        return [build(v, scratch) for v in value]
    if isinstance(value, tuple):
        return tuple(build(v, scratch) for v in value)
    if isinstance(value, dict):
        return {k: build(v, scratch) for k, v in value.items()}
    return value


def make_packed(built):
    """The PackedSequence of a built PS recipe (other values as they are)."""
    import cgru
    if is_ps(built):
        data, batch_sizes, sorted_indices, unsorted = built[1:]
        if isinstance(unsorted, str) and unsorted == PS.OMIT:
            return cgru.PackedSequence(data, batch_sizes, sorted_indices)
        return cgru.PackedSequence(data, batch_sizes, sorted_indices, unsorted)
    return built


def is_ps(built):
    return isinstance(built, tuple) and len(built) == 5 and isinstance(built[0], str) and \
        built[0] == "__PS__"


# -- snapshots: the caller's values must be unchanged ------------------------------------------

def snapshot(value, depth=0):
    if depth > 20:
        return ("deep",)
    if isinstance(value, np.ndarray):
        mask = None
        if isinstance(value, np.ma.MaskedArray):
            mask = np.ma.getmaskarray(value).tobytes()
            value = value.data
        if logical_size(value) > (1 << 20):   # a huge (broadcast) view: the memory it views
            root = value
            while isinstance(root.base, np.ndarray):
                root = root.base
            return ("view", value.dtype.str, value.shape, value.strides,
                    snapshot(root, depth + 1) if root.size <= (1 << 20) else id(root))
        if value.dtype.kind == "O":
            return ("O", value.shape, tuple(snapshot(v, depth + 1) for v in value.flat))
        return ("nd", value.dtype.str, value.shape, np.asarray(value).tobytes(), mask)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(snapshot(v, depth + 1) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((repr(k), snapshot(v, depth + 1)) for k, v in value.items()))
    if isinstance(value, (numbers.Number, str, bytes, type(None), np.generic)):
        return ("v", repr(value))
    return ("id", id(value), type(value).__name__)


# -- what the API promises to accept ------------------------------------------------------------

def numeric(value, kinds="biuf"):
    """value as an ndarray when it is array data of these kinds (at least 1-D), else None."""
    if value is None or isinstance(value, (str, bytes, dict, set, numbers.Number, np.generic)):
        return None
    if is_ps(value) or not isinstance(value, (np.ndarray, list, tuple)):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = np.asarray(value)
    except (ValueError, TypeError):
        return None
    if a.dtype.kind not in kinds or a.ndim == 0:
        return None
    return a


def int_vector(value):
    """value as an int64 vector when it is a 1-D array of ints that int64 holds, else None."""
    if value is None or isinstance(value, (str, bytes, dict, set, numbers.Number, np.generic)):
        return None
    if is_ps(value) or not isinstance(value, (np.ndarray, list, tuple)):
        return None
    try:
        a = np.asarray(value)
    except (ValueError, TypeError):
        return None
    if (a.dtype.kind not in "iu" and not (a.size == 0 and a.dtype.kind == "f")) or a.ndim != 1:
        return None      # (an empty list is an empty float array: accepted as no ints)
    if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
        return None
    return a.astype(np.int64)


def packed_fields(built, width=None, kinds="biufc"):
    """(data, batch_sizes, sorted, unsorted) as NumPy when the PS recipe is a valid packed
    sequence (data of these kinds, `width` features if given), else None."""
    if not is_ps(built):
        return None
    data, batch_sizes, sorted_indices, unsorted = built[1:]
    omit = isinstance(unsorted, str) and unsorted == PS.OMIT
    data = numeric(data, kinds)
    bs = int_vector(batch_sizes)
    if data is None or bs is None or bs.size == 0 or bs.min() <= 0:
        return None
    if (bs[1:] > bs[:-1]).any() or int(bs.sum(dtype=object)) != data.shape[0]:
        return None
    if width is not None and (data.ndim != 2 or data.shape[1] != width):
        return None
    batch = int(bs[0])

    def perm(p):
        if p is None:
            return None, True
        q = int_vector(p)
        if q is None or q.shape[0] != batch or not np.array_equal(np.sort(q), np.arange(batch)):
            return None, False
        return q, True

    s, ok_s = perm(sorted_indices)
    u, ok_u = (None, True) if omit else perm(unsorted)
    if not (ok_s and ok_u):
        return None
    if s is not None and u is not None and not np.array_equal(s[u], np.arange(batch)):
        return None
    if s is None and u is not None:
        s = np.argsort(u)
    if u is None and s is not None:
        u = np.argsort(s)
    return data, bs, s, u


# -- references -----------------------------------------------------------------------------------

def _f64(params):
    return {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}


def converted(a, dtype):
    """a as the module sees it: converted to its dtype (so 1e300 is inf in float32), as f64."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(a).astype(dtype).astype(np.float64)


def tame(*arrays):
    """Finite and not so large that float32 rounding of products dominates."""
    return all(np.isfinite(a).all() and (a.size == 0 or np.abs(a).max() <= 1e6)
               for a in arrays)


def tolerance(dtype, *arrays):
    scale = 1.0 + sum(float(np.abs(a).max()) if a.size else 0.0 for a in arrays)
    return (2e-4 if np.dtype(dtype) == np.float32 else 1e-9) * scale


def ref_gru_dense(gru, x, hx, dtype=None):
    """(output, h_n) of reference.py's GRU for a valid dense call; x and hx as a module of
    `dtype` (default gru's) sees them."""
    from reference import gru_reference
    dtype = dtype or gru.dtype
    xd = converted(x, dtype)
    batched = xd.ndim == 3
    if not batched:
        xd = xd[:, None]
    elif gru.batch_first:
        xd = xd.transpose(1, 0, 2)
    shape = (gru.num_directions * gru.num_layers, xd.shape[1], gru.hidden_size)
    h0 = np.zeros(shape) if hx is None else converted(hx, dtype).reshape(shape)
    out, h_n = gru_reference(_f64(gru.state_dict()), xd, h0, gru.num_layers, gru.bidirectional)
    if not batched:
        return out[:, 0], h_n[:, 0], xd, h0
    if gru.batch_first:
        out = out.transpose(1, 0, 2)
    return out, h_n, xd, h0


def ref_gru_packed(gru, data, bs, s, hx, dtype=None):
    """(output rows, h_n) of reference.py's GRU, one sequence at a time, for packed input."""
    from reference import gru_reference
    dtype = dtype or gru.dtype
    data = converted(data, dtype)
    batch, dh = int(bs[0]), gru.num_directions * gru.hidden_size
    shape = (gru.num_directions * gru.num_layers, batch, gru.hidden_size)
    h0 = np.zeros(shape) if hx is None else converted(hx, dtype)
    offsets = np.concatenate([[0], np.cumsum(bs)[:-1]])
    out = np.zeros((data.shape[0], dh))
    h_n = np.zeros(shape)
    params = _f64(gru.state_dict())
    for rank in range(batch):
        steps = int((bs > rank).sum())
        rows = offsets[:steps] + rank
        caller = int(s[rank]) if s is not None else rank
        o, h = gru_reference(params, data[rows][:, None, :], h0[:, caller:caller + 1],
                             gru.num_layers, gru.bidirectional)
        out[rows] = o[:, 0]
        h_n[:, caller] = h[:, 0]
    return out, h_n, data, h0


def ref_pack(padded, lengths, batch_first, enforce_sorted):
    """pack_padded_sequence in plain NumPy: (data, batch_sizes, sorted_indices or None)."""
    a = np.asarray(padded)
    if batch_first:
        a = np.swapaxes(a, 0, 1)
    lengths = [int(v) for v in lengths]
    order = list(range(len(lengths)))
    if not enforce_sorted:
        order = sorted(order, key=lambda b: -lengths[b])
    rows = [a[t, b] for t in range(max(lengths)) for b in order if lengths[b] > t]
    data = np.array(rows, dtype=a.dtype).reshape((len(rows),) + a.shape[2:])
    batch_sizes = np.array([sum(n > t for n in lengths) for t in range(max(lengths))],
                           dtype=np.int64)
    return data, batch_sizes, None if enforce_sorted else np.array(order, dtype=np.int64)


def ref_unpack(data, bs, s):
    """The sequences of a valid packed sequence, in the caller's order (plain NumPy)."""
    batch = int(bs[0])
    offsets = np.concatenate([[0], np.cumsum(bs)[:-1]]).astype(np.int64)
    seqs = [None] * batch
    for rank in range(batch):
        steps = int((bs > rank).sum())
        caller = int(s[rank]) if s is not None else rank
        seqs[caller] = data[offsets[:steps] + rank]
    return seqs


def same_values(a, b):
    """Equal shapes, dtypes and values (any NaN equals any NaN: the sign and payload of a NaN
    made by inf - inf depend on the order of operations)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    nan = np.isnan(a)
    return bool(np.array_equal(nan, np.isnan(b)) and same_bits(a[~nan], b[~nan]))


def same_bits(a, b):
    """Equal shapes, dtypes and values, bit for bit (NaNs and signed zeros included)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc" and a.dtype.itemsize > 8 * (1 + (a.dtype.kind == "c")):
        # long double: 80 bits of value in 16 bytes, the padding bytes are garbage
        return bool(np.array_equal(a, b, equal_nan=True)
                    and np.array_equal(np.signbit(a.real), np.signbit(b.real)))
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def fits(value, dtype):
    """Whether a padding_value surely converts to dtype: True (a Python or NumPy real in the
    dtype's range), False (not a number at all), None (anything else: no promise)."""
    dtype = np.dtype(dtype)
    if isinstance(value, (bool, np.bool_)):
        return True
    if value is None or isinstance(value, (str, bytes, dict)):
        return False
    if not isinstance(value, numbers.Real):
        return None
    if dtype.kind == "b":
        return True if value in (0, 1) else None
    if dtype.kind in "iu":
        if isinstance(value, float) and not math.isfinite(value):
            return None
        info = np.iinfo(dtype)
        return True if info.min <= value <= info.max else None
    if dtype.kind in "fc":
        return True if not isinstance(value, int) or abs(value) < 1e300 else None
    return None


# -- the call and its outcome -------------------------------------------------------------------

class Outcome:
    def __init__(self, kind, value=None, error=None, text=""):
        self.kind, self.value, self.error, self.text = kind, value, error, text

    def __repr__(self):
        return f"{self.kind}: {self.text}" if self.kind != "ok" else "ok"


def attempt(fn):
    """Run fn; the result or the exception, and whether it warned of discarded data."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = fn()
        except (ValueError, TypeError, KeyError, MemoryError) as error:
            outcome = Outcome(type(error).__name__ if type(error) in (
                ValueError, TypeError, KeyError) else _base_name(error), error=error,
                text=f"{type(error).__name__}: {error}"[:600])
            if outcome.kind not in ("ValueError", "TypeError", "KeyError", "MemoryError"):
                outcome.kind = "other"
            outcome.trace = traceback.format_exc()
            outcome.warnings = caught
            return outcome
        except Exception as error:     # noqa: BLE001 - this is what the fuzzer looks for
            outcome = Outcome("other", error=error,
                              text=f"{type(error).__name__}: {error}"[:600])
            outcome.trace = "".join(traceback.format_exception(error)[-6:])[-3000:]
            outcome.warnings = caught
            return outcome
    outcome = Outcome("ok", value=value)
    outcome.warnings = caught
    outcome.trace = ""
    return outcome


def _base_name(error):
    """ValueError/TypeError/MemoryError subclasses (numpy's _ArrayMemoryError, UFuncNoLoopError,
    ...) count as their documented base."""
    for base in (MemoryError, ValueError, TypeError, KeyError):
        if isinstance(error, base):
            return base.__name__
    return type(error).__name__


class Verdict:
    """Problems found while checking one case."""

    def __init__(self, case):
        self.case, self.problems, self.outcome = case, [], None

    def require(self, condition, message):
        if not condition:
            self.problems.append(message)
        return bool(condition)

    def close(self, actual, expected, atol, what):
        actual = np.asarray(actual)
        if not self.require(actual.shape == np.shape(expected),
                            f"{what}: shape {actual.shape}, expected {np.shape(expected)}"):
            return
        with np.errstate(all="ignore"):
            err = np.abs(actual.astype(np.float64) - expected)
            err = float(err.max()) if err.size else 0.0
        self.require(err <= atol, f"{what}: differs from the reference by {err:.3g} "
                                  f"(allowed {atol:.3g})")

    def new_array(self, a, what, dtype, inputs=()):
        if not self.require(type(a) is np.ndarray, f"{what} is {type(a).__name__}, "
                                                   "expected a numpy.ndarray"):
            return False
        self.require(a.dtype == dtype, f"{what} has dtype {a.dtype}, expected {dtype}")
        self.require(a.flags.c_contiguous, f"{what} is not C-contiguous")
        for i, x in enumerate(inputs):
            if isinstance(x, np.ndarray) and np.shares_memory(a, x):
                self.require(False, f"{what} shares memory with input {i}")
        return True

    def outcome_allowed(self, outcome, valid, allowed=("ValueError", "TypeError")):
        self.outcome = outcome
        for w in getattr(outcome, "warnings", ()):
            if issubclass(w.category, np.exceptions.ComplexWarning):
                self.problems.append(f"a ComplexWarning (imaginary parts silently dropped): "
                                     f"{w.message}")
        if outcome.kind == "ok":
            if valid is False:
                self.problems.append("accepted input that is not valid")
            return True
        if outcome.kind == "other" or outcome.kind not in allowed:
            self.problems.append(f"raised {outcome.text}\n{getattr(outcome, 'trace', '')}")
        elif valid:
            self.problems.append(f"valid input refused: {outcome.text}")
        return False


def unchanged(verdict, before, objects, what="input"):
    after = snapshot(objects)
    verdict.require(after == before, f"the caller's {what} was modified by the call")


# -- entry points ---------------------------------------------------------------------------------

def _module(config):
    """The module a case describes; "train": True puts a GRU in training mode with dropout
    0.5 (its output is then random: no reference, every other check); "precision" makes it
    that module's QuantizedGRU or QuantizedGRUCell (``module.quantize(precision)``)."""
    import cgru
    config = dict(config)
    cls = cgru.GRUCell if config.pop("cell", False) else cgru.GRU
    train = config.pop("train", False)
    precision = config.pop("precision", None)
    config["dtype"] = np.dtype(config["dtype"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = cls(**config, **({"dropout": 0.5} if train else {}))
    module = module.train() if train else module
    return module.quantize(precision) if precision else module


def _float_module(config):
    """For a quantized case, the float module it was quantized from, in evaluation mode (a
    quantized module is inference-only: no dropout even when made in training mode): the
    reference's weights. None for a float case."""
    if not config.get("precision"):
        return None
    return _module({k: v for k, v in config.items() if k not in ("precision", "train")})


# A quantized module's contract (tests/test_quantized.py's BOUND, max abs error against the float
# module it was made from) is stated for inputs like its test grid's: x standard normal, hx in
# [-1, 1]. Here it is checked where |x| and |hx| are at most QUANT_RANGE; larger (tame) inputs
# must give finite results only: rounding a weight by 2^-9 (bfloat16) moves a pre-activation by
# about |x| 2^-9 |w|, which flips a saturated gate once |x| is in the thousands. The fuzzer's
# small modules (H 1-17, inputs 1-5) came within 0.46 of the bound with x and hx uniform in
# [-3, 3] and within 0.72 in [-4, 4] (the worst of 4000 random modules and inputs each, both
# precisions; bfloat16 the worse): 3 keeps a margin and covers every small array drawn.
QUANT_RANGE = 3.0


def quant_tolerance(module, *arrays):
    """The allowed error of a quantized module's result against the float reference, or None
    where the inputs are outside the contract's range (no comparison)."""
    if any(a.size and float(np.abs(a).max()) > QUANT_RANGE for a in arrays):
        return None
    from test_quantized import BOUND
    return BOUND[module.precision] + tolerance(np.float32, *arrays)


def _threads(case):
    import cgru
    n = case.get("threads")
    return cgru.use_threads(n) if n else contextlib.nullcontext()


def dense_valid(gru, x, hx):
    """Whether gru(x, hx) is a valid call (dense input)."""
    a = numeric(x)
    if a is None or a.ndim not in (2, 3):
        return False
    batched = a.ndim == 3
    if batched:
        seq_len, batch = (a.shape[1], a.shape[0]) if gru.batch_first else a.shape[:2]
    else:
        seq_len, batch = a.shape[0], 1
    if seq_len == 0 or batch == 0 or a.shape[-1] != gru.input_size:
        return False
    if hx is None:
        return True
    h = numeric(hx)
    layers = gru.num_directions * gru.num_layers
    want = (layers, batch, gru.hidden_size) if batched else (layers, gru.hidden_size)
    return h is not None and h.shape == want


def packed_valid(gru, packed, hx):
    fields = packed_fields(packed, width=gru.input_size, kinds="biuf")
    if fields is None:
        return None
    if hx is not None:
        h = numeric(hx)
        want = (gru.num_directions * gru.num_layers, int(fields[1][0]), gru.hidden_size)
        if h is None or h.shape != want:
            return None
    return fields


def huge_request(*values):
    """Whether an argument is (logically) so big that converting it needs > HUGE_BYTES."""
    for v in values:
        if isinstance(v, np.ndarray) and logical_size(v) * 8 > HUGE_BYTES:
            return True
        if is_ps(v):
            if huge_request(*[f for f in v[1:] if isinstance(f, np.ndarray)]):
                return True
    return False


def check_gru_result(v, gru, args, value, x, hx, packed, float_gru=None):
    """A GRU call's (output, h_n) against reference.py; for a QuantizedGRU, against reference.py
    with the weights of float_gru, the module it was made from, within the contract's bound."""
    dtype = gru.dtype
    ref_module = float_gru or gru
    if not v.require(isinstance(value, tuple) and len(value) == 2, "result is not a pair"):
        return
    out, h_n = value
    inputs = [a for a in args if isinstance(a, np.ndarray)]
    if packed is not None:
        data, bs, s, u = packed
        if not v.require(type(out).__name__ == "PackedSequence", "packed input, output "
                                                                 f"is {type(out).__name__}"):
            return
        v.new_array(out.data, "output.data", dtype, inputs)
        v.require(np.array_equal(out.batch_sizes, bs), "output.batch_sizes differ from input's")
        if s is None:
            v.require(out.sorted_indices is None and out.unsorted_indices is None,
                      "output has sorting indices, the input none")
        else:
            v.require(out.sorted_indices is not None and
                      np.array_equal(out.sorted_indices, s), "output.sorted_indices differ")
            v.require(out.unsorted_indices is not None and
                      np.array_equal(out.unsorted_indices, u), "output.unsorted_indices differ")
        ref_out, ref_h, xd, h0 = ref_gru_packed(ref_module, data, bs, s, hx, dtype)
        out_array = out.data
    else:
        v.new_array(out, "output", dtype, inputs)
        ref_out, ref_h, xd, h0 = ref_gru_dense(ref_module, x, hx, dtype)
        out_array = out
    v.new_array(h_n, "h_n", dtype, inputs)
    if not (v.require(np.shape(out_array) == ref_out.shape,
                      f"output shape {np.shape(out_array)}, expected {ref_out.shape}") and
            v.require(np.shape(h_n) == ref_h.shape,
                      f"h_n shape {np.shape(h_n)}, expected {ref_h.shape}")):
        return
    params = _f64(ref_module.state_dict()).values()
    if gru.training and gru.dropout:
        v.require(not tame(xd, h0, *params) or (np.isfinite(out_array).all()
                                                and np.isfinite(h_n).all()),
                  "non-finite output from finite input (training mode)")
    elif tame(xd, h0, *params):
        v.require(np.isfinite(out_array).all() and np.isfinite(h_n).all(),
                  "non-finite output from finite input")
        atol = tolerance(dtype, xd, h0) if float_gru is None else \
            quant_tolerance(gru, xd, h0)
        if atol is not None:
            v.close(out_array, ref_out, atol, "output")
            v.close(h_n, ref_h, atol, "h_n")


def run_gru_call(case, scratch):
    gru = _module(case["module"])
    float_gru = _float_module(case["module"])
    before_params = snapshot(gru.state_dict())
    args = build([case["input"], case.get("hx")], scratch)
    before = snapshot(args)
    x, hx = args
    v = Verdict(case)
    if is_ps(x):
        packed = packed_valid(gru, x, hx)
        valid = packed is not None
    else:
        packed, valid = None, dense_valid(gru, x, hx)
    allowed = ("ValueError", "TypeError") + (("MemoryError",) if huge_request(*args) else ())
    valid = None if huge_request(*args) and valid else valid
    with _threads(case):
        outcome = attempt(lambda: gru(make_packed(x), hx))
    unchanged(v, before, args)
    if v.outcome_allowed(outcome, valid, allowed):
        if valid:
            check_gru_result(v, gru, args, outcome.value, x, hx, packed, float_gru)
    v.require(snapshot(gru.state_dict()) == before_params, "the module's parameters changed")
    return v


def _clean(value, dtype):
    """A valid argument as a clean C-contiguous array (or PackedSequence) of dtype."""
    import cgru
    if value is None:
        return None
    if is_ps(value):
        data, bs, s, u = packed_fields(value)
        return cgru.PackedSequence(np.array(np.asarray(data), dtype=dtype), bs, s, u)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array(np.asarray(value), dtype=dtype, order="C")


def _grads_close(v, got, want, dtype, what):
    if not v.require(list(got) == list(want), f"{what}: keys {list(got)}, expected "
                                              f"{list(want)}"):
        return
    for key in want:
        g, w = got[key], want[key]
        v.new_array(g, f"{what}[{key!r}]", dtype)
        if v.require(np.shape(g) == np.shape(w), f"{what}[{key!r}] shape {np.shape(g)}, "
                                                 f"expected {np.shape(w)}"):
            both = np.isfinite(w) & np.isfinite(g)
            scale = 1.0 + (float(np.abs(w[both]).max()) if both.any() else 0.0)
            atol = (1e-5 if dtype == np.float32 else 1e-11) * scale
            v.require(np.array_equal(np.isfinite(g), np.isfinite(w)),
                      f"{what}[{key!r}]: finite where the clean call's is not, or not where "
                      "it is")
            err = float(np.abs(g[both].astype(np.float64) - w[both]).max()) if both.any() else 0
            v.require(err <= atol, f"{what}[{key!r}] differs from the clean call's by "
                                   f"{err:.3g} (allowed {atol:.3g})")


def grad_output_valid(gru_like, out, grad, packed):
    """Whether grad_output fits the forward's output."""
    if grad is None:
        return True
    if packed is not None:
        if is_ps(grad):
            fields = packed_fields(grad, kinds="biuf")
            if fields is None:
                return False
            data, bs, s, _ = fields
            same = (s is None and packed[2] is None) or (
                s is not None and packed[2] is not None and np.array_equal(s, packed[2])) or (
                s is None and np.array_equal(packed[2], np.arange(len(packed[2])))) or (
                packed[2] is None and np.array_equal(s, np.arange(len(s))))
            return same and np.array_equal(bs, packed[1]) and data.shape == out.data.shape
        a = numeric(grad)
        return a is not None and a.shape == out.data.shape
    a = numeric(grad)
    return a is not None and a.shape == np.shape(out)


def run_vjp(case, scratch):
    """GRU.vjp or GRUCell.vjp, then its backward, against the clean call."""
    gru = _module(case["module"])
    cell = case["module"].get("cell", False)
    args = build([case["input"], case.get("hx"), case.get("grad_output"),
                  case.get("grad_h_n")], scratch)
    before = snapshot(args)
    x, hx, go, ghn = args
    v = Verdict(case)
    dtype = gru.dtype
    if cell:
        valid = cell_valid(gru, x, hx)
        packed = None
    elif is_ps(x):
        packed = packed_valid(gru, x, hx)
        valid = packed is not None
    else:
        packed, valid = None, dense_valid(gru, x, hx)
    allowed = ("ValueError", "TypeError") + (("MemoryError",) if huge_request(*args) else ())
    valid = None if huge_request(*args) and valid else valid
    with _threads(case):
        outcome = attempt(lambda: gru.vjp(make_packed(x), hx))
    forward_ok = v.outcome_allowed(outcome, valid, allowed)
    if forward_ok and valid:
        result, backward = outcome.value
        # the forward part is exactly the plain call
        with _threads(case):
            plain = gru(make_packed(x), hx)
        if cell:
            v.new_array(result, "h1", dtype)
            v.require(same_values(result, plain), "vjp's h1 differs from the call's")
            out = result
            ref = ref_cell(gru, x, hx)
            if tame(*ref[1:]):
                v.close(result, ref[0], tolerance(dtype, *ref[1:]), "h1")
        else:
            check_gru_result(v, gru, [a for a in args if isinstance(a, np.ndarray)], result,
                             x, hx, packed)
            for got, want, what in ((result[0], plain[0], "output"),
                                    (result[1], plain[1], "h_n")):
                got = got.data if packed is not None else got
                want = want.data if packed is not None else want
                v.require(same_values(got, want), f"vjp's {what} differs from the call's")
            out = result[0]
        # backward, with the hostile upstream gradients
        h_shape = np.shape(result if cell else result[1])
        gvalid = grad_output_valid(gru, out, go, packed) and (
            ghn is None or (numeric(ghn) is not None and numeric(ghn).shape == h_shape))
        if cell:
            gvalid = go is None or (numeric(go) is not None and numeric(go).shape == h_shape)
        call = (lambda: backward(make_packed(go))) if cell else \
            (lambda: backward(make_packed(go), ghn))
        with _threads(case):
            b_outcome = attempt(call)
        if v.outcome_allowed(b_outcome, gvalid) and gvalid:
            grads = b_outcome.value
            with _threads(case):
                again = attempt(call)
            if v.require(again.kind == "ok", f"a second backward call: {again.text}"):
                for key in grads:
                    v.require(same_values(grads[key], again.value[key]),
                              f"a second backward call gives another {key!r}")
            # the same call on clean copies
            cx, chx = _clean(x, dtype), _clean(hx, dtype)
            with _threads(case):
                _, clean_backward = gru.vjp(cx, chx)
                if cell:
                    want = clean_backward(_clean(go, dtype))
                else:
                    want = clean_backward(_clean(go, dtype), _clean(ghn, dtype))
            _grads_close(v, grads, want, dtype, "backward")
            if isinstance(x, np.ndarray) and not is_ps(x):
                v.require(grads["input"].shape == x.shape, "grads['input'] is not shaped "
                                                           "like input")
    unchanged(v, before, args)
    return v


def cell_valid(cell, x, hx):
    a = numeric(x)
    if a is None or a.ndim not in (1, 2) or a.shape[-1] != cell.input_size:
        return False
    if a.ndim == 2 and a.shape[0] == 0:
        return False
    if hx is None:
        return True
    h = numeric(hx)
    want = (a.shape[0], cell.hidden_size) if a.ndim == 2 else (cell.hidden_size,)
    return h is not None and h.shape == want


def ref_cell(cell, x, hx, dtype=None):
    from reference import gru_direction
    dtype = dtype or cell.dtype
    xd = converted(x, dtype)
    batched = xd.ndim == 2
    xd = xd if batched else xd[None]
    h0 = np.zeros((xd.shape[0], cell.hidden_size)) if hx is None else \
        converted(hx, dtype).reshape(xd.shape[0], cell.hidden_size)
    p = _f64(cell.state_dict())
    zeros = np.zeros(3 * cell.hidden_size)
    out, _ = gru_direction(xd[None], h0, p["weight_ih"], p["weight_hh"],
                           p.get("bias_ih", zeros), p.get("bias_hh", zeros),
                           [1] * xd.shape[0], False)
    out = out[0]
    return (out if batched else out[0]), xd, h0


def run_cell_call(case, scratch):
    cell = _module(dict(case["module"], cell=True))
    float_cell = _float_module(dict(case["module"], cell=True))
    args = build([case["input"], case.get("hx")], scratch)
    before = snapshot(args)
    x, hx = args
    v = Verdict(case)
    valid = cell_valid(cell, x, hx)
    allowed = ("ValueError", "TypeError") + (("MemoryError",) if huge_request(*args) else ())
    valid = None if huge_request(*args) and valid else valid
    outcome = attempt(lambda: cell(x, hx))
    unchanged(v, before, args)
    if v.outcome_allowed(outcome, valid, allowed) and valid:
        h1 = outcome.value
        v.new_array(h1, "h1", cell.dtype, [a for a in args if isinstance(a, np.ndarray)])
        ref, xd, h0 = ref_cell(float_cell or cell, x, hx, cell.dtype)
        if v.require(np.shape(h1) == ref.shape, f"h1 shape {np.shape(h1)}, expected "
                                                f"{ref.shape}") and tame(xd, h0):
            v.require(np.isfinite(h1).all(), "non-finite h1 from finite input")
            atol = tolerance(cell.dtype, xd, h0) if float_cell is None else \
                quant_tolerance(cell, xd, h0)
            if atol is not None:
                v.close(h1, ref, atol, "h1")
    return v


# -- packing utilities ----------------------------------------------------------------------------

def run_packing(case, scratch):
    import cgru
    fn = case["fn"]
    args = build(case["args"], scratch)
    kwargs = build(case.get("kwargs", {}), scratch)
    before = snapshot([args, kwargs])
    v = Verdict(case)
    if huge_request(*args, *[s for a in args if isinstance(a, (list, tuple)) and not is_ps(a)
                             for s in a]):
        expect, allowed = UNKNOWN, ("ValueError", "TypeError", "MemoryError")
    else:
        expect, allowed = packing_expectation(fn, args, kwargs)
    target = getattr(cgru, fn)
    outcome = attempt(lambda: target(*[make_packed(a) for a in args], **kwargs))
    unchanged(v, before, [args, kwargs])
    valid = None if expect is UNKNOWN else expect is not None
    if v.outcome_allowed(outcome, valid, allowed) and valid:
        check_packing_result(v, fn, outcome.value, expect, args)
    return v


UNKNOWN = object()     # an expectation: no promise either way (a result or an error)


def _padding(kwargs, dtype, expect):
    """expect if the padding value surely fits dtype, None if it is no number, else UNKNOWN."""
    ok = fits(kwargs.get("padding_value", 0.0), dtype)
    return expect if ok else (None if ok is False else UNKNOWN)


def packing_expectation(fn, args, kwargs):
    """(the expected result when the call is valid, else None; the errors allowed)."""
    allowed = ("ValueError", "TypeError")
    if fn == "pack_padded_sequence":
        padded, lengths = args
        batch_first = kwargs.get("batch_first", False)
        enforce = kwargs.get("enforce_sorted", True)
        a = numeric(padded, "biufc")
        n = int_vector(lengths)
        if a is None or a.ndim < 2 or n is None:
            return None, allowed
        max_len, batch = (a.shape[1], a.shape[0]) if batch_first else a.shape[:2]
        if batch == 0 or n.shape[0] != batch or n.min() < 1 or n.max() > max_len:
            return None, allowed
        if enforce and (np.diff(n) > 0).any():
            return None, allowed
        return ref_pack(a, n, batch_first, enforce), allowed
    if fn in ("pad_packed_sequence", "unpack_sequence"):
        fields = packed_fields(args[0])
        if fields is None:
            return None, allowed
        data, bs, s, u = fields
        seqs = ref_unpack(data, bs, s)
        if fn == "unpack_sequence":
            return seqs, allowed
        total = kwargs.get("total_length")
        if total is not None and not isinstance(total, bool) and isinstance(total, int) and \
                total * int(bs[0]) * max(1, int(np.prod(data.shape[1:]))) * data.itemsize \
                > HUGE_BYTES:
            allowed += ("MemoryError",)
        if total is not None and (isinstance(total, bool)
                                  or not isinstance(total, numbers.Integral)
                                  or total < len(bs)):
            return None, allowed
        if total is not None and total > 10 ** 6:
            return UNKNOWN, allowed
        return _padding(kwargs, data.dtype, (seqs, data.dtype, int(total or len(bs)))), allowed
    if fn in ("pack_sequence", "pad_sequence"):
        seqs = args[0]
        if isinstance(seqs, (str, bytes, dict)) or not hasattr(seqs, "__len__") or \
                not len(seqs):
            return None, allowed
        arrays = [numeric(s, "biufc") for s in seqs]
        if any(a is None for a in arrays) or \
                any(a.shape[1:] != arrays[0].shape[1:] for a in arrays):
            return None, allowed
        dtype = np.result_type(*arrays)
        if fn == "pad_sequence":
            if kwargs.get("padding_side", "right") not in ("left", "right"):
                return None, allowed
            return _padding(kwargs, dtype, (arrays, dtype)), allowed
        lengths = [a.shape[0] for a in arrays]
        if min(lengths) < 1 or (kwargs.get("enforce_sorted", True)
                                and any(b > a for a, b in zip(lengths, lengths[1:]))):
            return None, allowed
        return (arrays, dtype), allowed
    if fn == "unpad_sequence":
        padded, lengths = args
        a = numeric(padded, "biufc")
        n = int_vector(lengths)
        if a is None or a.ndim < 2 or n is None:
            return None, allowed
        if not kwargs.get("batch_first", False):
            a = np.swapaxes(a, 0, 1)
        if n.shape[0] != a.shape[0] or (n.size and (n.min() < 1 or n.max() > a.shape[1])):
            return None, allowed
        return [a[i, :k] for i, k in enumerate(n)], allowed
    raise ValueError(fn)


def check_packing_result(v, fn, value, expect, args):
    inputs = [a for a in args if isinstance(a, np.ndarray)]
    if fn == "pack_padded_sequence":
        data, bs, s = expect
        if not v.require(type(value).__name__ == "PackedSequence", "not a PackedSequence"):
            return
        v.require(same_bits(value.data, data), "data differs from the reference packing")
        v.new_array(value.data, "data", data.dtype, inputs)
        v.require(same_bits(value.batch_sizes, bs), f"batch_sizes {value.batch_sizes!r}, "
                                                    f"expected {bs!r}")
        if s is None:
            v.require(value.sorted_indices is None and value.unsorted_indices is None,
                      "sorting indices with enforce_sorted")
        else:
            v.require(value.sorted_indices is not None
                      and same_bits(value.sorted_indices, s), "sorted_indices")
            v.require(value.unsorted_indices is not None
                      and same_bits(value.unsorted_indices, np.argsort(s)), "unsorted_indices")
    elif fn == "unpack_sequence":
        if not v.require(isinstance(value, list) and len(value) == len(expect),
                         "not a list of the sequences"):
            return
        for i, (got, want) in enumerate(zip(value, expect)):
            v.require(same_bits(got, want), f"sequence {i} differs")
            v.new_array(got, f"sequence {i}", want.dtype, inputs)
    elif fn == "pad_packed_sequence":
        seqs, dtype, total = expect
        if not v.require(isinstance(value, tuple) and len(value) == 2, "not a pair"):
            return
        padded, lengths = value
        v.new_array(padded, "padded", dtype, inputs)
        v.require(same_bits(lengths, np.array([len(s) for s in seqs], dtype=np.int64)),
                  f"lengths {lengths!r}")
        case_kwargs = v.case.get("kwargs", {})
        batch_first = case_kwargs.get("batch_first", False)
        trailing = seqs[0].shape[1:]
        want = np.empty((len(seqs), total) + trailing, dtype=dtype)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want[...] = np.asarray(case_kwargs.get("padding_value", 0.0)).astype(dtype)
        for i, s in enumerate(seqs):
            want[i, :len(s)] = s
        if not batch_first:
            want = np.swapaxes(want, 0, 1)
        v.require(same_bits(padded, want), "padded differs from the reference")
    elif fn in ("pack_sequence", "pad_sequence"):
        arrays, dtype = expect
        kwargs = v.case.get("kwargs", {})
        if fn == "pack_sequence":
            if not v.require(type(value).__name__ == "PackedSequence", "not a PackedSequence"):
                return
            lengths = [a.shape[0] for a in arrays]
            width = arrays[0].shape[1:]
            padded = np.zeros((max(lengths), len(arrays)) + width, dtype=dtype)
            for i, a in enumerate(arrays):
                padded[:len(a), i] = a
            data, bs, s = ref_pack(padded, lengths, False, kwargs.get("enforce_sorted", True))
            v.require(same_bits(value.data, data), "data differs from the reference")
            v.require(same_bits(value.batch_sizes, bs), "batch_sizes")
            v.require((s is None and value.sorted_indices is None) or (
                s is not None and value.sorted_indices is not None and
                same_bits(value.sorted_indices, s)), "sorted_indices")
        else:
            max_len = max(a.shape[0] for a in arrays)
            want = np.empty((len(arrays), max_len) + arrays[0].shape[1:], dtype=dtype)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                want[...] = np.asarray(kwargs.get("padding_value", 0.0)).astype(dtype)
            for i, a in enumerate(arrays):
                if kwargs.get("padding_side", "right") == "right":
                    want[i, :a.shape[0]] = a
                else:
                    want[i, max_len - a.shape[0]:] = a
            if not kwargs.get("batch_first", False):
                want = np.swapaxes(want, 0, 1)
            v.require(same_bits(value, want), "padded differs from the reference")
            v.new_array(value, "padded", dtype, inputs)
    elif fn == "unpad_sequence":
        if not v.require(isinstance(value, list) and len(value) == len(expect), "not a list"):
            return
        for i, (got, want) in enumerate(zip(value, expect)):
            v.require(same_bits(got, want), f"sequence {i} differs")
            if isinstance(got, np.ndarray):
                for x in inputs:
                    v.require(not np.shares_memory(got, x), f"sequence {i} shares memory "
                                                            "with the input")


# -- load_state_dict ------------------------------------------------------------------------------

def run_load_state_dict(case, scratch):
    module = _module(case["module"])
    expected = module._expected_shapes()
    mapping = build(case["mapping"], scratch)
    if case.get("mapping_type") == "proxy":
        import types
        mapping = types.MappingProxyType(mapping)
    elif case.get("mapping_type") == "items":
        mapping = list(mapping.items())
    before_args = snapshot(mapping if not isinstance(mapping, dict) else dict(mapping))
    before_state = module.state_dict()
    probe = np.linspace(-1, 1, 2 * (1 if case["module"].get("cell") else 2)
                        * module.input_size).reshape(
        (2, module.input_size) if case["module"].get("cell") else (2, 2, module.input_size))
    strict = case.get("strict", True)
    v = Verdict(case)
    is_map = isinstance(mapping, (dict, type(types_proxy())))
    keys_ok = is_map and set(mapping) == set(expected)
    values_ok = is_map and all(
        numeric(mapping[k]) is not None and numeric(mapping[k]).shape == shape
        for k, shape in expected.items() if k in mapping)
    valid = is_map and values_ok and (keys_ok or not strict)
    allowed = ("ValueError", "TypeError") + (("KeyError",) if is_map and strict and not keys_ok
                                             else ())
    if case.get("via") == "setattr":
        name, value = next(iter(mapping.items())) if is_map and mapping else ("x", None)
        valid = is_map and name in expected and numeric(value) is not None and \
            numeric(value).shape == expected[name]
        allowed = ("ValueError", "TypeError")
        if name not in expected:
            outcome = Outcome("ok", value=None)     # a plain attribute: not under test
            outcome.warnings = []
            valid = None
        else:
            outcome = attempt(lambda: setattr(module, name, value))
    else:
        outcome = attempt(lambda: module.load_state_dict(mapping, strict=strict))
    unchanged(v, before_args, mapping if not isinstance(mapping, dict) else dict(mapping),
              "state dict")
    ok = v.outcome_allowed(outcome, valid, allowed)
    after = module.state_dict()
    if case.get("via") == "setattr" and is_map and mapping:
        mapping = {name: value}
    if ok and valid:
        if case.get("via") != "setattr":
            missing = [k for k in expected if k not in mapping]
            unexpected = [k for k in mapping if k not in expected]
            v.require(tuple(outcome.value) == (missing, unexpected),
                      f"returned {tuple(outcome.value)}, expected {(missing, unexpected)}")
        for key in expected:
            if key in mapping:
                want = np.asarray(mapping[key])
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    want = want.astype(module.dtype)
                v.require(same_bits(after[key], want), f"{key} was not loaded as given")
            else:
                v.require(same_bits(after[key], before_state[key]), f"{key} changed")
        for key, value in module._params.items():
            v.require(not value.flags.writeable, f"parameter {key} is writeable")
            for x in (mapping.values() if is_map else ()):
                if isinstance(x, np.ndarray):
                    v.require(not np.shares_memory(value, x), f"{key} shares the caller's memory")
    elif ok is False or not valid:
        if outcome.kind != "ok":
            v.require(all(same_bits(after[k], before_state[k]) for k in expected),
                      f"the module's parameters changed although load_state_dict raised "
                      f"{outcome.kind}")
    # the module runs and computes with exactly its parameters (the re-layout happened)
    state = _f64(module.state_dict())
    if tame(*state.values()):
        result = attempt(lambda: module(probe))
        if v.require(result.kind == "ok", f"the module no longer runs: {result.text}"):
            if case["module"].get("cell"):
                ref, xd, h0 = ref_cell(module, probe, None)
                v.close(result.value, ref, tolerance(module.dtype, xd), "the module's output")
            else:
                ref_out, ref_h, xd, h0 = ref_gru_dense(module, probe, None)
                v.close(result.value[0], ref_out, tolerance(module.dtype, xd),
                        "the module's output after loading")
    return v


def types_proxy():
    import types
    return types.MappingProxyType({})


# -- cgru.load on damaged files ------------------------------------------------------------------

class Canary:
    """Pickles to a call that creates a file: if it appears, something unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (builtins.open, (self.path, "a"))


def npy_bytes(descr="'<f4'", fortran="False", shape="(2,)", data=b"", version=(1, 0),
              header=None):
    """A .npy file from raw header parts (any text: hostile headers too)."""
    if header is None:
        header = "{'descr': %s, 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)
    header = header.encode("latin1", "replace")
    size_fmt = "<H" if version[0] == 1 else "<I"
    prefix = 6 + 2 + struct.calcsize(size_fmt)
    pad = (-(prefix + len(header) + 1)) % 64
    header = header + b" " * pad + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack(size_fmt, len(header) % (
        1 << (8 * struct.calcsize(size_fmt)))) + header + data


def npy_of(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def mutate_member(content, mutation, canary, rng):
    """A zip member's new bytes (None: remove it) after one mutation."""
    kind = mutation[0]
    if kind == "remove":
        return None
    if kind == "json":             # the header member, as a text array of this JSON
        return npy_of(np.array(mutation[1]))
    if kind == "config":          # one config value changed
        header = json.loads(str(np.load(io.BytesIO(content), allow_pickle=False)))
        if mutation[1] in ("format", "version", "class"):
            header[mutation[1]] = mutation[2]
        elif mutation[2] == "__delete__":
            header["config"].pop(mutation[1], None)
        else:
            header["config"][mutation[1]] = mutation[2]
        return npy_of(np.array(json.dumps(header)))
    if kind == "deep_json":
        return npy_of(np.array("[" * mutation[1] + "]" * mutation[1]))
    if kind == "object":
        return npy_of(np.array([Canary(canary), 1.0], dtype=object))
    if kind == "astype":
        a = np.load(io.BytesIO(content), allow_pickle=False)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return npy_of(a.astype(mutation[1]))
    if kind == "reshape":          # same data, another (valid) shape
        a = np.load(io.BytesIO(content), allow_pickle=False)
        return npy_of(a.reshape(-1) if mutation[1] == "flat" else a.reshape(a.shape + (1,)))
    if kind == "values":           # NaN, inf or huge weights
        a = np.load(io.BytesIO(content), allow_pickle=False).copy()
        if a.dtype.kind == "f" and a.size:
            a.flat[rng.integers(a.size)] = mutation[1]
        return npy_of(a)
    if kind == "header":           # the .npy header rewritten, data kept
        a = np.load(io.BytesIO(content), allow_pickle=False)
        raw = a.tobytes()
        descr, fortran, shape = mutation[1:4]
        return npy_bytes(descr or repr(a.dtype.str), fortran or "False",
                         shape or repr(a.shape), raw)
    if kind == "data":             # the array data truncated or extended
        cut = mutation[1]
        return content[:max(0, len(content) + cut)] if cut < 0 else content + b"\0" * cut
    if kind == "bytes":            # the member replaced by arbitrary bytes
        return mutation[1]
    raise ValueError(kind)


def mutated_file(case, path, canary):
    """Save the case's model to path, then damage it as the case says."""
    module = _module(case["module"])
    module.save(path)
    rng = np.random.default_rng(case.get("seed", 0))
    original = open(path, "rb").read()
    content = original
    for mutation in case["mutations"]:
        kind = mutation[0]
        if kind == "flip":
            pos = int(mutation[1] * len(content)) % max(1, len(content))
            b = bytearray(content)
            if b:
                b[pos] ^= 1 << mutation[2]
            content = bytes(b)
        elif kind == "truncate":
            content = content[:int(mutation[1] * len(content))]
        elif kind == "extend":
            content = content + mutation[1]
        elif kind == "overwrite":
            pos = int(mutation[1] * len(content))
            content = content[:pos] + mutation[2] + content[pos + len(mutation[2]):]
        elif kind == "replace_file":
            content = mutation[1] if isinstance(mutation[1], bytes) else \
                npy_of(np.zeros(3, np.float32))
        elif kind in ("member", "add_member", "rename", "duplicate", "deflate"):
            try:
                zin = zipfile.ZipFile(io.BytesIO(content))
                members = [(i.filename, zin.read(i)) for i in zin.infolist()]
            except Exception:          # noqa: BLE001 - damaged already: leave it
                continue
            names = [n for n, _ in members]
            if not names and kind != "add_member":
                continue
            out = []
            compression = zipfile.ZIP_STORED
            if kind == "member":
                target = names[mutation[1] % len(names)] if mutation[1] >= 0 else \
                    "__cgru__.npy"
                for n, c in members:
                    if n == target:
                        try:
                            c = mutate_member(c, mutation[2], canary, rng)
                        except Exception:      # noqa: BLE001 - not applicable to it
                            pass
                        if c is None:
                            continue
                    out.append((n, c))
            elif kind == "add_member":
                out = members + [(mutation[1], npy_of(np.asarray(mutation[2]))
                                  if not isinstance(mutation[2], bytes) else mutation[2])]
            elif kind == "rename":
                i = mutation[1] % len(members)
                out = list(members)
                out[i] = (mutation[2], out[i][1])
            elif kind == "duplicate":
                i = mutation[1] % len(members)
                out = members + [members[i]]
            else:
                out, compression = members, zipfile.ZIP_DEFLATED
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")      # duplicate names
                with zipfile.ZipFile(buf, "w", compression) as zout:
                    for n, c in out:
                        zout.writestr(n, c)
            content = buf.getvalue()
        else:
            raise ValueError(kind)
    with open(path, "wb") as f:
        f.write(content)
    return module, content, content == original


def run_load(case, scratch):
    import cgru
    path = os.path.join(scratch, "model.npz")
    canary = os.path.join(scratch, "unpickled")
    original, content, intact = mutated_file(case, path, canary)
    v = Verdict(case)
    outcome = attempt(lambda: cgru.load(path))
    v.require(not os.path.exists(canary), "cgru.load unpickled an object array")
    v.require(open(path, "rb").read() == content, "cgru.load modified the file")
    if v.outcome_allowed(outcome, True if intact else None, ("ValueError",)):
        module = outcome.value
        v.require(isinstance(module, (cgru.GRU, cgru.GRUCell)), f"loaded a "
                                                              f"{type(module).__name__}")
        state = module.state_dict()
        for key, shape in module._expected_shapes().items():
            v.require(state[key].shape == shape and state[key].dtype == module.dtype,
                      f"{key}: {state[key].shape} {state[key].dtype}")
        if intact:
            want = original.state_dict()
            v.require(all(same_bits(state[k], want[k]) for k in want), "weights differ")
            v.require(repr(module) == repr(original), f"{module!r} != {original!r}")
        n_in = module.input_size
        probe = np.ones((2, n_in)) if isinstance(module, cgru.GRUCell) else np.ones((2, 1, n_in))
        run = attempt(lambda: module(probe))
        v.require(run.kind == "ok", f"the loaded module does not run: {run.text}")
        if run.kind == "ok" and all(np.isfinite(a).all() for a in state.values()):
            out = run.value if isinstance(module, cgru.GRUCell) else run.value[0]
            v.require(np.isfinite(out).all(), "finite weights, non-finite output")
    return v


# -- the optimizers' step -----------------------------------------------------------------------

def _hyper_valid(name, cls, group):
    """Whether a parameter group holds valid hyperparameters (the documented domains)."""
    def real(x):
        return isinstance(x, (numbers.Real,)) and not isinstance(x, (bool, np.bool_)) and \
            not (isinstance(x, float) and math.isnan(x))

    def flag(x):
        return isinstance(x, (bool, np.bool_))

    try:
        if name == "SGD":
            if set(group) != {"lr", "momentum", "dampening", "weight_decay", "nesterov",
                              "maximize"}:
                return False
            ok = real(group["lr"]) and group["lr"] >= 0 and real(group["momentum"]) and \
                group["momentum"] >= 0 and real(group["dampening"]) and \
                real(group["weight_decay"]) and group["weight_decay"] >= 0 and \
                flag(group["nesterov"]) and flag(group["maximize"])
            if ok and group["nesterov"]:
                ok = group["momentum"] > 0 and group["dampening"] == 0
            return ok
        if set(group) != {"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"}:
            return False
        betas = group["betas"]
        return real(group["lr"]) and group["lr"] >= 0 and real(group["eps"]) and \
            group["eps"] >= 0 and real(group["weight_decay"]) and group["weight_decay"] >= 0 \
            and isinstance(betas, (tuple, list)) and len(betas) == 2 and \
            all(real(b) and 0 <= b < 1 for b in betas) and flag(group["amsgrad"]) and \
            flag(group["maximize"])
    except (TypeError, ValueError, OverflowError):
        return False


def ref_step(name, p, g, state, group):
    """One update in float64 from the documented formulas: (new p, new state)."""
    p, g = p.astype(np.float64), g.astype(np.float64)
    state = dict(state or {})
    if group["maximize"]:
        g = -g
    if name == "SGD":
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p
        if group["momentum"]:
            buf = state.get("momentum_buffer")
            buf = g.copy() if buf is None else group["momentum"] * buf + \
                (1 - group["dampening"]) * g
            state["momentum_buffer"] = buf
            g = g + group["momentum"] * buf if group["nesterov"] else buf
        return p - group["lr"] * g, state
    b1, b2 = group["betas"]
    step = state.get("step", 0.0) + 1
    m = state.get("exp_avg", np.zeros_like(p))
    s = state.get("exp_avg_sq", np.zeros_like(p))
    if group["weight_decay"]:
        if name == "AdamW":
            p = p * (1 - group["lr"] * group["weight_decay"])
        else:
            g = g + group["weight_decay"] * p
    m = m + (1 - b1) * (g - m)
    s = b2 * s + (1 - b2) * g * g
    second = s
    if group["amsgrad"]:
        second = np.maximum(state.get("max_exp_avg_sq", np.zeros_like(p)), s)
        state["max_exp_avg_sq"] = second
    state.update(step=step, exp_avg=m, exp_avg_sq=s)
    denom = np.sqrt(second) / math.sqrt(1 - b2 ** step) + group["eps"]
    return p - group["lr"] / (1 - b1 ** step) * m / denom, state


def run_optim(case, scratch):
    import cgru.optim
    entries = []
    for spec in case["params"]:
        if spec[0] == "module":
            entries.append(_module(spec[1]))
        else:
            entries.append({name: build(a, scratch) for name, a in spec[1].items()})
    params = entries[0] if case.get("single") else entries
    cls = getattr(cgru.optim, case["optimizer"])
    v = Verdict(case)
    made = attempt(lambda: cls(params, **case["hyper"]))
    if made.kind != "ok":
        # the constructor refuses only what the step would: hostile hyperparameters
        v.outcome_allowed(made, False)
        return v
    opt = made.value
    for key, value in case.get("group_edits", {}).items():
        opt.param_groups[0][key] = value
    if case.get("drop_group_key"):
        opt.param_groups[0].pop(case["drop_group_key"], None)
    group = dict(opt.param_groups[0])
    hyper_ok = _hyper_valid(case["optimizer"], cls, group)

    def flat():
        out = []
        for entry in entries:
            if isinstance(entry, dict):
                out += [(id(entry), k, a) for k, a in entry.items()]
            else:
                out += [(id(entry), k, a) for k, a in entry._params.items()]
        return out

    for step_index, grads_spec in enumerate(case["grads"]):
        grads = build(grads_spec, scratch)
        before_grads = snapshot(grads)
        before_params = [a.copy() for _, _, a in flat()]
        before_state = opt.state_dict()
        expect = grads_expected(entries, grads, case.get("single"))
        valid = hyper_ok and expect is not None
        outcome = attempt(lambda: opt.step(grads))
        unchanged(v, before_grads, grads, "gradients")
        ok = v.outcome_allowed(outcome, valid)
        after = [a for _, _, a in flat()]
        if ok and valid:
            # compare with the formulas, parameter by parameter, in the flat order
            index = 0
            for (entry_id, key, a), p0, g in zip(flat(), before_params, expect):
                v.require(a.shape == p0.shape and a.dtype == p0.dtype,
                          f"{key}: shape or dtype changed")
                old = before_state["state"].get(index)
                want, _ = ref_step(case["optimizer"], p0, g, old, group)
                if tame(p0, g, want) and not ((g != 0) & (np.abs(g) < 1e-6)).any():
                    atol = (1e-5 if a.dtype == np.float32 else 1e-12) * (
                        1 + float(np.abs(want).max() if want.size else 0)) * 10
                    v.close(a, want, atol, f"parameter {index} ({key}) after step "
                                           f"{step_index + 1}")
                index += 1
        elif outcome.kind != "ok":
            v.require(all(same_bits(a, b) for a, b in zip(after, before_params)),
                      "a step that raised changed parameters")
            state = opt.state_dict()
            v.require(snapshot(state["state"]) == snapshot(before_state["state"]),
                      "a step that raised changed the optimizer's state")
            break
    return v


def grads_expected(entries, grads, single):
    """The gradients in flat parameter order when grads fits params (documented rules), else
    None."""
    from collections.abc import Mapping
    if len(entries) == 1 and isinstance(grads, Mapping):
        grads = [grads]
    if not isinstance(grads, (list, tuple)) or len(grads) != len(entries):
        return None
    out = []
    for entry, given in zip(entries, grads):
        if not isinstance(given, Mapping):
            return None
        if isinstance(entry, dict):
            expected = {k: a.shape for k, a in entry.items()}
            extra = ()
        else:
            expected = entry._expected_shapes()
            extra = ("input", "hx")
        if set(expected) - set(given) or set(given) - set(expected) - set(extra):
            return None
        for key, shape in expected.items():
            value = given[key]
            if value is None or isinstance(value, (str, bytes, dict, set)):
                return None
            try:
                a = np.asarray(value)
            except (ValueError, TypeError):
                return None
            if a.shape != shape or a.dtype.kind not in "biuf":
                return None
            out.append(converted(a, np.float64))
    return out


# -- cgru run on damaged .npy files -------------------------------------------------------------

def input_file(spec, seed, canary):
    """The bytes of a .npy file from a case's description (well-formed or damaged)."""
    kind = spec["kind"]
    rng = np.random.default_rng(seed)
    if kind == "array":            # a well-formed .npy of this array (np.save)
        shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
        if "values" in spec:
            a = np.asarray(spec["values"], dtype=dtype).reshape(shape)
        else:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                a = (rng.standard_normal(shape) * spec.get("scale", 1.0)).astype(dtype)
        if spec.get("fortran"):
            a = np.asfortranarray(a)
        return npy_of(a)
    if kind == "raw":              # a hand-written header, data of some length
        data = rng.bytes(spec.get("nbytes", 0))
        return npy_bytes(spec.get("descr", "'<f4'"), spec.get("fortran", "False"),
                         spec.get("shape", "(2, 1, 3)"), data,
                         version=tuple(spec.get("version", (1, 0))),
                         header=spec.get("header"))
    if kind == "cut":              # a well-formed file cut short or extended by `cut` bytes
        content = input_file(dict(spec["of"]), seed, canary)
        cut = spec["cut"]
        return content[:cut] if cut < 0 else content + b"\0" * cut
    if kind == "object":
        return npy_of(np.array([Canary(canary), 1.0], dtype=object))
    if kind == "bytes":
        return spec["bytes"]
    if kind == "npz":
        buf = io.BytesIO()
        np.savez(buf, x=np.zeros((2, 1, 3), np.float32))
        return buf.getvalue()
    raise ValueError(kind)


def reference_load(path):
    """The array in a .npy file as NumPy reads it (no pickles), or None when it is not one
    complete array: numpy's own reader is the reference for what is a readable file."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                return None
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
        if dtype.hasobject or offset + math.prod(shape) * dtype.itemsize > size:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = np.load(path, allow_pickle=False)
        return a if isinstance(a, np.ndarray) else None
    except Exception:      # noqa: BLE001 - whatever numpy refuses is not a readable array
        return None


def run_cli(case, scratch, subprocess_mode=False):
    from cgru import cli
    folder = tempfile.mkdtemp(dir=scratch)
    canary = os.path.join(scratch, "unpickled")
    module = _module(case["module"])
    model_path = os.path.join(folder, "model.npz")
    module.save(model_path)
    if case.get("model_damage"):
        content = open(model_path, "rb").read()
        open(model_path, "wb").write(content[:len(content) // 2])
    x_path = os.path.join(folder, "x.npy")
    open(x_path, "wb").write(input_file(case["input"], case.get("seed", 0), canary))
    argv = ["run", model_path, x_path, "-o", os.path.join(folder, "out.npy")]
    l_path = None
    if case.get("lengths") is not None:
        l_path = os.path.join(folder, "lengths.npy")
        open(l_path, "wb").write(input_file(case["lengths"], case.get("seed", 0) + 1, canary))
        argv += ["--lengths", l_path]
    if case.get("batch_first"):
        argv.append("--batch-first")
    if case.get("hidden_out"):
        argv += ["--hidden-out", os.path.join(folder, "h.npy")]
    for flag in ("batch_size", "threads"):
        if case.get(flag) is not None:
            argv += ["--" + flag.replace("_", "-"), str(case[flag])]
    if case.get("quiet"):
        argv.append("--quiet")
    files_before = {n: open(os.path.join(folder, n), "rb").read() for n in os.listdir(folder)}
    x_array = reference_load(x_path)
    lengths = reference_load(l_path) if l_path else None
    expected = cli_expectation(case, module, x_array, lengths, l_path is not None)

    v = Verdict(case)
    if subprocess_mode:
        proc = subprocess.run([sys.executable, "-m", "cgru", *argv], cwd=folder,
                              capture_output=True, text=True, timeout=120)
        rc, err = proc.returncode, proc.stderr
    else:
        stderr = io.StringIO()
        real = sys.stderr
        sys.stderr = stderr
        try:
            try:
                outcome = attempt(lambda: cli.main(argv))
            except SystemExit as exit_:           # argparse's usage errors
                outcome = Outcome("exit", value=exit_.code)
        finally:
            sys.stderr = real
        err = stderr.getvalue()
        # a warning would be printed on stderr too, around the one-line error (those that
        # Python's default filters show)
        hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
        err += "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
                       for w in getattr(outcome, "warnings", ())
                       if not issubclass(w.category, hidden))
        if outcome.kind in ("ok", "exit"):
            rc = outcome.value
        else:
            v.outcome = outcome
            v.problems.append(f"cgru run raised (a traceback for the user): {outcome.text}\n"
                              f"{outcome.trace}")
            shutil.rmtree(folder, ignore_errors=True)
            return v
    v.outcome = Outcome("ok" if rc == 0 else f"exit {rc}", text=err.strip())
    v.require(not os.path.exists(canary), "cgru run unpickled an object array")
    for name, content in files_before.items():
        v.require(open(os.path.join(folder, name), "rb").read() == content,
                  f"cgru run modified {name}")
    if rc == 0:
        v.require(expected is not None, "cgru run succeeded on input that is not valid")
        v.require(err == "", f"exit 0 with stderr {err!r}")
        out_path = os.path.join(folder, "out.npy")
        if v.require(os.path.exists(out_path), "exit 0 but no output file") and \
                expected is not None:
            out = np.load(out_path, allow_pickle=False)
            want_out, want_h = expected
            atol = 1e-5 if module.dtype == np.float32 else 1e-12
            if v.require(out.shape == want_out.shape and out.dtype == want_out.dtype,
                         f"output {out.shape} {out.dtype}, expected {want_out.shape} "
                         f"{want_out.dtype}") and np.isfinite(want_out).all():
                v.close(out, want_out.astype(np.float64), atol, "output")
            if case.get("hidden_out"):
                h = np.load(os.path.join(folder, "h.npy"), allow_pickle=False)
                if v.require(h.shape == want_h.shape, "h_n shape") and \
                        np.isfinite(want_h).all():
                    v.close(h, want_h.astype(np.float64), atol, "h_n")
    else:
        lines = err.strip().splitlines()
        v.require(expected is None, f"valid input failed (exit {rc}): {err.strip()}")
        v.require("Traceback" not in err, f"a traceback on stderr:\n{err}")
        if rc == 2:
            v.require(lines and lines[-1].startswith("cgru run: error:"), f"usage error: {err}")
        else:
            v.require(rc == 1, f"exit status {rc}")
            v.require(len(lines) == 1 and lines[0].startswith("cgru run: error:"),
                      f"the error is not one line starting 'cgru run: error:': {err!r}")
        leftovers = sorted(set(os.listdir(folder)) - set(files_before))
        v.require(not leftovers, f"a failed run left files behind: {leftovers}")
    shutil.rmtree(folder, ignore_errors=True)
    return v


def cli_expectation(case, module, x_array, lengths, lengths_given):
    """The (output, h_n) the run must write, or None when it must fail."""
    import cgru
    if case.get("model_damage") or isinstance(module, (cgru.GRUCell, cgru.QuantizedGRUCell)) \
            or x_array is None:
        return None
    if x_array.dtype.kind not in "biuf" or x_array.ndim != 3 or \
            x_array.shape[2] != module.input_size:
        return None
    bf = bool(case.get("batch_first"))
    seq_len, batch = (x_array.shape[1], x_array.shape[0]) if bf else x_array.shape[:2]
    if seq_len == 0 or batch == 0:
        return None
    if case.get("batch_size") is not None and case["batch_size"] < 1:
        return None
    if case.get("threads") == 0:      # resolve_threads's one invalid int (negative: counted back)
        return None
    if lengths_given:
        if lengths is None or lengths.ndim != 1 or lengths.dtype.kind not in "iu" or \
                len(lengths) != batch or lengths.min() < 1 or lengths.max() > seq_len:
            return None
    module.batch_first = bf
    if lengths is None:
        return module(x_array)
    packed = cgru.pack_padded_sequence(x_array, lengths, batch_first=bf, enforce_sorted=False)
    out, h_n = module(packed)
    out, _ = cgru.pad_packed_sequence(out, batch_first=bf, total_length=seq_len)
    return out, h_n


# -- the worker loop ------------------------------------------------------------------------------

HANDLERS = {"gru_call": run_gru_call, "vjp": run_vjp, "cell_call": run_cell_call,
            "packing": run_packing, "load_state_dict": run_load_state_dict, "load": run_load,
            "optim": run_optim, "cli": run_cli,
            "cli_subprocess": lambda case, scratch: run_cli(case, scratch, True),
            # the harness's own test: a worker that dies mid-case
            "crash": lambda case, scratch: os.kill(os.getpid(), signal.SIGSEGV)}


def run_case(case, scratch):
    verdict = HANDLERS[case["kind"]](case, scratch)
    outcome = verdict.outcome.kind if verdict.outcome is not None else "?"
    if verdict.problems:
        return ("fail", f"outcome {verdict.outcome!r}:\n  - " + "\n  - ".join(
            verdict.problems))
    return ("pass", outcome)


def _read_message(stream):
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    return stream.read(size)


def _write_message(stream, payload):
    stream.write(struct.pack("<Q", len(payload)) + payload)
    stream.flush()


def main():
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                  # stray prints go to stderr, not into the protocol
    faulthandler.enable(file=sys.stderr, all_threads=True)
    # (attempt() records the warnings of each call; the references' overflow warnings would
    # flood stderr, whose end is what a crash report shows)
    warnings.simplefilter("ignore")
    import cgru  # noqa: F401  (imported before the memory cap)
    import cgru.optim  # noqa: F401
    from cgru import cli  # noqa: F401
    import reference  # noqa: F401
    limit = int(os.environ.get("CGRU_FUZZ_MEMORY_MB", "3072")) << 20
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    scratch = tempfile.mkdtemp(prefix="cgru-fuzz-")
    try:
        while True:
            message = _read_message(requests)
            if message is None:
                break
            case = pickle.loads(message)
            case_dir = tempfile.mkdtemp(dir=scratch)
            try:
                reply = run_case(case, case_dir)
            except BaseException:    # noqa: BLE001 - a harness error is reported, not fatal
                reply = ("fail", "harness error (in tests/fuzz_worker.py, not necessarily in "
                                 "cgru):\n" + traceback.format_exc())
            finally:
                shutil.rmtree(case_dir, ignore_errors=True)
            _write_message(replies, pickle.dumps(reply))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- the parent's side ----------------------------------------------------------------------------

class Runner:
    """Runs cases in a worker process; a dead or hung worker is a failed case, and the next
    case gets a new worker."""

    def __init__(self, timeout=60.0):
        self.timeout = timeout
        self.proc = None
        self.log = None
        self.cases = 0
        self.restarts = 0

    def _start(self):
        self.log = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONFAULTHANDLER="1")
        code = (f"import sys; sys.path.insert(0, {TESTS!r}); import fuzz_worker; "
                "fuzz_worker.main()")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, env=env,
                                     cwd=tempfile.gettempdir())

    def _stderr_tail(self):
        try:
            self.log.seek(0)
            return self.log.read().decode("utf-8", "replace")[-4000:]
        except (OSError, ValueError):
            return ""

    def _kill(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
        self.proc = None

    def run(self, case):
        """("pass", outcome) or ("fail", why) for one case."""
        if self.proc is None or self.proc.poll() is not None:
            self._kill()
            self._start()
            self.restarts += 1
        self.cases += 1
        payload = pickle.dumps(case)
        try:
            self.proc.stdin.write(struct.pack("<Q", len(payload)) + payload)
            self.proc.stdin.flush()
            reply = self._receive()
        except (BrokenPipeError, OSError):
            reply = None
        if reply is None:
            hung = self.proc.poll() is None
            if hung:
                self.proc.send_signal(signal.SIGABRT)   # faulthandler prints the stacks
                time.sleep(0.5)
            self._kill()
            status = self.last_status
            why = (f"the worker hung (no reply in {self.timeout:.0f} s)" if hung else
                   f"the worker died: {status}")
            return ("fail", f"{why}\nworker stderr (end):\n{self._stderr_tail()}")
        return pickle.loads(reply)

    @property
    def last_status(self):
        return self._status

    def _receive(self):
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.timeout
        buf = b""
        need = 8
        size = None
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                self._status = "timeout"
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, max(need - len(buf), 65536))
            if not chunk:
                code = self.proc.wait()
                self._status = (f"killed by signal {signal.Signals(-code).name}"
                                if code < 0 else f"exit status {code}")
                return None
            buf += chunk
            if size is None and len(buf) >= 8:
                (size,) = struct.unpack("<Q", buf[:8])
                need = 8 + size
        return buf[8:need]

    _status = ""

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()


if __name__ == "__main__":
    main()
