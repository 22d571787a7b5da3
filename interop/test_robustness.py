"""What a user can do that must not break a run (issue 13): a logits output under another name, a model without
one, two runs on one output, a killed run's stale lock, NaN in the forward pass."""
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import BIN, FIXTURES, onnx_dpo

LLAMA = FIXTURES / "models" / "llama-torchscript"
DATA = FIXTURES / "dpo" / "preferences.jsonl"


def copy_model(tmp_path, edit):
    """The tiny Llama (TorchScript export: one self-contained .onnx) with `edit(model)` applied, and its tokenizer."""
    model = onnx.load(LLAMA / "model.onnx")
    edit(model)
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(model, folder / "model.onnx")
    shutil.copy(LLAMA / "tokenizer.json", folder / "tokenizer.json")
    shutil.copy(LLAMA / "tokenizer_config.json", folder / "tokenizer_config.json")
    return folder


def train(folder, output, *extra, check=True):
    return onnx_dpo("train", "--model", folder / "model.onnx", "--tokenizer", folder / "tokenizer.json", "--data", DATA,
                    "--output-dir", output, "--batch-size", "4", "--max-steps", "2", "--no-shuffle", *extra, check=check)


def rename_output(model, old, new):
    for node in model.graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
    for output in model.graph.output:
        if output.name == old:
            output.name = new


def test_logits_output_is_found_by_structure(tmp_path):
    folder = copy_model(tmp_path, lambda model: rename_output(model, "logits", "lm_logits"))
    train(folder, tmp_path / "found")
    train(folder, tmp_path / "named", "--logits-output", "lm_logits")
    # The same run either way, and the same as on the original model.
    train(LLAMA, tmp_path / "original")
    rows = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("found", "named", "original")]
    for run in rows[:2]:
        assert [row["loss"] for row in run] == [row["loss"] for row in rows[2]]

    result = train(folder, tmp_path / "wrong", "--logits-output", "logits", check=False)
    assert result.returncode != 0
    assert "--logits-output 'logits' is not an output of the model; its outputs are lm_logits" in result.stderr


def test_a_model_without_logits_is_a_clear_error(tmp_path):
    def only_an_integer_output(model):
        shape = next(node for node in model.graph.node if node.op_type == "Shape")
        del model.graph.output[:]
        model.graph.output.append(helper.make_tensor_value_info(shape.output[0], TensorProto.INT64, [None]))
    folder = copy_model(tmp_path, only_an_integer_output)
    result = train(folder, tmp_path / "run", check=False)
    assert result.returncode != 0
    assert "no output looks like next-token logits" in result.stderr, result.stderr
    assert "Fatal error" not in result.stderr and result.returncode != -signal.SIGILL


def test_one_writer_per_output_folder_and_stale_locks_are_taken_over(tmp_path):
    output = tmp_path / "run"
    first = subprocess.Popen([BIN, "train", "--model", LLAMA / "model.onnx", "--tokenizer", LLAMA / "tokenizer.json",
                              "--data", DATA, "--output-dir", output, "--max-steps", "100000"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = output / ".onnx-dpo.lock"
        deadline = time.time() + 60
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline, "the first run never locked its folder"
            time.sleep(0.05)
        second = train(LLAMA, output, check=False)
        assert second.returncode != 0
        assert f"another onnx-dpo process (pid {first.pid}) is writing it" in second.stderr, second.stderr
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    third = train(LLAMA, output)
    assert f"locked by process {first.pid}, which is gone; its lock was taken over" in third.stdout
    assert not (output / ".onnx-dpo.lock").exists(), "a finished run removes its lock file"


def test_export_refuses_an_output_another_process_writes(tmp_path):
    output = tmp_path / "out.onnx"
    with open(tmp_path / ".out.onnx.onnx-dpo.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = onnx_dpo("export", "--model", LLAMA / "model.onnx", "--output", output, check=False)
        assert result.returncode != 0
        assert "is writing it" in result.stderr, result.stderr
        assert not output.exists()
    onnx_dpo("export", "--model", LLAMA / "model.onnx", "--output", output)
    assert output.exists()


def insert_before_output_projection(model, nodes, initializers, output):
    """Inserts `nodes` so that the input of the model's last MatMul (the output projection) is `output`; the nodes
    may read that input as `hidden`."""
    final = next(node for node in reversed(model.graph.node) if node.op_type == "MatMul")
    hidden = final.input[0]
    for node in nodes:
        node.input[:] = [hidden if name == "hidden" else name for name in node.input]
    model.graph.initializer.extend(initializers)
    final.input[0] = output
    position = list(model.graph.node).index(final)
    for offset, node in enumerate(nodes):
        model.graph.node.insert(position + offset, node)


def poison_padded_rows(kind):
    """An edit making the hidden states entering the output projection NaN on padded rows, which no scored position
    reads (as a sliding-window layer leaves padded query rows): `where` selects NaN there, `mul` multiplies them by
    NaN, so that a backward pass computing `0 · NaN` would carry NaN into every gradient before them (as a
    TorchScript Gemma-3 export did)."""
    def edit(model):
        nodes = [
            helper.make_node("Cast", ["attention_mask"], ["nan/mask_float"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["nan/mask_float", "nan/axis"], ["nan/mask"]),
            helper.make_node("Equal", ["nan/mask", "nan/zero"], ["nan/padded"]),
        ]
        if kind == "where":
            nodes.append(helper.make_node("Where", ["nan/padded", "nan/value", "hidden"], ["nan/hidden"]))
        else:
            nodes.append(helper.make_node("Where", ["nan/padded", "nan/value", "nan/one"], ["nan/factor"]))
            nodes.append(helper.make_node("Mul", ["hidden", "nan/factor"], ["nan/hidden"]))
        insert_before_output_projection(model, nodes, [
            helper.make_tensor("nan/axis", TensorProto.INT64, [1], [-1]),
            helper.make_tensor("nan/zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("nan/one", TensorProto.FLOAT, [], [1.0]),
            helper.make_tensor("nan/value", TensorProto.FLOAT, [], [float("nan")]),
        ], "nan/hidden")
    return edit


def metrics_rows(output):
    metrics = output / "metrics.jsonl"
    return [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []


@pytest.mark.parametrize("kind", ["where", "mul"])
def test_nan_rows_no_loss_reads_train_with_finite_gradients(tmp_path, kind):
    folder = copy_model(tmp_path, poison_padded_rows(kind))
    train(folder, tmp_path / "run")
    rows = metrics_rows(tmp_path / "run")
    assert len(rows) == 2
    assert all(np.isfinite(value) for row in rows for value in row.values() if isinstance(value, float))
    assert rows[-1]["grad_norm"] > 0


def test_a_nan_gradient_stops_the_run_naming_it_and_writes_no_nan(tmp_path):
    """`h + Sqrt(h · 0)` equals `h`, but the gradient of Sqrt at 0 is infinite and `∞ · 0` is NaN on every scored
    row: the loss stays finite while every adapter gradient is NaN."""
    def nan_gradient(model):
        insert_before_output_projection(model, [
            helper.make_node("Mul", ["hidden", "nan/zero"], ["nan/zeros"]),
            helper.make_node("Sqrt", ["nan/zeros"], ["nan/root"]),
            helper.make_node("Add", ["hidden", "nan/root"], ["nan/hidden"]),
        ], [helper.make_tensor("nan/zero", TensorProto.FLOAT, [], [0.0])], "nan/hidden")
    folder = copy_model(tmp_path, nan_gradient)
    result = train(folder, tmp_path / "run", "--checkpoint-every", "1", check=False)
    assert result.returncode != 0
    assert "the gradient norm is NaN at step 1 (batch of data lines 1, 2, 3, 4); training stopped." in result.stderr, result.stderr
    assert metrics_rows(tmp_path / "run") == [], "nothing was logged for the step"
    assert not (tmp_path / "run" / "checkpoint-1").exists()


GEMMA3 = FIXTURES / "models" / "gemma3-torchscript"


def test_gemma3_torchscript_runs_as_torch_and_trains_with_finite_gradients(tmp_path):
    """The export issue 13 names (tools/make_gemma3_fixture.py): a sliding-window layer whose padded query rows
    have no key in their window."""
    onnx_dpo("run", "--model", GEMMA3 / "model.onnx", "--inputs", GEMMA3 / "inputs.npz", "--output", tmp_path / "out.npz")
    ours = np.load(tmp_path / "out.npz")["logits"]
    torch_logits = np.load(GEMMA3 / "torch_logits.npz")["logits"]
    real = np.load(GEMMA3 / "inputs.npz")["attention_mask"].astype(bool)
    assert np.abs(ours[real] - torch_logits[real]).max() < 1e-4
    train(GEMMA3, tmp_path / "run", "--lr", "5e-3")
    rows = metrics_rows(tmp_path / "run")
    assert len(rows) == 2
    assert all(np.isfinite(row["grad_norm"]) and row["grad_norm"] > 0 for row in rows)
    assert rows[1]["loss"] != rows[0]["loss"], "the adapter changed"
