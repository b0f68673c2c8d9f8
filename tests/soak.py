"""Soak: resident memory, open file descriptors and threads stay flat over many calls.

Runs in a fresh process (import it for its functions, or run it):

    python tests/soak.py                                    # the long version (issue #14)
    python tests/soak.py --forward 3000 --train 300 --errors 2000   # tests/test_soak.py's

After a warm-up that runs every kind of call, three phases run one after the other:

* forward: calls of mixed shapes on several modules: dense (L, N, H_in), batch_first,
  unbatched, packed batches of varied lengths (sorted and not), 1 and 2 layers, one and two
  directions, float32 and float64 modules (and inputs of another dtype or layout), GRUCell
  batched and unbatched, results of 1 MB and more (recycled memory), at 1 and 2 threads,
  and calls from short-lived Python threads;
* train: training steps: vjp, backward, clip_grad_norm_ and a cgru.optim step (Adam, AdamW,
  SGD with momentum; a GRU with dropout in training mode, a packed batch, a GRUCell);
* errors: calls that must raise ValueError or TypeError (KeyError where load_state_dict's
  documentation says so): bad shapes, dtypes and keys, bad gradients given to backward, bad
  optimizer steps, damaged model files, bad thread counts, bad constructor arguments.

RSS (/proc/self/statm), open descriptors (/proc/self/fd) and threads (/proc/self/status) are
sampled after a garbage collection at the start of each phase and at regular intervals in it.
The run fails (exit status 1) when, in any phase or over the whole run, the median RSS of the
last quarter of the samples exceeds the median of the first quarter by more than
--threshold-mb (a trend, not one noisy sample), or when the descriptors or threads at the end
exceed those after the warm-up. --leak injects a leak (memory, fd or thread), to show that
the detector catches one. Linux only (it reads /proc).
"""
import argparse
import gc
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings

import numpy as np

import cgru
import cgru.optim
from cgru._engine import recycle as _recycle

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MB = 1 << 20
LONG = {"forward": 100_000, "train": 10_000, "errors": 10_000}
PHASES = ("forward", "train", "errors")


# -- measurements -------------------------------------------------------------------------------

def rss_bytes():
    """The process's resident set size now (not the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_BYTES


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def os_threads():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError("no Threads: line in /proc/self/status")


def sample(phase, calls, started):
    gc.collect()
    return {"phase": phase, "calls": calls, "seconds": time.perf_counter() - started,
            "rss": rss_bytes(), "fds": open_fds(), "threads": os_threads(),
            "recycled": _recycle._FREE.nbytes}


# -- the calls ----------------------------------------------------------------------------------

def threads_for(i, cases):
    """Call i runs at 2 threads in every third round through the cases, else at 1: every case
    meets both counts."""
    return 2 if (i // cases) % 3 == 0 else 1


def _expect(condition, what):
    if not condition:
        raise AssertionError(what)


class Forward:
    """Forward calls of mixed shapes; each case checks the shapes it gets back."""

    def __init__(self, rng):
        self.rng = rng
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.small = cgru.GRU(8, 16, seed=0)
            self.deep = cgru.GRU(8, 24, 2, batch_first=True, bidirectional=True, seed=1)
            self.double = cgru.GRU(5, 12, 2, dtype=np.float64, seed=2)
            self.wide = cgru.GRU(8, 64, bidirectional=True, seed=3)
            self.cell = cgru.GRUCell(8, 16, seed=4)
            self.cell64 = cgru.GRUCell(6, 10, bias=False, dtype=np.float64, seed=5)
        common = [self.dense, self.batch_first, self.unbatched, self.float64_with_hx,
                  self.packed_unsorted, self.packed_bidirectional, self.converted_layouts,
                  self.cell_steps, self.dense, self.packed_sequence_list, self.large_packing,
                  self.in_a_new_thread]
        self.cases = common + common + [self.large]      # large is the slow one: rarer
        self.rounds = {"packing": itertools.count(), "large": itertools.count()}

    def _x(self, *shape, dtype=np.float32):
        return self.rng.standard_normal(shape).astype(dtype)

    def dense(self):
        L, N = self.rng.integers(1, 31), self.rng.integers(1, 17)
        out, h = self.small(self._x(L, N, 8))
        _expect(out.shape == (L, N, 16) and h.shape == (1, N, 16), "dense shapes")

    def batch_first(self):
        N, L = self.rng.integers(1, 17), self.rng.integers(1, 31)
        out, h = self.deep(self._x(N, L, 8), self._x(4, N, 24))
        _expect(out.shape == (N, L, 48) and h.shape == (4, N, 24), "batch_first shapes")

    def unbatched(self):
        L = self.rng.integers(1, 41)
        out, h = self.deep(self._x(L, 8))
        _expect(out.shape == (L, 48) and h.shape == (4, 24), "unbatched shapes")

    def float64_with_hx(self):
        L, N = self.rng.integers(1, 21), self.rng.integers(1, 9)
        out, h = self.double(self._x(L, N, 5, dtype=np.float64), self._x(2, N, 12))
        _expect(out.dtype == np.float64 and out.shape == (L, N, 12), "float64 shapes")

    def packed_unsorted(self):
        L, N = int(self.rng.integers(1, 26)), int(self.rng.integers(1, 13))
        lengths = self.rng.integers(1, L + 1, size=N)
        packed = cgru.pack_padded_sequence(self._x(L, N, 8), lengths, enforce_sorted=False)
        out, h = self.small(packed, self._x(1, N, 16))
        padded, got = cgru.pad_packed_sequence(out)
        _expect(np.array_equal(got, lengths) and h.shape == (1, N, 16), "packed lengths")

    def packed_bidirectional(self):
        N, L = int(self.rng.integers(1, 13)), int(self.rng.integers(1, 26))
        lengths = np.sort(self.rng.integers(1, L + 1, size=N))[::-1]
        lengths[0] = L
        packed = cgru.pack_padded_sequence(self._x(N, L, 8), lengths, batch_first=True)
        out, h = self.deep(packed)
        padded, _ = cgru.pad_packed_sequence(out, batch_first=True)
        _expect(padded.shape == (N, L, 48) and h.shape == (4, N, 24), "packed bidirectional")

    def converted_layouts(self):
        # float64 into a float32 module, Fortran order, negative strides, a read-only view
        x = np.asfortranarray(self._x(12, 5, 8, dtype=np.float64))[::-1]
        x.flags.writeable = False
        out, h = self.small(x)
        _expect(out.dtype == np.float32 and out.shape == (12, 5, 16), "converted input")

    def large(self):
        # outputs of 1 MB and more live on recycled memory (cgru._recycle)
        out, h = self.wide(self._x(300 + next(self.rounds["large"]) % 3 * 40, 8, 8))
        _expect(out.nbytes >= 1 << 20 and h.shape == (2, 8, 64), "large shapes")

    def large_packing(self):
        # packed and padded batches of 1 MB and more are recycled memory too; a few fixed
        # batches, so that the warm-up meets every size of block the recycler keeps
        L, N = 400, 8
        lengths = np.linspace(L, 300 + 20 * (next(self.rounds["packing"]) % 4), N).astype(int)
        packed = cgru.pack_padded_sequence(np.ones((L, N, 128), np.float32), lengths)
        padded, _ = cgru.pad_packed_sequence(packed, total_length=L + 10)
        _expect(padded.shape == (L + 10, N, 128) and min(packed.data.nbytes, padded.nbytes)
                >= 1 << 20, "large packing")

    def in_a_new_thread(self):
        # a short-lived Python thread (a thread pool's, a dask task's): its OpenMP team must
        # go with it
        L, N = int(self.rng.integers(5, 31)), int(self.rng.integers(8, 17))
        x, result = self._x(L, N, 8), []
        n = cgru.get_num_threads()

        def call():
            with cgru.use_threads(n):
                result.append(self.wide(x))

        thread = threading.Thread(target=call)
        thread.start()
        thread.join()
        _expect(result and result[0][0].shape == (L, N, 128), "call in a new thread")

    def cell_steps(self):
        N = self.rng.integers(1, 33)
        h = self.cell(self._x(N, 8))
        h = self.cell(self._x(N, 8), h)
        h1 = self.cell(self._x(8))
        h2 = self.cell64(self._x(6, dtype=np.float64), np.zeros(10))
        _expect(h.shape == (N, 16) and h1.shape == (16,) and h2.dtype == np.float64,
                "cell shapes")

    def packed_sequence_list(self):
        n = int(self.rng.integers(1, 7))
        sequences = [self._x(int(self.rng.integers(1, 20)), 5, dtype=np.float64)
                     for _ in range(n)]
        packed = cgru.pack_sequence(sequences, enforce_sorted=False)
        out, h = self.double(packed)
        back = cgru.unpack_sequence(out)
        _expect([len(s) for s in back] == [len(s) for s in sequences], "pack_sequence")


class Train:
    """Training steps: vjp, backward, gradient clipping and an optimizer step."""

    def __init__(self, rng):
        self.rng = rng
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.dropout = cgru.GRU(8, 16, 2, bidirectional=True, dropout=0.1, seed=10).train()
            self.double = cgru.GRU(6, 12, batch_first=True, dtype=np.float64, seed=11)
            self.packed = cgru.GRU(8, 16, seed=12)
            self.cell = cgru.GRUCell(8, 16, seed=13)
        self.head = {"W": rng.uniform(-0.25, 0.25, (3, 12)), "b": np.zeros(3)}
        self.opt_dropout = cgru.optim.Adam(self.dropout, lr=1e-3)
        self.opt_double = cgru.optim.SGD([self.double, self.head], lr=1e-2, momentum=0.9)
        self.opt_packed = cgru.optim.AdamW(self.packed, lr=1e-3)
        self.opt_cell = cgru.optim.Adam(self.cell, lr=1e-3, amsgrad=True)
        self.cases = [self.dense_dropout, self.double_with_head, self.packed_step,
                      self.cell_step]

    def _x(self, *shape, dtype=np.float32):
        return self.rng.standard_normal(shape).astype(dtype)

    def dense_dropout(self):
        L, N = self.rng.integers(1, 21), self.rng.integers(1, 13)
        (out, h), backward = self.dropout.vjp(self._x(L, N, 8))
        target = self._x(L, N, 32)
        grads = backward((out - target) / out.size, None)
        cgru.clip_grad_norm_(grads, max_norm=1.0)
        self.opt_dropout.step(grads)
        _expect(np.isfinite(grads["weight_hh_l1_reverse"]).all(), "finite gradients")

    def double_with_head(self):
        N, L = self.rng.integers(1, 17), self.rng.integers(1, 16)
        (out, h), backward = self.double.vjp(self._x(N, L, 6, dtype=np.float64))
        logits = h[-1] @ self.head["W"].T + self.head["b"]
        dlogits = (logits - self._x(N, 3, dtype=np.float64)) / N
        head_grads = {"W": dlogits.T @ h[-1], "b": dlogits.sum(axis=0)}
        grads = backward(None, (dlogits @ self.head["W"])[None])
        self.opt_double.step([grads, head_grads])
        _expect(grads["input"].shape == (N, L, 6), "input gradient shape")

    def packed_step(self):
        L, N = int(self.rng.integers(1, 21)), int(self.rng.integers(1, 11))
        lengths = self.rng.integers(1, L + 1, size=N)
        packed = cgru.pack_padded_sequence(self._x(L, N, 8), lengths, enforce_sorted=False)
        (out, h), backward = self.packed.vjp(packed, self._x(1, N, 16))
        grad_out = cgru.PackedSequence(self._x(*out.data.shape) * 1e-2, out.batch_sizes,
                                       out.sorted_indices, out.unsorted_indices)
        grads = backward(grad_out, h * 1e-2)
        again = backward(grad_out.data, h * 1e-2)         # any number of times
        _expect(np.array_equal(grads["weight_hh_l0"], again["weight_hh_l0"]), "repeat")
        self.opt_packed.step(grads)

    def cell_step(self):
        N = self.rng.integers(1, 17)
        h1, backward = self.cell.vjp(self._x(N, 8), self._x(N, 16))
        grads = backward(self._x(N, 16) * 1e-2)
        self.opt_cell.step(grads)
        h1, backward = self.cell.vjp(self._x(8))
        _expect(backward(None)["hx"].shape == (16,), "unbatched cell gradient")


class Errors:
    """Calls that must raise: each case is (callable, exception types)."""

    def __init__(self, rng, folder):
        self.rng = rng
        gru = cgru.GRU(3, 4, 2, seed=20)
        bidirectional = cgru.GRU(3, 4, bidirectional=True, batch_first=True, seed=21)
        cell = cgru.GRUCell(3, 4, seed=22)
        x = rng.standard_normal((5, 2, 3)).astype(np.float32)
        (_, _), backward = gru.vjp(x)
        packed = cgru.pack_padded_sequence(x, [5, 3])
        (packed_out, _), packed_backward = gru.vjp(packed)
        _, cell_backward = cell.vjp(x[0])
        opt = cgru.optim.Adam(gru, lr=1e-3)
        good = backward(np.ones((5, 2, 4), np.float32))
        opt.step(good)                                  # give the optimizer some state
        head = {"w": np.zeros((2, 4))}
        two = cgru.optim.SGD([cell, head], lr=0.1)

        damaged = os.path.join(folder, "damaged.npz")
        gru.save(damaged)
        with open(damaged, "r+b") as f:
            f.truncate(os.path.getsize(damaged) // 2)
        foreign = os.path.join(folder, "foreign.npz")
        np.savez(foreign, a=np.zeros(3))
        single = os.path.join(folder, "single.npy")
        np.save(single, np.zeros(3))
        wrong_shape = dict(good, weight_hh_l0=np.zeros((4, 12)))
        missing = {k: v for k, v in good.items() if k != "bias_hh_l1"}
        other_batch = cgru.PackedSequence(packed_out.data, np.array([2, 2, 1, 1, 1]))
        V, T, K = ValueError, TypeError, KeyError
        self.cases = [
            (lambda: gru(np.zeros((5, 2, 7), np.float32)), V),          # input_size
            (lambda: gru(np.zeros((2, 2, 2, 3), np.float32)), V),       # 4-D
            (lambda: gru(np.zeros((0, 2, 3), np.float32)), V),          # empty sequence
            (lambda: gru(np.zeros((5, 0, 3), np.float32)), V),          # empty batch
            (lambda: gru("abc"), T),
            (lambda: gru(np.zeros((2, 1, 3), complex)), T),
            (lambda: gru(np.empty((2, 1, 3), object)), T),
            (lambda: gru(x, np.zeros((2, 3, 4))), V),                   # hx batch
            (lambda: gru(x, np.zeros((2, 4))), V),                      # hx dimensions
            (lambda: gru(x, "h"), T),
            (lambda: bidirectional(np.zeros((2, 5, 3)), np.zeros((1, 2, 4))), V),
            (lambda: gru(cgru.PackedSequence(np.zeros((8, 7), np.float32),
                                             np.array([2, 2, 2, 1, 1]))), V),
            (lambda: cgru.pack_padded_sequence(x, [6, 3]), V),          # longer than L
            (lambda: cgru.pack_padded_sequence(x, [3, 5]), V),          # not sorted
            (lambda: cgru.pack_padded_sequence(x, [5]), V),             # one length for two
            (lambda: gru.vjp(np.zeros((5, 2, 6))), V),
            (lambda: gru.vjp(x, np.zeros((1, 2, 4))), V),
            (lambda: backward(np.zeros((5, 2, 5))), V),                 # grad_output shape
            (lambda: backward(None, np.zeros((2, 3, 4))), V),           # grad_h_n shape
            (lambda: backward("abc"), T),
            (lambda: packed_backward(np.zeros((7, 4))), V),             # rows of output.data
            (lambda: packed_backward(other_batch), V),                  # other batch_sizes
            (lambda: cell_backward(np.zeros((2, 5))), V),
            (lambda: cell(np.zeros((2, 7))), V),
            (lambda: cell(np.zeros((2, 3)), np.zeros((3, 4))), V),
            (lambda: cell(np.zeros((2, 2, 3))), V),
            (lambda: gru.load_state_dict({"weight_ih_l0": np.zeros((3, 3))}, strict=False), V),
            (lambda: gru.load_state_dict({"weight_ih_l0": "x"}, strict=False), T),
            (lambda: gru.load_state_dict({"weight_ih_l9": np.zeros((12, 3))}), K),
            (lambda: gru.load_state_dict([1, 2]), T),
            (lambda: opt.step(wrong_shape), V),
            (lambda: opt.step(missing), V),
            (lambda: opt.step(dict(good, weight_ih_l5=np.zeros(3))), V),
            (lambda: opt.step(None), T),
            (lambda: opt.step(dict(good, bias_ih_l0=np.ones(12, complex))), T),
            (lambda: two.step(good), T),                                # one dict for two
            (lambda: two.step([good]), V),
            (lambda: opt.load_state_dict({"state": {}}), V),
            (lambda: cgru.optim.SGD(gru, lr=-1.0), V),
            (lambda: cgru.clip_grad_norm_(good, max_norm=-1.0), V),
            (lambda: cgru.load(damaged), V),
            (lambda: cgru.load(foreign), V),
            (lambda: cgru.load(single), V),
            (lambda: cgru.set_num_threads(0), V),
            (lambda: cgru.set_num_threads(1.5), T),
            (lambda: cgru.GRU(3, 0), V),
            (lambda: cgru.GRU(3, 4, dtype=np.int32), T),
            (lambda: cgru.GRUCell("3", 4), T),
        ]

    def run(self, i):
        call, errors = self.cases[i % len(self.cases)]
        try:
            call()
        except errors:
            return
        raise AssertionError(f"error case {i % len(self.cases)} did not raise {errors}")


# -- injected leaks (to show the detector works) ------------------------------------------------

class Leak:
    """--leak memory: keeps --leak-kib KiB per call (written, so resident); fd: opens
    os.devnull every 250 calls; thread: starts a thread that never ends every 1000 calls."""

    def __init__(self, kind, kib=2):
        self.kind, self.kib, self.kept, self._stop = kind, kib, [], threading.Event()

    def __call__(self, i):
        if self.kind == "memory":
            self.kept.append(b"x" * (1024 * self.kib))
        elif self.kind == "fd" and i % 250 == 0:
            self.kept.append(open(os.devnull))
        elif self.kind == "thread" and i % 1000 == 0:
            thread = threading.Thread(target=self._stop.wait, daemon=True)
            thread.start()
            self.kept.append(thread)


# -- the run ------------------------------------------------------------------------------------

def _quarter_growth(values):
    """median(last quarter) - median(first quarter) of a series (at least 4 values)."""
    q = max(1, len(values) // 4)
    return statistics.median(values[-q:]) - statistics.median(values[:q])


def run(forward=LONG["forward"], train=LONG["train"], errors=LONG["errors"], *, samples=20,
        warmup=None, threshold_mb=4.0, leak=None, leak_kib=2, seed=0, out=sys.stdout):
    """Run the soak, printing each sample as it is taken and then the verdict to `out`;
    return a dict of the results ("passed", "failures", "phases", "samples", ...)."""
    rng = np.random.default_rng(seed)
    counts = {"forward": forward, "train": train, "errors": errors}
    with tempfile.TemporaryDirectory() as folder:
        work = {"forward": Forward(rng), "train": Train(rng), "errors": Errors(rng, folder)}
        if warmup is None:   # every case at both thread counts twice, and a share of each phase
            warmup = {p: max(6 * len(work[p].cases), counts[p] // 20) for p in PHASES}
        inject = Leak(leak, leak_kib) if leak else None

        def one(phase, i, leaking):
            obj = work[phase]
            with cgru.use_threads(threads_for(i, len(obj.cases))):
                if phase == "errors":
                    obj.run(i)
                else:
                    obj.cases[i % len(obj.cases)]()
            if leaking:
                inject(i)

        started = time.perf_counter()
        for phase in PHASES:
            for i in range(warmup[phase]):
                one(phase, i, False)
        print(f"cgru {cgru.__version__} soak: forward {forward}, train {train}, errors "
              f"{errors} calls after a warm-up of {sum(warmup.values())} calls "
              f"({time.perf_counter() - started:.1f} s); {cgru.get_num_threads()} threads by "
              f"default, calls at 1 and 2" + (f"; injected leak: {leak}" if leak else ""),
              file=out)
        print(f"{'phase':8} {'calls':>7} {'s':>7} {'calls/s':>8} {'RSS MB':>8} {'+MB':>7} "
              f"{'fds':>4} {'threads':>7} {'free list MB':>12}", file=out, flush=True)
        table = []
        for phase in PHASES:
            count = counts[phase]
            if count == 0:
                continue
            every = max(1, count // samples)
            phase_start = time.perf_counter()
            _record(table, sample(phase, 0, phase_start), out)
            for i in range(1, count + 1):
                one(phase, i, inject is not None)
                if i % every == 0 or i == count:
                    _record(table, sample(phase, i, phase_start), out)
    return _judge(table, counts, warmup, threshold_mb, leak, out)


def _record(table, row, out):
    previous = table[-1] if table else None
    rate = ""
    if previous is not None and previous["phase"] == row["phase"] \
            and row["seconds"] > previous["seconds"]:
        rate = f"{(row['calls'] - previous['calls']) / (row['seconds'] - previous['seconds']):.0f}"
    base = table[0]["rss"] if table else row["rss"]
    print(f"{row['phase']:8} {row['calls']:7d} {row['seconds']:7.1f} {rate:>8} "
          f"{row['rss'] / MB:8.1f} {(row['rss'] - base) / MB:+7.2f} "
          f"{row['fds']:4d} {row['threads']:7d} {row['recycled'] / MB:12.1f}", file=out,
          flush=True)
    table.append(row)


def _judge(table, counts, warmup, threshold_mb, leak, out):
    base = table[0]
    failures = []
    summary = {"phases": {}}
    series = {p: [r for r in table if r["phase"] == p] for p in PHASES}
    for phase, rows in list(series.items()) + [("overall", table)]:
        if not rows:
            continue
        growth = _quarter_growth([r["rss"] for r in rows]) / MB
        entry = {"rss_start_mb": rows[0]["rss"] / MB, "rss_end_mb": rows[-1]["rss"] / MB,
                 "rss_max_mb": max(r["rss"] for r in rows) / MB, "rss_growth_mb": growth,
                 "fds": [rows[0]["fds"], rows[-1]["fds"]],
                 "threads": [rows[0]["threads"], rows[-1]["threads"]]}
        if phase != "overall" and rows[-1]["seconds"] > 0:
            entry["seconds"] = rows[-1]["seconds"]
            entry["calls_per_second"] = rows[-1]["calls"] / rows[-1]["seconds"]
        summary["phases"][phase] = entry
        if growth > threshold_mb:
            failures.append(f"{phase}: RSS grew {growth:.2f} MB (median of the last quarter of "
                            f"the samples against the first) > {threshold_mb} MB")
    if table[-1]["fds"] > base["fds"]:
        failures.append(f"open file descriptors grew: {base['fds']} -> {table[-1]['fds']}")
    if table[-1]["threads"] > base["threads"]:
        failures.append(f"threads grew: {base['threads']} -> {table[-1]['threads']}")
    overall = summary["phases"]["overall"]
    print(f"RSS {overall['rss_start_mb']:.1f} MB after the warm-up, {overall['rss_end_mb']:.1f} "
          f"MB at the end, {overall['rss_max_mb']:.1f} MB at most; fds {base['fds']} -> "
          f"{table[-1]['fds']}, threads {base['threads']} -> {table[-1]['threads']}", file=out)
    print("RSS growth (median of the last quarter of the samples - of the first): " + ", ".join(
        f"{p} {e['rss_growth_mb']:+.2f} MB" for p, e in summary["phases"].items())
        + f"; threshold {threshold_mb} MB", file=out)
    for phase in PHASES:
        entry = summary["phases"].get(phase, {})
        if "calls_per_second" in entry:
            print(f"{phase}: {counts[phase]} calls in {entry['seconds']:.1f} s "
                  f"({entry['calls_per_second']:.0f} calls/s)", file=out)
    summary.update(passed=not failures, failures=failures, threshold_mb=threshold_mb,
                   counts=counts, warmup=warmup, leak=leak, samples=table)
    print("SOAK " + ("PASSED" if not failures else "FAILED: " + "; ".join(failures)), file=out,
          flush=True)
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--forward", type=int, default=LONG["forward"])
    parser.add_argument("--train", type=int, default=LONG["train"])
    parser.add_argument("--errors", type=int, default=LONG["errors"])
    parser.add_argument("--samples", type=int, default=20, help="samples per phase")
    parser.add_argument("--threshold-mb", type=float, default=4.0)
    parser.add_argument("--leak", choices=["memory", "fd", "thread"], default=None,
                        help="inject a leak, to check that it is caught")
    parser.add_argument("--leak-kib", type=int, default=2,
                        help="KiB kept per call by --leak memory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if not os.path.exists("/proc/self/statm"):
        parser.error("needs Linux's /proc")
    result = run(args.forward, args.train, args.errors, samples=args.samples,
                 threshold_mb=args.threshold_mb, leak=args.leak, leak_kib=args.leak_kib,
                 seed=args.seed)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
