"""cgru's bfloat16 and int8 modules against cgru float32 and PyTorch's dynamic int8 GRU.

    python benchmarks/bench_quantized.py --threads 1,2 [--cases S2,S4,S5,S6,S8] [--repeats 9]

Every implementation runs the case from the same weights (PyTorch's: torch.ao.quantization.
quantize_dynamic(..., {nn.GRU}, dtype=torch.qint8) of the float module, skipped without torch);
each one's max abs error against cgru float32 is printed, then the medians of interleaved timed
samples (the order rotating from one repetition to the next, each sample preceded by as long an
untimed one, as cgru/bench.py does) and the speed-ups.
"""
import argparse
import sys
import time
import warnings

import numpy as np

from cgru import GRU, use_threads
from cgru.bench import CASES, cgru_runner, make_case, make_inputs, max_error, time_once

DEFAULT_CASES = ["S2", "S4", "S5", "S6", "S8"]


def torch_dynamic_runner(gru, case, x, h0, threads):
    """(name, run) for PyTorch's quantize_dynamic int8 GRU, or (name, reason) without torch."""
    try:
        import torch
    except ImportError:
        return None, "torch not installed"
    torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # torch.ao.quantization's deprecation notice
        module = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(gru.to_torch().eval()), {torch.nn.GRU}, dtype=torch.qint8)[0]
    tx, th = torch.from_numpy(x), torch.from_numpy(h0)
    lengths = None if case.lengths is None else torch.from_numpy(case.lengths)
    rnn = torch.nn.utils.rnn

    def run():
        torch.set_num_threads(threads)
        with torch.inference_mode():
            if lengths is None:
                out, h_n = module(tx, th)
                return out.numpy(), h_n.numpy()
            packed = rnn.pack_padded_sequence(tx, lengths, enforce_sorted=False)
            out, h_n = module(packed, th)
            out, _ = rnn.pad_packed_sequence(out, total_length=case.seq_len)
            return out.numpy(), h_n.numpy()
    return run, None


def run_case(case, threads, repeats):
    gru = GRU(case.input_size, case.hidden_size, case.num_layers,
              bidirectional=case.bidirectional, seed=0)
    x, h0 = make_inputs(case)
    runs = {"float32": cgru_runner(gru, case, x, h0).run,
            "bfloat16": cgru_runner(gru.quantize("bfloat16"), case, x, h0).run,
            "int8": cgru_runner(gru.quantize("int8"), case, x, h0).run}
    torch_run, skipped = torch_dynamic_runner(gru, case, x, h0, threads)
    if torch_run is not None:
        runs["PyTorch int8"] = torch_run
    with use_threads(threads):
        reference = runs["float32"]()
        errors = {name: max_error(run(), reference) for name, run in runs.items()}
        inner = {name: max(1, int(0.02 / max(time_once(run), 1e-7)))
                 for name, run in runs.items()}
        names = list(runs)
        samples = {name: [] for name in names}
        for repeat in range(repeats):
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                time_once(runs[name], inner[name])
                samples[name].append(time_once(runs[name], inner[name]))
    times = {name: float(np.median(s)) for name, s in samples.items()}
    return times, errors, skipped


def _ms(seconds):
    return f"{seconds * 1e3:.3f}" if seconds < 0.01 else f"{seconds * 1e3:.1f}"


def report(rows, threads, out=sys.stdout):
    print(f"\n## {threads} thread{'s' if threads > 1 else ''}\n", file=out)
    print("| case | float32 ms | bfloat16 ms (vs float32) | int8 ms (vs float32) | "
          "PyTorch int8 ms | bfloat16 vs PyTorch int8 | int8 vs PyTorch int8 | "
          "max error bf16 / int8 / PyTorch int8 |", file=out)
    print("|---|---|---|---|---|---|---|---|", file=out)
    for name, times, errors, skipped in rows:
        f, b, i = times["float32"], times["bfloat16"], times["int8"]
        t = times.get("PyTorch int8")
        torch_cells = ([_ms(t), f"{t / b:.2f}x", f"{t / i:.2f}x"] if t
                       else [f"n/a ({skipped})", "n/a", "n/a"])
        err = " / ".join(f"{errors[n]:.1e}" for n in ("bfloat16", "int8", "PyTorch int8")
                         if n in errors)
        print(f"| {name} | {_ms(f)} | {_ms(b)} ({f / b:.2f}x) | {_ms(i)} ({f / i:.2f}x) | "
              + " | ".join(torch_cells) + f" | {err} |", file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated, from {','.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=9, help="timed samples per result")
    args = parser.parse_args(argv)
    names = [c.strip().upper() for c in args.cases.split(",")]
    unknown = [n for n in names if n not in CASES or CASES[n].get("dtype") is np.float64]
    if unknown:
        parser.error(f"unknown or float64 cases {unknown}")
    for threads in (int(t) for t in args.threads.split(",")):
        rows = []
        for name in names:
            start = time.perf_counter()
            rows.append((name,) + run_case(make_case(name), threads, args.repeats))
            print(f"{name}, {threads} threads: {time.perf_counter() - start:.0f} s",
                  file=sys.stderr)
        report(rows, threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
