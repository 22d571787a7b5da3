"""Interoperability: the TensorBoard event files `onnx-dpo train` writes, read back by TensorBoard's own
EventAccumulator (also after a killed run is resumed), and the HTML report of `onnx-dpo report` rendered by headless
Chromium. The binary and the runner come from conftest.py."""
import json
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import BIN, FIXTURES, ROOT, onnx_dpo

MODEL = FIXTURES / "models" / "llama-dynamo"
DATA = FIXTURES / "dpo"
TRAIN_BLUE, EVAL_ORANGE = (0x25, 0x63, 0xEB), (0xEA, 0x58, 0x0C)


def train(out, *extra):
    return onnx_dpo("train", "--model", MODEL / "model.onnx", "--tokenizer", MODEL / "tokenizer.json",
                    "--data", DATA / "preferences.jsonl", "--eval-data", DATA / "eval.jsonl", "--output-dir", out,
                    "--lr", "5e-3", "--batch-size", "4", "--warmup-steps", "1", "--eval-every", "2",
                    "--checkpoint-every", "4", *extra)


def metrics_lines(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def expected_scalars(lines):
    """metrics.jsonl as TensorBoard scalars: transformers' tags (eval_x -> eval/x, x -> train/x), float32 values."""
    scalars = {}
    for line in lines:
        for key, value in line.items():
            if key == "step":
                continue
            tag = "eval/" + key[len("eval_"):] if key.startswith("eval_") else "train/" + key
            scalars.setdefault(tag, []).append((int(line["step"]), float(np.float32(value))))
    return scalars


def tensorboard_scalars(out):
    accumulator = EventAccumulator(str(out / "runs"), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    scalars = {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
               for tag in accumulator.Tags()["scalars"]}
    return scalars, accumulator


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """A run of 6 steps killed during step 6 (mid-write of both logs, before checkpoint 6), then resumed from
    checkpoint 4 with --max-steps 8, so steps 5 and 6 are logged twice with different learning rates."""
    out = tmp_path_factory.mktemp("run") / "out"
    train(out, "--max-steps", "6")
    # Killed while writing step 6's line: its event file already holds step 6, its metrics.jsonl half a line.
    killed = [line for line in metrics_lines(out) if line["step"] <= 5]
    shutil.rmtree(out / "checkpoint-6")
    shutil.rmtree(out / "adapter")
    (out / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in killed) + '{"loss":0.5,"rewards/mar')
    [events] = (out / "runs").glob("events.out.tfevents.*")
    with open(events, "ab") as file:
        file.write(b"\x30\x00\x00\x00\x00\x00\x00\x00\x01\x02")
    (out / "killed").mkdir()
    onnx_dpo("report", out, "--output", out / "killed" / "report.html")
    train(out, "--max-steps", "8", "--resume")
    return out, killed


def test_event_files_hold_exactly_the_metrics(tmp_path):
    out = tmp_path / "out"
    train(out, "--max-steps", "4")
    lines = metrics_lines(out)
    scalars, accumulator = tensorboard_scalars(out)
    assert scalars == expected_scalars(lines)
    assert len(scalars["train/loss"]) == 4 and len(scalars["eval/loss"]) == 2
    [args] = accumulator.Tensors("args")
    text = args.tensor_proto.string_val[0].decode()
    assert "| beta | 0.1 |" in text and "| learning_rate | 0.005 |" in text and "llama-dynamo/model.onnx" in text


def test_resume_continues_the_curves_without_duplicate_steps(resumed_run):
    out, killed = resumed_run
    lines = metrics_lines(out)
    assert [line["step"] for line in lines if "loss" in line] == list(range(1, 9))
    killed_rate = {line["step"]: line["learning_rate"] for line in killed if "learning_rate" in line}
    resumed_rate = {line["step"]: line["learning_rate"] for line in lines if "learning_rate" in line}
    assert killed_rate[4] == resumed_rate[4] and killed_rate[5] != resumed_rate[5], "steps 5 and 6 were redone"
    scalars, accumulator = tensorboard_scalars(out)
    assert scalars == expected_scalars(lines)
    # The same holds without EventAccumulator's purge on the SessionLog START (TensorBoard's Rust data server has
    # none): the killed session's file itself was cut back to its checkpoint.
    files = sorted((out / "runs").glob("events.out.tfevents.*"))
    assert len(files) == 2
    unpurged = EventAccumulator(str(out / "runs"), size_guidance={"scalars": 0}, purge_orphaned_data=False)
    unpurged.Reload()
    assert [event.step for event in unpurged.Scalars("train/loss")] == list(range(1, 9))
    assert [event.step for event in accumulator.Tensors("args")] == [0, 4], "the options of each session"


def test_no_tensorboard_writes_no_event_files(tmp_path):
    out = tmp_path / "out"
    train(out, "--max-steps", "1", "--no-tensorboard")
    assert (out / "metrics.jsonl").exists() and not (out / "runs").exists()


def chromium(*args):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "headless Chromium is needed (scripts/setup installs Debian's chromium)"
    flags = ["--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")
    return subprocess.run([binary, *flags, *map(str, args)], capture_output=True, text=True, timeout=120)


def series_pixels(png):
    """Pixels of the train and eval colours (within anti-aliasing) in a screenshot."""
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return [int((np.abs(image - np.array(color)).max(axis=2) < 40).sum()) for color in (TRAIN_BLUE, EVAL_ORANGE)]


def render(html, tmp_path, name):
    png = tmp_path / f"{name}.png"
    chromium(f"--screenshot={png}", "--window-size=1280,3000", html.as_uri())
    assert png.exists(), f"chromium wrote no screenshot of {html}"
    return png


def test_report_renders_with_charts_and_the_final_loss(resumed_run, tmp_path):
    out, _ = resumed_run
    html = tmp_path / "report.html"
    onnx_dpo("report", out, "--output", html)
    page = html.read_text()
    for external in ("<script", "<link", "src=", "url(", "@import", "https://"):
        assert external not in page, f"the report must be self-contained, found {external}"
    lines = metrics_lines(out)
    final = [line for line in lines if "loss" in line][-1]
    dom = chromium("--dump-dom", html.as_uri()).stdout
    assert f'data-metric="loss">{final["loss"]:.4f}</div>' in dom, "the final loss as the first figure"
    assert "complete: 8 steps" in dom
    charts = dom.count('<section class="card"')
    assert charts >= 12

    # The charts' lines and dots are what colours the page: the same page with them removed has almost none.
    blank = tmp_path / "blank.html"
    blank.write_text("\n".join(line for line in page.split("\n")
                               if not line.startswith(("<path", "<circle"))))
    train_pixels, eval_pixels = series_pixels(render(html, tmp_path, "report"))
    blank_train, blank_eval = series_pixels(render(blank, tmp_path, "blank"))
    assert train_pixels - blank_train > 300 * charts, (train_pixels, blank_train)
    assert eval_pixels - blank_eval > 100 * (charts - 3), (eval_pixels, blank_eval)


def test_report_of_a_killed_run_skips_its_cut_line(resumed_run, tmp_path):
    out, killed = resumed_run
    page = (out / "killed" / "report.html").read_text()
    assert "step 5 of 6: running or stopped" in page
    assert "1 incomplete line(s) skipped" in page
    final = [line for line in killed if "loss" in line][-1]
    assert f'data-metric="loss">{final["loss"]:.4f}</div>' in page


def test_bench_profile_report_charts_every_profiled_op(tmp_path):
    page = tmp_path / "profile.html"
    result = onnx_dpo("bench", "train", "--model", MODEL / "model.onnx", "--pairs", "1", "--seq", "16",
                      "--warmup", "0", "--steps", "1", "--profile", "--profile-report", page)
    # The table pads profile keys to 20 characters and cuts longer ones ("ReduceMean (backwar"); a backward rule's
    # key is "<op> (backward)", charted as <op>'s backward bar; attention recomputed in the backward pass is
    # "<op> (recompute)", charted as its own forward bar.
    profiled = {line[:20].rstrip() for line in result.stderr.splitlines() if line.strip()}
    html = page.read_text()
    charted = set()
    for kind, suffix in (("forward", ""), ("backward", " (backward)")):
        ops = {part.split('"')[0] for part in html.split(f'class="bar {kind}" data-op="')[1:]}
        charted |= {(op + suffix)[:20].rstrip() for op in ops}
    assert charted == profiled
    assert any(key.endswith("(recompute)") for key in profiled), "attention cores are recomputed by default"
    assert "<script" not in html and "https://" not in html
    forward_pixels, backward_pixels = series_pixels(render(page, tmp_path, "profile"))
    assert forward_pixels > 2000 and backward_pixels > 1000, (forward_pixels, backward_pixels)
