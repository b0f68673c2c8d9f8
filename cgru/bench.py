"""The comparison benchmark behind `cgru bench` and benchmarks/bench_gru.py, and the cases and
timing helpers that the other benchmarks in benchmarks/ share.

For each thread count and case it builds cgru and every installed peer from the same weights,
checks each peer's output against cgru's (a peer that disagrees is still timed, and flagged
WRONG in the table), then times them interleaved (each repetition runs every implementation in
turn, in an order that rotates from one repetition to the next: untimed calls for about 20 ms,
then a timed sample of as many calls, so machine drift, and what one runtime leaves behind for
the next, hit all alike) and reports medians, speed-ups
over each peer, and the share of the machine's GEMM limit: the case's FLOPs divided by the
sgemm/dgemm rate measured at the start of the same run at the same thread count.

`import cgru` does not import this module (nor the peers it builds); `cgru bench` imports it
when it runs.
"""
import argparse
import json
import sys
import time

import numpy as np

from ._bench_peers import (Case, Runner, cgru_runner, make_inputs, numpy_runner, onnx_file,
                           openvino_runner, ort_runner, torch_run, torch_runner)
from ._engine import (blas_controller, cpu_features, cpu_model, kernel,
                      numpy_blas_single_threaded, reduced_precision_kernels, use_threads)
from .gru import GRU

__all__ = ["CASES", "SHORT_GRID", "PEERS", "TOLERANCE", "Case", "Runner", "make_case",
           "make_inputs", "cgru_runner", "onnx_file", "torch_run", "torch_runner", "ort_runner",
           "openvino_runner", "numpy_blas_single_threaded",
           "numpy_runner", "describe_case", "describe_cpu", "gemm_rate", "time_once",
           "max_error", "format_time", "run_case", "report", "plot", "main"]

CASES = {
    "S1": dict(seq_len=1, batch=1, input_size=64, hidden_size=128),
    "S2": dict(seq_len=200, batch=1, input_size=64, hidden_size=128),
    "S3": dict(seq_len=100, batch=8, input_size=40, hidden_size=256),
    "S4": dict(seq_len=100, batch=32, input_size=64, hidden_size=128),
    "S5": dict(seq_len=100, batch=64, input_size=256, hidden_size=256, num_layers=2,
               bidirectional=True),
    "S6": dict(seq_len=50, batch=256, input_size=512, hidden_size=512),
    "S7": dict(seq_len=100, batch=16, input_size=64, hidden_size=128, dtype=np.float64),
    "S8": dict(seq_len=200, batch=64, input_size=64, hidden_size=128, packed=True),
}
SHORT_GRID = ["S1", "S2", "S4", "S8"]
PEERS = ["PyTorch", "ONNX Runtime", "OpenVINO", "NumPy"]
TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def make_case(name):
    spec = dict(CASES[name])
    lengths = None
    if spec.pop("packed", False):
        lengths = np.random.default_rng(0).integers(10, 201, size=spec["batch"])
        spec["seq_len"] = int(lengths.max())
    return Case(name=name, lengths=lengths, **spec)


def gemm_rate(dtype, threads, size=1024, repeats=10):
    """GFLOP/s of scipy's sgemm/dgemm (the BLAS cgru calls) at `threads` threads: the best of
    `repeats` after a warm-up. main() measures every rate before any runtime has started a
    thread pool: measured after the 1-thread cases, the 2-thread rate read 208-226 instead of
    272-302 GFLOP/s here, which inflated every 2-thread share."""
    from scipy.linalg import blas
    gemm = blas.sgemm if dtype == np.float32 else blas.dgemm
    a = np.asfortranarray(np.random.default_rng(0).standard_normal((size, size)), dtype=dtype)
    control = blas_controller()
    saved = control.get() if control else None
    if control:
        control.set(threads)
    try:
        for _ in range(3):
            gemm(1.0, a, a)
        best = min(time_once(lambda: gemm(1.0, a, a)) for _ in range(repeats))
    finally:
        if control:
            control.set(saved)
    return 2 * size ** 3 / best / 1e9


def time_once(fn, inner=1):
    """Seconds per call of the zero-argument `fn`, over `inner` calls in a row."""
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


def max_error(got, want):
    """The largest absolute difference between matching arrays of two sequences of arrays."""
    return max(float(np.max(np.abs(np.asarray(g) - np.asarray(w)))) for g, w in zip(got, want))


def run_case(case, threads, repeats, peer_names=tuple(PEERS), pause=0.0):
    """Returns {implementation: median seconds or a skip reason}, and the check errors.

    pause: seconds to sleep after each sample, so that the thread pools of the implementation
    just timed (which spin-wait for a while after a call) are idle when the next one starts.
    """
    gru = GRU(case.input_size, case.hidden_size, case.num_layers,
              bidirectional=case.bidirectional, dtype=case.dtype, seed=0)
    x, h0 = make_inputs(case)
    onnx_path = onnx_file(gru, case)
    runners = [cgru_runner(gru, case, x, h0)]
    if case.lengths is not None:
        runners.append(cgru_runner(gru, case, x, h0, padded=True))
    builders = {"PyTorch": lambda: torch_runner(gru, case, x, h0, threads),
                "ONNX Runtime": lambda: ort_runner(gru, case, x, h0, threads, onnx_path),
                "OpenVINO": lambda: openvino_runner(gru, case, x, h0, threads, onnx_path),
                "NumPy": lambda: numpy_runner(gru, case, x, h0)}
    runners += [builders[name]() for name in PEERS if name in peer_names]
    results, errors = {}, {}
    with use_threads(threads):
        reference = runners[0].run()
        live = []
        for runner in runners:
            if runner.run is None:
                results[runner.name] = runner.skipped
                continue
            try:
                result = runner.run()
            except Exception as error:   # a peer without this case (e.g. ORT in float64)
                results[runner.name] = str(error).split(":")[-1].strip()[:60]
                continue
            if runner.name != "cgru (padded)":  # padded output differs past each length
                errors[runner.name] = max_error(result, reference)
            live.append(runner)
        # enough calls per sample to last ~20 ms, so the timer and call jitter do not dominate
        inner = {r.name: max(1, int(0.02 / max(time_once(r.run), 1e-7))) for r in live}
        samples = {r.name: [] for r in live}
        for repeat in range(repeats):
            # The order rotates from sample to sample, so that each implementation follows
            # each other one equally often: what one leaves behind (caches full of its own
            # data) slowed the next for several calls (cgru's S8: 7.75 ms in a loop of its
            # own, 9.8 ms on its first call after PyTorch's, 8.3 ms on its fifth), and in a
            # fixed order cgru always came right after the NumPy peer.
            for runner in live[repeat % len(live):] + live[:repeat % len(live)]:
                # Untimed first, for as long as the sample lasts (not one call): after another
                # runtime, or any pause, every implementation is slow for some milliseconds
                # (S8 after PyTorch's: cgru 8.8, 8.1, 7.4, 7.1 ms, then 6.9; PyTorch after
                # cgru's: 17.6, 14.7, 13.7, 13.5, then 13.2). One untimed call left a fast
                # implementation in that state for its whole sample and a slow one barely.
                time_once(runner.run, inner[runner.name])
                samples[runner.name].append(time_once(runner.run, inner[runner.name]))
                time.sleep(pause)
    results.update({name: float(np.median(times)) for name, times in samples.items()})
    return results, errors


def format_time(seconds):
    """Milliseconds for a table: 3 decimals under 10 ms, 1 above."""
    return f"{seconds * 1e3:.3f}" if seconds < 0.01 else f"{seconds * 1e3:.1f}"


def report(rows, threads, rates, out=sys.stdout):
    names = [n for n in PEERS if any(n in r["times"] for r in rows)]
    print(f"\n## {threads} thread{'s' if threads > 1 else ''}  (sgemm {rates['float32']:.0f} "
          f"GFLOP/s, dgemm {rates['float64']:.0f} GFLOP/s)\n", file=out)
    header = ["case", "cgru ms", "% GEMM limit"] + [f"{n} ms (speed-up)" for n in names]
    print("| " + " | ".join(header) + " |", file=out)
    print("|" + "---|" * len(header), file=out)
    for row in rows:
        t = row["times"]
        cells = [row["case"], format_time(t["cgru"]), f"{100 * row['gemm_share']:.0f}%"]
        for n in names:
            v = t.get(n)
            cell = (f"{format_time(v)} ({v / t['cgru']:.2f}x)" if isinstance(v, float)
                    else f"n/a ({v})" if v else "n/a")
            if row["errors"].get(n, 0) > TOLERANCE[np.dtype(row["dtype"])]:
                cell += f" WRONG: max error {row['errors'][n]:.1e}"
            cells.append(cell)
        print("| " + " | ".join(cells) + " |", file=out)
    padded = [r for r in rows if "cgru (padded)" in r["times"]]
    for row in padded:
        t = row["times"]
        print(f"\n{row['case']}: cgru packed {format_time(t['cgru'])} ms vs the same batch "
              f"padded {format_time(t['cgru (padded)'])} ms "
              f"({t['cgru (padded)'] / t['cgru']:.2f}x)", file=out)


def plot(all_rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    thread_counts = sorted({r["threads"] for r in all_rows})
    fig, axes = plt.subplots(1, len(thread_counts), figsize=(7 * len(thread_counts), 4),
                             squeeze=False)
    for ax, threads in zip(axes[0], thread_counts):
        rows = [r for r in all_rows if r["threads"] == threads]
        width = 0.8 / len(PEERS)
        for i, peer in enumerate(PEERS):
            ups = [r["times"][peer] / r["times"]["cgru"] if isinstance(r["times"].get(peer), float)
                   else 0 for r in rows]
            ax.bar(np.arange(len(rows)) + i * width, ups, width, label=peer)
        ax.axhline(1, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, [r["case"] for r in rows])
        ax.set_yscale("log")
        ax.set_ylabel("speed-up of cgru (peer time / cgru time)")
        ax.set_title(f"{threads} thread{'s' if threads > 1 else ''}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def describe_case(name):
    """One line saying what case `name` runs, e.g. 'S1  L=1, N=1, H_in=64, H=128'."""
    spec = CASES[name]
    words = [f"L={spec['seq_len']}" if not spec.get("packed") else
             f"lengths 10..{spec['seq_len']} (seed 0)",
             f"N={spec['batch']}", f"H_in={spec['input_size']}", f"H={spec['hidden_size']}"]
    if spec.get("num_layers", 1) != 1:
        words.append(f"{spec['num_layers']} layers")
    if spec.get("bidirectional"):
        words.append("bidirectional")
    words.append(np.dtype(spec.get("dtype", np.float32)).name)
    if spec.get("packed"):
        words.append("packed")
    return f"{name}  {', '.join(words)}"


def describe_cpu():
    """Two lines for a benchmark's report: the CPU's model and the features that decide which
    kernels run (cgru's detection: CPUID, and the OS's register state), then the kernels cgru
    runs on it for float32, bfloat16 and int8."""
    features = cpu_features()
    has = " ".join(name for name, present in features.items() if present) or "none"
    lacks = " ".join(name for name, present in features.items() if not present) or "none"
    quant = reduced_precision_kernels(features)
    build = kernel.__name__.rsplit("_", 1)[-1]
    return (f"CPU: {cpu_model()}; has {has}; lacks {lacks}\n"
            f"cgru's kernels: float32 the {build} build; "
            + "; ".join(f"{precision} {described['kernel']} ({described['instructions']})"
                        for precision, described in quant.items()))


def main(argv=None, default_cases=None, prog=None):
    cases = "\n".join("  " + describe_case(name) for name in CASES)
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="cgru against PyTorch, ONNX Runtime, OpenVINO and NumPy on the same CPU",
        epilog=f"cases (L sequence length, N batch, H_in input size, H hidden size):\n{cases}")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--cases", default=",".join(default_cases or CASES),
                        help=f"comma-separated, from {','.join(CASES)} (default: "
                             f"{','.join(default_cases or CASES)})")
    parser.add_argument("--repeats", type=int, default=9, help="timed samples per result")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help="comma-separated peers to include (default: all installed)")
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds between samples, for other thread pools to go idle")
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON")
    parser.add_argument("--plot", metavar="PNG", help="bar chart of speed-ups (matplotlib)")
    args = parser.parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",")]
    names = [c.strip().upper() for c in args.cases.split(",")]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {list(CASES)}")
    peer_names = [p.strip() for p in args.peers.split(",") if p.strip()]
    if set(peer_names) - set(PEERS):
        parser.error(f"unknown peers {sorted(set(peer_names) - set(PEERS))}; choose from {PEERS}")
    all_rows = []
    all_rates = {threads: {"float32": gemm_rate(np.float32, threads),
                           "float64": gemm_rate(np.float64, threads)}
                 for threads in threads_list}
    for threads in threads_list:
        rates = all_rates[threads]
        rows = []
        for name in names:
            case = make_case(name)
            times, errors = run_case(case, threads, args.repeats, peer_names, args.pause)
            rate = rates[np.dtype(case.dtype).name]
            rows.append(dict(case=name, threads=threads, times=times, errors=errors,
                             dtype=np.dtype(case.dtype).name,
                             flops=case.flops(),
                             gemm_share=case.flops() / (rate * 1e9) / times["cgru"]))
        report(rows, threads, rates)
        all_rows += rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(all_rows, f, indent=1)
    if args.plot:
        plot(all_rows, args.plot)
    return 0
