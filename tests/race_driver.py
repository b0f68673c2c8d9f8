"""Drive every OpenMP region of cgru on small inputs, for a data-race detector to watch.

tests/race_check.sh runs this under ThreadSanitizer (with LLVM's Archer tool for OpenMP); it
also runs on any ordinary build (`python tests/race_driver.py`, from the tests folder or with
an installed cgru), where it is a plain check that threaded calls give the serial results.

Regions and how each is reached (the size thresholds of cgru/_engine/policy.py are forced per
configuration, as tests/test_kernel_paths.py does, so that tiny inputs take every path):
    pyx/_gru.pxi          _run_layer's `parallel` region: dense and packed forward (the fused
                          projection or block GEMMs; panel or BLAS recurrent products; sequences
                          or hidden units split across a team; one-step or multi-step blocks;
                          one or two directions, teams of unequal size), the vjp forward (save)
                          and GRUCell forward/vjp (one-step calls)
    pyx/_quant.pxi        the same region with reduced-precision weights: QuantizedGRU and
                          QuantizedGRUCell, bfloat16 (panels or BLAS) and int8 (its per-thread
                          quantized rows; float or int8 input projections), dense and packed
    pyx/_gru_backward.pxi _run_layer_backward's region: dense, packed (unsorted lengths),
                          bidirectional, panels or BLAS, one block or one per step
    pyx/_rows.pyx         the four prange row copies: pack_padded_sequence, pad_packed_sequence,
                          pack_sequence, unpack_sequence
and, at the end, two Python threads calling one module at once (two OpenMP teams).
Every result at 2, 3 and 4 threads must equal the serial (1-thread) call on the same inputs up to
float rounding (different splits group rows differently in the register-blocked products);
row copies must be identical to the byte. The serial results are also checked against the
float64 NumPy references in tests/reference.py and tests/reference_grad.py, which validates the
build under test (race_check.sh replaces BLAS by plain loops). Exit status 1 on any mismatch.
"""
import argparse
import itertools
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)            # tests/reference.py, tests/reference_grad.py

import cgru  # noqa: E402
from cgru import packing, quantized  # noqa: E402
from cgru._engine import policy  # noqa: E402
from cgru import get_num_threads  # noqa: E402
from reference import gru_reference  # noqa: E402
from reference_grad import gru_cell_reference_vjp, gru_reference_vjp  # noqa: E402

# name: the cgru/_engine/policy.py thresholds it sets. FUSE_MIN_ROWS = 1 lets batch 1 fuse too;
# PROJECTION_/BACKWARD_WORKSPACE_BYTES = 1 makes every step its own block (the most barriers).
BIG = 10**6
CONFIGS = {
    "fused, panels, rows split": dict(FUSE_MAX_ROWS=BIG, PANEL_MAX_ROWS=BIG,
                                      MIN_ROWS_PER_THREAD=1),
    "fused, panels, units split": dict(FUSE_MAX_ROWS=BIG, PANEL_MAX_ROWS=BIG,
                                       MIN_ROWS_PER_THREAD=BIG),
    "gemm, panels, rows split, one-step blocks": dict(
        FUSE_MAX_ROWS=0, PANEL_MAX_ROWS=BIG, MIN_ROWS_PER_THREAD=1,
        PROJECTION_WORKSPACE_BYTES=1, BACKWARD_WORKSPACE_BYTES=1),
    "gemm, panels, rows split, 3-step blocks": dict(
        FUSE_MAX_ROWS=0, PANEL_MAX_ROWS=BIG, MIN_ROWS_PER_THREAD=1, STEPS_PER_BLOCK=3),
    "gemm, panels, units split, one-step blocks": dict(
        FUSE_MAX_ROWS=0, PANEL_MAX_ROWS=BIG, MIN_ROWS_PER_THREAD=BIG,
        PROJECTION_WORKSPACE_BYTES=1, BACKWARD_WORKSPACE_BYTES=1),
    "gemm, blas, rows split, one-step blocks": dict(
        FUSE_MAX_ROWS=0, PANEL_MAX_ROWS=0, MIN_ROWS_PER_THREAD=1,
        PROJECTION_WORKSPACE_BYTES=1, BACKWARD_WORKSPACE_BYTES=1),
    "gemm, blas, units split, one block": dict(
        FUSE_MAX_ROWS=0, PANEL_MAX_ROWS=0, MIN_ROWS_PER_THREAD=BIG),
}
# (batch, hidden, layers, bidirectional, input_size): batch 1 and 7 (fewer rows than a team
# needs, or odd splits), H = 33, 40, 50 (3 or 4 unit blocks, a partial one; H = 50 has two
# 48-unit panels in the backward), one and two layers, one and two directions.
CASES = [(1, 20, 1, False, 5), (7, 33, 2, True, 5), (19, 40, 2, False, 6),
         (12, 50, 1, True, 4)]
CELL_CASES = [(1, 33, 5), (9, 40, 6)]      # (batch, hidden, input_size)
MAX_LEN = 7

# max |a - b| / max(1, max |b|) allowed between a threaded and the serial call, and between the
# serial call and the float64 reference
THREADED_TOL = {np.dtype(np.float32): 5e-6, np.dtype(np.float64): 1e-13}
REFERENCE_TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-10}
# int8 quantizes h per row and step: a one-ulp difference in a row's maximum (from BLAS
# rounding that depends on the rows a thread has) can move a quantized value by one step
QUANT_TOL = {"bfloat16": 5e-6, "int8": 5e-3}

DEFAULTS = {name: getattr(policy, name) for name in
            ("FUSE_MAX_ROWS", "FUSE_MIN_ROWS", "PANEL_MAX_ROWS", "BACKWARD_PANEL_MAX_ROWS",
             "PANEL_MAX_ROWS_FLOAT64",
             "MIN_ROWS_PER_THREAD",
             "PROJECTION_WORKSPACE_BYTES", "BACKWARD_WORKSPACE_BYTES",
             "BACKWARD_WORKSPACE_TAPE_SHARE",
             "MIN_FLOPS_FOR_THREADS")}


def configure(config, hidden, batch, itemsize):
    """Set cgru/_engine/policy.py's thresholds for one configuration (and every call threaded)."""
    for name, value in DEFAULTS.items():
        setattr(policy, name, value)
    policy.MIN_FLOPS_FOR_THREADS = 0          # tiny calls run threaded too
    policy.FUSE_MIN_ROWS = 1
    # bfloat16 tiles on the stored panels or on BLAS as the float configuration's; int8 always
    # on its panels (cgru/quantized.py)
    policy.QUANT_PANEL_MAX_ROWS = dict(policy.QUANT_PANEL_MAX_ROWS, bfloat16=config.get(
        "PANEL_MAX_ROWS", DEFAULTS["PANEL_MAX_ROWS"]))
    # the backward's recurrent product follows the configuration's panels-or-BLAS too
    policy.BACKWARD_PANEL_MAX_ROWS = config.get("PANEL_MAX_ROWS",
                                                DEFAULTS["BACKWARD_PANEL_MAX_ROWS"])
    policy.PANEL_MAX_ROWS_FLOAT64 = config.get("PANEL_MAX_ROWS",
                                               DEFAULTS["PANEL_MAX_ROWS_FLOAT64"])
    for name, value in config.items():
        if name == "STEPS_PER_BLOCK":       # workspace bytes giving blocks of that many steps
            policy.PROJECTION_WORKSPACE_BYTES = value * 3 * hidden * itemsize * batch
            policy.BACKWARD_WORKSPACE_BYTES = value * 7 * hidden * itemsize * batch
            policy.BACKWARD_WORKSPACE_TAPE_SHARE = 10 ** 6     # the bytes alone decide
        else:
            setattr(policy, name, value)


def scaled_error(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return np.inf
    if expected.size == 0:
        return 0.0
    return float(np.max(np.abs(actual - expected)) / max(1.0, float(np.max(np.abs(expected)))))


class Checker:
    def __init__(self):
        self.failures = []
        self.compared = 0
        self.worst = {}

    def close(self, got, want, tol, what):
        """got, want: dicts of arrays with the same keys."""
        for key in want:
            err = scaled_error(got[key], want[key])
            self.compared += 1
            self.worst[tol] = max(self.worst.get(tol, 0.0), err)
            if not err <= tol:
                self.failures.append(f"{what}: {key} differs by {err:.3g} (> {tol:g})")

    def equal(self, got, want, what):
        for key in want:
            self.compared += 1
            a, b = got[key], want[key]
            if a.shape != b.shape or a.dtype != b.dtype or a.tobytes() != b.tobytes():
                self.failures.append(f"{what}: {key} is not byte-identical")


def gru_results(gru, x, hx, lengths, grad_out, grad_h):
    """Every output of the four GRU calls (dense and packed forward, dense and packed vjp)."""
    res = {}
    out, h_n = gru(x, hx)
    res["dense out"], res["dense h_n"] = out, h_n
    packed = cgru.pack_padded_sequence(x, lengths, enforce_sorted=False)
    p_out, p_h = gru(packed, hx)
    res["packed out"], res["packed h_n"] = p_out.data, p_h

    (v_out, v_h), backward = gru.vjp(x, hx)
    res["vjp dense out"], res["vjp dense h_n"] = v_out, v_h
    for k, v in backward(grad_out, grad_h).items():
        res[f"dense grad {k}"] = v

    (vp_out, vp_h), backward = gru.vjp(packed, hx)
    res["vjp packed out"], res["vjp packed h_n"] = vp_out.data, vp_h
    packed_grad = cgru.pack_padded_sequence(grad_out, lengths, enforce_sorted=False)
    for k, v in backward(packed_grad, grad_h).items():
        res[f"packed grad {k}"] = v
    return res


def check_against_reference(check, gru, x, hx, lengths, grad_out, grad_h, res, what):
    """The serial results against the float64 NumPy references (validates the build)."""
    dtype = np.dtype(gru.dtype)
    layers, bidir = gru.num_layers, gru.bidirectional
    params = gru.state_dict()
    want = {}
    ref_out, ref_h, ref_grads = gru_reference_vjp(params, x, hx, layers, bidir, None,
                                                  grad_out, grad_h)
    want["dense out"], want["dense h_n"] = ref_out, ref_h
    got = {k: res[k] for k in want}
    for k, v in ref_grads.items():
        want[f"dense grad {k}"] = v
        got[f"dense grad {k}"] = res[f"dense grad {k}"]
    ref_out, ref_h = gru_reference(params, x, hx, layers, bidir, lengths)
    want["packed out (padded)"], want["packed h_n"] = ref_out, ref_h
    got["packed out (padded)"] = cgru.pad_packed_sequence(cgru.PackedSequence(
        res["packed out"], *_packing_of(x, lengths)), total_length=x.shape[0])[0]
    got["packed h_n"] = res["packed h_n"]
    check.close(got, want, REFERENCE_TOL[dtype], f"{what}, 1 thread vs reference")


def _packing_of(x, lengths):
    p = cgru.pack_padded_sequence(x, lengths, enforce_sorted=False)
    return p.batch_sizes, p.sorted_indices, p.unsorted_indices


def quantized_results(gru, cell, x, hx, lengths, x_cell, h_cell):
    """Every output of the reduced-precision modules made from gru and cell: dense and packed
    forward, one step of the cell."""
    res = {}
    packed = cgru.pack_padded_sequence(x, lengths, enforce_sorted=False)
    for name, (q, qc) in quantized_modules(gru, cell).items():
        out, h_n = q(x, hx)
        res[f"{name} dense out"], res[f"{name} dense h_n"] = out, h_n
        p_out, p_h = q(packed, hx)
        res[f"{name} packed out"], res[f"{name} packed h_n"] = p_out.data, p_h
        res[f"{name} cell"] = qc(x_cell, h_cell)
    return res


_QUANTIZED = {}


def quantized_modules(gru, cell):
    """bfloat16, int8 and int8 with int8 input projections versions of gru and cell (made
    once per module: INT8_INPUT_PRODUCTS is read when the layout is built)."""
    key = (id(gru), id(cell))
    if key not in _QUANTIZED:
        made = {}
        for name, precision, int8_inputs in (("bfloat16", "bfloat16", False),
                                             ("int8", "int8", False),
                                             ("int8, int8 inputs", "int8", True)):
            policy.INT8_INPUT_PRODUCTS = int8_inputs
            made[name] = (gru.quantize(precision), cell.quantize(precision))
        policy.INT8_INPUT_PRODUCTS = False
        _QUANTIZED.clear()
        _QUANTIZED[key] = made
    return _QUANTIZED[key]


def quant_tolerance(key):
    return QUANT_TOL["int8" if key.startswith("int8") else "bfloat16"]


def cell_results(cell, x, hx, grad_h1):
    res = {"forward": cell(x, hx)}
    h1, backward = cell.vjp(x, hx)
    res["vjp h1"] = h1
    for k, v in backward(grad_h1).items():
        res[f"grad {k}"] = v
    return res


def run_kernel(check, threads, rng, log):
    for (config_name, config), dtype in itertools.product(CONFIGS.items(),
                                                          (np.float32, np.float64)):
        dtype = np.dtype(dtype)
        for batch, hidden, layers, bidir, inputs in CASES:
            d = 2 if bidir else 1
            what = (f"[{config_name}] {dtype.name} GRU(batch {batch}, H {hidden}, "
                    f"{layers} layer(s), {'bidirectional' if bidir else 'one direction'})")
            configure(config, hidden, batch, dtype.itemsize)
            gru = cgru.GRU(inputs, hidden, layers, bidirectional=bidir, dtype=dtype,
                           seed=batch + hidden)
            lengths = rng.integers(1, MAX_LEN + 1, size=batch)
            lengths[rng.integers(batch)] = MAX_LEN
            x = rng.standard_normal((MAX_LEN, batch, inputs)).astype(dtype)
            hx = rng.standard_normal((layers * d, batch, hidden)).astype(dtype)
            grad_out = rng.standard_normal((MAX_LEN, batch, d * hidden)).astype(dtype)
            grad_h = rng.standard_normal((layers * d, batch, hidden)).astype(dtype)
            with cgru.use_threads(1):
                want = gru_results(gru, x, hx, lengths, grad_out, grad_h)
            check_against_reference(check, gru, x, hx, lengths, grad_out, grad_h, want, what)
            for n in threads:
                with cgru.use_threads(n):
                    got = gru_results(gru, x, hx, lengths, grad_out, grad_h)
                check.close(got, want, THREADED_TOL[dtype], f"{what}, {n} threads")
            if dtype == np.float32:     # reduced precision: float32 modules only
                cell = cgru.GRUCell(inputs, hidden, dtype=dtype, seed=hidden)
                x_cell = rng.standard_normal((batch, inputs)).astype(dtype)
                h_cell = rng.standard_normal((batch, hidden)).astype(dtype)
                args = (gru, cell, x, hx, lengths, x_cell, h_cell)
                with cgru.use_threads(1):
                    want = quantized_results(*args)
                for n in threads:
                    with cgru.use_threads(n):
                        got = quantized_results(*args)
                    for key in want:
                        check.close({key: got[key]}, {key: want[key]}, quant_tolerance(key),
                                    f"{what} quantized, {n} threads")
        for batch, hidden, inputs in CELL_CASES:
            what = f"[{config_name}] {dtype.name} GRUCell(batch {batch}, H {hidden})"
            configure(config, hidden, batch, dtype.itemsize)
            cell = cgru.GRUCell(inputs, hidden, dtype=dtype, seed=hidden)
            x = rng.standard_normal((batch, inputs)).astype(dtype)
            hx = rng.standard_normal((batch, hidden)).astype(dtype)
            grad_h1 = rng.standard_normal((batch, hidden)).astype(dtype)
            with cgru.use_threads(1):
                want = cell_results(cell, x, hx, grad_h1)
            ref_h1, ref_grads = gru_cell_reference_vjp(cell.state_dict(), x, hx, grad_h1)
            check.close({"forward": want["forward"], **{f"grad {k}": want[f"grad {k}"]
                                                        for k in ref_grads}},
                        {"forward": ref_h1, **{f"grad {k}": v for k, v in ref_grads.items()}},
                        REFERENCE_TOL[dtype], f"{what}, 1 thread vs reference")
            for n in threads:
                with cgru.use_threads(n):
                    got = cell_results(cell, x, hx, grad_h1)
                check.close(got, want, THREADED_TOL[dtype], f"{what}, {n} threads")
        log(f"  {config_name}, {dtype.name}: done")


def run_concurrent(check, threads, rng, log):
    """Two Python threads calling one module at once, each with its own OpenMP team: the
    calls share the weights (read) and nothing else."""
    import threading

    configure(CONFIGS["gemm, panels, rows split, one-step blocks"], 33, 7, 4)
    gru = cgru.GRU(5, 33, 2, bidirectional=True, seed=3)
    inputs = []
    for _ in range(2):
        lengths = rng.integers(1, MAX_LEN + 1, size=7)
        lengths[0] = MAX_LEN
        inputs.append((rng.standard_normal((MAX_LEN, 7, 5)).astype(np.float32),
                       rng.standard_normal((4, 7, 33)).astype(np.float32), lengths,
                       rng.standard_normal((MAX_LEN, 7, 66)).astype(np.float32),
                       rng.standard_normal((4, 7, 33)).astype(np.float32)))
    with cgru.use_threads(1):
        wants = [gru_results(gru, *args) for args in inputs]
    for n in threads:
        gots = [None, None]

        def call(i):
            with cgru.use_threads(n):
                gots[i] = gru_results(gru, *inputs[i])

        workers = [threading.Thread(target=call, args=(i,)) for i in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        for i in range(2):
            if gots[i] is None:
                check.failures.append(f"concurrent call {i} at {n} threads raised")
            else:
                check.close(gots[i], wants[i], THREADED_TOL[np.dtype(np.float32)],
                            f"two Python threads at once, call {i}, {n} OpenMP threads each")
    log("  two Python threads at once: done")


def packing_results(padded, lengths, sequences):
    res = {}
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[order]
    for batch_first in (False, True):
        src = np.ascontiguousarray(np.swapaxes(padded, 0, 1)) if batch_first else padded
        p = cgru.pack_padded_sequence(src, lengths, batch_first=batch_first,
                                      enforce_sorted=False)
        res[f"pack_padded bf={batch_first}"] = p.data
        pad, _ = cgru.pad_packed_sequence(p, batch_first=batch_first, padding_value=7,
                                          total_length=padded.shape[0] + 2)
        res[f"pad_packed bf={batch_first}"] = pad
        sorted_src = np.ascontiguousarray(src[:, order] if not batch_first else src[order])
        q = cgru.pack_padded_sequence(sorted_src, sorted_lengths, batch_first=batch_first,
                                      enforce_sorted=True)
        res[f"pack_padded sorted bf={batch_first}"] = q.data
        res[f"pad_packed sorted bf={batch_first}"] = cgru.pad_packed_sequence(
            q, batch_first=batch_first)[0]
    p = cgru.pack_sequence(sequences, enforce_sorted=False)
    res["pack_sequence"] = p.data
    for i, s in enumerate(cgru.unpack_sequence(p)):
        res[f"unpack_sequence {i}"] = s
    ordered = sorted(sequences, key=len, reverse=True)
    q = cgru.pack_sequence(ordered, enforce_sorted=True)
    res["pack_sequence sorted"] = q.data
    for i, s in enumerate(cgru.unpack_sequence(q)):
        res[f"unpack_sequence sorted {i}"] = s
    return res


def run_packing(check, threads, rng, log):
    # the copies go parallel from 1 MB (cgru/packing.py); here always
    packing._copy_threads = lambda nbytes: get_num_threads()
    for dtype, trailing in ((np.float32, (5,)), (np.float64, (3,)), (np.int16, (3, 2)),
                            (np.uint8, (1,))):
        batch = 11
        lengths = rng.integers(1, MAX_LEN + 1, size=batch)
        lengths[3] = MAX_LEN
        padded = (rng.standard_normal((MAX_LEN, batch) + trailing) * 50).astype(dtype)
        sequences = [np.ascontiguousarray(padded[:n, b]) for b, n in enumerate(lengths)]
        with cgru.use_threads(1):
            want = packing_results(padded, lengths, sequences)
        # sanity of the serial copies themselves
        for b, n in enumerate(lengths):
            assert np.array_equal(want["pad_packed bf=False"][:n, b], padded[:n, b])
            assert (want["pad_packed bf=False"][n:, b] == 7).all()
            assert np.array_equal(want[f"unpack_sequence {b}"], sequences[b])
        for n in threads:
            with cgru.use_threads(n):
                got = packing_results(padded, lengths, sequences)
            check.equal(got, want, f"packing {np.dtype(dtype).name}{trailing}, {n} threads")
    log("  packing: done")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="2,3,4",
                        help="thread counts compared with the serial call (default 2,3,4)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]

    def log(msg):
        print(msg, flush=True)

    from cgru import _engine
    log(f"race driver: kernel {_engine.kernel.__name__}, OpenMP "
        f"{'on' if _engine.kernel.OPENMP_ENABLED else 'OFF'}, threads {threads}")
    if not _engine.kernel.OPENMP_ENABLED:
        log("  warning: a serial build: there are no OpenMP regions to check")
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    check = Checker()
    run_kernel(check, threads, rng, log)
    run_concurrent(check, threads, rng, log)
    run_packing(check, threads, rng, log)
    worst = ", ".join(f"{err:.2g} (tolerance {tol:g})" for tol, err in sorted(check.worst.items()))
    log(f"race driver: {check.compared} comparisons in {time.perf_counter() - start:.1f} s; "
        f"largest scaled differences {worst}")
    if check.failures:
        log(f"race driver: {len(check.failures)} MISMATCHES")
        for line in check.failures[:50]:
            log("  " + line)
        return 1
    log("race driver: every threaded result equals the serial one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
