"""One training step's peak memory, in a process of its own: run by benchmarks/harness/train.py
(measure_memory) as `python -m harness.memory_child IMPL CASE_JSON THREADS OPTIMIZER`, with
benchmarks/ on PYTHONPATH, so that nothing the parent imported or allocated counts.
"""
import json
import os
import sys

import numpy as np

from cgru import keep_freed_memory, use_threads
from cgru.bench import Case, make_inputs, time_once

from .train import (KEEP_FREED_MEMORY_ENV, cgru_adam, cgru_grad_output, cgru_step, new_gru,
                    torch_adam, torch_module, torch_step, upstream)


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def main(argv=None):
    """In a fresh process (argv: implementation, case spec as JSON, threads, optimizer 0/1):
    set up, run a warm-up step on the first 2 timesteps (1 for a 1-step case), then one full
    step, and print its peak RSS growth as JSON.

    Growth: the peak resident set during the step minus the resident set just before it,
    after imports, weights, inputs, upstream gradients, optimizer (and its state, from the
    warm-up step) exist. On Linux the peak is VmHWM, reset just before the step (write 5 to
    /proc/self/clear_refs): getrusage's ru_maxrss is the same high-water mark but not
    resettable, so it holds any transient of the setup (make_inputs draws in float64: twice
    the input), and a child of a large process starts with its parent's peak (the kernel
    carries it across exec: a child of a 312 MB parent read 312 MB with an 11 MB VmHWM).
    Elsewhere, ru_maxrss after minus ru_maxrss before.
    """
    import resource
    argv = sys.argv[1:] if argv is None else argv
    impl, spec, threads, optimizer = argv[0], json.loads(argv[1]), int(argv[2]), argv[3] == "1"
    if os.environ.get(KEEP_FREED_MEMORY_ENV) == "1":
        keep_freed_memory()
    lengths = spec.pop("lengths")
    case = Case(name="memory", lengths=None if lengths is None else np.array(lengths), **spec)
    x, h0 = make_inputs(case)
    grad_out, grad_h = upstream(case)
    warm_len = min(2, case.seq_len)
    small = Case(name="warm-up", seq_len=warm_len, batch=case.batch,
                 input_size=case.input_size, hidden_size=case.hidden_size,
                 num_layers=case.num_layers, bidirectional=case.bidirectional,
                 lengths=None if lengths is None else np.full(case.batch, warm_len))
    small_out, small_h = upstream(small)
    gru = new_gru(case)
    if impl == "cgru":
        opt = cgru_adam(gru) if optimizer else None
        step = cgru_step(gru, case, x, h0, cgru_grad_output(case, grad_out), grad_h, opt)
        warm = cgru_step(gru, small, np.ascontiguousarray(x[:warm_len]), h0,
                         cgru_grad_output(small, small_out), small_h, opt)
    else:
        import torch
        module = torch_module(gru)
        opt = torch_adam(module) if optimizer else None
        step = torch_step(module, case, x, h0, grad_out, grad_h, threads, opt)
        warm = torch_step(module, small, np.ascontiguousarray(x[:warm_len]), h0, small_out,
                          small_h, threads, opt)
        torch.set_num_threads(threads)
    with use_threads(threads):
        warm()
        maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            before = _status_kib("VmRSS")
        except OSError:
            before = None
        seconds = time_once(step)
        maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = _status_kib("VmHWM") if before is not None else None
    growth = (peak - before) if before is not None else (maxrss_after - maxrss_before)
    print(json.dumps({"growth_mb": growth / 1024, "maxrss_growth_mb":
                      (maxrss_after - maxrss_before) / 1024,
                      "baseline_mb": (before if before is not None else maxrss_before) / 1024,
                      "step_s": seconds, "method": "VmHWM" if before is not None else
                      "ru_maxrss"}))


if __name__ == "__main__":
    main()
