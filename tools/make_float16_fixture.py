#!/usr/bin/env python3
"""Builds a float16 copy of the tiny Llama fixture, for the merged-LoRA export tests.

Why: when a LoRA adapter is merged into a model whose weights are float16, the export must keep those weights
float16 (not silently widen the file to float32), and the merge itself must be done in float32
(W16 -> float32, + scale * B @ A in float32) and rounded to float16 exactly once. Proving that needs a float16
model; every other fixture under fixtures/models/ is float32, so this script makes one.

What it builds, in fixtures/export/llama-float16/:

  model.onnx      fixtures/models/llama-torchscript-opset17/model.onnx (IR 8, opset 17, one file) run through
                  onnxconverter_common.float16.convert_float_to_float16(model, keep_io_types=True):
                    * every float32 initializer (embedding, q/k/v/o, MLP and lm_head weights, RMSNorm weights)
                      and every float32 Constant becomes float16 (Constants past +-1e4, i.e. the float32-min
                      mask fill value, are clipped to +-1e4 by the converter, with a warning);
                    * input_ids / attention_mask stay int64, and logits stays float32: the converter appends one
                      Cast (float16 -> float32) in front of the graph output;
                    * the q_proj / v_proj weights stay plain initializers read directly by their MatMul as input
                      1 (no Cast in between): the LoRA target finder looks for MatMul(activation, 2-D initializer).
                  Two fixes after the converter (onnxconverter-common 1.16.0 with onnx 1.23):
                    * the exporter's own Cast(to=FLOAT) nodes (RMSNorm's upcast/downcast, rotary embedding's
                      .float(), the attention's float casts) are left at to=FLOAT by the converter while it types
                      their outputs as float16 in value_info, so the model fails check_model; they are retargeted
                      to FLOAT16, i.e. the whole network computes in float16;
                    * the value_info the converter adds (a float16 type for every intermediate) is dropped, as
                      in the original export; shapes and types are inferred again by the checker.
                  The result keeps IR 8 and opset 17 and passes onnx.checker.check_model(full_check=True).
  inputs.npz      a byte copy of fixtures/models/llama-torchscript-opset17/inputs.npz (input_ids, attention_mask).
  ort_logits.npz  logits: float32 [2, T, vocab], onnxruntime (CPUExecutionProvider) on model.onnx and inputs.npz.

Checks: every q_proj / v_proj MatMul reads a FLOAT16 [64, out] initializer as input 1; onnxruntime's logits
match the float32 fixture's ort_logits.npz at real tokens (attention_mask == 1) to < 0.1 (float16 rounding
gives ~1e-2); a second conversion gives identical model bytes. Prints sizes, the max difference and the Casts.

Run from the repository root with the tools venv (needs onnx, onnxruntime, numpy, onnxconverter-common):
    /root/venv-tools/bin/pip install onnxconverter-common
    /root/venv-tools/bin/python tools/make_float16_fixture.py
(measured with onnx 1.23.2, onnxruntime 1.31.1, onnxconverter-common 1.16.0, numpy 2.4.6.)
"""
import collections
import pathlib
import shutil
import warnings

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto
from onnxconverter_common import float16

from fixture_files import write_npz  # tools/ is on sys.path when this script runs

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "fixtures" / "models" / "llama-torchscript-opset17"
OUT = ROOT / "fixtures" / "export" / "llama-float16"

TOLERANCE = 0.1  # max abs logits difference to the float32 model at real tokens
LORA_TARGETS = ("q_proj", "v_proj")


def convert(source):
    """The float16 model (see the module docstring) and the names of the Cast nodes the converter added."""
    model = onnx.load(source)
    original_nodes = {node.name for node in model.graph.node}
    output_names = {output.name for output in model.graph.output}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
    for warning in caught:
        print(f"  converter: {warning.message}")
    graph = converted.graph
    added = [node for node in graph.node if node.name not in original_nodes]
    # The exporter's Cast(to=FLOAT) nodes: compute in float16 like the rest; only the keep_io_types Cast that
    # feeds the float32 graph output stays a cast to FLOAT.
    retargeted = []
    for node in graph.node:
        if node.op_type != "Cast" or any(output in output_names for output in node.output):
            continue
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16
                retargeted.append(node.name)
    del graph.value_info[:]
    return converted, added, retargeted


def check_structure(model):
    """Opset/IR, io types, no float32 tensors left, and the LoRA targets read float16 initializers directly."""
    assert model.ir_version == 8, model.ir_version
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)], model.opset_import
    graph = model.graph
    types = {value.name: value.type.tensor_type.elem_type for value in list(graph.input) + list(graph.output)}
    assert types == {"input_ids": TensorProto.INT64, "attention_mask": TensorProto.INT64,
                     "logits": TensorProto.FLOAT}, types
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    leftover = [t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT]
    leftover += [n.name for n in graph.node for a in n.attribute
                 if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT]
    assert not leftover, f"float32 tensors left: {leftover}"
    producers = {output: node for node in graph.node for output in node.output}
    targets = []
    for node in graph.node:
        if node.op_type != "MatMul" or not any(t in node.name for t in LORA_TARGETS):
            continue
        weight = node.input[1]
        assert weight in initializers and weight not in producers, f"{node.name}: input 1 {weight} is not an initializer"
        tensor = initializers[weight]
        assert tensor.data_type == TensorProto.FLOAT16, f"{weight}: {TensorProto.DataType.Name(tensor.data_type)}"
        assert len(tensor.dims) == 2 and tensor.dims[0] == 64, f"{weight}: dims {list(tensor.dims)}"
        targets.append((node.name, weight, list(tensor.dims), TensorProto.DataType.Name(tensor.data_type)))
    assert len(targets) == 4, targets
    return targets


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    model, added, retargeted = convert(SOURCE / "model.onnx")
    check_structure(model)
    data = model.SerializeToString()
    again, _, _ = convert(SOURCE / "model.onnx")
    assert again.SerializeToString() == data, "conversion is not deterministic"
    path = OUT / "model.onnx"
    path.write_bytes(data)
    onnx.checker.check_model(str(path), full_check=True)
    targets = check_structure(onnx.load(path))

    shutil.copyfile(SOURCE / "inputs.npz", OUT / "inputs.npz")
    inputs = dict(np.load(OUT / "inputs.npz"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], inputs)
    assert logits.dtype == np.float32, logits.dtype
    write_npz(OUT / "ort_logits.npz", logits=logits)
    reference = np.load(SOURCE / "ort_logits.npz")["logits"]
    assert logits.shape == reference.shape, (logits.shape, reference.shape)
    mask = inputs["attention_mask"].astype(bool)
    diff = float(np.abs(logits - reference)[mask].max())
    assert np.isfinite(logits[mask]).all()

    print(f"source: {SOURCE.relative_to(ROOT)}/model.onnx ({(SOURCE / 'model.onnx').stat().st_size} bytes)")
    print(f"IR {model.ir_version}, opset {model.opset_import[0].version}; "
          f"initializer types: {dict(collections.Counter(TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer))}")
    print(f"Casts added by the converter ({len(added)}):")
    for node in added:
        print(f"  {node.op_type} {node.name}: {list(node.input)} -> {list(node.output)}")
    print(f"exporter Casts retargeted FLOAT -> FLOAT16 ({len(retargeted)}): {', '.join(retargeted)}")
    print("LoRA target MatMuls (input 1 = initializer):")
    for name, weight, dims, dtype in targets:
        print(f"  {name}: {weight} {dtype} {dims}")
    print(f"max |logits16 - logits32| at attention_mask == 1: {diff:.6g} (tolerance {TOLERANCE})")
    assert diff < TOLERANCE, diff
    for name in ("model.onnx", "inputs.npz", "ort_logits.npz"):
        print(f"wrote {(OUT / name).relative_to(ROOT)} ({(OUT / name).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
