#!/usr/bin/env python3
"""Whole-model fixtures for ONNX Attention (opset 23) and com.microsoft MultiHeadAttention, into
fixtures/attention/<name>/ (run as `tools/make_attention_fixtures.py models`).

The model: tools/make_fixtures.py's tiny Llama, made smaller to fit the fixture budget (hidden 32, 4 heads of 8,
2 layers, intermediate 32, vocabulary 128, tied embeddings; torch.manual_seed(0) and every 1-D parameter
perturbed, as make_fixtures does), with attn_implementation="sdpa".

  attention23-llama   torch.onnx.export(dynamo=True, opset_version=23): torch's dynamo exporter writes each
                      scaled_dot_product_attention as one ONNX Attention-23 node (Q, K, V [B, 4, S, 8], the keys
                      and values already repeated to 4 heads by the model, a bool [B, 1, S, S] mask) beside
                      RotaryEmbedding-23 and RMSNormalization-23.
  mha-llama           the same export with every Attention node replaced by com.microsoft.MultiHeadAttention, with
                      the onnx helper: query / key / value turned to [B, S, 4·8] (Transpose, Reshape), the padding
                      mask as key_padding_mask (int32 attention_mask), unidirectional = 1, the output turned back
                      to [B, 4, S, 8]; nodes left unused are dropped. onnxruntime's transformer optimizer
                      (optimize_model, model types gpt2, bert, gpt_neox, t5, clip, vit, with and without
                      use_multi_head_attention; phi fails) fuses no attention of a transformers-5.24 GPT-2 or
                      Llama, TorchScript- or dynamo-exported, eager or sdpa: its patterns predate these graphs.

Beside each model.onnx: inputs.npz (input_ids, attention_mask int64 [2, 12], right padded, row 1 of 9 tokens) and
ort_logits.npz (onnxruntime's logits for them); fixtures/attention/models.json lists them.
"""
import contextlib
import io
import json
import pathlib
import warnings

import numpy as np

import fixture_budgets  # tools/, beside this script

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "attention"
SIZE_LIMIT = fixture_budgets.ATTENTION_MODEL  # bytes per model folder
VOCAB = 128


def build_model():
    import torch
    import transformers

    config = transformers.LlamaConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=32,
        vocab_size=VOCAB, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=1, pad_token_id=1, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval().to(torch.float32)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            if parameter.dim() == 1:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def make_inputs():
    rng = np.random.default_rng(9)
    input_ids = rng.integers(2, VOCAB, (2, 12)).astype(np.int64)
    attention_mask = np.ones((2, 12), dtype=np.int64)
    input_ids[1, 9:], attention_mask[1, 9:] = 1, 0  # right padding with the pad id
    return input_ids, attention_mask


def export_attention23(model, input_ids, attention_mask):
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            # Positions per row ([B, S], not HF's [1, S]): onnxruntime 1.32's RotaryEmbedding-23 wants cos/sin of
            # the input's batch.
            position_ids = torch.arange(input_ids.shape[1]).unsqueeze(0).expand(input_ids.shape[0], -1)
            return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False).logits

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            LogitsOnly(model), (torch.tensor(input_ids), torch.tensor(attention_mask)), None, dynamo=True,
            opset_version=23, input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_shapes={"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}})
    proto = program.model_proto
    # The exporter's per-node stack traces and metadata are most of the file's size: drop them.
    proto.doc_string = ""
    for node in proto.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    for value in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output):
        value.doc_string = ""
        del value.metadata_props[:]
    for tensor in proto.graph.initializer:
        del tensor.metadata_props[:]
    attention = [node for node in proto.graph.node if node.op_type == "Attention"]
    assert len(attention) == 2, f"expected 2 Attention nodes, the export has {len(attention)}"
    return proto


def to_multihead_attention(proto):
    """Each Attention-23 node as com.microsoft.MultiHeadAttention (see the module's comment)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array([0, 0, -1], dtype=np.int64), "mha_to_3d"))
    mask = "mha_key_padding_mask"
    nodes = [helper.make_node("Cast", ["attention_mask"], [mask], to=onnx.TensorProto.INT32, name="mha_mask_cast")]
    for node in graph.node:
        if node.op_type != "Attention":
            nodes.append(node)
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        prefix = node.name or node.output[0]
        heads = 4
        merged = []
        for position, role in enumerate(["query", "key", "value"]):
            transposed, flat = f"{prefix}_{role}_bsnh", f"{prefix}_{role}_3d"
            nodes.append(helper.make_node("Transpose", [node.input[position]], [transposed], perm=[0, 2, 1, 3],
                                          name=f"{prefix}_{role}_transpose"))
            nodes.append(helper.make_node("Reshape", [transposed], [flat], name=f"{prefix}_{role}_reshape"))
            nodes[-1].input.append("mha_to_3d")
            merged.append(flat)
        output = f"{prefix}_mha_output"
        nodes.append(helper.make_node("MultiHeadAttention", merged + ["", mask], [output], domain="com.microsoft",
                                      num_heads=heads, unidirectional=1, scale=attributes["scale"], name=f"{prefix}_mha"))
        graph.initializer.append(numpy_helper.from_array(np.array([0, 0, heads, -1], dtype=np.int64), f"{prefix}_to_4d"))
        nodes.append(helper.make_node("Reshape", [output, f"{prefix}_to_4d"], [f"{prefix}_mha_bsnh"], name=f"{prefix}_out_reshape"))
        nodes.append(helper.make_node("Transpose", [f"{prefix}_mha_bsnh"], [node.output[0]], perm=[0, 2, 1, 3],
                                      name=f"{prefix}_out_transpose"))
    # Drop what no longer feeds the outputs (the bool mask built for Attention).
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(nodes):
        if any(output in needed for output in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    used = {i for node in graph.node for i in node.input}
    initializers = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.value_info[:]
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.checker.check_model(model)
    return model


def ort_logits(path, input_ids, attention_mask):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]


def main():
    import onnx
    import torch

    model = build_model()
    input_ids, attention_mask = make_inputs()
    with torch.no_grad():
        torch_logits = model(input_ids=torch.tensor(input_ids), attention_mask=torch.tensor(attention_mask)).logits.numpy()
    proto = export_attention23(model, input_ids, attention_mask)
    entries = []
    for name, built in [("attention23-llama", proto), ("mha-llama", to_multihead_attention(proto))]:
        folder = OUT / name
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*"):
            stale.unlink()
        onnx.save(built, folder / "model.onnx")
        logits = ort_logits(folder / "model.onnx", input_ids, attention_mask)
        real = attention_mask.astype(bool)
        difference = np.abs(logits - torch_logits)[real].max()
        assert difference < 1e-4, f"{name}: onnxruntime and torch differ by {difference}"
        np.savez(folder / "inputs.npz", input_ids=input_ids, attention_mask=attention_mask)
        np.savez(folder / "ort_logits.npz", logits=logits.astype(np.float32))
        ops = sorted({n.op_type for n in built.graph.node if "Attention" in n.op_type})
        entries.append({"name": name, "path": str((folder / "model.onnx").relative_to(ROOT)), "attention": ops[0],
                        "layers": 2})
        size = sum(f.stat().st_size for f in folder.iterdir())
        print(f"{name}: {size / 1024:.0f} KiB, {ops}, |onnxruntime - torch| {difference:.2e}")
        assert size < SIZE_LIMIT, f"{name} is {size} bytes, over {SIZE_LIMIT}"
    (OUT / "models.json").write_text(json.dumps(entries, indent=2) + "\n")


if __name__ == "__main__":
    main()
