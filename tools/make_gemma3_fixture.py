#!/usr/bin/env python3
"""Builds fixtures/models/gemma3-torchscript: a tiny Gemma-3 (text) exported with torch's TorchScript exporter,
the export issue 13 names. Its sliding-window layer (window 4 over 12 right-padded tokens) leaves padded query rows
with no key to attend to, so the exported graph computes NaN on those rows: harmless in the forward pass (no
real position reads them), and the case the interpreter's backward must not turn into NaN gradients.

Reuses tools/make_fixtures.py (tokenizer, inputs, export, onnxruntime run); writes the same files beside the
model as every export there (tokenizer, config, inputs.npz, torch_logits.npz; onnxruntime's logits are checked
against torch's here but not saved, for the size budget), but stays out of fixtures.json: the tests that read it
name it. Run from the repository root with the venv make_fixtures.py uses:
    /root/venv-tools/bin/python tools/make_gemma3_fixture.py
"""
import shutil

import numpy as np
import torch
import transformers

import make_fixtures as fx

NAME = "gemma3-torchscript"


def build_model(info):
    """The tiny Gemma-3 (text) this fixture exports, from seed 0 (tools/make_generation_references.py rebuilds it
    with this function)."""
    torch.manual_seed(0)
    config = transformers.Gemma3TextConfig(
        vocab_size=fx.VOCAB_SIZE, hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=128,
        bos_token_id=info["bos_id"], eos_token_id=info["eos_id"], pad_token_id=info["pad_id"],
        attn_implementation="eager", tie_word_embeddings=True,
    )
    model = transformers.Gemma3ForCausalLM(config).eval().to(torch.float32)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            if parameter.dim() == 1:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok, info = fx.train_tokenizer("llama3")
    input_ids, attention_mask = fx.make_inputs(tok, info)
    model = build_model(info)
    wrapper = fx.LogitsOnly(model).eval()
    with torch.no_grad():
        torch_logits = wrapper(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()
    folder = fx.MODELS / NAME
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    path = folder / "model.onnx"
    fx.export(wrapper, (torch.from_numpy(input_ids), torch.from_numpy(attention_mask)), "torchscript", path)
    ort_logits = fx.run_ort(path, input_ids, attention_mask)
    diff = fx.masked_max_diff(torch_logits, ort_logits, attention_mask)
    assert diff < fx.TOLERANCE, f"{NAME}: torch vs onnxruntime max abs diff {diff}"
    padded_nan = np.isnan(ort_logits[attention_mask == 0]).any(axis=-1).mean()
    fx.save_tokenizer(tok, info, folder)
    model.config.to_json_file(str(folder / "config.json"))
    np.savez(folder / "inputs.npz", input_ids=input_ids, attention_mask=attention_mask)
    np.savez(folder / "torch_logits.npz", logits=torch_logits.astype(np.float32))
    proto, opset, _ = fx.describe(path)
    ops, _ = fx.op_types(proto)
    print(f"{NAME}: IR {proto.ir_version} opset {opset} nodes {len(proto.graph.node)} size {fx.du(folder) / 1024:.0f} KiB "
          f"| max|torch-ort| {diff:.2e} at real tokens | padded rows with NaN logits in onnxruntime: {padded_nan:.0%}")
    print("ops not in make_fixtures' list:", sorted(set(ops) - fx.KNOWN_OPS) or "none")
    print(f"fixtures/models/: {fx.du(fx.MODELS) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
