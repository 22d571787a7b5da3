#!/usr/bin/env python3
"""Builds a SmolLM-135M-shaped Llama (or a Qwen2.5-0.5B-shaped Qwen2) with random weights and exports it for
benchmarking (not committed: ~540 MB, ~2 GB). Same wrapper, inputs, outputs and dynamic axes as the fixtures of
tools/make_fixtures.py.

    /root/venv-tools/bin/python tools/make_bench_model.py --out /work/bench-model [--layers 30] [--shape qwen2.5-0.5b]

Model (--shape smollm-135m, the default): LlamaConfig(hidden 576, 30 layers, 9 heads, 3 key-value heads,
intermediate 1536, vocab 49152, tie_word_embeddings, max_position_embeddings 2048, rms_norm_eps 1e-5).
--shape qwen2.5-0.5b: Qwen2Config(hidden 896, 24 layers, 14 heads, 2 key-value heads, intermediate 4864,
vocab 151936, tie_word_embeddings, max_position_embeddings 32768, rms_norm_eps 1e-6, rope_theta 1e6), the shape
tools/bench_train.py --model-config qwen05 times in PyTorch. Either: torch.manual_seed(0), float32, eager
attention, eval mode. Wrapper: forward(input_ids, attention_mask) -> logits (use_cache=False);
int64 inputs `input_ids` and `attention_mask` [batch, sequence], output `logits` [batch, sequence, 49152].
Export: torch.onnx.export(dynamo=True) at its default opset with dynamic_shapes, saved as DIR/model.onnx
with every tensor of 1 KiB or more in DIR/model.onnx.data. Also writes DIR/config.json.
The export is checked against PyTorch with onnxruntime on a [2, 16] input (max abs diff printed).

Venv: pip install torch transformers onnx onnxscript onnxruntime numpy (see tools/make_fixtures.py).
"""
import argparse
import contextlib
import io
import logging
import pathlib
import time
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers

from make_fixtures import LogitsOnly  # the same wrapper the fixtures are exported with


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output folder (created)")
    parser.add_argument("--shape", choices=["smollm-135m", "qwen2.5-0.5b"], default="smollm-135m")
    parser.add_argument("--layers", type=int, default=None, help="default: the shape's (30, or 24 for Qwen)")
    parser.add_argument("--threads", type=int, default=2, help="torch / onnxruntime threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    torch.manual_seed(0)
    common = dict(tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                  attn_implementation="eager")
    if args.shape == "qwen2.5-0.5b":
        config = transformers.Qwen2Config(
            hidden_size=896, num_hidden_layers=args.layers or 24, num_attention_heads=14, num_key_value_heads=2,
            intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6,
            rope_theta=1000000.0, **common,
        )
        model = transformers.Qwen2ForCausalLM(config).eval().to(torch.float32)
    else:
        config = transformers.LlamaConfig(
            hidden_size=576, num_hidden_layers=args.layers or 30, num_attention_heads=9, num_key_value_heads=3,
            intermediate_size=1536, vocab_size=49152, max_position_embeddings=2048,
            rms_norm_eps=1e-5, **common,  # SmolLM's <|endoftext|> / <|im_start|> / <|im_end|> are 0 / 1 / 2
        )
        model = transformers.LlamaForCausalLM(config).eval().to(torch.float32)
    assert model.config._attn_implementation == "eager"
    wrapper = LogitsOnly(model).eval()
    params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {params:,} ({params * 4 / 1e6:.0f} MB float32)")

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "model.onnx"
    for old in (path, args.out / "model.onnx.data"):
        old.unlink(missing_ok=True)
    model.config.to_json_file(str(args.out / "config.json"))

    rng = np.random.default_rng(0)
    input_ids = rng.integers(0, config.vocab_size, size=(2, 16), dtype=np.int64)
    attention_mask = np.ones_like(input_ids)
    attention_mask[1, 10:] = 0
    example = (torch.from_numpy(input_ids), torch.from_numpy(attention_mask))

    start = time.perf_counter()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper, example, None, dynamo=True, verbose=False,
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
        )
    exported = time.perf_counter()
    onnx.save(
        program.model_proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
        location="model.onnx.data", size_threshold=1024,
    )
    (args.out / "model.onnx.data").chmod(0o644)
    saved = time.perf_counter()
    print(f"export {exported - start:.1f} s, save {saved - exported:.1f} s, total {saved - start:.1f} s")

    proto = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    sizes = {p.name: p.stat().st_size for p in (path, args.out / "model.onnx.data")}
    print(f"IR {proto.ir_version} opset {opset} nodes {len(proto.graph.node)} files {sizes}")

    with torch.no_grad():
        expected = wrapper(*example).numpy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]
    diff = float(np.abs(expected - got)[attention_mask.astype(bool)].max())
    print(f"max |torch - onnxruntime| at real tokens: {diff:.2e}")
    assert diff < 1e-3, diff


if __name__ == "__main__":
    main()
