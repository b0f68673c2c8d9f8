"""Build and runtime configuration, for bug reports and `cgru info`."""
import sys

from .isa import available_isas, kernel
from .blas_threads import describe_blas
from .threads import get_num_threads
from .._version import __version__


def config():
    """The configuration as a dict: version, OpenMP, threads, BLAS."""
    return {
        "version": __version__,
        "openmp": kernel.OPENMP_ENABLED,
        "threads": get_num_threads() if kernel.OPENMP_ENABLED else 1,
        "kernel": kernel.__name__.rsplit("_", 1)[-1],
        "kernels_available": available_isas(),
        "blas": describe_blas(),
        "python": sys.version.split()[0],
    }


def show_config(file=None):
    """Print the version, whether OpenMP was compiled in, the thread count and the BLAS."""
    info = config()
    lines = [f"cgru {info['version']}",
             f"  OpenMP:  {'compiled in' if info['openmp'] else 'not available (serial build)'}",
             f"  threads: {info['threads']}",
             f"  kernel:  {info['kernel']} "
             f"(this CPU can run: {', '.join(info['kernels_available'])})",
             f"  BLAS:    {info['blas']}",
             f"  Python:  {info['python']}"]
    print("\n".join(lines), file=file or sys.stdout)
