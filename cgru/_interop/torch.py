"""PyTorch <-> cgru: configuration and weights of nn.GRU and nn.GRUCell (torch imported lazily)."""
import numpy as np

from ..quantized import QuantizedGRU


def _require_torch(what):
    try:
        import torch
    except ImportError:
        raise ImportError(f"{what} needs PyTorch, which is not installed: "
                          "pip install torch==2.13.0") from None
    return torch


def _numpy_dtype(module):
    """float64 modules stay float64; every other float dtype (float16, bfloat16, float32) maps
    to float32."""
    params = list(module.parameters())
    if params and str(params[0].dtype) == "torch.float64":
        return np.float64
    return np.float32


def _state(module):
    return {k: v.detach().cpu().float().numpy() if str(v.dtype) in ("torch.float16",
                                                                     "torch.bfloat16")
            else v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def gru_from_torch(cls, module):
    torch = _require_torch("GRU.from_torch")
    dynamic = getattr(getattr(getattr(torch, "ao", None), "nn", None), "quantized", None)
    if dynamic is not None and isinstance(module, dynamic.dynamic.GRU):
        return _from_dynamic_quantized(module, torch)
    if not isinstance(module, torch.nn.GRU):
        raise TypeError(f"GRU.from_torch expects a torch.nn.GRU, got {type(module).__name__}")
    gru = cls(module.input_size, module.hidden_size, module.num_layers, bias=module.bias,
              batch_first=module.batch_first, dropout=module.dropout,
              bidirectional=module.bidirectional, dtype=_numpy_dtype(module))
    gru.load_state_dict(_state(module))
    return gru


def _from_dynamic_quantized(module, torch):
    """A QuantizedGRU (int8) from torch.ao.nn.quantized.dynamic.GRU, its int8 weights and
    scales as they are: a per-tensor scale becomes the same scale on every row, per-channel
    scales are per row already. Zero points must be 0 (quantize_dynamic's qint8 weights are
    symmetric); anything else is a ValueError. The float biases are kept."""
    if module.dtype != torch.qint8:
        raise ValueError(f"GRU.from_torch supports dynamic quantized GRUs with qint8 weights, "
                         f"got {module.dtype} (use the float module and GRU.quantize)")
    parts = module._weight_bias()
    stored = {}
    for name, weight in parts["weight"].items():
        if weight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            scales = np.full(weight.shape[0], weight.q_scale(), dtype=np.float32)
            zero_points = np.array([weight.q_zero_point()])
        elif weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric) \
                and weight.q_per_channel_axis() == 0:
            scales = weight.q_per_channel_scales().numpy().astype(np.float32)
            zero_points = weight.q_per_channel_zero_points().numpy()
        else:
            raise ValueError(f"{name}: unsupported quantization scheme {weight.qscheme()}")
        if np.any(zero_points != 0):
            raise ValueError(f"{name}: zero points must be 0 (symmetric int8 weights), got "
                             f"{np.unique(zero_points)[:4].tolist()}")
        stored[name] = weight.int_repr().numpy().astype(np.int8)
        stored[name + "_scale"] = scales
    for name, bias in parts["bias"].items():
        if bias is not None:
            stored[name] = bias.detach().float().numpy()
    config = dict(input_size=module.input_size, hidden_size=module.hidden_size,
                  num_layers=module.num_layers, bias=module.bias,
                  batch_first=module.batch_first, dropout=float(module.dropout),
                  bidirectional=module.bidirectional, precision="int8")
    try:
        return QuantizedGRU.from_stored(config, stored)
    except KeyError as error:
        raise ValueError(f"GRU.from_torch: unexpected weights in {type(module).__name__}: "
                         f"{error}") from None


def cell_from_torch(cls, module):
    torch = _require_torch("GRUCell.from_torch")
    if not isinstance(module, torch.nn.GRUCell):
        raise TypeError(f"GRUCell.from_torch expects a torch.nn.GRUCell, got "
                        f"{type(module).__name__}")
    cell = cls(module.input_size, module.hidden_size, bias=module.bias,
               dtype=_numpy_dtype(module))
    cell.load_state_dict(_state(module))
    return cell


def _load_into(module, cgru_module, torch):
    module = module.to(getattr(torch, cgru_module.dtype.name))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in cgru_module.state_dict().items()})
    return module.train(cgru_module.training)


def gru_to_torch(gru):
    torch = _require_torch("GRU.to_torch")
    module = torch.nn.GRU(gru.input_size, gru.hidden_size, gru.num_layers, bias=gru.bias,
                          batch_first=gru.batch_first, dropout=gru.dropout,
                          bidirectional=gru.bidirectional)
    return _load_into(module, gru, torch)


def cell_to_torch(cell):
    torch = _require_torch("GRUCell.to_torch")
    return _load_into(torch.nn.GRUCell(cell.input_size, cell.hidden_size, bias=cell.bias),
                      cell, torch)
