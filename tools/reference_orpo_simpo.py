#!/usr/bin/env python3
"""Runs TRL's ORPOTrainer and CPOTrainer(loss_type="simpo") + a PEFT LoRA on the tiny Llama fixture, with the model,
tokenizer, data, LoRA configuration, B perturbation, batch size, optimiser and step count of tools/reference_dpo.py,
and saves what onnx-dpo's ORPO and SimPO parity tests must match (fixtures/trl-orpo/, fixtures/trl-simpo/).

Neither trainer has a reference model. ORPO: beta (lambda) 0.1. SimPO: beta 2.0, simpo_gamma 0.5, cpo_alpha 0.5
(the NLL term's weight, so that it is exercised), label_smoothing 0.

Both trainers tokenise differently from DPOTrainer (prompt and prompt + completion without special tokens, BOS and
EOS ids added, a completion boundary per completion), as onnx-dpo does for these losses (`tokenizedAsCPO`, checked
against TRL's tokenize_row by tools/make_cpo_data_references.py). On this data and tokenizer the two agree: this
script asserts that every row equals the one DPOTrainer made (fixtures/trl/tokenized.json).

Writes, into each folder: initial_adapter/, final_adapter/ (PEFT), metrics.json (log_history, one object per step),
settings.json.

    /work/venv-builder/bin/python tools/reference_orpo_simpo.py
"""
import json
import os
import pathlib
import shutil
import sys
import tempfile

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import datasets
import peft
import torch
import transformers
import trl
from trl.experimental.cpo import CPOConfig, CPOTrainer
from trl.experimental.orpo import ORPOConfig, ORPOTrainer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_fixtures import build_model  # noqa: E402
from reference_dpo import (  # noqa: E402
    BATCH, DATA, LORA, MAX_STEPS, ROOT, check_model_against_onnx, perturb_lora_b, quiet_setup_and_tokenizer,
    save_peft_adapter)

COMMON = dict(
    learning_rate=1e-3, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
    per_device_train_batch_size=BATCH, gradient_accumulation_steps=1, max_steps=MAX_STEPS, optim="adamw_torch",
    seed=42, logging_steps=1, report_to=[], use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
    train_sampling_strategy="sequential", save_strategy="no", dataloader_num_workers=0, max_length=1024,
)
RUNS = {
    "trl-orpo": (ORPOTrainer, ORPOConfig, dict(beta=0.1)),
    "trl-simpo": (CPOTrainer, CPOConfig, dict(loss_type="simpo", beta=2.0, simpo_gamma=0.5, cpo_alpha=0.5,
                                               label_smoothing=0.0)),
}


def main():
    tokenizer, _, info = quiet_setup_and_tokenizer()
    dpo_rows = json.loads((ROOT / "fixtures" / "trl" / "tokenized.json").read_text())["pairs"]

    for folder, (trainer_class, config_class, settings) in RUNS.items():
        out = ROOT / "fixtures" / folder
        model = build_model("llama", info)
        check_model_against_onnx(model)
        dataset = datasets.load_dataset("json", data_files=str(DATA), split="train")
        workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"reference_{folder}_"))
        args = config_class(output_dir=str(workdir), **COMMON, **settings)
        trainer = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                peft_config=peft.LoraConfig(**LORA))
        pmodel = trainer.model

        # The rows these trainers feed equal DPOTrainer's (prompt ids + completion ids, completion incl. EOS).
        processed = trainer.train_dataset
        for i in range(len(processed)):
            row, dpo = processed[i], dpo_rows[i]
            for side in ("chosen", "rejected"):
                labels = row[f"{side}_labels"]
                assert row[f"{side}_input_ids"] == dpo["prompt_ids"] + dpo[f"{side}_ids"], (folder, i, side)
                assert labels == [-100] * len(dpo["prompt_ids"]) + dpo[f"{side}_ids"], (folder, i, side)

        perturb_lora_b(pmodel)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        save_peft_adapter(pmodel, out / "initial_adapter")
        trainer.train()
        save_peft_adapter(pmodel, out / "final_adapter")
        steps = [e for e in trainer.state.log_history if "loss" in e and "step" in e]
        assert [s["step"] for s in steps] == list(range(1, MAX_STEPS + 1)), trainer.state.log_history
        (out / "metrics.json").write_text(json.dumps(steps, indent=1) + "\n")
        (out / "settings.json").write_text(json.dumps(dict(
            versions=dict(trl=trl.__version__, peft=peft.__version__, transformers=transformers.__version__,
                          torch=torch.__version__),
            trainer=trainer_class.__name__, config_non_default=dict(COMMON, **settings),
            same_as="tools/reference_dpo.py: model, tokenizer, data (first 20 pairs in order), LoRA, B perturbation",
            tokenization="every row checked equal to DPOTrainer's (fixtures/trl/tokenized.json)",
            max_grad_norm=args.max_grad_norm, adam=(args.adam_beta1, args.adam_beta2, args.adam_epsilon),
        ), indent=1) + "\n")
        shutil.rmtree(workdir, ignore_errors=True)
        for s in steps:
            print(f"{folder} step {s['step']}: loss {s['loss']:.8f} margins {s['rewards/margins']:.6f} "
                  f"nll {s.get('nll_loss', float('nan')):.6f} grad_norm {s['grad_norm']:.6f}")


if __name__ == "__main__":
    main()
