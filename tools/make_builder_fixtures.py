#!/usr/bin/env python3
"""Builds the onnxruntime-genai model-builder fixtures under fixtures/builder/ (issue 9), and the one-node
reference cases of the contrib ops those graphs hold.

  python tools/make_builder_fixtures.py models   tiny HF Llama and Qwen2 (tools/make_fixtures.py's configs: hidden
                                                 64, 4 q heads / 2 kv heads, head_dim 16, 2 layers, tied
                                                 embeddings, fixed seeds, its llama3-style / gpt2-style tokenizers)
                                                 run through `python -m onnxruntime_genai.models.builder -p fp32`
                                                 and `-p int4` (offline, `-e cpu`), into
                                                 fixtures/builder/<arch>-<precision>/: model.onnx, model.onnx.data,
                                                 genai_config.json, tokenizer files as the builder writes them, and
                                                   inputs.npz      input_ids, attention_mask int64 [2, 12], right
                                                                   padded (make_fixtures' batch)
                                                   ort_logits.npz  logits onnxruntime computes for inputs.npz with
                                                                   empty past KV ([2, kv_heads, 0, head_dim]);
                                                                   MatMulNBits run at accuracy_level 0 (the
                                                                   attribute rewritten in memory: level 4 quantises
                                                                   activations to int8 inside onnxruntime)
                                                 plus fixtures/builder/fixtures.json.
  python tools/make_builder_fixtures.py ops      the cases of tools/builder_op_cases.py, written as
                                                 tools/make_op_references.py writes its cases, into
                                                 fixtures/builder/ops/.
  python tools/make_builder_fixtures.py refused  one-node models of op variants the interpreter refuses at load
                                                 (fixtures/builder/refused/NAME.onnx), and refused.json: per model,
                                                 the fragments its error must name (node, op, attribute, supported).

Needs a Python with torch, transformers, onnx, onnxruntime and onnxruntime-genai (measured: torch 2.15,
transformers 5.24, onnx 1.23.2, onnxruntime 1.32.0, onnxruntime-genai 0.18.0). The builder's model cache goes to a
temporary folder. Run from anywhere; writes only under fixtures/builder/.
"""
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "builder"
sys.path.insert(0, str(ROOT / "tools"))

# arch -> tokenizer style of tools/make_fixtures.py.
ARCHS = {"llama": "llama3", "qwen2": "gpt2"}
PRECISIONS = ["fp32", "int4"]
import fixture_budgets  # noqa: E402 (tools/, on the path above)

SIZE_LIMIT = fixture_budgets.BUILDER  # bytes for everything under fixtures/builder/


def hf_folder(arch, style, folder):
    """Saves make_fixtures' tiny `arch` model (safetensors) and its tokenizer into `folder`."""
    import make_fixtures

    tok, info = make_fixtures.train_tokenizer(style)
    model = make_fixtures.build_model(arch, info)
    model.config.attn_implementation = None  # the builder loads with its own choice
    model.save_pretrained(folder, safe_serialization=True)
    make_fixtures.save_tokenizer(tok, info, folder)
    return make_fixtures.make_inputs(tok, info)


def ort_logits(path, input_ids, attention_mask):
    """onnxruntime's logits with empty past KV, MatMulNBits at accuracy_level 0."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for attribute in node.attribute:
                if attribute.name == "accuracy_level":
                    attribute.i = 0
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    decoder = json.loads((path.parent / "genai_config.json").read_text())["model"]["decoder"]
    empty = np.zeros((input_ids.shape[0], decoder["num_key_value_heads"], 0, decoder["head_size"]), dtype=np.float32)
    feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
    feeds.update({value.name: empty for value in session.get_inputs() if value.name.startswith("past_key_values.")})
    return session.run(["logits"], feeds)[0]


def models():
    OUT.mkdir(parents=True, exist_ok=True)
    entries = []
    with tempfile.TemporaryDirectory() as temporary:
        temporary = pathlib.Path(temporary)
        for arch, style in ARCHS.items():
            hf = temporary / f"hf-{arch}"
            input_ids, attention_mask = hf_folder(arch, style, hf)
            for precision in PRECISIONS:
                name = f"{arch}-{precision}"
                folder = OUT / name
                if folder.exists():
                    shutil.rmtree(folder)
                subprocess.run(
                    [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(folder),
                     "-p", precision, "-e", "cpu", "-c", str(temporary / "cache"), "--extra_options", "hf_token=false"],
                    check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for file in folder.iterdir():
                    file.chmod(0o644)
                logits = ort_logits(folder / "model.onnx", input_ids, attention_mask)
                np.savez(folder / "inputs.npz", input_ids=input_ids, attention_mask=attention_mask)
                np.savez(folder / "ort_logits.npz", logits=logits.astype(np.float32))
                entries.append({"name": name, "path": str((folder / "model.onnx").relative_to(ROOT)),
                                "architecture": arch, "precision": precision})
                print(f"{name}: {sum(f.stat().st_size for f in folder.iterdir()) / 1024:.0f} KiB")
    (OUT / "fixtures.json").write_text(json.dumps(entries, indent=2) + "\n")
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"fixtures/builder total {total / 1e6:.2f} MB")
    assert total < SIZE_LIMIT, f"fixtures/builder is {total} bytes, over {SIZE_LIMIT}"


def ops():
    import onnx

    sys.path.insert(0, str(ROOT / "tools" / "op_cases"))  # builder_op_cases uses their make_case
    import builder_op_cases
    import make_op_references

    folder = OUT / "ops"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*"):
        stale.unlink()
    for case in builder_op_cases.CASES:
        model = make_op_references.build_model(case)
        outputs, source = make_op_references.run_reference(case, model)
        model.doc_string = f"reference outputs computed by {source}"
        onnx.save(model, folder / f"{case['name']}.onnx")
        np.savez(folder / f"{case['name']}.inputs.npz", **{n: a for n, a in case["inputs"] if a is not None})
        np.savez(folder / f"{case['name']}.outputs.npz", **outputs)
    print(f"wrote {len(builder_op_cases.CASES)} op cases to {folder.relative_to(ROOT)}")


# name -> (op, node inputs, attributes, fragments the refusal must name)
REFUSED = {
    "matmulnbits_g_idx": ("MatMulNBits", ["a", "b", "scales", "", "g_idx"],
                          {"K": 64, "N": 8, "block_size": 32}, ["'refused_node'", "MatMulNBits", "g_idx", "not supported"]),
    "matmulnbits_3bit": ("MatMulNBits", ["a", "b", "scales"], {"K": 64, "N": 8, "block_size": 32, "bits": 3},
                         ["MatMulNBits", "bits", "4 and 8"]),
    "gqa_quantized_kv_cache": ("GroupQueryAttention", ["qkv"], {"num_heads": 4, "kv_num_heads": 2, "k_quant_type": "PER_TENSOR"},
                               ["GroupQueryAttention", "k_quant_type", "only NONE"]),
    "gqa_smooth_softmax": ("GroupQueryAttention", ["qkv"], {"num_heads": 4, "kv_num_heads": 2, "smooth_softmax": 1},
                           ["GroupQueryAttention", "smooth_softmax", "only 0"]),
    "gqa_position_ids": ("GroupQueryAttention", ["qkv", "", "", "", "", "", "", "", "", "position_ids"],
                         {"num_heads": 4, "kv_num_heads": 2}, ["GroupQueryAttention", "position_ids", "only inputs 0-8"]),
    "gatherblockquantized_gather_axis": ("GatherBlockQuantized", ["data", "indices", "scales"],
                                         {"gather_axis": 1, "quantize_axis": 0, "block_size": 32},
                                         ["GatherBlockQuantized", "gather_axis", "only 0"]),
}


def refused():
    from onnx import helper, TensorProto
    import onnx

    folder = OUT / "refused"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*"):
        stale.unlink()
    expected = {}
    for name, (op, inputs, attributes, fragments) in REFUSED.items():
        node = helper.make_node(op, inputs, ["y"], name="refused_node", domain="com.microsoft", **attributes)
        graph = helper.make_graph([node], name, [helper.make_tensor_value_info(i, TensorProto.FLOAT, None)
                                                 for i in inputs if i],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22), helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 10
        onnx.save(model, folder / f"{name}.onnx")
        expected[name] = fragments
    (folder / "refused.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(f"wrote {len(expected)} refused models to {folder.relative_to(ROOT)}")


if __name__ == "__main__":
    what = sys.argv[1:] or ["ops", "refused", "models"]
    for step in what:
        {"models": models, "ops": ops, "refused": refused}[step]()
