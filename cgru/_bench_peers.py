"""The implementations the benchmark (cgru/bench.py, which exports them) compares cgru with,
from the same weights.

Each builder returns a `Runner`: a zero-argument callable that runs the case once and returns
(output, h_n) as NumPy arrays in cgru's layout, or None when the peer is not installed or does
not support the case (the reason is kept for the table).
"""
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from .packing import pack_padded_sequence, pad_packed_sequence


@dataclass
class Case:
    name: str
    seq_len: int
    batch: int
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dtype: type = np.float32
    lengths: np.ndarray = None          # packed case: one length per sequence
    inputs: dict = field(default_factory=dict)

    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    def flops(self):
        """Multiply-adds x 2 of both products, over the rows really computed."""
        rows = int(self.lengths.sum()) if self.lengths is not None else self.seq_len * self.batch
        h, d, total = self.hidden_size, self.directions, 0
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else d * h
            total += 2 * rows * d * 3 * h * (width + h)
        return total


@dataclass
class Runner:
    name: str
    run: callable = None
    skipped: str = ""
    precision: str = ""     # what the peer says it computes in, where it says (OpenVINO)


def make_inputs(case, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case.seq_len, case.batch, case.input_size)).astype(case.dtype)
    if case.lengths is not None:
        for b, n in enumerate(case.lengths):
            x[n:, b] = 0
    h0 = np.zeros((case.directions * case.num_layers, case.batch, case.hidden_size), case.dtype)
    return x, h0


def cgru_runner(gru, case, x, h0, padded=False):
    if case.lengths is None or padded:
        return Runner("cgru (padded)" if padded else "cgru", lambda: gru(x, h0))

    def run():
        packed = pack_padded_sequence(x, case.lengths, enforce_sorted=False)
        output, h_n = gru(packed, h0)
        return pad_packed_sequence(output, total_length=case.seq_len)[0], h_n
    return Runner("cgru", run)


def torch_runner(gru, case, x, h0, threads):
    try:
        import torch
    except ImportError:
        return Runner("PyTorch", skipped="torch not installed")
    torch.set_num_threads(threads)
    module = torch.nn.GRU(case.input_size, case.hidden_size, case.num_layers,
                          bidirectional=case.bidirectional)
    module = module.to(getattr(torch, np.dtype(case.dtype).name)).eval()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in gru.state_dict().items()})
    return Runner("PyTorch", torch_run(module, case, x, h0, threads))


def torch_run(module, case, x, h0, threads):
    """A call of a torch GRU module (float or quantized) on the case's arrays, packing as
    torch's users do, under inference_mode at `threads` threads; returns (output, h_n) padded."""
    import torch
    tx, th = torch.from_numpy(x), torch.from_numpy(h0)
    lengths = None if case.lengths is None else torch.from_numpy(case.lengths)
    rnn = torch.nn.utils.rnn

    def run():
        torch.set_num_threads(threads)
        with torch.inference_mode():
            if lengths is None:
                out, h_n = module(tx, th)
                return out.numpy(), h_n.numpy()
            packed = rnn.pack_padded_sequence(tx, lengths, enforce_sorted=False)
            out, h_n = module(packed, th)
            out, _ = rnn.pad_packed_sequence(out, total_length=case.seq_len)
            return out.numpy(), h_n.numpy()
    return run


def onnx_file(gru, case):
    try:
        import onnx
        from ._interop.onnx import build_model
    except ImportError:
        return None
    path = os.path.join(tempfile.mkdtemp(prefix="cgru-bench-"), f"{case.name}.onnx")
    onnx.save(build_model(gru, with_lengths=True), path)
    return path


def _feeds(case, x, h0):
    lengths = case.lengths if case.lengths is not None else np.full(case.batch, case.seq_len)
    return {"input": x, "h0": h0, "sequence_lens": lengths.astype(np.int32)}


def ort_runner(gru, case, x, h0, threads, onnx_path):
    try:
        import onnxruntime as ort
    except ImportError:
        return Runner("ONNX Runtime", skipped="onnxruntime not installed")
    if onnx_path is None:
        return Runner("ONNX Runtime", skipped="onnx not installed")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # ORT's pool spins long after each call; sharing 2 cores with the other runtimes in this
    # process, that halved their speed (cgru S4 2.3 -> 5.7 ms). Off, it cost ORT itself 0-10%
    # here (S2 0.48 -> 0.53 ms, S4 4.96 -> 5.30 ms, S6 unchanged).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # e.g. no double-precision GRU kernel
        return Runner("ONNX Runtime", skipped=type(error).__name__)
    feeds = _feeds(case, x, h0)
    return Runner("ONNX Runtime", lambda: tuple(session.run(None, feeds)))


def openvino_runner(gru, case, x, h0, threads, onnx_path, precision=None):
    """OpenVINO on the case's ONNX model. precision: its INFERENCE_PRECISION_HINT ("bf16":
    its reduced-precision path, run where the CPU has bfloat16 instructions, else float32);
    default the case's dtype. The Runner's precision is what the compiled model reports."""
    try:
        import openvino as ov
    except ImportError:
        return Runner("OpenVINO", skipped="openvino not installed")
    if onnx_path is None:
        return Runner("OpenVINO", skipped="onnx not installed")
    hint = precision or ("f32" if case.dtype == np.float32 else "f64")
    try:
        core = ov.Core()
        compiled = core.compile_model(core.read_model(onnx_path), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": hint})
        request = compiled.create_infer_request()
        ran = compiled.get_property("INFERENCE_PRECISION_HINT")
    except Exception as error:
        return Runner("OpenVINO", skipped=type(error).__name__)
    feeds = _feeds(case, x, h0)

    def run():
        result = request.infer(feeds)
        return tuple(np.asarray(result[out]) for out in compiled.outputs)
    # (an element type, <Type: 'float32'>, whose short name is f32 or bf16)
    ran = ran.get_type_name() if hasattr(ran, "get_type_name") else str(ran)
    return Runner("OpenVINO", run, precision=ran)


def numpy_runner(gru, case, x, h0):
    """A plain NumPy GRU: one matrix product per timestep for the whole batch, on one thread."""
    state = {k: v.astype(case.dtype) for k, v in gru.state_dict().items()}
    h, d = case.hidden_size, case.directions
    lengths = case.lengths if case.lengths is not None else np.full(case.batch, case.seq_len)

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    from ._engine import find_openblas
    numpy_blas = find_openblas("numpy")

    def run():
        # NumPy's own OpenBLAS, held to one thread: its workers spin for ~0.1 s after a
        # threaded call and slowed whatever was timed next 2-5x on this 2-core machine.
        saved = numpy_blas.get() if numpy_blas else None
        if numpy_blas:
            numpy_blas.set(1)
        try:
            return _run()
        finally:
            if numpy_blas:
                numpy_blas.set(saved)

    def _run():
        layer_input, h_n = x, []
        for layer in range(case.num_layers):
            outs = []
            for direction in range(d):
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                gi = layer_input @ state[f"weight_ih{sfx}"].T + state[f"bias_ih{sfx}"]
                w_hh, b_hh = state[f"weight_hh{sfx}"], state[f"bias_hh{sfx}"]
                hx = h0[layer * d + direction].copy()
                out = np.zeros(layer_input.shape[:2] + (h,), case.dtype)
                steps = range(case.seq_len - 1, -1, -1) if direction else range(case.seq_len)
                for t in steps:
                    active = lengths > t
                    gh = hx @ w_hh.T + b_hh
                    r = sigmoid(gi[t, :, :h] + gh[:, :h])
                    z = sigmoid(gi[t, :, h:2 * h] + gh[:, h:2 * h])
                    n = np.tanh(gi[t, :, 2 * h:] + r * gh[:, 2 * h:])
                    hx = np.where(active[:, None], (1 - z) * n + z * hx, hx)
                    out[t] = np.where(active[:, None], hx, 0)
                outs.append(out)
                h_n.append(hx)
            layer_input = np.concatenate(outs, axis=2)
        return layer_input, np.stack(h_n)
    return Runner("NumPy", run)
