"""What the TRL reference runs share (tools/reference_dpo.py -> fixtures/trl/, tools/reference_kto.py ->
fixtures/trl-kto/): the tiny Llama of tools/make_fixtures.py rebuilt and checked bit-for-bit against the ONNX
export, its tokenizer, the LoRA config and the B-perturbation that makes step 1 non-trivial, a trainer that records
its batches and step-1 gradients, and the files every run writes.
"""
import contextlib
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

B_SEED = 1234
B_STD = 0.05

LORA = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], bias="none",
            task_type="CAUSAL_LM")

# The TrainingArguments of every reference run besides its trainer's own (beta, loss, batch, steps).
TRAINING_ARGUMENTS = dict(
    learning_rate=1e-3,
    lr_scheduler_type="constant",
    warmup_steps=0,
    weight_decay=0.0,
    gradient_accumulation_steps=1,
    optim="adamw_torch",
    seed=42,
    logging_steps=1,
    report_to=[],
    use_cpu=True,
    bf16=False,                     # KTOConfig's default is True
    fp16=False,
    gradient_checkpointing=False,   # TRL's default is True; numerically irrelevant here, off for clarity
    train_sampling_strategy="sequential",  # dataset order: SequentialSampler instead of RandomSampler
    precompute_ref_log_probs=False,
    save_strategy="no",
    dataloader_num_workers=0,
)


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


def checked_model_and_tokenizer():
    """`quiet_setup_and_tokenizer`, then the model checked against the ONNX export: (model, tokenizer, its config,
    train_tokenizer's info, how many parameters were checked)."""
    tokenizer, tok_config, info = quiet_setup_and_tokenizer()
    model = build_model("llama", info)
    return model, tokenizer, tok_config, info, check_model_against_onnx(model)


def recording(trainer_class):
    """`trainer_class` recording every collated batch and the step-1 gradients (after backward, before clipping)."""

    class Recording(trainer_class):
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

    return Recording


def perturb_lora_b(peft_model):
    """B ~ N(0, B_STD^2), deterministic, in sorted parameter-name order, so step 1 is not the trivial B = 0 step."""
    generator = torch.Generator().manual_seed(B_SEED)
    with torch.no_grad():
        for name, p in sorted(peft_model.named_parameters()):
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * B_STD)


def trainable_values(pmodel):
    return {n: p.detach().clone() for n, p in pmodel.named_parameters() if p.requires_grad}


def set_adapter_values(pmodel, values):
    """The adapter's parameters set to `values` (from `trainable_values`)."""
    with torch.no_grad():
        for n, p in pmodel.named_parameters():
            if n in values:
                p.copy_(values[n])


@contextlib.contextmanager
def adapter_values(pmodel, values):
    """The adapter set to `values` inside the block, restored after it."""
    kept = trainable_values(pmodel)
    set_adapter_values(pmodel, values)
    with torch.no_grad():
        yield
    set_adapter_values(pmodel, kept)


def save_peft_adapter(peft_model, folder):
    """PEFT's save_pretrained into `folder`, without its README, target_modules sorted (PEFT keeps them as a set,
    so its saved order varies between runs)."""
    peft_model.save_pretrained(str(folder))
    (folder / "README.md").unlink(missing_ok=True)
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_steps(trainer, max_steps, out):
    """TRL's log_history, one object per step, to `out`/metrics.json; returns it."""
    steps = [entry for entry in trainer.state.log_history if "loss" in entry and "step" in entry]
    assert [s["step"] for s in steps] == list(range(1, max_steps + 1)), trainer.state.log_history
    (out / "metrics.json").write_text(json.dumps(steps, indent=1) + "\n")
    return steps


def save_step1_gradients(trainer, steps, out):
    """The step-1 gradients (before clipping), checked against the logged step-1 gradient norm."""
    assert trainer.step1_gradients is not None and len(trainer.batches) == len(steps)
    save_file(trainer.step1_gradients, str(out / "step1_gradients.safetensors"))
    grad_norm1 = torch.sqrt(sum((g.double() ** 2).sum() for g in trainer.step1_gradients.values())).item()
    assert abs(grad_norm1 - steps[0]["grad_norm"]) <= 1e-4 * steps[0]["grad_norm"], (grad_norm1, steps[0])


def sequence_logps(model, batch):
    """Plain log_softmax at t-1, summed over completion tokens: the formula in DESIGN.md."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    target = batch["input_ids"][:, 1:]
    per_token = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    mask = batch["completion_mask"][:, 1:].double()
    return (per_token * mask).sum(dim=1)


def common_settings(n_checked, tok_config, trainer_name):
    """settings.json's versions, model, tokenizer and LoRA entries."""
    return dict(
        versions=dict(trl=trl.__version__, peft=peft.__version__, transformers=transformers.__version__,
                      torch=torch.__version__, datasets=datasets.__version__, python=sys.version.split()[0]),
        model=dict(source="tools/make_fixtures.py build_model('llama', ...)",
                   onnx=str((MODEL_DIR / "model.onnx").relative_to(ROOT)),
                   onnx_parameters_checked_bitwise=n_checked, dtype="float32", device="cpu"),
        tokenizer=dict(file="fixtures/models/llama-dynamo/tokenizer.json", **{k: tok_config[k] for k in (
            "bos_token", "eos_token", "pad_token", "padding_side", "model_max_length")}),
        lora=dict(LORA, init_lora_weights=True, use_rslora=False,
                  B_init=f"after get_peft_model: every lora_B ~ N(0, {B_STD}^2) from "
                         f"torch.Generator().manual_seed({B_SEED}), sorted parameter-name order",
                  A_init=f"PEFT default (Kaiming-uniform a=sqrt(5)) under transformers.set_seed(42) inside {trainer_name}"),
        reference_model=f"same model with the LoRA adapter disabled (peft_config given to {trainer_name}; ref_model None)",
    )


def run_reference(trainer_class, config_class, settings, model, tokenizer, data, out):
    """Trains `model` with `trainer_class` (TRL's, recording) and a PEFT LoRA given as `peft_config`, B perturbed,
    on the JSONL file `data`, writing into `out` (emptied first) initial_adapter/, final_adapter/, metrics.json and
    step1_gradients.safetensors. Returns the trainer, its config, the dataset, the initial adapter values and the
    logged steps; the caller removes `args.output_dir`."""
    dataset = datasets.load_dataset("json", data_files=str(data), split="train")
    max_steps = settings["max_steps"]
    assert len(dataset) >= max_steps * settings["per_device_train_batch_size"]
    args = config_class(output_dir=tempfile.mkdtemp(prefix="reference_trl_"), **settings)
    trainer = recording(trainer_class)(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft.LoraConfig(**LORA),
    )
    pmodel = trainer.model
    assert trainer.ref_model is None  # reference = the same model with the adapter disabled
    perturb_lora_b(pmodel)

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_peft_adapter(pmodel, out / "initial_adapter")
    initial = trainable_values(pmodel)

    trainer.train()
    save_peft_adapter(pmodel, out / "final_adapter")
    steps = save_steps(trainer, max_steps, out)
    save_step1_gradients(trainer, steps, out)
    pmodel.eval()
    return trainer, args, dataset, initial, steps


def report_size(out, limit=1_000_000):
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({total} bytes)")
    assert total < limit
