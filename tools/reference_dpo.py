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

    /root/venv-tools/bin/pip install trl peft
    /root/venv-tools/bin/python tools/reference_dpo.py
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

import numpy as np
import onnx
import onnx.numpy_helper
import torch
import transformers
from safetensors.torch import save_file

import datasets
import peft
import trl

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_fixtures import build_model, train_tokenizer  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "fixtures" / "models" / "llama-dynamo"
DATA = ROOT / "fixtures" / "dpo" / "preferences.jsonl"
OUT = ROOT / "fixtures" / "trl"

B_SEED = 1234
B_STD = 0.05
MAX_STEPS = 5
BATCH = 4

LORA = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], bias="none",
            task_type="CAUSAL_LM")
DPO_SETTINGS = dict(
    beta=0.1,
    loss_type=["sigmoid"],
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
    bf16=False,
    fp16=False,
    gradient_checkpointing=False,   # TRL's default is True; numerically irrelevant here, off for clarity
    train_sampling_strategy="sequential",  # dataset order: SequentialSampler instead of RandomSampler
    precompute_ref_log_probs=False,
    save_strategy="no",
    dataloader_num_workers=0,
)


def check_model_against_onnx(model):
    """Every parameter must equal (bitwise) some initializer of the dynamo export, as is or transposed."""
    proto = onnx.load(str(MODEL_DIR / "model.onnx"), load_external_data=True)
    inits = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer]
    by_shape = {}
    for array in inits:
        if array.dtype == np.float32:
            by_shape.setdefault(array.shape, []).append(array)
    matched = []
    for name, parameter in model.named_parameters():
        value = parameter.detach().numpy()
        candidates = [value] + ([value.T] if value.ndim == 2 else [])
        found = any(
            np.array_equal(c, a) for c in candidates for a in by_shape.get(c.shape, [])
        )
        assert found, f"{name} {tuple(value.shape)} not found among the ONNX initializers"
        matched.append(name)
    q = model.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    print(f"model check: all {len(matched)} parameters are bit-identical to ONNX initializers "
          f"(e.g. layers.0.q_proj.weight^T, sum {q.sum():.6f})")
    return len(matched)


def load_tokenizer():
    config = json.loads((MODEL_DIR / "tokenizer_config.json").read_text())
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(MODEL_DIR / "tokenizer.json"),
        bos_token=config["bos_token"],
        eos_token=config["eos_token"],
        pad_token=config["pad_token"],
        padding_side=config["padding_side"],
        model_max_length=config["model_max_length"],
        clean_up_tokenization_spaces=config["clean_up_tokenization_spaces"],
    )
    return tokenizer, config


class RecordingDPOTrainer(trl.DPOTrainer):
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


def perturb_lora_b(peft_model):
    """B ~ N(0, B_STD^2), deterministic, in sorted parameter-name order, so step 1 is not the trivial log(2) step."""
    generator = torch.Generator().manual_seed(B_SEED)
    with torch.no_grad():
        for name, p in sorted(peft_model.named_parameters()):
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * B_STD)


def save_peft_adapter(peft_model, folder):
    """PEFT's save_pretrained into `folder`, without its README, target_modules sorted (PEFT keeps them as a set,
    so its saved order varies between runs)."""
    peft_model.save_pretrained(str(folder))
    (folder / "README.md").unlink(missing_ok=True)
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def sequence_logps(model, batch):
    """Plain log_softmax at t-1, summed over completion tokens: the formula in DESIGN.md."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    target = batch["input_ids"][:, 1:]
    per_token = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    mask = batch["completion_mask"][:, 1:].double()
    return (per_token * mask).sum(dim=1)


def quiet_setup_and_tokenizer():
    """Threads, quiet libraries, and the tokenizer: the committed file, checked against a fresh
    train_tokenizer("llama3"). Returns (tokenizer, its tokenizer_config.json, train_tokenizer's info)."""
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    logging.getLogger("trl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    tokenizer, tok_config = load_tokenizer()
    fresh, info = train_tokenizer("llama3")
    assert fresh.to_str() == tokenizer.backend_tokenizer.to_str(), "tokenizer.json differs from train_tokenizer"
    assert (info["bos_id"], info["eos_id"], info["pad_id"]) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    return tokenizer, tok_config, info


def main():
    tokenizer, tok_config, info = quiet_setup_and_tokenizer()

    model = build_model("llama", info)
    n_checked = check_model_against_onnx(model)

    dataset = datasets.load_dataset("json", data_files=str(DATA), split="train")
    assert len(dataset) >= MAX_STEPS * BATCH

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="reference_dpo_"))
    args = trl.DPOConfig(output_dir=str(workdir), **DPO_SETTINGS)
    trainer = RecordingDPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft.LoraConfig(**LORA),
    )
    pmodel = trainer.model
    assert trainer.ref_model is None  # reference = the same model with the adapter disabled

    perturb_lora_b(pmodel)

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    def save_adapter(folder):
        save_peft_adapter(pmodel, OUT / folder)

    save_adapter("initial_adapter")
    initial = {n: p.detach().clone() for n, p in pmodel.named_parameters() if p.requires_grad}

    trainer.train()
    save_adapter("final_adapter")

    # Metrics, one object per step.
    steps = [entry for entry in trainer.state.log_history if "loss" in entry and "step" in entry]
    assert [s["step"] for s in steps] == list(range(1, MAX_STEPS + 1)), trainer.state.log_history
    (OUT / "metrics.json").write_text(json.dumps(steps, indent=1) + "\n")

    # Step-1 gradients, before clipping.
    assert trainer.step1_gradients is not None and len(trainer.batches) == MAX_STEPS
    save_file(trainer.step1_gradients, str(OUT / "step1_gradients.safetensors"))
    grad_norm1 = torch.sqrt(sum((g.double() ** 2).sum() for g in trainer.step1_gradients.values())).item()
    assert abs(grad_norm1 - steps[0]["grad_norm"]) <= 1e-4 * steps[0]["grad_norm"], (grad_norm1, steps[0])

    # Reference (adapter off) log-probs per pair, recomputed from the recorded batches with a plain log_softmax;
    # checked against TRL's logged rewards at step 1 (policy there = initial adapter).
    pmodel.eval()
    ref_pairs, step_batches = [], []
    for step, batch in enumerate(trainer.batches):
        with pmodel.disable_adapter():
            ref = sequence_logps(pmodel, batch)
        n = batch["input_ids"].shape[0] // 2
        ref_pairs += [dict(chosen=ref[i].item(), rejected=ref[n + i].item()) for i in range(n)]
        step_batches.append({k: v.tolist() for k, v in batch.items()})
    # Step-1 policy with the initial adapter, to cross-check TRL's step-1 rewards.
    trained = {n: p.detach().clone() for n, p in pmodel.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for n, p in pmodel.named_parameters():
            if n in initial:
                p.copy_(initial[n])
        pol = sequence_logps(pmodel, trainer.batches[0])
        for n, p in pmodel.named_parameters():
            if n in trained:
                p.copy_(trained[n])
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
        versions=dict(trl=trl.__version__, peft=peft.__version__, transformers=transformers.__version__,
                      torch=torch.__version__, datasets=datasets.__version__, python=sys.version.split()[0]),
        model=dict(source="tools/make_fixtures.py build_model('llama', ...)", onnx=str((MODEL_DIR / "model.onnx").relative_to(ROOT)),
                   onnx_parameters_checked_bitwise=n_checked, dtype="float32", device="cpu"),
        tokenizer=dict(file="fixtures/models/llama-dynamo/tokenizer.json", **{k: tok_config[k] for k in (
            "bos_token", "eos_token", "pad_token", "padding_side", "model_max_length")}),
        data=dict(file="fixtures/dpo/preferences.jsonl", pairs_in_file=len(dataset),
                  pairs_used=MAX_STEPS * BATCH, order="dataset order (SequentialSampler via "
                  "train_sampling_strategy='sequential')"),
        lora=dict(LORA, init_lora_weights=True, use_rslora=False,
                  B_init=f"after get_peft_model: every lora_B ~ N(0, {B_STD}^2) from "
                         f"torch.Generator().manual_seed({B_SEED}), sorted parameter-name order",
                  A_init="PEFT default (Kaiming-uniform a=sqrt(5)) under transformers.set_seed(42) inside DPOTrainer"),
        reference_model="same model with the LoRA adapter disabled (peft_config given to DPOTrainer; ref_model None)",
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
    shutil.rmtree(workdir, ignore_errors=True)

    for s in steps:
        print(f"step {s['step']}: loss {s['loss']:.8f} margins {s['rewards/margins']:.6f} "
              f"acc {s['rewards/accuracies']:.2f} grad_norm {s['grad_norm']:.6f}")
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({total} bytes)")
    assert total < 1_000_000


if __name__ == "__main__":
    main()
