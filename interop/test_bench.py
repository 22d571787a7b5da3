"""`onnx-dpo bench checkpointing`: each length run keeping everything, recomputing attention and with gradient
checkpointing, each in its own process under an address-space limit, as one JSON object; a limit too small fails
the runs by themselves, and the command still reports every row."""
import json

from conftest import FIXTURES, onnx_dpo

MODEL = FIXTURES / "models" / "llama-dynamo" / "model.onnx"


def test_bench_checkpointing_measures_every_mode():
    result = onnx_dpo("bench", "checkpointing", "--model", MODEL, "--seq", "8,16", "--json")
    rows = json.loads(result.stdout)
    assert [(row["seq"], row["mode"]) for row in rows] == [
        (seq, mode) for seq in (8, 16) for mode in ("everything-kept", "attention-recomputed", "checkpointing")]
    for row in rows:
        assert row.get("failure") is None, row
        assert row["step_seconds"] > 0 and row["peak_memory_bytes"] > 1 << 20, row


def test_bench_checkpointing_reports_runs_over_the_limit():
    # 0.05 GiB of address space: too little for the runtime to start a run.
    result = onnx_dpo("bench", "checkpointing", "--model", MODEL, "--seq", "8", "--memory-limit", "0.05")
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    assert all("failed" in line and "0.1 GiB limit" in line for line in lines), result.stdout
