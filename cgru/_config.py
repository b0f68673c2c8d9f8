"""Build and runtime configuration, for bug reports and `cgru info`."""
import sys

from . import _gru
from ._blas_threads import describe_blas
from ._threads import get_num_threads
from ._version import __version__


def config():
    """The configuration as a dict: version, OpenMP, threads, BLAS."""
    return {
        "version": __version__,
        "openmp": _gru.OPENMP_ENABLED,
        "threads": get_num_threads() if _gru.OPENMP_ENABLED else 1,
        "blas": describe_blas(),
        "python": sys.version.split()[0],
    }


def show_config(file=None):
    """Print the version, whether OpenMP was compiled in, the thread count and the BLAS."""
    info = config()
    lines = [f"cgru {info['version']}",
             f"  OpenMP:  {'compiled in' if info['openmp'] else 'not available (serial build)'}",
             f"  threads: {info['threads']}",
             f"  BLAS:    {info['blas']}",
             f"  Python:  {info['python']}"]
    print("\n".join(lines), file=file or sys.stdout)
