#!/usr/bin/env python3
"""Builds the onnx-community-style q4 fixture under fixtures/q4/ (issue 9): every MatMul of a float export replaced by
a com.microsoft MatMulNBits with 4-bit blocks, as transformers.js's `scripts/quantize.py` writes `model_q4.onnx`.

  python tools/make_q4_fixtures.py    fixtures/models/llama-torchscript/model.onnx (tools/make_fixtures.py's tiny
                                      Llama, optimum-style TorchScript export) through `onnxslim.slim`
                                      (transformers.js's convert.py slims every export), then quantised by
                                      onnxruntime's `MatMulNBitsQuantizer` with the q4 preset transformers.js uses
                                      (`DefaultWeightOnlyQuantConfig`: 4 bits, block 32, symmetric, accuracy_level 4).
                                      MatMul only: the embedding Gather stays float. The value_info shape inference
                                      adds is dropped. Into fixtures/q4/llama-q4/: model.onnx, config.json,
                                        inputs.npz       the source's input_ids/attention_mask [2, 12]
                                        ort_logits.npz   onnxruntime's logits on the same file with accuracy_level 0
                                                         (the exact dequantised product, which onnx-dpo computes:
                                                         at level 4 onnxruntime quantises the activations to int8)
                                                         with graph optimisations off and one thread.

Needs onnx, onnxruntime (>= 1.22: `matmul_nbits_quantizer`) and onnxslim (measured: onnx 1.23.2, onnxruntime 1.32.0,
onnxslim 0.1.98). Writes only under fixtures/q4/.
"""
import pathlib
import shutil
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "q4"
SOURCE = ROOT / "fixtures" / "models" / "llama-torchscript"
sys.path.insert(0, str(ROOT / "tools"))
import fixture_budgets  # noqa: E402 (tools/, on the path above)


def quantized(source):
    import onnx
    import onnxslim
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4, bits=4)
    quantizer = MatMulNBitsQuantizer(onnxslim.slim(onnx.load(str(source))), algo_config=config)
    quantizer.process()
    model = quantizer.model.model
    del model.graph.value_info[:]
    return model


def ort_logits(model, feeds):
    """onnxruntime's logits with every MatMulNBits at accuracy_level 0 (exact dequantised weights)."""
    import onnx
    import onnxruntime as ort

    exact = onnx.ModelProto()
    exact.CopyFrom(model)
    for node in exact.graph.node:
        for attribute in node.attribute:
            if node.op_type == "MatMulNBits" and attribute.name == "accuracy_level":
                attribute.i = 0
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with tempfile.TemporaryDirectory() as temporary:
        path = pathlib.Path(temporary) / "exact.onnx"
        onnx.save(exact, str(path))
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return session.run(["logits"], feeds)[0]


def main():
    import onnx

    folder = OUT / "llama-q4"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    model = quantized(SOURCE / "model.onnx")
    onnx.save(model, str(folder / "model.onnx"))
    shutil.copy(SOURCE / "config.json", folder / "config.json")
    inputs = dict(np.load(SOURCE / "inputs.npz"))
    np.savez(folder / "inputs.npz", **inputs)
    np.savez(folder / "ort_logits.npz", logits=ort_logits(model, inputs).astype(np.float32))
    counts = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    size = fixture_budgets.size(OUT)
    print(f"llama-q4: {counts.get('MatMulNBits', 0)} MatMulNBits, {counts.get('MatMul', 0)} MatMul left; fixtures/q4 {size} bytes")
    assert counts.get("MatMulNBits", 0) >= 14, counts  # 7 projections per layer, 2 layers, and the LM head
    assert size <= fixture_budgets.Q4, f"fixtures/q4 is {size} bytes, over {fixture_budgets.Q4}"


if __name__ == "__main__":
    main()
