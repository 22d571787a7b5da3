#!/usr/bin/env python3
"""Writes the safetensors and PEFT-adapter fixtures that Tests/AdaptersTests/PEFTAdapterTests.swift reads
(fixtures/peft/), all with the reference libraries, so that the Swift reader is checked
against files it did not write.

  mixed.safetensors    written by safetensors.torch.save_file with metadata {"format": "pt", "note": "..."}:
                         f32  float32  [2, 3]
                         f16  float16  [5]      (includes a subnormal and a value that rounds)
                         bf16 bfloat16 [2, 2]
                         f64  float64  [3]
                         i64  int64    [3]      (includes a negative value and one above 2^32)
                         i32  int32    [2]
                         empty float32 [0, 4]
  mixed.json           per tensor: dtype, shape and the values as Python floats/ints after decoding
                       (float16/bfloat16/float64 converted to float32 exactly as a reader must)
  llama-dynamo-saved/  PEFT save_pretrained of LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj",
                       "v_proj"], init_lora_weights="gaussian") on the tiny Llama of tools/make_fixtures.py
                       (build_model("llama", ...), seed 0: the model of fixtures/models/llama-dynamo), with lora_B then
                       set to N(0, 0.1^2) from torch.Generator().manual_seed(7) in sorted name order so that B is
                       not all zero. README.md is removed.
  llama-dynamo-saved.npz  the same A and B, keyed "<module path>.A" / "<module path>.B", written with numpy (the
                       values the Swift loader must produce)
  versions.json        the library versions that produced the files

Run from the repository root (CPU only, a few seconds):
    /root/venv-tools/bin/pip install safetensors peft
    /root/venv-tools/bin/python tools/make_safetensors_fixtures.py
Measured with safetensors 0.8.0, peft 0.21.2, torch 2.15, transformers 5.23.
"""
import json
import pathlib
import shutil
import sys
import warnings

import numpy as np
import peft
import safetensors
import torch
import transformers
from safetensors.torch import save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_fixtures import build_model, train_tokenizer  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "peft"
OWN = ["mixed.safetensors", "mixed.json", "llama-dynamo-saved", "llama-dynamo-saved.npz", "versions.json"]

PREFIX = "base_model.model."


def mixed_tensors():
    return {
        "f32": torch.tensor([[1.5, -2.25, 3.0e-8], [float("inf"), -0.0, 1.0e30]], dtype=torch.float32),
        "f16": torch.tensor([0.1, -65504.0, 6.0e-8, 1.0 / 3.0, 2.0], dtype=torch.float16),
        "bf16": torch.tensor([[0.1, -3.0e38], [1.0 / 3.0, 7.0]], dtype=torch.bfloat16),
        "f64": torch.tensor([0.1, -1.0e-300, 123456789.123], dtype=torch.float64),
        "i64": torch.tensor([-3, 0, 2**40 + 5], dtype=torch.int64),
        "i32": torch.tensor([-(2**31), 2**31 - 1], dtype=torch.int32),
        "empty": torch.zeros((0, 4), dtype=torch.float32),
    }


def decoded(tensor):
    """The values a reader must produce: floats as float32, integers as themselves."""
    if tensor.dtype.is_floating_point:
        values = tensor.to(torch.float32).reshape(-1).tolist()
        return [v if np.isfinite(v) else ("inf" if v > 0 else "-inf") for v in values]
    return tensor.reshape(-1).tolist()


def write_mixed():
    tensors = mixed_tensors()
    save_file(tensors, str(OUT / "mixed.safetensors"), metadata={"format": "pt", "note": "mixed dtypes"})
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
             torch.int64: "I64", torch.int32: "I32"}
    expected = {
        name: dict(dtype=names[t.dtype], shape=list(t.shape), values=decoded(t)) for name, t in tensors.items()
    }
    (OUT / "mixed.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


def write_llama_adapter():
    _, info = train_tokenizer("llama3")
    model = build_model("llama", info)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights="gaussian")
    pmodel = peft.get_peft_model(model, config)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in sorted(pmodel.named_parameters()):
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    folder = OUT / "llama-dynamo-saved"
    pmodel.save_pretrained(str(folder))
    (folder / "README.md").unlink(missing_ok=True)

    # The expected values, from PEFT's own state dict (keys without the adapter name).
    state = peft.get_peft_model_state_dict(pmodel)
    arrays = {}
    for key, value in state.items():
        assert key.startswith(PREFIX), key
        for part, letter in ((".lora_A.weight", "A"), (".lora_B.weight", "B")):
            if key.endswith(part):
                arrays[key[len(PREFIX):-len(part)] + "." + letter] = value.detach().to(torch.float32).numpy()
    assert len(arrays) == 8, sorted(arrays)  # 2 layers x (q_proj, v_proj) x (A, B)
    np.savez(OUT / "llama-dynamo-saved.npz", **arrays)


def main():
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    # fixtures/peft/ also holds make_convert_references.py's cases: remove only what this script writes.
    for name in OWN:
        path = OUT / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    OUT.mkdir(parents=True, exist_ok=True)
    write_mixed()
    write_llama_adapter()
    versions = dict(safetensors=safetensors.__version__, peft=peft.__version__, torch=torch.__version__,
                    transformers=transformers.__version__, numpy=np.__version__)
    (OUT / "versions.json").write_text(json.dumps(versions, indent=1, sort_keys=True) + "\n")
    for path in sorted(p for name in OWN for p in [OUT / name, *(OUT / name).rglob("*")]):
        if path.is_file():
            print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
