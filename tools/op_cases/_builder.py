"""The dict a case module appends to its CASES (see tools/make_op_references.py for the keys)."""
import numpy as np


def make_case(name, op, opset, inputs, attrs=None, outputs=None, reference=None):
    # numpy gives 0-d results as scalars (np.float32, np.bool): make every input an array.
    inputs = [(input_name, None if array is None else np.asarray(array)) for input_name, array in inputs]
    entry = {"name": name, "op": op, "opset": opset, "inputs": inputs}
    if attrs:
        entry["attrs"] = attrs
    if outputs:
        entry["outputs"] = outputs
    if reference:
        entry["reference"] = reference
    return entry
