#!/usr/bin/env python3
"""Renders TRL's bundled chat templates over a set of conversations with transformers' own renderer and saves the
text, so the Swift engine (Sources/Tokenizers/ChatTemplate/) can be checked against it byte for byte.

What runs is transformers' code, not a copy of it: `render_jinja_template` (transformers/utils/chat_template_utils.py,
the function `apply_chat_template(tokenize=False)` calls after `_normalize_chat_messages`), which compiles the
template in transformers' jinja2 environment (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
loopcontrols, AssistantTracker, its tojson, raise_exception, strftime_now, namespace, dict). The special tokens are
passed as `apply_chat_template` passes `tokenizer.special_tokens_map`.

Inputs: trl/chat_templates/*.jinja, copied to fixtures/chat_templates/<name>.jinja (Apache-2.0, see the README
there). Output: fixtures/chat_templates/expected.json
  {"versions": {...},
   "conversations": {name: {"messages": [...], "tools": [...] (optional), "context": {...} (optional)}},
   "cases": [{"template": name, "conversation": name, "add_generation_prompt": bool,
              "special_tokens": {"bos_token": ..., ...},
              "rendered": text | "error": jinja2's message}]}
A case whose rendering raised (raise_exception, or a template that cannot take the conversation) keeps the message:
the Swift engine must fail on it too.

Run from the repository root:
    /work/venv-builder/bin/python tools/make_chat_template_references.py
"""
import json
import pathlib
import shutil

import jinja2
import transformers
import trl
from transformers.utils.chat_template_utils import _normalize_chat_messages, render_jinja_template

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "chat_templates"
SOURCE = pathlib.Path(trl.__file__).parent / "chat_templates"

# The special tokens of each model family, as their tokenizer_config.json files name them.
FAMILY_TOKENS = {
    "qwen": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "phi3": {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<|endoftext|>"},
    "gemma": {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"},
    "smolvlm": {"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>", "unk_token": "<|endoftext|>",
                "pad_token": "<|im_end|>"},
    "idefics3": {"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>", "unk_token": "<|endoftext|>",
                 "pad_token": "<|im_end|>"},
    "deepseek": {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"},
    "cohere": {"bos_token": "<BOS_TOKEN>", "eos_token": "<|END_OF_TURN_TOKEN|>", "pad_token": "<PAD>",
               "unk_token": "<UNK>", "cls_token": "<CLS>", "sep_token": "<SEP>", "mask_token": "<MASK_TOKEN>"},
}
DEFAULT_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


def tokens_for(name):
    for family, tokens in FAMILY_TOKENS.items():
        if name.startswith(family):
            return tokens
    return DEFAULT_TOKENS


TRICKY = ("Quotes ' and \" and a backslash \\ and {{ braces }} {% tags %}\n\ttab, newlines\n\n"
          "unicode: é, e\u0301, 中文, 🙂, \u00a0nbsp, <|im_end|> <s>  trailing spaces  ")
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city, now.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"},
                                                     "days": {"type": "integer"}},
                   "required": ["city"]}}}]
CONVERSATIONS = {
    "user": {"messages": [{"role": "user", "content": "Hello!"}]},
    "system_user": {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                                 {"role": "user", "content": "What is 2+2?"}]},
    "system_user_assistant": {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."}]},
    "multi_turn": {"messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the chicken cross the road?"},
        {"role": "user", "content": "Why?"}]},
    "special_characters": {"messages": [
        {"role": "system", "content": "  System with spaces  \n"},
        {"role": "user", "content": TRICKY},
        {"role": "assistant", "content": "Réponse: «ok» — 'quoted' \"double\"\n\nSecond paragraph.\n"}]},
    "empty_content": {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]},
    "reasoning": {"messages": [
        {"role": "user", "content": "Think first."},
        {"role": "assistant", "content": "<think>\nLet me think.\n</think>\n\nThe answer is 4."},
        {"role": "user", "content": "And now?"},
        {"role": "assistant", "content": "Done.", "reasoning_content": "Easy."}]},
    "tool_calls": {"tools": TOOLS, "messages": [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 1}}}]},
        {"role": "tool", "name": "get_weather", "content": "{\"temperature\": 21.5, \"unit\": \"C\"}"},
        {"role": "assistant", "content": "It is 21.5 °C."}]},
    "content_parts": {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Describe this."}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]}]},
    "thinking_off": {"context": {"enable_thinking": False}, "messages": [
        {"role": "user", "content": "Quick answer please."}]},
    "none_values": {"messages": [
        {"role": "user", "content": "Hi", "name": None},
        {"role": "assistant", "content": "Hey", "tool_calls": None}]},
}
# Fixed so that templates that print today's date (Llama 3.x) render the same every day.
CONTEXT = {"date_string": "26 Jul 2024"}


def render(template, conversation, add_generation_prompt, special_tokens):
    kwargs = {**special_tokens, **CONTEXT, **conversation.get("context", {})}
    messages = _normalize_chat_messages(conversation["messages"])
    rendered, _ = render_jinja_template(
        conversations=[messages], tools=conversation.get("tools"), chat_template=template,
        add_generation_prompt=add_generation_prompt, **kwargs)
    return rendered[0]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    cases = []
    for path in sorted(SOURCE.glob("*.jinja")):
        name = path.stem
        shutil.copyfile(path, OUT / path.name)
        template = path.read_text(encoding="utf-8")
        special_tokens = tokens_for(name)
        for conversation_name, conversation in CONVERSATIONS.items():
            for add_generation_prompt in (False, True):
                case = {"template": name, "conversation": conversation_name,
                        "add_generation_prompt": add_generation_prompt, "special_tokens": special_tokens}
                try:
                    case["rendered"] = render(template, conversation, add_generation_prompt, special_tokens)
                except Exception as error:  # noqa: BLE001 - the failure is the reference
                    case["error"] = f"{type(error).__name__}: {error}"
                cases.append(case)
    reference = {
        "versions": {"transformers": transformers.__version__, "jinja2": jinja2.__version__, "trl": trl.__version__},
        "context": CONTEXT,
        "conversations": CONVERSATIONS,
        "cases": cases,
    }
    (OUT / "expected.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    failed = sum("error" in case for case in cases)
    print(f"{len(cases)} cases ({failed} raise) over {len(list(SOURCE.glob('*.jinja')))} templates")


if __name__ == "__main__":
    main()
