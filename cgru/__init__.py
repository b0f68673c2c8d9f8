"""cgru: a PyTorch-exact GRU for CPUs, in Cython + OpenMP, NumPy in and NumPy out."""
try:
    from . import _engine  # noqa: F401  (loads the compiled kernel)
except ImportError as error:  # pragma: no cover - depends on how cgru was imported
    raise ImportError(
        f"cgru's compiled extension could not be imported ({error}). If you are running from "
        "the cgru source folder, Python found the uncompiled sources: install with "
        "`pip install .` and run from another folder, or build in place with "
        "`python setup.py build_ext --inplace`.") from None

from ._engine import (get_num_threads, keep_freed_memory, load_adaptive, set_load_adaptive,
                      set_num_threads, share_blas_threads, show_config, use_threads)
from ._version import __version__
from .cell import GRUCell
from .clip import clip_grad_norm_, clip_grad_value_
from .gru import GRU
from .persist import load
from .quantized import QuantizedGRU, QuantizedGRUCell
from .packing import (PackedSequence, pack_padded_sequence, pack_sequence, pad_packed_sequence,
                      pad_sequence, unpack_sequence, unpad_sequence)
# The public submodules that need only NumPy and SciPy, as `torch.optim` after `import torch`
# (cgru.sklearn, cgru.dask and cgru.torch import their frameworks: imported by name only).
from . import cell, clip, gru, optim, packing, persist, quantized  # noqa: E402

__all__ = ["GRU", "GRUCell", "QuantizedGRU", "QuantizedGRUCell", "PackedSequence", "pack_padded_sequence", "pad_packed_sequence",
           "pack_sequence", "pad_sequence", "unpack_sequence", "unpad_sequence",
           "get_num_threads", "set_num_threads", "use_threads", "share_blas_threads",
           "set_load_adaptive", "load_adaptive", "keep_freed_memory", "show_config", "load",
           "clip_grad_norm_", "clip_grad_value_", "__version__"]
