#!/usr/bin/env python3
"""Builds one-node ONNX models for every op case in tools/op_cases/*.py, runs them with onnxruntime, and writes
the reference data the Swift op tests compare against.

For a case named NAME it writes, into fixtures/ops/:
  NAME.onnx          the one-node model (graph inputs named as the case's inputs, outputs as its outputs)
  NAME.inputs.npz    the inputs, keyed by graph input name
  NAME.outputs.npz   onnxruntime's outputs, keyed by graph output name

A case module defines CASES, a list of dicts:
  name     unique case name (file-name safe)
  op       op type
  opset    default-domain opset of the model
  inputs   list of (name, numpy array) or (name, None) for an omitted optional input; order = node input order
  outputs  list of output names (default ["y"])
  attrs    dict of attributes (default {})
  output_type  optional TensorProto element type of the outputs (needed where ONNX cannot infer it, e.g. contrib ops)
  domain   optional op domain (e.g. "com.microsoft" for onnxruntime's contrib ops), imported at version 1
  reference  optional callable(*inputs) -> list of arrays: numpy reference used instead of onnxruntime
           (for cases onnxruntime cannot run at that opset); the file records which one produced it.

Run with a Python that has numpy, onnx and onnxruntime:  python tools/make_op_references.py
"""
import importlib.util
import pathlib
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "ops"


def load_cases():
    cases = []
    sys.path.insert(0, str(ROOT / "tools" / "op_cases"))  # for the shared _builder module
    for path in sorted((ROOT / "tools" / "op_cases").glob("[!_]*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cases.extend(module.CASES)
    names = [c["name"] for c in cases]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        sys.exit(f"duplicate case names: {sorted(duplicates)}")
    return cases


def build_model(case):
    inputs = case["inputs"]
    outputs = case.get("outputs", ["y"])
    graph_inputs = []
    node_inputs = []
    for name, array in inputs:
        if array is None:
            node_inputs.append("")
            continue
        node_inputs.append(name)
        elem = helper.np_dtype_to_tensor_dtype(array.dtype)
        graph_inputs.append(helper.make_tensor_value_info(name, elem, list(array.shape)))
    node = helper.make_node(case["op"], node_inputs, outputs, name=f"{case['name']}_node",
                            domain=case.get("domain", ""), **case.get("attrs", {}))
    # A case may give its outputs' element type ("output_type"); otherwise ONNX shape inference fills it in below.
    output_type = case.get("output_type", onnx.TensorProto.UNDEFINED)
    graph_outputs = [helper.make_tensor_value_info(name, output_type, None) for name in outputs]
    graph = helper.make_graph([node], case["name"], graph_inputs, graph_outputs)
    opsets = [helper.make_opsetid("", case["opset"])]
    if case.get("domain"):
        opsets.append(helper.make_opsetid(case["domain"], 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8 if case["opset"] <= 17 else (9 if case["opset"] <= 20 else 10)
    # onnxruntime refuses graph outputs of type UNDEFINED: let ONNX shape inference fill in their types.
    return onnx.shape_inference.infer_shapes(model)


def run_reference(case, model):
    feeds = {name: array for name, array in case["inputs"] if array is not None}
    if "reference" in case:
        arrays = case["reference"](*[array for _, array in case["inputs"]])
        return dict(zip(case.get("outputs", ["y"]), arrays)), "numpy"
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds))), "onnxruntime"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for stale in OUT.glob("*"):
        stale.unlink()
    cases = load_cases()
    for case in cases:
        model = build_model(case)
        outputs, source = run_reference(case, model)
        model.doc_string = f"reference outputs computed by {source}"
        onnx.save(model, OUT / f"{case['name']}.onnx")
        np.savez(OUT / f"{case['name']}.inputs.npz", **{n: a for n, a in case["inputs"] if a is not None})
        np.savez(OUT / f"{case['name']}.outputs.npz", **outputs)
    print(f"wrote {len(cases)} op cases to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
