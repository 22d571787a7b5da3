#!/usr/bin/env python3
"""Builds the onnx-community-style int8 fixtures under fixtures/int8/ (issue 9): DynamicQuantizeLinear +
MatMulInteger projections and a uint8 embedding Gather + DequantizeLinear, as transformers.js's
`scripts/quantize.py` writes `model_quantized.onnx` / `model_int8.onnx` / `model_uint8.onnx`.

  python tools/make_int8_fixtures.py models   fixtures/models/llama-torchscript/model.onnx (tools/make_fixtures.py's
                                              tiny Llama, optimum-style TorchScript export) through `onnxslim.slim`
                                              (transformers.js's convert.py slims every export), then quantised by
                                              `onnxruntime.quantization.quantize_dynamic` with the options
                                              transformers.js passes to ONNXQuantizer for its q8 modes:
                                                op_types_to_quantize = IntegerOpsRegistry's keys (MatMul and Gather
                                                  here; Conv, Attention, LSTM, Transpose, EmbedLayerNormalization
                                                  are absent from the graph or left alone),
                                                per_channel = False, reduce_range = False (its defaults, None),
                                                extra_options EnableSubgraph = True, MatMulConstBOnly = True,
                                                activations QUInt8 (dynamic quantisation only supports uint8).
                                              Weights QInt8: `model_int8`, and `model_quantized` for a graph without
                                              Conv/GroupQueryAttention/MultiHeadAttention, as a Llama's. QUInt8
                                              weights (`model_uint8`) and per-channel scales are covered by the op
                                              cases, not by a second model (fixture budget). The value_info that the
                                              quantizer's shape inference adds (32 KB of intermediate types, no
                                              semantics) is dropped. Into fixtures/int8/llama-int8/: model.onnx,
                                              config.json,
                                                inputs.npz       the source's input_ids/attention_mask [2, 12]
                                                ort_logits.npz   onnxruntime's logits (graph optimisations off, one
                                                                 thread, so that the file's own nodes run)
                                              plus fixtures/int8/fixtures.json.
  python tools/make_int8_fixtures.py patterns small graphs (x [2, 3, 16] -> MatMul W1, MatMul W2 reading the same x ->
                                              Tanh(·)·(·) -> MatMul W3) quantised by quantize_dynamic in the forms
                                              the whole-model fixture lacks, into fixtures/int8/patterns/ in the op
                                              cases' format (NAME.onnx, .inputs.npz, .outputs.npz by onnxruntime):
                                                per_channel_uint8  QUInt8 weights, per_channel, reduce_range (one
                                                                   scale and zero point per output column)
                                                per_tensor_int8    QInt8, as the whole-model fixture
                                                ort_optimized      per_tensor_int8 saved by onnxruntime's optimiser
                                                                   (level extended): MatMulIntegerToFloat where the
                                                                   DynamicQuantizeLinear is shared (W1, W2),
                                                                   DynamicQuantizeMatMul where it is not (W3)
  python tools/make_int8_fixtures.py with_past
                                              fixtures/generation/llama-with-past/model.onnx (optimum's with-past
                                              layout, as onnx-community's model.onnx: past_key_values.N.key/value
                                              inputs, present.N.* outputs) quantised as `models` does, into
                                              fixtures/int8/llama-with-past-int8/: model.onnx and, by onnxruntime
                                              (optimisations off), every output for
                                                prefill.inputs.npz  ids [2, 12] (the llama-int8 batch mod 64, right
                                                                    padded), position_ids, empty past
                                                decode.inputs.npz   one more token per row, the prefill's presents as
                                                                    past, the mask grown by one
                                              (prefill/decode.outputs.npz).
  python tools/make_int8_fixtures.py ops      the one-node cases of tools/int8_op_cases.py (DynamicQuantizeLinear,
                                              MatMulInteger, com.microsoft DynamicQuantizeMatMul and
                                              MatMulIntegerToFloat), written as tools/make_op_references.py writes
                                              its cases, into fixtures/int8/ops/.

Needs onnx, onnxruntime and onnxslim (measured: onnx 1.23.2, onnxruntime 1.32.0, onnxslim 0.1.98). Run from anywhere; writes only under
fixtures/int8/.
"""
import json
import pathlib
import shutil
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "int8"
SOURCE = ROOT / "fixtures" / "models" / "llama-torchscript"
sys.path.insert(0, str(ROOT / "tools"))
import fixture_budgets  # noqa: E402 (tools/, on the path above)

SIZE_LIMIT = fixture_budgets.INT8  # bytes for everything under fixtures/int8/


def quantize(source, target, weight_type):
    import onnx
    import onnxslim
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    slim = target.parent / "slim.onnx"
    onnx.save(onnxslim.slim(onnx.load(str(source))), str(slim))
    quantize_dynamic(
        str(slim), str(target),
        op_types_to_quantize=list(IntegerOpsRegistry.keys()),
        per_channel=False, reduce_range=False,
        weight_type={"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[weight_type],
        extra_options={"EnableSubgraph": True, "MatMulConstBOnly": True})


def ort_logits(path, feeds):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], feeds)[0]


def models():
    import onnx

    OUT.mkdir(parents=True, exist_ok=True)
    entries = []
    inputs = dict(np.load(SOURCE / "inputs.npz"))
    for weight_type in ["int8"]:
        name = f"llama-{weight_type}"
        folder = OUT / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        with tempfile.TemporaryDirectory() as temporary:
            quantize(SOURCE / "model.onnx", pathlib.Path(temporary) / "model.onnx", weight_type)
            model = onnx.load(str(pathlib.Path(temporary) / "model.onnx"))
        del model.graph.value_info[:]
        onnx.save(model, str(folder / "model.onnx"))
        for file in ["config.json"]:
            shutil.copy(SOURCE / file, folder / file)
        np.savez(folder / "inputs.npz", **inputs)
        np.savez(folder / "ort_logits.npz", logits=ort_logits(folder / "model.onnx", inputs).astype(np.float32))
        counts = {}
        for node in model.graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        entries.append({"name": name, "path": str((folder / "model.onnx").relative_to(ROOT)),
                        "architecture": "llama", "weights": weight_type,
                        "quantized_ops": {op: counts[op] for op in sorted(counts)
                                          if op in ("DynamicQuantizeLinear", "MatMulInteger", "DequantizeLinear")}})
        print(f"{name}: {sum(f.stat().st_size for f in folder.iterdir()) / 1024:.0f} KiB, {entries[-1]['quantized_ops']}")
    (OUT / "fixtures.json").write_text(json.dumps(entries, indent=2) + "\n")
    report_size()


def ops():
    import onnx

    sys.path.insert(0, str(ROOT / "tools" / "op_cases"))
    import int8_op_cases
    import make_op_references

    folder = OUT / "ops"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*"):
        stale.unlink()
    for case in int8_op_cases.CASES:
        model = make_op_references.build_model(case)
        outputs, source = make_op_references.run_reference(case, model)
        model.doc_string = f"reference outputs computed by {source}"
        onnx.save(model, folder / f"{case['name']}.onnx")
        np.savez(folder / f"{case['name']}.inputs.npz", **{n: a for n, a in case["inputs"] if a is not None})
        np.savez(folder / f"{case['name']}.outputs.npz", **outputs)
    print(f"wrote {len(int8_op_cases.CASES)} op cases to {folder.relative_to(ROOT)}")
    report_size()


def patterns():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    folder = OUT / "patterns"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*"):
        stale.unlink()
    rng = np.random.default_rng(88)
    weights = {name: (rng.standard_normal(shape) * 0.3).astype(np.float32)
               for name, shape in [("w1", (16, 8)), ("w2", (16, 8)), ("w3", (8, 4))]}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["y1"], name="/proj1/MatMul"),
             helper.make_node("MatMul", ["x", "w2"], ["y2"], name="/proj2/MatMul"),
             helper.make_node("Tanh", ["y1"], ["t"], name="/act/Tanh"),
             helper.make_node("Mul", ["t", "y2"], ["h"], name="/act/Mul"),
             helper.make_node("MatMul", ["h", "w3"], ["y"], name="/proj3/MatMul")]
    graph = helper.make_graph(nodes, "pattern", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])],
                              [numpy_helper.from_array(w, name) for name, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = rng.standard_normal((2, 3, 16)).astype(np.float32)
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    with tempfile.TemporaryDirectory() as temporary:
        temporary = pathlib.Path(temporary)
        onnx.save(model, str(temporary / "float.onnx"))
        variants = {"per_channel_uint8": (QuantType.QUInt8, True, True), "per_tensor_int8": (QuantType.QInt8, False, False)}
        for name, (weight_type, per_channel, reduce_range) in variants.items():
            quantize_dynamic(str(temporary / "float.onnx"), str(temporary / f"{name}.onnx"),
                             op_types_to_quantize=list(IntegerOpsRegistry.keys()), per_channel=per_channel,
                             reduce_range=reduce_range, weight_type=weight_type,
                             extra_options={"EnableSubgraph": True, "MatMulConstBOnly": True})
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(temporary / "ort_optimized.onnx")
        ort.InferenceSession(str(temporary / "per_tensor_int8.onnx"), options, providers=["CPUExecutionProvider"])
        for name in [*variants, "ort_optimized"]:
            quantized = onnx.load(str(temporary / f"{name}.onnx"))
            del quantized.graph.value_info[:]
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            session = ort.InferenceSession(quantized.SerializeToString(), options, providers=["CPUExecutionProvider"])
            quantized.doc_string = "reference outputs computed by onnxruntime"
            onnx.save(quantized, str(folder / f"{name}.onnx"))
            np.savez(folder / f"{name}.inputs.npz", x=x)
            np.savez(folder / f"{name}.outputs.npz", y=session.run(["y"], {"x": x})[0])
            print(name, sorted({f"{n.domain}.{n.op_type}".lstrip(".") for n in quantized.graph.node}))
    report_size()


def with_past():
    import onnxruntime as ort

    folder = OUT / "llama-with-past-int8"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    source = ROOT / "fixtures" / "generation" / "llama-with-past"
    with tempfile.TemporaryDirectory() as temporary:
        import onnx

        quantize(source / "model.onnx", pathlib.Path(temporary) / "model.onnx", "int8")
        model = onnx.load(str(pathlib.Path(temporary) / "model.onnx"))
    del model.graph.value_info[:]
    onnx.save(model, str(folder / "model.onnx"))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    batch = dict(np.load(OUT / "llama-int8" / "inputs.npz"))
    mask = batch["attention_mask"]
    prefill = {"input_ids": batch["input_ids"] % 64, "attention_mask": mask,
               "position_ids": np.maximum(np.cumsum(mask, 1) - 1, 0)}
    for value in session.get_inputs():
        if value.name.startswith("past_key_values."):
            prefill[value.name] = np.zeros((2, value.shape[1], 0, value.shape[3]), np.float32)
    outputs = dict(zip(names, session.run(names, prefill)))
    np.savez(folder / "prefill.inputs.npz", **prefill)
    np.savez(folder / "prefill.outputs.npz", **outputs)
    decode = {"input_ids": np.array([[7], [11]], np.int64),
              "attention_mask": np.concatenate([mask, np.ones((2, 1), np.int64)], 1),
              "position_ids": mask.sum(1, keepdims=True)}
    for name in list(prefill):
        if name.startswith("past_key_values."):
            decode[name] = outputs[name.replace("past_key_values.", "present.")]
    np.savez(folder / "decode.inputs.npz", **decode)
    np.savez(folder / "decode.outputs.npz", **dict(zip(names, session.run(names, decode))))
    print(f"llama-with-past-int8: {sum(f.stat().st_size for f in folder.iterdir()) / 1024:.0f} KiB")
    report_size()


def report_size():
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"fixtures/int8 total {total / 1e3:.0f} KB")
    assert total < SIZE_LIMIT, f"fixtures/int8 is {total} bytes, over {SIZE_LIMIT}"


if __name__ == "__main__":
    what = sys.argv[1:] or ["ops", "patterns", "models", "with_past"]
    for step in what:
        {"models": models, "ops": ops, "patterns": patterns, "with_past": with_past}[step]()
