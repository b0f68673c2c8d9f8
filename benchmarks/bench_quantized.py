"""cgru's bfloat16 and int8 modules against cgru float32 and the peers' own reduced precision.

    python benchmarks/bench_quantized.py --threads 1,2 [--cases S2,S4,S5,S6,S8] [--repeats 9]

Every implementation runs the case from the same weights. The peers, each skipped (its columns
left out) when not installed:
    OpenVINO bf16   OpenVINO on the case's ONNX model with INFERENCE_PRECISION_HINT="bf16", its
                    reduced-precision path (OpenVINO's default on CPUs with AVX512_BF16 or AMX);
                    on a CPU without bfloat16 instructions it computes in float32: the table
                    says what the compiled model reports it ran ("ran"), and the header lists
                    the CPU's flags;
    PyTorch int8    torch.ao.quantization.quantize_dynamic(container holding the nn.GRU, {nn.GRU},
                    dtype=torch.qint8): PyTorch's dynamic int8 GRU (on a bare nn.GRU
                    quantize_dynamic returns the module unchanged).
Each one's max abs error against cgru float32 is printed, then the medians of interleaved timed
samples (the order rotating from one repetition to the next, each sample preceded by as long an
untimed one, as cgru/bench.py does) and the speed-ups: cgru bfloat16 against OpenVINO bf16,
cgru int8 against PyTorch int8.
"""
import argparse
import sys
import time
import warnings

import numpy as np

from cgru import GRU, use_threads
from cgru.bench import (CASES, cgru_runner, describe_cpu, make_case, make_inputs, max_error,
                        onnx_file, openvino_runner, time_once, torch_run)

DEFAULT_CASES = ["S2", "S4", "S5", "S6", "S8"]
# peer column: the cgru precision it is compared with
PEERS = {"OpenVINO bf16": "bfloat16", "PyTorch int8": "int8"}


def torch_dynamic_runner(gru, case, x, h0, threads):
    """(run, None, its quantized engine) for PyTorch's quantize_dynamic int8 GRU, or
    (None, reason, "") without torch."""
    try:
        import torch
    except ImportError:
        return None, "torch not installed", ""
    torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # torch.ao.quantization's deprecation notice
        module = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(gru.to_torch().eval()), {torch.nn.GRU}, dtype=torch.qint8)[0]
    run = torch_run(module, case, x, h0, threads)
    return run, None, f"qint8, {torch.backends.quantized.engine}"


def openvino_bf16_runner(gru, case, x, h0, threads):
    """(run, None, the precision OpenVINO reports it runs) or (None, reason, "")."""
    runner = openvino_runner(gru, case, x, h0, threads, onnx_file(gru, case), precision="bf16")
    return runner.run, runner.skipped or None, runner.precision


def run_case(case, threads, repeats):
    """({name: median seconds}, {name: max abs error against cgru float32}, {peer: why it was
    skipped}, {peer: the precision it reports})."""
    gru = GRU(case.input_size, case.hidden_size, case.num_layers,
              bidirectional=case.bidirectional, seed=0)
    x, h0 = make_inputs(case)
    runs = {"float32": cgru_runner(gru, case, x, h0).run,
            "bfloat16": cgru_runner(gru.quantize("bfloat16"), case, x, h0).run,
            "int8": cgru_runner(gru.quantize("int8"), case, x, h0).run}
    skipped, ran = {}, {}
    ov_run, skipped["OpenVINO bf16"], ran["OpenVINO bf16"] = openvino_bf16_runner(
        gru, case, x, h0, threads)
    torch_run, skipped["PyTorch int8"], ran["PyTorch int8"] = torch_dynamic_runner(
        gru, case, x, h0, threads)
    for name, run in (("OpenVINO bf16", ov_run), ("PyTorch int8", torch_run)):
        if run is not None:
            runs[name] = run
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
    return times, errors, {k: v for k, v in skipped.items() if v}, ran


def _ms(seconds):
    return f"{seconds * 1e3:.3f}" if seconds < 0.01 else f"{seconds * 1e3:.1f}"


def report(rows, threads, out=sys.stdout):
    """rows: (case name, times, errors, skipped, ran) per case. A peer skipped in every row has
    no columns (the reason is printed under the table)."""
    peers = [p for p in PEERS if any(p in times for _, times, _, _, _ in rows)]
    print(f"\n## {threads} thread{'s' if threads > 1 else ''}\n", file=out)
    header = ["case", "float32 ms", "bfloat16 ms (vs float32)", "int8 ms (vs float32)"]
    for peer in peers:
        header += [f"{peer} ms (ran)", f"cgru {PEERS[peer]} vs {peer}"]
    names = ["bfloat16", "int8"] + peers
    header.append("max error vs float32: " + " / ".join(names))
    print("| " + " | ".join(header) + " |", file=out)
    print("|" + "---|" * len(header), file=out)
    for name, times, errors, skipped, ran in rows:
        f, b, i = times["float32"], times["bfloat16"], times["int8"]
        cells = [name, _ms(f), f"{_ms(b)} ({f / b:.2f}x)", f"{_ms(i)} ({f / i:.2f}x)"]
        for peer in peers:
            t = times.get(peer)
            cells += ([f"{_ms(t)} ({ran[peer]})", f"{t / times[PEERS[peer]]:.2f}x"] if t
                      else [f"n/a ({skipped.get(peer, '')})", "n/a"])
        cells.append(" / ".join(f"{errors[n]:.1e}" for n in names if n in errors))
        print("| " + " | ".join(cells) + " |", file=out)
    reasons = {peer: why for _, _, _, skipped, _ in rows for peer, why in skipped.items()
               if peer not in peers}
    for peer, why in reasons.items():
        print(f"\n{peer}: skipped ({why})", file=out)


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
    print(describe_cpu())
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
