#!/usr/bin/env python3
"""The Hugging Face model whose weights are an onnxruntime-genai builder int4 file's dequantised weights (issue 9's
int4 TRL parity): every com.microsoft.MatMulNBits weight, and the tied embedding the file reads through
GatherBlockQuantized from the lm_head's int4 weight, dequantised back into the HF state dict.

  python tools/dequantize_builder_int4.py fixtures/builder/llama-int4 [--arch llama]

rebuilds tools/make_fixtures.py's tiny model (`build_model(arch, ...)`, the model the builder fixture was made from by
tools/make_builder_fixtures.py), replaces its linear weights by the dequantised int4 weights, checks that every
other parameter (norm weights, Qwen2's q/k/v biases) equals the ONNX file's float32 initializer, and checks the model's
logits on the folder's inputs.npz against its ort_logits.npz (onnxruntime, MatMulNBits at accuracy_level 0).

Dequantisation, as onnxruntime's MatMulNBits defines it (ContribOperators.md): B uint8 [N, n_blocks, blob] holds row n's
K values in blocks of block_size, 4-bit values low nibble first; w = (q - zero_point) * scale with the default zero
point 2^(bits-1) (8) when the node has none, or the packed uint8 / float zero points it has. Builder node names give
the module: /model/layers.N/attn/qkv_proj/MatMul_Q4 (rows q, then k, then v: split into self_attn.q_proj, k_proj,
v_proj), attn/o_proj, mlp/{gate,up,down}_proj, /lm_head/MatMul_Q4.
"""
import argparse
import json
import pathlib
import re
import sys

import numpy as np
import onnx
import onnx.numpy_helper

ROOT = pathlib.Path(__file__).resolve().parent.parent  # torch is imported where it is used: the interop tests
                                                        # read dequantize_matmul_nbits without it
sys.path.insert(0, str(ROOT / "tools"))


def dequantize_matmul_nbits(node, arrays):
    """W [N, K] float32 of a MatMulNBits node."""
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    bits, block, k, n = attributes.get("bits", 4), attributes["block_size"], attributes["K"], attributes["N"]
    packed = arrays[node.input[1]].reshape(n, -1)
    scales = arrays[node.input[2]].astype(np.float32).reshape(n, -1)
    blocks = scales.shape[1]
    if bits == 4:
        q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, -1)
    elif bits == 8:
        q = packed
    else:
        raise ValueError(f"{node.name}: bits {bits}")
    q = q.reshape(n, blocks, block).astype(np.float32)
    zero = np.full((n, blocks), 2 ** (bits - 1), dtype=np.float32)
    if len(node.input) > 3 and node.input[3]:
        zp = arrays[node.input[3]]
        if zp.dtype == np.uint8:
            zp = zp.reshape(n, -1)
            if bits == 4:
                zp = np.stack([zp & 0x0F, zp >> 4], axis=-1).reshape(n, -1)
            zero = zp[:, :blocks].astype(np.float32)
        else:
            zero = zp.astype(np.float32).reshape(n, blocks)
    weight = (q - zero[:, :, None]) * scales[:, :, None]
    return weight.reshape(n, blocks * block)[:, :k]


def dequantized_weights(folder):
    """{HF parameter name: float32 array} for every quantised weight of the builder file in `folder`."""
    model = onnx.load(str(folder / "model.onnx"), load_external_data=True)
    arrays = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    q_width = decoder["num_attention_heads"] * decoder["head_size"]
    kv_width = decoder["num_key_value_heads"] * decoder["head_size"]
    weights = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        weight = dequantize_matmul_nbits(node, arrays)
        if node.name == "/lm_head/MatMul_Q4":
            weights["lm_head.weight"] = weight
            continue
        match = re.fullmatch(r"/model/layers\.(\d+)/(attn|mlp)/(\w+)/MatMul_Q4", node.name)
        if not match:
            raise ValueError(f"unexpected MatMulNBits node {node.name}")
        layer, block, projection = match.groups()
        prefix = f"model.layers.{layer}.{'self_attn' if block == 'attn' else 'mlp'}"
        if projection == "qkv_proj":
            assert weight.shape[0] == q_width + 2 * kv_width, weight.shape
            weights[f"{prefix}.q_proj.weight"] = weight[:q_width]
            weights[f"{prefix}.k_proj.weight"] = weight[q_width:q_width + kv_width]
            weights[f"{prefix}.v_proj.weight"] = weight[q_width + kv_width:]
        else:
            weights[f"{prefix}.{projection}.weight"] = weight
    return model, arrays, weights


def dequantized_model(folder, arch):
    """make_fixtures' `arch` model with the int4 file's dequantised weights; every other parameter checked against
    the file. Returns (model, number of parameters replaced, number checked equal)."""
    import make_fixtures
    import torch

    _, info = make_fixtures.train_tokenizer({"llama": "llama3", "qwen2": "gpt2"}[arch])
    model = make_fixtures.build_model(arch, info)
    graph, arrays, weights = dequantized_weights(folder)
    if model.config.tie_word_embeddings:
        # The file reads its embedding through GatherBlockQuantized from the lm_head's int4 weight.
        gathers = [n for n in graph.graph.node if n.op_type == "GatherBlockQuantized"]
        assert len(gathers) == 1 and "lm_head" in gathers[0].input[2], [n.input for n in gathers]
    replaced, checked = 0, 0
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in weights:
                assert tuple(parameter.shape) == weights[name].shape, (name, parameter.shape, weights[name].shape)
                parameter.copy_(torch.from_numpy(weights[name]))
                replaced += 1
            elif name == "model.embed_tokens.weight" and model.config.tie_word_embeddings:
                # named_parameters lists a tied weight once, under the embedding's name.
                parameter.copy_(torch.from_numpy(weights["lm_head.weight"]))
                replaced += 1
            else:
                # Norm weights and q/k/v biases stay float32 in the int4 file.
                value = parameter.detach().numpy()
                found = any(a.dtype == np.float32 and a.shape == value.shape and np.array_equal(a, value)
                            for a in arrays.values())
                if not found and name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
                    layer = name.split(".")[2]
                    packed = [a for key, a in arrays.items() if f"layers.{layer}.attn.qkv_proj" in key and a.ndim == 1]
                    found = any(np.isin(value, a).all() for a in packed)
                assert found, f"{name} is not among the int4 file's float32 initializers"
                checked += 1
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr() or not model.config.tie_word_embeddings
    return model, replaced, checked


def check_logits(model, folder, tolerance=1e-4):
    """Max |HF − onnxruntime| over real-token positions of the folder's reference batch; asserts it is small."""
    import torch

    inputs = np.load(folder / "inputs.npz")
    reference = np.load(folder / "ort_logits.npz")["logits"]
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(inputs["input_ids"]),
                       attention_mask=torch.from_numpy(inputs["attention_mask"]), use_cache=False).logits.numpy()
    mask = inputs["attention_mask"].astype(bool)
    difference = float(np.abs(logits - reference)[mask].max())
    assert difference < tolerance, difference
    return difference


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=pathlib.Path)
    parser.add_argument("--arch", default="llama", choices=["llama", "qwen2"])
    args = parser.parse_args()
    model, replaced, checked = dequantized_model(args.folder, args.arch)
    difference = check_logits(model, args.folder)
    print(f"{args.folder}: {replaced} weights dequantised, {checked} float32 parameters equal to the file's; "
          f"logits vs onnxruntime (accuracy_level 0): max |diff| {difference:.2e}")


if __name__ == "__main__":
    main()
