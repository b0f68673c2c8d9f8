"""cgru: a PyTorch-exact GRU for CPUs, in Cython + OpenMP, NumPy in and NumPy out."""
from ._config import show_config
from ._threads import get_num_threads, set_num_threads, use_threads
from ._version import __version__
from .gru import GRU
from .packing import (PackedSequence, pack_padded_sequence, pack_sequence, pad_packed_sequence,
                      pad_sequence, unpack_sequence, unpad_sequence)

__all__ = ["GRU", "PackedSequence", "pack_padded_sequence", "pad_packed_sequence",
           "pack_sequence", "pad_sequence", "unpack_sequence", "unpad_sequence",
           "get_num_threads", "set_num_threads", "use_threads", "show_config", "__version__"]
