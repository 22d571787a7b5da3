#!/usr/bin/env python3
"""Reference re-quantisations for `export --form merged` on MatMulNBits bases (fixtures/requantization/cases.npz):
onnxruntime's own blockwise quantizer (`quantize_matmul_4bits` / `quantize_matmul_8bits` from
onnxruntime.capi._pybind_state, what `MatMulNBitsQuantizer` and onnxruntime-genai's builder call) on a small fp32
weight, for 4 and 8 bits, symmetric and with zero points, K = 72 (a ragged last block of 32) and block 16 / 32.

Per case NAME (bits, block, symmetric): NAME.weight float32 [N, K] (the input, as MatMulNBits' [N, K] rows), and
onnxruntime's NAME.codes uint8 [N, blocks, block·bits/8], NAME.scales float32 [N, blocks], NAME.zero_points uint8
[N, ⌈blocks·bits/8⌉] (all 0 in onnxruntime's buffer for symmetric cases: the node then has no zero points).
The weights hold some exact ties (x.5 steps) and a constant-zero block, so rounding and s = 0 are exercised.

    /work/venv-builder/bin/python tools/make_requantization_references.py
"""
import pathlib

import numpy as np
from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "requantization" / "cases.npz"
N, K = 8, 72


def main():
    rng = np.random.default_rng(20261129)
    weight = (rng.standard_normal((N, K)) * 0.05).astype(np.float32)
    weight[1, :32] = 0                                   # a constant-zero block: scale 0
    weight[2, :32] = np.arange(32, dtype=np.float32) - 16  # integers: with s = 16/8 = 2, half-integer ratios are ties
    weight[3, 32:64] = np.abs(weight[3, 32:64])          # one-signed block
    arrays = {}
    for bits in (4, 8):
        for block in (16, 32):
            for symmetric in (True, False):
                name = f"bits{bits}_block{block}_{'symmetric' if symmetric else 'zero_points'}"
                blocks = (K + block - 1) // block
                padded = np.zeros((blocks * block, N), np.float32)
                padded[:K] = weight.T
                codes = np.zeros((N, blocks, block * bits // 8), np.uint8)
                scales = np.zeros((N, blocks), np.float32)
                zero_points = np.zeros((N, (blocks * bits + 7) // 8), np.uint8)
                quantize = quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits
                quantize(codes, padded, scales, zero_points, block, N, blocks * block, symmetric)
                arrays.update({f"{name}.codes": codes, f"{name}.scales": scales, f"{name}.zero_points": zero_points})
    arrays["weight"] = weight
    np.savez(OUT, **arrays)
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes, {len(arrays)} arrays)")


if __name__ == "__main__":
    main()
