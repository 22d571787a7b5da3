#!/usr/bin/env python3
"""Runs TRL's DPOTrainer + a PEFT LoRA on the tiny Llama fixture and saves the reference numbers that
onnx-dpo's TRL parity test must match (fixtures/trl/).

Model: the tiny Llama of tools/make_fixtures.py (build_model("llama", ...), seed 0), rebuilt here and checked
bit-for-bit against every initializer of fixtures/models/llama-dynamo/model.onnx before training.
Tokenizer: fixtures/models/llama-dynamo/tokenizer.json through transformers.PreTrainedTokenizerFast, with the
bos/eos/pad tokens of fixtures/models/llama-dynamo/tokenizer_config.json (<s>, </s>, </s>).
Data: fixtures/dpo/preferences.jsonl (explicit prompt, plain strings). Dataset order: the training sampler is
SequentialSampler (TrainingArguments.train_sampling_strategy="sequential"), so the 5 steps of batch 4 see
pairs 0-3, 4-7, ..., 16-19.

LoRA: LoraConfig(r=8, lora_alpha=16, lora_dropout=0, target_modules=["q_proj", "v_proj"], bias="none"), given
to DPOTrainer as `peft_config` so that the reference model is the base model with the adapter disabled (as in
onnx-dpo). PEFT's default init (A Kaiming-uniform under set_seed(42), B = 0) is followed by B ~ N(0, B_STD^2)
drawn here from torch.Generator().manual_seed(B_SEED) in sorted parameter-name order, so step 1 is not the
trivial log(2) step. (Passing an already-wrapped PeftModel instead would make TRL copy that adapter into a
"ref" adapter and use it as the reference; that is NOT what this fixture does.)

Writes, into fixtures/trl/:
  initial_adapter/   PEFT save_pretrained before training (adapter_model.safetensors, adapter_config.json)
  final_adapter/     PEFT save_pretrained after 5 steps
  metrics.json       TRL's log_history, one object per step (loss, rewards/*, logps/*, logits/*, grad_norm, ...)
  step1_gradients.safetensors   d loss / d LoRA A and B at step 1, before clipping (PEFT parameter names)
  tokenized.json     per pair: prompt/chosen/rejected ids from TRL's processed dataset; per step: the collated
                     batch (input_ids, attention_mask, completion_mask) the model was fed; per pair: reference
                     (adapter-off) log-probs recomputed here with a plain log_softmax
  settings.json      versions and every setting that is not a default

What every TRL reference run shares (model, tokenizer, LoRA, B-perturbation, recording) is in tools/reference_trl.py.

    /root/venv-tools/bin/pip install trl peft
    /root/venv-tools/bin/python tools/reference_dpo.py
"""
import json
import pathlib
import shutil
import sys

import torch
import trl

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from reference_trl import (  # noqa: E402
    ROOT, TRAINING_ARGUMENTS, adapter_values, checked_model_and_tokenizer, common_settings, report_size,
    run_reference, sequence_logps,
)

DATA = ROOT / "fixtures" / "dpo" / "preferences.jsonl"
OUT = ROOT / "fixtures" / "trl"

MAX_STEPS = 5
BATCH = 4

DPO_SETTINGS = dict(beta=0.1, loss_type=["sigmoid"], per_device_train_batch_size=BATCH, max_steps=MAX_STEPS,
                    **TRAINING_ARGUMENTS)


def main():
    model, tokenizer, tok_config, _, n_checked = checked_model_and_tokenizer()

    trainer, args, dataset, initial, steps = run_reference(
        trl.DPOTrainer, trl.DPOConfig, DPO_SETTINGS, model, tokenizer, DATA, OUT)
    pmodel = trainer.model

    # Reference (adapter off) log-probs per pair, recomputed from the recorded batches with a plain log_softmax;
    # checked against TRL's logged rewards at step 1 (policy there = initial adapter).
    ref_pairs, step_batches = [], []
    for step, batch in enumerate(trainer.batches):
        with pmodel.disable_adapter():
            ref = sequence_logps(pmodel, batch)
        n = batch["input_ids"].shape[0] // 2
        ref_pairs += [dict(chosen=ref[i].item(), rejected=ref[n + i].item()) for i in range(n)]
        step_batches.append({k: v.tolist() for k, v in batch.items()})
    # Step-1 policy with the initial adapter, to cross-check TRL's step-1 rewards.
    with adapter_values(pmodel, initial):
        pol = sequence_logps(pmodel, trainer.batches[0])
    ref0 = torch.tensor([[r["chosen"], r["rejected"]] for r in ref_pairs[:BATCH]], dtype=torch.float64)
    rc = 0.1 * (pol[:BATCH] - ref0[:, 0]).mean().item()
    rr = 0.1 * (pol[BATCH:] - ref0[:, 1]).mean().item()
    print(f"cross-check step 1: rewards/chosen {rc:.8f} (TRL {steps[0]['rewards/chosen']:.8f}), "
          f"rewards/rejected {rr:.8f} (TRL {steps[0]['rewards/rejected']:.8f})")
    assert abs(rc - steps[0]["rewards/chosen"]) < 1e-5 and abs(rr - steps[0]["rewards/rejected"]) < 1e-5

    processed = trainer.train_dataset
    pairs = []
    for i in range(len(processed)):
        row = processed[i]
        raw = dataset[i]
        pairs.append(dict(
            index=i,
            used_in_step=(i // BATCH + 1) if i < MAX_STEPS * BATCH else None,
            prompt=raw["prompt"], chosen=raw["chosen"], rejected=raw["rejected"],
            prompt_ids=row["prompt_ids"], chosen_ids=row["chosen_ids"], rejected_ids=row["rejected_ids"],
            # what the collator builds: prompt_ids + completion_ids, mask 0 on the prompt, 1 on the completion
            chosen_completion_mask=[0] * len(row["prompt_ids"]) + [1] * len(row["chosen_ids"]),
            rejected_completion_mask=[0] * len(row["prompt_ids"]) + [1] * len(row["rejected_ids"]),
            prompt_alone_ids=tokenizer(raw["prompt"])["input_ids"],
            reference_logps=ref_pairs[i] if i < len(ref_pairs) else None,
        ))
    tokenized = dict(
        note=("pairs[i].prompt_ids/chosen_ids/rejected_ids are TRL's processed dataset columns (EOS text appended "
              "to chosen/rejected, prompt+completion tokenised as one string, prompt_ids = common prefix of the "
              "prompt-alone ids and both prompt+completion ids). batches[s] is the collated batch of step s+1: rows "
              "0..3 = prompt+chosen, rows 4..7 = prompt+rejected, right padded with pad_token_id, attention_mask 0 "
              "on pads, completion_mask 1 on completion tokens (incl. EOS). reference_logps: adapter-off sums of "
              "log_softmax(logits[t-1])[id_t] over completion tokens, float64 accumulate of float32 logits."),
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pairs=pairs,
        batches=step_batches,
    )
    (OUT / "tokenized.json").write_text(json.dumps(tokenized, ensure_ascii=False, separators=(",", ":")) + "\n")

    settings = dict(
        common_settings(n_checked, tok_config, "DPOTrainer"),
        data=dict(file="fixtures/dpo/preferences.jsonl", pairs_in_file=len(dataset),
                  pairs_used=MAX_STEPS * BATCH, order="dataset order (SequentialSampler via "
                  "train_sampling_strategy='sequential')"),
        dpo_config_non_default={k: v for k, v in DPO_SETTINGS.items()},
        dpo_config_effective=dict(
            max_grad_norm=args.max_grad_norm, max_length=args.max_length, truncation_mode=args.truncation_mode,
            adam_beta1=args.adam_beta1, adam_beta2=args.adam_beta2, adam_epsilon=args.adam_epsilon,
            label_smoothing=args.label_smoothing, disable_dropout=args.disable_dropout,
            pad_to_multiple_of=args.pad_to_multiple_of, f_divergence_type=str(args.f_divergence_type),
            use_weighting=args.use_weighting, ld_alpha=args.ld_alpha,
        ),
        grad_norms=[s["grad_norm"] for s in steps],
        clipping_active_at_steps=[s["step"] for s in steps if s["grad_norm"] > args.max_grad_norm],
    )
    (OUT / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    shutil.rmtree(args.output_dir, ignore_errors=True)

    for s in steps:
        print(f"step {s['step']}: loss {s['loss']:.8f} margins {s['rewards/margins']:.6f} "
              f"acc {s['rewards/accuracies']:.2f} grad_norm {s['grad_norm']:.6f}")
    report_size(OUT)


if __name__ == "__main__":
    main()
