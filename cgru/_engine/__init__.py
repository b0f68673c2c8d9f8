"""The engine: the only Python that imports the compiled kernel (pyx/), and the one policy.

    isa.py            which compiled build of the kernel runs on this CPU; its features
    policy.py         every threshold, and `plan`: what one call tells the kernel
    stack.py          LayerStack: forward (plain, with a tape, reduced precision) and backward
    weights.py        float weights in the kernel's layout; gradients back to PyTorch's
    quant_weights.py  bfloat16 / int8 weights in the kernel's layout
    rows.py           the packing utilities' compiled row copies
    threads.py        the thread count (set_num_threads, use_threads)
    blas_threads.py   keeping scipy's OpenBLAS single-threaded while our threads run
    pool.py           sharing the machine: OpenBLAS on our pool, the load-adaptive count
    malloc.py         glibc's malloc told to keep freed memory (an opt-in for training loops)
    recycle.py, aligned.py  memory for results and weights
    config.py         show_config

The names below are the engine's interface to the layers above it (cgru/_nn, the modules,
services and faces); they import from `cgru._engine`, never from its files.
"""
from .blas_threads import (blas_controller, describe_blas, find_openblas,
                           numpy_blas_single_threaded)
from .config import config, show_config
from .isa import available_isas, cpu_features, cpu_model, kernel
from .malloc import keep_freed_memory
from .pool import (load_adaptive, set_load_adaptive, share_blas_threads,
                   shared_blas_libraries)
from .quant_weights import (PRECISIONS, check_precision, dequantize, from_bfloat16,
                            pack_quant_layer, quantize_int8_rows, reduced_precision_kernels,
                            to_bfloat16)
from .recycle import recycled_copy, recycled_empty, recycled_zeros
from .stack import LayerStack, dense_batch_sizes, dropout_mask
from .threads import (dask_worker_threads, get_num_threads, resolve_threads, set_num_threads,
                      usable_cores, use_threads, worker_threads_context)
from .weights import pack_layer, unpack_layer_grads
from . import rows

__all__ = ["LayerStack", "PRECISIONS", "available_isas", "blas_controller", "check_precision",
           "find_openblas", "config", "cpu_features", "cpu_model", "dask_worker_threads",
           "dense_batch_sizes", "dequantize", "describe_blas", "dropout_mask", "from_bfloat16",
           "get_num_threads", "keep_freed_memory", "kernel", "load_adaptive", "numpy_blas_single_threaded", "pack_layer", "pack_quant_layer",
           "quantize_int8_rows", "recycled_copy", "recycled_empty", "recycled_zeros",
           "reduced_precision_kernels",
           "resolve_threads", "rows", "set_load_adaptive", "set_num_threads",
           "share_blas_threads", "shared_blas_libraries", "show_config", "to_bfloat16",
           "unpack_layer_grads", "usable_cores", "use_threads", "worker_threads_context"]
