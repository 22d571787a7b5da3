#!/usr/bin/env python3
"""Side-by-side GEMM benchmark: `onnx-dpo bench gemm` (our kernels, per ISA) and torch.matmul (MKL) on the same
shapes, alternated shape by shape for --rounds rounds so both see the same machine conditions; each side's time is
its fastest repetition (on a shared machine the slower ones measure the other work), and the best GFLOP/s over the
rounds is reported per shape, with the ratio ours / torch.

    python tools/bench_gemm.py --bin .build/release/onnx-dpo [--isa avx512,avx2] [--rounds 2] [--threads 2] [--json]

The shapes come from `onnx-dpo bench gemm --json` (SmolLM-135M and Qwen2.5-0.5B DPO-step products, see
Sources/Interpreter/GEMMBenchmark.swift), so both sides always time the same list. Layouts match: op(B) = Bᵀ is
a transposed view of a row-major [n, k] tensor on the torch side, as B with ldb = k is on ours. Needs torch
(x86 wheels call MKL's sgemm for fp32 matmul). No environment variable is set for either side.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def time_torch(torch, shape, minimum_seconds):
    m, n, k = shape["m"], shape["n"], shape["k"]
    generator = torch.Generator().manual_seed(7)
    a = torch.rand(k, m, generator=generator).t() if shape["transpose_a"] else torch.rand(m, k, generator=generator)
    b = torch.rand(n, k, generator=generator).t() if shape["transpose_b"] else torch.rand(k, n, generator=generator)
    out = torch.empty(m, n)
    torch.matmul(a, b, out=out)
    times = []
    while sum(times) < minimum_seconds or len(times) < 3:
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", required=True, help="the onnx-dpo executable (a release build)")
    parser.add_argument("--isa", default="avx512,avx2", help="ISAs for onnx-dpo bench gemm --isa")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="threads for both sides (torch intra-op threads)")
    parser.add_argument("--min-seconds", type=float, default=0.3)
    parser.add_argument("--mkl-isa", help="cap MKL's ISA (MKL_ENABLE_INSTRUCTIONS, e.g. AVX2) to compare like with "
                        "like against a forced lower ISA of ours")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()

    if args.mkl_isa:
        # Read by MKL's dispatcher when it first runs, so it must be set before torch loads.
        os.environ["MKL_ENABLE_INSTRUCTIONS"] = args.mkl_isa
    import torch
    torch.set_num_threads(args.threads)

    ours = {}   # (isa, b_path, name) -> best GFLOP/s
    theirs = {}  # name -> best GFLOP/s
    shapes = {}
    best_isa = None
    def run_ours(only):
        command = [args.bin, "bench", "gemm", "--isa", args.isa, "--json", "--min-seconds", str(args.min_seconds),
                   "--threads", str(args.threads)]
        if only:
            command += ["--only", only]
        return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)

    # The list of shapes, from a run that times nothing.
    listing = json.loads(subprocess.run([args.bin, "bench", "gemm", "--isa", "none", "--json"], capture_output=True,
                                        text=True, check=True).stdout)
    best_isa = listing["best_isa"]
    # Machines shared with other work are noisy: alternate the two sides shape by shape, keep the best of each.
    for round_index in range(args.rounds):
        for name in listing["shape_names"]:
            for measurement in run_ours(name)["measurements"]:
                shape = measurement["shape"]
                if shape["name"] != name:
                    continue
                shapes[name] = shape
                key = (measurement["isa"], measurement["b_path"], name)
                ours[key] = max(ours.get(key, 0), measurement["gflops"])
            seconds = time_torch(torch, shapes[name], args.min_seconds)
            gflops = 2 * shapes[name]["m"] * shapes[name]["n"] * shapes[name]["k"] / seconds / 1e9
            theirs[name] = max(theirs.get(name, 0), gflops)
        print(f"round {round_index + 1} of {args.rounds} done", file=sys.stderr)

    isas = [isa for isa in args.isa.split(",") if any(key[0] == isa for key in ours)]
    header = f"{'shape':34} {'m x n x k':>22} {'torch':>7}"
    for isa in isas:
        header += f" {isa:>8} {'ratio':>6} {isa + ' pk':>10} {'ratio':>6}"
    print(f"GFLOP/s from the fastest repetition, best of {args.rounds} rounds; torch {torch.__version__} with {args.threads} threads"
          f"{', MKL_ENABLE_INSTRUCTIONS=' + args.mkl_isa if args.mkl_isa else ''}; "
          f"our best ISA here: {best_isa}")
    print(header)
    rows = []
    for name, shape in shapes.items():
        line = f"{name:34} {shape['m']:>6} x {shape['n']:>6} x {shape['k']:>6} {theirs[name]:7.1f}"
        row = {"shape": shape, "torch_gflops": theirs[name]}
        for isa in isas:
            plain = ours.get((isa, "plain", name))
            packed = ours.get((isa, "packed", name))
            line += f" {plain:8.1f} {plain / theirs[name]:6.2f}"
            line += f" {packed:10.1f} {packed / theirs[name]:6.2f}" if packed else f" {'-':>10} {'-':>6}"
            row[isa] = {"plain_gflops": plain, "packed_gflops": packed}
        rows.append(row)
        print(line)
    for isa in isas:
        ratios = [ours[(isa, "plain", name)] / theirs[name] for name in shapes]
        print(f"{isa}: plain ours/torch min {min(ratios):.2f}, median {statistics.median(ratios):.2f}; "
              f"shapes at >= 0.85: {sum(r >= 0.85 for r in ratios)} of {len(ratios)}")
    if args.json:
        print(json.dumps({"torch": torch.__version__, "threads": args.threads, "rounds": args.rounds,
                          "best_isa": best_isa, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
