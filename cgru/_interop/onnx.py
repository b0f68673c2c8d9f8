"""ONNX <-> cgru: a GRU module as one ONNX `GRU` node per layer (onnx imported lazily).

ONNX's GRU has PyTorch's equations with ``linear_before_reset=1``; its gates are ordered
z | r | h where PyTorch's are r | z | n, and its output is (L, D, N, H), so layers are joined by
a Transpose and a Reshape to (L, N, D*H). Exported models use the module's layout (batch-first
when it is), with dynamic batch and sequence axes.
"""
import os

import numpy as np

# Operators allowed around the GRU nodes of an imported model: layout glue, nothing that computes.
_GLUE_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Identity", "Slice",
             "Shape", "Gather", "Constant", "ConstantOfShape", "Cast", "Split", "Expand"}


def _require_onnx(what):
    try:
        import onnx
    except ImportError:
        raise ImportError(f"{what} needs the onnx package, which is not installed: "
                          "pip install onnx") from None
    return onnx


def onnx_gate_order(w, hidden):
    """Rows r|z|n (PyTorch) -> z|r|h (ONNX), along the first axis."""
    r, z, n = w[:hidden], w[hidden:2 * hidden], w[2 * hidden:]
    return np.concatenate([z, r, n])


def torch_gate_order(w, hidden):
    """Rows z|r|h (ONNX) -> r|z|n (PyTorch), along the first axis."""
    z, r, n = w[:hidden], w[hidden:2 * hidden], w[2 * hidden:]
    return np.concatenate([r, z, n])


def build_model(gru, *, with_lengths=False, initial_state=True, opset=14):
    """onnx.ModelProto computing (output, h_n) of `gru` (a cgru.GRU).

    Inputs: ``input`` in the module's layout ((N, L, I) if batch_first else (L, N, I)); with
    initial_state, ``h0`` (D*num_layers, N, H) (else zeros); with with_lengths,
    ``sequence_lens`` (N,) int32. Outputs: ``output`` in the module's layout, ``h_n``
    (D*num_layers, N, H).
    """
    onnx = _require_onnx("exporting to ONNX")
    from onnx import TensorProto, helper, numpy_helper

    h, d, layers = gru.hidden_size, gru.num_directions, gru.num_layers
    elem = TensorProto.FLOAT if gru.dtype == np.float32 else TensorProto.DOUBLE
    nodes, inits = [], []
    time_major = "input"
    if gru.batch_first:
        nodes.append(helper.make_node("Transpose", ["input"], ["input_tm"], perm=[1, 0, 2]))
        time_major = "input_tm"
    inits.append(numpy_helper.from_array(np.array([0, 0, -1], dtype=np.int64), "merge_shape"))
    state = gru.state_dict()
    h_parts = []
    layer_input = time_major
    for layer in range(layers):
        suffixes = [f"_l{layer}", f"_l{layer}_reverse"][:d]
        w = np.stack([onnx_gate_order(state[f"weight_ih{s}"], h) for s in suffixes])
        r = np.stack([onnx_gate_order(state[f"weight_hh{s}"], h) for s in suffixes])
        names = [f"W{layer}", f"R{layer}", f"B{layer}"]
        inits += [numpy_helper.from_array(w, names[0]), numpy_helper.from_array(r, names[1])]
        if gru.bias:
            b = np.stack([np.concatenate([onnx_gate_order(state[f"bias_ih{s}"], h),
                                          onnx_gate_order(state[f"bias_hh{s}"], h)])
                          for s in suffixes])
            inits.append(numpy_helper.from_array(b, names[2]))
        else:
            names[2] = ""
        layer_h0 = ""
        if initial_state:
            starts = np.array([layer * d], dtype=np.int64)
            inits += [numpy_helper.from_array(starts, f"h0_start{layer}"),
                      numpy_helper.from_array(starts + d, f"h0_stop{layer}"),
                      numpy_helper.from_array(np.array([0], dtype=np.int64), f"axis{layer}")]
            nodes.append(helper.make_node("Slice", ["h0", f"h0_start{layer}", f"h0_stop{layer}",
                                                    f"axis{layer}"], [f"h0_{layer}"]))
            layer_h0 = f"h0_{layer}"
        nodes.append(helper.make_node(
            "GRU", [layer_input, *names, "sequence_lens" if with_lengths else "", layer_h0],
            [f"Y{layer}", f"Yh{layer}"], hidden_size=h, linear_before_reset=1,
            direction="bidirectional" if d == 2 else "forward"))
        nodes.append(helper.make_node("Transpose", [f"Y{layer}"], [f"Yt{layer}"],
                                      perm=[0, 2, 1, 3]))
        layer_output = "output_tm" if layer == layers - 1 and not gru.batch_first else \
            f"out{layer}"
        nodes.append(helper.make_node("Reshape", [f"Yt{layer}", "merge_shape"], [layer_output]))
        h_parts.append(f"Yh{layer}")
        layer_input = layer_output
    if gru.batch_first:
        nodes.append(helper.make_node("Transpose", [layer_input], ["output"], perm=[1, 0, 2]))
    else:
        nodes.append(helper.make_node("Identity", [layer_input], ["output"]))
    nodes.append(helper.make_node("Concat", h_parts, ["h_n"], axis=0))

    in_shape = ["batch", "sequence", gru.input_size] if gru.batch_first else \
        ["sequence", "batch", gru.input_size]
    out_shape = ["batch", "sequence", d * h] if gru.batch_first else ["sequence", "batch", d * h]
    inputs = [helper.make_tensor_value_info("input", elem, in_shape)]
    if with_lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32,
                                                    ["batch"]))
    if initial_state:
        inputs.append(helper.make_tensor_value_info("h0", elem, [d * layers, "batch", h]))
    outputs = [helper.make_tensor_value_info("output", elem, out_shape),
               helper.make_tensor_value_info("h_n", elem, [d * layers, "batch", h])]
    graph = helper.make_graph(nodes, "cgru_gru", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="cgru")
    onnx.checker.check_model(model)
    return model


def to_onnx(gru, path, initial_state=False, opset=14):
    onnx = _require_onnx("GRU.to_onnx")
    onnx.save(build_model(gru, initial_state=initial_state, opset=opset), os.fspath(path))


def _attributes(node):
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def gru_from_onnx(cls, model):
    onnx = _require_onnx("GRU.from_onnx")
    from onnx import numpy_helper
    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    elif isinstance(model, bytes):
        model = onnx.load_from_string(model)
    elif not isinstance(model, onnx.ModelProto):
        raise TypeError(f"GRU.from_onnx expects an onnx.ModelProto, a path or bytes, got "
                        f"{type(model).__name__}")
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and "value" in _attributes(node):
            constants[node.output[0]] = numpy_helper.to_array(_attributes(node)["value"])
    others = sorted({n.op_type for n in graph.node} - _GLUE_OPS - {"GRU"})
    if others:
        raise ValueError(f"GRU.from_onnx reads models made of GRU nodes (one per layer) and "
                         f"layout operators; this one also computes {others}")
    grus = [n for n in graph.node if n.op_type == "GRU"]
    if not grus:
        raise ValueError("GRU.from_onnx: the model has no GRU node")

    layers, hidden, direction, layout = [], None, None, 0
    for i, node in enumerate(grus):
        attrs = _attributes(node)
        where = f"GRU node {i} ({node.name or 'unnamed'})"
        if attrs.get("linear_before_reset", 0) != 1:
            raise ValueError(f"{where}: linear_before_reset=0 applies the reset gate before the "
                             "recurrent product; only linear_before_reset=1 is PyTorch's GRU")
        if "clip" in attrs:
            raise ValueError(f"{where}: clip={attrs['clip']} is not part of PyTorch's GRU")
        dirn = attrs.get("direction", b"forward")
        dirn = dirn.decode() if isinstance(dirn, bytes) else dirn
        if dirn not in ("forward", "bidirectional"):
            raise ValueError(f"{where}: direction={dirn!r}; PyTorch's GRU runs forward or "
                             "both ways")
        acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
        if acts and acts != ["Sigmoid", "Tanh"] * (2 if dirn == "bidirectional" else 1):
            raise ValueError(f"{where}: activations {acts}; only the default Sigmoid, Tanh")
        if "activation_alpha" in attrs or "activation_beta" in attrs:
            raise ValueError(f"{where}: activation_alpha/beta are not part of PyTorch's GRU")
        inputs = list(node.input) + [""] * (6 - len(node.input))
        missing = [name for name in inputs[1:3] + inputs[3:4] if name and name not in constants]
        if missing:
            raise ValueError(f"{where}: weights {missing} are computed, not stored; cgru needs "
                             "them as initializers or constants")
        w, r = constants[inputs[1]], constants[inputs[2]]
        b = constants[inputs[3]] if inputs[3] else None
        h = attrs.get("hidden_size", r.shape[-1])
        if (hidden is not None and h != hidden) or (direction is not None and dirn != direction):
            raise ValueError(f"{where}: layers differ in hidden_size or direction")
        hidden, direction = h, dirn
        if i == 0:
            layout = attrs.get("layout", 0)
        layers.append((w, r, b))

    d = 2 if direction == "bidirectional" else 1
    input_size = layers[0][0].shape[2]
    for k, (w, r, b) in enumerate(layers):
        width = input_size if k == 0 else d * hidden
        if w.shape != (d, 3 * hidden, width) or r.shape != (d, 3 * hidden, hidden) or (
                b is not None and b.shape != (d, 6 * hidden)):
            raise ValueError(f"GRU node {k}: weights W {w.shape}, R {r.shape}, B "
                             f"{None if b is None else b.shape} do not fit hidden_size={hidden}, "
                             f"input width {width}, {d} direction(s)")
    has_bias = layers[0][2] is not None
    if any((b is not None) != has_bias for _, _, b in layers):
        raise ValueError("GRU.from_onnx: some layers have biases and others not")
    producers = {out: n for n in graph.node for out in n.output}
    first_input = producers.get(grus[0].input[0])
    batch_first = layout == 1 or (
        first_input is not None and first_input.op_type == "Transpose"
        and list(_attributes(first_input).get("perm", [])) == [1, 0, 2])
    dtype = np.float64 if layers[0][0].dtype == np.float64 else np.float32
    gru = cls(input_size, hidden, len(layers), bias=has_bias, batch_first=batch_first,
              bidirectional=d == 2, dtype=dtype)
    state = {}
    for k, (w, r, b) in enumerate(layers):
        for j, suffix in enumerate([f"_l{k}", f"_l{k}_reverse"][:d]):
            state[f"weight_ih{suffix}"] = torch_gate_order(w[j], hidden)
            state[f"weight_hh{suffix}"] = torch_gate_order(r[j], hidden)
            if has_bias:
                state[f"bias_ih{suffix}"] = torch_gate_order(b[j][:3 * hidden], hidden)
                state[f"bias_hh{suffix}"] = torch_gate_order(b[j][3 * hidden:], hidden)
    gru.load_state_dict(state)
    return gru
