"""Fuzzing every public entry point with hostile values (issue #14).

Hypothesis draws cases for GRU.__call__, GRU.vjp and its backward, GRUCell (call and vjp),
QuantizedGRU and QuantizedGRUCell (bfloat16 and int8: call, and `cgru run` of a saved one),
every packing utility, PackedSequence built by hand, load_state_dict (and parameter
assignment), cgru.load on damaged files, the optimizers' step, and `cgru run` on damaged
.npy files: wrong and odd dtypes (object, complex, bool, float16, ints, strings, datetimes,
structured, non-native byte order), 0-d to 5-D shapes, zero sizes, non-contiguous, negative
and zero strides, unaligned data, read-only arrays, matrices, masked arrays, memory maps,
lists, NaN, inf and huge values, huge and negative lengths and batch sizes, inconsistent
packed fields, and non-array values.

Each case runs in a worker process (tests/fuzz_worker.py, which documents the checks): a
crash, an abort or a hang fails that case, with its description and the worker's stderr, and
the next case gets a new worker. A case passes when the outcome is a correct result (checked
against an independent NumPy reference), a ValueError or a TypeError (or the command line's
one-line error), and the caller's arrays are unchanged; input the documentation promises to
accept must give a result.

Profiles
--------
CI (the default): derandomized (the same examples on every run), a fixed number of examples
per entry point (CI_EXAMPLES, about 1,560 cases); 30-50 s in all on two shared cores.

Long run, hours of examples (a new random seed each run, printed on failure; 5000 per entry
point, about 75,000 cases, took 20 minutes on two cores)::

    CGRU_FUZZ_EXAMPLES=200000 CGRU_FUZZ_KEEP_GOING=1 python -m pytest -q tests/test_fuzz.py \
        -p no:cacheprovider --hypothesis-show-statistics

CGRU_FUZZ_EXAMPLES sets the examples per entry point; CGRU_FUZZ_SEED=n repeats a run;
CGRU_FUZZ_KEEP_GOING=1 records every failing case in CGRU_FUZZ_LOG (default
fuzz-failures.log in the current folder) and goes on instead of stopping at the first (each
test still fails at its end if it logged any); CGRU_FUZZ_TIMEOUT (seconds, default 60) is how
long a case may run before the worker counts as hung; CGRU_FUZZ_ONLY=name,... runs only those
entry points.
"""
import os
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fuzz_worker import PS, Arr, Runner, Special  # noqa: E402

LONG = int(os.environ.get("CGRU_FUZZ_EXAMPLES", "0") or 0)
KEEP_GOING = os.environ.get("CGRU_FUZZ_KEEP_GOING") == "1"
LOG = os.environ.get("CGRU_FUZZ_LOG", "fuzz-failures.log")
ONLY = {name for name in os.environ.get("CGRU_FUZZ_ONLY", "").split(",") if name}

# Examples per entry point in CI, sized so the whole file takes about a minute on 2 cores.
CI_EXAMPLES = {"gru_call": 150, "gru_packed": 120, "vjp": 100, "cell": 120,
               "pack_padded_sequence": 80, "pad_packed_sequence": 80, "pack_sequence": 60,
               "pad_sequence": 60, "unpack_sequence": 60, "unpad_sequence": 60,
               "packed_sequence": 60, "load_state_dict": 100, "load": 120, "optim": 100,
               "cli": 60, "cli_subprocess": 4, "quantized_call": 120, "quantized_cell": 80,
               "quantized_cli": 30}


def fuzz_settings(name):
    """The CI or the long profile for one entry point."""
    def decorate(test):
        test = pytest.mark.skipif(bool(ONLY) and name not in ONLY,
                                  reason="CGRU_FUZZ_ONLY")(test)
        common = dict(deadline=None, database=None, print_blob=True,
                      suppress_health_check=list(HealthCheck))
        if LONG:
            examples = LONG if name != "cli_subprocess" else max(4, LONG // 100)
            test = settings(max_examples=examples, **common)(test)
            if os.environ.get("CGRU_FUZZ_SEED"):
                test = seed(int(os.environ["CGRU_FUZZ_SEED"]))(test)
            return test
        return settings(max_examples=CI_EXAMPLES[name], derandomize=True, **common)(test)
    return decorate


# -- running a case -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runner():
    r = Runner(timeout=float(os.environ.get("CGRU_FUZZ_TIMEOUT", "60")))
    yield r
    r.close()


_logged = {}


def check(runner, case, name):
    status, info = runner.run(case)
    if status == "pass":
        event(f"outcome: {info}")
        return
    event("FAILED")
    message = f"fuzz case failed: {info}\ncase: {case!r}"
    if KEEP_GOING:
        with open(LOG, "a") as log:
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {name}\n{message}\n\n")
        _logged[name] = _logged.get(name, 0) + 1
        return
    pytest.fail(message, pytrace=False)


@pytest.fixture
def no_logged_failures(request):
    yield
    name = request.node.name.replace("test_", "", 1)
    if KEEP_GOING and _logged.get(name):
        pytest.fail(f"{_logged[name]} failing {name} cases, logged in {LOG}", pytrace=False)


# -- hostile values -------------------------------------------------------------------------------

GOOD_DTYPES = ["float32", "float64"]
NUMERIC_DTYPES = ["float16", "int8", "int32", "int64", "uint8", "uint64", "bool", "longdouble"]
BAD_DTYPES = ["complex64", "complex128", "object", "<U3", "S3", "datetime64[s]", "V4",
              "struct"]
SPECIAL_FLOATS = [0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e4, -1e4, 1e-40,
                  3e38, 1e300, 0.5, -1.0]

dtypes = st.one_of(st.sampled_from(GOOD_DTYPES), st.sampled_from(GOOD_DTYPES),
                   st.sampled_from(GOOD_DTYPES), st.sampled_from(NUMERIC_DTYPES),
                   st.sampled_from(NUMERIC_DTYPES), st.sampled_from(BAD_DTYPES))


def cast(values, dtype, shape):
    """float64 values as an array of dtype (every dtype above)."""
    v = np.asarray(values, dtype=np.float64).reshape(shape)
    with np.errstate(all="ignore"):
        if dtype == "object":
            return np.array([float(x) for x in v.flat] or [], dtype=object).reshape(shape)
        if dtype in ("<U3", "S3"):
            text = np.array([f"{x:.1f}"[:3] for x in v.flat] or [], dtype="<U3").reshape(shape)
            return text if dtype == "<U3" else text.astype("S3")
        if dtype == "datetime64[s]":
            return np.nan_to_num(v).astype(np.int64).astype("datetime64[s]")
        if dtype == "V4":
            return np.zeros(shape, dtype="V4")
        if dtype == "struct":
            return np.zeros(shape, dtype=[("a", "<f4")])
        if dtype.startswith("complex"):
            return (v + 1j * v[::-1] if v.ndim else v + 0j).astype(dtype)
        if dtype == "bool":
            return v > 0
        if dtype.startswith(("int", "uint")):
            info = np.iinfo(dtype)
            return np.clip(np.nan_to_num(v, posinf=info.max, neginf=info.min),
                           info.min, info.max).astype(dtype)
        return v.astype(dtype)


@st.composite
def base_arrays(draw, shape, dtype=None):
    dtype = dtype or draw(dtypes)
    size = int(np.prod(shape)) if shape else 1
    special = draw(st.integers(0, 4)) == 0
    if size > 48:
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
        values = rng.standard_normal(size)
        if special:
            picks = rng.integers(0, size, size=3)
            values[picks] = rng.choice(SPECIAL_FLOATS, size=3)
    else:
        element = st.sampled_from(SPECIAL_FLOATS) if special else \
            st.floats(-3, 3, allow_nan=False, width=32)
        values = draw(st.lists(element, min_size=size, max_size=size))
    return cast(values, dtype, shape)


@st.composite
def shapes_near(draw, shape):
    """The shape, or one near it: a dimension 0 or off by one, one dimension too few or too
    many, or something else entirely (0-d to 5-D)."""
    choice = draw(st.integers(0, 11))
    shape = list(shape)
    if choice <= 6 or (not shape and choice <= 8):
        return tuple(shape)
    if choice == 7:
        shape[draw(st.integers(0, len(shape) - 1))] = 0
    elif choice == 8:
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = max(0, shape[i] + draw(st.sampled_from([-1, 1, 2])))
    elif choice == 9 and shape:
        del shape[draw(st.integers(0, len(shape) - 1))]
    elif choice == 10:
        shape.insert(draw(st.integers(0, len(shape))), draw(st.sampled_from([1, 2])))
    else:
        shape = draw(st.lists(st.integers(0, 3), max_size=5))
    return tuple(shape)


layout_ops = st.one_of(
    st.just(("F",)), st.tuples(st.just("flip"), st.integers(0, 4)),
    st.tuples(st.just("step"), st.integers(0, 4)),
    st.tuples(st.just("bcast"), st.integers(0, 4), st.sampled_from([2, 3, 2 ** 40])),
    st.just(("readonly",)), st.just(("unaligned",)), st.just(("swap",)))
wraps = st.sampled_from(["ndarray"] * 10 + ["list", "tuple", "matrix", "masked", "subclass",
                                             "memmap"])
NON_ARRAYS = [None, "abc", b"xy", 3, 2.5, True, {"a": 1}, [], (), [[]], np.float32(1.0), 1j,
              Special("object"), Special("generator"), Special("ragged"), Special("set")]


@st.composite
def arrays_like(draw, shape, dtype=None, exact=False):
    """An Arr recipe meant to have this shape (perhaps not: exact=False)."""
    shape = shape if exact else draw(shapes_near(shape))
    ops = draw(st.lists(layout_ops, max_size=3)) if draw(st.integers(0, 2)) == 0 else []
    return Arr(draw(base_arrays(shape, dtype)), ops, draw(wraps))


def hostile(shape, dtype=None):
    """Mostly arrays near the shape, sometimes anything but an array."""
    return st.one_of(arrays_like(shape, dtype), arrays_like(shape, dtype),
                     arrays_like(shape, dtype), arrays_like(shape, dtype),
                     arrays_like(shape, dtype), arrays_like(shape, dtype),
                     st.sampled_from(NON_ARRAYS))


def maybe(strategy, none_weight=1):
    return st.one_of(*([st.none()] * none_weight), strategy)


# -- index vectors: lengths, batch sizes, permutations --------------------------------------------

INT_DTYPES = ["int64", "int64", "int32", "uint8", "int16", "uint64"]


@st.composite
def int_vectors(draw, values):
    """Good integer values as a list or an array of some int dtype (in its range)."""
    form = draw(st.sampled_from(["array"] * 4 + ["list", "tuple"]))
    if form == "list":
        return list(values)
    if form == "tuple":
        return tuple(values)
    dtype = draw(st.sampled_from(INT_DTYPES))
    info = np.iinfo(dtype)
    if min(values, default=0) < info.min or max(values, default=0) > info.max:
        dtype = "int64"
    return Arr(np.array(values, dtype=dtype).reshape(len(values)), [], "ndarray")


@st.composite
def broken_int_vectors(draw, values, upper):
    """Integer vectors gone wrong: other values, dtypes and shapes."""
    values = list(values)
    kind = draw(st.sampled_from(["swap", "inc", "zero", "neg", "huge", "overflow", "float",
                                 "bool", "2d", "empty", "uint64", "object", "drop", "append",
                                 "dup", "scalar", "str", "none_inside", "bigint", "range"]))
    if kind == "swap" and len(values) > 1:
        values[0], values[-1] = values[-1], values[0]
    elif kind == "inc" and values:
        values[draw(st.integers(0, len(values) - 1))] += 1
    elif kind == "zero" and values:
        values[draw(st.integers(0, len(values) - 1))] = 0
    elif kind == "neg" and values:
        values[draw(st.integers(0, len(values) - 1))] = -1
    elif kind == "huge" and values:
        values[0] = draw(st.sampled_from([2 ** 31, 2 ** 40, 2 ** 62, 2 ** 63 - 1]))
    elif kind == "overflow":
        return Arr(np.array([2 ** 63 - 1, 2 ** 63 - 1, 2], dtype=np.int64))
    elif kind == "float":
        return Arr(np.array(values, dtype=np.float64).reshape(len(values)),
                   [], draw(st.sampled_from(["ndarray", "list"])))
    elif kind == "bool":
        return Arr(np.array(values, dtype=bool).reshape(len(values)))
    elif kind == "2d":
        return Arr(np.array(values, dtype=np.int64).reshape(1, len(values)))
    elif kind == "empty":
        return Arr(np.zeros(0, dtype=draw(st.sampled_from(["int64", "float64"]))))
    elif kind == "uint64":
        return Arr(np.array([2 ** 64 - 1] + values[1:], dtype=np.uint64))
    elif kind == "object":
        return Arr(np.array(values + [None], dtype=object)[:len(values)])
    elif kind == "drop" and values:
        values = values[:-1]
    elif kind == "append":
        values = values + [1]
    elif kind == "dup" and len(values) > 1:
        values[1] = values[0]
    elif kind == "scalar":
        return draw(st.sampled_from([values[0] if values else 1, np.int64(1), 2.0, None,
                                     "1", {"a": 1}]))
    elif kind == "str":
        return [str(x) for x in values]
    elif kind == "none_inside":
        return values[:-1] + [None] if values else [None]
    elif kind == "bigint":
        return [2 ** 70] + values[1:]
    elif kind == "range":
        values = [x + upper for x in values]
    return draw(int_vectors(values))


@st.composite
def packings(draw, max_batch=5, max_len=5):
    """A valid packing: (lengths in caller order, batch_sizes, sorted_indices or None)."""
    batch = draw(st.integers(1, max_batch))
    lengths = draw(st.lists(st.integers(1, max_len), min_size=batch, max_size=batch))
    if draw(st.booleans()):
        lengths.sort(reverse=True)
        order = None
    else:
        order = sorted(range(batch), key=lambda b: -lengths[b])     # stable, as cgru
        if draw(st.booleans()):        # any order that keeps lengths non-increasing
            order = draw(st.permutations(range(batch)))
            order = sorted(order, key=lambda b: -lengths[b])
    by_rank = sorted(lengths, reverse=True)
    batch_sizes = [sum(n > t for n in by_rank) for t in range(by_rank[0])]
    return lengths, batch_sizes, order


@st.composite
def packed_recipes(draw, width, dtype=None, trailing=None):
    """A PackedSequence built by hand, consistent or not; returns (PS, packing)."""
    lengths, batch_sizes, order = draw(packings())
    rows = sum(lengths)
    shape = (rows, width) if trailing is None else (rows,) + trailing
    data = draw(st.one_of(arrays_like(shape, dtype), arrays_like(shape, dtype),
                          arrays_like(shape, dtype, exact=True), st.sampled_from(NON_ARRAYS)))
    broken = draw(st.integers(0, 3)) == 0
    bs = draw(broken_int_vectors(batch_sizes, rows)) if broken else \
        draw(int_vectors(batch_sizes))
    batch = len(lengths)
    if order is None:
        sorted_indices = draw(st.one_of(st.none(), st.none(), st.none(),
                                        int_vectors(list(range(batch))),
                                        broken_int_vectors(list(range(batch)), batch)))
    else:
        sorted_indices = draw(st.one_of(int_vectors(order), int_vectors(order),
                                        int_vectors(order),
                                        broken_int_vectors(order, batch)))
    inverse = list(np.argsort(order)) if order is not None else list(range(batch))
    inverse = [int(i) for i in inverse]
    unsorted = draw(st.one_of(st.just(PS.OMIT), st.just(PS.OMIT), st.none(),
                              int_vectors(inverse), broken_int_vectors(inverse, batch)))
    return PS(data, bs, sorted_indices, unsorted), (lengths, batch_sizes, order)


# -- modules --------------------------------------------------------------------------------------

def gru_configs(small=False):
    sizes = [1, 2, 3] if small else [1, 2, 3, 4, 16, 17]
    return st.fixed_dictionaries({
        "input_size": st.sampled_from([1, 2, 3, 5]), "hidden_size": st.sampled_from(sizes),
        "num_layers": st.integers(1, 2), "bias": st.booleans(), "batch_first": st.booleans(),
        "bidirectional": st.booleans(), "dtype": st.sampled_from(GOOD_DTYPES),
        "seed": st.integers(0, 2 ** 16)})


def cell_configs():
    return st.fixed_dictionaries({
        "input_size": st.sampled_from([1, 2, 3, 5]),
        "hidden_size": st.sampled_from([1, 2, 3, 4, 16, 17]), "bias": st.booleans(),
        "dtype": st.sampled_from(GOOD_DTYPES), "seed": st.integers(0, 2 ** 16),
        "cell": st.just(True)})


def param_shapes(config):
    """The state_dict shapes of a module config (cgru's naming, PyTorch's)."""
    h, i = config["hidden_size"], config["input_size"]
    if config.get("cell"):
        shapes = {"weight_ih": (3 * h, i), "weight_hh": (3 * h, h)}
        if config["bias"]:
            shapes.update(bias_ih=(3 * h,), bias_hh=(3 * h,))
        return shapes
    d = 2 if config["bidirectional"] else 1
    shapes = {}
    for layer in range(config["num_layers"]):
        for direction in range(d):
            sfx = f"_l{layer}" + ("_reverse" if direction else "")
            shapes[f"weight_ih{sfx}"] = (3 * h, i if layer == 0 else d * h)
            shapes[f"weight_hh{sfx}"] = (3 * h, h)
            if config["bias"]:
                shapes[f"bias_ih{sfx}"] = (3 * h,)
                shapes[f"bias_hh{sfx}"] = (3 * h,)
    return shapes


def state_shape(config, batch, batched=True):
    layers = (2 if config["bidirectional"] else 1) * config["num_layers"]
    return (layers, batch, config["hidden_size"]) if batched else \
        (layers, config["hidden_size"])


threads = st.sampled_from([None, None, None, 1, 2])


@st.composite
def dense_gru_args(draw, config):
    seq_len = draw(st.integers(1, 5))
    batch = draw(st.sampled_from([1, 2, 3, 8, 9]))
    batched = draw(st.integers(0, 4)) > 0
    i = config["input_size"]
    if batched:
        shape = (batch, seq_len, i) if config["batch_first"] else (seq_len, batch, i)
    else:
        shape = (seq_len, i)
    x = draw(hostile(shape))
    hx = draw(maybe(hostile(state_shape(config, batch, batched))))
    return x, hx, shape, batch, batched


@st.composite
def gru_call_cases(draw):
    config = draw(gru_configs())
    if draw(st.integers(0, 7)) == 0:
        config["train"] = True               # dropout 0.5 between layers
    x, hx, _, _, _ = draw(dense_gru_args(config))
    return {"kind": "gru_call", "module": config, "input": x, "hx": hx,
            "threads": draw(threads)}


@st.composite
def gru_packed_cases(draw):
    config = draw(gru_configs())
    if draw(st.integers(0, 7)) == 0:
        config["train"] = True
    packed, (lengths, _, _) = draw(packed_recipes(config["input_size"]))
    hx = draw(maybe(hostile(state_shape(config, len(lengths)))))
    return {"kind": "gru_call", "module": config, "input": packed, "hx": hx,
            "threads": draw(threads)}


@st.composite
def vjp_cases(draw):
    flavour = draw(st.sampled_from(["dense", "dense", "packed", "cell"]))
    if flavour == "cell":
        config = draw(cell_configs())
        batch = draw(st.sampled_from([1, 2, 3, 8]))
        batched = draw(st.integers(0, 4)) > 0
        i, h = config["input_size"], config["hidden_size"]
        x = draw(hostile((batch, i) if batched else (i,)))
        h_shape = (batch, h) if batched else (h,)
        hx = draw(maybe(hostile(h_shape)))
        grad = draw(maybe(hostile(h_shape)))
        return {"kind": "vjp", "module": config, "input": x, "hx": hx, "grad_output": grad}
    config = draw(gru_configs(small=True))
    dh = (2 if config["bidirectional"] else 1) * config["hidden_size"]
    if flavour == "dense":
        x, hx, shape, batch, batched = draw(dense_gru_args(config))
        grad_output = draw(maybe(hostile(shape[:-1] + (dh,))))
        grad_h_n = draw(maybe(hostile(state_shape(config, batch, batched))))
    else:
        x, (lengths, batch_sizes, order) = draw(packed_recipes(config["input_size"]))
        batch = len(lengths)
        hx = draw(maybe(hostile(state_shape(config, batch))))
        rows = sum(lengths)
        grad_kind = draw(st.sampled_from(["none", "array", "same", "same", "other"]))
        if grad_kind == "none":
            grad_output = None
        elif grad_kind == "array":
            grad_output = draw(hostile((rows, dh)))
        elif grad_kind == "same":
            grad_output = PS(draw(arrays_like((rows, dh))), draw(int_vectors(batch_sizes)),
                             None if order is None else draw(int_vectors(order)))
        else:
            grad_output, _ = draw(packed_recipes(dh))
        grad_h_n = draw(maybe(hostile(state_shape(config, batch))))
    return {"kind": "vjp", "module": config, "input": x, "hx": hx,
            "grad_output": grad_output, "grad_h_n": grad_h_n, "threads": draw(threads)}


@st.composite
def cell_cases(draw):
    config = draw(cell_configs())
    batch = draw(st.sampled_from([1, 2, 3, 8, 9]))
    batched = draw(st.integers(0, 4)) > 0
    i, h = config["input_size"], config["hidden_size"]
    x = draw(hostile((batch, i) if batched else (i,)))
    hx = draw(maybe(hostile((batch, h) if batched else (h,))))
    return {"kind": "cell_call", "module": config, "input": x, "hx": hx}


precisions = st.sampled_from(["bfloat16", "int8"])


@st.composite
def quantized_call_cases(draw):
    """gru.quantize(precision) called like the GRU: dense or packed input, hx, threads; made
    from a GRU in training mode now and then (the quantized module applies no dropout)."""
    config = draw(gru_configs())
    config["precision"] = draw(precisions)
    if draw(st.integers(0, 7)) == 0:
        config["train"] = True
    if draw(st.booleans()):
        x, hx, _, _, _ = draw(dense_gru_args(config))
    else:
        x, (lengths, _, _) = draw(packed_recipes(config["input_size"]))
        hx = draw(maybe(hostile(state_shape(config, len(lengths)))))
    return {"kind": "gru_call", "module": config, "input": x, "hx": hx,
            "threads": draw(threads)}


@st.composite
def quantized_cell_cases(draw):
    case = draw(cell_cases())
    case["module"]["precision"] = draw(precisions)
    return case


# -- packing utilities ----------------------------------------------------------------------------

any_dtypes = st.one_of(dtypes, st.sampled_from(["complex64", "bool", "int8"]))
trailing_shapes = st.sampled_from([(), (2,), (1, 3), (0,)])
PADDING_VALUES = [0.0, -1, 1.5, float("nan"), float("inf"), 10 ** 400, 1000, "x", None, 1j,
                  True, np.float32(2.0), [1.0]]
padding_values = st.one_of(st.just(0.0), st.just(-1.0), st.sampled_from(PADDING_VALUES))


@st.composite
def pack_padded_cases(draw):
    lengths, _, _ = draw(packings())
    seq_len = max(lengths) + draw(st.integers(0, 2))
    batch_first = draw(st.booleans())
    trailing = draw(trailing_shapes)
    shape = ((len(lengths), seq_len) if batch_first else (seq_len, len(lengths))) + trailing
    padded = draw(hostile(shape, draw(any_dtypes)))
    enforce = draw(st.booleans())
    if enforce and draw(st.integers(0, 3)) > 0:
        lengths = sorted(lengths, reverse=True)
    lengths_arg = draw(st.one_of(int_vectors(lengths), int_vectors(lengths),
                                 broken_int_vectors(lengths, seq_len)))
    return {"kind": "packing", "fn": "pack_padded_sequence", "args": [padded, lengths_arg],
            "kwargs": {"batch_first": batch_first, "enforce_sorted": enforce}}


@st.composite
def pad_packed_cases(draw):
    trailing = draw(trailing_shapes)
    packed, (lengths, _, _) = draw(packed_recipes(None, draw(any_dtypes), trailing))
    max_len = max(lengths)
    total = draw(st.sampled_from([None, None, max_len, max_len + 2, max_len - 1, 0, -1, 2.5,
                                  True, 2 ** 40, 2 ** 62, "3", np.int64(max_len)]))
    kwargs = {"batch_first": draw(st.booleans()), "padding_value": draw(padding_values)}
    if total is not None:
        kwargs["total_length"] = total
    return {"kind": "packing", "fn": "pad_packed_sequence", "args": [packed], "kwargs": kwargs}


@st.composite
def sequence_lists(draw, min_length):
    trailing = draw(trailing_shapes)
    dtype = draw(any_dtypes)
    n = draw(st.integers(1, 4))
    lengths = draw(st.lists(st.integers(min_length, 4), min_size=n, max_size=n))
    seqs = [draw(st.one_of(*[arrays_like((length,) + trailing, dtype)] * 8,
                           st.sampled_from(NON_ARRAYS)))
            for length in lengths]
    form = draw(st.sampled_from(["list"] * 6 + ["tuple", "empty", "generator", "array",
                                                "string", "dict"]))
    if form == "tuple":
        return tuple(seqs), lengths
    if form == "empty":
        return [], lengths
    if form == "generator":
        return Special("generator"), lengths
    if form == "array":
        return Arr(np.zeros((n, 2), np.float32)), lengths
    if form == "string":
        return "abc", lengths
    if form == "dict":
        return {"a": seqs[0]}, lengths
    return seqs, lengths


@st.composite
def pack_sequence_cases(draw):
    seqs, _ = draw(sequence_lists(0))
    return {"kind": "packing", "fn": "pack_sequence", "args": [seqs],
            "kwargs": {"enforce_sorted": draw(st.booleans())}}


@st.composite
def pad_sequence_cases(draw):
    seqs, _ = draw(sequence_lists(0))
    return {"kind": "packing", "fn": "pad_sequence", "args": [seqs],
            "kwargs": {"batch_first": draw(st.booleans()),
                       "padding_value": draw(padding_values),
                       "padding_side": draw(st.sampled_from(["right", "left", "right",
                                                             "middle", None]))}}


@st.composite
def unpack_sequence_cases(draw):
    trailing = draw(trailing_shapes)
    packed, _ = draw(packed_recipes(None, draw(any_dtypes), trailing))
    return {"kind": "packing", "fn": "unpack_sequence", "args": [packed]}


@st.composite
def unpad_sequence_cases(draw):
    lengths, _, _ = draw(packings())
    seq_len = max(lengths) + draw(st.integers(0, 2))
    batch_first = draw(st.booleans())
    trailing = draw(trailing_shapes)
    shape = ((len(lengths), seq_len) if batch_first else (seq_len, len(lengths))) + trailing
    padded = draw(hostile(shape, draw(any_dtypes)))
    lengths_arg = draw(st.one_of(int_vectors(lengths), int_vectors(lengths),
                                 broken_int_vectors(lengths, seq_len)))
    return {"kind": "packing", "fn": "unpad_sequence", "args": [padded, lengths_arg],
            "kwargs": {"batch_first": batch_first}}


@st.composite
def packed_sequence_cases(draw):
    """PackedSequence built by hand, then read by the three functions that take one."""
    trailing = draw(trailing_shapes)
    packed, _ = draw(packed_recipes(None, draw(any_dtypes), trailing))
    fn = draw(st.sampled_from(["pad_packed_sequence", "unpack_sequence"]))
    return {"kind": "packing", "fn": fn, "args": [packed]}


# -- load_state_dict ------------------------------------------------------------------------------

EXTRA_KEYS = ["extra", "weight_ih_l5", 3, "bias_ih_l0_reverse", "weight_ih", "", "hx"]


@st.composite
def load_state_dict_cases(draw):
    config = draw(st.one_of(gru_configs(small=True), cell_configs()))
    shapes = param_shapes(config)
    mapping = {}
    for key, shape in shapes.items():
        choice = draw(st.integers(0, 9))
        if choice == 0:
            continue                                      # missing
        if choice <= 6:
            mapping[key] = draw(arrays_like(shape, exact=True))
        else:
            mapping[key] = draw(hostile(shape))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        mapping[draw(st.sampled_from(EXTRA_KEYS))] = draw(hostile((3,)))
    return {"kind": "load_state_dict", "module": config, "mapping": mapping,
            "strict": draw(st.booleans()),
            "mapping_type": draw(st.sampled_from(["dict"] * 8 + ["proxy", "items"])),
            "via": draw(st.sampled_from(["load"] * 6 + ["setattr"]))}


# -- cgru.load on damaged files -------------------------------------------------------------------

JSON_TEXTS = ["[]", "1", "null", '"cgru"', '{"format": "cgru"}', "{", "NaN", "",
              '{"format": "cgru", "version": 1, "class": "GRU", "config": []}',
              '{"format": "cgru", "version": 1, "class": "GRU", "config": {}}',
              '{"format": "cgru", "version": 1, "class": "GRUCell", "config": '
              '{"input_size": 1, "hidden_size": 1}}', "\ud800"]
CONFIG_KEYS = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
               "bidirectional", "dtype", "unknown_key", "format", "version", "class"]
CONFIG_VALUES = [0, -1, 10 ** 9, 10 ** 12, 2.5, True, False, None, "x", [], {}, "float16",
                 "float64", "float32", 1, 2, 3, float("inf"), float("nan"), "__delete__",
                 "GRUCell", "GRU", 0.5]
DESCRS = ["'<f4'", "'<f8'", "'|b1'", "'<i8'", "'|O'", "'<U3'", "'|V0'", "'|V4'",
          "[('a', '<f4')]", "'<c8'", "'>f4'", "'<f2'", "'x'", "42", "None", "'<M8[s]'"]
FORTRANS = ["False", "True", "1", "'no'"]
SHAPES = ["()", "(6,)", "(-1,)", "(4611686018427387904,)", "(0,)", "(2.5,)", "[3]", "(3",
          "(1000000000000, 1000000000000)", "(2, 1000000000)"]

member_mutations = st.one_of(
    st.just(("remove",)), st.tuples(st.just("json"), st.sampled_from(JSON_TEXTS)),
    st.tuples(st.just("config"), st.sampled_from(CONFIG_KEYS), st.sampled_from(CONFIG_VALUES)),
    st.tuples(st.just("config"), st.sampled_from(CONFIG_KEYS), st.sampled_from(CONFIG_VALUES)),
    st.tuples(st.just("deep_json"), st.sampled_from([100, 10 ** 5])),
    st.just(("object",)),
    st.tuples(st.just("astype"), st.sampled_from(["float16", "int32", "bool", "complex64",
                                                  "<U3", "float64", "uint64", ">f4"])),
    st.tuples(st.just("reshape"), st.sampled_from(["flat", "extra"])),
    st.tuples(st.just("values"), st.sampled_from([float("nan"), float("inf"), 1e30])),
    st.tuples(st.just("header"), st.one_of(st.none(), st.sampled_from(DESCRS)),
              st.one_of(st.none(), st.sampled_from(FORTRANS)),
              st.one_of(st.none(), st.sampled_from(SHAPES))),
    st.tuples(st.just("data"), st.sampled_from([-1, -4, -100, 1, 64])),
    st.tuples(st.just("bytes"), st.sampled_from([b"", b"junk", b"\x93NUMPY", b"PK\x03\x04"])))

file_mutations = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("extend"), st.sampled_from([b"\0", b"PK\x05\x06" + b"\0" * 18, b"x" * 100])),
    st.tuples(st.just("overwrite"), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("replace_file"), st.sampled_from([b"", b"junk", b"npy",
                                                        b"PK\x05\x06" + b"\0" * 18])),
    st.tuples(st.just("member"), st.integers(-1, 8), member_mutations),
    st.tuples(st.just("member"), st.integers(-1, 8), member_mutations),
    st.tuples(st.just("member"), st.integers(-1, 8), member_mutations),
    st.tuples(st.just("add_member"), st.sampled_from(["extra.npy", "weight_ih_l9.npy", "raw",
                                                      "__cgru__.npy"]),
              st.sampled_from([b"junk", 1.0, "text"])),
    st.tuples(st.just("rename"), st.integers(0, 8), st.sampled_from(
        ["weight_ih_l1.npy", "x.npy", "noext", "__cgru__.npy", "../up.npy"])),
    st.tuples(st.just("duplicate"), st.integers(0, 8)),
    st.just(("deflate",)))


@st.composite
def load_cases(draw):
    config = draw(st.one_of(gru_configs(small=True), cell_configs()))
    mutations = draw(st.lists(file_mutations, min_size=0, max_size=3))
    if draw(st.booleans()) and mutations and mutations[-1] == ("deflate",):
        mutations.append(("flip", draw(st.floats(0.1, 0.9)), draw(st.integers(0, 7))))
    return {"kind": "load", "module": config, "mutations": mutations,
            "seed": draw(st.integers(0, 1000))}


# -- the optimizers' step -------------------------------------------------------------------------

HOSTILE_HYPER = [-1.0, float("nan"), float("inf"), "x", None, True, np.float32(0.1),
                 (0.9,), (1.0, 0.5), (0.5, "a"), [0.9, 0.99], 1e308, -0.0, np.array(0.1),
                 (float("nan"), 0.9), 0, 10 ** 400]
HYPER_NAMES = {"SGD": ["lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"],
               "Adam": ["lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"]}


@st.composite
def hyperparameters(draw, name):
    if name == "SGD":
        momentum = draw(st.sampled_from([0.0, 0.0, 0.9, 0.5]))
        nesterov = momentum > 0 and draw(st.booleans())
        return {"lr": draw(st.sampled_from([0.1, 0.01, 0.0, 1.0])), "momentum": momentum,
                "dampening": 0.0 if nesterov else draw(st.sampled_from([0.0, 0.1])),
                "weight_decay": draw(st.sampled_from([0.0, 0.01])), "nesterov": nesterov,
                "maximize": draw(st.booleans())}
    return {"lr": draw(st.sampled_from([1e-3, 0.1, 0.0])),
            "betas": draw(st.sampled_from([(0.9, 0.999), (0.0, 0.5), [0.8, 0.9]])),
            "eps": draw(st.sampled_from([1e-8, 1e-3, 0.0])),
            "weight_decay": draw(st.sampled_from([0.0, 0.01])),
            "amsgrad": draw(st.booleans()), "maximize": draw(st.booleans())}


@st.composite
def gradient_dicts(draw, shapes, module, clean=False):
    grads = {}
    for key, shape in shapes.items():
        choice = draw(st.integers(1, 11)) if clean else draw(st.integers(0, 15))
        if choice == 0:
            continue
        if choice <= 11:
            if shape == () and draw(st.booleans()):
                grads[key] = draw(st.floats(-3, 3, width=32))
            else:
                grads[key] = draw(arrays_like(shape, exact=True,
                                              dtype=draw(st.sampled_from(
                                                  GOOD_DTYPES * 4 + NUMERIC_DTYPES))))
        else:
            grads[key] = draw(hostile(shape))
    if not clean and draw(st.integers(0, 5)) == 0:
        grads[draw(st.sampled_from(["bogus", "input", "hx", 7]))] = draw(hostile((2,)))
    return grads


@st.composite
def optim_cases(draw):
    entries, shapes = [], []
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            config = draw(st.one_of(gru_configs(small=True), cell_configs()))
            entries.append(("module", config))
            shapes.append((param_shapes(config), True))
        else:
            arrays = {}
            for name in draw(st.lists(st.sampled_from(["w", "b", "s", "e", "m"]), min_size=1,
                                      max_size=3, unique=True)):
                shape = {"w": (2, 3), "b": (3,), "s": (), "e": (0,), "m": (1, 1, 2)}[name]
                arrays[name] = Arr(draw(base_arrays(shape, draw(st.sampled_from(
                    GOOD_DTYPES)))).copy())
            entries.append(("dict", arrays))
            shapes.append(({k: a.base.shape for k, a in arrays.items()}, False))
    name = draw(st.sampled_from(["SGD", "Adam", "AdamW"]))
    hyper = draw(hyperparameters(name))
    edits = {}
    clean = draw(st.booleans())         # every gradient and hyperparameter valid
    if not clean and draw(st.integers(0, 2)) == 0:
        key = draw(st.sampled_from(HYPER_NAMES["SGD" if name == "SGD" else "Adam"]
                                   + ["unknown"]))
        value = draw(st.sampled_from(HOSTILE_HYPER))
        if draw(st.booleans()) and key != "unknown":
            hyper[key] = value
        else:
            edits[key] = value
    single = len(entries) == 1 and draw(st.booleans())
    steps = []
    for _ in range(draw(st.integers(1, 2))):
        grads = [draw(gradient_dicts(s, module, clean)) for s, module in shapes]
        form = draw(st.integers(4, 12)) if clean else draw(st.integers(0, 12))
        if form == 0:
            grads = grads[:-1]
        elif form == 1:
            grads = grads + [{}]
        elif form == 2:
            grads = tuple(grads)
        elif form == 3:
            grads = draw(st.sampled_from([None, "abc", Special("generator"), 3]))
        elif form == 4 or single:
            grads = grads[0] if len(grads) == 1 else grads
        steps.append(grads)
    return {"kind": "optim", "params": entries, "single": single, "optimizer": name,
            "hyper": hyper, "group_edits": edits, "grads": steps}


# -- cgru run -------------------------------------------------------------------------------------

@st.composite
def npy_specs(draw, shape, dtypes_=None):
    kind = draw(st.sampled_from(["array"] * 6 + ["raw", "raw", "cut", "object", "bytes",
                                                 "npz"]))
    if kind == "array":
        return {"kind": "array", "shape": list(draw(shapes_near(shape))),
                "dtype": draw(dtypes_ if dtypes_ is not None else st.sampled_from(
                    ["float32"] * 4 + ["float64", "float16", "int32", "uint8", "bool",
                                       ">f4", "complex64", "<U3"])),
                "fortran": draw(st.booleans()), "scale": draw(st.sampled_from([1.0, 1.0,
                                                                               1e30]))}
    if kind == "raw":
        if draw(st.integers(0, 4)) == 0:
            return {"kind": "raw", "header": draw(st.sampled_from(
                ["", "garbage", "{'descr': '<f4'}", "{}", "{'descr': '<f4', 'fortran_order': "
                 "False, 'shape': (2, 1, 3), 'x': 1}", "(" * 300, "[" * 5000 + "]" * 5000])),
                "version": draw(st.sampled_from([(1, 0), (2, 0), (3, 0), (9, 9)]))}
        return {"kind": "raw", "descr": draw(st.sampled_from(DESCRS)),
                "fortran": draw(st.sampled_from(FORTRANS)),
                "shape": draw(st.sampled_from([repr(tuple(shape))] * 3 + SHAPES + [
                    "(2, 1, 3, 1)", "(0, 1, 3)", "(1000000000000, 1, 3)"])),
                "nbytes": draw(st.sampled_from([0, 6, 24, 48, 100, 4 * int(np.prod(shape))])),
                "version": draw(st.sampled_from([(1, 0), (1, 0), (2, 0), (3, 0), (9, 9)]))}
    if kind == "cut":
        return {"kind": "cut", "of": {"kind": "array", "shape": list(shape),
                                      "dtype": "float32"},
                "cut": draw(st.sampled_from([-1, -5, -60, -1000, 1, 100]))}
    if kind == "bytes":
        return {"kind": "bytes", "bytes": draw(st.sampled_from(
            [b"", b"junk", b"\x93NUMPY", b"\x93NUMPY\x01\x00", b"\x80\x04K\x01."]))}
    return {"kind": kind}


@st.composite
def cli_cases(draw, kind="cli", quantized=False):
    """`cgru run` cases; quantized: the saved model is a QuantizedGRU or QuantizedGRUCell."""
    case = draw(_cli_cases(kind))
    if quantized:
        case["module"]["precision"] = draw(precisions)
    return case


@st.composite
def _cli_cases(draw, kind):
    config = draw(st.one_of(*[gru_configs(small=True)] * 8, cell_configs()))
    config.pop("batch_first", None)
    if config.get("cell"):
        config.pop("cell")
        config = dict(config, cell=True)
    seq_len, batch = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    batch_first = draw(st.booleans())
    i = config["input_size"]
    shape = (batch, seq_len, i) if batch_first else (seq_len, batch, i)
    if draw(st.booleans()):              # a clean run: its output is checked
        config.pop("cell", None)
        case = {"kind": kind, "module": dict(draw(gru_configs(small=True)), input_size=i),
                "input": {"kind": "array", "shape": list(shape),
                          "dtype": draw(st.sampled_from(["float32", "float64", "float16",
                                                         ">f4", "int8"])),
                          "fortran": draw(st.booleans())},
                "batch_first": batch_first, "hidden_out": draw(st.booleans()),
                "batch_size": draw(st.sampled_from([None, 1, 2, 3, 10 ** 12])),
                "threads": draw(st.sampled_from([None, 1, 2, -1, 10 ** 6])),
                "quiet": draw(st.booleans()), "seed": draw(st.integers(0, 1000))}
        case["module"].pop("batch_first")
        if draw(st.booleans()):
            case["lengths"] = {"kind": "array", "shape": [batch], "dtype": draw(
                st.sampled_from(["int64", "int32", "uint8"])), "values": draw(
                st.lists(st.integers(1, seq_len), min_size=batch, max_size=batch))}
        return case
    case = {"kind": kind, "module": config, "input": draw(npy_specs(shape)),
            "batch_first": batch_first, "hidden_out": draw(st.booleans()),
            "model_damage": draw(st.integers(0, 9)) == 0,
            "batch_size": draw(st.sampled_from([None, None, 1, 2, 3, 0, -1, 10 ** 12])),
            "threads": draw(st.sampled_from([None, None, 1, 2, -1, 0, -100, 10 ** 6])),
            "quiet": draw(st.booleans()), "seed": draw(st.integers(0, 1000))}
    if draw(st.booleans()):
        lengths = draw(st.lists(st.integers(1, seq_len), min_size=batch, max_size=batch))
        if draw(st.integers(0, 2)) == 0:
            case["lengths"] = draw(npy_specs((batch,), st.sampled_from(
                ["int64", "int32", "uint8", "float64", "bool", "int8"])))
        else:
            case["lengths"] = {"kind": "array", "shape": [batch], "dtype": "int64",
                               "values": lengths}
    return case


# -- the tests: one per entry point ---------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("no_logged_failures")


@fuzz_settings("gru_call")
@given(case=gru_call_cases())
def test_gru_call(runner, case):
    check(runner, case, "gru_call")


@fuzz_settings("gru_packed")
@given(case=gru_packed_cases())
def test_gru_packed(runner, case):
    check(runner, case, "gru_packed")


@fuzz_settings("vjp")
@given(case=vjp_cases())
def test_vjp(runner, case):
    check(runner, case, "vjp")


@fuzz_settings("cell")
@given(case=cell_cases())
def test_cell(runner, case):
    check(runner, case, "cell")


@fuzz_settings("quantized_call")
@given(case=quantized_call_cases())
def test_quantized_call(runner, case):
    check(runner, case, "quantized_call")


@fuzz_settings("quantized_cell")
@given(case=quantized_cell_cases())
def test_quantized_cell(runner, case):
    check(runner, case, "quantized_cell")


@fuzz_settings("pack_padded_sequence")
@given(case=pack_padded_cases())
def test_pack_padded_sequence(runner, case):
    check(runner, case, "pack_padded_sequence")


@fuzz_settings("pad_packed_sequence")
@given(case=pad_packed_cases())
def test_pad_packed_sequence(runner, case):
    check(runner, case, "pad_packed_sequence")


@fuzz_settings("pack_sequence")
@given(case=pack_sequence_cases())
def test_pack_sequence(runner, case):
    check(runner, case, "pack_sequence")


@fuzz_settings("pad_sequence")
@given(case=pad_sequence_cases())
def test_pad_sequence(runner, case):
    check(runner, case, "pad_sequence")


@fuzz_settings("unpack_sequence")
@given(case=unpack_sequence_cases())
def test_unpack_sequence(runner, case):
    check(runner, case, "unpack_sequence")


@fuzz_settings("unpad_sequence")
@given(case=unpad_sequence_cases())
def test_unpad_sequence(runner, case):
    check(runner, case, "unpad_sequence")


@fuzz_settings("packed_sequence")
@given(case=packed_sequence_cases())
def test_packed_sequence(runner, case):
    check(runner, case, "packed_sequence")


@fuzz_settings("load_state_dict")
@given(case=load_state_dict_cases())
def test_load_state_dict(runner, case):
    check(runner, case, "load_state_dict")


@fuzz_settings("load")
@given(case=load_cases())
def test_load(runner, case):
    check(runner, case, "load")


@fuzz_settings("optim")
@given(case=optim_cases())
def test_optim(runner, case):
    check(runner, case, "optim")


@fuzz_settings("cli")
@given(case=cli_cases())
def test_cli(runner, case):
    check(runner, case, "cli")


@fuzz_settings("cli_subprocess")
@given(case=cli_cases("cli_subprocess"))
def test_cli_subprocess(runner, case):
    """A few cases through the real `python -m cgru run` (the rest call cli.main in the
    worker, the same code without an interpreter's start-up per case)."""
    check(runner, case, "cli_subprocess")


@fuzz_settings("quantized_cli")
@given(case=cli_cases(quantized=True))
def test_quantized_cli(runner, case):
    check(runner, case, "quantized_cli")


@pytest.mark.parametrize("where", ["constructor", "setter", "step"])
def test_optimizer_hyperparameter_too_large_for_a_float(where):
    """Found by test_optim: lr=10**400 (a real number, but no float) raised OverflowError; it is
    a ValueError or TypeError like the other bad hyperparameters (fixed in 23983ed)."""
    import cgru.optim
    params = {"w": np.zeros(3)}
    with pytest.raises((ValueError, TypeError)):
        if where == "constructor":
            cgru.optim.SGD(params, lr=10 ** 400)
        opt = cgru.optim.Adam(params)
        if where == "setter":
            opt.lr = 10 ** 400
        opt.param_groups[0]["eps"] = 10 ** 400
        opt.step({"w": np.ones(3)})


def test_a_crash_is_a_failed_case_and_the_run_goes_on(runner):
    """The harness itself: a worker killed mid-case is reported, and the next case runs."""
    status, info = runner.run({"kind": "crash"})
    assert status == "fail" and "died" in info and "SIGSEGV" in info
    status, info = runner.run({"kind": "gru_call", "module": {
        "input_size": 2, "hidden_size": 3, "num_layers": 1, "bias": True,
        "batch_first": False, "bidirectional": False, "dtype": "float32", "seed": 0},
        "input": Arr(np.zeros((2, 1, 2), np.float32)), "hx": None})
    assert status == "pass", info
