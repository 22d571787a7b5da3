"""Reference cases for MatMul and Gemm (see tools/make_op_references.py for the format)."""
import numpy as np

rng = np.random.default_rng(7)


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


CASES = []

for label, a, b in [
    ("2d", (3, 4), (4, 5)),
    ("batched_weight", (2, 3, 4), (4, 5)),
    ("batched_both", (2, 3, 4), (2, 4, 5)),
    ("broadcast_batch", (2, 1, 3, 4), (3, 4, 5)),
    ("broadcast_a_batch", (3, 4), (2, 4, 5)),
    ("vector_left", (4,), (2, 4, 5)),
    ("vector_right", (2, 3, 4), (4,)),
    ("vector_both", (4,), (4,)),
    ("attention_scores", (2, 3, 6, 8), (2, 3, 8, 6)),
    ("zero_rows", (2, 0, 4), (4, 5)),
    ("zero_inner", (2, 3, 0), (0, 5)),
]:
    CASES.append({"name": f"matmul_{label}", "op": "MatMul", "opset": 13,
                  "inputs": [("a", f32(*a)), ("b", f32(*b))]})
CASES.append({"name": "matmul_int64", "op": "MatMul", "opset": 13,
              "inputs": [("a", rng.integers(-5, 5, (2, 3, 4)).astype(np.int64)),
                         ("b", rng.integers(-5, 5, (4, 2)).astype(np.int64))],
              "reference": lambda a, b: [np.matmul(a, b)]})

for transA in (0, 1):
    for transB in (0, 1):
        a = f32(4, 3) if transA else f32(3, 4)
        b = f32(5, 4) if transB else f32(4, 5)
        CASES.append({"name": f"gemm_tA{transA}_tB{transB}", "op": "Gemm", "opset": 13,
                      "inputs": [("a", a), ("b", b), ("c", f32(3, 5))],
                      "attrs": {"transA": transA, "transB": transB, "alpha": 0.5, "beta": 2.0}})
CASES.append({"name": "gemm_bias_row", "op": "Gemm", "opset": 13,
              "inputs": [("a", f32(3, 4)), ("b", f32(4, 5)), ("c", f32(5))]})
CASES.append({"name": "gemm_bias_scalar", "op": "Gemm", "opset": 13,
              "inputs": [("a", f32(3, 4)), ("b", f32(5, 4)), ("c", f32(1))], "attrs": {"transB": 1}})
CASES.append({"name": "gemm_no_c", "op": "Gemm", "opset": 13,
              "inputs": [("a", f32(3, 4)), ("b", f32(4, 5))], "attrs": {"alpha": 1.5}})
CASES.append({"name": "gemm_opset21", "op": "Gemm", "opset": 21,
              "inputs": [("a", f32(2, 4)), ("b", f32(4, 3)), ("c", f32(2, 3))]})

# onnxruntime's contrib FusedMatMul (what GraphOptimizer writes for Transpose -> MatMul).
for label, a, b, attrs in [
    ("transB", (2, 3, 4), (5, 4), {"transB": 1}),
    ("transA", (2, 4, 3), (2, 4, 5), {"transA": 1}),
    ("both_alpha", (2, 3, 4, 6), (3, 5, 4), {"transA": 1, "transB": 1, "alpha": 0.125}),
    ("attention", (2, 3, 6, 8), (2, 3, 6, 8), {"transB": 1}),
    ("plain", (3, 4), (4, 5), {}),
]:
    CASES.append({"name": f"fusedmatmul_{label}", "op": "FusedMatMul", "domain": "com.microsoft", "opset": 17,
                  "inputs": [("a", f32(*a)), ("b", f32(*b))], "attrs": attrs, "output_type": 1})
