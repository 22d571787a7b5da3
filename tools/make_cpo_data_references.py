#!/usr/bin/env python3
"""Runs the tokenisation of TRL's ORPOTrainer and CPOTrainer (`tokenize_row`, the same code in both, under
trl/experimental/) on the committed preference fixtures and saves the rows it makes, so that onnx-dpo's ORPO and
SimPO runs can be checked to feed the same ids (fixtures/data/expected_cpo.json).

What runs is TRL's code: `maybe_extract_prompt`, then `ORPOTrainer.tokenize_row` called unbound with a stand-in
`self` (the tokenizer, `max_length`, not encoder-decoder, and TRL's own `build_tokenized_answer`). It differs from
DPOTrainer's: prompt and prompt + completion are tokenised without special tokens, the completion starts at the
prompt's length (one earlier when the prompt's last token merged), the BOS id is prepended when the tokenizer has
one (GPT-2's too), the EOS id appended, and a long pair keeps its prompt and cuts its completion.

Output: {"versions", "cases": [{"dataset", "tokenizer", "max_length",
          "pairs": [{"line", "chosen_prompt_ids", "rejected_prompt_ids", "chosen_ids", "rejected_ids"}]}]}

    /work/venv-builder/bin/python tools/make_cpo_data_references.py
"""
import functools
import json
import pathlib
import sys
import types

import datasets
import transformers
import trl
from accelerate import PartialState
from transformers import AutoTokenizer
from trl.data_utils import maybe_extract_prompt
from trl.experimental.orpo import ORPOTrainer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_data_references import DATA, ROOT, TOKENIZERS, read_jsonl  # noqa: E402


def case(file, tokenizer_path, max_length):
    tokenizer = AutoTokenizer.from_pretrained(str(ROOT / tokenizer_path))
    trainer = types.SimpleNamespace(processing_class=tokenizer, is_encoder_decoder=False, max_length=max_length)
    trainer.build_tokenized_answer = functools.partial(ORPOTrainer.build_tokenized_answer, trainer)
    pairs = []
    for record in read_jsonl(DATA / file):
        row = ORPOTrainer.tokenize_row(trainer, maybe_extract_prompt(record))
        split = {}
        for side in ("chosen", "rejected"):
            labels, ids = row[f"{side}_labels"], row[f"{side}_input_ids"]
            start = next((i for i, label in enumerate(labels) if label != -100), len(labels))
            split[f"{side}_prompt_ids"], split[f"{side}_ids"] = ids[:start], ids[start:]
        pairs.append(dict(line=record["__line"], **split))
    return {"dataset": file, "tokenizer": tokenizer_path, "max_length": max_length, "pairs": pairs}


def main():
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    PartialState(cpu=True)  # TRL warns through accelerate's logger when a prompt fills max_length
    cases = [case(file, tokenizer, max_length) for tokenizer in TOKENIZERS
             for file in ("preferences.jsonl", "implicit.jsonl") for max_length in (1024, 24)]
    path = DATA / "expected_cpo.json"
    path.write_text(json.dumps({"versions": {"trl": trl.__version__, "transformers": transformers.__version__},
                                "cases": cases}, ensure_ascii=False) + "\n", encoding="utf-8")
    for c in cases:
        asymmetric = sum(p["chosen_prompt_ids"] != p["rejected_prompt_ids"] for p in c["pairs"])
        print(f"{c['dataset']:20} {c['tokenizer']:30} max_length={c['max_length']} pairs={len(c['pairs'])} "
              f"prompts differing between chosen and rejected: {asymmetric}")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
