#!/usr/bin/env python3
"""Writes the importer's own fixtures into fixtures/graph/ (needs numpy and onnx):

  dtypes.onnx        one initializer per element type the interpreter loads, each twice: in raw_data and in the
                     typed field onnx.proto assigns it (float_data, int32_data, int64_data, double_data,
                     uint64_data), plus an Identity-free graph output so the model is valid. Values are the same
                     for every type: [-2, -1, 0, 1, 2, 3] (uint types: [0, 1, 2, 3, 4, 5]; bool: [0, 1, 0, 1, 1, 0];
                     float16/bfloat16 also hold 0.333251953125 / 0.333984375, exactly representable).
  arrays.npz         np.savez (stored):       f32 [2,3] arange, i64 [4] arange-2, b [3] [T,F,T], f16 [2] [0.5,-1.5],
  arrays_compressed.npz   np.savez_compressed (deflated), same arrays, plus scalar f8 () 2.5 and i32 [0] empty.
"""
import pathlib

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "graph"

SIGNED = np.array([-2, -1, 0, 1, 2, 3])
UNSIGNED = np.array([0, 1, 2, 3, 4, 5])
BOOLS = np.array([0, 1, 0, 1, 1, 0], dtype=bool)


def typed_tensor(name, data_type, values):
    """The TensorProto with values in the typed field onnx.proto assigns to data_type."""
    tensor = TensorProto(name=name, data_type=data_type, dims=[len(values)])
    if data_type == TensorProto.FLOAT:
        tensor.float_data.extend(values.astype(np.float32).tolist())
    elif data_type == TensorProto.DOUBLE:
        tensor.double_data.extend(values.astype(np.float64).tolist())
    elif data_type == TensorProto.FLOAT16:
        tensor.int32_data.extend(values.astype(np.float16).view(np.uint16).astype(np.int32).tolist())
    elif data_type == TensorProto.BFLOAT16:
        bits = (values.astype(np.float32).view(np.uint32) >> 16).astype(np.int32)
        tensor.int32_data.extend(bits.tolist())
    elif data_type in (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16,
                       TensorProto.INT32, TensorProto.BOOL):
        tensor.int32_data.extend(values.astype(np.int32).tolist())
    elif data_type == TensorProto.INT64:
        tensor.int64_data.extend(values.astype(np.int64).tolist())
    elif data_type in (TensorProto.UINT32, TensorProto.UINT64):
        tensor.uint64_data.extend(values.astype(np.uint64).tolist())
    return tensor


def raw_tensor(name, data_type, values):
    if data_type == TensorProto.BFLOAT16:
        bits = (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        tensor = TensorProto(name=name, data_type=data_type, dims=[len(values)], raw_data=bits.tobytes())
        return tensor
    dtype = helper.tensor_dtype_to_np_dtype(data_type)
    tensor = numpy_helper.from_array(values.astype(dtype), name)
    assert tensor.data_type == data_type
    return tensor


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    fractional = np.array([-2, -1, 0, 1, 2, 0.333251953125])  # exact in float16
    bfractional = np.array([-2, -1, 0, 1, 2, 0.333984375])  # exact in bfloat16
    kinds = [
        ("float32", TensorProto.FLOAT, fractional), ("float64", TensorProto.DOUBLE, fractional),
        ("float16", TensorProto.FLOAT16, fractional), ("bfloat16", TensorProto.BFLOAT16, bfractional),
        ("int8", TensorProto.INT8, SIGNED), ("uint8", TensorProto.UINT8, UNSIGNED),
        ("int16", TensorProto.INT16, SIGNED), ("uint16", TensorProto.UINT16, UNSIGNED),
        ("int32", TensorProto.INT32, SIGNED), ("uint32", TensorProto.UINT32, UNSIGNED),
        ("int64", TensorProto.INT64, SIGNED), ("uint64", TensorProto.UINT64, UNSIGNED),
        ("bool", TensorProto.BOOL, BOOLS),
    ]
    initializers = []
    for label, data_type, values in kinds:
        initializers.append(raw_tensor(f"raw_{label}", data_type, values))
        initializers.append(typed_tensor(f"typed_{label}", data_type, values))
    node = helper.make_node("Add", ["x", "raw_float32"], ["y"], name="add")
    graph = helper.make_graph(
        [node], "dtypes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, OUT / "dtypes.onnx")

    arrays = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
        "i64": np.arange(4, dtype=np.int64) - 2,
        "b": np.array([True, False, True]),
        "f16": np.array([0.5, -1.5], dtype=np.float16),
    }
    np.savez(OUT / "arrays.npz", **arrays)
    np.savez_compressed(OUT / "arrays_compressed.npz", **arrays, f8=np.float64(2.5), i32=np.zeros(0, np.int32))
    print(f"wrote dtypes.onnx, arrays.npz, arrays_compressed.npz to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
