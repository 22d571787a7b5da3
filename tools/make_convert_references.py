#!/usr/bin/env python3
"""Writes the references for `onnx-dpo convert` under fixtures/peft/: PEFT LoRA adapters trained (here: set) on
the original Hugging Face models of the ONNX fixtures, and the logits of PEFT's own `merge_and_unload` of each
one. A converter that applies adapter_model.safetensors to fixtures/models/<fixture>/model.onnx must reproduce
merged_logits.npz; the base logits (fixtures/models/<fixture>/torch_logits.npz) differ from them by far more than any
tolerance, so a converter that does nothing fails.

How each case is built:
  1. The fixture's Hugging Face model is rebuilt exactly as tools/make_fixtures.py builds it (its own
     build_model: torch.manual_seed(0), cls(config), every 1-D parameter + randn*0.1 in sorted name order).
     build_model only takes the bos/eos/pad ids from the tokenizer, so they are read from the fixture's
     config.json instead of retraining the tokenizers. The rebuilt model must reproduce torch_logits.npz to
     1e-5 at real-token positions (attention_mask == 1), else nothing below would mean anything.
  2. peft.get_peft_model(model, LoraConfig(r=4, lora_alpha, target_modules, init_lora_weights=False,
     lora_dropout=0.0, task_type="CAUSAL_LM", use_rslora)) under torch.manual_seed(case seed). Then every
     lora_A and lora_B weight, in sorted parameter-name order, is overwritten with randn * 0.1 drawn from
     torch.Generator().manual_seed(case seed): B non-zero in every row (for GPT-2's fused c_attn that is the
     q, k and v rows alike) and the values independent of how PEFT initialises or how much of the global
     random stream transformers used.
  3. save_pretrained writes adapter_model.safetensors and adapter_config.json, kept exactly as PEFT writes
     them; the README.md model card it also writes is deleted.
  4. Logits of the unmerged PEFT model and of merge_and_unload() on the fixture's inputs.npz must agree to
     1e-5 at real-token positions; the merged ones are saved as merged_logits.npz (key "logits", float32
     [2, T, vocab]), and must differ from the base logits by more than 1e-3 there.
     The saved files alone must give the same: a fresh rebuild of the fixture model with
     PeftModel.from_pretrained(folder) and merge_and_unload() reproduces merged_logits to 1e-5.
  5. reference.json: the fixture and its files, target modules, r, lora_alpha, use_rslora, fan_in_fan_out
     (as PEFT saved it), the scale PEFT used (alpha / r, or alpha / sqrt(r) with rsLoRA), how A and B were
     set, the measured max abs differences, and the torch / transformers / peft / safetensors versions.

Cases (a case whose fixture is missing from fixtures/models/fixtures.json or fixtures/models/ is skipped with the reason):
  llama-dynamo-qv             llama-dynamo       q_proj, v_proj                                alpha 8
  qwen2-torchscript-rslora    qwen2-torchscript  q/k/v/o_proj, gate_proj, down_proj            alpha 16, rsLoRA
  gpt2-torchscript-c_attn     gpt2-torchscript   c_attn (Conv1D [in, 3C]; PEFT sets fan_in_fan_out) alpha 8
  phi3-dynamo-qkv             phi3-dynamo        qkv_proj, o_proj                              alpha 8
  gpt-neox-dynamo-qkv         gpt-neox-dynamo    query_key_value (fused per head)              alpha 8
  bad/dora                    llama-dynamo       q_proj, v_proj with use_dora=True; an adapter convert must
                              reject. Only the adapter files, with PEFT's own init (A, B and the magnitude
                              vector from init_lora_weights=False under the case seed), no logits.

Determinism: torch runs single-threaded; PEFT writes target_modules as list(set(...)), whose order follows
Python's string hashing, so the script re-executes itself with PYTHONHASHSEED=0; and the .npz files are
written like np.savez but with a fixed zip timestamp (np.savez stamps the current time), so that two runs
give byte-identical files.

Run from the repository root (CPU only, a few seconds):
    /root/venv-tools/bin/python tools/make_convert_references.py [--out fixtures/peft]
Measured with torch 2.15, transformers 5.23, peft 0.21.2, safetensors 0.8.0, numpy 2.4.
"""
import argparse
import json
import math
import os
import pathlib
import shutil
import sys
import warnings

if os.environ.get("PYTHONHASHSEED") != "0":
    # Before anything hashes a string: PEFT's adapter_config.json lists target_modules in set order.
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import numpy as np
import peft
import safetensors
import torch
import transformers

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "fixtures" / "models"
sys.path.insert(0, str(ROOT / "tools"))
from fixture_files import write_npz  # noqa: E402
import make_fixtures  # noqa: E402  (its build_model and seeds rebuild the fixtures' torch models)

RANK = 4
B_SCALE = 0.1  # lora_A and lora_B = randn * B_SCALE
REBUILD_TOLERANCE = 1e-5  # rebuilt model vs torch_logits.npz
MERGE_TOLERANCE = 1e-5  # unmerged PEFT model vs merge_and_unload()
MIN_EFFECT = 1e-3  # merged vs base must differ by more than this

CASES = [
    dict(name="llama-dynamo-qv", fixture="llama-dynamo", targets=["q_proj", "v_proj"], alpha=8, seed=101),
    dict(
        name="qwen2-torchscript-rslora", fixture="qwen2-torchscript",
        targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"], alpha=16, rslora=True, seed=102,
    ),
    dict(name="gpt2-torchscript-c_attn", fixture="gpt2-torchscript", targets=["c_attn"], alpha=8, seed=103),
    dict(name="phi3-dynamo-qkv", fixture="phi3-dynamo", targets=["qkv_proj", "o_proj"], alpha=8, seed=104),
    dict(name="gpt-neox-dynamo-qkv", fixture="gpt-neox-dynamo", targets=["query_key_value"], alpha=8, seed=105),
    dict(name="bad/dora", fixture="llama-dynamo", targets=["q_proj", "v_proj"], alpha=8, dora=True, seed=106),
]


def masked_max_diff(a, b, mask):
    return float(np.abs(a - b)[mask.astype(bool)].max())


def logits(model, inputs):
    with torch.no_grad():
        ids, mask = torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"])
        return make_fixtures.LogitsOnly(model).eval()(ids, mask).numpy().astype(np.float32)


def rebuild(entry):
    """The fixture's Hugging Face model, checked against its torch_logits.npz. Returns (model, inputs,
    base logits, max diff)."""
    folder = MODELS / entry["name"]
    config = json.loads((folder / "config.json").read_text())
    info = {k + "_id": config[k + "_token_id"] for k in ("bos", "eos", "pad")}
    model = make_fixtures.build_model(entry["architecture"], info)
    inputs = dict(np.load(folder / "inputs.npz"))
    base = np.load(folder / "torch_logits.npz")["logits"]
    diff = masked_max_diff(logits(model, inputs), base, inputs["attention_mask"])
    assert diff <= REBUILD_TOLERANCE, (
        f"{entry['name']}: rebuilt model differs from torch_logits.npz by {diff}; make_fixtures.build_model "
        f"no longer builds the exported model"
    )
    return model, inputs, base, diff


def make_adapter(model, case):
    """get_peft_model with the case's LoraConfig; unless DoRA, A and B set to randn * B_SCALE."""
    config = peft.LoraConfig(
        r=RANK, lora_alpha=case["alpha"], target_modules=case["targets"], init_lora_weights=False,
        lora_dropout=0.0, task_type="CAUSAL_LM", use_rslora=case.get("rslora", False),
        use_dora=case.get("dora", False),
    )
    torch.manual_seed(case["seed"])
    with warnings.catch_warnings():
        # "fan_in_fan_out is set to False but the target module is `Conv1D`": reported via adapter_config.json.
        warnings.simplefilter("ignore")
        peft_model = peft.get_peft_model(model, config).eval()
    if not case.get("dora"):
        generator = torch.Generator().manual_seed(case["seed"])
        with torch.no_grad():
            for name, parameter in sorted(peft_model.named_parameters()):
                if ".lora_A." in name or ".lora_B." in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * B_SCALE)
    return peft_model


def lora_scale(peft_model, case):
    """The one scale PEFT uses in every adapted module, checked against alpha / r (alpha / sqrt(r))."""
    scales = {
        module.scaling["default"] for module in peft_model.modules() if isinstance(module, peft.tuners.lora.LoraLayer)
    }
    assert len(scales) == 1, scales
    scale = scales.pop()
    expected = case["alpha"] / (math.sqrt(RANK) if case.get("rslora") else RANK)
    assert scale == expected, (scale, expected)
    return scale


def save_adapter(peft_model, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model.save_pretrained(str(folder))
    (folder / "README.md").unlink(missing_ok=True)
    return json.loads((folder / "adapter_config.json").read_text())


def run_case(case, entries, out):
    entry = entries.get(case["fixture"])
    if entry is None or not (MODELS / case["fixture"] / "model.onnx").exists():
        print(f"{case['name']}: SKIPPED: fixture {case['fixture']} is not in fixtures/models/fixtures.json or fixtures/models/")
        return
    folder = out / case["name"]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)

    model, inputs, base, rebuilt_diff = rebuild(entry)
    peft_model = make_adapter(model, case)
    scale = lora_scale(peft_model, case)
    saved = save_adapter(peft_model, folder)
    if case.get("dora"):
        assert saved["use_dora"] is True
        print(f"{case['name']}: fixture {case['fixture']} rebuilt max diff {rebuilt_diff:.1e}; DoRA adapter only "
              f"(scale {scale})")
        return

    mask = inputs["attention_mask"]
    unmerged = logits(peft_model, inputs)
    merged_model = peft_model.merge_and_unload()
    merged = logits(merged_model, inputs)
    merge_diff = masked_max_diff(unmerged, merged, mask)
    effect = masked_max_diff(merged, base, mask)
    assert merge_diff <= MERGE_TOLERANCE, f"{case['name']}: unmerged vs merged max diff {merge_diff}"
    assert effect > MIN_EFFECT, f"{case['name']}: merged vs base max diff only {effect}; the adapter is a no-op"
    write_npz(folder / "merged_logits.npz", logits=merged)

    # What a reader of the committed files gets: the adapter loaded from disk onto a fresh rebuild.
    fresh, _, _, _ = rebuild(entry)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded = peft.PeftModel.from_pretrained(fresh, str(folder)).merge_and_unload()
    reload_diff = masked_max_diff(logits(reloaded, inputs), merged, mask)
    assert reload_diff <= MERGE_TOLERANCE, f"{case['name']}: reloaded adapter vs merged max diff {reload_diff}"

    fixture_folder = f"fixtures/models/{case['fixture']}"
    reference = {
        "fixture": case["fixture"],
        "model": entry["path"],
        "inputs": f"{fixture_folder}/inputs.npz",
        "base_logits": f"{fixture_folder}/torch_logits.npz",
        "merged_logits": "merged_logits.npz",
        "compare_at": "positions where inputs.npz attention_mask == 1",
        "target_modules": case["targets"],
        "r": RANK,
        "lora_alpha": case["alpha"],
        "use_rslora": case.get("rslora", False),
        "fan_in_fan_out": saved["fan_in_fan_out"],
        "scale": scale,
        "init": (
            f"peft.get_peft_model under torch.manual_seed({case['seed']}), then every lora_A and lora_B weight in "
            f"sorted parameter-name order = randn * {B_SCALE} from torch.Generator().manual_seed({case['seed']})"
        ),
        "max_abs_diff": {
            "rebuilt_vs_base": rebuilt_diff,
            "unmerged_vs_merged": merge_diff,
            "merged_vs_base": effect,
            "reloaded_vs_merged": reload_diff,
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "safetensors": safetensors.__version__},
    }
    (folder / "reference.json").write_text(json.dumps(reference, indent=2) + "\n")
    print(f"{case['name']}: fixture {case['fixture']} scale {scale} fan_in_fan_out={saved['fan_in_fan_out']} | "
          f"max|rebuilt-base| {rebuilt_diff:.1e} max|unmerged-merged| {merge_diff:.1e} "
          f"max|reloaded-merged| {reload_diff:.1e} max|merged-base| {effect:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "fixtures" / "peft", help="output folder (fixtures/peft)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    entries = {entry["name"]: entry for entry in json.loads((MODELS / "fixtures.json").read_text())}
    args.out.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        run_case(case, entries, args.out)


if __name__ == "__main__":
    sys.exit(main())
