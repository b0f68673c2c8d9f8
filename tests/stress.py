"""Stress: several Python threads calling one GRU and one GRUCell at once, every result checked.

    python tests/stress.py                      # 4 threads for 60 s (issue #14)
    python tests/stress.py --duration 15        # tests/test_soak.py's

What is shared, and what is not, follows what the README promises: "One module may be called
from several Python threads at once", and a backward "may be called any number of times, from
any thread". So every thread calls forward (dense, packed, cell steps) and vjp + backward on
the shared GRU and GRUCell, and all call one shared backward (one tape) too. An optimizer
step replaces a module's weights, which is not promised to be safe while other threads call
that module, so each thread trains its own copy of the two modules with its own Adam, in
episodes of a few steps that restart from the same weights and optimizer state.

Every result is compared with one computed beforehand in the main thread, alone, at the same
cgru thread count (1 or 2; float32 results at other thread counts differ by about 1e-6), and
must be equal bit for bit: at a fixed thread count the kernel's arithmetic is deterministic
(checked first, by computing everything twice). A deadlock is reported, not waited for: if any
worker makes no progress for --stall seconds, the others are stopped, every thread's traceback
is printed and the process exits with status 1 (a deadlock that holds the GIL: faulthandler,
from its own C thread, after twice that). Exit status 0 when every result was right.
"""
import argparse
import copy
import faulthandler
import os
import sys
import threading
import time
import traceback

import numpy as np

import cgru
import cgru.optim

THREAD_COUNTS = (1, 2)
EPISODE_STEPS = 3


def build(seed=0):
    """The shared modules and the fixed inputs every thread draws from."""
    rng = np.random.default_rng(seed)
    gru = cgru.GRU(8, 32, 2, bidirectional=True, seed=seed)
    cell = cgru.GRUCell(8, 32, seed=seed + 1)

    def x(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    dense = []
    for L, N in [(1, 1), (7, 3), (20, 16), (40, 5), (12, 64), (3, 9)]:
        dense.append({"x": x(L, N, 8), "hx": x(4, N, 32), "g_out": x(L, N, 64),
                      "g_h": x(4, N, 32)})
    packed = []
    for L, N in [(15, 6), (30, 20), (5, 2)]:
        lengths = rng.integers(1, L + 1, size=N)
        lengths[0] = L
        sequence = cgru.pack_padded_sequence(x(L, N, 8), lengths, enforce_sorted=False)
        packed.append({"x": sequence, "hx": x(4, N, 32), "g_out": x(*sequence.data.shape[:1], 64),
                       "g_h": x(4, N, 32)})
    steps = []
    for N in (1, 5, 33):
        steps.append({"x": x(N, 8), "hx": x(N, 32), "g": x(N, 32)})
    train = [{"x": x(10, 4, 8), "target": x(10, 4, 64), "cell_x": x(4, 8),
              "cell_target": x(4, 32)} for _ in range(EPISODE_STEPS)]
    shared_x = x(25, 7, 8)
    shared_grads = (x(25, 7, 64), x(4, 7, 32))
    with cgru.use_threads(1):
        _, shared_backward = gru.vjp(shared_x)
    return {"gru": gru, "cell": cell, "dense": dense, "packed": packed, "steps": steps,
            "train": train, "shared_backward": shared_backward, "shared_grads": shared_grads}


# -- the operations: each returns a flat list of arrays to compare ------------------------------

def op_forward(w, k):
    case = w["dense"][k % len(w["dense"])]
    out, h = w["gru"](case["x"], case["hx"] if k % 2 else None)
    return [out, h]


def op_packed(w, k):
    case = w["packed"][k % len(w["packed"])]
    out, h = w["gru"](case["x"], case["hx"])
    return [out.data, h]


def op_cell(w, k):
    case = w["steps"][k % len(w["steps"])]
    h = w["cell"](case["x"], case["hx"])
    return [h, w["cell"](case["x"][0], h[0])]


def op_vjp(w, k):
    case = w["dense"][k % len(w["dense"])]
    (out, h), backward = w["gru"].vjp(case["x"], case["hx"])
    grads = backward(case["g_out"], case["g_h"])
    return [out, h] + list(grads.values())


def op_vjp_packed(w, k):
    case = w["packed"][k % len(w["packed"])]
    (out, h), backward = w["gru"].vjp(case["x"], case["hx"])
    grads = backward(case["g_out"], case["g_h"])
    return [out.data, h] + list(grads.values())


def op_cell_vjp(w, k):
    case = w["steps"][k % len(w["steps"])]
    h, backward = w["cell"].vjp(case["x"], case["hx"])
    return [h] + list(backward(case["g"]).values())


def op_shared_backward(w, k):
    return list(w["shared_backward"](*w["shared_grads"]).values())


class Trainer:
    """One thread's own copies of the shared modules, each with its own Adam."""

    def __init__(self, w):
        self.gru, self.cell = copy.deepcopy(w["gru"]), copy.deepcopy(w["cell"])
        self.start = (self.gru.state_dict(), self.cell.state_dict())
        self.opt = cgru.optim.Adam(self.gru, lr=1e-2)
        self.cell_opt = cgru.optim.Adam(self.cell, lr=1e-2)
        self.opt_start = (self.opt.state_dict(), self.cell_opt.state_dict())

    def episode(self, w):
        """EPISODE_STEPS steps from the same start: the final weights and the losses."""
        self.gru.load_state_dict(self.start[0])
        self.cell.load_state_dict(self.start[1])
        self.opt.load_state_dict(self.opt_start[0])
        self.cell_opt.load_state_dict(self.opt_start[1])
        losses = []
        for batch in w["train"]:
            (out, _), backward = self.gru.vjp(batch["x"])
            diff = out - batch["target"]
            losses.append(np.float32((diff * diff).mean()))
            self.opt.step(backward(2 * diff / diff.size, None))
            h, cell_backward = self.cell.vjp(batch["cell_x"])
            cell_diff = h - batch["cell_target"]
            losses.append(np.float32((cell_diff * cell_diff).mean()))
            self.cell_opt.step(cell_backward(2 * cell_diff / cell_diff.size))
        return (np.array(losses), *self.gru.state_dict().values(),
                *self.cell.state_dict().values())


def op_train(w, k, trainer):
    return list(trainer.episode(w))


OPS = {"forward": op_forward, "packed": op_packed, "cell": op_cell, "vjp": op_vjp,
       "vjp_packed": op_vjp_packed, "cell_vjp": op_cell_vjp,
       "shared_backward": op_shared_backward, "train": op_train}
CASES = {"forward": "dense", "packed": "packed", "cell": "steps", "vjp": "dense",
         "vjp_packed": "packed", "cell_vjp": "steps", "shared_backward": None, "train": None}


def _variants(w, name):
    """The k values that give distinct calls of an operation."""
    if name == "forward":
        return range(2 * len(w["dense"]))                  # with and without hx
    return range(len(w[CASES[name]])) if CASES[name] else range(1)


def _call(w, name, k, trainer):
    if name == "train":
        return op_train(w, k, trainer)
    return OPS[name](w, k)


def expected_results(w):
    """{(op, k, threads): [arrays]}, each computed twice (alone) and checked to be equal."""
    trainer = Trainer(w)
    expected = {}
    for name in OPS:
        for k in _variants(w, name):
            for n in THREAD_COUNTS:
                with cgru.use_threads(n):
                    first = _call(w, name, k, trainer)
                    second = _call(w, name, k, trainer)
                for a, b in zip(first, second):
                    if not np.array_equal(a, b):
                        raise AssertionError(f"{name}[{k}] at {n} threads is not deterministic "
                                             f"(max difference {np.abs(a - b).max():.3g})")
                expected[name, k, n] = [np.array(a, copy=True) for a in first]
    return expected


def _compare(got, want):
    """None when equal, else what differs."""
    if len(got) != len(want):
        return f"{len(got)} results, expected {len(want)}"
    for i, (a, b) in enumerate(zip(got, want)):
        a = np.asarray(a)
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"result {i}: {a.dtype}{a.shape}, expected {b.dtype}{b.shape}"
        if not np.array_equal(a, b):
            return f"result {i}: max difference {np.abs(a - b).max():.3g}"
    return None


def worker(index, w, expected, deadline, stop, progress, counts, failures, inject=None):
    try:
        trainer = Trainer(w)
        names = list(OPS)
        j = 0
        while time.monotonic() < deadline and not stop.is_set():
            if inject and index == 0 and j == (0 if inject == "deadlock" else 50):
                _inject(inject, w)
            name = names[(j + index) % len(names)]
            variants = _variants(w, name)
            k = variants[(j // len(names) + index) % len(variants)]
            n = THREAD_COUNTS[(j // 3 + index) % len(THREAD_COUNTS)]
            with cgru.use_threads(n):
                got = _call(w, name, k, trainer)
            problem = _compare(got, expected[name, k, n])
            if problem:
                failures.append(f"thread {index}, call {j}: {name}[{k}] at {n} threads: "
                                f"{problem}")
                stop.set()
                return
            counts[index][name] = counts[index].get(name, 0) + 1
            progress[index] += 1
            j += 1
    except BaseException:
        failures.append(f"thread {index}: {traceback.format_exc()}")
        stop.set()


def _inject(kind, w):
    """--inject: show that the checks catch what they are there for."""
    if kind == "deadlock":          # this worker stops making progress: the watchdog fires
        lock = threading.Lock()
        lock.acquire()
        lock.acquire()
    elif kind == "mutate":          # a shared module changes: results no longer match
        w["gru"].weight_hh_l0 = w["gru"].weight_hh_l0 * np.float32(1.001)


def _report_stall(pool, alive, now, seen, stall, stop):
    """Stop the workers that still move, print every thread's traceback, exit with status 1."""
    stuck = [pool[i].name for i in alive if now[i] <= seen[i]]
    stop.set()
    for thread in pool:
        if thread.name not in stuck:
            thread.join(timeout=stall)
    sys.stdout.flush()
    print(f"Timeout: {', '.join(stuck)} made no progress for {stall:g} s", file=sys.stderr)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(1)


def run(duration=60.0, threads=4, stall=60.0, seed=0, inject=None, out=sys.stdout):
    """Run the stress test; print a summary to `out`; return a dict ("passed")."""
    w = build(seed)
    before = (w["gru"].state_dict(), w["cell"].state_dict())
    started = time.perf_counter()
    expected = expected_results(w)
    print(f"cgru {cgru.__version__} stress: {threads} Python threads for {duration:g} s on one "
          f"{w['gru']!r} and one {w['cell']!r}; {len(expected)} expected results computed in "
          f"{time.perf_counter() - started:.1f} s; cgru thread counts {THREAD_COUNTS}",
          file=out)
    stop = threading.Event()
    progress = [0] * threads
    counts = [{} for _ in range(threads)]
    failures = []
    deadline = time.monotonic() + duration
    pool = [threading.Thread(target=worker, name=f"stress-{i}",
                             args=(i, w, expected, deadline, stop, progress, counts, failures,
                                   inject))
            for i in range(threads)]
    # Two watchdogs. This loop's: a worker without progress for `stall` seconds stops the
    # others, and once they have finished their calls, every thread's traceback is printed
    # (dumping the stacks of threads still running Python can crash the interpreter:
    # faulthandler reads them without the GIL). faulthandler's own, at twice that, from its C
    # thread: for a deadlock that holds the GIL, where this loop cannot run.
    faulthandler.dump_traceback_later(2 * stall, exit=True)
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    seen = list(progress)
    last_move = time.monotonic()
    while any(thread.is_alive() for thread in pool):
        time.sleep(0.5)
        now = list(progress)
        alive = [i for i, thread in enumerate(pool) if thread.is_alive()]
        if all(now[i] > seen[i] for i in alive):          # every live worker moved on
            faulthandler.dump_traceback_later(2 * stall, exit=True)
            seen, last_move = now, time.monotonic()
        elif time.monotonic() - last_move > stall:
            _report_stall(pool, alive, now, seen, stall, stop)
    faulthandler.cancel_dump_traceback_later()
    elapsed = time.perf_counter() - started
    for thread in pool:
        thread.join()
    after = (w["gru"].state_dict(), w["cell"].state_dict())
    for saved, now in zip(before, after):
        for key in saved:
            if not np.array_equal(saved[key], now[key]):
                failures.append(f"shared parameter {key} changed")
    names = list(OPS)
    print(f"{'thread':>6} " + " ".join(f"{n:>15}" for n in names) + f" {'total':>7}", file=out)
    for i, c in enumerate(counts):
        print(f"{i:6d} " + " ".join(f"{c.get(n, 0):15d}" for n in names)
              + f" {sum(c.values()):7d}", file=out)
    total = sum(sum(c.values()) for c in counts)
    print(f"{total} calls checked in {elapsed:.1f} s ({total / elapsed:.0f} calls/s; a train "
          f"call is an episode of {EPISODE_STEPS} steps on two modules), "
          f"{len(failures)} failures", file=out)
    for failure in failures:
        print("FAILURE: " + failure, file=out)
    print("STRESS " + ("PASSED" if not failures else "FAILED"), file=out)
    return {"passed": not failures, "failures": failures, "calls": total, "seconds": elapsed,
            "counts": counts}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--threads", type=int, default=4, help="Python threads (default 4)")
    parser.add_argument("--stall", type=float, default=60.0,
                        help="seconds without progress that count as a deadlock")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inject", choices=["deadlock", "mutate"], default=None,
                        help="inject a fault, to check that it is caught")
    args = parser.parse_args(argv)
    faulthandler.enable()
    result = run(args.duration, args.threads, args.stall, args.seed, args.inject)
    sys.stdout.flush()
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
