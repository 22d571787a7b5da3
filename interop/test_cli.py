"""Interoperability: `onnx-dpo run` and `onnx-dpo inspect` checked against onnxruntime and the onnx package on
every fixture model (the binary and the shared pieces: conftest.py)."""
import json

import numpy as np
import onnx
import onnxruntime as ort

from conftest import EXPORTS, FIXTURES, ROOT, each_export, onnx_dpo

BAD = FIXTURES / "graph" / "bad"


@each_export
def test_run_matches_onnxruntime(fixture, tmp_path):
    model = ROOT / fixture["path"]
    inputs = model.parent / "inputs.npz"
    out = tmp_path / "out.npz"
    onnx_dpo("run", "--model", model, "--inputs", inputs, "--output", out)
    ours = np.load(out)
    feeds = dict(np.load(inputs))
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert sorted(ours.files) == sorted(names), "every graph output is written under its name"
    reference = dict(zip(names, session.run(names, feeds)))
    mask = feeds["attention_mask"].astype(bool)
    logits = ours["logits"]
    assert logits.dtype == np.float32 and logits.shape == reference["logits"].shape
    difference = np.abs(logits - reference["logits"])[mask].max()
    assert difference < 1e-4, f"max |onnx-dpo - onnxruntime| at real tokens = {difference}"


@each_export
def test_inspect_json_agrees_with_onnx(fixture):
    path = ROOT / fixture["path"]
    report = json.loads(onnx_dpo("inspect", path, "--json").stdout)
    model = onnx.load(str(path), load_external_data=False)
    assert report["ir_version"] == model.ir_version
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    assert {o["domain"]: o["version"] for o in report["opset_imports"]} == opsets
    histogram = {}
    for node in model.graph.node:
        histogram[node.op_type] = histogram.get(node.op_type, 0) + 1
    assert report["operators"] == histogram
    assert report["parameter_count"] == sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    assert report["unsupported_operators"] == []
    initializer_names = {t.name for t in model.graph.initializer}
    assert [i["name"] for i in report["inputs"]] == [i.name for i in model.graph.input if i.name not in initializer_names]
    assert bool(report["external_data"]) == fixture["external_data"]
    if model.ir_version > 8 or opsets.get("ai.onnx", 0) > 17:
        assert report["onnx_checker"]["status"] == "skipped"
    else:
        assert report["onnx_checker"]["status"] == "passed"


def test_inspect_lists_unsupported_ops_with_node_names():
    report = json.loads(onnx_dpo("inspect", BAD / "unsupported_op.onnx", "--json").stdout)
    assert [(u["node"], u["op_type"]) for u in report["unsupported_operators"]] == [("'my_einsum'", "Einsum")]
    text = onnx_dpo("inspect", BAD / "custom_domain.onnx").stdout
    assert "FancyOp" in text and "com.example" in text and "fancy" in text


def test_run_reads_deflated_npz_and_reports_bad_inputs(tmp_path):
    fixture = next(f for f in EXPORTS if f["name"].startswith("llama"))
    model = ROOT / fixture["path"]
    feeds = dict(np.load(model.parent / "inputs.npz"))
    compressed = tmp_path / "compressed.npz"
    np.savez_compressed(compressed, **feeds)
    onnx_dpo("run", "--model", model, "--inputs", compressed, "--output", tmp_path / "out.npz")
    assert np.load(tmp_path / "out.npz")["logits"].shape[:2] == feeds["input_ids"].shape

    cases = {
        "wrong_name": ({"ids": feeds["input_ids"], "attention_mask": feeds["attention_mask"]}, "no input of that name"),
        "wrong_dtype": ({**feeds, "input_ids": feeds["input_ids"].astype(np.float32)}, "expected element type int64"),
        "wrong_rank": ({**feeds, "input_ids": feeds["input_ids"][0]}, "expected rank 2"),
    }
    for label, (arrays, message) in cases.items():
        path = tmp_path / f"{label}.npz"
        np.savez(path, **arrays)
        result = onnx_dpo("run", "--model", model, "--inputs", path, "--output", tmp_path / f"{label}.out.npz",
                          check=False)
        assert result.returncode != 0, label
        assert message in result.stderr, f"{label}: {result.stderr}"
        assert not (tmp_path / f"{label}.out.npz").exists(), f"{label}: no output file on failure"


def test_errors_name_the_flag_a_user_typed(tmp_path):
    """The library names options by its own names (batchSize, evalFraction, form); the command line reports the
    flag instead."""
    llama = FIXTURES / "models" / "llama-dynamo"
    train = ["train", "--model", llama / "model.onnx", "--tokenizer", llama / "tokenizer.json",
             "--data", FIXTURES / "dpo" / "preferences.jsonl", "--output-dir", tmp_path / "run"]
    cases = [
        (train + ["--batch-size", "0"], "--batch-size must be at least 1, got 0", "batchSize"),
        (train + ["--eval-fraction", "1"], "--eval-fraction: must be in [0, 1), got 1.0", "evalFraction"),
        (["export", "--model", llama / "model.onnx", "--output", tmp_path / "out.onnx", "--form", "lora-inputs"],
         "--form: lora-inputs needs an adapter", "form:"),
    ]
    for arguments, message, library_name in cases:
        result = onnx_dpo(*arguments, check=False)
        assert result.returncode != 0, message
        assert message in result.stderr, result.stderr
        assert library_name not in result.stderr.replace(message, ""), result.stderr
