"""Rebuilds the fuzzers' seed corpus (Fuzzing/Corpus/<target>/) from fixtures/ and a few made-up files.

Inputs that crashed a target once (fixtures/fuzz/<target>/) are copied in too. Seeds are kept small (a few KB each) so that libFuzzer mutates quickly: tokenizer.json fixtures are cut down to a
few hundred vocabulary entries with their merges, and the external-data models point at the files the fuzz
harness puts beside each input (`weights.bin`, 4096 bytes; `nested/more.bin`, 64 bytes; `outside.bin`, a symlink
out of the folder). Run with the interop venv: `.venv/bin/python tools/make_fuzz_corpus.py`.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
CORPUS = ROOT / "Fuzzing" / "Corpus"


def copy(target, sources):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for source in sources:
        source = FIXTURES / source
        name = "_".join(source.relative_to(FIXTURES).parts)
        shutil.copyfile(source, folder / name)


def write(target, name, data):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def external(tensor, location, offset=None, length=None, checksum=False):
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    tensor.ClearField("raw_data")
    for key, value in [("location", location), ("offset", offset), ("length", length)]:
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    if checksum:
        entry = tensor.external_data.add()
        entry.key, entry.value = "checksum", "0" * 40
    return tensor


def external_model(name, references, constant_reference=None):
    """A model adding two external initializers (and, optionally, an external Constant value)."""
    initializers = []
    for index, (dtype, shape, location, offset, length) in enumerate(references):
        values = np.zeros(shape, dtype=dtype)
        initializers.append(external(numpy_helper.from_array(values, f"w{index}"), location, offset, length,
                                     checksum=index == 1))
    nodes = [helper.make_node("Add", ["x", "w0"], ["y"], name="add")]
    if constant_reference:
        value = external(numpy_helper.from_array(np.zeros([4], np.float32), "c"), *constant_reference)
        nodes.append(helper.make_node("Constant", [], ["c"], name="constant", value=value))
    graph = helper.make_graph(
        nodes, "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    write("onnx", name, model.SerializeToString())


def small_tokenizer(source, keep=320):
    """`source` with its vocabulary cut to the first `keep` ids (plus added tokens) and the merges among them."""
    tokenizer = json.loads((FIXTURES / source).read_text())
    model = tokenizer["model"]
    vocab = model.get("vocab")
    if isinstance(vocab, dict):
        kept = {token: id for token, id in vocab.items() if id < keep}
        model["vocab"] = kept
        merges = []
        for merge in model.get("merges", []):
            left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
            if left in kept and right in kept and left + right in kept:
                merges.append(merge)
        model["merges"] = merges
    elif isinstance(vocab, list):  # Unigram: [token, score] pairs.
        model["vocab"] = vocab[:keep]
    name = "_".join(Path(source).parts)
    write("tokenizer", name, json.dumps(tokenizer, ensure_ascii=False, separators=(",", ":")))


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)

    copy("onnx", ["graph/dtypes.onnx", *(f"graph/bad/{name}.onnx" for name in [
        "absolute_location", "custom_domain", "escaping_location", "missing_external", "node_metadata",
        "short_external", "unsupported_op"]),
        "ops/constant_tensor_opset13.onnx", "ops/layernorm_axis_minus2_epsilon.onnx",
        "ops/split_num_outputs_uneven_last_axis.onnx", "ops/reshape_int64.onnx", "ops/div_float16.onnx",
        "lora_targets/attention_gemm_transb.onnx"])
    external_model("external_weights.onnx",
                   [(np.float32, [4], "weights.bin", 0, 16), (np.int64, [2], "nested/more.bin", 0, 16)])
    external_model("external_no_length.onnx",
                   [(np.float32, [4], "weights.bin", 4080, None), (np.float16, [8], "weights.bin", 64, 16)])
    external_model("external_outside.onnx",
                   [(np.float32, [4], "outside.bin", 0, 16), (np.float32, [4], "weights.bin", 16, 16)])
    external_model("external_constant.onnx", [(np.float32, [4], "weights.bin", 32, 16)],
                   constant_reference=("nested/more.bin", 48, 16))

    copy("npz", ["graph/arrays.npz", "graph/arrays_compressed.npz", "ops/add_float16.inputs.npz",
                 "ops/add_int64_broadcast.inputs.npz", "ops/equal_zero_size.outputs.npz",
                 "ops/cast_int64_to_float.inputs.npz"])

    copy("safetensors", ["peft/mixed.safetensors", "peft/llama-dynamo-qv/adapter_model.safetensors",
                         "peft/bad/dora/adapter_model.safetensors"])

    copy("adapter_config", [*(f"peft/{name}/adapter_config.json" for name in [
        "gpt-neox-dynamo-qkv", "gpt2-torchscript-c_attn", "llama-dynamo-saved", "qwen2-torchscript-rslora"]),
        "peft/bad/dora/adapter_config.json", "trl/final_adapter/adapter_config.json"])
    write("adapter_config", "mlx_lora.json", json.dumps({
        "fine_tune_type": "lora", "num_layers": 2,
        "lora_parameters": {"rank": 8, "scale": 20.0, "dropout": 0.0, "keys": ["self_attn.q_proj", "mlp.up_proj"]}}))
    write("adapter_config", "mlx_dora.json", json.dumps({
        "fine_tune_type": "dora", "num_layers": -1, "lora_parameters": {"rank": 4, "scale": 2.0, "dropout": 0.05}}))

    copy("onnx_adapter", ["adapter_formats/default_versions.onnx_adapter", "adapter_formats/reference.onnx_adapter"])

    for name in ["bertlike", "gpt2", "llama2", "llama3", "metaspace", "mistral", "qwen2", "roberta"]:
        small_tokenizer(f"tokenizers/{name}/tokenizer.json")

    # Inputs that once crashed a target (each with a regression test in the Swift suite) stay in its corpus.
    for folder in sorted((FIXTURES / "fuzz").iterdir()):
        copy(folder.name, [path.relative_to(FIXTURES) for path in sorted(folder.iterdir())])

    copy("chat_template", [f"chat_templates/{name}.jinja" for name in [
        "qwen2_5", "qwen3", "llama3_1", "llama3_2", "phi3", "gemma", "gemma3", "smolvlm", "deepseekv3", "cohere",
        "gptoss", "lfm2"]])

    copy("jsonl", [f"data/{name}.jsonl" for name in [
        "bad_malformed", "bad_missing_key", "bad_mixed", "bad_not_string", "implicit", "preferences",
        "pretokenized"]] + ["dpo/eval.jsonl"])


if __name__ == "__main__":
    main()
