"""Reference cases for the data-movement ops: Concat, Constant, ConstantOfShape, Expand, Flatten, Gather, GatherND,
Range, Reshape, Shape, Slice, Split, Squeeze, Unsqueeze, Transpose (see tools/make_op_references.py for the format)."""
import numpy as np

from _builder import make_case
from onnx import numpy_helper

rng = np.random.default_rng(11)

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def i64(*shape):
    return rng.integers(-50, 50, shape).astype(np.int64)


def boolean(*shape):
    return rng.random(shape) < 0.5


def ints(*values):
    return np.array(values, dtype=np.int64)


CASES = []


def case(name, op, inputs, opset=13, attrs=None, outputs=None, reference=None):
    CASES.append(make_case(name, op, opset, inputs, attrs, outputs, reference))


# Concat: negative axes, three operands, an empty KV cache joined along its sequence axis, int64 and bool.
case("concat_axis0", "Concat", [("a", f32(2, 3)), ("b", f32(4, 3))], attrs={"axis": 0})
case("concat_axis1_three", "Concat", [("a", f32(2, 3, 4)), ("b", f32(2, 1, 4)), ("c", f32(2, 5, 4))], attrs={"axis": 1})
case("concat_axis_neg1", "Concat", [("a", f32(2, 3, 4)), ("b", f32(2, 3, 2))], attrs={"axis": -1})
case("concat_kv_cache_empty", "Concat", [("past", f32(2, 3, 0, 4)), ("new", f32(2, 3, 5, 4))], attrs={"axis": 2})
case("concat_kv_cache_grow", "Concat", [("past", f32(2, 3, 6, 4)), ("new", f32(2, 3, 1, 4))], attrs={"axis": -2})
case("concat_all_empty", "Concat", [("a", f32(2, 0, 3)), ("b", f32(2, 0, 3))], attrs={"axis": 1})
case("concat_1d", "Concat", [("a", f32(3)), ("b", f32(0)), ("c", f32(2))], attrs={"axis": 0})
case("concat_int64", "Concat", [("a", i64(2, 2)), ("b", i64(2, 3))], attrs={"axis": 1})
case("concat_bool", "Concat", [("a", boolean(1, 4)), ("b", boolean(2, 4))], attrs={"axis": -2})

# Constant: every supported value attribute, at each opset version.
for opset in (13, 19, 21):
    case(f"constant_tensor_opset{opset}", "Constant", [], opset=opset,
         attrs={"value": numpy_helper.from_array(f32(2, 3), name="value")})
case("constant_int64_tensor", "Constant", [], attrs={"value": numpy_helper.from_array(i64(4), name="value")})
case("constant_scalar_tensor", "Constant", [], attrs={"value": numpy_helper.from_array(np.array(2.5, np.float32), name="v")})
case("constant_bool_tensor", "Constant", [], attrs={"value": numpy_helper.from_array(boolean(2, 2), name="value")})
case("constant_value_float", "Constant", [], attrs={"value_float": 1.5})
case("constant_value_floats", "Constant", [], attrs={"value_floats": [1.0, -2.0, 3.5]})
case("constant_value_int", "Constant", [], attrs={"value_int": -7})
case("constant_value_ints", "Constant", [], opset=21, attrs={"value_ints": [3, 0, -1, 9]})

# ConstantOfShape: default float 0, typed values, an empty shape (a scalar) and zero-size dimensions.
case("constant_of_shape_default", "ConstantOfShape", [("shape", ints(2, 3))], opset=9)
case("constant_of_shape_float", "ConstantOfShape", [("shape", ints(3, 1, 2))], opset=20,
     attrs={"value": numpy_helper.from_array(np.array([0.25], np.float32), name="value")})
case("constant_of_shape_int64", "ConstantOfShape", [("shape", ints(4))], opset=21,
     attrs={"value": numpy_helper.from_array(np.array([7], np.int64), name="value")})
case("constant_of_shape_bool", "ConstantOfShape", [("shape", ints(2, 2))], opset=13,
     attrs={"value": numpy_helper.from_array(np.array([True]), name="value")})
case("constant_of_shape_scalar", "ConstantOfShape", [("shape", np.zeros(0, np.int64))], opset=13,
     attrs={"value": numpy_helper.from_array(np.array([3.0], np.float32), name="value")})
case("constant_of_shape_zero_dim", "ConstantOfShape", [("shape", ints(2, 0, 3))], opset=13)

# Expand: growing the rank, broadcasting 1s, a shape smaller than the input (bidirectional), int64, bool, empty.
case("expand_grow_rank", "Expand", [("x", f32(3, 1)), ("shape", ints(2, 3, 4))])
case("expand_broadcast_ones", "Expand", [("x", f32(1, 4, 1)), ("shape", ints(3, 4, 5))])
case("expand_bidirectional", "Expand", [("x", f32(2, 1, 4)), ("shape", ints(3, 1))])
case("expand_scalar", "Expand", [("x", f32()), ("shape", ints(2, 3))])
case("expand_same_shape", "Expand", [("x", f32(2, 3)), ("shape", ints(2, 3))])
case("expand_int64", "Expand", [("x", i64(1, 3)), ("shape", ints(2, 2, 3))])
case("expand_bool", "Expand", [("x", boolean(2, 1)), ("shape", ints(2, 4))])
case("expand_zero_dim", "Expand", [("x", f32(2, 0, 1)), ("shape", ints(2, 1, 3))])

# Flatten: axis 0, the default 1, the rank itself, negative, at opsets 13 and 21.
case("flatten_default", "Flatten", [("x", f32(2, 3, 4))])
case("flatten_axis0", "Flatten", [("x", f32(2, 3, 4))], attrs={"axis": 0})
case("flatten_axis_rank", "Flatten", [("x", f32(2, 3, 4))], opset=21, attrs={"axis": 3})
case("flatten_axis_neg1", "Flatten", [("x", i64(2, 3, 4))], opset=21, attrs={"axis": -1})
case("flatten_zero_dim", "Flatten", [("x", f32(2, 0, 4))], attrs={"axis": 2})

# Gather: an embedding lookup, axis 1 with negative indices, a scalar index, 2-D indices, int32 indices, int64, bool.
case("gather_embedding", "Gather", [("table", f32(10, 6)), ("ids", rng.integers(0, 10, (2, 5)).astype(np.int64))])
case("gather_axis1_negative", "Gather", [("x", f32(3, 5, 2)), ("i", ints(-1, 0, -5, 2))], attrs={"axis": 1})
case("gather_scalar_index", "Gather", [("x", f32(4, 3)), ("i", np.array(-2, np.int64))], attrs={"axis": 0})
case("gather_scalar_index_axis_neg1", "Gather", [("x", f32(2, 3, 4)), ("i", np.array(3, np.int64))], attrs={"axis": -1})
case("gather_2d_indices_axis1", "Gather", [("x", f32(2, 4, 3)), ("i", ints(0, 3, 1, 1).reshape(2, 2))], attrs={"axis": 1})
case("gather_int32_indices", "Gather", [("x", f32(5, 2)), ("i", np.array([4, -1, 0], np.int32))])
case("gather_int64_data", "Gather", [("x", i64(6)), ("i", ints(5, 0, 5))])
case("gather_bool_data", "Gather", [("x", boolean(3, 4)), ("i", ints(1, -1))], attrs={"axis": 1})
case("gather_empty_indices", "Gather", [("x", f32(4, 3)), ("i", np.zeros((2, 0), np.int64))])

# GatherND: batch_dims 0 (whole elements and slices), batch_dims 1, negative indices, int64.
case("gather_nd_elements", "GatherND", [("x", f32(3, 4)), ("i", ints(0, 1, 2, -1, 1, 0).reshape(3, 2))])
case("gather_nd_slices", "GatherND", [("x", f32(3, 4, 2)), ("i", ints(2, 0, -3).reshape(3, 1))])
case("gather_nd_batch1", "GatherND", [("x", f32(2, 3, 4)), ("i", ints(1, 2, 0, 3, 2, -1, 1, 0).reshape(2, 2, 2))],
     attrs={"batch_dims": 1})
case("gather_nd_batch1_slices", "GatherND", [("x", i64(2, 3, 4)), ("i", ints(2, 0, 1).reshape(1, 3, 1).repeat(2, 0))],
     attrs={"batch_dims": 1})

# Range: float and integer (int64, int32), negative deltas, an empty range.
case("range_float", "Range", [("start", np.array(0.5, np.float32)), ("limit", np.array(3.0, np.float32)),
                              ("delta", np.array(0.3, np.float32))], opset=11)
case("range_float_negative", "Range", [("start", np.array(2.0, np.float32)), ("limit", np.array(-1.0, np.float32)),
                                       ("delta", np.array(-0.5, np.float32))])
case("range_int64", "Range", [("start", np.array(1, np.int64)), ("limit", np.array(11, np.int64)),
                              ("delta", np.array(3, np.int64))])
case("range_int64_negative", "Range", [("start", np.array(10, np.int64)), ("limit", np.array(0, np.int64)),
                                       ("delta", np.array(-3, np.int64))])
case("range_int32", "Range", [("start", np.array(-3, np.int32)), ("limit", np.array(4, np.int32)),
                              ("delta", np.array(2, np.int32))])
case("range_empty", "Range", [("start", np.array(5, np.int64)), ("limit", np.array(1, np.int64)),
                              ("delta", np.array(1, np.int64))])

# Reshape: -1, 0 copying a dimension (opset 13) or meaning zero-size (allowzero, opset 14 on), empty tensors.
case("reshape_infer", "Reshape", [("x", f32(2, 3, 4)), ("shape", ints(4, -1))])
case("reshape_copy_zero", "Reshape", [("x", f32(2, 3, 4)), ("shape", ints(0, 0, 2, 2))])
case("reshape_heads", "Reshape", [("x", f32(2, 5, 12)), ("shape", ints(0, 0, 3, 4))], opset=14)
case("reshape_int64", "Reshape", [("x", i64(6)), ("shape", ints(3, 2))], opset=19)
case("reshape_bool", "Reshape", [("x", boolean(2, 3)), ("shape", ints(-1))], opset=21)
case("reshape_to_scalar", "Reshape", [("x", f32(1, 1)), ("shape", np.zeros(0, np.int64))])
case("reshape_empty_infer", "Reshape", [("x", f32(2, 3, 0, 4)), ("shape", ints(6, -1))])
case("reshape_empty_copy_zero", "Reshape", [("x", f32(2, 3, 0, 4)), ("shape", ints(0, 0, 0, 4))])
case("reshape_allowzero", "Reshape", [("x", f32(2, 3, 0, 4)), ("shape", ints(0, 7, 3))], opset=14,
     attrs={"allowzero": 1})
case("reshape_allowzero_unused", "Reshape", [("x", f32(2, 3, 4)), ("shape", ints(4, -1, 3))], opset=21,
     attrs={"allowzero": 1})

# Shape: the whole shape (opset 13), start/end (opset 15 on) negative and out of range, empty tensors, scalars.
case("shape_opset13", "Shape", [("x", f32(2, 3, 4))])
case("shape_start", "Shape", [("x", f32(2, 3, 4, 5))], opset=15, attrs={"start": 1})
case("shape_start_end_negative", "Shape", [("x", f32(2, 3, 4, 5))], opset=19, attrs={"start": -3, "end": -1})
case("shape_clamped", "Shape", [("x", f32(2, 3, 4))], opset=21, attrs={"start": -10, "end": 10})
case("shape_start_after_end", "Shape", [("x", f32(2, 3, 4))], opset=15, attrs={"start": 2, "end": 1})
case("shape_empty_tensor", "Shape", [("x", f32(2, 3, 0, 4))], opset=21)
case("shape_scalar", "Shape", [("x", f32())])
case("shape_bool", "Shape", [("x", boolean(3, 1))], opset=15, attrs={"end": 1})

# Slice: steps of 1 and more, negative steps, out-of-range and INT64 limits, omitted axes/steps, negative axes,
# empty tensors and empty results, int64 and bool.
case("slice_basic", "Slice", [("x", f32(4, 5)), ("starts", ints(1, 0)), ("ends", ints(3, 4)),
                              ("axes", ints(0, 1)), ("steps", ints(1, 2))])
case("slice_omitted_axes_steps", "Slice", [("x", f32(4, 5, 3)), ("starts", ints(1, -4)), ("ends", ints(-1, 100))])
case("slice_negative_axis", "Slice", [("x", f32(2, 3, 8)), ("starts", ints(2)), ("ends", ints(7)), ("axes", ints(-1))])
case("slice_to_end", "Slice", [("x", f32(3, 6)), ("starts", ints(2)), ("ends", ints(INT64_MAX)), ("axes", ints(1))])
case("slice_reverse", "Slice", [("x", f32(3, 6)), ("starts", ints(-1)), ("ends", ints(INT64_MIN)), ("axes", ints(1)),
                                ("steps", ints(-1))])
case("slice_negative_step2", "Slice", [("x", f32(7, 2)), ("starts", ints(100)), ("ends", ints(-100)), ("axes", ints(0)),
                                       ("steps", ints(-2))])
case("slice_negative_step_bounded", "Slice", [("x", f32(4, 8)), ("starts", ints(6, 3)), ("ends", ints(1, 0)),
                                              ("axes", ints(1, 0)), ("steps", ints(-3, -1))])
case("slice_out_of_range", "Slice", [("x", f32(3, 4)), ("starts", ints(-100, 2)), ("ends", ints(100, 1000))])
case("slice_empty_result", "Slice", [("x", f32(3, 4)), ("starts", ints(3)), ("ends", ints(1)), ("axes", ints(1))])
case("slice_huge_step", "Slice", [("x", f32(3, 4)), ("starts", ints(1)), ("ends", ints(INT64_MAX)), ("axes", ints(1)),
                                  ("steps", ints(INT64_MAX))])
case("slice_kv_cache_empty", "Slice", [("x", f32(2, 3, 0, 4)), ("starts", ints(0)), ("ends", ints(INT64_MAX)),
                                       ("axes", ints(2))])
case("slice_empty_other_axis", "Slice", [("x", f32(2, 3, 0, 4)), ("starts", ints(1)), ("ends", ints(3)),
                                         ("axes", ints(1))])
case("slice_empty_negative_step", "Slice", [("x", f32(2, 0, 3)), ("starts", ints(-1)), ("ends", ints(INT64_MIN)),
                                            ("axes", ints(1)), ("steps", ints(-1))])
case("slice_last_token", "Slice", [("x", f32(2, 5, 6)), ("starts", ints(-1)), ("ends", ints(INT64_MAX)),
                                   ("axes", ints(1))])
case("slice_int64", "Slice", [("x", i64(10)), ("starts", ints(8)), ("ends", ints(1)), ("axes", ints(0)),
                              ("steps", ints(-3))])
case("slice_bool", "Slice", [("x", boolean(4, 4)), ("starts", ints(0, 1)), ("ends", ints(3, 4)),
                             ("axes", ints(0, 1))])
case("slice_int32_params", "Slice", [("x", f32(4, 4)), ("starts", np.array([1], np.int32)),
                                     ("ends", np.array([3], np.int32))])

# Split: the split input (opsets 13 and 18), num_outputs even and uneven (opset 18), neither (equal parts),
# negative axes, zero-size parts, int64 and bool.
case("split_input_sizes", "Split", [("x", f32(2, 6)), ("split", ints(1, 3, 2))], attrs={"axis": 1},
     outputs=["y0", "y1", "y2"])
case("split_input_sizes_opset18", "Split", [("x", f32(5, 2)), ("split", ints(2, 3))], opset=18, outputs=["y0", "y1"])
case("split_zero_part", "Split", [("x", f32(4, 3)), ("split", ints(2, 0, 2))], outputs=["y0", "y1", "y2"])
case("split_equal", "Split", [("x", f32(2, 6, 3))], attrs={"axis": -2}, outputs=["y0", "y1", "y2"])
case("split_equal_opset13_int64", "Split", [("x", i64(4, 2))], outputs=["y0", "y1"])
case("split_num_outputs_even", "Split", [("x", f32(3, 8))], opset=18, attrs={"axis": 1, "num_outputs": 4},
     outputs=["y0", "y1", "y2", "y3"])
case("split_num_outputs_uneven", "Split", [("x", f32(7, 2))], opset=18, attrs={"num_outputs": 3},
     outputs=["y0", "y1", "y2"])
case("split_num_outputs_uneven_last_axis", "Split", [("x", boolean(2, 10))], opset=18,
     attrs={"axis": -1, "num_outputs": 4}, outputs=["y0", "y1", "y2", "y3"])
case("split_qkv", "Split", [("x", f32(2, 3, 12)), ("split", ints(4, 4, 4))], attrs={"axis": 2},
     outputs=["q", "k", "v"])

# Squeeze and Unsqueeze: axes inputs, negative axes, no axes, scalars, at opsets 13 and 21.
case("squeeze_axes", "Squeeze", [("x", f32(1, 3, 1, 2)), ("axes", ints(0, -2))])
case("squeeze_all", "Squeeze", [("x", f32(1, 3, 1, 2))], opset=21)
case("squeeze_to_scalar", "Squeeze", [("x", i64(1, 1))])
case("squeeze_empty", "Squeeze", [("x", f32(2, 1, 0)), ("axes", ints(1))], opset=21)
case("unsqueeze_front", "Unsqueeze", [("x", f32(3, 4)), ("axes", ints(0))])
case("unsqueeze_negative", "Unsqueeze", [("x", f32(3, 4)), ("axes", ints(-1))])
case("unsqueeze_several", "Unsqueeze", [("x", f32(3, 4)), ("axes", ints(3, 0, -3))], opset=21)
case("unsqueeze_scalar", "Unsqueeze", [("x", np.array(2, np.int64)), ("axes", ints(0))])
case("unsqueeze_bool", "Unsqueeze", [("x", boolean(2, 3)), ("axes", ints(1))], opset=21)

# Transpose: reversed axes (no perm) at ranks 2-4, head splits, the K^T swap (tiled), int64, bool, empty.
case("transpose_default_rank2", "Transpose", [("x", f32(3, 5))])
case("transpose_default_rank3", "Transpose", [("x", f32(2, 3, 4))], opset=21)
case("transpose_default_rank4", "Transpose", [("x", f32(2, 3, 4, 5))])
case("transpose_heads", "Transpose", [("x", f32(2, 7, 3, 8))], attrs={"perm": [0, 2, 1, 3]})
case("transpose_key_swap", "Transpose", [("x", f32(2, 3, 40, 36))], attrs={"perm": [0, 1, 3, 2]})
case("transpose_rotate", "Transpose", [("x", f32(3, 4, 5))], attrs={"perm": [2, 0, 1]})
case("transpose_rank4_mixed", "Transpose", [("x", f32(2, 3, 4, 5))], opset=21, attrs={"perm": [3, 1, 0, 2]})
case("transpose_unit_dims", "Transpose", [("x", f32(1, 4, 1, 3))], attrs={"perm": [2, 1, 0, 3]})
case("transpose_identity", "Transpose", [("x", f32(2, 3))], attrs={"perm": [0, 1]})
case("transpose_int64", "Transpose", [("x", i64(3, 4, 2))], attrs={"perm": [1, 2, 0]})
case("transpose_bool", "Transpose", [("x", boolean(3, 5))])
case("transpose_zero_dim", "Transpose", [("x", f32(2, 0, 3))], attrs={"perm": [2, 0, 1]})

# Identity: every storage kind, a scalar, an empty tensor, and the newest opset.
case("identity_float", "Identity", [("x", f32(2, 3))])
case("identity_int64_opset21", "Identity", [("x", np.array([[1, -2], [3, 4]], dtype=np.int64))], opset=21)
case("identity_bool_scalar", "Identity", [("x", np.array(True))], opset=16)
case("identity_empty", "Identity", [("x", np.zeros((0, 3), dtype=np.float32))], opset=19)
