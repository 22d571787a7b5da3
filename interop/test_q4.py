"""An onnx-community-style q4 file (fixtures/q4/llama-q4, tools/make_q4_fixtures.py: every MatMul of a decomposed
export a 4-bit MatMulNBits, as transformers.js writes model_q4.onnx): `onnx-dpo run` equals onnxruntime at
accuracy_level 0, and each export form runs in onnxruntime. `lora-inputs` equals `onnx-dpo run --adapter`; `merged`
re-quantises the adapted q/v weights, so onnxruntime on it equals `onnx-dpo run` on the same file, and it stays
closer to the unmerged adapter than a quarter of the adapter's own effect (the rule test_builder.py explains)."""
import json

import numpy as np

from conftest import FIXTURES, onnx_dpo
from test_builder import accuracy_level_0
from test_export import ort_logits, random_adapter

FOLDER = FIXTURES / "q4" / "llama-q4"
MODEL = FOLDER / "model.onnx"
INPUTS = FOLDER / "inputs.npz"
TOLERANCE = 1e-4


def run(tmp_path, name, model=MODEL, *extra):
    onnx_dpo("run", "--model", model, "--inputs", INPUTS, "--output", tmp_path / f"{name}.npz", *extra)
    return np.load(tmp_path / f"{name}.npz")["logits"]


def test_run_matches_onnxruntime(tmp_path):
    feeds = dict(np.load(INPUTS))
    mask = feeds["attention_mask"].astype(bool)
    reference = ort_logits(accuracy_level_0(MODEL, tmp_path), feeds)
    assert np.abs(run(tmp_path, "ours") - reference)[mask].max() < TOLERANCE


def test_every_export_form_runs_in_onnxruntime(tmp_path):
    feeds = dict(np.load(INPUTS))
    mask = feeds["attention_mask"].astype(bool)
    adapter = random_adapter(MODEL, tmp_path / "adapter", seed=5)
    ours = run(tmp_path, "adapted", MODEL, "--adapter", adapter)
    effect = np.abs(ours - run(tmp_path, "base"))[mask].max()
    assert effect > 1e-3, "the adapter changes the output"

    onnx_dpo("export", "--model", MODEL, "--adapter", adapter, "--output", tmp_path / "lora-inputs.onnx",
             "--form", "lora-inputs")
    with_adapter = ort_logits(accuracy_level_0(tmp_path / "lora-inputs.onnx", tmp_path), feeds,
                              adapter=tmp_path / "lora-inputs.onnx_adapter")
    assert np.abs(with_adapter - ours)[mask].max() < TOLERANCE

    onnx_dpo("export", "--model", MODEL, "--adapter", adapter, "--output", tmp_path / "lora-nodes.onnx",
             "--form", "lora-nodes")
    nodes = ort_logits(accuracy_level_0(tmp_path / "lora-nodes.onnx", tmp_path), feeds)
    assert np.abs(nodes - ours)[mask].max() < TOLERANCE

    merged = tmp_path / "merged.onnx"
    report = json.loads(onnx_dpo("export", "--model", MODEL, "--adapter", adapter, "--output", merged, "--json").stdout)
    assert [entry["bits"] for entry in report["requantized"]] == [4] * 4, report  # q and v of 2 layers
    merged_logits = ort_logits(accuracy_level_0(merged, tmp_path), feeds)
    assert np.abs(merged_logits - run(tmp_path, "merged", merged))[mask].max() < TOLERANCE
    assert np.abs(merged_logits - ours)[mask].max() < effect / 4
