#!/usr/bin/env python3
"""onnxruntime-genai's generation speed on a builder model, measured as `onnx-dpo bench generate` measures ours, so the
two sit side by side (one command each):

  python tools/bench_generate.py --model fixtures/builder/llama-fp32 [--batch 1,4] [--prompt-tokens 128]
                                 [--new-tokens 32] [--json]
  onnx-dpo bench generate --model fixtures/builder/llama-fp32/model.onnx [same flags]

Per batch size: prompt tokens/s (batch · prompt tokens over the time of `append_tokens`, the prompt pass) and decode
tokens/s (batch · (new tokens − 1) over the `generate_next_token` loop after the first token), greedy, `min_length`
set so EOS never ends a row early, one untimed warm-up run of the first batch size first. Prompts are seeded random
ids below the vocabulary size. `--accuracy-level-zero` runs a copy with MatMulNBits at accuracy_level 0 (float
activations, as the interpreter computes them); by default the model runs as the builder wrote it (int4 models:
accuracy_level 4, int8 activations).

  python tools/bench_generate.py --make-model /tmp/smollm-builder

builds a random-weight Llama at SmolLM-135M's shape (hidden 576, 30 layers, 9 q / 3 kv heads, head 64, intermediate
1536, vocabulary 49152, 2048 positions, tied embeddings) and runs the builder on it into /tmp/smollm-builder/fp32 and
/tmp/smollm-builder/int4 (a realistic size for the comparison; about a minute per precision). `--shape qwen2.5-0.5b`
builds Qwen2.5-0.5B's shape instead (hidden 896, 24 layers, 14 q / 2 kv heads, intermediate 4864, vocabulary 151936,
tied embeddings).

Needs /work/venv-builder (onnxruntime-genai 0.18, onnxruntime 1.32; transformers and torch for --make-model).
"""
import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


# The shapes --make-model builds: a random-weight model of each real model's configuration (tied embeddings).
SHAPES = {
    "smollm-135m": dict(architecture="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                        num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                        max_position_embeddings=2048, rms_norm_eps=1e-5),
    "qwen2.5-0.5b": dict(architecture="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0),
}


def make_model(out, shape="smollm-135m"):
    import torch
    import transformers

    sys.path.insert(0, str(ROOT / "tools"))
    import make_fixtures

    out = pathlib.Path(out)
    with tempfile.TemporaryDirectory() as temporary:
        hf = pathlib.Path(temporary) / "hf"
        settings = dict(SHAPES[shape])
        architecture = settings.pop("architecture")
        common = dict(tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)
        torch.manual_seed(0)
        if architecture == "qwen2":
            config = transformers.Qwen2Config(**settings, **common)
            model = transformers.Qwen2ForCausalLM(config)
        else:
            config = transformers.LlamaConfig(**settings, **common)
            model = transformers.LlamaForCausalLM(config)
        model.eval().save_pretrained(hf, safe_serialization=True)
        tok, info = make_fixtures.train_tokenizer("llama3")
        make_fixtures.save_tokenizer(tok, info, hf)
        for precision in ("fp32", "int4"):
            folder = out / precision
            if folder.exists():
                shutil.rmtree(folder)
            subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(folder),
                            "-p", precision, "-e", "cpu", "-c", str(pathlib.Path(temporary) / "cache"),
                            "--extra_options", "hf_token=false"], check=True)
            print(f"wrote {folder}")


def bench(folder, batches, prompt_tokens, new_tokens):
    import onnxruntime_genai as og

    config = json.loads((folder / "genai_config.json").read_text())["model"]
    vocabulary = config["vocab_size"]
    start = time.perf_counter()
    model = og.Model(str(folder))
    load = time.perf_counter() - start
    rng = np.random.default_rng(11)

    def measure(batch):
        prompts = rng.integers(0, vocabulary, size=(batch, prompt_tokens), dtype=np.int32)
        params = og.GeneratorParams(model)
        total = prompt_tokens + new_tokens
        params.set_search_options(do_sample=False, max_length=total, min_length=total, batch_size=batch)
        generator = og.Generator(model, params)
        begin = time.perf_counter()
        generator.append_tokens(prompts)
        prompt_done = time.perf_counter()
        steps = 0
        while not generator.is_done():
            generator.generate_next_token()
            steps += 1
        end = time.perf_counter()
        prompt_seconds, decode_seconds = prompt_done - begin, end - prompt_done
        # append_tokens runs the prompt; the first generate_next_token picks from its logits, each later one runs the
        # model on the previous token first: steps − 1 model runs of one token per row, as ours.
        return {"batch": batch, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
                "prompt_tokens_per_second": batch * prompt_tokens / prompt_seconds,
                "decode_tokens_per_second": batch * (steps - 1) / decode_seconds if steps > 1 else 0.0,
                "prompt_seconds": prompt_seconds, "decode_seconds": decode_seconds, "decode_steps": steps}

    measure(batches[0])
    return {"runtime": f"onnxruntime-genai {og.__version__}", "model": str(folder), "load_seconds": load,
            "measurements": [measure(batch) for batch in batches]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a builder folder (genai_config.json, model.onnx) or its model.onnx")
    parser.add_argument("--batch", default="1,4")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--accuracy-level-zero", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--make-model", metavar="OUT")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm-135m",
                        help="the configuration --make-model builds (default smollm-135m)")
    args = parser.parse_args()
    if args.make_model:
        make_model(args.make_model, args.shape)
        return
    if not args.model:
        parser.error("--model or --make-model is required")
    folder = pathlib.Path(args.model)
    folder = folder.parent if folder.suffix == ".onnx" else folder
    batches = [int(b) for b in args.batch.split(",")]
    with tempfile.TemporaryDirectory() as temporary:
        if args.accuracy_level_zero:
            sys.path.insert(0, str(ROOT / "tools"))
            from make_generation_references import accuracy_level_zero

            folder = accuracy_level_zero(folder, pathlib.Path(temporary) / "model")
        result = bench(folder, batches, args.prompt_tokens, args.new_tokens)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return
    print(f"{args.model} ({result['runtime']}, load {result['load_seconds']:.2f} s)")
    for row in result["measurements"]:
        print(f"batch {row['batch']}: prompt {row['prompt_tokens_per_second']:.1f} tokens/s "
              f"({row['batch'] * row['prompt_tokens']} tokens, {row['prompt_seconds']:.3f} s)  decode "
              f"{row['decode_tokens_per_second']:.1f} tokens/s ({row['new_tokens']} new, {row['decode_seconds']:.3f} s)")


if __name__ == "__main__":
    main()
