#!/usr/bin/env python3
"""Times forward passes of an ONNX language model (inputs input_ids, attention_mask; output logits) with
onnxruntime, as the baseline for the Swift interpreter's benchmark.

    /root/venv-tools/bin/python tools/bench_forward.py --model /work/bench-model/model.onnx \\
        --batch 4 --seq 128 [--warmup 2] [--iterations 5] [--threads 2] [--json]

Session: CPUExecutionProvider, intra_op_num_threads = --threads, inter_op_num_threads = 1, graph
optimisation ORT_ENABLE_ALL (the default). Inputs: token ids drawn uniformly from [0, vocab) with
numpy's default_rng(0) (vocab read from the logits output's last dimension, else 32000) and an all-ones
attention mask, both int64 [batch, seq]; KV-cache inputs (`past_key_values.*`) empty. After --warmup untimed runs, --iterations runs are timed one by
one; tokens/s = batch * seq / median seconds per run. Peak memory is the process's ru_maxrss (converted
to bytes), so it includes the Python interpreter, the session and the loaded weights.

Prints a human line, or with --json one object:
  {"runtime": "onnxruntime", "tokens_per_second", "seconds_per_run", "peak_memory_bytes",
   "batch", "seq", "threads"}
Needs numpy and onnxruntime only.
"""
import argparse
import json
import pathlib
import resource
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort


def peak_memory_bytes():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


def main():
    parser = argparse.ArgumentParser(description="onnxruntime forward-pass benchmark")
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--seq", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])

    vocab = 32000
    for output in session.get_outputs():
        if output.name == "logits" and isinstance(output.shape[-1], int):
            vocab = output.shape[-1]
    rng = np.random.default_rng(0)
    feeds = {
        "input_ids": rng.integers(0, vocab, size=(args.batch, args.seq), dtype=np.int64),
        "attention_mask": np.ones((args.batch, args.seq), dtype=np.int64),
    }
    # A decoder with past (onnxruntime-genai's builder, optimum's with-past): the caches empty
    # ([batch, kv_heads, 0, head_size]), the whole sequence one prompt, as `onnx-dpo bench forward` feeds them.
    # A symbolic head size (the builder's `kv_cache_dim`) is read from genai_config.json beside the model.
    genai_config = pathlib.Path(args.model).parent / "genai_config.json"
    head_size = json.loads(genai_config.read_text())["model"]["decoder"]["head_size"] if genai_config.exists() else None
    for value in session.get_inputs():
        if value.name.startswith("past_key_values"):
            dims = [args.batch if axis == 0 else 0 if axis == 2 else dim if isinstance(dim, int) else head_size
                    for axis, dim in enumerate(value.shape)]
            dtype = np.float16 if value.type == "tensor(float16)" else np.float32
            feeds[value.name] = np.zeros(dims, dtype=dtype)
    names = {i.name for i in session.get_inputs()}
    missing = names - set(feeds)
    if missing:
        parser.error(f"model has inputs this benchmark does not feed: {sorted(missing)}")

    for _ in range(args.warmup):
        session.run(None, feeds)
    times = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)

    seconds = statistics.median(times)
    result = {
        "runtime": "onnxruntime",
        "tokens_per_second": args.batch * args.seq / seconds,
        "seconds_per_run": seconds,
        "peak_memory_bytes": peak_memory_bytes(),
        "batch": args.batch,
        "seq": args.seq,
        "threads": args.threads,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"onnxruntime {args.model}: batch {args.batch} seq {args.seq} threads {args.threads}: "
            f"{result['tokens_per_second']:.1f} tokens/s, {seconds * 1000:.1f} ms/run (median of "
            f"{args.iterations}; min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}), "
            f"peak memory {result['peak_memory_bytes'] / 2**20:.0f} MiB"
        )


if __name__ == "__main__":
    main()
