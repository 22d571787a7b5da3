#!/usr/bin/env python3
"""Times `onnx-dpo export` on a model (wall time and peak memory of the process), side by side with the least a
Python tool does to rewrite the same model: `onnx.load` + `onnx.save` with external data (no merge at all).

A random PEFT adapter (rank 8, non-zero A and B) on the q and v projections `onnx-dpo inspect` finds is written
first. Rounds alternate the two so machine noise hits both. Example:

    python tools/bench_export.py --bin .build/release/onnx-dpo --model /work/bench-model/model.onnx --rounds 3
"""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "interop"))


def timed(command):
    """Runs `command`; returns (seconds, peak resident MiB of that process, from wait4's rusage)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    os.environ["ONNX_DPO_BIN"] = args.bin
    import test_export  # the interop tests' random PEFT adapter writer

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        adapter = test_export.random_adapter(pathlib.Path(args.model), work / "adapter", seed=1, rank=8, alpha=16)
        resave = (
            "import onnx, sys; m = onnx.load(sys.argv[1]); "
            "onnx.save(m, sys.argv[2], save_as_external_data=True, all_tensors_to_one_file=True, "
            "location=sys.argv[2].split('/')[-1] + '.data', size_threshold=1024)"
        )
        results = {"onnx-dpo export merged": [], "onnx-dpo export lora-inputs": [], "onnx load+save": []}
        for index in range(args.rounds):
            for name in results:
                out = work / f"out-{index}.onnx"
                if name == "onnx-dpo export merged":
                    command = [args.bin, "export", "--model", args.model, "--adapter", adapter, "--output", out]
                elif name == "onnx-dpo export lora-inputs":
                    command = [args.bin, "export", "--model", args.model, "--adapter", adapter, "--form", "lora-inputs",
                               "--output", out]
                else:
                    command = [sys.executable, "-c", resave, args.model, str(out)]
                results[name].append(timed([str(c) for c in command]))
                for file in work.glob("out-*"):
                    file.unlink()
        summary = {name: {"seconds_median": round(statistics.median([s for s, _ in runs]), 2),
                          "seconds": [round(s, 2) for s, _ in runs],
                          "peak_mib_max": round(max(m for _, m in runs), 1)} for name, runs in results.items()}
        print(json.dumps(summary, indent=2))
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
