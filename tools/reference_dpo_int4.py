#!/usr/bin/env python3
"""TRL + PEFT reference for DPO on an int4 base (issue 9): tools/reference_dpo.py's run (TRL's DPOTrainer, PEFT LoRA
r 8 / alpha 16 on q_proj and v_proj, B perturbed, beta 0.1, sigmoid, AdamW lr 1e-3 constant, batch 4, 5 steps in
dataset order on fixtures/dpo/preferences.jsonl), on the Hugging Face Llama whose weights are the dequantised int4
weights of fixtures/builder/llama-int4 (tools/dequantize_builder_int4.py: every MatMulNBits weight, and the tied
embedding read through GatherBlockQuantized; logits checked against onnxruntime's on the int4 file first).

onnx-dpo trains on the int4 file itself (frozen MatMulNBits base, fp32 adapter; q and v are separate modules on the
builder's packed qkv projection) and must give the same numbers: Tests/TrainingTests/TRLParityTests.swift.

Writes fixtures/trl-int4/: initial_adapter/, final_adapter/ (PEFT save_pretrained), metrics.json (TRL's log_history
per step), step1_gradients.safetensors, settings.json.

    /work/venv-builder/bin/python tools/reference_dpo_int4.py
"""
import json
import pathlib
import shutil
import sys

import trl

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from dequantize_builder_int4 import check_logits, dequantized_model  # noqa: E402
from reference_dpo import DPO_SETTINGS  # noqa: E402
from reference_trl import (  # noqa: E402
    ROOT, common_settings, quiet_setup_and_tokenizer, report_size, run_reference,
)

BUILDER = ROOT / "fixtures" / "builder" / "llama-int4"
DATA = ROOT / "fixtures" / "dpo" / "preferences.jsonl"
OUT = ROOT / "fixtures" / "trl-int4"


def main():
    tokenizer, tok_config, _ = quiet_setup_and_tokenizer()
    assert (BUILDER / "tokenizer.json").read_bytes() == (ROOT / "fixtures/models/llama-dynamo/tokenizer.json").read_bytes()
    model, replaced, checked = dequantized_model(BUILDER, "llama")
    difference = check_logits(model, BUILDER)
    print(f"dequantised model: {replaced} weights from int4, {checked} float32 parameters equal to the file's, "
          f"logits vs onnxruntime on the int4 file {difference:.2e}")

    trainer, args, dataset, _, steps = run_reference(
        trl.DPOTrainer, trl.DPOConfig, DPO_SETTINGS, model, tokenizer, DATA, OUT)
    settings = common_settings(checked, tok_config, "DPOTrainer")
    settings["model"] = dict(
        source="tools/dequantize_builder_int4.py: make_fixtures build_model('llama', ...) with every MatMulNBits "
               "weight of fixtures/builder/llama-int4/model.onnx dequantised (q/k/v split from the packed qkv_proj; "
               "the tied embedding = the dequantised lm_head)",
        onnx=str((BUILDER / "model.onnx").relative_to(ROOT)), weights_dequantised=replaced,
        float32_parameters_checked_bitwise=checked, logits_vs_onnxruntime_accuracy_level_0=difference,
        dtype="float32", device="cpu")
    settings["data"] = dict(file="fixtures/dpo/preferences.jsonl", pairs_used=len(steps) * DPO_SETTINGS["per_device_train_batch_size"],
                            order="dataset order")
    settings["dpo_config_non_default"] = dict(DPO_SETTINGS)
    settings["grad_norms"] = [s["grad_norm"] for s in steps]
    (OUT / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    shutil.rmtree(args.output_dir, ignore_errors=True)
    for s in steps:
        print(f"step {s['step']}: loss {s['loss']:.8f} margins {s['rewards/margins']:.6f} grad_norm {s['grad_norm']:.6f}")
    report_size(OUT, limit=200_000)


if __name__ == "__main__":
    main()
