#!/usr/bin/env python3
"""Runs TRL's KTOTrainer + a PEFT LoRA on the tiny Llama fixture and saves the reference numbers that
onnx-dpo's KTO parity test must match (fixtures/trl-kto/).

The same model, tokenizer, LoRA config and B-perturbation as tools/reference_dpo.py (whose helpers this imports):
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
  settings.json      versions and every setting that is not a default
  apo_zero_unpaired/ the same run with loss_type "apo_zero_unpaired" (no KL term; batch 4, 3 steps): metrics.json and
                     final_adapter/ (the initial adapter is the one above: same seeds)

    /work/venv-builder/bin/python tools/reference_kto.py
"""
import json
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import torch
import transformers
from safetensors.torch import save_file

import datasets
import peft
import trl

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_fixtures import build_model, train_tokenizer  # noqa: E402
from reference_dpo import B_SEED, B_STD, LORA, check_model_against_onnx, load_tokenizer, sequence_logps  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "fixtures" / "kto" / "unpaired.jsonl"
OUT = ROOT / "fixtures" / "trl-kto"

MAX_STEPS = 5
BATCH = 4

KTO_SETTINGS = dict(
    beta=0.1,
    loss_type="kto",
    desirable_weight=1.0,
    undesirable_weight=1.25,
    learning_rate=1e-3,
    lr_scheduler_type="constant",
    warmup_steps=0,
    weight_decay=0.0,
    per_device_train_batch_size=BATCH,
    gradient_accumulation_steps=1,
    max_steps=MAX_STEPS,
    optim="adamw_torch",
    seed=42,
    logging_steps=1,
    report_to=[],
    use_cpu=True,
    bf16=False,                     # KTOConfig's default is True
    fp16=False,
    gradient_checkpointing=False,   # KTOConfig's default is True; numerically irrelevant here, off for clarity
    train_sampling_strategy="sequential",  # KTOConfig's default too: the KL pairing needs dataset order
    precompute_ref_log_probs=False,
    save_strategy="no",
    dataloader_num_workers=0,
)


class RecordingKTOTrainer(trl.KTOTrainer):
    """Records every collated batch and the step-1 gradients (after backward, before clipping)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = []
        self.step1_gradients = None

    def training_step(self, model, inputs, *args, **kwargs):
        self.batches.append({k: v.detach().clone() for k, v in inputs.items() if torch.is_tensor(v)})
        loss = super().training_step(model, inputs, *args, **kwargs)
        if self.state.global_step == 0 and self.step1_gradients is None:
            self.step1_gradients = {
                name: p.grad.detach().clone().contiguous()
                for name, p in model.named_parameters()
                if p.requires_grad
            }
        return loss


def train_apo_zero_unpaired(model_factory, tokenizer, dataset, initial):
    """A second, shorter run with the unpaired APO-zero loss, from the same initial adapter; metrics and final adapter."""
    out = OUT / "apo_zero_unpaired"
    out.mkdir(parents=True)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="reference_kto_apo_"))
    settings = dict(KTO_SETTINGS, loss_type="apo_zero_unpaired", max_steps=3)
    trainer = trl.KTOTrainer(model=model_factory(), args=trl.KTOConfig(output_dir=str(workdir), **settings),
                             train_dataset=dataset, processing_class=tokenizer, peft_config=peft.LoraConfig(**LORA))
    pmodel = trainer.model
    with torch.no_grad():
        for name, p in pmodel.named_parameters():
            if name in initial:
                p.copy_(initial[name])
    trainer.train()
    pmodel.save_pretrained(str(out / "final_adapter"))
    (out / "final_adapter" / "README.md").unlink(missing_ok=True)
    config_path = out / "final_adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    steps = [entry for entry in trainer.state.log_history if "loss" in entry and "step" in entry]
    assert [s["step"] for s in steps] == [1, 2, 3], trainer.state.log_history
    (out / "metrics.json").write_text(json.dumps(steps, indent=1) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    for s in steps:
        print(f"apo_zero_unpaired step {s['step']}: loss {s['loss']:.8f} kl {s['kl']} grad_norm {s['grad_norm']:.6f}")
    return settings


def main():
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    logging.getLogger("trl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    tokenizer, tok_config = load_tokenizer()
    fresh, info = train_tokenizer("llama3")
    assert fresh.to_str() == tokenizer.backend_tokenizer.to_str(), "tokenizer.json differs from train_tokenizer"

    model = build_model("llama", info)
    n_checked = check_model_against_onnx(model)

    dataset = datasets.load_dataset("json", data_files=str(DATA), split="train")
    assert len(dataset) >= MAX_STEPS * BATCH

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="reference_kto_"))
    args = trl.KTOConfig(output_dir=str(workdir), **KTO_SETTINGS)
    trainer = RecordingKTOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft.LoraConfig(**LORA),
    )
    pmodel = trainer.model
    assert trainer.ref_model is None  # reference = the same model with the adapter disabled

    generator = torch.Generator().manual_seed(B_SEED)
    with torch.no_grad():
        for name, p in sorted(pmodel.named_parameters()):
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * B_STD)

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    def save_adapter(folder):
        pmodel.save_pretrained(str(OUT / folder))
        (OUT / folder / "README.md").unlink(missing_ok=True)
        config_path = OUT / folder / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["target_modules"] = sorted(config["target_modules"])
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    save_adapter("initial_adapter")
    initial = {n: p.detach().clone() for n, p in pmodel.named_parameters() if p.requires_grad}

    trainer.train()
    save_adapter("final_adapter")

    steps = [entry for entry in trainer.state.log_history if "loss" in entry and "step" in entry]
    assert [s["step"] for s in steps] == list(range(1, MAX_STEPS + 1)), trainer.state.log_history
    (OUT / "metrics.json").write_text(json.dumps(steps, indent=1) + "\n")

    assert trainer.step1_gradients is not None and len(trainer.batches) == MAX_STEPS
    save_file(trainer.step1_gradients, str(OUT / "step1_gradients.safetensors"))
    grad_norm1 = torch.sqrt(sum((g.double() ** 2).sum() for g in trainer.step1_gradients.values())).item()
    assert abs(grad_norm1 - steps[0]["grad_norm"]) <= 1e-4 * steps[0]["grad_norm"], (grad_norm1, steps[0])

    # Reference (adapter off) log-probs per row, of the completion and of the KL completion.
    pmodel.eval()
    ref_rows, step_batches = [], []
    for batch in trainer.batches:
        kl_batch = {k[3:]: v for k, v in batch.items() if k.startswith("KL_")}
        with pmodel.disable_adapter():
            ref = sequence_logps(pmodel, batch)
            ref_kl = sequence_logps(pmodel, kl_batch)
        ref_rows += [dict(completion=ref[i].item(), kl=ref_kl[i].item()) for i in range(len(ref))]
        step_batches.append({k: v.tolist() for k, v in batch.items()})

    # Cross-check TRL's step-1 kl and rewards with the initial adapter.
    trained = {n: p.detach().clone() for n, p in pmodel.named_parameters() if p.requires_grad}
    first = trainer.batches[0]
    with torch.no_grad():
        for n, p in pmodel.named_parameters():
            if n in initial:
                p.copy_(initial[n])
        pol = sequence_logps(pmodel, first)
        pol_kl = sequence_logps(pmodel, {k[3:]: v for k, v in first.items() if k.startswith("KL_")})
        for n, p in pmodel.named_parameters():
            if n in trained:
                p.copy_(trained[n])
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
        versions=dict(trl=trl.__version__, peft=peft.__version__, transformers=transformers.__version__,
                      torch=torch.__version__, datasets=datasets.__version__, python=sys.version.split()[0]),
        model=dict(source="tools/make_fixtures.py build_model('llama', ...)",
                   onnx="fixtures/models/llama-dynamo/model.onnx", onnx_parameters_checked_bitwise=n_checked,
                   dtype="float32", device="cpu"),
        tokenizer=dict(file="fixtures/models/llama-dynamo/tokenizer.json", **{k: tok_config[k] for k in (
            "bos_token", "eos_token", "pad_token", "padding_side", "model_max_length")}),
        data=dict(file="fixtures/kto/unpaired.jsonl", rows_in_file=len(dataset),
                  desirable=sum(dataset["label"]), rows_used=MAX_STEPS * BATCH,
                  order="dataset order (SequentialSampler via train_sampling_strategy='sequential')"),
        lora=dict(LORA, init_lora_weights=True, use_rslora=False,
                  B_init=f"after get_peft_model: every lora_B ~ N(0, {B_STD}^2) from "
                         f"torch.Generator().manual_seed({B_SEED}), sorted parameter-name order",
                  A_init="PEFT default (Kaiming-uniform a=sqrt(5)) under transformers.set_seed(42) inside KTOTrainer"),
        reference_model="same model with the LoRA adapter disabled (peft_config given to KTOTrainer; ref_model None)",
        kto_config_non_default=dict(KTO_SETTINGS),
        kto_config_effective=dict(
            max_grad_norm=args.max_grad_norm, max_length=args.max_length, adam_beta1=args.adam_beta1,
            adam_beta2=args.adam_beta2, adam_epsilon=args.adam_epsilon, disable_dropout=args.disable_dropout,
            pad_to_multiple_of=args.pad_to_multiple_of,
        ),
        grad_norms=[s["grad_norm"] for s in steps],
        clipping_active_at_steps=[s["step"] for s in steps if s["grad_norm"] > args.max_grad_norm],
    )
    settings["apo_zero_unpaired"] = dict(
        kto_config_non_default=train_apo_zero_unpaired(lambda: build_model("llama", info), tokenizer, dataset, initial),
        note="a second trainer from build_model again, its adapter set to initial_adapter before training")
    (OUT / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)

    for s in steps:
        print(f"step {s['step']}: loss {s['loss']:.8f} kl {s['kl']:.6f} margins {s.get('rewards/margins', 0):.6f} "
              f"grad_norm {s['grad_norm']:.6f}")
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({total} bytes)")
    assert total < 1_000_000


if __name__ == "__main__":
    main()
