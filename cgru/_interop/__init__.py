"""Other frameworks <-> cgru: PyTorch (torch.py), Keras 3 (keras.py), ONNX (onnx.py).

Above the modules: each imports cgru's modules at its top and its framework lazily, inside
the function that needs it. GRU.from_torch and the other façade methods reach up here lazily.
"""
