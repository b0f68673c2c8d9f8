"""Two builds of cgru side by side: the grid's forward (bench_gru's cases) and training step
(vjp + backward, as bench_train times it), interleaved, at each thread count.

    python benchmarks/bench_versions.py --before ../old-checkout --after . --threads 1,2

Each side is a source tree built in place (`python setup.py build_ext --inplace`). Every round
runs each case once in a fresh process per side, before and after alternating (which goes
first flips every round), and each process reports the median of its own timed calls; the
table gives the median over rounds and after / before. Only cgru's public API is used, so any
two versions compare.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

from cgru.bench import CASES as BENCH_CASES

# the grid's cases as the children take them (JSON: the dtype by name)
CASES = {name: {**spec, "dtype": np.dtype(spec["dtype"]).name} if "dtype" in spec else spec
         for name, spec in BENCH_CASES.items()}

CHILD = r"""
import json, sys, time
import numpy as np
import cgru
spec, task, threads, budget = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
spec = dict(spec)
dtype = np.dtype(spec.pop("dtype", "float32"))
packed = spec.pop("packed", False)
seq_len, batch = spec.pop("seq_len"), spec.pop("batch")
gru = cgru.GRU(spec.pop("input_size"), spec.pop("hidden_size"), dtype=dtype, seed=0, **spec)
rng = np.random.default_rng(0)
lengths = rng.integers(10, 201, size=batch) if packed else None
if packed:
    seq_len = int(lengths.max())
x = rng.uniform(-1, 1, (seq_len, batch, gru.input_size)).astype(dtype)
if packed:
    x = cgru.pack_padded_sequence(x, lengths, enforce_sorted=False)
def forward():
    gru(x)
def train():      # the same work in any version: every gradient, the input's included
    (out, h_n), backward = gru.vjp(x)
    backward(np.ones_like(out.data if packed else out), np.ones_like(h_n))
run = forward if task == "forward" else train
times = []
with cgru.use_threads(threads):
    start = time.perf_counter()
    while time.perf_counter() - start < 0.05 or len(times) < 2:   # warm-up
        t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
    times = []
    start = time.perf_counter()
    while (time.perf_counter() - start < budget and len(times) < 2000) or len(times) < 3:
        t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
print(json.dumps(float(np.median(times))))
"""


def _time(tree, spec, task, threads, budget):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec), task, str(threads),
                          str(budget)], env=env, capture_output=True, text=True,
                         cwd=os.path.abspath(tree), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="source tree of the old version")
    parser.add_argument("--after", required=True, help="source tree of the new version")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--tasks", default="forward,train")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.3,
                        help="seconds of timed calls per process")
    parser.add_argument("--json", help="write the medians here")
    args = parser.parse_args(argv)
    results = {}
    keys = [(task, case, int(threads)) for task in args.tasks.split(",")
            for threads in args.threads.split(",") for case in args.cases.split(",")]
    for round_ in range(args.rounds):
        for key in keys:
            task, case, threads = key
            order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
            for side in order:
                tree = args.before if side == "before" else args.after
                seconds = _time(tree, CASES[case], task, threads, args.budget)
                results.setdefault(key, {}).setdefault(side, []).append(seconds)
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{'task':8} {'case':5} {'threads':>7} {'before ms':>10} {'after ms':>10} "
          f"{'after/before':>12}")
    table = []
    for key in keys:
        before = float(np.median(results[key]["before"])) * 1e3
        after = float(np.median(results[key]["after"])) * 1e3
        table.append(dict(task=key[0], case=key[1], threads=key[2], before_ms=before,
                          after_ms=after, ratio=after / before))
        print(f"{key[0]:8} {key[1]:5} {key[2]:>7} {before:10.3f} {after:10.3f} "
              f"{after / before:12.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
