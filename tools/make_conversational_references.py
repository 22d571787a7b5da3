#!/usr/bin/env python3
"""Runs TRL's own DPO data pipeline on conversational preference records and saves the ids it makes, so the Swift
pipeline (conversational records rendered with Sources/Tokenizers/ChatTemplate/) can be checked id for id.

What runs is TRL's code, not a copy of it: `DPOTrainer._prepare_dataset` (trl/trainer/dpo_trainer.py), called
unbound as tools/make_data_references.py does: `extract_prompt` on the message lists when the first record has no
"prompt", no EOS added (conversational data), then `tokenize_fn`: `apply_chat_template(prompt,
add_generation_prompt=True)`, `apply_chat_template(prompt + chosen)` and `apply_chat_template(prompt + rejected)`,
tokenised by transformers with `add_special_tokens=False`, split at `common_prefix_length`.

Inputs: fixtures/conversational/preferences.jsonl (explicit prompt, multi-turn, unicode), implicit.jsonl (implicit
prompt) and tools.jsonl (`tools` as JSON text, as TRL reads it with `json.loads`, and an assistant tool call). Each tokenizer is a fixture model's tokenizer.json with a chat template of fixtures/chat_templates/ set on it
(qwen2-dynamo + qwen2_5: `<|im_start|>` and `<|im_end|>` are plain text there; llama-dynamo + llama3_1: `{{ bos_token
}}` renders `<s>`, which must come out as the one special id).

Output: fixtures/conversational/expected.json
  {"versions": {...},
   "cases": [{"dataset": file, "tokenizer": model folder, "chat_template": fixtures/chat_templates/<name>.jinja,
              "pairs": [{"line", "prompt_ids", "chosen_ids", "rejected_ids", "prompt_text", "chosen_text"}]}]}
(`prompt_text`/`chosen_text`: the rendered prompt and prompt + chosen, to tell a rendering difference from a
tokenisation one.)

Run from the repository root:
    /work/venv-builder/bin/python tools/make_conversational_references.py
"""
import json
import os
import pathlib
import sys
import types

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets
import transformers
import trl
from transformers import PreTrainedTokenizerFast
from trl.data_utils import extract_prompt
from trl.trainer.dpo_trainer import DPOTrainer

from make_data_references import read_jsonl  # the records, each with its 1-based line as "__line"

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "fixtures" / "conversational"
PAIRINGS = [("fixtures/models/qwen2-dynamo", "fixtures/chat_templates/qwen2_5.jinja"),
            ("fixtures/models/llama-dynamo", "fixtures/chat_templates/llama3_1.jinja")]
# What the records' `chat_template_kwargs` say (fixed so that the Llama 3.1 template does not print today's date);
# used here only to render the texts saved beside the ids.
CHAT_TEMPLATE_KWARGS = {"date_string": "26 Jul 2024"}


def case(file, tokenizer_path, template_path):
    records = read_jsonl(DATA / file)
    # The class tokenizer_config.json names: AutoTokenizer would pick Qwen2Tokenizer from config.json's model_type,
    # which replaces tokenizer.json's pre-tokenizer with its own (see Sources/Tokenizers/Tokenizer.swift).
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(ROOT / tokenizer_path))
    tokenizer.chat_template = (ROOT / template_path).read_text(encoding="utf-8")
    args = types.SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_start")
    trainer = types.SimpleNamespace(_tokenizer=tokenizer)
    processed = DPOTrainer._prepare_dataset(trainer, datasets.Dataset.from_list(records), tokenizer, args, "fixture")
    pairs = []
    for record, row in zip(records, processed):
        split = record if "prompt" in record else extract_prompt(record)
        tools = json.loads(record["tools"]) if "tools" in record else None
        render = lambda messages, **kw: tokenizer.apply_chat_template(  # noqa: E731
            messages, tokenize=False, tools=tools, **CHAT_TEMPLATE_KWARGS, **kw)
        pairs.append({"line": row["__line"], "prompt_ids": row["prompt_ids"], "chosen_ids": row["chosen_ids"],
                      "rejected_ids": row["rejected_ids"],
                      "prompt_text": render(split["prompt"], add_generation_prompt=True),
                      "chosen_text": render(split["prompt"] + split["chosen"])})
    return {"dataset": file, "tokenizer": tokenizer_path, "chat_template": template_path, "pairs": pairs}


def main():
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    cases = [case(file, tokenizer, template) for tokenizer, template in PAIRINGS
             for file in ("preferences.jsonl", "implicit.jsonl", "tools.jsonl")]
    output = {"versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                           "datasets": datasets.__version__, "python": sys.version.split()[0]},
              "chat_template_kwargs": CHAT_TEMPLATE_KWARGS, "cases": cases}
    path = DATA / "expected.json"
    path.write_text(json.dumps(output, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    for entry in cases:
        print(f"{entry['dataset']:20} {entry['tokenizer']:30} {entry['chat_template']:40} pairs={len(entry['pairs'])}")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
