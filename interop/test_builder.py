"""Interoperability on onnxruntime-genai builder graphs (fixtures/builder, made by tools/make_builder_fixtures.py):
`onnx-dpo run` (KV-cache inputs fed empty) against onnxruntime, and what `onnx-dpo export` writes for a builder
base, run with onnxruntime (and, where onnxruntime-genai is installed, loaded through its Adapters API) against
`onnx-dpo run --adapter`. MatMulNBits runs at accuracy_level 0 in onnxruntime (level 4 quantises activations to
int8 inside onnxruntime; onnx-dpo computes the exact dequantised product)."""
import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import FIXTURES, ROOT, onnx_dpo
from test_export import ort_logits, random_adapter

BUILDER = json.loads((FIXTURES / "builder" / "fixtures.json").read_text())
IDS = [f["name"] for f in BUILDER]
TOLERANCE = 1e-4


def feeds_with_empty_past(session, inputs):
    feeds = dict(inputs)
    batch = feeds["input_ids"].shape[0]
    for value in session.get_inputs():
        if value.name.startswith("past_key_values."):
            feeds[value.name] = np.zeros((batch, value.shape[1], 0, 16), dtype=np.float32)
    return feeds


def accuracy_level_0(path, tmp_path):
    """A copy of the model at `path` with every MatMulNBits at accuracy_level 0, for onnxruntime."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        for attribute in node.attribute:
            if node.op_type == "MatMulNBits" and attribute.name == "accuracy_level":
                attribute.i = 0
    copy = tmp_path / f"{path.stem}-accuracy0.onnx"
    onnx.save(model, str(copy), save_as_external_data=True, location=f"{copy.name}.data")
    return copy


@pytest.mark.parametrize("fixture", BUILDER, ids=IDS)
def test_run_matches_onnxruntime(fixture, tmp_path):
    model = ROOT / fixture["path"]
    inputs = model.parent / "inputs.npz"
    onnx_dpo("run", "--model", model, "--inputs", inputs, "--output", tmp_path / "out.npz")
    ours = np.load(tmp_path / "out.npz")
    feeds = dict(np.load(inputs))
    reference = ort_logits(accuracy_level_0(model, tmp_path), feeds_with_empty_past(ort.InferenceSession(str(model)), feeds))
    mask = feeds["attention_mask"].astype(bool)
    assert np.abs(ours["logits"] - reference)[mask].max() < TOLERANCE
    assert ours["present.0.key"].shape == (2, 2, mask.shape[1], 16)


@pytest.mark.parametrize("fixture", BUILDER, ids=IDS)
def test_exports_run_in_onnxruntime_like_the_unmerged_adapter(fixture, tmp_path):
    model = ROOT / fixture["path"]
    adapter = random_adapter(model, tmp_path / "adapter", seed=5)
    inputs = model.parent / "inputs.npz"
    onnx_dpo("run", "--model", model, "--inputs", inputs, "--output", tmp_path / "ours.npz", "--adapter", adapter)
    ours = np.load(tmp_path / "ours.npz")["logits"]
    onnx_dpo("run", "--model", model, "--inputs", inputs, "--output", tmp_path / "base.npz")
    base = np.load(tmp_path / "base.npz")["logits"]
    feeds = dict(np.load(inputs))
    mask = feeds["attention_mask"].astype(bool)
    assert np.abs(ours - base)[mask].max() > 1e-3, "the adapter changes the output"

    # lora-inputs: the base graph plus LoRA nodes reading graph inputs, the adapter in an .onnx_adapter file.
    onnx_dpo("export", "--model", model, "--adapter", adapter, "--output", tmp_path / "lora-inputs.onnx",
             "--form", "lora-inputs")
    exported = accuracy_level_0(tmp_path / "lora-inputs.onnx", tmp_path)
    feeds = feeds_with_empty_past(ort.InferenceSession(str(exported)), feeds)
    with_adapter = ort_logits(exported, feeds, adapter=tmp_path / "lora-inputs.onnx_adapter")
    assert np.abs(with_adapter - ours)[mask].max() < TOLERANCE

    merged = tmp_path / "merged.onnx"
    result = onnx_dpo("export", "--model", model, "--adapter", adapter, "--output", merged, check=False)
    if fixture["precision"] == "int4":
        # Merging into int4 weights (and re-quantising) is not implemented: refused, nothing written.
        assert result.returncode != 0 and "uint8" in result.stderr
        assert not merged.exists()
    else:
        assert result.returncode == 0, result.stderr
        merged_logits = ort_logits(accuracy_level_0(merged, tmp_path), feeds)
        assert np.abs(merged_logits - ours)[mask].max() < TOLERANCE


@pytest.mark.parametrize("fixture", BUILDER, ids=IDS)
def test_lora_inputs_export_loads_in_onnxruntime_genai(fixture, tmp_path):
    og = pytest.importorskip("onnxruntime_genai")
    model = ROOT / fixture["path"]
    adapter = random_adapter(model, tmp_path / "adapter", seed=6)
    folder = tmp_path / "genai"
    folder.mkdir()
    for name in ("genai_config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((model.parent / name).read_bytes())
    onnx_dpo("export", "--model", model, "--adapter", adapter, "--output", folder / "model.onnx", "--form", "lora-inputs")
    genai = og.Model(str(folder))
    adapters = og.Adapters(genai)
    adapters.load(str(folder / "model.onnx_adapter"), "dpo")
    params = og.GeneratorParams(genai)
    params.set_search_options(max_length=8)
    generator = og.Generator(genai, params)
    generator.set_active_adapter(adapters, "dpo")
    generator.append_tokens(np.array([[5, 17, 42]], dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    assert len(generator.get_sequence(0)) == 8
