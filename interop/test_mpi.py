"""Data-parallel training under Open MPI: `mpirun -np N onnx-dpo train` equals one process on the same global batch
(metrics.jsonl, checkpoints, the reference cache and the final adapter), resumes after a process is killed, and stops
with an error instead of hanging when a process stops answering. `scripts/setup` installs openmpi-bin."""
import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import time
import uuid

import numpy as np
import pytest

from conftest import BIN, FIXTURES, onnx_dpo

MODEL = FIXTURES / "models" / "llama-dynamo"
# Relative tolerance of every metric, the "within float summation order". The rewards β·(π − r) are
# differences of nearly equal log-probabilities (|π| ~ 100, |π − r| ~ 1e-3), so their summation noise is relative to
# β·|π|, not to themselves: they are compared within RELATIVE of β times the row's largest mean log-probability.
RELATIVE, ABSOLUTE, BETA = 1e-5, 1e-12, 0.1
TIMING = {"eta_seconds", "tokens_per_second"}


def train_arguments(output, *extra, data=FIXTURES / "dpo" / "preferences.jsonl"):
    return ["train", "--model", MODEL / "model.onnx", "--tokenizer", MODEL / "tokenizer.json",
            "--data", data, "--output-dir", output, "--lr", "5e-3", "--beta", BETA, *extra]


def mpirun_command(processes, arguments):
    mpirun = shutil.which("mpirun")
    assert mpirun, "mpirun is missing: scripts/setup installs openmpi-bin"
    # --oversubscribe: more processes than cores on a CI machine; --allow-run-as-root: CI containers run as root;
    # no single-copy (CMA) transfers between local processes, which containers without ptrace rights refuse.
    return [mpirun, "--allow-run-as-root", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none",
            "-np", str(processes), BIN, *map(str, arguments)]


def mpirun(processes, arguments, timeout=300):
    result = subprocess.run(mpirun_command(processes, arguments), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"mpirun -np {processes} failed:\n{result.stdout}\n{result.stderr}"
    return result


def metrics(output):
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def safetensors(path):
    """name -> float32 array of a safetensors file (the adapter), read without the safetensors package."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    arrays = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        assert entry["dtype"] == "F32"
        start, end = entry["data_offsets"]
        arrays[name] = np.frombuffer(data[8 + length + start:8 + length + end], dtype=np.float32).reshape(entry["shape"])
    return arrays


def assert_close_arrays(ours, theirs, what):
    """Element-wise within RELATIVE, plus 1e-4 of the tensor's largest value: AdamW divides each gradient element by
    its running RMS, so an element whose gradient is near 0 (where summation order changes its low bits relatively
    most) moves by up to a learning rate either way; the adapter agrees to a small fraction of its scale instead."""
    assert sorted(ours) == sorted(theirs), f"{what}: different tensors"
    for name in ours:
        difference = np.abs(ours[name].astype(np.float64) - theirs[name])
        scale = np.abs(theirs[name]).max()
        allowed = RELATIVE * np.abs(theirs[name]) + 1e-4 * scale
        assert (difference <= allowed).all(), \
            f"{what} {name}: max |difference| {difference.max()}, {difference.max() / scale} of the tensor's largest value"


def assert_same_run(alone, shared, processes, steps):
    """`shared` (N processes) wrote what `alone` (one process) wrote, up to float summation order."""
    one, many = metrics(alone), metrics(shared)
    assert [row["step"] for row in many] == [row["step"] for row in one]
    assert max(row["step"] for row in one) == steps
    for row_one, row_many in zip(one, many):
        assert "world_size" not in row_one, "a one-process row keeps TRL's keys"
        assert row_many.pop("world_size") == processes, "every row of a shared run records world_size"
        assert row_many.keys() == row_one.keys()
        log_probability_scale = max(abs(value) for key, value in row_one.items() if "logps/" in key)
        for key in row_one.keys() - TIMING:
            a, b = row_one[key], row_many[key]
            floor = RELATIVE * BETA * log_probability_scale if "rewards/" in key and "accuracies" not in key else ABSOLUTE
            assert abs(a - b) <= floor + RELATIVE * abs(a), f"step {row_one['step']} {key}: 1 process {a}, {processes} processes {b}"
    assert_close_arrays(safetensors(shared / "adapter" / "adapter_model.safetensors"),
                        safetensors(alone / "adapter" / "adapter_model.safetensors"), "final adapter")
    assert (shared / "adapter" / "adapter_config.json").read_text() == (alone / "adapter" / "adapter_config.json").read_text()
    for checkpoint in sorted(alone.glob("checkpoint-*")):
        ours, theirs = np.load(shared / checkpoint.name / "trainer_state.npz"), np.load(checkpoint / "trainer_state.npz")
        assert_close_arrays(dict(ours), dict(theirs), checkpoint.name)
        assert json.loads((shared / checkpoint.name / "trainer_state.json").read_text()) == \
            json.loads((checkpoint / "trainer_state.json").read_text())
    assert sorted(p.name for p in shared.glob("checkpoint-*")) == sorted(p.name for p in alone.glob("checkpoint-*"))
    caches = sorted((alone / "reference_cache").iterdir()) if (alone / "reference_cache").exists() else []
    assert (shared / "reference_cache").exists() == bool(caches), "a reference cache in both runs or in neither"
    for cache in caches:
        ours, theirs = json.loads((shared / "reference_cache" / cache.name).read_text()), json.loads(cache.read_text())
        for side in ("chosen", "rejected"):
            assert np.allclose(ours[side], theirs[side], rtol=1e-6, atol=0), f"reference cache {cache.name} {side}"


@pytest.mark.parametrize("processes, batch, accumulation", [
    (2, 5, 2),  # a batch of 5 splits 2 + 3; two micro-batches per step
    (3, 2, 1),  # a batch of 2 over 3 processes: one process has no rows in any batch
], ids=["2-processes-odd-batch-grad-accum", "3-processes-one-idle"])
def test_processes_equal_one_process(tmp_path, processes, batch, accumulation):
    extra = ["--batch-size", batch, "--grad-accum", accumulation, "--max-steps", 3, "--checkpoint-every", 1,
             "--eval-data", FIXTURES / "dpo" / "eval.jsonl", "--eval-every", 2, "--dropout", 0.1]
    onnx_dpo(*train_arguments(tmp_path / "one", *extra))
    result = mpirun(processes, train_arguments(tmp_path / "many", *extra))
    assert f"world: {processes} processes on 1 host" in result.stdout, "rank 0 reports the world at start"
    assert result.stdout.count("adapter written to") == 1, "rank 0 alone prints"
    assert_same_run(tmp_path / "one", tmp_path / "many", processes, steps=3)
    assert sum(1 for row in metrics(tmp_path / "many") if "eval_loss" in row) == 2, "eval after steps 2 and 3"


@pytest.mark.parametrize("loss", ["orpo", "simpo", "tdpo2", "sigmoid-soft-labels"])
def test_other_losses_equal_one_process(tmp_path, loss):
    """ORPO and SimPO (no reference pass; ORPO's NLL counts the chosen prompts of the whole batch), TDPO (a reference
    forward on each process's rows every step) and soft labels (each process reads its rows' preferences)."""
    data = FIXTURES / "dpo" / "preferences.jsonl"
    if loss == "sigmoid-soft-labels":
        rows = [json.loads(line) for line in data.read_text().splitlines()]
        data = tmp_path / "soft.jsonl"
        data.write_text("".join(json.dumps(dict(row, preference=[0.9, 0.3, 0.7][i % 3])) + "\n" for i, row in enumerate(rows)))
        loss = "sigmoid"
    extra = ["--loss", loss, "--batch-size", 5, "--max-steps", 2, "--eval-data", FIXTURES / "dpo" / "eval.jsonl",
             "--eval-every", 2]
    onnx_dpo(*train_arguments(tmp_path / "one", *extra, data=data))
    mpirun(2, train_arguments(tmp_path / "many", *extra, data=data))
    assert_same_run(tmp_path / "one", tmp_path / "many", 2, steps=2)


def rank_pid(tag, rank):
    """The pid of rank `rank` of the mpirun started with ONNX_DPO_TEST_TAG=`tag` (mpirun passes its environment on)."""
    for entry in pathlib.Path("/proc").iterdir():
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"ONNX_DPO_TEST_TAG={tag}".encode() in environment and f"OMPI_COMM_WORLD_RANK={rank}".encode() in environment:
            return int(entry.name)
    return None


def start_and_wait_for(arguments, processes, marker, tag):
    """Starts mpirun and returns it once `marker` exists, with rank 1's pid."""
    environment = dict(os.environ, ONNX_DPO_TEST_TAG=tag)
    process = subprocess.Popen(mpirun_command(processes, arguments), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=environment)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert process.poll() is None, f"mpirun ended early:\n{process.communicate()[1]}"
        assert time.monotonic() < deadline, "the run never reached its first checkpoint"
        time.sleep(0.01)
    pid = rank_pid(tag, 1)
    assert pid is not None, "rank 1 not found"
    return process, pid


def test_resume_after_a_process_is_killed(tmp_path):
    extra = ["--batch-size", 3, "--max-steps", 6, "--checkpoint-every", 1]
    onnx_dpo(*train_arguments(tmp_path / "one", *extra))
    shared = tmp_path / "many"
    process, pid = start_and_wait_for(train_arguments(shared, *extra), 2,
                                      shared / "checkpoint-1" / "trainer_state.json", uuid.uuid4().hex)
    os.kill(pid, signal.SIGKILL)
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode != 0, "the job stops when one of its processes dies"
    assert not (shared / "checkpoint-6").exists(), "the run was cut short"
    mpirun(2, train_arguments(shared, *extra, "--resume"))
    assert_same_run(tmp_path / "one", shared, 2, steps=6)


def test_a_process_that_stops_answering_stops_the_run_with_an_error(tmp_path):
    output = tmp_path / "many"
    arguments = train_arguments(output, "--batch-size", 4, "--max-steps", 50, "--checkpoint-every", 1,
                                "--collective-timeout", 5)
    process, pid = start_and_wait_for(arguments, 2, output / "checkpoint-1" / "trainer_state.json", uuid.uuid4().hex)
    os.kill(pid, signal.SIGSTOP)  # alive but silent: mpirun sees nothing wrong, only the timeout can
    started = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert process.returncode != 0
    assert "rank 0 of 2" in stderr and "did not complete within 5 s" in stderr, stderr
    assert time.monotonic() - started < 60
    assert not (output / "checkpoint-50").exists()
