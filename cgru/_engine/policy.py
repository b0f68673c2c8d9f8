"""Every decision the engine makes about a call, in one place: the thresholds (each names the
measurement it came from) and `plan`, which turns a call's shape into what the kernel is told.

The kernel (pyx/) executes a Plan and decides nothing itself beyond safety clamps. Forward,
the forward of vjp, backward, the reduced-precision path and the packing copies all ask here.
"""
import contextlib
import sys
import types
from typing import NamedTuple

from .blas_threads import blas_single_threaded
from .isa import kernel
from .pool import free_threads, load_adaptive
from .threads import get_num_threads

# -- forward -------------------------------------------------------------------------------------

# The input projection of a layer is computed for a block of timesteps at a time, so the
# workspace stays bounded however long the sequence: about this many bytes per direction.
PROJECTION_WORKSPACE_BYTES = 4 << 20
# Tiles of at most this many rows multiply by the register-blocked W_hh panels, larger ones by
# a BLAS GEMM: on the development machine (AVX-512, 1 thread) the panels were 1.1-4.5x faster
# than OpenBLAS from 2 to 128 rows at H = 256 and 512, 0.9-1.4x at H = 128, and (k-blocked,
# projection fused) 3-5% faster at 256 rows, H = 512 (S6), where OpenBLAS spends 12% of its
# time re-packing the weights on every call.
# That holds where the register block is 8 rows (AVX-512), and with AVX2's 4-row block (two
# passes of 24 columns; AMD EPYC Zen 2, 1 thread, forward, limits interleaved in one process,
# 16 -> 256): S4 9.4 -> 6.0 ms, S8 23.0 -> 13.3, S5 332 -> 284, S6 485 -> 450, S2 and S3 the
# same. (AVX2's earlier 2-row block lost to OpenBLAS from 32 rows, hence 16 then; the
# baseline build's 1-row block keeps it.)
PANEL_MAX_ROWS = 256 if kernel.PANEL_ROWS_FLOAT >= 4 else 16
# float64: a 4-row block with AVX-512, else 1 row (AVX2 holds one row of 48 doubles): BLAS from
# 16 rows there, as float32's 2-row block had it.
PANEL_MAX_ROWS_FLOAT64 = 256 if kernel.PANEL_ROWS_DOUBLE >= 4 else 16
# A team of threads splits the sequences when each thread gets at least this many (no barrier
# per step), else the hidden units of every step (each thread keeps its slice of the weights,
# and full 8-row register blocks, one barrier per step). 2 threads: S3 (4 rows each) units
# 1.58 ms vs rows 1.84; S4 (16 rows each) rows 1.85 ms vs units 2.2; S8 rows 5.5 vs units 6.1.
MIN_ROWS_PER_THREAD = 8
# Batches of FUSE_MIN_ROWS to FUSE_MAX_ROWS sequences project their input step by step, in
# registers, through the W_ih panels, instead of by one GEMM per block of steps: no projection
# buffer (written, zeroed by BLAS and read back) and, when threads split sequences, no barrier
# at all. Measured at H = 128 (1 thread): fused 40% slower at batch 1, even at 4, 5-10% faster
# from 8 to 256 (one GEMM over all the steps of a batch-1 sequence beats 1-row products).
FUSE_MIN_ROWS = 8
FUSE_MAX_ROWS = min(256, PANEL_MAX_ROWS)
# A block of steps whose input projection has at most this many rows per thread of its team
# goes through the W_ih panels (one register block: one-step calls pay no BLAS call overhead),
# more through one BLAS GEMM. Decided per block, for all its rows, so that every row of a
# block is projected alike (a share of 8 rows by panels and one of 9 by BLAS would sum them in
# different orders, and a row's result would depend on its place in the batch).
# float64 takes the float register block too, as the kernel did before it was told (a double
# block is half as many rows: not measured, so not changed).
PROJECTION_PANEL_ROWS = types.MappingProxyType({"float32": kernel.PANEL_ROWS_FLOAT,
                                               "float64": kernel.PANEL_ROWS_FLOAT})
# Below this much work a call runs on one thread: opening a parallel region costs about 2 us,
# more than a one-step call's whole compute (S1: 9 us on 2 threads, 7 us on 1).
MIN_FLOPS_FOR_THREADS = 1 << 20
# OpenBLAS runs a GEMM on one thread when m * n * k is at most this (SMP_THRESHOLD_MIN *
# GEMM_MULTITHREAD_THRESHOLD in its interface/gemm.c): calls whose GEMMs are all that small
# need no thread limit, which saves two ctypes calls on one-step (streaming) calls.
BLAS_SINGLE_THREAD_WORK = 65536 * 4

# -- backward ------------------------------------------------------------------------------------

# The backward pass works through blocks of steps whose dG_i and dG_h rows (6H values a row)
# take about this many bytes per direction: its weight-gradient GEMMs then have hundreds of
# rows (S5: 384, S6: 256) and the block is still in cache when they read it, while the
# workspace stays bounded however long the sequence. Backward alone, blocks of 1.5 / 2.5 / 4 /
# 8 MB interleaved (AMD EPYC Zen 2, L2 512 KB, L3 16 MB): S5 at one thread 521 / 523 / 532 /
# 528 ms, at two 271 / 268 / 272 / 275; 2.5 against 8 MB: S8 22.6 / 22.7 and 18.3 / 18.1 ms,
# S4 10.6 / 10.6; S6 (256 rows against 512) 686 / 684 and 390 / 386.
BACKWARD_WORKSPACE_BYTES = 5 << 19
# ... and at most this share of the direction's saved gates (4H values a row), so that a short
# training step's peak memory is not mostly workspace (S3's one block of 800 rows took 5.7 MB
# beside a 3.3 MB tape, and the step's peak was PyTorch's: 11.3 against 10.7 MB). Smaller
# blocks are faster, too, while they keep BACKWARD_MIN_BLOCK_ROWS: backward alone at one /
# two threads, shares 0.125 / 0.25 / 0.5 interleaved (AMD EPYC Zen 2): S4 11.4 / 11.5 / 12.7
# and 9.0 / 8.6 / 9.8 ms, S7 11.7 / 11.7 / 13.3 and 8.7 / 8.7 / 9.4, S8 24.5 / 24.6 / 25.3
# and 20.8 / 20.5 / 20.4.
BACKWARD_WORKSPACE_TAPE_SHARE = 0.25
# ... but the share never cuts a block below this many rows: S2's 200 one-row steps in four
# blocks (three GEMMs each) took 1.05 ms against 1.03 in one at one thread, 1.38 against 1.28
# at two.
BACKWARD_MIN_BLOCK_ROWS = 256
# The backward's per-step dL/dh(t-1) += dG_h @ W_hh: tiles of at most this many rows by the
# register-blocked panels, larger ones by BLAS. AVX2 (AMD EPYC Zen 2, 1 thread, backward
# alone, limits 16 / 64 / 256 interleaved in one process): S4 (32-row tiles) 15.0 / 12.8 /
# 12.6 ms, S8 (64) 30.5 / 26.5 / -, S5 (64) 797 / 737 / -, but S6 (256) 834 / - / 971: BLAS
# from 256 rows. With AVX-512's 8-row block, the forward's limit.
BACKWARD_PANEL_MAX_ROWS = PANEL_MAX_ROWS if kernel.PANEL_ROWS_FLOAT >= 8 else min(PANEL_MAX_ROWS,
                                                                                  64)

# -- reduced precision ---------------------------------------------------------------------------

# Tiles of at most this many rows multiply by the stored W_hh panels, larger ones by BLAS on
# W_hh widened to float32 once per call. bfloat16, AVX2 (AMD EPYC Zen 2), 1 thread, panels
# against BLAS interleaved in one process: S4 (32-row tiles) 13.8 / 14.5 ms, S8 (64) 56.8 /
# 61.1, S5 (64) 396 / 405, S6 (256) 949 / 873; with AVX-512's 8-row block, float32's limit.
# int8: the panels always (they beat sgemm on the per-step product), so that the result never
# depends on the tile size (the thread count, the batch).
QUANT_PANEL_MAX_ROWS = types.MappingProxyType({
    "bfloat16": 256 if kernel.PANEL_ROWS_FLOAT >= 8 else 64, "int8": 1 << 30})
# int8 input projections: False runs them as float32 sgemm through the dequantized weights (the
# inputs not rounded), True as int8 products (pmaddwd panels) on inputs quantized per row like
# h. On AVX2 (AMD EPYC Zen 2, no VNNI; interleaved in one process, 1 thread) int8 products were
# barely faster (S4 1.01x, S5 1.02x, S6 1.08x) and doubled the error against float32 (S6 2.0e-2
# against 8.4e-3): not worth it without VNNI.
INT8_INPUT_PRODUCTS = False

# -- packing -------------------------------------------------------------------------------------

# Row copies of the packing utilities use threads from this many bytes: below about 1 MB,
# opening a parallel region costs more than the copy.
COPY_THREADS_MIN_BYTES = 1 << 20

NO_GUARD = contextlib.nullcontext()


class StackShape(NamedTuple):
    """What the policy needs to know about a stack of layers (fixed per module)."""
    hidden: int
    dirs: int
    num_layers: int
    dtype_name: str             # "float32" or "float64"
    itemsize: int
    flops_per_row: int          # forward multiply-adds x 2 of one row through every layer
    gemm_work_per_row: int      # m * n * k per row of the widest input-projection GEMM
    unit_blocks: int            # blocks of kernel.UNIT_BLOCK hidden units


def stack_shape(input_size, hidden_size, num_layers, num_directions, dtype):
    widest_input = max(input_size, num_directions * hidden_size, hidden_size)
    return StackShape(
        hidden_size, num_directions, num_layers, dtype.name, dtype.itemsize,
        6 * hidden_size * (widest_input + hidden_size) * num_directions * num_layers,
        3 * hidden_size * widest_input, -(-hidden_size // kernel.UNIT_BLOCK))


class Plan(NamedTuple):
    """What one call of the kernel is told (the same for every layer of the call).

    n_threads:             OpenMP threads (the kernel clamps to the work available)
    steps_per_block:       steps whose input projections share one workspace (forward) or
                           whose gradients share one set of weight-gradient GEMMs (backward)
    panel_max_rows:        tiles of at most this many rows multiply W_hh by the panels, else BLAS
    projection_panel_rows: a block of steps whose input projection has at most this many rows
                           per thread of its team uses the W_ih panels, else one BLAS GEMM
    split_rows:            a direction's team splits the sequences (True) or the hidden units
    fused:                 the input projection is computed inside each step from the panels
    limit_blas:            BLAS must run single-threaded meanwhile (see blas_guard)
    kernel_args:           the arguments gru_layer / quant_layer take after the arrays
    """
    n_threads: int
    steps_per_block: int
    panel_max_rows: int
    projection_panel_rows: int
    split_rows: bool
    fused: bool
    limit_blas: bool
    kernel_args: tuple


_new_plan = tuple.__new__    # (NamedTuple's generated __new__ costs a microsecond of S1's 8)


# Plans already made, by everything they depend on but this module's thresholds: a one-step
# call repeats its predecessor's, and making one costs 2 us of S1's 18. Setting any attribute
# of this module (a test's monkeypatch included) empties it (_PolicyModule below); the two
# tables above are read-only, so that a threshold changes only that way.
_PLANS = {}
_PLANS_MAX = 1024


def plan(shape, rows, batch_sizes, task="forward", precision=None):
    """The Plan of a call over `rows` packed rows with these batch_sizes ((L,) int64,
    non-increasing, summing to rows).

    task: "forward" (also the forward of vjp) or "backward"; precision: None for float
    weights, else "bfloat16" or "int8" (forward only).
    """
    threads = get_num_threads() if rows * shape.flops_per_row >= MIN_FLOPS_FOR_THREADS else 1
    key = (shape, rows, int(batch_sizes[0]), len(batch_sizes), threads, task, precision)
    made = _PLANS.get(key)
    if made is None:
        made = _remember(key)
    if made.n_threads > 1 and load_adaptive():
        # after every other limit: the check reads /proc (9 us), not worth it for 1 thread
        free = free_threads(made.n_threads)
        if free != made.n_threads:
            key = key[:4] + (free,) + key[5:]
            made = _PLANS.get(key) or _remember(key)
    return made


def _remember(key):
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    made = _PLANS[key] = _make_plan(*key)
    return made


def _make_plan(shape, rows, batch, n_steps, n_threads, task, precision):
    """plan()'s Plan for a call of n_threads threads at most."""
    if task == "backward":
        step_bytes = 6 * shape.hidden * shape.itemsize * batch
        saved_gates = rows * 4 * shape.hidden * shape.itemsize
        steps_per_block = min(BACKWARD_WORKSPACE_BYTES // step_bytes,
                              max(int(BACKWARD_WORKSPACE_TAPE_SHARE * saved_gates) // step_bytes,
                                  -(-BACKWARD_MIN_BLOCK_ROWS // batch)))
        steps_per_block = max(1, steps_per_block)
        gemm_rows = rows
        panel_max_rows = BACKWARD_PANEL_MAX_ROWS
        if shape.dtype_name == "float64":
            panel_max_rows = min(panel_max_rows, PANEL_MAX_ROWS_FLOAT64)
        fused = False
    else:
        # no more threads than a direction has sequences or unit blocks to share out
        if n_threads > 1:
            n_threads = min(n_threads, shape.dirs * max(batch, shape.unit_blocks))
        steps_per_block = max(1, PROJECTION_WORKSPACE_BYTES // (3 * shape.hidden * shape.itemsize
                                                               * batch))
        if precision is not None:
            panel_max_rows = QUANT_PANEL_MAX_ROWS[precision]
        elif shape.dtype_name == "float64":
            panel_max_rows = PANEL_MAX_ROWS_FLOAT64
        else:
            panel_max_rows = PANEL_MAX_ROWS
        gemm_rows = max(min(steps_per_block, n_steps) * batch,
                        batch if batch > panel_max_rows else 0)
        # the fused projection needs every tile on the panel path
        fused = precision is None and FUSE_MIN_ROWS <= batch <= min(FUSE_MAX_ROWS, panel_max_rows)
    # Each direction's team splits the sequences when each of the largest team's threads
    # gets MIN_ROWS_PER_THREAD of them, or there are fewer unit blocks than threads; else the
    # hidden-unit blocks. One thread runs every direction alone, by rows.
    largest_team = -(-n_threads // shape.dirs)
    split_rows = (largest_team == 1 or batch >= largest_team * MIN_ROWS_PER_THREAD
                  or shape.unit_blocks < largest_team)
    projection_panel_rows = PROJECTION_PANEL_ROWS[shape.dtype_name]
    args = (n_threads, steps_per_block, panel_max_rows, projection_panel_rows, split_rows, fused)
    return _new_plan(Plan, (n_threads, steps_per_block, panel_max_rows, projection_panel_rows,
                            split_rows, fused,
                            gemm_rows * shape.gemm_work_per_row > BLAS_SINGLE_THREAD_WORK,
                            args))


def directions_share_input_grad(plan, dirs):
    """Whether a bidirectional layer's backward sums both directions' dL/dx in one array, the
    second direction's GEMM adding to the first's, instead of one array each for NumPy to add:
    possible where one thread runs the directions one after the other."""
    return dirs > 1 and plan.n_threads == 1


def blas_guard(plan):
    """The context manager a planned call runs in: BLAS single-threaded when plan.limit_blas
    (our threads each run their own products: a threaded BLAS inside them oversubscribes)."""
    return blas_single_threaded() if plan.limit_blas else NO_GUARD


def copy_threads(nbytes):
    """Threads for a packing utility's row copy of nbytes."""
    return get_num_threads() if nbytes >= COPY_THREADS_MIN_BYTES else 1


class _PolicyModule(types.ModuleType):
    """This module, whose plans are made again after any of its values is set."""

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        _PLANS.clear()


sys.modules[__name__].__class__ = _PolicyModule
