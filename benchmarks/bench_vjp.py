"""The forward of vjp against the plain forward, on every case of the grid; prints tables.

    python benchmarks/bench_vjp.py --threads 1,2 [--cases S1,...,S8] [--rounds 15]

vjp runs the forward pass and keeps what its backward needs (per layer: the input rows, the
gates and the state each row started from); this measures what keeping it costs. For each
case, `gru(x, h0)` and `gru.vjp(x, h0)` run interleaved in one process, their order flipping
every round, each sample as many calls as fill 20 ms; the table gives the medians and the
vjp's time over the forward's. Packed cases (S8) pass a PackedSequence to both. Needs only
cgru (cases and timing helpers from cgru.bench).
"""
import argparse
import sys

import numpy as np

from cgru import GRU, pack_padded_sequence, use_threads
from cgru.bench import CASES, describe_case, describe_cpu, make_case, make_inputs, time_once

SAMPLE_SECONDS = 0.02
LONG_CALL = 0.1       # calls longer than this get a third of the rounds (S5, S6)


def measure(name, threads, rounds):
    """Median seconds of the forward and of vjp's forward for case `name`."""
    case = make_case(name)
    x, h0 = make_inputs(case)
    gru = GRU(case.input_size, case.hidden_size, case.num_layers,
              bidirectional=case.bidirectional, dtype=case.dtype, seed=0)
    source = x if case.lengths is None else pack_padded_sequence(x, case.lengths,
                                                                 enforce_sorted=False)
    calls = {"forward": lambda: gru(source, h0), "vjp": lambda: gru.vjp(source, h0)}
    with use_threads(threads):
        first = max(time_once(calls["forward"]), time_once(calls["vjp"]))
        inner = max(1, int(SAMPLE_SECONDS / first))
        n = rounds if first < LONG_CALL else max(3, rounds // 3)
        samples = {label: [] for label in calls}
        for r in range(n):
            for label in (list(calls) if r % 2 == 0 else list(calls)[::-1]):
                samples[label].append(time_once(calls[label], inner))
    return {label: float(np.median(times)) for label, times in samples.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    parser.add_argument("--cases", default=",".join(CASES), help="grid cases, e.g. S1,S4")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    names = [c.strip().upper() for c in args.cases.split(",")]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {list(CASES)}")
    try:
        threads_list = [int(t) for t in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads: expected integers like 1,2, got {args.threads!r}")
    print(describe_cpu())
    for name in names:
        print(describe_case(name))
    for threads in threads_list:
        print(f"\n## {threads} thread{'s' if threads > 1 else ''}\n")
        print("| case | forward ms | vjp ms | vjp over forward |")
        print("|---|---|---|---|")
        for name in names:
            t = measure(name, threads, args.rounds)
            print(f"| {name} | {1e3 * t['forward']:.3f} | {1e3 * t['vjp']:.3f} | "
                  f"{100 * (t['vjp'] / t['forward'] - 1):+.1f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
