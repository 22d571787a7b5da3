"""`onnx-dpo chat-template` against transformers' renderings of TRL's chat templates
(fixtures/chat_templates/expected.json, made by tools/make_chat_template_references.py): every template over the
conversations that exercise the most (escapes and unicode, tools and tool calls), byte for byte, through the binary,
with the special tokens in a tokenizer_config.json and the conversation in a messages file. (The XCTest
ChatTemplateReferenceTests renders every case in-process.)"""
import json

import pytest

from conftest import FIXTURES, onnx_dpo

REFERENCE = json.loads((FIXTURES / "chat_templates" / "expected.json").read_text(encoding="utf-8"))
CASES = [case for case in REFERENCE["cases"] if case["conversation"] in ("special_characters", "tool_calls")]


def case_id(case):
    return f"{case['template']}-{case['conversation']}-{'gen' if case['add_generation_prompt'] else 'nogen'}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(case) for case in CASES])
def test_chat_template_renders_as_transformers(case, tmp_path):
    conversation = REFERENCE["conversations"][case["conversation"]]
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps(case["special_tokens"]), encoding="utf-8")
    messages = tmp_path / "messages.json"
    document = {"messages": conversation["messages"], **REFERENCE["context"], **conversation.get("context", {})}
    if "tools" in conversation:
        document["tools"] = conversation["tools"]
    messages.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    template = FIXTURES / "chat_templates" / f"{case['template']}.jinja"
    args = ["chat-template", "--tokenizer-config", config, "--messages", messages, "--template", template]
    if case["add_generation_prompt"]:
        args.append("--add-generation-prompt")
    result = onnx_dpo(*args, check="error" not in case)
    if "error" in case:
        assert result.returncode != 0, f"rendered {result.stdout[:200]!r} where transformers fails: {case['error']}"
        assert "chat template" in result.stderr
    else:
        assert result.stdout == case["rendered"]


def test_chat_template_file_beside_the_config_and_a_message_list(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": {"content": "<s>"}}), encoding="utf-8")
    (tmp_path / "chat_template.jinja").write_text("{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}"
                                                  "{% endfor %}{% if add_generation_prompt %}>{% endif %}\n",
                                                  encoding="utf-8")
    messages = tmp_path / "messages.json"
    messages.write_text(json.dumps([{"role": "user", "content": "héllo\n"}]), encoding="utf-8")
    result = onnx_dpo("chat-template", "--tokenizer-config", tmp_path, "--messages", messages,
                      "--add-generation-prompt")
    assert result.stdout == "<s>[user]héllo\n>"


def test_chat_template_error_names_the_line_and_column(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "ok\n{{ raise_exception('no') }}"}),
                                                    encoding="utf-8")
    messages = tmp_path / "messages.json"
    messages.write_text("[]", encoding="utf-8")
    result = onnx_dpo("chat-template", "--tokenizer-config", tmp_path / "tokenizer_config.json",
                      "--messages", messages, check=False)
    assert result.returncode != 0
    assert "line 2, column 4" in result.stderr and "no" in result.stderr


def test_train_and_eval_on_conversational_data_with_a_chat_template_flag(tmp_path):
    """One DPO step through the binary on message-list records, the template given with --chat-template: the first
    step's loss is log 2 (B = 0), and eval reads the same data with the trained adapter."""
    qwen = FIXTURES / "models" / "qwen2-dynamo"
    common = ["--model", qwen / "model.onnx", "--tokenizer", qwen / "tokenizer.json",
              "--data", FIXTURES / "conversational" / "preferences.jsonl",
              "--chat-template", FIXTURES / "chat_templates" / "qwen2_5.jinja", "--batch-size", 2]
    onnx_dpo("train", *common, "--output-dir", tmp_path / "run", "--max-steps", 1, "--no-tensorboard")
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and abs(metrics[0]["loss"] - 0.6931471805599453) < 1e-6
    result = onnx_dpo("eval", *common, "--adapter", tmp_path / "run" / "adapter", "--output-dir", tmp_path / "eval")
    assert "loss" in result.stdout


def test_conversational_data_errors_name_the_data_line_and_the_template_place(tmp_path):
    qwen = FIXTURES / "models" / "qwen2-dynamo"
    result = onnx_dpo("train", "--model", qwen / "model.onnx", "--tokenizer", qwen / "tokenizer.json",
                      "--data", FIXTURES / "conversational" / "bad" / "system_last.jsonl",
                      "--chat-template", FIXTURES / "chat_templates" / "gemma.jinja",
                      "--output-dir", tmp_path / "run", "--max-steps", 1, check=False)
    assert result.returncode != 0
    assert "system_last.jsonl, line 2" in result.stderr and "line 1, column 211" in result.stderr
    # Without a template anywhere, message lists are refused up front, naming what to give.
    result = onnx_dpo("train", "--model", qwen / "model.onnx", "--tokenizer", qwen / "tokenizer.json",
                      "--data", FIXTURES / "conversational" / "preferences.jsonl",
                      "--output-dir", tmp_path / "run2", "--max-steps", 1, check=False)
    assert result.returncode != 0 and "chat_template" in result.stderr
