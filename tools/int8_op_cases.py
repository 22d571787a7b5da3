"""One-node reference cases for the ops of onnxruntime's dynamically quantised graphs (onnx-community `model_int8`,
`model_uint8`, `model_quantized`; issue 9): DynamicQuantizeLinear, MatMulInteger, and the com.microsoft ops
onnxruntime's optimiser fuses them into, DynamicQuantizeMatMul and MatMulIntegerToFloat. Same format as
tools/op_cases/*.py (see tools/make_op_references.py); written by `tools/make_int8_fixtures.py ops` into
fixtures/int8/ops/, references computed by onnxruntime (numpy only where onnxruntime's CPU kernel refuses what the
spec allows, named per case)."""
import numpy as np
from onnx import TensorProto

from _builder import make_case

CASES = []
MS = "com.microsoft"


def case(name, op, opset, inputs, attrs=None, outputs=None, domain=None, reference=None):
    entry = make_case(name, op, opset, inputs, attrs, outputs, reference)
    if domain:
        # Contrib ops: the model imports default opset `opset` beside com.microsoft 1, and declares the float output.
        entry["domain"] = domain
        entry["output_type"] = TensorProto.FLOAT
    CASES.append(entry)


rng = np.random.default_rng(8)


def normal(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def integers(dtype, *shape, low=None, high=None):
    info = np.iinfo(dtype)
    return rng.integers(info.min if low is None else low, (info.max if high is None else high) + 1, size=shape).astype(dtype)


DQL = ["y", "y_scale", "y_zero_point"]

# --- DynamicQuantizeLinear (11) ------------------------------------------------------------------------------------
case("dynamicquantizelinear_mixed", "DynamicQuantizeLinear", 11, [("x", normal(2, 3, 8))], outputs=DQL)
case("dynamicquantizelinear_rank4", "DynamicQuantizeLinear", 11, [("x", normal(1, 4, 5, 6, scale=3))], outputs=DQL)
# Positive only: the range is widened to include 0, so min = 0 and the zero point is 0.
case("dynamicquantizelinear_positive", "DynamicQuantizeLinear", 11,
     [("x", np.abs(normal(3, 7)) + np.float32(0.5))], outputs=DQL)
# Negative only: max = 0, zero point 255.
case("dynamicquantizelinear_negative", "DynamicQuantizeLinear", 11,
     [("x", -np.abs(normal(3, 7)) - np.float32(0.5))], outputs=DQL)
# All zeros: onnxruntime takes scale 1 (max = min), the spec would divide by zero.
case("dynamicquantizelinear_zeros", "DynamicQuantizeLinear", 11, [("x", np.zeros((2, 5), np.float32))], outputs=DQL)
# Ties: range [0, 255] gives scale 1 exactly, so x / scale lands on .5: rounded half to even.
case("dynamicquantizelinear_ties_unsigned", "DynamicQuantizeLinear", 11,
     [("x", np.array([0.5, 1.5, 2.5, 3.5, 4.5, 100.5, 253.5, 254.5, 255.0, 0.0], np.float32))], outputs=DQL)
# Range [-128, 127]: scale 1, zero point 128; ties on both sides of zero.
case("dynamicquantizelinear_ties_signed", "DynamicQuantizeLinear", 11,
     [("x", np.array([-128.0, -127.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 126.5, 127.0], np.float32))], outputs=DQL)
# A zero point on a tie: min = -1.5, max = 253.5, scale 1, initial zero point 1.5 -> 2.
case("dynamicquantizelinear_zero_point_tie", "DynamicQuantizeLinear", 11,
     [("x", np.array([-1.5, -0.5, 0.0, 0.5, 10.25, 253.5], np.float32))], outputs=DQL)

# --- MatMulInteger (10) --------------------------------------------------------------------------------------------
# The quantizer's QInt8 projection: uint8 activations and their zero point, int8 weights with zero point 0.
case("matmulinteger_uint8_int8", "MatMulInteger", 10,
     [("a", integers(np.uint8, 2, 3, 16)), ("b", integers(np.int8, 16, 8)), ("a_zero_point", np.uint8(131)),
      ("b_zero_point", np.int8(0))])
# QUInt8 weights (model_uint8) with a zero point.
case("matmulinteger_uint8_uint8", "MatMulInteger", 10,
     [("a", integers(np.uint8, 5, 16)), ("b", integers(np.uint8, 16, 8)), ("a_zero_point", np.uint8(7)),
      ("b_zero_point", np.uint8(200))])
# Per-channel weights: one zero point per column of B.
case("matmulinteger_b_zero_point_per_column", "MatMulInteger", 10,
     [("a", integers(np.uint8, 2, 4, 16)), ("b", integers(np.uint8, 16, 6)), ("a_zero_point", np.uint8(128)),
      ("b_zero_point", integers(np.uint8, 6))])
case("matmulinteger_no_zero_points", "MatMulInteger", 10, [("a", integers(np.uint8, 3, 16)), ("b", integers(np.int8, 16, 5))])
case("matmulinteger_batched_b", "MatMulInteger", 10,
     [("a", integers(np.uint8, 2, 3, 8)), ("b", integers(np.int8, 2, 8, 4)), ("a_zero_point", np.uint8(3))])
case("matmulinteger_vector_a", "MatMulInteger", 10,
     [("a", integers(np.uint8, 16)), ("b", integers(np.int8, 16, 4)), ("a_zero_point", np.uint8(100))])
# Inner axis 600 of extreme values: |sums| up to 600·255·128 ≈ 1.96e7 > 2^24, beyond float's exact integers, so the
# accumulation must be exact integer arithmetic (it is sliced in 256s here).
case("matmulinteger_long_inner_axis", "MatMulInteger", 10,
     [("a", np.full((2, 600), 255, np.uint8)), ("b", np.full((600, 3), -128, np.int8)), ("a_zero_point", np.uint8(0))])


def matmulinteger_per_row(a, b, a_zero_point, b_zero_point):
    centered_a = a.astype(np.int64) - a_zero_point.astype(np.int64)[:, None]
    centered_b = b.astype(np.int64) - b_zero_point.astype(np.int64)
    return [(centered_a @ centered_b).astype(np.int32)]


# Per-row zero points of A: the spec allows them, onnxruntime's CPU kernel refuses ("input1 zero point must be a
# scalar or 1D tensor of size 1"), so numpy computes the reference.
case("matmulinteger_a_zero_point_per_row", "MatMulInteger", 10,
     [("a", integers(np.uint8, 4, 16)), ("b", integers(np.uint8, 16, 5)), ("a_zero_point", integers(np.uint8, 4)),
      ("b_zero_point", np.uint8(9))], reference=matmulinteger_per_row)


# --- com.microsoft DynamicQuantizeMatMul (1) -------------------------------------------------------------------------
case("dynamicquantizematmul_int8", "DynamicQuantizeMatMul", 21,
     [("a", normal(2, 3, 16)), ("b", integers(np.int8, 16, 8, low=-127)), ("b_scale", np.float32(0.013)),
      ("b_zero_point", np.int8(0))], domain=MS)
case("dynamicquantizematmul_uint8_bias", "DynamicQuantizeMatMul", 21,
     [("a", normal(4, 16)), ("b", integers(np.uint8, 16, 8)), ("b_scale", np.float32(0.02)),
      ("b_zero_point", np.uint8(119)), ("bias", normal(8))], domain=MS)
case("dynamicquantizematmul_per_column", "DynamicQuantizeMatMul", 21,
     [("a", normal(2, 5, 16)), ("b", integers(np.uint8, 16, 6)), ("b_scale", np.abs(normal(6, scale=0.02)) + 0.001),
      ("b_zero_point", integers(np.uint8, 6))], domain=MS)
case("dynamicquantizematmul_no_zero_point", "DynamicQuantizeMatMul", 21,
     [("a", normal(3, 16)), ("b", integers(np.int8, 16, 4)), ("b_scale", np.array([0.05], np.float32))], domain=MS)

# --- com.microsoft MatMulIntegerToFloat (1) --------------------------------------------------------------------------
case("matmulintegertofloat_uint8_int8", "MatMulIntegerToFloat", 21,
     [("a", integers(np.uint8, 2, 3, 16)), ("b", integers(np.int8, 16, 8)), ("a_scale", np.float32(0.011)),
      ("b_scale", np.float32(0.007)), ("a_zero_point", np.uint8(121)), ("b_zero_point", np.int8(0))], domain=MS)
case("matmulintegertofloat_per_column_bias", "MatMulIntegerToFloat", 21,
     [("a", integers(np.uint8, 4, 16)), ("b", integers(np.uint8, 16, 6)), ("a_scale", np.float32(0.03)),
      ("b_scale", np.abs(normal(6, scale=0.01)) + 0.001), ("a_zero_point", np.uint8(128)),
      ("b_zero_point", integers(np.uint8, 6)), ("bias", normal(6))], domain=MS)
