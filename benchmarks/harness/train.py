"""The training-step benchmark behind benchmarks/bench_train.py: cgru's vjp against autograd.

A training step is forward + backward (+ an Adam step) on the cases of the inference benchmark
(cgru.bench), from the same weights. The loss is a fixed linear function of the outputs,
sum(output * G) + sum(h_n * G_h) with fixed random G and G_h: PyTorch computes it and calls
loss.backward() (after zero_grad); cgru calls backward(G, G_h, input_grad=False). PyTorch's
input does not require grad (the common training case: the input is data), and cgru's step
does not ask for the input's gradient either. Packed cases pack inside the timed step for
both.

Before timing, every gradient is checked against PyTorch's autograd (this check alone gives
PyTorch's input and hx requires_grad). Timing follows cgru/bench.py: implementations
interleaved, their order rotating from sample to sample, an untimed run as long as the sample
before each, medians; calls longer than LONG_CALL skip the untimed run and get fewer samples.
The backward alone (one tape, backward called again and again) gives the share of the GEMM
limit: its FLOPs (backward_flops: 2 x the forward's, less the first layer's input-gradient
product it skips) over the sgemm rate measured at the start and at the end at the same thread
count. Peak memory is measured in a fresh process per implementation and case: the module
harness/memory_child.py, run with `python -m` (see measure_memory).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from cgru import GRU, pack_padded_sequence, pad_packed_sequence, use_threads
from cgru.bench import CASES, Case, format_time, gemm_rate, make_case, make_inputs, time_once

DEFAULT_CASES = ["S3", "S4", "S5", "S6", "S8"]
LR = 1e-3
TOLERANCE = 1e-3           # max |cgru - torch| / max |torch|, per gradient
# A call longer than this is timed without an untimed run before it (what that run guards
# against, caches and thread pools left cold by the previous implementation, costs
# milliseconds: under 1% here) and with fewer samples, so that a full run of both thread
# counts stays under 10 minutes on 2 cores (S5's and S6's steps take 1-1.5 s).
LONG_CALL = 0.25


# -- the steps --------------------------------------------------------------------------------

def upstream(case, seed=1):
    """Fixed random gradients of the loss with respect to the padded output (L, N, D*H), zero
    past each length, and h_n. Each implementation packs the first with its own
    pack_padded_sequence (see cgru_grad_output): for equal lengths cgru's sort is stable and
    torch's is not, so their packed rows come in different orders."""
    rng = np.random.default_rng(seed)
    grad_out = rng.standard_normal((case.seq_len, case.batch, case.directions *
                                    case.hidden_size)).astype(case.dtype)
    if case.lengths is not None:
        for b, n in enumerate(case.lengths):
            grad_out[n:, b] = 0
    grad_h = rng.standard_normal((case.directions * case.num_layers, case.batch,
                                  case.hidden_size)).astype(case.dtype)
    return grad_out, grad_h


def cgru_grad_output(case, grad_out):
    """upstream's grad_output as cgru's backward takes it: packed, like output.data."""
    if case.lengths is None:
        return grad_out
    return pack_padded_sequence(grad_out, case.lengths, enforce_sorted=False).data


def new_gru(case):
    return GRU(case.input_size, case.hidden_size, case.num_layers,
               bidirectional=case.bidirectional, dtype=case.dtype, seed=0).train()


def cgru_step(gru, case, x, h0, grad_out, grad_h, optimizer=None):
    """One training step of cgru: (pack,) vjp, backward (, Adam step); returns the grads.
    grad_out as cgru_grad_output returns it."""
    def step():
        inp = x if case.lengths is None else \
            pack_padded_sequence(x, case.lengths, enforce_sorted=False)
        _, backward = gru.vjp(inp, h0)
        grads = backward(grad_out, grad_h, input_grad=False)
        if optimizer is not None:
            optimizer.step(grads)
        return grads
    return step


def cgru_backward_only(gru, case, x, h0, grad_out, grad_h):
    """cgru's backward alone: one forward's tape, backward called on it at every call."""
    inp = x if case.lengths is None else \
        pack_padded_sequence(x, case.lengths, enforce_sorted=False)
    _, backward = gru.vjp(inp, h0)
    return lambda: backward(grad_out, grad_h, input_grad=False)


def torch_step(module, case, x, h0, grad_out, grad_h, threads, optimizer=None,
               input_grad=False):
    """One training step of PyTorch: zero_grad, (pack,) forward, loss.backward() (, Adam step).
    grad_out padded, as upstream returns it. The step returns (output (a PackedSequence when
    packed), h_n, input, hx); with input_grad (the correctness check only), input and hx
    require grad, for reading their .grad."""
    import torch
    rnn = torch.nn.utils.rnn
    tx, th = torch.from_numpy(x), torch.from_numpy(h0)
    if input_grad:
        tx, th = tx.clone().requires_grad_(True), th.clone().requires_grad_(True)
    tg, tgh = torch.from_numpy(grad_out), torch.from_numpy(grad_h)
    lengths = None if case.lengths is None else torch.from_numpy(case.lengths)
    if lengths is not None:
        tg = rnn.pack_padded_sequence(tg, lengths, enforce_sorted=False).data

    def step():
        torch.set_num_threads(threads)
        module.zero_grad()
        if lengths is None:
            out, h_n = module(tx, th)
            rows = out
        else:
            out, h_n = module(rnn.pack_padded_sequence(tx, lengths, enforce_sorted=False), th)
            rows = out.data
        loss = (rows * tg).sum() + (h_n * tgh).sum()
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        return out, h_n, tx, th
    return step


def torch_module(gru):
    return gru.to_torch().train()


def cgru_adam(gru):
    from cgru import optim
    return optim.Adam(gru, lr=LR)


def torch_adam(module):
    import torch
    return torch.optim.Adam(module.parameters(), lr=LR)


# -- correctness ------------------------------------------------------------------------------

def check(case, threads, x, h0, grad_out, grad_h):
    """cgru's gradients (and outputs) against PyTorch's autograd on the same weights.

    Returns (max relative error, the gradient it was found in), the error of each array being
    max |cgru - torch| / max |torch|."""
    import torch
    gru = new_gru(case)
    with use_threads(threads):
        inp = x if case.lengths is None else \
            pack_padded_sequence(x, case.lengths, enforce_sorted=False)
        (output, h_n), backward = gru.vjp(inp, h0)
        grads = backward(cgru_grad_output(case, grad_out), grad_h)
    module = torch_module(gru)
    out, t_h_n, tx, th = torch_step(module, case, x, h0, grad_out, grad_h, threads,
                                    input_grad=True)()
    grad_x = grads["input"]
    if case.lengths is not None:     # compare padded: the two sort equal lengths differently
        out = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=case.seq_len)[0]
        output = pad_packed_sequence(output, total_length=case.seq_len)[0]
        grad_x = pad_packed_sequence(inp._replace(data=grad_x),
                                     total_length=case.seq_len)[0]
    want = {"output": out.detach().numpy(), "h_n": t_h_n.detach().numpy(),
            "input": tx.grad.numpy(), "hx": th.grad.numpy()}
    got = {"output": output, "h_n": h_n, "input": grad_x, "hx": grads["hx"]}
    for name, parameter in module.named_parameters():
        want[name], got[name] = parameter.grad.numpy(), grads[name]
    missing = set(grads) - set(got)
    if missing:
        raise AssertionError(f"{case.name}: gradients torch has no counterpart for: {missing}")
    errors = {name: float(np.max(np.abs(got[name] - want[name])) /
                          max(float(np.max(np.abs(want[name]))), 1e-30)) for name in want}
    worst = max(errors, key=errors.get)
    return errors[worst], worst


# -- timing -----------------------------------------------------------------------------------

def sample(runners, repeats):
    """{name: median seconds} of the zero-argument runners, timed interleaved in rotating
    order, as cgru/bench.py does; and the number of samples taken."""
    first = {name: time_once(run) for name, run in runners.items()}   # also a warm-up
    inner = {name: max(1, int(0.02 / max(t, 1e-7))) for name, t in first.items()}
    rounds = repeats if max(first.values()) < LONG_CALL else max(3, (repeats + 1) // 2)
    names = list(runners)
    samples = {name: [] for name in names}
    for repeat in range(rounds):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            if first[name] < LONG_CALL:
                time_once(runners[name], inner[name])     # untimed, as long as the sample
            samples[name].append(time_once(runners[name], inner[name]))
    return {name: float(np.median(times)) for name, times in samples.items()}, rounds


def run_case(case, threads, repeats, optimizer=True):
    import torch
    torch.set_num_threads(threads)
    x, h0 = make_inputs(case)
    grad_out, grad_h = upstream(case)
    error, worst = check(case, threads, x, h0, grad_out, grad_h)
    if not error <= TOLERANCE:
        raise SystemExit(f"{case.name}, {threads} thread(s): cgru's gradients disagree with "
                         f"PyTorch's autograd: max relative error {error:.2e} in {worst} "
                         f"(tolerance {TOLERANCE:.0e}); not timing a wrong result")
    runners = {}
    gru, cgru_grad = new_gru(case), cgru_grad_output(case, grad_out)
    runners["cgru"] = cgru_step(gru, case, x, h0, cgru_grad, grad_h)
    if optimizer:
        gru_adam = new_gru(case)
        runners["cgru + Adam"] = cgru_step(gru_adam, case, x, h0, cgru_grad, grad_h,
                                           cgru_adam(gru_adam))
    runners["cgru backward"] = cgru_backward_only(new_gru(case), case, x, h0, cgru_grad,
                                                  grad_h)
    runners["PyTorch"] = torch_step(torch_module(gru), case, x, h0, grad_out, grad_h, threads)
    if optimizer:
        module = torch_module(new_gru(case))
        runners["PyTorch + Adam"] = torch_step(module, case, x, h0, grad_out, grad_h, threads,
                                               torch_adam(module))
    with use_threads(threads):          # cgru's count; PyTorch's steps set their own
        times, rounds = sample(runners, repeats)
    return times, rounds, error, worst


# -- memory -----------------------------------------------------------------------------------

def case_spec(case):
    return dict(seq_len=case.seq_len, batch=case.batch, input_size=case.input_size,
                hidden_size=case.hidden_size, num_layers=case.num_layers,
                bidirectional=case.bidirectional,
                lengths=None if case.lengths is None else case.lengths.tolist())


# Set by --keep-freed-memory for the memory measurements' processes.
KEEP_FREED_MEMORY_ENV = "CGRU_BENCH_KEEP_FREED_MEMORY"


def measure_memory(impl, case, threads, optimizer=True):
    """harness/memory_child.py's result for one implementation and case, in a fresh process."""
    benchmarks = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (benchmarks, os.environ.get("PYTHONPATH")) if p))
    # run from outside the source tree, whose cgru/ folder would shadow a non-editable install
    with tempfile.TemporaryDirectory() as cwd:
        result = subprocess.run([sys.executable, "-m", "harness.memory_child", impl,
                                 json.dumps(case_spec(case)), str(threads),
                                 "1" if optimizer else "0"],
                                capture_output=True, text=True, cwd=cwd, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"memory measurement of {impl} on {case.name} failed:\n"
                           f"{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def backward_flops(case):
    """The FLOPs of backward(..., input_grad=False): per layer and direction four products of
    the forward's size (dW_ih, dW_hh, dx, dh(t-1)), less the first layer's dx."""
    rows = int(case.lengths.sum()) if case.lengths is not None else case.seq_len * case.batch
    skipped = 2 * rows * case.directions * 3 * case.hidden_size * case.input_size
    return 2 * case.flops() - skipped


def tape_mb(case):
    """What cgru's backward keeps, by README's formula: per layer (I_k + 5*D*H) values per row."""
    rows = int(case.lengths.sum()) if case.lengths is not None else case.seq_len * case.batch
    d, h = case.directions, case.hidden_size
    values = sum((case.input_size if k == 0 else d * h) + 5 * d * h
                 for k in range(case.num_layers))
    return rows * values * np.dtype(case.dtype).itemsize / 2**20


# -- report -----------------------------------------------------------------------------------

NOTES = """\
Training step = forward + backward (+ Adam step, lr {lr}) from the same weights; loss =
sum(output * G) + sum(h_n * G_h) with fixed random G, G_h. cgru: (pack_padded_sequence,) vjp,
backward(G, G_h) (, cgru.optim.Adam.step). PyTorch: zero_grad, (pack_padded_sequence,
enforce_sorted=False,) forward, loss.backward() (, torch.optim.Adam.step); its input does not
require grad, and cgru's backward is called with input_grad=False (it still returns hx's
gradient).
Speed-up: PyTorch's time over cgru's (fwd+bwd over fwd+bwd, + Adam over + Adam). "cgru
backward": backward alone, called again on one tape; % GEMM limit: its FLOPs (2 x the
forward's 6*H*(I+H)*rows per layer and direction, less the 6*H*I*rows of the first layer's
input gradient, not computed) over the sgemm rate above. Peak RSS growth:
in a fresh process per implementation and case, the peak resident set during one step (with
Adam when on) minus the resident set just before it, after imports, weights, inputs, upstream
gradients, optimizer and a warm-up step on 2 timesteps (Linux VmHWM, reset before the step;
see benchmarks/harness/memory_child.py). Max rel. error: cgru's outputs and gradients against
PyTorch's autograd, max |cgru - torch| / max |torch| over every array."""


def report(rows, threads, rate, optimizer, measured=None, out=sys.stdout):
    detail = f": the higher of {measured[0]:.0f} and {measured[1]:.0f}, measured first and " \
        f"last" if measured else ""
    print(f"\n## {threads} thread{'s' if threads > 1 else ''}  (sgemm {rate:.0f} GFLOP/s"
          f"{detail})\n", file=out)
    header = ["case", "cgru fwd+bwd ms"] + (["cgru + Adam ms"] if optimizer else []) + \
        ["cgru backward ms", "backward % GEMM limit", "PyTorch ms (speed-up)"] + \
        (["PyTorch + Adam ms (speed-up)"] if optimizer else []) + \
        ["peak RSS growth MB: cgru / PyTorch", "max rel. error"]
    print("| " + " | ".join(header) + " |", file=out)
    print("|" + "---|" * len(header), file=out)
    for row in rows:
        t, mem = row["times"], row["memory"]
        cells = [row["case"], format_time(t["cgru"])]
        if optimizer:
            cells.append(format_time(t["cgru + Adam"]))
        cells += [format_time(t["cgru backward"]), f"{100 * row['backward_gemm_share']:.0f}%",
                  f"{format_time(t['PyTorch'])} ({t['PyTorch'] / t['cgru']:.2f}x)"]
        if optimizer:
            cells.append(f"{format_time(t['PyTorch + Adam'])} "
                         f"({t['PyTorch + Adam'] / t['cgru + Adam']:.2f}x)")
        cells += [f"{mem['cgru']['growth_mb']:.1f} / {mem['PyTorch']['growth_mb']:.1f}",
                  f"{row['max_rel_error']:.1e}"]
        print("| " + " | ".join(cells) + " |", file=out)
    samples = ", ".join(f"{r['case']} {r['samples']}" for r in rows)
    print(f"\nSamples per result: {samples}.", file=out)


def memory_report(case, threads_list, optimizer, out=sys.stdout):
    rows = []
    print(f"\n## Peak RSS growth of one training step: L={case.seq_len}, N={case.batch}, "
          f"I={case.input_size}, H={case.hidden_size}, 1 layer"
          f"{' (+ Adam step)' if optimizer else ''}\n", file=out)
    print("| threads | cgru MB | PyTorch MB | PyTorch / cgru | cgru step s | PyTorch step s |",
          file=out)
    print("|---|---|---|---|---|---|", file=out)
    for threads in threads_list:
        mem = {impl: measure_memory(impl, case, threads, optimizer)
               for impl in ("cgru", "PyTorch")}
        c, t = mem["cgru"], mem["PyTorch"]
        print(f"| {threads} | {c['growth_mb']:.1f} | {t['growth_mb']:.1f} | "
              f"{t['growth_mb'] / c['growth_mb']:.2f}x | {c['step_s']:.2f} | {t['step_s']:.2f} |",
              file=out)
        rows.append(dict(threads=threads, memory=mem))
    mb = np.dtype(case.dtype).itemsize * case.seq_len * case.batch / 2**20   # per channel
    print(f"\nFor scale: cgru's tape by README's formula ((I + 5*D*H) values per row, the "
          f"input's {mb * case.input_size:.1f} MB included) {tape_mb(case):.1f} MB; the output "
          f"and the input's gradient {mb * case.hidden_size:.1f} and "
          f"{mb * case.input_size:.1f} MB.\nGrowth: the peak resident set during one step "
          f"minus the resident set just before it, in a fresh process per implementation, "
          f"after imports,\nweights, inputs, upstream gradients, optimizer and a warm-up step "
          f"on 2 timesteps (Linux VmHWM, reset before the step); the step times are of that "
          f"one step.", file=out)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description="A GRU training step (forward + backward "
                                     "+ Adam) in cgru against PyTorch's autograd")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated, from {','.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=9,
                        help=f"timed samples per result (calls over {LONG_CALL} s: half, "
                             f"at least 3)")
    parser.add_argument("--optimizer", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the step with an Adam update (cgru.optim.Adam, "
                             "torch.optim.Adam)")
    parser.add_argument("--memory-case", metavar="L,N,I,H",
                        help="only measure the peak RSS growth of one training step on this "
                             "1-layer case (e.g. 1000,64,256,256)")
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="call cgru.keep_freed_memory() first (glibc keeps freed memory; "
                             "process-wide, so PyTorch's steps run with it too), also in the "
                             "memory measurements' processes")
    args = parser.parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",")]
    if args.keep_freed_memory:
        import cgru
        cgru.keep_freed_memory()
        os.environ[KEEP_FREED_MEMORY_ENV] = "1"     # for harness/memory_child.py
        print("With cgru.keep_freed_memory(): glibc keeps freed memory for reuse, in this "
              "process and the memory measurements'.")
    if args.optimizer:
        try:
            import cgru.optim  # noqa: F401
        except ImportError as error:
            parser.error(f"cgru.optim is not importable ({error}); use --no-optimizer")
    try:
        import torch  # noqa: F401
    except ImportError:
        parser.error("PyTorch is the reference: pip install torch==2.13.0")
    if args.memory_case:
        try:
            seq_len, batch, inputs, hidden = (int(v) for v in args.memory_case.split(","))
        except ValueError:
            parser.error(f"--memory-case: expected L,N,I,H, got {args.memory_case!r}")
        case = Case(name="memory", seq_len=seq_len, batch=batch, input_size=inputs,
                          hidden_size=hidden)
        rows = memory_report(case, threads_list, args.optimizer)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(case=case_spec(case), rows=rows), f, indent=1)
        return 0
    names = [c.strip().upper() for c in args.cases.split(",")]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {list(CASES)}")
    if any(CASES[n].get("dtype", np.float32) != np.float32 for n in names):
        parser.error("only float32 cases (not S7)")
    # Measured first, before any runtime has started a thread pool (cgru/bench.py's
    # gemm_rate says why), and again at the end: on this shared machine a process that ran
    # meanwhile lowered one of the two (55 against 78-82 GFLOP/s at one thread, which read S6's
    # backward at 125% of the limit); the higher is the limit.
    first_rates = {threads: gemm_rate(np.float32, threads) for threads in threads_list}
    all_rows = []
    for threads in threads_list:
        for name in names:
            case = make_case(name)
            times, rounds, error, worst = run_case(case, threads, args.repeats, args.optimizer)
            memory = {impl: measure_memory(impl, case, threads, args.optimizer)
                      for impl in ("cgru", "PyTorch")}
            all_rows.append(dict(case=name, threads=threads, times=times, samples=rounds,
                                 max_rel_error=error, worst_gradient=worst, memory=memory,
                                 backward_flops=backward_flops(case),
                                 tape_mb=tape_mb(case)))
            print(f"{name}, {threads} thread(s): done", file=sys.stderr, flush=True)
    last_rates = {threads: gemm_rate(np.float32, threads) for threads in threads_list}
    rates = {t: max(first_rates[t], last_rates[t]) for t in threads_list}
    for threads in threads_list:
        rows = [row for row in all_rows if row["threads"] == threads]
        for row in rows:
            row["backward_gemm_share"] = row["backward_flops"] / (rates[threads] * 1e9) / \
                row["times"]["cgru backward"]
        report(rows, threads, rates[threads], args.optimizer,
               measured=(first_rates[threads], last_rates[threads]))
    print("\n" + NOTES.format(lr=LR))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(sgemm_gflops=rates, sgemm_gflops_first=first_rates,
                           sgemm_gflops_last=last_rates, rows=all_rows), f, indent=1)
    return 0
