"""Interoperability: `onnx-dpo generate --json` greedy on fixture models equals transformers' `generate` and
onnxruntime-genai (fixtures/generation/expected.json, from tools/make_generation_references.py), `--output` writes
whole JSON lines, and bad input is refused naming it."""
import json

import pytest

from conftest import FIXTURES, ROOT, onnx_dpo

EXPECTED = json.loads((FIXTURES / "generation" / "expected.json").read_text())
CASES = [m for m in EXPECTED["models"] if m["name"] in ("llama-dynamo", "gpt2-torchscript", "phi3-dynamo", "qwen2-fp32")]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_greedy_json_equals_reference(case):
    for prompt in case["prompts"]:
        want = prompt.get("genai", prompt["transformers"])
        result = onnx_dpo("generate", "--model", ROOT / case["model"], "--prompt", prompt["text"], "--greedy",
                          "--max-new-tokens", EXPECTED["max_new_tokens"], "--json")
        output = json.loads(result.stdout)
        # EOS may end a row early in the reference too; the ids are compared as they are.
        assert output["output_ids"] == [want], prompt["text"]
        assert len(output["text"]) == 1


def test_prompt_file_batch_and_output_lines(tmp_path):
    case = next(c for c in EXPECTED["models"] if c["name"] == "qwen2-int4")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_ids": p["prompt_ids"]}) + "\n" for p in case["prompts"]))
    out = tmp_path / "out.jsonl"
    result = onnx_dpo("generate", "--model", ROOT / case["model"], "--prompt-file", prompts, "--repetition-penalty",
                      EXPECTED["repetition_penalty"], "--max-new-tokens", EXPECTED["max_new_tokens"], "--json",
                      "--output", out)
    want = [p["genai_repetition_penalty"] for p in case["prompts"]]
    assert json.loads(result.stdout)["output_ids"] == want
    lines = out.read_text().splitlines()
    assert [json.loads(line)["output_ids"] for line in lines] == want
    assert [json.loads(line)["prompt_ids"] for line in lines] == [p["prompt_ids"] for p in case["prompts"]]


def test_sampling_is_reproducible_from_the_seed():
    model = ROOT / "fixtures" / "models" / "phi3-dynamo" / "model.onnx"
    args = ["generate", "--model", model, "--prompt", "The quick brown fox", "--temperature", "1.5", "--top-k", "0",
            "--seed", "7", "--num-return-sequences", "2", "--max-new-tokens", "6", "--json"]
    first = json.loads(onnx_dpo(*args).stdout)["output_ids"]
    assert first == json.loads(onnx_dpo(*args).stdout)["output_ids"]
    assert len(first) == 2


@pytest.mark.parametrize("args, fragments", [
    (["--prompt", ""], ["--prompt", "empty"]),
    (["--prompt", "x", "--max-new-tokens", "0"], ["--max-new-tokens", "≥ 1"]),
    (["--prompt-ids", ",".join(["5"] * 130)], ["--prompt", "130 tokens", "context is 128"]),
    (["--prompt", "x", "--adapter", FIXTURES / "peft" / "gpt2-torchscript-c_attn"], ["--adapter", "gpt2-torchscript-c_attn", "does not fit"]),
    (["--prompt", "x", "--top-p", "0"], ["--top-p"]),
    (["--prompt", "x", "--prompt-ids", "1"], ["exactly one of"]),
])
def test_bad_input_is_refused_naming_it(args, fragments):
    model = FIXTURES / "models" / "llama-dynamo" / "model.onnx"
    result = onnx_dpo("generate", "--model", model, *args, check=False)
    assert result.returncode != 0
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize("model, strategy", [
    ("fixtures/builder/qwen2-fp32/model.onnx", "kv_cache"),
    ("fixtures/generation/llama-with-past/model.onnx", "kv_cache"),
    ("fixtures/models/gpt2-dynamo/model.onnx", "recompute"),
])
def test_inspect_says_how_generation_decodes(model, strategy):
    report = json.loads(onnx_dpo("inspect", ROOT / model, "--json").stdout)
    assert report["generation"]["strategy"] == strategy
    assert f"Generation: {strategy}" in onnx_dpo("inspect", ROOT / model).stdout
