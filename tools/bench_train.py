#!/usr/bin/env python3
"""Times one DPO training step in plain PyTorch + PEFT (no TRL trainer), as the baseline for
`onnx-dpo bench train`.

    /root/venv-tools/bin/python tools/bench_train.py --model-config sm135 --pairs 2 --seq 128 \\
        [--steps 5] [--warmup 1] [--threads 2] [--reference-every-step] [--json]

Model (--model-config):
  sm135  SmolLM-135M-shaped Llama, the config of tools/make_bench_model.py (hidden 576, 30 layers, 9 heads,
         3 key-value heads, intermediate 1536, vocab 49152, tied embeddings, max positions 2048, rms eps 1e-5,
         eager attention), random weights: torch.manual_seed(0) then AutoModelForCausalLM.from_config(config)
         (LlamaForCausalLM, or Qwen2ForCausalLM for qwen05), float32.
         (make_bench_model.py builds its config inside main(), so it is repeated here, not imported.)
  qwen05 Qwen2.5-0.5B-shaped Qwen2, the config of `tools/make_bench_model.py --shape qwen2.5-0.5b` (hidden 896,
         24 layers, 14 heads, 2 key-value heads, intermediate 4864, vocab 151936, tied embeddings, max positions
         32768, rms eps 1e-6, rope theta 1e6, eager attention), random weights as above.
  tiny   2 layers, hidden 64, vocab 512 (for a quick smoke test only).
LoRA: PEFT LoraConfig(r=8, lora_alpha=16, lora_dropout=0, target_modules=["q_proj", "v_proj"], bias="none").

Data: --pairs preference pairs of --seq tokens each, ids drawn uniformly from [0, vocab) with numpy
default_rng(0); the first --prompt-tokens (default seq/2) are a prompt shared by chosen and rejected, the rest is
the completion (completion mask 1 there); no padding, all-ones attention mask.

One step (as onnx-dpo does it, with reference log-probs cached):
  policy forward of [chosen rows; rejected rows] concatenated ([2*pairs, seq]), full logits, log_softmax,
  gather at t-1, sum over completion tokens; sigmoid DPO loss (beta 0.1) against reference log-probs that were
  computed once before timing (adapter disabled, no_grad); backward; torch.optim.AdamW(lr 1e-3, weight decay 0)
  step; zero_grad.
With --reference-every-step the same loop is also timed with the reference log-probs recomputed inside every
step (adapter disabled, no_grad), as TRL does by default, and both numbers are reported.

After --warmup untimed steps, --steps steps are timed one by one; step_seconds is the median;
tokens_per_second = 2 * pairs * seq / step_seconds. step_times lists every timed step (step_seconds_min is the fastest); cpu_seconds_per_step is the
median process CPU time per step (all threads), less sensitive to other load on a shared machine, and the 1-minute
load averages at start and end are recorded for the same reason. Peak memory: the process's ru_maxrss in bytes (includes the
interpreter, torch and the weights), read right after the cached-reference loop (peak_memory_bytes) and at the end
(peak_memory_bytes_reference_every_step; ru_maxrss never decreases, so that one is >= the first).

Prints a human line, or with --json one object:
  {"runtime": "pytorch+peft", "step_seconds", "tokens_per_second", "peak_memory_bytes", "pairs", "seq",
   "prompt_tokens", "threads", "steps", "model_config", "parameters", "trainable_parameters", "losses",
   ["step_seconds_reference_every_step", "tokens_per_second_reference_every_step",
    "peak_memory_bytes_reference_every_step", "losses_reference_every_step"], "versions"}
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import peft
import torch
import torch.nn.functional as F
import transformers

BETA = 0.1
LOAD_AT_START = os.getloadavg()[0]


def peak_memory_bytes():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


def make_config(name):
    common = dict(
        bos_token_id=0, eos_token_id=0, pad_token_id=0, attn_implementation="eager",
        tie_word_embeddings=True, rms_norm_eps=1e-5,
    )
    if name == "sm135":
        return transformers.LlamaConfig(
            hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
            intermediate_size=1536, vocab_size=49152, max_position_embeddings=2048, **common,
        )
    if name == "qwen05":
        common["rms_norm_eps"] = 1e-6
        return transformers.Qwen2Config(
            hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
            intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0,
            **common,
        )
    if name == "tiny":
        return transformers.LlamaConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=512, max_position_embeddings=2048, **common,
        )
    raise ValueError(name)


def sequence_logps(model, input_ids, attention_mask, completion_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    per_token = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (per_token * completion_mask[:, 1:]).sum(dim=1)


def reference_logps(model, batch):
    with torch.no_grad(), model.disable_adapter():
        return sequence_logps(model, *batch)


def run(model, optimizer, batch, pairs, steps, warmup, cached_ref):
    times, cpu_times, losses = [], [], []
    for i in range(warmup + steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        ref = cached_ref if cached_ref is not None else reference_logps(model, batch)
        logps = sequence_logps(model, *batch)
        chosen, rejected = logps[:pairs], logps[pairs:]
        ref_chosen, ref_rejected = ref[:pairs], ref[pairs:]
        loss = -F.logsigmoid(BETA * ((chosen - ref_chosen) - (rejected - ref_rejected))).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if i >= warmup:
            times.append(elapsed)
            cpu_times.append(cpu)
            losses.append(loss.item())
    return statistics.median(times), losses, times, statistics.median(cpu_times)


def main():
    parser = argparse.ArgumentParser(description="PyTorch + PEFT DPO training-step benchmark")
    parser.add_argument("--model-config", default="sm135", choices=["sm135", "qwen05", "tiny"])
    parser.add_argument("--pairs", type=int, required=True)
    parser.add_argument("--seq", type=int, required=True)
    parser.add_argument("--prompt-tokens", type=int, default=None, help="default: seq // 2")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference-every-step", action="store_true",
                        help="also time the loop with reference log-probs recomputed every step (TRL's default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    prompt_tokens = args.seq // 2 if args.prompt_tokens is None else args.prompt_tokens
    if args.steps < 1 or not 1 <= prompt_tokens < args.seq:
        parser.error("need --steps >= 1 and 1 <= --prompt-tokens < --seq")

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    transformers.logging.set_verbosity_error()

    config = make_config(args.model_config)
    torch.manual_seed(0)
    base = transformers.AutoModelForCausalLM.from_config(config).to(torch.float32)
    assert base.config._attn_implementation == "eager"
    parameters = sum(p.numel() for p in base.parameters())
    lora = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], bias="none",
                           task_type="CAUSAL_LM")
    model = peft.get_peft_model(base, lora)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]

    rng = np.random.default_rng(0)
    prompt = rng.integers(0, config.vocab_size, size=(args.pairs, prompt_tokens))
    completion_len = args.seq - prompt_tokens
    chosen = rng.integers(0, config.vocab_size, size=(args.pairs, completion_len))
    rejected = rng.integers(0, config.vocab_size, size=(args.pairs, completion_len))
    ids = np.concatenate([np.concatenate([prompt, chosen], 1), np.concatenate([prompt, rejected], 1)], 0)
    input_ids = torch.from_numpy(ids).long()
    attention_mask = torch.ones_like(input_ids)
    completion_mask = torch.zeros(input_ids.shape, dtype=torch.float32)
    completion_mask[:, prompt_tokens:] = 1
    batch = (input_ids, attention_mask, completion_mask)

    def fresh_optimizer():
        return torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.0)

    cached = reference_logps(model, batch)  # once, before timing, as onnx-dpo caches it
    adapter_state = {k: v.clone() for k, v in peft.get_peft_model_state_dict(model).items()}
    step_seconds, losses, step_times, cpu_seconds = run(model, fresh_optimizer(), batch, args.pairs, args.steps, args.warmup, cached)
    peak = peak_memory_bytes()
    tokens = 2 * args.pairs * args.seq
    result = {
        "runtime": "pytorch+peft",
        "step_seconds": step_seconds,
        "tokens_per_second": tokens / step_seconds,
        "peak_memory_bytes": peak,
        "pairs": args.pairs,
        "seq": args.seq,
        "prompt_tokens": prompt_tokens,
        "threads": args.threads,
        "steps": args.steps,
        "warmup": args.warmup,
        "model_config": args.model_config,
        "parameters": parameters,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "reference": "precomputed once",
        "losses": losses,
        "step_times": step_times,
        "step_seconds_min": min(step_times),
        "cpu_seconds_per_step": cpu_seconds,
        "load_average_1min_at_start": LOAD_AT_START,
    }
    if args.reference_every_step:
        peft.set_peft_model_state_dict(model, adapter_state)  # restart from the same adapter
        seconds, losses_every, times_every, cpu_every = run(model, fresh_optimizer(), batch, args.pairs, args.steps, args.warmup, None)
        result.update(
            step_seconds_reference_every_step=seconds,
            tokens_per_second_reference_every_step=tokens / seconds,
            peak_memory_bytes_reference_every_step=peak_memory_bytes(),
            losses_reference_every_step=losses_every,
            step_times_reference_every_step=times_every,
            step_seconds_min_reference_every_step=min(times_every),
            cpu_seconds_per_step_reference_every_step=cpu_every,
        )
    result["load_average_1min_at_end"] = os.getloadavg()[0]
    result["versions"] = dict(torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__)

    if args.json:
        print(json.dumps(result))
    else:
        line = (f"pytorch+peft {args.model_config}: {args.pairs} pairs x {args.seq} tokens, {args.threads} threads: "
                f"{step_seconds:.3f} s/step, {result['tokens_per_second']:.1f} tokens/s, "
                f"peak {peak / 2**20:.0f} MiB")
        if args.reference_every_step:
            line += (f" | reference every step: {result['step_seconds_reference_every_step']:.3f} s/step, "
                     f"{result['tokens_per_second_reference_every_step']:.1f} tokens/s")
        print(line)


if __name__ == "__main__":
    main()
