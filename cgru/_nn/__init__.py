"""What the modules share (the layer between the engine and cgru.gru / cell / quantized):

    checks.py      input validation (every check runs here, before compiled code)
    parameters.py  ParameterModule: parameters by PyTorch name, state_dict, train/eval, save
    inputs.py      the one input path of forward and vjp (SequenceCall, StepCall, layouts)
    tape.py        Backward: the vector-Jacobian product of one forward pass
"""
