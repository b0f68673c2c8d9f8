"""cgru on Dask: a GRU over a dask.array of sequences, chunk by chunk on the workers.

    output, h_n = cgru.dask.forward(gru, x)           # lazy dask arrays
    output.compute()                                  # or .to_zarr(...), da.store(...), ...

Needs dask (``pip install "cgru[dask]"``; dask.distributed for clusters). Importing cgru never
imports dask.
"""
try:
    import dask
    import dask.array as da
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("cgru.dask needs dask: pip install \"dask[array]\" (or pip install "
                      "\"cgru[dask]\"; add distributed for clusters)") from None

import sys
import threading

import numpy as np

from ._engine import dask_worker_threads, get_num_threads, resolve_threads, use_threads
from ._nn.checks import check_lengths
from ._nn.inputs import check_sequence_sizes
from .gru import GRU
from .packing import pack_padded_sequence, pad_packed_sequence

__all__ = ["forward", "task_threads"]


def task_threads():
    """The threads one cgru task takes where it runs, so that a worker's tasks together use
    its cores and no more (no OpenMP or BLAS oversubscription):

    - on a dask.distributed worker with T > 1 threads (T tasks at once): 1 thread;
    - on a single-threaded worker (one task at a time): cgru's default, the cores the worker
      process may use, or OMP_NUM_THREADS when set (dask's nanny sets it to 1 in the worker
      processes it starts, by its distributed.nanny.pre-spawn-environ setting: start the
      workers with OMP_NUM_THREADS=n, or pass threads=n, to give each task n threads);
    - under the local threaded scheduler (tasks in a pool of threads): 1 thread;
    - under the synchronous scheduler (tasks in the calling thread): cgru's default.

    Outside any task it says what a call in this thread would get: cgru's default, or what
    set_num_threads / use_threads set. forward(..., threads=n) overrides this for every task
    of its graph. Always an int (cgru.get_num_threads() where cgru's default applies).
    """
    if "distributed" in sys.modules and _on_worker():
        n = dask_worker_threads()
        return get_num_threads() if n is None else n
    return get_num_threads() if threading.current_thread() is threading.main_thread() else 1


def _on_worker():
    try:
        sys.modules["distributed"].get_worker()
        return True
    except ValueError:
        return False


def _run_chunk(gru, x, hx, lengths, threads):
    """One chunk of sequences: (output, h_n) as gru(x, hx) gives them (packed by `lengths`,
    output zero past each length, when given)."""
    with use_threads(task_threads() if threads is None else threads):
        if lengths is None:
            return gru(x, hx)
        seq_len = x.shape[1] if gru.batch_first else x.shape[0]
        packed = pack_padded_sequence(x, np.asarray(lengths), batch_first=gru.batch_first,
                                      enforce_sorted=False)
        output, h_n = gru(packed, hx)
        output, _ = pad_packed_sequence(output, batch_first=gru.batch_first,
                                        total_length=seq_len)
        return output, h_n


def _as_dask(value, name):
    if isinstance(value, da.Array):
        return value
    if isinstance(value, np.ndarray):
        return da.from_array(value, chunks=-1)
    raise TypeError(f"{name} must be a dask or NumPy array, got {type(value).__name__}")


def forward(gru, input, hx=None, lengths=None, *, threads=None):
    """gru(input, hx) on Dask: lazy (output, h_n), computed chunk by chunk on the workers.

    Parameters
    ----------
    gru : cgru.GRU
        Travels to each worker once per graph (one key that every chunk's task reads), not
        once per chunk. Used in its current mode.
    input : dask.array (L, N, H_in), or (N, L, H_in) when gru.batch_first
        Rechunked to whole sequences: one chunk along L and H_in, the caller's chunks kept
        along N. Checked like gru(input) before anything is computed: the same ValueError.
    hx : NumPy or dask array (D * num_layers, N, H), optional
        Split along N like the input.
    lengths : NumPy or dask array (N,) of ints, optional
        Each row is a sequence of that length, run packed (no work on padding): output is
        zero past each length and h_n is each sequence's state after its own last step, as
        ``cgru run --lengths`` writes them. NumPy lengths are checked at once, dask ones when
        their chunk runs.
    threads : int, optional
        cgru threads per task; by default task_threads() decides where each task runs.

    Returns
    -------
    output : dask.array (L, N, D * H), or (N, L, D * H) when batch_first
    h_n : dask.array (D * num_layers, N, H)
        Chunked along N as the input; equal to the single-process call on the same data.
    """
    if not isinstance(gru, GRU):
        raise TypeError(f"gru must be a cgru.GRU, got {type(gru).__name__}")
    if threads is not None:
        resolve_threads(threads)     # 0 or a non-int refused here, not in a task (n < 0 counts
        #                              back from the cores of the worker that runs the task)
    x = _as_dask(input, "input")
    if x.dtype.kind not in "biuf":
        raise TypeError(f"input must be a real numeric array, got an array of dtype {x.dtype}")
    if x.ndim not in (2, 3):
        raise ValueError(f"GRU: Expected input to be 2D or 3D, got {x.ndim}D instead")
    if x.ndim == 2:
        raise ValueError("cgru.dask.forward: expected batched 3-D input (L, N, H_in) to split "
                         "along N, got an unbatched 2-D sequence: call the module itself")
    batch_axis = 0 if gru.batch_first else 1
    seq_len, batch = x.shape[1 - batch_axis], x.shape[batch_axis]
    check_sequence_sizes(gru, seq_len, batch, x.shape[2])
    x = x.rechunk({1 - batch_axis: -1, 2: -1})
    row_chunks = x.chunks[batch_axis]
    layers = gru.num_directions * gru.num_layers
    state_shape = (layers, batch, gru.hidden_size)

    hx_blocks = [None] * len(row_chunks)
    if hx is not None:
        h = _as_dask(hx, "hx")
        if h.ndim != 3:
            raise ValueError(f"For batched 3-D input, hx should also be 3-D but got "
                             f"{h.ndim}-D tensor")
        if h.shape != state_shape:
            raise ValueError(f"Expected hidden size {state_shape}, got {list(h.shape)}")
        hx_blocks = list(h.rechunk((-1, row_chunks, -1)).to_delayed().ravel())
    length_blocks = [None] * len(row_chunks)
    if lengths is not None:
        if isinstance(lengths, np.ndarray) or not isinstance(lengths, da.Array):
            lengths = check_lengths(lengths, batch, seq_len)
        elif lengths.shape != (batch,) or lengths.dtype.kind not in "iu":
            raise ValueError(f"lengths: expected {batch} integers (one per sequence), got "
                             f"dtype {lengths.dtype}, shape {lengths.shape}")
        length_blocks = list(da.asarray(lengths).rechunk((row_chunks,)).to_delayed().ravel())

    model = dask.delayed(gru, pure=True, traverse=False)
    run = dask.delayed(_run_chunk, pure=True, nout=2)
    width = gru.num_directions * gru.hidden_size
    outputs, states = [], []
    for rows, xb, hb, lb in zip(row_chunks, x.to_delayed().ravel(), hx_blocks, length_blocks):
        out, h_n = run(model, xb, hb, lb, threads)
        out_shape = (rows, seq_len, width) if gru.batch_first else (seq_len, rows, width)
        outputs.append(da.from_delayed(out, out_shape, dtype=gru.dtype))
        states.append(da.from_delayed(h_n, (layers, rows, gru.hidden_size), dtype=gru.dtype))
    return da.concatenate(outputs, axis=batch_axis), da.concatenate(states, axis=1)
