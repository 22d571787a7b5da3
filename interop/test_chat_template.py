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
