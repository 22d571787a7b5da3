"""Interoperability: the iterative loop through the binary. `sample` writes one line per prompt and is seeded per
prompt, `judge` turns samples into preference pairs `train` reads (by an external command, by agreement, by a judge
model with soft labels), `iterate` runs two rounds, resumes without redoing a finished stage, and bad input (a
failing scorer, a template without its placeholders, a round without pairs) is refused naming it."""
import json

from conftest import FIXTURES, onnx_dpo

MODEL = FIXTURES / "models" / "llama-dynamo" / "model.onnx"
TOKENIZER = FIXTURES / "models" / "llama-dynamo" / "tokenizer.json"
LENGTH = "awk '{ print length($0) }'"


def prompts(tmp_path, count=3):
    path = tmp_path / "prompts.jsonl"
    lines = (FIXTURES / "dpo" / "preferences.jsonl").read_text().splitlines()[:count]
    path.write_text("\n".join(lines) + "\n")
    return path


def sample(tmp_path, output, *extra):
    return onnx_dpo("sample", "--model", MODEL, "--prompts", prompts(tmp_path), "--n", 3, "--max-new-tokens", 6,
                    "--temperature", 1.5, "--seed", 5, "--output", output, *extra)


def test_sample_then_judge_then_train(tmp_path):
    samples = tmp_path / "samples.jsonl"
    sample(tmp_path, samples)
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [row["line"] for row in rows] == [1, 2, 3]
    assert all(len(row["completions"]) == 3 for row in rows)
    again = tmp_path / "again.jsonl"
    sample(tmp_path, again)
    assert again.read_text() == samples.read_text(), "the same seed samples the same completions"

    pairs = tmp_path / "pairs.jsonl"
    result = onnx_dpo("judge", "--input", samples, "--output", pairs, "--by", "command", "--command", LENGTH, "--json")
    summary = json.loads(result.stdout)
    assert summary["pairs"] == len(pairs.read_text().splitlines()) > 0
    for line in pairs.read_text().splitlines():
        pair = json.loads(line)
        assert pair["chosen_score"] > pair["rejected_score"]
        assert len(pair["chosen"]) > len(pair["rejected"]) or pair["chosen_score"] > pair["rejected_score"]
    onnx_dpo("train", "--model", MODEL, "--tokenizer", TOKENIZER, "--data", pairs, "--output-dir", tmp_path / "run",
             "--max-steps", 1, "--batch-size", 2, "--no-tensorboard")
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()


def test_judge_model_gives_soft_preferences(tmp_path):
    samples = tmp_path / "samples.jsonl"
    sample(tmp_path, samples)
    pairs = tmp_path / "pairs.jsonl"
    onnx_dpo("judge", "--input", samples, "--output", pairs, "--by", "judge-model", "--judge", MODEL)
    for line in pairs.read_text().splitlines():
        pair = json.loads(line)
        assert 0.5 < pair["preference"] <= 1


def test_judge_errors_name_what_failed(tmp_path):
    samples = tmp_path / "samples.jsonl"
    sample(tmp_path, samples)
    pairs = tmp_path / "pairs.jsonl"
    failing = onnx_dpo("judge", "--input", samples, "--output", pairs, "--by", "command",
                       "--command", "echo scorer crashed >&2; exit 7", check=False)
    assert failing.returncode != 0
    assert "exit status 7" in failing.stderr and "scorer crashed" in failing.stderr
    garbage = onnx_dpo("judge", "--input", samples, "--output", pairs, "--by", "command",
                       "--command", "awk '{ print \"good\" }'", check=False)
    assert "output line 1" in garbage.stderr and "not JSON" in garbage.stderr
    template = tmp_path / "judge.txt"
    template.write_text("Q: {prompt}\nA: {answer_1}\nBetter:")
    missing = onnx_dpo("judge", "--input", samples, "--output", pairs, "--by", "judge-model", "--judge", MODEL,
                       "--judge-template", template, check=False)
    assert "{answer_2}" in missing.stderr and str(template) in missing.stderr
    needs = onnx_dpo("judge", "--input", samples, "--output", pairs, "--by", "command", check=False)
    assert "--command is needed" in needs.stderr
    assert not pairs.exists(), "a failed judge writes nothing"


def iterate(tmp_path, *extra, check=True):
    return onnx_dpo("iterate", "--model", MODEL, "--tokenizer", TOKENIZER, "--prompts", prompts(tmp_path),
                    "--rounds", 2, "--output-dir", tmp_path / "loop", "--n", 3, "--max-new-tokens", 6,
                    "--temperature", 1.5, "--max-steps", 2, "--batch-size", 2, "--lr", 0.01, "--no-tensorboard",
                    *extra, check=check)


def test_iterate_two_rounds_by_confidence_and_resume(tmp_path):
    result = iterate(tmp_path, "--by", "confidence")
    table = result.stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("round  prompts"))
    assert [line.split()[0] for line in table[header + 1:header + 3]] == ["1", "2"]
    summary = json.loads((tmp_path / "loop" / "summary.json").read_text())
    assert [entry["round"] for entry in summary] == [1, 2]
    assert summary[1]["policy"] == summary[0]["merged_model"]
    for entry in summary:
        assert entry["judge"]["score_name"] == "token log-prob"
        assert (tmp_path / "loop" / f"round-{entry['round']}" / "model.onnx").exists()
    again = iterate(tmp_path, "--by", "confidence")
    assert "round 1: round already done" in again.stdout and "round 2: round already done" in again.stdout
    assert json.loads((tmp_path / "loop" / "summary.json").read_text()) == summary


def test_a_round_without_pairs_names_the_round(tmp_path):
    result = iterate(tmp_path, "--by", "command", "--command", "awk '{ print 0 }'", check=False)
    assert result.returncode != 0
    assert "round 1" in result.stderr and "no usable pair" in result.stderr
    assert (tmp_path / "loop" / "round-1" / "samples.jsonl").exists(), "the round's samples are kept"
