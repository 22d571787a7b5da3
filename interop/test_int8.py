"""Interoperability on an onnx-community-style int8 file (fixtures/int8/llama-int8, made by
tools/make_int8_fixtures.py as transformers.js's scripts/quantize.py makes `model_int8`: DynamicQuantizeLinear +
MatMulInteger projections, a uint8 embedding Gather + DequantizeLinear): `onnx-dpo run` against onnxruntime, what
`onnx-dpo export` writes for it run with onnxruntime against `onnx-dpo run --adapter`, and `inspect`'s report."""
import json

import numpy as np
import onnx

from conftest import FIXTURES, onnx_dpo
from test_export import fixture_inputs, ort_logits, random_adapter

MODEL = FIXTURES / "int8" / "llama-int8" / "model.onnx"
# fp32 rounding only: measured 1.2e-7. Every projection quantises its input to 8 bits from the input's own range, so
# a last-bit difference that moved an activation across a rounding step would show as ~1e-3; none does here.
TOLERANCE = 1e-4


def test_run_matches_onnxruntime(tmp_path):
    onnx_dpo("run", "--model", MODEL, "--inputs", MODEL.parent / "inputs.npz", "--output", tmp_path / "out.npz")
    ours = np.load(tmp_path / "out.npz")["logits"]
    feeds, mask = fixture_inputs(MODEL)
    # onnxruntime with its default optimisations (it fuses the projections into DynamicQuantizeMatMul and
    # MatMulIntegerToFloat), and the file's own nodes as saved by the fixture tool (optimisations off).
    assert np.abs(ours - ort_logits(MODEL, feeds))[mask].max() < TOLERANCE
    assert np.abs(ours - np.load(MODEL.parent / "ort_logits.npz")["logits"])[mask].max() < TOLERANCE


def test_inspect_names_the_quantisation_and_the_targets():
    report = json.loads(onnx_dpo("inspect", "--json", MODEL).stdout)
    text = json.dumps(report)
    assert "DynamicQuantizeLinear + MatMulInteger, int8 weights, per tensor (15 nodes)" in text
    assert "Gather + DequantizeLinear, uint8 (1 node)" in text
    targets = report["lora_targets"]
    assert [t["module_path"] for t in targets] == [f"model.layers.{layer}.self_attn.{name}_proj"
                                                   for layer in (0, 1) for name in ("q", "v")]
    assert all(t["weight"].endswith("_quantized") for t in targets)


def test_exports_run_in_onnxruntime_like_the_unmerged_adapter(tmp_path):
    adapter = random_adapter(MODEL, tmp_path / "adapter", seed=5)
    inputs = MODEL.parent / "inputs.npz"
    onnx_dpo("run", "--model", MODEL, "--inputs", inputs, "--output", tmp_path / "ours.npz", "--adapter", adapter)
    ours = np.load(tmp_path / "ours.npz")["logits"]
    feeds, mask = fixture_inputs(MODEL)
    assert np.abs(ours - ort_logits(MODEL, feeds))[mask].max() > 1e-3, "the adapter changes the output"

    # lora-nodes: the LoRA nodes read the float input of each projection's DynamicQuantizeLinear and add to its
    # output; the int8 weights and the quantising nodes are the input's, unchanged.
    onnx_dpo("export", "--model", MODEL, "--adapter", adapter, "--output", tmp_path / "lora-nodes.onnx", "--form", "lora-nodes")
    exported = onnx.load(str(tmp_path / "lora-nodes.onnx"))
    original = onnx.load(str(MODEL))
    types = lambda model: sorted(n.op_type for n in model.graph.node if n.op_type in ("DynamicQuantizeLinear", "MatMulInteger"))
    assert types(exported) == types(original)
    int8 = lambda model: {i.name: i.raw_data for i in model.graph.initializer if i.data_type in (2, 3)}
    assert int8(exported) == int8(original)
    assert np.abs(ort_logits(tmp_path / "lora-nodes.onnx", feeds) - ours)[mask].max() < TOLERANCE

    # lora-inputs: the same nodes reading graph inputs, the adapter in an .onnx_adapter file.
    onnx_dpo("export", "--model", MODEL, "--adapter", adapter, "--output", tmp_path / "lora-inputs.onnx",
             "--form", "lora-inputs")
    with_adapter = ort_logits(tmp_path / "lora-inputs.onnx", feeds, adapter=tmp_path / "lora-inputs.onnx_adapter")
    assert np.abs(with_adapter - ours)[mask].max() < TOLERANCE

    # Merging into int8 weights (and re-quantising) is not implemented: refused, naming the weight's type; nothing
    # written.
    merged = tmp_path / "merged.onnx"
    result = onnx_dpo("export", "--model", MODEL, "--adapter", adapter, "--output", merged, check=False)
    assert result.returncode != 0 and "is int8 (a dynamically quantised MatMul)" in result.stderr, result.stderr
    assert not merged.exists()
