"""Reference cases for the elementwise, comparison, activation, normalisation and reduction ops
(see tools/make_op_references.py for the format)."""
import numpy as np

from _builder import make_case
from onnx import TensorProto

CASES = []


def case(name, op, opset, inputs, attrs=None, outputs=None, reference=None):
    CASES.append(make_case(name, op, opset, inputs, attrs, outputs, reference))


# Broadcasting shape pairs every binary op is run over.
BINARY_SHAPES = [
    ("same", (2, 3, 4), (2, 3, 4)),
    ("scalar_right", (2, 3, 4), ()),
    ("scalar_left", (), (2, 3, 4)),
    ("both_scalar", (), ()),
    ("trailing", (2, 3, 4), (4,)),
    ("both_ways", (2, 1, 4), (3, 1)),
    ("zero_size", (2, 0, 4), (4,)),
    ("zero_size_broadcast", (0, 1), (1, 3)),
]

# --- Arithmetic: Add, Sub, Mul, Div ---------------------------------------------------------------------------
rng = np.random.default_rng(1)
for op, opset in [("Add", 14), ("Sub", 14), ("Mul", 14), ("Div", 14)]:
    for label, a_shape, b_shape in BINARY_SHAPES:
        a = rng.standard_normal(a_shape).astype(np.float32)
        b = rng.standard_normal(b_shape).astype(np.float32)
        if op == "Div":
            b = (np.sign(b) + (b == 0)) * (np.abs(b) + 0.5)  # keep divisors away from 0
            b = np.asarray(b, dtype=np.float32)
        case(f"{op.lower()}_{label}", op, opset, [("a", a), ("b", b)])
    # Integers: int64 (Div truncates toward zero, with negative operands), int32 and uint8 wrapping.
    a = rng.integers(-50, 50, (2, 3, 4)).astype(np.int64)
    b = rng.integers(1, 7, (3, 1)).astype(np.int64) * np.array([[1], [-1], [1]], dtype=np.int64)
    case(f"{op.lower()}_int64_broadcast", op, opset, [("a", a), ("b", b)])
    big = np.array([2**31 - 2, -(2**31) + 1, 65_537, -7], dtype=np.int32)
    case(f"{op.lower()}_int32_wraps", op, opset,
         [("a", big), ("b", np.array([3, 5, 65_537, 2], dtype=np.int32))])
    case(f"{op.lower()}_uint8_wraps", op, opset,
         [("a", np.array([200, 7, 255, 16], dtype=np.uint8)), ("b", np.array([100, 9, 3, 16], dtype=np.uint8))])
    case(f"{op.lower()}_float16", op, opset,
         [("a", rng.standard_normal((3, 4)).astype(np.float16)),
          ("b", (rng.standard_normal((4,)) + 3).astype(np.float16))])
    case(f"{op.lower()}_opset13", op, 13,
         [("a", rng.standard_normal((2, 3)).astype(np.float32)),
          ("b", (rng.standard_normal((3,)) + 3).astype(np.float32))])
case("div_by_zero_float", "Div", 14,
     [("a", np.array([1, -1, 0, 2], dtype=np.float32)), ("b", np.array([0, 0, 0, -0.0], dtype=np.float32))])

# --- Pow ------------------------------------------------------------------------------------------------------
rng = np.random.default_rng(2)
for label, a_shape, b_shape in BINARY_SHAPES:
    base = (np.abs(rng.standard_normal(a_shape)) + 0.1).astype(np.float32)
    exponent = rng.standard_normal(b_shape).astype(np.float32)
    case(f"pow_{label}", "Pow", 15, [("x", base), ("e", exponent)])
signed = rng.standard_normal((2, 3, 4)).astype(np.float32) * 3
signed[0, 0, :3] = [0.0, -0.0, -np.inf]
for label, value in [("square", 2.0), ("sqrt", 0.5), ("cube", 3.0), ("one", 1.0), ("minus_one", -1.0)]:
    x = np.abs(signed) if label == "sqrt" else signed
    if label == "sqrt":
        x[0, 0, :3] = [0.0, -0.0, -np.inf]
    case(f"pow_scalar_{label}", "Pow", 15, [("x", x), ("e", np.array(value, dtype=np.float32))])
case("pow_scalar_square_broadcast_up", "Pow", 15,
     [("x", rng.standard_normal((3, 4)).astype(np.float32)), ("e", np.full((2, 1, 1), 2.0, dtype=np.float32))])
case("pow_negative_base_fractional", "Pow", 15,
     [("x", np.array([-2, -1.5, 2, 0], dtype=np.float32)), ("e", np.array([0.5, 2, -1, -1], dtype=np.float32))])
case("pow_float_base_int64_exponent", "Pow", 15,
     [("x", rng.standard_normal((2, 3)).astype(np.float32)), ("e", np.array([0, 2, 3], dtype=np.int64))])
case("pow_int64", "Pow", 15,
     [("x", np.array([[2, -3, 5, 1], [-1, 7, 0, 3]], dtype=np.int64)), ("e", np.array([3, 2, 0, -2], dtype=np.int64))])
case("pow_int64_float_exponent", "Pow", 15,
     [("x", np.array([2, 3, 10, 4], dtype=np.int64)), ("e", np.array([0.5, 2.7, -1, 1.5], dtype=np.float32))])
case("pow_float16", "Pow", 15,
     [("x", (np.abs(rng.standard_normal((3, 4))) + 0.5).astype(np.float16)), ("e", np.array(2, dtype=np.float16))])
case("pow_opset13", "Pow", 13,
     [("x", (np.abs(rng.standard_normal((3, 4))) + 0.5).astype(np.float32)),
      ("e", rng.standard_normal((4,)).astype(np.float32))])

# --- Max ------------------------------------------------------------------------------------------------------
rng = np.random.default_rng(3)
case("max_single_input", "Max", 13, [("a", rng.standard_normal((2, 3)).astype(np.float32))])
for label, a_shape, b_shape in BINARY_SHAPES:
    case(f"max_{label}", "Max", 13,
         [("a", rng.standard_normal(a_shape).astype(np.float32)),
          ("b", rng.standard_normal(b_shape).astype(np.float32))])
case("max_three_inputs", "Max", 13,
     [("a", rng.standard_normal((2, 1, 4)).astype(np.float32)), ("b", rng.standard_normal((3, 1)).astype(np.float32)),
      ("c", rng.standard_normal((4,)).astype(np.float32))])
case("max_nan_propagates", "Max", 13,
     [("a", np.array([1, np.nan, 2, np.nan], dtype=np.float32)),
      ("b", np.array([np.nan, 1, 3, np.nan], dtype=np.float32))])
case("max_int64", "Max", 13,
     [("a", rng.integers(-9, 9, (2, 3)).astype(np.int64)), ("b", rng.integers(-9, 9, (3,)).astype(np.int64))])

# --- Unary arithmetic and activations --------------------------------------------------------------------------
rng = np.random.default_rng(4)
general = rng.standard_normal((2, 3, 4)).astype(np.float32) * 3
positive = np.abs(general) + 0.05
extremes = np.array([-100, -20, -1e-3, 0, 1e-3, 20, 100, np.inf, -np.inf, np.nan], dtype=np.float32)
UNARY = [
    ("Neg", 13, general), ("Reciprocal", 13, general), ("Sqrt", 13, positive), ("Sin", 7, general),
    ("Cos", 7, general), ("Tanh", 13, general), ("Sigmoid", 13, general), ("Erf", 13, general),
]
for op, opset, x in UNARY:
    name = op.lower()
    case(f"{name}_rank3", op, opset, [("x", x)])
    case(f"{name}_scalar", op, opset, [("x", np.array(0.75, dtype=np.float32))])
    case(f"{name}_zero_size", op, opset, [("x", np.zeros((2, 0, 3), dtype=np.float32))])
    case(f"{name}_extremes", op, opset, [("x", extremes)])
    case(f"{name}_float16", op, opset, [("x", x.astype(np.float16))])
case("sqrt_negative", "Sqrt", 13, [("x", np.array([-1, -0.0, 4], dtype=np.float32))])
case("neg_int64", "Neg", 13, [("x", np.array([[3, -4, 0], [2**62, -(2**62), 9]], dtype=np.int64))])
case("neg_int32_wraps", "Neg", 13, [("x", np.array([-(2**31), 5, -7], dtype=np.int32))])
case("sigmoid_opset21", "Sigmoid", 21, [("x", general)])
case("sin_opset21", "Sin", 21, [("x", general)])
case("cos_opset13", "Cos", 13, [("x", general)])
for approximate in ("none", "tanh"):
    case(f"gelu_{approximate}", "Gelu", 20, [("x", general)], {"approximate": approximate})
    case(f"gelu_{approximate}_extremes", "Gelu", 20, [("x", extremes)], {"approximate": approximate})
    case(f"gelu_{approximate}_zero_size", "Gelu", 20, [("x", np.zeros((0, 3), dtype=np.float32))],
         {"approximate": approximate})
case("gelu_default", "Gelu", 20, [("x", general)])
case("gelu_scalar", "Gelu", 20, [("x", np.array(-0.5, dtype=np.float32))])

# --- IsNaN, And, comparisons --------------------------------------------------------------------------------------
rng = np.random.default_rng(5)
for opset in (13, 20):
    case(f"isnan_opset{opset}", "IsNaN", opset, [("x", extremes.reshape(2, 5))])
case("isnan_zero_size", "IsNaN", 13, [("x", np.zeros((0,), dtype=np.float32))])
case("isnan_float16", "IsNaN", 13, [("x", extremes.astype(np.float16))])
for label, a_shape, b_shape in BINARY_SHAPES:
    case(f"and_{label}", "And", 7, [("a", rng.random(a_shape) < 0.5), ("b", rng.random(b_shape) < 0.5)])
# Comparisons: small integers cast to float so that equal values occur.
for op, opsets in [("Equal", (13, 19)), ("Greater", (13,)), ("LessOrEqual", (13, 16))]:
    name = {"Equal": "equal", "Greater": "greater", "LessOrEqual": "less_or_equal"}[op]
    for label, a_shape, b_shape in BINARY_SHAPES:
        a = rng.integers(-2, 3, a_shape).astype(np.float32)
        b = rng.integers(-2, 3, b_shape).astype(np.float32)
        case(f"{name}_{label}", op, opsets[-1], [("a", a), ("b", b)])
    for opset in opsets[:-1]:
        case(f"{name}_opset{opset}", op, opset,
             [("a", rng.integers(-2, 3, (3, 4)).astype(np.float32)),
              ("b", rng.integers(-2, 3, (4,)).astype(np.float32))])
    case(f"{name}_int64", op, opsets[-1],
         [("a", rng.integers(-2, 3, (2, 1, 4)).astype(np.int64)), ("b", rng.integers(-2, 3, (3, 1)).astype(np.int64))])
    case(f"{name}_nan", op, opsets[-1],
         [("a", np.array([np.nan, 1, np.inf, -np.inf], dtype=np.float32)),
          ("b", np.array([np.nan, np.nan, np.inf, 0], dtype=np.float32))])
    case(f"{name}_float16", op, opsets[-1],
         [("a", rng.integers(-2, 3, (3, 4)).astype(np.float16)), ("b", rng.integers(-2, 3, (4,)).astype(np.float16))])
case("equal_bool", "Equal", 19, [("a", rng.random((2, 3)) < 0.5), ("b", rng.random((3,)) < 0.5)])

# --- Where ------------------------------------------------------------------------------------------------------
rng = np.random.default_rng(6)
for opset in (9, 16):
    case(f"where_same_opset{opset}", "Where", opset,
         [("c", rng.random((2, 3, 4)) < 0.5), ("a", rng.standard_normal((2, 3, 4)).astype(np.float32)),
          ("b", rng.standard_normal((2, 3, 4)).astype(np.float32))])
case("where_broadcast_all_three", "Where", 16,
     [("c", rng.random((2, 1, 4)) < 0.5), ("a", rng.standard_normal((3, 1)).astype(np.float32)),
      ("b", np.array(-1.0, dtype=np.float32))])
case("where_scalar_condition", "Where", 16,
     [("c", np.array(True)), ("a", rng.standard_normal((2, 3)).astype(np.float32)),
      ("b", rng.standard_normal((3,)).astype(np.float32))])
case("where_attention_mask", "Where", 16,
     [("c", np.tril(np.ones((4, 4), dtype=bool))[None, None]),
      ("a", rng.standard_normal((2, 3, 4, 4)).astype(np.float32)), ("b", np.array(-np.inf, dtype=np.float32))])
case("where_int64", "Where", 16,
     [("c", rng.random((3, 1)) < 0.5), ("a", rng.integers(-9, 9, (3, 4)).astype(np.int64)),
      ("b", rng.integers(-9, 9, (4,)).astype(np.int64))])
case("where_bool", "Where", 16,
     [("c", rng.random((2, 3)) < 0.5), ("a", rng.random((2, 3)) < 0.5), ("b", np.array(False))],
     reference=lambda c, a, b: [np.where(c, a, b)])  # onnxruntime has no bool Where kernel
case("where_zero_size", "Where", 16,
     [("c", np.zeros((0, 3), dtype=bool)), ("a", rng.standard_normal((3,)).astype(np.float32)),
      ("b", np.array(0, dtype=np.float32))])

# --- Cast -------------------------------------------------------------------------------------------------------
rng = np.random.default_rng(7)
fractional = np.array([-2.7, -1.5, -0.5, -0.0, 0.0, 0.4, 0.5, 1.5, 2.5, 3.99, 100.25, -100.75], dtype=np.float32)
in_float16 = np.array([1 / 3, 65504, 1e-5, -2.0009765625, 2049, 0.1, np.inf, np.nan], dtype=np.float32)
ints = np.array([-3, -1, 0, 1, 2, 255, 256, -129, 2**31 + 5, -(2**33) - 7, 2**40 + 1], dtype=np.int64)
CAST = [
    ("float_to_int64", fractional, TensorProto.INT64),
    ("float_to_int32", fractional, TensorProto.INT32),
    ("float_to_int8", fractional, TensorProto.INT8),
    ("float_to_uint8", np.abs(fractional), TensorProto.UINT8),
    ("float_to_uint64", np.abs(fractional), TensorProto.UINT64),
    ("float_to_int16", fractional, TensorProto.INT16),
    ("float_to_bool", fractional, TensorProto.BOOL),
    ("float_to_float16", in_float16, TensorProto.FLOAT16),
    ("float_to_double", fractional, TensorProto.DOUBLE),
    ("float_to_float", fractional, TensorProto.FLOAT),
    ("float16_to_float", in_float16.astype(np.float16), TensorProto.FLOAT),
    ("float16_to_int64", fractional.astype(np.float16), TensorProto.INT64),
    ("double_to_float", np.array([1 / 3, 1e-50, 3e38, -2.5], dtype=np.float64), TensorProto.FLOAT),
    ("int64_to_float", ints, TensorProto.FLOAT),
    ("int64_to_float16", np.array([-3, 0, 2049, 4097, 70000], dtype=np.int64), TensorProto.FLOAT16),
    ("int64_to_int32", ints, TensorProto.INT32),
    ("int64_to_uint8", ints, TensorProto.UINT8),
    ("int64_to_int8", ints, TensorProto.INT8),
    ("int64_to_bool", ints, TensorProto.BOOL),
    ("int32_to_int64", np.array([-(2**31), -1, 0, 2**31 - 1], dtype=np.int32), TensorProto.INT64),
    ("uint8_to_float", np.array([0, 1, 128, 255], dtype=np.uint8), TensorProto.FLOAT),
    ("bool_to_float", np.array([[True, False], [False, True]]), TensorProto.FLOAT),
    ("bool_to_int64", np.array([True, False, True]), TensorProto.INT64),
    ("bool_to_bool", np.array([True, False]), TensorProto.BOOL),
    ("zero_size", np.zeros((2, 0), dtype=np.float32), TensorProto.INT64),
    ("scalar", np.array(-7.9, dtype=np.float32), TensorProto.INT32),
]
for label, x, to in CAST:
    case(f"cast_{label}", "Cast", 13, [("x", x)], {"to": to})
for opset in (19, 21):
    case(f"cast_float_to_int64_opset{opset}", "Cast", opset, [("x", fractional)], {"to": TensorProto.INT64})
    case(f"cast_float_to_float16_opset{opset}", "Cast", opset, [("x", in_float16)], {"to": TensorProto.FLOAT16})
# `saturate` only concerns float8 targets; onnxruntime rejects it elsewhere, the interpreter ignores it.
case("cast_saturate_ignored_opset19", "Cast", 19, [("x", fractional)], {"to": TensorProto.FLOAT16, "saturate": 0},
     reference=lambda x: [x.astype(np.float16)])

# --- Softmax ------------------------------------------------------------------------------------------------------
rng = np.random.default_rng(8)
x = rng.standard_normal((2, 3, 5)).astype(np.float32) * 4
for axis in (0, 1, 2, -1, -2):
    case(f"softmax_axis{axis}".replace("-", "m"), "Softmax", 13, [("x", x)], {"axis": axis})
case("softmax_default_axis", "Softmax", 13, [("x", x)])
case("softmax_large_values", "Softmax", 13, [("x", np.array([[1000, 1001, 999], [-1e4, 0, 1e4]], dtype=np.float32))])
case("softmax_with_minus_infinity", "Softmax", 13,
     [("x", np.array([[0.5, -np.inf, 1.5, -np.inf], [-np.inf, -np.inf, -np.inf, 2]], dtype=np.float32))])
case("softmax_long_rows", "Softmax", 13, [("x", rng.standard_normal((3, 67)).astype(np.float32) * 3)])
case("softmax_rank1", "Softmax", 13, [("x", rng.standard_normal((7,)).astype(np.float32))])
case("softmax_zero_size", "Softmax", 13, [("x", np.zeros((0, 4), dtype=np.float32))])
case("softmax_zero_size_axis", "Softmax", 13, [("x", np.zeros((2, 0), dtype=np.float32))], {"axis": 1})
case("softmax_float16", "Softmax", 13, [("x", x.astype(np.float16))])
case("softmax_opset21", "Softmax", 21, [("x", x)], {"axis": 1})

# --- LayerNormalization ----------------------------------------------------------------------------------------------
rng = np.random.default_rng(9)
x = (rng.standard_normal((2, 3, 8)) * 2 + 1).astype(np.float32)
STATS = ["y", "mean", "inv_std_dev"]
case("layernorm_last_axis_bias_stats", "LayerNormalization", 17,
     [("x", x), ("scale", rng.standard_normal((8,)).astype(np.float32)),
      ("b", rng.standard_normal((8,)).astype(np.float32))],
     outputs=STATS)
case("layernorm_last_axis_no_bias", "LayerNormalization", 17,
     [("x", x), ("scale", rng.standard_normal((8,)).astype(np.float32))])
case("layernorm_omitted_bias_stats", "LayerNormalization", 17,
     [("x", x), ("scale", rng.standard_normal((8,)).astype(np.float32)), ("b", None)], outputs=STATS)
case("layernorm_axis1_bias_stats", "LayerNormalization", 17,
     [("x", x), ("scale", rng.standard_normal((3, 8)).astype(np.float32)),
      ("b", rng.standard_normal((3, 8)).astype(np.float32))], {"axis": 1}, outputs=STATS)
case("layernorm_axis1_no_bias", "LayerNormalization", 17,
     [("x", x), ("scale", rng.standard_normal((3, 8)).astype(np.float32))], {"axis": 1})
case("layernorm_axis_minus2_epsilon", "LayerNormalization", 17,
     [("x", x), ("scale", rng.standard_normal((3, 8)).astype(np.float32)),
      ("b", rng.standard_normal((3, 8)).astype(np.float32))], {"axis": -2, "epsilon": 0.1}, outputs=STATS)
case("layernorm_axis0", "LayerNormalization", 17,
     [("x", x), ("scale", rng.standard_normal((2, 3, 8)).astype(np.float32))], {"axis": 0}, outputs=STATS)
case("layernorm_rank2_long_rows", "LayerNormalization", 17,
     [("x", (rng.standard_normal((5, 67)) * 3 + 10).astype(np.float32)),
      ("scale", rng.standard_normal((67,)).astype(np.float32)), ("b", rng.standard_normal((67,)).astype(np.float32))],
     outputs=STATS)
case("layernorm_constant_rows", "LayerNormalization", 17,
     [("x", np.full((2, 4), 3.0, dtype=np.float32)), ("scale", np.ones((4,), dtype=np.float32))], outputs=STATS)
case("layernorm_zero_rows", "LayerNormalization", 17,
     [("x", np.zeros((0, 4), dtype=np.float32)), ("scale", np.ones((4,), dtype=np.float32))], outputs=STATS)
case("layernorm_axis1_scale_broadcasts", "LayerNormalization", 17,
     [("x", x), ("scale", rng.standard_normal((8,)).astype(np.float32)),
      ("b", rng.standard_normal((1, 8)).astype(np.float32))], {"axis": 1}, outputs=STATS)
case("layernorm_opset21", "LayerNormalization", 21,
     [("x", x), ("scale", rng.standard_normal((8,)).astype(np.float32)),
      ("b", rng.standard_normal((8,)).astype(np.float32))])

# --- ReduceMean -------------------------------------------------------------------------------------------------------
rng = np.random.default_rng(10)
x = rng.standard_normal((2, 3, 4)).astype(np.float32)
xi = rng.integers(-20, 20, (2, 3, 4)).astype(np.int64)
for label, axes in [("last", [-1]), ("middle", [1]), ("first_last", [0, 2]), ("first_two", [0, 1]),
                    ("all_listed", [0, 1, 2]), ("all", None)]:
    for keepdims in (1, 0):
        attrs = {"keepdims": keepdims}
        if axes is not None:
            attrs["axes"] = axes
        case(f"reducemean13_{label}_keep{keepdims}", "ReduceMean", 13, [("x", x)], attrs)
        inputs = [("x", x)] + ([("axes", np.array(axes, dtype=np.int64))] if axes is not None else [])
        case(f"reducemean18_{label}_keep{keepdims}", "ReduceMean", 18, inputs, {"keepdims": keepdims})
case("reducemean13_int64_middle", "ReduceMean", 13, [("x", xi)], {"axes": [1]})
case("reducemean18_int64_last", "ReduceMean", 18, [("x", xi), ("axes", np.array([-1], dtype=np.int64))],
     {"keepdims": 0})
case("reducemean18_axes_unsorted", "ReduceMean", 18,
     [("x", x), ("axes", np.array([2, -3], dtype=np.int64))], {"keepdims": 0})
case("reducemean13_default_keepdims", "ReduceMean", 13, [("x", x)], {"axes": [2]})
case("reducemean18_empty_axes_noop", "ReduceMean", 18,
     [("x", x), ("axes", np.array([], dtype=np.int64))], {"noop_with_empty_axes": 1})
case("reducemean18_empty_axes_reduces_all", "ReduceMean", 18,
     [("x", x), ("axes", np.array([], dtype=np.int64))], {"noop_with_empty_axes": 0, "keepdims": 0})
case("reducemean18_absent_axes_noop", "ReduceMean", 18, [("x", x)], {"noop_with_empty_axes": 1})
case("reducemean18_rms_norm", "ReduceMean", 18,
     [("x", (rng.standard_normal((2, 5, 67)) ** 2).astype(np.float32)), ("axes", np.array([-1], dtype=np.int64))])
case("reducemean18_zero_size_kept_axis", "ReduceMean", 18,
     [("x", np.zeros((0, 3), dtype=np.float32)), ("axes", np.array([1], dtype=np.int64))])
case("reducemean18_zero_size_reduced_axis", "ReduceMean", 18,
     [("x", np.zeros((2, 0), dtype=np.float32)), ("axes", np.array([1], dtype=np.int64))])
case("reducemean18_scalar", "ReduceMean", 18, [("x", np.array(2.5, dtype=np.float32))])
case("reducemean18_float16", "ReduceMean", 18,
     [("x", x.astype(np.float16)), ("axes", np.array([1], dtype=np.int64))])
case("reducemean13_size1_axes_between", "ReduceMean", 13,
     [("x", rng.standard_normal((2, 1, 3, 1)).astype(np.float32))], {"axes": [0, 2]})

# onnxruntime's contrib QuickGelu (x · sigmoid(alpha·x)); alpha 1 is the SiLU GraphOptimizer writes.
for label, attrs in [("default_alpha", {}), ("silu", {"alpha": 1.0}), ("alpha_half", {"alpha": 0.5})]:
    CASES.append({"name": f"quickgelu_{label}", "op": "QuickGelu", "domain": "com.microsoft", "opset": 17,
                  "inputs": [("x", np.concatenate([general.ravel(), extremes[:7]]).astype(np.float32))],
                  "attrs": attrs, "output_type": 1})
