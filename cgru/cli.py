"""The `cgru` command (also `python -m cgru`).

    cgru                      the README's demonstration (same as `cgru demo`)
    cgru info                 version, build configuration, threads, BLAS
    cgru bench [ARGS]         the benchmark against the installed peers (a short default grid)
    cgru run MODEL.npz INPUT.npy -o OUTPUT.npy [--lengths LENGTHS.npy] [--batch-first]
             [--hidden-out HN.npy] [--batch-size N] [--threads N] [--quiet]
             [--scheduler ADDRESS]

`run` streams a saved GRU over an input that may be larger than memory: the input is
memory-mapped, processed a batch of sequences at a time, and the output written through a
memory map to a temporary file that is renamed only when complete. Errors are one line on
stderr and exit status 1 (usage errors too, with status 2), never a traceback. With --scheduler, the same
run goes to a dask.distributed cluster (cgru.dask.forward), one task per batch of sequences,
reading the input and writing the output files on storage that the workers share.
"""
import argparse
import contextlib
import os
import sys
import tempfile
import tokenize

import numpy as np

# Default batch: as many sequences as fit in about this many bytes of input plus output.
_BATCH_BYTES = 64 << 20


class CommandError(Exception):
    """A problem with the user's files or arguments: reported in one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (argparse prints the usage first, 3-5 lines)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parser():
    parser = OneLineParser(prog="cgru", description="A PyTorch-exact GRU for CPUs.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("demo", help="build a GRU, run it, print shapes and timing (default)")
    commands.add_parser("info", help="version, build configuration, threads, BLAS")
    commands.add_parser("bench", help="benchmark against installed peers on cases S1-S8 "
                                      "(see cgru bench --help)", add_help=False)
    run = commands.add_parser("run", help="run a saved model over a .npy file")
    run.add_argument("model", help="model saved with GRU.save (.npz)")
    run.add_argument("input", help="input .npy: (L, N, I), or (N, L, I) with --batch-first")
    run.add_argument("-o", "--output", required=True, help="output .npy to write")
    run.add_argument("--lengths", help=".npy of N ints: each row is a sequence of that length")
    run.add_argument("--batch-first", action="store_true", help="input and output are (N, L, *)")
    run.add_argument("--hidden-out", help="also write h_n (D*num_layers, N, H) to this .npy")
    run.add_argument("--batch-size", type=int, help="sequences per batch (default: ~64 MB)")
    run.add_argument("--threads", type=int, help="threads (default: cgru's default; negative "
                                                 "counts back from the usable cores, -1: all)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--scheduler", help="run on this dask.distributed scheduler (address); "
                                         "the files must be on storage the workers share")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from .bench import SHORT_GRID, main as bench_main
        return bench_main(argv[1:], default_cases=SHORT_GRID, prog="cgru bench")
    args = _parser().parse_args(argv)
    if args.command == "info":
        from ._engine import show_config
        show_config()
        return 0
    if args.command == "run":
        try:
            run_model(args)
        except CommandError as error:
            print(f"cgru run: error: {_one_line(error)}", file=sys.stderr)
            return 1
        except (MemoryError, OSError) as error:
            print(f"cgru run: error: {type(error).__name__}: {_one_line(error)}", file=sys.stderr)
            return 1
        return 0
    from ._demo import run_demo
    run_demo()
    return 0


def _one_line(error):
    """An error's message on one line (NumPy's own messages can run over several)."""
    return " ".join(str(error).split())


def _load_array(path, what):
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except FileNotFoundError:
        raise CommandError(f"{what} {path}: no such file") from None
    if head.startswith(b"PK"):
        raise CommandError(f"{what} {path} is an .npz archive; expected a single .npy array")
    if head != b"\x93NUMPY":      # (NumPy would take it for a pickle and suggest allow_pickle)
        raise CommandError(f"{what} {path} is not a .npy array file (it does not start with "
                           "NumPy's .npy header; numpy.save writes one)")
    try:
        with np.errstate(over="ignore"):   # (a header's byte count overflowing: refused below)
            array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise CommandError(f"{what} {path}: no such file") from None
    except (ValueError, OSError, EOFError, OverflowError, tokenize.TokenError) as error:
        # (TokenError: NumPy tokenizes the header of a version 1 or 2 file, and an unclosed
        # bracket in it is not a ValueError; OverflowError: a header shape of more bytes than
        # an int64 counts, which mmap is then asked to map)
        raise CommandError(f"{what} {path} is not a readable .npy array ({error})") from None
    if not isinstance(array, np.ndarray):
        raise CommandError(f"{what} {path} is an .npz archive; expected a single .npy array")
    return array


def _checked_inputs(args, model):
    from ._engine import resolve_threads
    from ._nn.checks import check_lengths
    x = _load_array(args.input, "input")
    if x.dtype.kind not in "biuf":
        raise CommandError(f"input {args.input} has dtype {x.dtype}; expected numbers")
    if x.ndim != 3:
        raise CommandError(f"input {args.input} has shape {x.shape}; expected 3 dimensions, "
                           + ("(N, L, I)" if args.batch_first else "(L, N, I)"))
    seq_len, batch = (x.shape[1], x.shape[0]) if args.batch_first else x.shape[:2]
    if x.shape[2] != model.input_size:
        raise CommandError(f"input {args.input} has {x.shape[2]} features; the model expects "
                           f"input_size={model.input_size}")
    if seq_len == 0 or batch == 0:
        raise CommandError(f"input {args.input} has shape {x.shape}: nothing to run")
    lengths = None
    if args.lengths:
        try:
            lengths = check_lengths(_load_array(args.lengths, "lengths"), batch, seq_len,
                                    f"lengths {args.lengths}")
        except ValueError as error:
            raise CommandError(str(error)) from None
    if args.batch_size is not None and args.batch_size < 1:
        raise CommandError(f"--batch-size must be positive, got {args.batch_size}")
    if args.threads is not None:
        try:
            resolve_threads(args.threads)       # set_num_threads's rule and words
        except ValueError as error:
            raise CommandError(f"--threads: {error}") from None
    for option, path in (("-o/--output", args.output), ("--hidden-out", args.hidden_out)):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            raise CommandError(f"{option} {path}: no such folder {folder}")
    return x, lengths, seq_len, batch


def _temporary_memmap(final_path, shape, dtype, created):
    folder = os.path.dirname(os.path.abspath(final_path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(final_path)}.",
                                   suffix=".partial")
    except OSError as error:      # (its message would name the hidden temporary file)
        raise CommandError(f"cannot write {final_path}: {error.strerror or error}") from None
    os.close(fd)
    created.append(tmp)
    return np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)


def _progress(done, total, quiet):
    if quiet:
        return
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\rcgru run [{'#' * filled}{'.' * (width - filled)}] "
                     f"{done}/{total} sequences")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _run_locally(args, model, x, lengths, seq_len, step, output, h_out, quiet):
    """Batch after batch of sequences in this process, written into the output memmaps."""
    from .packing import pack_padded_sequence, pad_packed_sequence
    batch = x.shape[0] if args.batch_first else x.shape[1]
    for b0 in range(0, batch, step):
        b1 = min(b0 + step, batch)
        rows = slice(b0, b1)
        xb = np.ascontiguousarray(x[rows] if args.batch_first else x[:, rows])
        if lengths is None:
            out, h_n = model(xb)
        else:
            packed = pack_padded_sequence(xb, lengths[rows], batch_first=args.batch_first,
                                          enforce_sorted=False)
            out, h_n = model(packed)
            out, _ = pad_packed_sequence(out, batch_first=args.batch_first,
                                         total_length=seq_len)
        if args.batch_first:
            output[rows] = out
        else:
            output[:, rows] = out
        if h_out is not None:
            h_out[:, rows] = h_n
        _progress(b1, batch, quiet)


def run_model(args):
    from . import load
    from ._engine import use_threads
    from .gru import GRU
    from .quantized import QuantizedGRU

    try:
        model = load(args.model)
    except FileNotFoundError:
        raise CommandError(f"model {args.model}: no such file") from None
    except ValueError as error:
        raise CommandError(str(error)) from None
    if not isinstance(model, (GRU, QuantizedGRU)):
        raise CommandError(f"model {args.model} is a {type(model).__name__}; `cgru run` runs GRU "
                           "and QuantizedGRU models over sequences")
    x, lengths, seq_len, batch = _checked_inputs(args, model)
    model.eval()
    model.batch_first = args.batch_first
    out_width = model.num_directions * model.hidden_size
    row_bytes = seq_len * (model.input_size + out_width) * model.dtype.itemsize
    step = args.batch_size or max(1, _BATCH_BYTES // row_bytes)
    quiet = args.quiet or not sys.stderr.isatty()

    created = []
    try:
        out_shape = (batch, seq_len, out_width) if args.batch_first else (seq_len, batch, out_width)
        output = _temporary_memmap(args.output, out_shape, model.dtype, created)
        h_out = None
        if args.hidden_out:
            h_out = _temporary_memmap(args.hidden_out, (model.num_directions * model.num_layers,
                                                        batch, model.hidden_size),
                                      model.dtype, created)
        if args.scheduler:
            _run_on_cluster(args, model, x.shape, x.dtype, lengths, step, created)
        else:
            with use_threads(args.threads) if args.threads is not None \
                    else contextlib.nullcontext():
                _run_locally(args, model, x, lengths, seq_len, step, output, h_out, quiet)
        finals = [args.output] + ([args.hidden_out] if args.hidden_out else [])
        for array in (output, h_out):
            if array is not None:
                array.flush()
        del output, h_out
        for tmp, final in zip(created, finals):
            os.replace(tmp, final)
        created.clear()
    finally:
        for tmp in created:        # a failed run leaves no partial file behind
            if os.path.exists(tmp):
                os.unlink(tmp)


class NpyFile:
    """A .npy file as a lazily opened, picklable array for dask.array.from_array: each worker
    memory-maps it itself (a memmap would pickle its data)."""

    def __init__(self, path, shape, dtype, mode="r"):
        self.path, self.shape, self.dtype, self.mode = path, tuple(shape), np.dtype(dtype), mode
        self.ndim = len(self.shape)
        self._array = None

    def _open(self):
        if self._array is None:
            self._array = np.load(self.path, mmap_mode=self.mode, allow_pickle=False)
        return self._array

    def __getitem__(self, key):
        return np.asarray(self._open()[key])

    def __setitem__(self, key, value):
        array = self._open()
        array[key] = value
        array.flush()

    def __getstate__(self):
        return dict(self.__dict__, _array=None)


def _run_on_cluster(args, model, shape, dtype, lengths, step, created):
    """The run on a dask.distributed cluster: the output files exist already (created, empty,
    at temporary paths); every batch's task writes its rows into them."""
    try:
        import dask.array as da
        from distributed import Client
    except ImportError:
        raise CommandError("--scheduler needs dask and distributed: pip install "
                           "\"cgru[dask]\"") from None
    from .dask import forward
    batch_axis = 0 if args.batch_first else 1
    chunks = tuple(step if axis == batch_axis else -1 for axis in range(3))
    x = da.from_array(NpyFile(os.path.abspath(args.input), shape, dtype), chunks=chunks,
                      asarray=False)
    try:
        client = Client(args.scheduler, timeout="30s")
    except (OSError, ValueError) as error:
        raise CommandError(f"could not connect to the scheduler {args.scheduler}: "
                           f"{error}") from None
    with client:
        output, h_n = forward(model, x, None, lengths, threads=args.threads)
        targets = [NpyFile(os.path.abspath(created[0]), output.shape, output.dtype, "r+")]
        sources = [output]
        if args.hidden_out:
            targets.append(NpyFile(os.path.abspath(created[1]), h_n.shape, h_n.dtype, "r+"))
            sources.append(h_n)
        da.store(sources, targets, lock=False)
