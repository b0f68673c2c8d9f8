"""The scikit-learn benchmark behind benchmarks/bench_sklearn.py: cgru's GRUClassifier against
skorch's NeuralNetClassifier over the same model, on real sequence data that packages ship.

The PyTorch side is the same architecture and training: nn.GRU(batch_first=True), nn.Linear on
the last layer's h_n, its weight and bias Glorot-uniform as cgru's head (so both start from the
same distribution), CrossEntropyLoss on logits, torch.optim.Adam with the same lr, epochs and
batch size, shuffled batches, no validation split. Ragged data sets run packed on both sides
(cgru: a list of sequences; skorch: padded, with pack_padded_sequence in the module's forward).

For each thread count and data set, each repetition fits both implementations with the same
seed, in an order that alternates from one repetition to the next, then times predict on the
test set (untimed calls for about 20 ms, then a timed sample of as many calls, as
cgru/bench.py does); the tables give medians over the repetitions, accuracies included.
cgru runs with early stopping off and a tolerance that never triggers it, and every fit is
checked to have run exactly max_iter epochs.

--profile splits cgru's fit time into the compiled kernels and the Python around them (see
profile_fit).
"""
import argparse
import contextlib
import cProfile
import functools
import json
import math
import os
import pstats
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np

from cgru import use_threads
from cgru.bench import time_once

# One setting for every data set (only the epochs differ): the same for both implementations.
HIDDEN_SIZE = 64
BATCH_SIZE = 32
LEARNING_RATE = 1e-2
# Epochs per data set: enough to reach a stable accuracy where the model can (digits is there
# in 20; the UCR/UEA training sets hold 40-270 sequences, so an epoch is 2-9 steps), small
# enough that the whole run (both thread counts, 5 repetitions, --profile) takes about 4
# minutes on the development machine (3 repetitions: 2 minutes).
EPOCHS = {"digits": 20, "ItalyPowerDemand": 50, "GunPoint": 50, "JapaneseVowels": 30,
          "BasicMotions": 50}
DATASETS = list(EPOCHS)


@dataclass
class Dataset:
    name: str
    X_train: object         # (n, L, F) float32 array, or a list of (L_i, F) arrays
    y_train: np.ndarray     # int64 class indices
    X_test: object
    y_test: np.ndarray
    epochs: int
    source: str

    @property
    def shape(self):
        """'(L, F)', or '(L_min-L_max, F)' for ragged sequences."""
        if isinstance(self.X_train, list):
            lengths = [len(x) for x in self.X_train + self.X_test]
            return f"({min(lengths)}-{max(lengths)}, {self.X_train[0].shape[1]})"
        return f"({self.X_train.shape[1]}, {self.X_train.shape[2]})"

    @property
    def n_classes(self):
        return len(np.unique(self.y_train))


def _load_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    X = (digits.images / 16).astype(np.float32)       # each image: 8 steps (rows) of 8 pixels
    X_train, X_test, y_train, y_test = train_test_split(
        X, digits.target, test_size=0.25, stratify=digits.target, random_state=0)
    return X_train, y_train, X_test, y_test, "sklearn.datasets.load_digits, stratified 75/25 " \
        "split (random_state=0)"


def _load_aeon(loader_name):
    """A UCR/UEA set bundled with aeon (read from its package data, no network), as shipped:
    its own train/test split, values as they are."""
    import aeon.datasets
    from sklearn.preprocessing import LabelEncoder
    loader = getattr(aeon.datasets, loader_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X_train, y_train = loader(split="train")
        X_test, y_test = loader(split="test")
    encoder = LabelEncoder().fit(y_train)

    def steps_first(X):   # aeon's (n, channels, L), or a list of (channels, L_i), to ours
        if isinstance(X, list):
            return [np.ascontiguousarray(x.T, dtype=np.float32) for x in X]
        return np.ascontiguousarray(np.transpose(X, (0, 2, 1)), dtype=np.float32)

    return (steps_first(X_train), encoder.transform(y_train), steps_first(X_test),
            encoder.transform(y_test), f"aeon.datasets.{loader_name}, train/test as shipped")


_LOADERS = {"digits": _load_digits,
            "ItalyPowerDemand": lambda: _load_aeon("load_italy_power_demand"),
            "GunPoint": lambda: _load_aeon("load_gunpoint"),
            "JapaneseVowels": lambda: _load_aeon("load_japanese_vowels"),
            "BasicMotions": lambda: _load_aeon("load_basic_motions")}


def load_dataset(name, epochs=None):
    X_train, y_train, X_test, y_test, source = _LOADERS[name]()
    return Dataset(name, X_train, np.asarray(y_train, np.int64), X_test,
                   np.asarray(y_test, np.int64), epochs or EPOCHS[name], source)


# -- the two implementations -------------------------------------------------------------------

def cgru_classifier(data, seed, epochs=None):
    from cgru.sklearn import GRUClassifier
    epochs = epochs or data.epochs
    # tol=-inf: "no improvement" never counts, so fit runs exactly max_iter epochs
    return GRUClassifier(hidden_size=HIDDEN_SIZE, batch_size=BATCH_SIZE,
                         learning_rate_init=LEARNING_RATE, max_iter=epochs, tol=-np.inf,
                         n_iter_no_change=epochs, early_stopping=False, random_state=seed)


@functools.lru_cache(maxsize=1)
def _torch_module_class():
    from torch import nn

    class GRUHead(nn.Module):
        """nn.GRU(batch_first=True), then nn.Linear on the last layer's h_n: logits."""

        def __init__(self, input_size, hidden_size, n_classes):
            super().__init__()
            self.gru = nn.GRU(input_size, hidden_size, batch_first=True)
            self.head = nn.Linear(hidden_size, n_classes)
            bound = math.sqrt(6.0 / (hidden_size + n_classes))   # cgru's (Glorot's) head init
            nn.init.uniform_(self.head.weight, -bound, bound)
            nn.init.uniform_(self.head.bias, -bound, bound)

        def forward(self, x, lengths=None):
            if lengths is not None:
                x = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                                      enforce_sorted=False)
            _, h_n = self.gru(x)
            return self.head(h_n[-1])

    return GRUHead


def skorch_classifier(data, epochs=None, predict_batch_size=None):
    import torch
    from skorch import NeuralNetClassifier
    return NeuralNetClassifier(
        _torch_module_class(), module__input_size=_n_features(data.X_train),
        module__hidden_size=HIDDEN_SIZE, module__n_classes=data.n_classes,
        criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=LEARNING_RATE,
        max_epochs=epochs or data.epochs, batch_size=BATCH_SIZE, iterator_train__shuffle=True,
        iterator_valid__batch_size=predict_batch_size or BATCH_SIZE, train_split=None,
        verbose=0)


def _n_features(X):
    return X[0].shape[-1]


def skorch_input(X):
    """What the torch module takes: the array itself, or a ragged list as {"x": padded,
    "lengths": ...} (made once, outside the timings)."""
    if not isinstance(X, list):
        return X
    lengths = np.array([len(x) for x in X], dtype=np.int64)
    padded = np.zeros((len(X), lengths.max(), X[0].shape[1]), dtype=np.float32)
    for i, x in enumerate(X):
        padded[i, :len(x)] = x
    return {"x": padded, "lengths": lengths}


class _Implementation:
    """fit(seed) -> seconds, with the fitted model kept; predict(); accuracy()."""

    def __init__(self, name, data, epochs):
        self.name, self.data, self.epochs, self.model = name, data, epochs, None

    def accuracy(self):
        return float(np.mean(self.predict() == self.data.y_test))


class _Cgru(_Implementation):
    def fit(self, seed, epochs=None):
        model = cgru_classifier(self.data, seed, epochs or self.epochs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # ConvergenceWarning at max_iter: expected
            start = time.perf_counter()
            model.fit(self.data.X_train, self.data.y_train)
            seconds = time.perf_counter() - start
        if model.n_iter_ != model.max_iter:
            raise RuntimeError(f"cgru stopped after {model.n_iter_} of {model.max_iter} epochs")
        self.model = model
        return seconds

    def predict(self):
        return self.model.predict(self.data.X_test)


class _Skorch(_Implementation):
    def __init__(self, name, data, epochs, predict_batch_size):
        super().__init__(name, data, epochs)
        self.X_train, self.X_test = skorch_input(data.X_train), skorch_input(data.X_test)
        self.predict_batch_size = predict_batch_size

    def fit(self, seed, epochs=None):
        import torch
        epochs = epochs or self.epochs
        torch.manual_seed(seed)          # the module's initialisation and the batch order
        net = skorch_classifier(self.data, epochs, self.predict_batch_size)
        start = time.perf_counter()
        net.fit(self.X_train, self.data.y_train)
        seconds = time.perf_counter() - start
        if len(net.history) != epochs:
            raise RuntimeError(f"skorch ran {len(net.history)} of {epochs} epochs")
        self.model = net
        return seconds

    def predict(self):
        return self.model.predict(self.X_test)


@contextlib.contextmanager
def threads_for_both(n):
    """n threads for cgru (its OpenMP team), for torch (intra-op), and for the BLAS libraries
    that NumPy, SciPy and torch load (the heads' small products run in NumPy's)."""
    import torch
    from threadpoolctl import threadpool_limits
    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with use_threads(n), threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(saved)


def _predict_rate(impl):
    """Sequences per second of impl.predict on the test set: untimed calls for about 20 ms,
    then a timed sample of as many (cgru/bench.py's sampling)."""
    inner = max(1, int(0.02 / max(time_once(impl.predict), 1e-7)))
    time_once(impl.predict, inner)
    return len(impl.data.y_test) / time_once(impl.predict, inner)


def run_dataset(data, threads, repeats, predict_batch_size=None, epochs=None):
    """{"fit": {name: [s]}, "accuracy": {name: [..]}, "predict": {name: [seq/s]}}, one entry
    per repetition; repetition r fits with seed r, the implementations in alternating order."""
    epochs = epochs or data.epochs
    impls = [_Cgru("cgru", data, epochs), _Skorch("skorch", data, epochs, predict_batch_size)]
    results = {key: {impl.name: [] for impl in impls} for key in ("fit", "accuracy", "predict")}
    with threads_for_both(threads):
        for impl in impls:   # untimed: first-call costs (lazy imports, allocators, torch init)
            impl.fit(seed=0, epochs=1)
            impl.predict()
        for repeat in range(repeats):
            order = impls[repeat % 2:] + impls[:repeat % 2]
            for impl in order:
                results["fit"][impl.name].append(impl.fit(seed=repeat))
                results["accuracy"][impl.name].append(impl.accuracy())
            for impl in order:
                results["predict"][impl.name].append(_predict_rate(impl))
    return results


def _median(values):
    return float(np.median(values))


def report(rows, threads, out=sys.stdout):
    print(f"\n## {threads} thread{'s' if threads > 1 else ''}\n", file=out)
    header = ["data set", "n_train", "shape (L, F)", "epochs", "cgru fit s", "skorch fit s",
              "speed-up", "cgru acc", "skorch acc", "cgru predict seq/s",
              "skorch predict seq/s", "speed-up"]
    print("| " + " | ".join(header) + " |", file=out)
    print("|" + "---|" * len(header), file=out)
    for row in rows:
        fit, acc, rate = row["fit"], row["accuracy"], row["predict"]
        cells = [row["dataset"], str(row["n_train"]), row["shape"], str(row["epochs"]),
                 f"{_median(fit['cgru']):.2f}", f"{_median(fit['skorch']):.2f}",
                 f"{_median(fit['skorch']) / _median(fit['cgru']):.2f}x",
                 f"{_median(acc['cgru']):.3f}", f"{_median(acc['skorch']):.3f}",
                 f"{_median(rate['cgru']):,.0f}", f"{_median(rate['skorch']):,.0f}",
                 f"{_median(rate['cgru']) / _median(rate['skorch']):.2f}x"]
        print("| " + " | ".join(cells) + " |", file=out)
    print("\nAccuracy per seed (cgru / skorch):", file=out)
    for row in rows:
        pairs = ", ".join(f"{c:.3f}/{s:.3f}" for c, s in zip(row["accuracy"]["cgru"],
                                                             row["accuracy"]["skorch"]))
        print(f"- {row['dataset']}: {pairs}", file=out)


# -- where cgru's fit time goes ----------------------------------------------------------------

_KERNEL_FWD = "forward kernel (compiled gru_layer)"
_KERNEL_BWD = "backward kernel (compiled gru_layer_backward)"
_FWD_GLUE = "forward, Python around the kernel (gru.py vjp, stack.py forward)"
_BWD_GLUE = "backward, Python around the kernel (tape.py __call__, stack.py backward)"
_ADAM_CHECKS = "Adam: checking hyperparameters and gradients (optim.py _check_group, _gather)"
_ADAM = "Adam: update arithmetic, array by array (optim.py step, _update)"
_WRITE = "Adam: writing the GRU's weights back (load_state_dict: re-layout, panels)"
_STEP = "head, loss and their gradients (sklearn.py _train_step)"
_PACK = "packing the ragged batch (Sequences.gru_input: pack_sequence)"
_LOOP = "epoch loop, input checks, batch selection (sklearn.py fit, _fit)"
BUCKETS = [_KERNEL_FWD, _KERNEL_BWD, _FWD_GLUE, _BWD_GLUE, _ADAM_CHECKS, _ADAM, _WRITE, _STEP,
           _PACK, _LOOP]

# cgru's functions that open a bucket, as cProfile names them ("module.function", the module's
# file name without ".py" and leading underscore): each maps to (bucket of the function's own
# time, bucket of the time of what it calls that opens no bucket of its own). Names as text:
# the harness imports none of cgru's private modules, and a module that moves to another
# folder still matches. cProfile does not see calls of Cython functions, so a compiled
# kernel's time is its Python caller's own time: forward's and backward's own time is the
# kernel's plus a few microseconds of their bytecode (the arrays they allocate are calls of
# their own).
_KERNEL_CALLERS = {"stack.forward": (_KERNEL_FWD, _FWD_GLUE),
                   "stack.backward": (_KERNEL_BWD, _BWD_GLUE)}
_OPENERS = {_FWD_GLUE: "gru.vjp", _BWD_GLUE: "tape.__call__",
            _ADAM: "optim.step optim._update", _ADAM_CHECKS: "optim._check_group optim._gather",
            _WRITE: "optim._write", _STEP: "sklearn._train_step", _PACK: "sequences.gru_input",
            _LOOP: "sklearn.fit sklearn._fit"}
PROFILE_RULES = dict(_KERNEL_CALLERS, **{name: (bucket, bucket) for bucket, names in
                                         _OPENERS.items() for name in names.split()})


def _rule(function):
    """PROFILE_RULES' entry for a pstats key (file, line, name), or None."""
    path, _, name = function
    if os.sep + "cgru" + os.sep not in path:
        return None
    module = os.path.splitext(os.path.basename(path))[0].lstrip("_")
    return PROFILE_RULES.get(f"{module}.{name}")


def bucket_times(stats):
    """{bucket: seconds} of a pstats.Stats: each function's own time goes to its bucket when
    it opens one, else to the bucket its callers pass down, split among the callers as its
    cumulative time came through each (time that reaches no bucket: the epoch loop's)."""
    raw = stats.stats                # {function: (cc, nc, own, cumulative, {caller: edge})}
    shares = {}

    def passed_down(function, seen):
        """{bucket: fraction} that `function`'s callers pass down to it."""
        if function in shares:
            return shares[function]
        callers = {c: edge[3] for c, edge in raw[function][4].items()
                   if c in raw and c not in seen}
        total = sum(callers.values())
        if total <= 0:
            return {_LOOP: 1.0}
        result = {}
        for caller, through in callers.items():
            rule = _rule(caller)
            parts = {rule[1]: 1.0} if rule else passed_down(caller, seen | {function})
            for bucket, part in parts.items():
                result[bucket] = result.get(bucket, 0.0) + part * through / total
        shares[function] = result
        return result

    seconds = dict.fromkeys(BUCKETS, 0.0)
    for function, (_, _, own, _, _) in raw.items():
        rule = _rule(function)
        for bucket, part in ({rule[0]: 1.0} if rule else
                             passed_down(function, frozenset())).items():
            seconds[bucket] += own * part
    return seconds


def profile_fit(data, threads, seed=0, epochs=None):
    """(fit seconds, {bucket: seconds}, steps) of one cgru fit under cProfile (see
    bucket_times). cProfile's cost per profiled call is in the buckets: the table's "this
    profiled fit" row against the timed fits' median shows how much."""
    impl = _Cgru("cgru", data, epochs or data.epochs)
    with threads_for_both(threads):
        impl.fit(seed, epochs=1)                    # untimed warm-up
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            seconds = impl.fit(seed)
        finally:
            profiler.disable()
    buckets = bucket_times(pstats.Stats(profiler))
    if not buckets[_KERNEL_FWD] or not buckets[_KERNEL_BWD]:
        print("warning: no time found in cgru's kernel callers (PROFILE_RULES names "
              "stack.py's forward and backward): have they been renamed?", file=sys.stderr)
    steps = impl.epochs * math.ceil(len(data.y_train) / BATCH_SIZE)
    return seconds, buckets, steps


def report_profile(profiles, rows, threads, out=sys.stdout):
    """Rows: buckets; columns: data sets, ms per training step (share of cgru's fit)."""
    print(f"\n### Where cgru's fit time goes, {threads} thread{'s' if threads > 1 else ''} "
          f"(ms per training step, share of the fit)\n", file=out)
    names = [p["dataset"] for p in profiles]
    print("| | " + " | ".join(names) + " |", file=out)
    print("|" + "---|" * (len(names) + 1), file=out)
    for bucket in BUCKETS:
        cells = [f"{1e3 * p['buckets'][bucket] / p['steps']:.3f} "
                 f"({100 * p['buckets'][bucket] / p['fit']:.0f}%)" for p in profiles]
        print(f"| {bucket} | " + " | ".join(cells) + " |", file=out)
    kernels = [p["buckets"][_KERNEL_FWD] + p["buckets"][_KERNEL_BWD] for p in profiles]
    print("| **compiled kernels, together** | " + " | ".join(
        f"**{1e3 * k / p['steps']:.3f} ({100 * k / p['fit']:.0f}%)**"
        for k, p in zip(kernels, profiles)) + " |", file=out)
    print("| **cgru, whole step (this profiled fit)** | " + " | ".join(
        f"**{1e3 * p['fit'] / p['steps']:.3f}**" for p in profiles) + " |", file=out)
    by_name = {r["dataset"]: r for r in rows}
    if all(n in by_name for n in names):
        print("| cgru, whole step (median of the timed fits) | " + " | ".join(
            f"{1e3 * _median(by_name[n]['fit']['cgru']) / p['steps']:.3f}"
            for n, p in zip(names, profiles)) + " |", file=out)
        print("| skorch, whole step (median of the timed fits) | " + " | ".join(
            f"{1e3 * _median(by_name[n]['fit']['skorch']) / p['steps']:.3f}"
            for n, p in zip(names, profiles)) + " |", file=out)
    print("| training steps (epochs x batches) | " + " | ".join(
        str(p["steps"]) for p in profiles) + " |", file=out)


# -- the command line --------------------------------------------------------------------------

def _versions():
    import importlib.metadata as metadata
    names = ["cgru", "torch", "skorch", "scikit-learn", "numpy", "aeon"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def main(argv=None):
    parser = argparse.ArgumentParser(description="cgru's GRUClassifier against skorch's "
                                     "NeuralNetClassifier over the same PyTorch model")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help=f"comma-separated, from {','.join(DATASETS)}")
    parser.add_argument("--repeats", type=int, default=5,
                        help="fits per implementation and data set (seeds 0, 1, ...)")
    parser.add_argument("--epochs", type=int, help="epochs for every data set (default: "
                        + ", ".join(f"{k} {v}" for k, v in EPOCHS.items()) + ")")
    parser.add_argument("--skorch-predict-batch", default="all", choices=["all", "train"],
                        help="skorch's predict batch size: the whole test set (default, one "
                        "forward as cgru's predict) or the training batch size")
    parser.add_argument("--profile", action="store_true",
                        help="also split one cgru fit per data set into kernels and Python")
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON")
    args = parser.parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",")]
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    lookup = {n.lower(): n for n in DATASETS}
    unknown = [n for n in names if n.lower() not in lookup]
    if unknown:
        parser.error(f"unknown data sets {unknown}; choose from {DATASETS}")
    try:
        import skorch  # noqa: F401
        import torch  # noqa: F401
    except ImportError as error:
        parser.error(f"needs torch and skorch ({error}): pip install skorch")
    datasets = [load_dataset(lookup[n.lower()], args.epochs) for n in names]

    print(f"# cgru GRUClassifier vs skorch NeuralNetClassifier\n\n{_versions()}\n")
    print(f"Both: GRU(F, {HIDDEN_SIZE}, batch_first) + Linear on the last h_n, softmax "
          f"cross-entropy, Adam(lr={LEARNING_RATE:g}), batch_size={BATCH_SIZE}, shuffled, "
          f"no validation split, float32; {args.repeats} fits each (seeds 0-"
          f"{args.repeats - 1}), medians. skorch predicts in batches of "
          f"{'the whole test set' if args.skorch_predict_batch == 'all' else BATCH_SIZE}.\n")
    for data in datasets:
        ragged = ", ragged (packed)" if isinstance(data.X_train, list) else ""
        print(f"- {data.name}: {data.source}; {len(data.y_train)} train / "
              f"{len(data.y_test)} test sequences of {data.shape}{ragged}, "
              f"{data.n_classes} classes")
    all_rows, all_profiles = [], []
    for threads in threads_list:
        rows = []
        for data in datasets:
            batch = (max(len(data.y_test), 1) if args.skorch_predict_batch == "all"
                     else BATCH_SIZE)
            results = run_dataset(data, threads, args.repeats, batch)
            rows.append(dict(dataset=data.name, threads=threads, n_train=len(data.y_train),
                             n_test=len(data.y_test), shape=data.shape, epochs=data.epochs,
                             **results))
        report(rows, threads)
        if args.profile:
            profiles = []
            for data in datasets:
                seconds, buckets, steps = profile_fit(data, threads)
                profiles.append(dict(dataset=data.name, threads=threads, fit=seconds,
                                     buckets=buckets, steps=steps))
            report_profile(profiles, rows, threads)
            all_profiles += profiles
        sys.stdout.flush()
        all_rows += rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": all_rows, "profiles": all_profiles}, f, indent=1)
    return 0
