#!/usr/bin/env python3
"""Side-by-side forward benchmark: `onnx-dpo bench forward` and tools/bench_forward.py (onnxruntime) on the same
model and shapes, alternated for --rounds rounds so that both see the same machine conditions, then the medians
of each and their ratio.

    python tools/compare_forward.py --bin .build/release/onnx-dpo --model /tmp/smollm/model.onnx \\
        --batch 4 --seq 128 [--rounds 5] [--iterations 5] [--threads 2]

Needs numpy and onnxruntime (for the onnxruntime side). Prints one line per run, then a summary and, last, a
JSON object with both medians, the per-round ratios and their median.
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent


def run_json(command):
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", required=True, help="the onnx-dpo executable (a release build)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    shape = ["--batch", str(args.batch), "--seq", str(args.seq), "--warmup", str(args.warmup),
             "--iterations", str(args.iterations)]
    ours_command = [args.bin, "bench", "forward", "--model", args.model, *shape, "--json"]
    ort_command = [sys.executable, str(HERE / "bench_forward.py"), "--model", args.model, *shape,
                   "--threads", str(args.threads), "--json"]
    ours, theirs, ratios = [], [], []
    for round_index in range(args.rounds):
        a = run_json(ort_command)
        b = run_json(ours_command)
        theirs.append(a)
        ours.append(b)
        ratios.append(b["tokens_per_second"] / a["tokens_per_second"])
        print(f"round {round_index + 1}: onnxruntime {a['tokens_per_second']:.1f} tok/s "
              f"({a['peak_memory_bytes'] / 2**20:.0f} MiB), onnx-dpo {b['tokens_per_second']:.1f} tok/s "
              f"({b['peak_memory_bytes'] / 2**20:.0f} MiB), ratio {ratios[-1]:.2f}", flush=True)

    def median(runs, key):
        return statistics.median(run[key] for run in runs)

    summary = {
        "batch": args.batch, "seq": args.seq, "rounds": args.rounds, "threads": args.threads,
        "onnxruntime_tokens_per_second": median(theirs, "tokens_per_second"),
        "onnx_dpo_tokens_per_second": median(ours, "tokens_per_second"),
        "onnxruntime_peak_memory_bytes": median(theirs, "peak_memory_bytes"),
        "onnx_dpo_peak_memory_bytes": median(ours, "peak_memory_bytes"),
        "ratios": [round(r, 3) for r in ratios],
        "median_ratio": statistics.median(ratios),
    }
    print(f"median: onnxruntime {summary['onnxruntime_tokens_per_second']:.1f} tok/s, "
          f"onnx-dpo {summary['onnx_dpo_tokens_per_second']:.1f} tok/s, "
          f"median per-round ratio {summary['median_ratio']:.2f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
