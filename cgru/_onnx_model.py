"""A GRU module as an ONNX graph: one ONNX `GRU` node per layer (onnx imported lazily).

ONNX's GRU has PyTorch's equations with ``linear_before_reset=1``; its gates are ordered
z | r | h where PyTorch's are r | z | n, and its output is (L, D, N, H), so layers are joined by
a Transpose and a Reshape to (L, N, D*H). The model's input and outputs use the module's layout
(batch-first when it is), with dynamic batch and sequence axes.
"""
import numpy as np


def onnx_gate_order(w, hidden):
    """Rows r|z|n (PyTorch) -> z|r|h (ONNX), along the first axis."""
    r, z, n = w[:hidden], w[hidden:2 * hidden], w[2 * hidden:]
    return np.concatenate([z, r, n])


def torch_gate_order(w, hidden):
    """Rows z|r|h (ONNX) -> r|z|n (PyTorch), along the first axis."""
    z, r, n = w[:hidden], w[hidden:2 * hidden], w[2 * hidden:]
    return np.concatenate([r, z, n])


def build_model(gru, *, with_lengths=False, opset=14):
    """onnx.ModelProto computing (output, h_n) of `gru` (a cgru.GRU) from (input[, lengths], h0).

    Inputs: ``input`` in the module's layout ((N, L, I) if batch_first else (L, N, I)),
    ``h0`` (D*num_layers, N, H), and with with_lengths ``sequence_lens`` (N,) int32.
    Outputs: ``output`` in the module's layout, ``h_n`` (D*num_layers, N, H).
    """
    import onnx
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
        starts = np.array([layer * d], dtype=np.int64)
        inits += [numpy_helper.from_array(starts, f"h0_start{layer}"),
                  numpy_helper.from_array(starts + d, f"h0_stop{layer}"),
                  numpy_helper.from_array(np.array([0], dtype=np.int64), f"axis{layer}")]
        nodes.append(helper.make_node("Slice", ["h0", f"h0_start{layer}", f"h0_stop{layer}",
                                                f"axis{layer}"], [f"h0_{layer}"]))
        nodes.append(helper.make_node(
            "GRU", [layer_input, *names, "sequence_lens" if with_lengths else "", f"h0_{layer}"],
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
    inputs.append(helper.make_tensor_value_info("h0", elem, [d * layers, "batch", h]))
    outputs = [helper.make_tensor_value_info("output", elem, out_shape),
               helper.make_tensor_value_info("h_n", elem, [d * layers, "batch", h])]
    graph = helper.make_graph(nodes, "cgru_gru", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="cgru")
    onnx.checker.check_model(model)
    return model
