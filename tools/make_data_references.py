#!/usr/bin/env python3
"""Runs TRL's own DPO data pipeline on the committed preference fixtures and saves what it produces, so the Swift
pipeline (Sources/Training/Data/) can be checked against it id for id.

What runs is TRL's code, not a copy of it:
  * `DPOTrainer._prepare_dataset` (trl/trainer/dpo_trainer.py), called unbound with a stand-in `self` that only
    carries `_tokenizer`: `extract_prompt` when the first record has no "prompt" (trl/data_utils.py), the EOS text
    appended to chosen/rejected unless already there (`add_eos`), `tokenize_fn` (prompt, prompt+chosen and
    prompt+rejected each tokenised as one string with special tokens, then split at `common_prefix_length`), and the
    filter that drops pairs whose prompt alone fills `max_length` under keep_start truncation;
  * `DataCollatorForPreference` (same file), with the pad id DPOTrainer chooses (`tokenizer.pad_token` or else
    `eos_token`), `max_length` and `truncation_mode`.
Pre-tokenised records (`prompt_ids` / `chosen_ids` / `rejected_ids`, the collator's input) go to the collator as
they are: TRL 1.x has no other path for them.

Inputs, under fixtures/data/: preferences.jsonl (explicit prompt), implicit.jsonl (implicit
prompt), pretokenized.jsonl. Tokenizers: fixtures/models/llama-dynamo (BOS `<s>`, EOS = pad `</s>`) and fixtures/models/gpt2-dynamo
(no BOS added; `<|endoftext|>` is EOS and pad).

Output: fixtures/data/expected.json
  {"versions": {...},
   "cases": [{"dataset": file, "tokenizer": model folder or null, "max_length": int or null,
              "truncation_mode": "keep_start" | "keep_end", "pad_token_id": int,
              "pairs": [{"line": 1-based line in the file, "prompt_ids", "chosen_ids", "rejected_ids"}],
                         (TRL's processed dataset, after the keep_start filter: dropped lines are missing)
              "extracted": [{"prompt", "chosen", "rejected"}] (implicit files only: extract_prompt's strings),
              "batch": {"input_ids", "attention_mask", "completion_mask"}}]}   (the whole file as one batch)

Run from the repository root (measured with trl 1.16.0, transformers 5.23.0, datasets 5.2.0):
    /root/venv-tools/bin/python tools/make_data_references.py
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
from transformers import AutoTokenizer
from trl.data_utils import extract_prompt
from trl.trainer.dpo_trainer import DataCollatorForPreference, DPOTrainer

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "fixtures" / "data"
TOKENIZERS = ["fixtures/models/llama-dynamo", "fixtures/models/gpt2-dynamo"]
# None: no truncation. 24 cuts the long pairs and drops the one whose prompt alone is 24 tokens or more.
SETTINGS = [(None, "keep_start"), (24, "keep_start"), (24, "keep_end")]


def read_jsonl(path):
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if line.strip():
            record = json.loads(line)
            record["__line"] = number
            records.append(record)
    return records


def as_lists(batch):
    return {key: value.tolist() for key, value in batch.items()}


def tokenized_case(file, tokenizer_path, max_length, truncation_mode):
    records = read_jsonl(DATA / file)
    tokenizer = AutoTokenizer.from_pretrained(str(ROOT / tokenizer_path))
    # DPOTrainer: `args.pad_token or tokenizer.pad_token or tokenizer.eos_token`
    pad_token = tokenizer.pad_token or tokenizer.eos_token
    tokenizer.pad_token = pad_token
    args = types.SimpleNamespace(dataset_num_proc=None, max_length=max_length, truncation_mode=truncation_mode)
    trainer = types.SimpleNamespace(_tokenizer=tokenizer)
    dataset = datasets.Dataset.from_list(records)
    processed = DPOTrainer._prepare_dataset(trainer, dataset, tokenizer, args, "fixture")
    pairs = [{"line": row["__line"], "prompt_ids": row["prompt_ids"], "chosen_ids": row["chosen_ids"],
              "rejected_ids": row["rejected_ids"]} for row in processed]
    collator = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=max_length,
                                         truncation_mode=truncation_mode)
    batch = collator([{k: row[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for row in processed])
    case = {"dataset": file, "tokenizer": tokenizer_path, "max_length": max_length,
            "truncation_mode": truncation_mode, "pad_token_id": tokenizer.pad_token_id, "pairs": pairs,
            "batch": as_lists(batch)}
    if "prompt" not in records[0]:
        case["extracted"] = [extract_prompt({"chosen": r["chosen"], "rejected": r["rejected"]}) for r in records]
    return case


def pretokenized_case(max_length, truncation_mode, pad_token_id):
    records = read_jsonl(DATA / "pretokenized.jsonl")
    collator = DataCollatorForPreference(pad_token_id=pad_token_id, max_length=max_length,
                                         truncation_mode=truncation_mode)
    examples = [{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in records]
    return {"dataset": "pretokenized.jsonl", "tokenizer": None, "max_length": max_length,
            "truncation_mode": truncation_mode, "pad_token_id": pad_token_id,
            "pairs": [dict(line=r["__line"], **e) for r, e in zip(records, examples)],
            "batch": as_lists(collator(examples))}


def main():
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    cases = []
    for tokenizer_path in TOKENIZERS:
        for file in ("preferences.jsonl", "implicit.jsonl"):
            for max_length, mode in SETTINGS:
                cases.append(tokenized_case(file, tokenizer_path, max_length, mode))
    for max_length, mode in [(None, "keep_start"), (5, "keep_start"), (5, "keep_end")]:
        cases.append(pretokenized_case(max_length, mode, pad_token_id=511))
    output = {"versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                           "datasets": datasets.__version__, "python": sys.version.split()[0]},
              "cases": cases}
    path = DATA / "expected.json"
    path.write_text(json.dumps(output, ensure_ascii=False) + "\n", encoding="utf-8")
    for case in cases:
        print(f"{case['dataset']:20} {str(case['tokenizer']):22} max_length={case['max_length']} "
              f"{case['truncation_mode']:10} pairs={len(case['pairs'])} "
              f"batch={len(case['batch']['input_ids'])}x{len(case['batch']['input_ids'][0])}")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
