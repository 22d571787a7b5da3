#!/usr/bin/env python3
"""Writes fixtures/lora_targets/lora_targets.json: for every fixture export in fixtures/models/fixtures.json,
per layer, the Hugging Face module path of the q and v projections and numbers that pin down exactly the
weight values LoRA adapts there, in PEFT's orientation [out, in].

The torch models are rebuilt exactly as tools/make_fixtures.py builds them (its own build_model and
train_tokenizer, so the same seeds and the same post-init perturbation); nothing is downloaded. Before any
reference is written, every source weight is looked up among the export's initializers (as stored, or
transposed, since exporters pre-transpose Linear weights to [in, out]) and must be there bit for bit: that
proves the rebuilt model is the exported one.

The q (resp. v) part is taken as the Hugging Face code defines it:
  gpt2      Conv1D c_attn.weight [in, 3C]; q, k, v = output.split(C, dim=2)  -> columns [0, C), [2C, 3C)
  llama     q_proj.weight [H*d, in], v_proj.weight [KV*d, in]                -> whole weights
  qwen2     as llama (their biases are not adapted)
  gpt-neox  query_key_value.weight [3*H*d, in]; output.view(.., H, 3d).chunk(3, -1)
            -> rows h*3d + [0, d) for q and h*3d + [2d, 3d) for v, for every head h
  phi3      qkv_proj.weight [(H + 2*KV)*d, in]; q = rows [0, H*d), v = rows [(H+KV)*d, end)

For each part: module_path, shape [out, in], first (the first 8 values, row-major), sum, and two weighted
sums (sum of (i+1)*w[i, j] and of (j+1)*w[i, j]) that catch a permutation of rows or columns, all computed
in float64 from the float32 weights.

It also writes fixtures/lora_targets/attention_gemm_transb.onnx, a hand-built one-block attention
graph with forms no fixture export has: q/k/v fused in one Gemm with transB=1 (weight [out, in]) behind a
flattening Reshape, per-head interleaved like GPT-NeoX, split by a Split with a negative axis and sizes as an
input, scaled by Div, masked by Where, and an output projection as MatMul + Add(bias). onnxruntime runs it
once to prove it is a valid model.

Run from the repository root (about 10 s):
    /root/venv-tools/bin/python tools/make_lora_target_references.py
"""
import json
import pathlib
import sys

import numpy as np
import onnx
import torch
from onnx import numpy_helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_fixtures  # noqa: E402  (its functions and seeds rebuild the fixtures' torch models)

OUTPUT = ROOT / "fixtures" / "lora_targets" / "lora_targets.json"


def parts(arch, model):
    """Per layer: {kind: (module_path, source weight as torch stores it, [out, in] part)}."""
    config = model.config
    layers = []
    if arch == "gpt2":
        size = config.n_embd
        for i, block in enumerate(model.transformer.h):
            weight = block.attn.c_attn.weight.detach()  # Conv1D: [in, 3C]
            path = f"transformer.h.{i}.attn.c_attn"
            layers.append({"q": (path, weight, weight[:, :size].T), "v": (path, weight, weight[:, 2 * size:].T)})
    elif arch in ("llama", "qwen2"):
        for i, layer in enumerate(model.model.layers):
            attention = layer.self_attn
            q, v = attention.q_proj.weight.detach(), attention.v_proj.weight.detach()
            layers.append({
                "q": (f"model.layers.{i}.self_attn.q_proj", q, q),
                "v": (f"model.layers.{i}.self_attn.v_proj", v, v),
            })
    elif arch == "gpt-neox":
        heads = config.num_attention_heads
        d = config.hidden_size // heads
        q_rows = [h * 3 * d + j for h in range(heads) for j in range(d)]
        v_rows = [h * 3 * d + 2 * d + j for h in range(heads) for j in range(d)]
        for i, layer in enumerate(model.gpt_neox.layers):
            weight = layer.attention.query_key_value.weight.detach()  # Linear: [3*H*d, in]
            path = f"gpt_neox.layers.{i}.attention.query_key_value"
            layers.append({"q": (path, weight, weight[q_rows]), "v": (path, weight, weight[v_rows])})
    elif arch == "phi3":
        heads, kv = config.num_attention_heads, config.num_key_value_heads
        d = config.hidden_size // heads
        for i, layer in enumerate(model.model.layers):
            weight = layer.self_attn.qkv_proj.weight.detach()  # Linear: [(H + 2*KV)*d, in]
            path = f"model.layers.{i}.self_attn.qkv_proj"
            layers.append({
                "q": (path, weight, weight[: heads * d]),
                "v": (path, weight, weight[(heads + kv) * d:]),
            })
    else:
        raise ValueError(arch)
    return layers


def describe(path, part):
    values = part.contiguous().numpy().astype(np.float32)
    wide = values.astype(np.float64)
    rows, columns = wide.shape
    return {
        "module_path": path,
        "shape": [rows, columns],
        "first": [float(x) for x in values.ravel()[:8]],
        "sum": float(wide.sum()),
        "row_weighted_sum": float((wide * np.arange(1, rows + 1)[:, None]).sum()),
        "column_weighted_sum": float((wide * np.arange(1, columns + 1)[None, :]).sum()),
    }


def check_exported(entry, layers):
    """Every source weight must be an initializer of the export, as stored or transposed, bit for bit."""
    proto = onnx.load(str(ROOT / entry["path"]))  # loads external data from beside the file
    stored = [numpy_helper.to_array(t) for t in proto.graph.initializer if len(t.dims) == 2]
    for number, layer in enumerate(layers):
        for kind, (path, source, _) in layer.items():
            source = source.numpy()
            found = any(
                (array.shape == source.shape and np.array_equal(array, source))
                or (array.shape == source.T.shape and np.array_equal(array, source.T))
                for array in stored
            )
            if not found:
                raise SystemExit(f"{entry['name']}: layer {number} {kind} weight of {path} is not among the "
                                 "export's initializers: the rebuilt model differs from the exported one")


SYNTHETIC = ROOT / "fixtures" / "lora_targets" / "attention_gemm_transb.onnx"


def make_synthetic_attention():
    """One attention block: x [B, T, 8] -> Gemm(transB=1, W [24, 8]) -> [B, T, 2 heads, 3*4] -> q, k, v."""
    from onnx import TensorProto, helper
    import onnxruntime as ort

    rng = np.random.default_rng(7)
    hidden, heads, d = 8, 2, 4

    def const(name, values, dtype=np.int64):
        return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)

    initializers = [
        numpy_helper.from_array(rng.standard_normal((3 * hidden, hidden)).astype(np.float32), "qkv_weight"),
        numpy_helper.from_array(rng.standard_normal(3 * hidden).astype(np.float32), "qkv_bias"),
        numpy_helper.from_array(rng.standard_normal((hidden, hidden)).astype(np.float32), "out_weight"),
        numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "out_bias"),
        const("flat", [-1, hidden]), const("merged", [0, 0, hidden]),
        const("sizes", [d, d, d]), numpy_helper.from_array(np.array(np.sqrt(d), np.float32), "scale"),
        numpy_helper.from_array(np.array(-1e9, np.float32), "masked"),
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["x_shape"], name="shape"),
        helper.make_node("Reshape", ["x", "flat"], ["x2"], name="flatten_tokens"),
        helper.make_node("Gemm", ["x2", "qkv_weight", "qkv_bias"], ["qkv2"], name="qkv_gemm", transB=1),
        helper.make_node("Slice", ["x_shape", "zero", "two"], ["batch_time"], name="batch_time"),
        helper.make_node("Concat", ["batch_time", "per_head_tail"], ["qkv_shape"], name="qkv_shape", axis=0),
        helper.make_node("Reshape", ["qkv2", "qkv_shape"], ["qkv"], name="split_heads"),
        helper.make_node("Transpose", ["qkv"], ["qkv_t"], name="heads_first", perm=[0, 2, 1, 3]),
        helper.make_node("Split", ["qkv_t", "sizes"], ["q", "k", "v"], name="split_qkv", axis=-1),
        helper.make_node("Transpose", ["k"], ["k_t"], name="k_transpose", perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "k_t"], ["scores"], name="scores"),
        helper.make_node("Div", ["scores", "scale"], ["scaled"], name="scale"),
        helper.make_node("Where", ["mask", "scaled", "masked"], ["masked_scores"], name="mask"),
        helper.make_node("Softmax", ["masked_scores"], ["probs"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["context"], name="context"),
        helper.make_node("Transpose", ["context"], ["context_t"], name="heads_last", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["context_t", "merged"], ["context_merged"], name="merge_heads"),
        helper.make_node("MatMul", ["context_merged", "out_weight"], ["projected"], name="out_matmul"),
        helper.make_node("Add", ["projected", "out_bias"], ["y"], name="out_bias_add"),
    ]
    initializers += [const("zero", [0]), const("two", [2]), const("per_head_tail", [heads, 3 * d])]
    graph = helper.make_graph(
        nodes, "attention_gemm_transb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", hidden]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", 1, "sequence", "sequence"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", hidden])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx-dpo tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(SYNTHETIC))
    session = ort.InferenceSession(str(SYNTHETIC), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((2, 3, hidden)).astype(np.float32)
    mask = np.tril(np.ones((3, 3), dtype=bool))[None, None].repeat(2, axis=0)
    session.run(["y"], {"x": x, "mask": mask})
    print(f"wrote {SYNTHETIC.relative_to(ROOT)} ({SYNTHETIC.stat().st_size} bytes), onnxruntime runs it")


def main():
    torch.set_num_threads(1)
    entries = json.loads((ROOT / "fixtures" / "models" / "fixtures.json").read_text())
    infos = {style: make_fixtures.train_tokenizer(style)[1] for style in ("gpt2", "llama3")}
    result = {}
    for arch, (style, _) in make_fixtures.ARCHS.items():
        exports = [entry for entry in entries if entry["architecture"] == arch]
        if not exports:
            continue
        model = make_fixtures.build_model(arch, infos[style])
        layers = parts(arch, model)
        for entry in exports:
            check_exported(entry, layers)
            result[entry["name"]] = {
                "architecture": arch,
                "layers": [{kind: describe(path, part) for kind, (path, _, part) in layer.items()} for layer in layers],
            }
            print(f"{entry['name']}: {len(layers)} layers, weights match the export")
    missing = {entry["name"] for entry in entries} - set(result)
    if missing:
        raise SystemExit(f"no reference for {sorted(missing)}")
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps({"fixtures": result}, indent=1) + "\n")
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({OUTPUT.stat().st_size} bytes)")
    make_synthetic_attention()


if __name__ == "__main__":
    main()
