#!/usr/bin/env python3
"""Builds the tiny transformer ONNX fixtures under fixtures/models/ that the Swift tests import and run.

What it builds (all weights random, fixed seeds, float32, eval mode, eager attention, no KV cache):

  * Two byte-level BPE tokenizers (~512 tokens) trained with the `tokenizers` library on
    tools/fixture_corpus.txt:
      - "gpt2" style: ByteLevel pre-tokenizer / post-processor / decoder, one special token
        `<|endoftext|>` (the last id; used as EOS and as the pad id).
      - "llama3" style: Split(Llama-3 regex) + ByteLevel(use_regex=False) pre-tokenizer, ByteLevel
        decoder, special tokens `<s>` (BOS) and `</s>` (EOS, also the pad id) as the last two ids, and a
        TemplateProcessing post-processor that puts `<s>` in front of every sequence.
  * Tiny models (2 layers, hidden 64): GPT-2, Llama (GQA, tied embeddings), and, size allowing,
    Qwen2 (q/k/v biases), GPT-NeoX (fused per-head qkv) and Phi-3 (fused qkv + Slices).
  * Each model wrapped as `forward(input_ids, attention_mask) -> logits` (int64 inputs, dynamic axes
    "batch" and "sequence") and exported up to three ways:
      dynamo               torch.onnx.export(dynamo=True), default opset, dynamic_shapes
      torchscript          torch.onnx.export(dynamo=False), default opset, dynamic_axes
      torchscript-opset17  torch.onnx.export(dynamo=False, opset_version=17)
    into fixtures/models/<arch>-<exporter>/model.onnx. llama-dynamo keeps its weights in external data
    (model.onnx.data beside model.onnx); every other export is a single file.
  * Beside each model.onnx:
      tokenizer.json, tokenizer_config.json   the tokenizer the model uses (+ bos/eos/pad names)
      config.json                             the Hugging Face config the model was built from
      inputs.npz        input_ids, attention_mask: int64 [2, T], right padded (row 1 shorter),
                        pad id = EOS id, mask 0 on pads
      torch_logits.npz  logits: float32 [2, T, vocab], PyTorch's output for inputs.npz
      ort_logits.npz    logits: float32 [2, T, vocab], onnxruntime's output on the exported file
    Torch and onnxruntime must agree to < 1e-4 (max abs diff) at real-token positions; the script
    also checks a second input shape to prove the batch/sequence axes are really dynamic.
  * fixtures/models/fixtures.json: one entry per export (name, path, architecture, exporter, opset,
    ir_version, external_data, tokenizer), read back from the saved files.
  * Prints the op-type histogram over all exports, flagging ops outside the list in
    /work/shared/DESIGN.md, the total size of fixtures/models/ (which must stay under 10 MB), and that of all of
    fixtures/ (every generator's output, which must stay under 15 MB).

Set-up (CPU only):
    python3 -m venv /root/venv-tools
    /root/venv-tools/bin/pip install torch transformers tokenizers onnx onnxscript onnxruntime numpy
  (measured with torch 2.15, transformers 5.23, tokenizers 0.23, onnx 1.23.2, onnxscript 0.7.2,
  onnxruntime 1.31.1.) Run from the repository root:
    /root/venv-tools/bin/python tools/make_fixtures.py
  It deletes and rewrites fixtures/models/*/ for the exports it makes; takes about a minute.

Combinations that are skipped (and why) are listed in SKIPPED below.
"""
import collections
import contextlib
import io
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

import fixture_budgets  # tools/, beside this script

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "fixtures" / "models"
CORPUS = ROOT / "tools" / "fixture_corpus.txt"

VOCAB_SIZE = 512
SEQ = 12  # padded sequence length of inputs.npz
TOLERANCE = 1e-4
SIZE_LIMIT = fixture_budgets.MODELS  # fixtures/models/, bytes, apparent size (du -sb)
# All of fixtures/ (see fixture_budgets.py; interop/test_fixture_budgets.py checks every part in CI).
FIXTURES_LIMIT = fixture_budgets.ALL

EXPORTERS = ["dynamo", "torchscript", "torchscript-opset17"]

# The extra architectures (Qwen2, GPT-NeoX, Phi-3) get a narrow MLP (64 -> 48 -> 64: still not square, so
# a transposed weight cannot go unnoticed) and only the dynamo and default-opset TorchScript exports, to
# keep the exports under 10 MB. With intermediate 128/256 and all three exporters they were 12.9 MB.
EXTRA_INTERMEDIATE = 48
EXTRA_EXPORTERS = ["dynamo", "torchscript"]

# Exports that are deliberately not made. Empty: every architecture below exported cleanly with every
# exporter (torch 2.15 / transformers 5.23). Add ("arch", "exporter"): "reason" here if one stops working.
SKIPPED = {}

# The op types measured across real exports (DESIGN.md); anything else is reported as new.
KNOWN_OPS = set(
    "Add And Cast Concat Constant ConstantOfShape Cos Div Equal Expand Flatten Gather GatherND Gelu Gemm "
    "Greater IsNaN LayerNormalization LessOrEqual MatMul Max Mul Neg Pow Range Reciprocal ReduceMean Reshape "
    "Shape Sigmoid Sin Slice Softmax Split Sqrt Squeeze Sub Tanh Transpose Unsqueeze Where".split()
)

# Text fed to every model (row 0 is truncated to SEQ tokens; row 1 must come out shorter).
TEXTS = [
    "Café ☕ and the sea: the quick brown fox jumps over the lazy dog.",
    "The sea is wide 🚀",
]

# Llama-3's pre-tokenizer split pattern.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


# ----------------------------------------------------------------------------------------------------------
# Tokenizers


def train_tokenizer(style):
    """A byte-level BPE of VOCAB_SIZE tokens (special tokens last). Returns (tokenizer, specials dict)."""
    tok = Tokenizer(models.BPE())
    if style == "gpt2":
        specials = ["<|endoftext|>"]
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    elif style == "llama3":
        specials = ["<s>", "</s>"]
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
            ]
        )
    else:
        raise ValueError(style)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(specials),
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train([str(CORPUS)], trainer)
    # Appended after training so they take the last ids, as in GPT-2 (50256) and Llama 3 (128000+).
    tok.add_special_tokens(specials)
    assert tok.get_vocab_size(with_added_tokens=True) == VOCAB_SIZE, tok.get_vocab_size(with_added_tokens=True)
    ids = {s: tok.token_to_id(s) for s in specials}
    if style == "gpt2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        info = dict(bos="<|endoftext|>", eos="<|endoftext|>", pad="<|endoftext|>", add_bos=False)
    else:
        tok.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single="<s>:0 $A:0",
                    pair="<s>:0 $A:0 <s>:1 $B:1",
                    special_tokens=[("<s>", ids["<s>"])],
                ),
            ]
        )
        info = dict(bos="<s>", eos="</s>", pad="</s>", add_bos=True)
    info.update({k + "_id": ids[info[k]] for k in ("bos", "eos", "pad")})
    return tok, info


def save_tokenizer(tok, info, folder):
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": info["bos"],
        "eos_token": info["eos"],
        "pad_token": info["pad"],
        "padding_side": "right",
        "model_max_length": 128,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def make_inputs(tok, info):
    rows = [tok.encode(text).ids for text in TEXTS]  # post-processor adds BOS where the style has one
    rows[0] = rows[0][:SEQ]
    assert len(rows[0]) == SEQ, f"text 0 gives only {len(rows[0])} tokens"
    assert len(rows[1]) < SEQ, f"text 1 gives {len(rows[1])} tokens, must be < {SEQ}"
    input_ids = np.full((2, SEQ), info["pad_id"], dtype=np.int64)
    attention_mask = np.zeros((2, SEQ), dtype=np.int64)
    for r, ids in enumerate(rows):
        input_ids[r, : len(ids)] = ids
        attention_mask[r, : len(ids)] = 1
    return input_ids, attention_mask


# ----------------------------------------------------------------------------------------------------------
# Models


def build_model(arch, info):
    tiny = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, max_position_embeddings=128)
    specials = dict(bos_token_id=info["bos_id"], eos_token_id=info["eos_id"], pad_token_id=info["pad_id"])
    common = dict(vocab_size=VOCAB_SIZE, attn_implementation="eager", **specials)
    if arch == "gpt2":
        config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=128, **common)
        cls = transformers.GPT2LMHeadModel
    elif arch == "llama":
        config = transformers.LlamaConfig(
            num_key_value_heads=2, intermediate_size=128, rms_norm_eps=1e-5, tie_word_embeddings=True,
            **tiny, **common,
        )
        cls = transformers.LlamaForCausalLM
    elif arch == "qwen2":
        # Qwen2 puts biases on q/k/v (not on o); Qwen2-0.5B ties its embeddings.
        config = transformers.Qwen2Config(
            num_key_value_heads=2, intermediate_size=EXTRA_INTERMEDIATE, rms_norm_eps=1e-6, tie_word_embeddings=True,
            **tiny, **common,
        )
        cls = transformers.Qwen2ForCausalLM
    elif arch == "gpt-neox":
        # Fused query_key_value laid out per head ([.., heads, 3*head_dim]); partial rotary (25%),
        # parallel residual, untied embed_out.
        config = transformers.GPTNeoXConfig(intermediate_size=EXTRA_INTERMEDIATE, **tiny, **common)
        cls = transformers.GPTNeoXForCausalLM
    elif arch == "phi3":
        # Fused qkv_proj and gate_up_proj, split with Slices; untied lm_head.
        config = transformers.Phi3Config(
            num_key_value_heads=4, intermediate_size=EXTRA_INTERMEDIATE, rms_norm_eps=1e-5, tie_word_embeddings=False,
            original_max_position_embeddings=128, **tiny, **common,
        )
        cls = transformers.Phi3ForCausalLM
    else:
        raise ValueError(arch)
    torch.manual_seed(0)
    model = cls(config).eval().to(torch.float32)
    # Fresh init leaves every norm weight at 1 and every bias at 0. Identical tensors get merged by the
    # exporters (TorchScript then emits Identity nodes for the copies), and a dropped bias or norm weight
    # would go unnoticed; so give every 1-D parameter its own values, as in a trained model.
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            if parameter.dim() == 1:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    return model


class LogitsOnly(torch.nn.Module):
    """forward(input_ids, attention_mask) -> logits, without a KV cache."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def export(wrapper, example, exporter, path):
    """Exports to path (model.onnx); llama-dynamo gets external data. The exporters' progress chatter
    is captured and shown only if the export fails."""
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _export(wrapper, example, exporter, path)
    except Exception:
        print(chatter.getvalue())
        raise
    for file in path.parent.glob("model.onnx*"):
        file.chmod(0o644)  # onnx writes external data files 0600


def _export(wrapper, example, exporter, path):
    names = dict(input_names=["input_ids", "attention_mask"], output_names=["logits"])
    if exporter == "dynamo":
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        program = torch.onnx.export(
            wrapper, example, None, dynamo=True, verbose=False,
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}, **names,
        )
        proto = program.model_proto
        if path.parent.name == "llama-dynamo":
            onnx.save(
                proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                location="model.onnx.data", size_threshold=1024,
            )
        else:
            onnx.save(proto, str(path))
    else:
        axes = {0: "batch", 1: "sequence"}
        torch.onnx.export(
            wrapper, example, str(path), dynamo=False,
            opset_version=17 if exporter == "torchscript-opset17" else None,
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": axes}, **names,
        )


def run_ort(path, input_ids, attention_mask):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]


def masked_max_diff(a, b, mask):
    return float(np.abs(a - b)[mask.astype(bool)].max())


# ----------------------------------------------------------------------------------------------------------
# Read-back


def describe(path):
    model = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    external = any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
    )
    return model, opset, external


def op_types(model):
    ops = collections.Counter()
    domains = set()

    def walk(graph):
        for node in graph.node:
            ops[node.op_type] += 1
            domains.add(node.domain or "")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    for function in model.functions:
        for node in function.node:
            ops[node.op_type] += 1
            domains.add(node.domain or "")
    return ops, domains


def du(path):
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


# ----------------------------------------------------------------------------------------------------------


# arch -> tokenizer style, exporters. Qwen2 and GPT-NeoX use GPT-2-style byte-level BPE with
# <|endoftext|> like the real ones; Phi-3 (really a Llama-2 SentencePiece vocabulary with <s>, </s>)
# gets the Llama-style one.
ARCHS = {
    "gpt2": ("gpt2", EXPORTERS),
    "llama": ("llama3", EXPORTERS),
    "qwen2": ("gpt2", EXTRA_EXPORTERS),
    "gpt-neox": ("gpt2", EXTRA_EXPORTERS),
    "phi3": ("llama3", EXTRA_EXPORTERS),
}


def main():
    torch.set_num_threads(1)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    torch.manual_seed(0)
    np.random.seed(0)
    MODELS.mkdir(exist_ok=True)

    tokenizers = {style: train_tokenizer(style) for style in ("gpt2", "llama3")}
    for style, (tok, info) in tokenizers.items():
        print(f"tokenizer {style}: vocab {tok.get_vocab_size()} specials "
              f"bos={info['bos']}({info['bos_id']}) eos={info['eos']}({info['eos_id']}) pad id {info['pad_id']}")

    entries = []
    histogram = collections.Counter()
    used_by = collections.defaultdict(list)
    for arch, (style, exporters) in ARCHS.items():
        tok, info = tokenizers[style]
        input_ids, attention_mask = make_inputs(tok, info)
        model = build_model(arch, info)
        wrapper = LogitsOnly(model).eval()
        with torch.no_grad():
            torch_logits = wrapper(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()
        # A second shape (other batch and sequence, no padding) to check the axes are really dynamic.
        rng = np.random.default_rng(1)
        ids2 = rng.integers(0, VOCAB_SIZE, size=(3, 19), dtype=np.int64)
        mask2 = np.ones_like(ids2)
        with torch.no_grad():
            torch_logits2 = wrapper(torch.from_numpy(ids2), torch.from_numpy(mask2)).numpy()
        example = (torch.from_numpy(input_ids), torch.from_numpy(attention_mask))

        for exporter in exporters:
            name = f"{arch}-{exporter}"
            if (arch, exporter) in SKIPPED:
                print(f"{name}: skipped: {SKIPPED[(arch, exporter)]}")
                continue
            folder = MODELS / name
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            path = folder / "model.onnx"
            try:
                export(wrapper, example, exporter, path)
            except Exception as error:
                if arch in ("gpt2", "llama"):
                    raise
                # An extra architecture that no longer exports is reported and skipped, not fatal.
                print(f"{name}: EXPORT FAILED, skipped: {type(error).__name__}: {error}")
                shutil.rmtree(folder)
                continue

            ort_logits = run_ort(path, input_ids, attention_mask)
            diff = masked_max_diff(torch_logits, ort_logits, attention_mask)
            ort_logits2 = run_ort(path, ids2, mask2)
            diff2 = masked_max_diff(torch_logits2, ort_logits2, mask2)
            assert diff < TOLERANCE, f"{name}: torch vs onnxruntime max abs diff {diff}"
            assert diff2 < TOLERANCE, f"{name}: torch vs onnxruntime max abs diff {diff2} at shape {ids2.shape}"

            save_tokenizer(tok, info, folder)
            model.config.to_json_file(str(folder / "config.json"))
            np.savez(folder / "inputs.npz", input_ids=input_ids, attention_mask=attention_mask)
            np.savez(folder / "torch_logits.npz", logits=torch_logits.astype(np.float32))
            np.savez(folder / "ort_logits.npz", logits=ort_logits.astype(np.float32))

            proto, opset, external = describe(path)
            ops, domains = op_types(proto)
            assert domains == {""}, f"{name}: non-default domains {domains}"
            histogram.update(ops)
            for op in ops:
                used_by[op].append(name)
            entries.append(
                {
                    "name": name,
                    "path": str(path.relative_to(ROOT)),
                    "architecture": arch,
                    "exporter": exporter,
                    "opset": opset,
                    "ir_version": proto.ir_version,
                    "external_data": external,
                    "tokenizer": str((folder / "tokenizer.json").relative_to(ROOT)),
                }
            )
            print(
                f"{name}: IR {proto.ir_version} opset {opset} external_data={external} "
                f"nodes {len(proto.graph.node)} initializers {len(proto.graph.initializer)} "
                f"value_info {len(proto.graph.value_info)} functions {len(proto.functions)} "
                f"size {du(folder) / 1024:.0f} KiB | max|torch-ort| {diff:.2e} (shape {input_ids.shape}), "
                f"{diff2:.2e} (shape {ids2.shape})"
            )

    (MODELS / "fixtures.json").write_text(json.dumps(entries, indent=2) + "\n")

    print(f"\nop types across {len(entries)} exports (total nodes, exports using it):")
    for op, count in sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0])):
        flag = "" if op in KNOWN_OPS else "   <-- not in DESIGN.md's list"
        print(f"  {op:20s} {count:6d} {len(used_by[op]):3d}{flag}")
    new = sorted(set(histogram) - KNOWN_OPS)
    unused = sorted(KNOWN_OPS - set(histogram))
    print(f"ops not in DESIGN.md's list: {new or 'none'}")
    for op in new:
        print(f"  {op}: {', '.join(used_by[op])}")
    print(f"DESIGN.md ops not used here: {unused or 'none'}")

    total = du(MODELS)
    everything = du(MODELS.parent)
    print(f"\nfixtures/models/ total {total / 1e6:.2f} MB ({total} bytes); fixtures/ {everything / 1e6:.2f} MB")
    assert total < SIZE_LIMIT, f"fixtures/models/ is {total} bytes, over the {SIZE_LIMIT} byte limit"
    assert everything < FIXTURES_LIMIT, f"fixtures/ is {everything} bytes, over the {FIXTURES_LIMIT} byte limit"


if __name__ == "__main__":
    sys.exit(main())
