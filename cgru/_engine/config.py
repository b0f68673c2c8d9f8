"""Build and runtime configuration, for bug reports and `cgru info`."""
import sys

from .isa import available_isas, cpu_features, cpu_model, kernel
from .blas_threads import describe_blas
from .quant_weights import reduced_precision_kernels
from .threads import get_num_threads
from .._version import __version__


def config():
    """The configuration as a dict: version, OpenMP, threads, the kernel build, the CPU (model,
    features), the kernels that run for bfloat16 and int8 weights (reduced_precision_kernels),
    BLAS."""
    features = cpu_features()
    return {
        "version": __version__,
        "openmp": kernel.OPENMP_ENABLED,
        "threads": get_num_threads() if kernel.OPENMP_ENABLED else 1,
        "kernel": kernel.__name__.rsplit("_", 1)[-1],
        "kernels_available": available_isas(),
        "cpu": cpu_model(),
        "cpu_features": features,
        "reduced_precision": reduced_precision_kernels(features),
        "blas": describe_blas(),
        "python": sys.version.split()[0],
    }


def show_config(file=None):
    """Print the version, whether OpenMP was compiled in, the thread count, the kernel build, the
    CPU and its features, the kernels for bfloat16 and int8 weights, and the BLAS."""
    info = config()
    features = info["cpu_features"]
    has = [name for name, present in features.items() if present]
    lacks = [name for name, present in features.items() if not present]
    lines = [f"cgru {info['version']}",
             f"  OpenMP:   {'compiled in' if info['openmp'] else 'not available (serial build)'}",
             f"  threads:  {info['threads']}",
             f"  kernel:   {info['kernel']} "
             f"(this CPU can run: {', '.join(info['kernels_available'])})",
             f"  CPU:      {info['cpu']}",
             f"  features: {' '.join(has) or 'none'}"
             + (f" (not: {' '.join(lacks)})" if lacks else "")]
    for precision, described in info["reduced_precision"].items():
        lines += [f"  {precision + ':':9} {described['kernel']}",
                  f"            recurrent product: {described['recurrent']}",
                  f"            input projections: {described['inputs']}"]
        if described["unused"]:
            lines.append(f"            not used: this CPU's {', '.join(described['unused'])} "
                         f"(cgru has no kernel for it yet)")
    lines += [f"  BLAS:     {info['blas']}",
              f"  Python:   {info['python']}"]
    print("\n".join(lines), file=file or sys.stdout)
