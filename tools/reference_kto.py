#!/usr/bin/env python3
"""Runs TRL's KTOTrainer + a PEFT LoRA on the tiny Llama fixture and saves the reference numbers that
onnx-dpo's KTO parity test must match (fixtures/trl-kto/).

The same model, tokenizer, LoRA config and B-perturbation as tools/reference_dpo.py (tools/reference_trl.py):
the tiny Llama rebuilt and checked bit-for-bit against fixtures/models/llama-dynamo/model.onnx, LoraConfig(r=8,
lora_alpha=16, q_proj/v_proj) given to KTOTrainer as `peft_config` (reference = base model, adapter disabled),
then every lora_B ~ N(0, 0.05^2) so step 1 is not trivial.

Data: fixtures/kto/unpaired.jsonl, unpaired rows {"prompt", "completion", "label"} derived from
fixtures/dpo/preferences.jsonl (each pair's chosen as desirable; the rejected of two pairs out of three as
undesirable: 24 desirable, 16 undesirable, interleaved so every batch holds both labels). SequentialSampler (KTO
needs it: TRL builds each row's KL completion from its neighbour in dataset order), batch 4, 5 steps, loss "kto",
beta 0.1, desirable_weight 1.0, undesirable_weight 1.25 (inside TRL's recommended range for 24:16).

Writes, into fixtures/trl-kto/:
  initial_adapter/   PEFT save_pretrained before training
  final_adapter/     PEFT save_pretrained after 5 steps
  metrics.json       TRL's log_history, one object per step (loss, kl, rewards/*, logps/*, logits/*, grad_norm, ...)
  step1_gradients.safetensors   d loss / d LoRA A and B at step 1, before clipping (PEFT parameter names)
  tokenized.json     per row: prompt_ids, completion_ids, KL_completion_ids, label (TRL's processed dataset); per
                     step: the collated batch; per row: reference (adapter-off) log-probs of the completion and of
                     the KL completion, recomputed here with a plain log_softmax
  eval_metrics.json  KTOTrainer.evaluate of the final adapter on fixtures/kto/eval.jsonl (eval batch 4)
  unpaired_from_pairs.json  TRL's processed rows when KTOTrainer is given fixtures/dpo/preferences.jsonl (pairs)
  settings.json      versions and every setting that is not a default
  apo_zero_unpaired/ the same run with loss_type "apo_zero_unpaired" (no KL term; batch 4, 3 steps): metrics.json and
                     final_adapter/ (the initial adapter is the one above)
  grad_accum/        the kto run with micro-batches of 2 rows, 2 per step, 3 steps: metrics.json and final_adapter/

    /work/venv-builder/bin/python tools/reference_kto.py
"""
import json
import pathlib
import shutil
import sys
import tempfile

import datasets
import peft
import torch
import trl

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_fixtures import build_model  # noqa: E402
from reference_trl import (  # noqa: E402
    LORA, ROOT, TRAINING_ARGUMENTS, adapter_values, checked_model_and_tokenizer, common_settings, report_size,
    run_reference, save_peft_adapter, save_steps, sequence_logps, set_adapter_values, trainable_values,
)

DATA = ROOT / "fixtures" / "kto" / "unpaired.jsonl"
EVAL_DATA = ROOT / "fixtures" / "kto" / "eval.jsonl"
PAIRS = ROOT / "fixtures" / "dpo" / "preferences.jsonl"
OUT = ROOT / "fixtures" / "trl-kto"

MAX_STEPS = 5
BATCH = 4

# KTOConfig's own defaults differ from DPOConfig's (bf16, gradient checkpointing): TRAINING_ARGUMENTS sets both.
KTO_SETTINGS = dict(beta=0.1, loss_type="kto", desirable_weight=1.0, undesirable_weight=1.25,
                    per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH, max_steps=MAX_STEPS,
                    **TRAINING_ARGUMENTS)


# Shorter runs from the same initial adapter, each in OUT/<name>/ (metrics.json, final_adapter/): the unpaired APO-zero
# loss (no KL term), and micro-batches of 2 rows accumulated over 2 (KL completions rotated within blocks of 2; a
# micro-batch with desirable rows only, whose missing metrics TRL averages over the other micro-batch).
VARIANTS = {
    "apo_zero_unpaired": dict(loss_type="apo_zero_unpaired", max_steps=3),
    "grad_accum": dict(per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=3),
}


def train_variant(name, model, tokenizer, dataset, initial):
    out = OUT / name
    out.mkdir(parents=True)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"reference_kto_{name}_"))
    settings = dict(KTO_SETTINGS, **VARIANTS[name])
    trainer = trl.KTOTrainer(model=model, args=trl.KTOConfig(output_dir=str(workdir), **settings),
                             train_dataset=dataset, processing_class=tokenizer, peft_config=peft.LoraConfig(**LORA))
    assert trainable_values(trainer.model).keys() == initial.keys()
    set_adapter_values(trainer.model, initial)
    trainer.train()
    save_peft_adapter(trainer.model, out / "final_adapter")
    steps = save_steps(trainer, settings["max_steps"], out)
    shutil.rmtree(workdir, ignore_errors=True)
    for s in steps:
        print(f"{name} step {s['step']}: loss {s['loss']:.8f} kl {s['kl']} grad_norm {s['grad_norm']:.6f} "
              f"rewards/rejected {s.get('rewards/rejected')}")
    return settings


def unpaired_from_pairs(model, tokenizer):
    """TRL's processed dataset when KTOTrainer is given preference pairs (fixtures/dpo/preferences.jsonl): unpaired,
    EOS appended, tokenised, KL completions rotated within blocks of BATCH rows."""
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="reference_kto_pairs_"))
    trainer = trl.KTOTrainer(model=model, args=trl.KTOConfig(output_dir=str(workdir), **KTO_SETTINGS),
                             train_dataset=datasets.load_dataset("json", data_files=str(PAIRS), split="train"),
                             processing_class=tokenizer, peft_config=peft.LoraConfig(**LORA))
    processed = trainer.train_dataset
    rows = [dict(label=bool(row["label"]), prompt_ids=row["prompt_ids"], completion_ids=row["completion_ids"],
                 KL_completion_ids=row["KL_completion_ids"]) for row in processed]
    (OUT / "unpaired_from_pairs.json").write_text(
        json.dumps(dict(data="fixtures/dpo/preferences.jsonl", rows=rows), separators=(",", ":")) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)


def main():
    model, tokenizer, tok_config, info, n_checked = checked_model_and_tokenizer()

    trainer, args, dataset, initial, steps = run_reference(
        trl.KTOTrainer, trl.KTOConfig, KTO_SETTINGS, model, tokenizer, DATA, OUT)
    pmodel = trainer.model

    # The final adapter on the eval rows (14: batches of 4, 4, 4 and 2), as KTOTrainer.evaluate averages them.
    trainer.evaluate(eval_dataset=datasets.load_dataset("json", data_files=str(EVAL_DATA), split="train"))
    # Without the timings, so that the file regenerates identically.
    evaluation = {k: v for k, v in trainer.state.log_history[-1].items() if "runtime" not in k and "per_second" not in k}
    assert "eval_kl" in evaluation and "eval_loss" in evaluation, evaluation
    (OUT / "eval_metrics.json").write_text(json.dumps(evaluation, indent=1) + "\n")
    # Reference (adapter off) log-probs per row, of the completion and of the KL completion.
    ref_rows, step_batches = [], []
    for batch in trainer.batches:
        kl_batch = {k[3:]: v for k, v in batch.items() if k.startswith("KL_")}
        with pmodel.disable_adapter():
            ref = sequence_logps(pmodel, batch)
            ref_kl = sequence_logps(pmodel, kl_batch)
        ref_rows += [dict(completion=ref[i].item(), kl=ref_kl[i].item()) for i in range(len(ref))]
        step_batches.append({k: v.tolist() for k, v in batch.items()})

    # Cross-check TRL's step-1 kl and rewards with the initial adapter.
    first = trainer.batches[0]
    with adapter_values(pmodel, initial):
        pol = sequence_logps(pmodel, first)
        pol_kl = sequence_logps(pmodel, {k[3:]: v for k, v in first.items() if k.startswith("KL_")})
    ref0 = torch.tensor([r["completion"] for r in ref_rows[:BATCH]], dtype=torch.float64)
    ref0_kl = torch.tensor([r["kl"] for r in ref_rows[:BATCH]], dtype=torch.float64)
    labels = first["label"].bool()
    kl = max((pol_kl - ref0_kl).mean().item(), 0.0)
    rc = 0.1 * (pol - ref0)[labels].mean().item()
    rr = 0.1 * (pol - ref0)[~labels].mean().item()
    print(f"cross-check step 1: kl {kl:.8f} (TRL {steps[0]['kl']:.8f}), rewards/chosen {rc:.8f} "
          f"(TRL {steps[0]['rewards/chosen']:.8f}), rewards/rejected {rr:.8f} (TRL {steps[0]['rewards/rejected']:.8f})")
    assert abs(kl - steps[0]["kl"]) < 1e-5
    assert abs(rc - steps[0]["rewards/chosen"]) < 1e-5 and abs(rr - steps[0]["rewards/rejected"]) < 1e-5

    processed = trainer.train_dataset
    rows = []
    for i in range(len(processed)):
        row = processed[i]
        raw = dataset[i]
        rows.append(dict(
            index=i,
            used_in_step=(i // BATCH + 1) if i < MAX_STEPS * BATCH else None,
            prompt=raw["prompt"], completion=raw["completion"], label=bool(row["label"]),
            prompt_ids=row["prompt_ids"], completion_ids=row["completion_ids"],
            KL_completion_ids=row["KL_completion_ids"],
            reference_logps=ref_rows[i] if i < len(ref_rows) else None,
        ))
    tokenized = dict(
        note=("rows[i].prompt_ids/completion_ids/KL_completion_ids/label are TRL's processed dataset columns (EOS "
              "text appended to the completion, prompt+completion tokenised as one string, prompt_ids = common prefix "
              "of the prompt-alone and prompt+completion ids; KL_completion_ids: the completion ids rotated by +1 "
              "within each block of per_device_train_batch_size rows). batches[s] is the collated batch of step s+1. "
              "reference_logps: adapter-off sums of log_softmax(logits[t-1])[id_t] over the completion tokens and "
              "over the KL completion tokens."),
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        rows=rows,
        batches=step_batches,
    )
    (OUT / "tokenized.json").write_text(json.dumps(tokenized, ensure_ascii=False, separators=(",", ":")) + "\n")

    settings = dict(
        common_settings(n_checked, tok_config, "KTOTrainer"),
        data=dict(file="fixtures/kto/unpaired.jsonl", rows_in_file=len(dataset),
                  desirable=sum(dataset["label"]), rows_used=MAX_STEPS * BATCH,
                  order="dataset order (SequentialSampler via train_sampling_strategy='sequential')"),
        kto_config_non_default=dict(KTO_SETTINGS),
        kto_config_effective=dict(
            max_grad_norm=args.max_grad_norm, max_length=args.max_length, adam_beta1=args.adam_beta1,
            adam_beta2=args.adam_beta2, adam_epsilon=args.adam_epsilon, disable_dropout=args.disable_dropout,
            pad_to_multiple_of=args.pad_to_multiple_of,
        ),
        grad_norms=[s["grad_norm"] for s in steps],
        clipping_active_at_steps=[s["step"] for s in steps if s["grad_norm"] > args.max_grad_norm],
    )
    for name in VARIANTS:
        settings[name] = dict(
            kto_config_non_default=train_variant(name, build_model("llama", info), tokenizer, dataset, initial),
            note="another trainer from build_model again, its adapter set to initial_adapter before training")
    unpaired_from_pairs(build_model("llama", info), tokenizer)
    (OUT / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    shutil.rmtree(args.output_dir, ignore_errors=True)

    for s in steps:
        print(f"step {s['step']}: loss {s['loss']:.8f} kl {s['kl']:.6f} margins {s.get('rewards/margins', 0):.6f} "
              f"grad_norm {s['grad_norm']:.6f}")
    report_size(OUT)


if __name__ == "__main__":
    main()
