"""Reference cases for uint8 and int8 tensors, which the interpreter holds as bytes (`Tensor.Storage.bytes`): the
data-movement ops copy them as they are, Cast reads and makes them, the comparison and arithmetic ops widen them,
Where selects between them (see tools/make_op_references.py for the format)."""
import numpy as np

from _builder import make_case
from onnx import TensorProto, helper

rng = np.random.default_rng(29)


def i8(*shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


def u8(*shape):
    return rng.integers(0, 256, shape).astype(np.uint8)


def ints(*values):
    return np.array(values, dtype=np.int64)


CASES = []


def case(name, op, inputs, opset=13, attrs=None, outputs=None):
    CASES.append(make_case(name, op, opset, inputs, attrs, outputs))


# Data movement: each op copies the bytes without looking at them.
case("bytes_gather_int8_table", "Gather", [("data", i8(6, 5)), ("indices", ints(4, 0, -1, 4))])
case("bytes_gather_uint8_axis1", "Gather", [("data", u8(3, 7)), ("indices", ints(6, 1))], attrs={"axis": 1})
case("bytes_concat_int8", "Concat", [("a", i8(2, 3)), ("b", i8(2, 4))], attrs={"axis": 1})
case("bytes_slice_uint8", "Slice", [("data", u8(4, 6)), ("starts", ints(1, -1)), ("ends", ints(3, 0)),
                                     ("axes", ints(0, 1)), ("steps", ints(1, -2))])
case("bytes_reshape_int8", "Reshape", [("data", i8(2, 3, 4)), ("shape", ints(4, -1))])
case("bytes_transpose_int8", "Transpose", [("data", i8(2, 3, 4))], attrs={"perm": [2, 0, 1]})
case("bytes_expand_uint8", "Expand", [("data", u8(3, 1)), ("shape", ints(2, 3, 4))])
case("bytes_unsqueeze_int8", "Unsqueeze", [("data", i8(3, 2)), ("axes", ints(0, 3))])
case("bytes_identity_int8", "Identity", [("data", i8(5))])
case("bytes_split_uint8", "Split", [("data", u8(6, 2)), ("split", ints(2, 4))], outputs=["y0", "y1"])
case("bytes_flatten_int8", "Flatten", [("data", i8(2, 3, 2))], attrs={"axis": 2})
case("bytes_shape_int8", "Shape", [("data", i8(2, 0, 3))])
case("bytes_constant_int8", "Constant", [],
     attrs={"value": helper.make_tensor("value", TensorProto.INT8, [4], [-128, -1, 0, 127])})
case("bytes_constant_of_shape_uint8", "ConstantOfShape", [("shape", ints(2, 3))],
     attrs={"value": helper.make_tensor("value", TensorProto.UINT8, [1], [200])})

# Comparison, selection and arithmetic: int8 is signed (-1 < 0), uint8 is not (255 > 0), both wrap.
case("bytes_equal_int8", "Equal", [("a", np.array([[-128, 0, 127]], np.int8)), ("b", np.array([[-128], [0]], np.int8))])
case("bytes_greater_int8", "Greater", [("a", np.array([-1, 5, -128, 127], np.int8)), ("b", np.array([0, 5, 127, -128], np.int8))])
case("bytes_less_or_equal_uint8", "LessOrEqual", [("a", np.array([255, 0, 7], np.uint8)), ("b", np.array([0, 0, 8], np.uint8))],
     opset=16)
case("bytes_where_int8", "Where", [("condition", rng.random((2, 3)) < 0.5), ("a", i8(2, 3)), ("b", i8(1, 3))])
case("bytes_add_int8_wraps", "Add", [("a", np.array([100, -100, 127, -128], np.int8)),
                                      ("b", np.array([100, -100, 1, -1], np.int8))], opset=14)
case("bytes_max_uint8", "Max", [("a", u8(2, 3)), ("b", u8(3))])
case("bytes_neg_int8", "Neg", [("x", np.array([-128, -1, 0, 5, 127], np.int8))])

# Cast into and out of the byte types, wrapping and truncating as onnxruntime does on x86-64.
for name, values, to in [
    ("int8_to_float", np.array([-128, -1, 0, 1, 127], np.int8), TensorProto.FLOAT),
    ("int8_to_int64", np.array([-128, -1, 0, 1, 127], np.int8), TensorProto.INT64),
    ("int8_to_uint8", np.array([-128, -1, 0, 1, 127], np.int8), TensorProto.UINT8),
    ("uint8_to_int8", np.array([0, 1, 127, 128, 255], np.uint8), TensorProto.INT8),
    ("uint8_to_int32", np.array([0, 1, 127, 128, 255], np.uint8), TensorProto.INT32),
    ("uint8_to_bool", np.array([0, 1, 255], np.uint8), TensorProto.BOOL),
    ("bool_to_int8", np.array([True, False, True]), TensorProto.INT8),
    ("int32_to_int8", np.array([-129, 128, 300, -7], np.int32), TensorProto.INT8),
    ("float16_to_uint8", np.array([0.5, 1.9, 200.7, 255.2], np.float16), TensorProto.UINT8),
]:
    case(f"bytes_cast_{name}", "Cast", [("x", values)], attrs={"to": to})
