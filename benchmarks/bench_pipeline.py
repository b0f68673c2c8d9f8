"""cgru inside a NumPy pipeline: calls that follow NumPy's own BLAS work, a greedy decoder, and
a machine with one core taken by another process. Prints tables.

    python benchmarks/bench_pipeline.py [--quick] [--threads 1,2] [--rounds 7]
                                        [--sections interleaved,decode,busy] [--pool numpy]
                                        [--adaptive]

interleaved  each case timed back to back (cgru, cgru, ...) and interleaved with a NumPy
             "head" (a 2000x256 @ 256x74 float32 product, then cgru; only cgru is timed), in
             alternating rounds; the ratio interleaved / back to back, per thread count.
decode       a greedy seq2seq decoder written in NumPy around cgru (random weights): a packed
             encoder over many short sequences, then one batched GRUCell step per output token
             with a NumPy linear head, argmax and embedding lookup between steps; 1 thread
             against the others.
busy         a busy-loop process (multiprocessing) holds a core while cgru runs; each thread
             count against 1 thread.
numpy        (on request) NumPy's own products with OpenBLAS's threads and on cgru's pool.
estimators   (on request; scikit-learn) GRUClassifier fit (2 epochs) and predict, their NumPy
             head between GRU calls, against the same with NumPy's OpenBLAS held at one thread
             (where no thread of it can be left spinning): the ratio is what the head costs.
dask         (on request; dask) a dask.array pipeline, a NumPy product per chunk before
             cgru.dask.forward and one after, sync and threaded schedulers, against the same
             with NumPy's OpenBLAS at one thread.

--pool numpy runs the whole benchmark after cgru.share_blas_threads() (NumPy's OpenBLAS runs
its threads on cgru's OpenMP pool), --adaptive after cgru.set_load_adaptive(True) (a call uses
only the cores free of other runnable tasks); see the README, "Inside NumPy pipelines".
Medians of every timed call of all rounds; the variants compared alternate within each round,
so that load from elsewhere falls on all of them alike.
"""
import argparse
import contextlib
import multiprocessing
import os
import sys
import time

import numpy as np

import cgru
from cgru import GRU, GRUCell, QuantizedGRU, pack_sequence, use_threads
from cgru.bench import numpy_blas_single_threaded

HEAD_ROWS, HEAD_IN, HEAD_OUT = 2000, 256, 74


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _median_ms(samples):
    return float(np.median(samples)) * 1e3 if samples else float("nan")


# -- the cases -------------------------------------------------------------------------------


def _one_step(batch, dtype, rng):
    gru = GRU(256, 256, dtype=dtype)
    x = rng.standard_normal((1, batch, 256)).astype(dtype)
    return gru, x


def make_cases(quick, rng):
    """(name, run) pairs; run() is one cgru call (or forward + backward)."""
    cases = []
    batches = (64, 500) if quick else (64, 500, 2000)
    for batch in batches:
        gru, x = _one_step(batch, "float32", rng)
        cases.append((f"T=1 N={batch} f32", lambda gru=gru, x=x: gru(x)))
    gru, x = _one_step(500, "float64", rng)
    cases.append(("T=1 N=500 f64", lambda: gru(x)))
    s4 = GRU(64, 128)
    x4 = rng.standard_normal((100, 32, 64)).astype(np.float32)
    cases.append(("S4 f32", lambda: s4(x4)))
    if not quick:
        g, xv = _one_step(500, "float32", rng)
        grad = np.ones((1, 500, 256), np.float32)

        def vjp():
            (_, _), backward = g.vjp(xv)
            backward(grad)
        cases.append(("T=1 N=500 vjp+bwd", vjp))
        q = QuantizedGRU.from_float(GRU(256, 256), "int8")
        xq = rng.standard_normal((1, 500, 256)).astype(np.float32)
        cases.append(("T=1 N=500 int8", lambda: q(xq)))
    return cases


def interleaved(cases, threads, rounds, calls, head):
    """Rows (case, threads, back-to-back ms, interleaved ms, ratio)."""
    rows = []
    for name, run in cases:
        for n in threads:
            with use_threads(n):
                run()
                b2b, inter = [], []
                for _ in range(rounds):
                    for _ in range(calls):
                        t0 = time.perf_counter()
                        run()
                        b2b.append(time.perf_counter() - t0)
                    for _ in range(calls):
                        head()
                        t0 = time.perf_counter()
                        run()
                        inter.append(time.perf_counter() - t0)
            a, b = _median_ms(b2b), _median_ms(inter)
            rows.append((name, n, a, b, b / a))
    return rows


# -- the decoder -----------------------------------------------------------------------------


class GreedyDecoder:
    """A random grapheme-to-phoneme-like encoder-decoder: embeddings (V_in, E) -> packed GRU
    encoder (E -> H) -> GRUCell decoder (E -> H) fed its own argmax through (V_out, E)."""

    def __init__(self, rng, v_in=30, v_out=HEAD_OUT, emb=64, hidden=256):
        self.emb_in = rng.standard_normal((v_in, emb)).astype(np.float32)
        self.emb_out = rng.standard_normal((v_out, emb)).astype(np.float32)
        self.encoder = GRU(emb, hidden)
        self.decoder = GRUCell(emb, hidden)
        self.w_out = (rng.standard_normal((hidden, v_out)) / np.sqrt(hidden)).astype(np.float32)
        self.b_out = np.zeros(v_out, np.float32)

    def __call__(self, words, steps):
        packed = pack_sequence([self.emb_in[w] for w in words], enforce_sorted=False)
        _, h = self.encoder(packed)
        h = h[0]
        token = np.zeros(len(words), np.int64)
        out = np.empty((steps, len(words)), np.int64)
        for t in range(steps):
            h = self.decoder(self.emb_out[token], h)
            token = np.argmax(h @ self.w_out + self.b_out, axis=1)
            out[t] = token
        return out


def decode(threads, rounds, quick, rng):
    n_words = 500 if quick else 2000
    words = [rng.integers(0, 30, size=rng.integers(3, 13)) for _ in range(n_words)]
    model = GreedyDecoder(rng)
    steps = 6 if quick else 20
    times = {n: [] for n in threads}
    results = {}
    for _ in range(rounds):
        for n in threads:
            with use_threads(n):
                t0 = time.perf_counter()
                results[n] = model(words, steps)
                times[n].append(time.perf_counter() - t0)
    same = all(np.array_equal(results[threads[0]], r) for r in results.values())
    return {n: _median_ms(v) for n, v in times.items()}, n_words, steps, same


# -- a busy core -----------------------------------------------------------------------------


def _spin(stop):
    while not stop.is_set():
        pass


def busy(cases, threads, rounds, calls):
    """Rows (case, threads, ms, ratio to 1 thread) while a busy-loop process runs."""
    stop = multiprocessing.Event()
    proc = multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
    proc.start()
    try:
        time.sleep(0.2)
        rows = []
        for name, run in cases:
            samples = {n: [] for n in threads}
            for _ in range(rounds):
                for n in threads:
                    with use_threads(n):
                        run()
                        for _ in range(calls):
                            t0 = time.perf_counter()
                            run()
                            samples[n].append(time.perf_counter() - t0)
            one = _median_ms(samples[threads[0]])
            for n in threads:
                m = _median_ms(samples[n])
                rows.append((name, n, m, m / one))
    finally:
        stop.set()
        proc.join(5)
    return rows


def numpy_cost(rounds, calls, rng):
    """Rows (product, ms with OpenBLAS's own threads, ms on cgru's pool, ratio): NumPy back
    to back, the two settings alternating by round; None where sharing is not possible."""
    a = rng.standard_normal((HEAD_ROWS, HEAD_IN)).astype(np.float32)
    w = rng.standard_normal((HEAD_IN, HEAD_OUT)).astype(np.float32)
    big = rng.standard_normal((1000, 1000)).astype(np.float32)
    mid = rng.standard_normal((300, 300))
    mat = rng.standard_normal((4000, 4000))
    vec = rng.standard_normal(4000)
    products = [("2000x256 @ 256x74 f32", lambda: a @ w),
                ("1000x1000 @ 1000x1000 f32", lambda: big @ big),
                ("300x300 @ 300x300 f64", lambda: mid @ mid),
                ("4000x4000 @ 4000 f64 (gemv)", lambda: mat @ vec)]
    try:
        cgru.share_blas_threads()
    except RuntimeError as error:
        print(f"(sharing not possible: {error})\n")
        return None
    samples = {(name, mode): [] for name, _ in products for mode in (False, True)}
    try:
        for _ in range(rounds):
            for mode in (False, True):
                if mode:
                    cgru.share_blas_threads()
                else:
                    cgru.share_blas_threads(False)
                # let the other pool's threads finish spinning (OpenBLAS's spin 2^28 ticks,
                # 0.12 s here): timed at once, a product found them holding a core (1000^3
                # float32 on cgru's pool 25.8 ms in the same process, 10.8 in its own)
                time.sleep(0.3)
                for name, run in products:
                    run()
                    for _ in range(calls):
                        t0 = time.perf_counter()
                        run()
                        samples[name, mode].append(time.perf_counter() - t0)
    finally:
        cgru.share_blas_threads(False)
    rows = []
    for name, _ in products:
        own, shared = _median_ms(samples[name, False]), _median_ms(samples[name, True])
        rows.append((name, own, shared, shared / own))
    return rows


# -- estimators and dask: against NumPy's OpenBLAS held at one thread -------------------------


def _against_blas_at_one(variants, threads, rounds):
    """variants: name -> function; rows (name, threads, ms, ms at one BLAS thread, ratio)."""
    rows = []
    for name, run in variants.items():
        samples = {(n, one): [] for n in threads for one in (False, True)}
        for r in range(rounds):
            for n in threads:
                for one in ((False, True) if r % 2 == 0 else (True, False)):
                    with use_threads(n), (numpy_blas_single_threaded() if one
                                          else contextlib.nullcontext()):
                        t0 = time.perf_counter()
                        run()
                        samples[n, one].append(time.perf_counter() - t0)
        for n in threads:
            mine, ref = _median_ms(samples[n, False]), _median_ms(samples[n, True])
            rows.append((name, n, mine, ref, mine / ref))
    return rows


def estimators(threads, rounds, quick, rng):
    from cgru.sklearn import GRUClassifier
    import warnings
    n, steps, features = (300 if quick else 1500), 30, 16
    X = rng.standard_normal((n, steps, features)).astype(np.float32)
    y = (X[:, :, 0].sum(1) > 0).astype(int) + (X[:, :, 1].sum(1) > 0)
    clf = GRUClassifier(hidden_size=128, max_iter=2, batch_size=64, random_state=0, tol=-1)

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(X, y)

    fit()

    def predict():
        for _ in range(5):
            clf.predict(X)

    return n, steps, _against_blas_at_one({"fit (2 epochs)": fit, "predict x5": predict},
                                          threads, rounds)


def dask_pipeline(threads, rounds, quick, rng):
    import dask
    import dask.array as da
    import cgru.dask
    steps, batch, chunk = 50, (1024 if quick else 4096), 512
    feats = da.from_array(rng.standard_normal((steps, batch, 256)).astype(np.float32),
                          chunks=(steps, chunk, 256))
    proj = rng.standard_normal((256, 64)).astype(np.float32)
    head_w = rng.standard_normal((128, HEAD_OUT)).astype(np.float32)
    gru = GRU(64, 128, seed=0)

    def pipeline(scheduler):
        x = feats.map_blocks(lambda b: b @ proj, chunks=(steps, chunk, 64), dtype=np.float32)
        _, h_n = cgru.dask.forward(gru, x)
        logits = h_n.map_blocks(lambda h: h @ head_w, chunks=(1, chunk, HEAD_OUT),
                                dtype=np.float32)
        with dask.config.set(scheduler=scheduler):
            return float(logits.sum().compute())

    return steps, batch, chunk, _against_blas_at_one(
        {f"{s} scheduler": (lambda s=s: pipeline(s)) for s in ("sync", "threads")},
        threads, rounds)


def _table(header, rows, formats):
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(f(v) for f, v in zip(formats, row)) + " |")
    print()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--threads", default="1,2", help="thread counts, first is the baseline")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--sections", default="interleaved,decode,busy",
                        help="of interleaved,decode,busy,numpy,estimators,dask (numpy: what "
                             "sharing costs NumPy's own products)")
    parser.add_argument("--pool", choices=["default", "numpy"], default="default",
                        help="numpy: cgru.share_blas_threads() first")
    parser.add_argument("--adaptive", action="store_true",
                        help="cgru.set_load_adaptive(True) first")
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    sections = args.sections.split(",")
    rounds = args.rounds or (2 if args.quick else 7)
    calls = 5 if args.quick else 30
    rng = np.random.default_rng(0)
    if args.pool == "numpy":
        cgru.share_blas_threads()
    if args.adaptive:
        cgru.set_load_adaptive(True)
    print(f"# bench_pipeline: {_cpu()}, {os.cpu_count()} CPUs, threads {threads}, "
          f"rounds {rounds}, pool {args.pool}, load-adaptive {args.adaptive}, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}\n")
    head_a = rng.standard_normal((HEAD_ROWS, HEAD_IN)).astype(np.float32)
    head_w = rng.standard_normal((HEAD_IN, HEAD_OUT)).astype(np.float32)

    def head():
        head_a @ head_w

    cases = make_cases(args.quick, rng)
    if "interleaved" in sections:
        print(f"## after a NumPy {HEAD_ROWS}x{HEAD_IN} @ {HEAD_IN}x{HEAD_OUT} product "
              "(ms per cgru call, medians)\n")
        rows = interleaved(cases, threads, rounds, calls, head)
        _table(["case", "threads", "back to back", "interleaved", "ratio"], rows,
               [str, str, "{:.3f}".format, "{:.3f}".format, "{:.2f}x".format])
    if "decode" in sections:
        times, n_words, steps, same = decode(threads, rounds, args.quick, rng)
        print(f"## greedy decoder: {n_words} words, {steps} output steps (ms per decode)\n")
        one = times[threads[0]]
        _table(["threads", "ms", f"speed-up over {threads[0]}"],
               [(n, times[n], one / times[n]) for n in threads],
               [str, "{:.1f}".format, "{:.2f}x".format])
        print(f"same tokens at every thread count: {same}\n")
    if "numpy" in sections:
        print("## NumPy alone: OpenBLAS's own threads against cgru's pool "
              "(share_blas_threads; ms per product, medians)\n")
        rows = numpy_cost(rounds, calls, rng)
        if rows:
            _table(["product", "own threads", "cgru's pool", "ratio"], rows,
                   [str, "{:.3f}".format, "{:.3f}".format, "{:.2f}x".format])
    header = ["", "threads", "ms", "NumPy's BLAS at 1 thread", "ratio"]
    formats = [str, str, "{:.1f}".format, "{:.1f}".format, "{:.2f}x".format]
    if "estimators" in sections:
        n, steps, rows = estimators(threads, rounds, args.quick, rng)
        print(f"## GRUClassifier (hidden 128), {n} sequences of {steps} steps (ms, medians)\n")
        _table(header, rows, formats)
    if "dask" in sections:
        steps, batch, chunk, rows = dask_pipeline(threads, rounds, args.quick, rng)
        print(f"## dask: NumPy product, cgru.dask.forward, NumPy head; {batch} sequences of "
              f"{steps} steps in chunks of {chunk} (ms, medians)\n")
        _table(header, rows, formats)
    if "busy" in sections:
        print("## a busy-loop process holds a core (ms per call, medians)\n")
        busy_cases = [c for c in cases if not c[0].startswith("T=1 N=500 ")][:4]
        rows = busy(busy_cases, threads, rounds, calls)
        _table(["case", "threads", "ms", f"vs {threads[0]} thread"], rows,
               [str, str, "{:.3f}".format, "{:.2f}x".format])
    return 0


if __name__ == "__main__":
    sys.exit(main())
