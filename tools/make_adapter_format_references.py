#!/usr/bin/env python3
"""Writes the onnxruntime adapter fixtures that Tests/AdaptersTests/AdapterFormatTests.swift reads
(fixtures/adapter_formats/), with onnxruntime's own writer (`onnxruntime.AdapterFormat`,
the FlatBuffer format of onnxruntime/lora/adapter_format/adapter_schema.fbs), so that the Swift reader is
checked against files it did not write.

  reference.onnx_adapter          adapter_version 3, model_version 7, parameters:
                                    model.layers.0.self_attn.q_proj.lora_A.weight  float32  [2, 3]
                                    model.layers.0.self_attn.q_proj.lora_B.weight  float32  [4, 2]
                                    half                                            float16  [2, 3]  (values that round,
                                                                                                      a subnormal, -0)
                                    brain                                           bfloat16 [3]     (raw bits)
                                    empty                                           float32  [0, 3]
  default_versions.onnx_adapter   adapter_version 0, model_version 0 (which onnxruntime's builder leaves out of
                                  the table, as FlatBuffers does for defaults), one float32 [2] parameter
  reference.json                  per file: format_version, adapter_version, model_version, and per parameter
                                  its dtype (ONNX name), dims and values as Python floats after decoding to
                                  float32 (what onnxruntime reads back, checked here before writing)
  versions.json                   the library versions that produced the files

onnxruntime 1.31 refuses, on reading, a parameter without dims (a scalar), without a name or raw_data, with
raw_data of the wrong size, or of element type bool or string; so the fixtures have none.

A second mode reads a file written by Swift (`check`) with onnxruntime and prints every parameter, which is
how a Swift-written file is confirmed to load in onnxruntime (AdapterFormat.read_adapter and LoraAdapter.Load):
    /root/venv-tools/bin/python tools/make_adapter_format_references.py check path/to/file.onnx_adapter

Run from the repository root (CPU only, under a second):
    /root/venv-tools/bin/python tools/make_adapter_format_references.py
Measured with onnxruntime 1.31.1, numpy 2.4.6.
"""
import ctypes
import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "adapter_formats"

ONNX_FLOAT, ONNX_FLOAT16, ONNX_BFLOAT16 = 1, 10, 16
DTYPE_NAMES = {ONNX_FLOAT: "float32", ONNX_FLOAT16: "float16", ONNX_BFLOAT16: "bfloat16"}


def bfloat16_bits_to_float32(bits):
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def reference_parameters():
    """name -> (onnx element type, numpy array holding the stored bits, decoded float32 values)."""
    a = np.array([[0.5, -1.25, 3.0e-8], [7.0, -0.0, 1.0e30]], dtype=np.float32)
    b = (np.arange(8, dtype=np.float32).reshape(4, 2) - 3.5) / 3.0
    half = np.array([[0.1, -65504.0, 6.0e-8], [1.0 / 3.0, 2.0, -0.0]], dtype=np.float16)
    brain_bits = np.array([0x3DCD, 0xC040, 0x0001], dtype=np.uint16)  # 0.10009765625, -3.0, a subnormal
    empty = np.zeros((0, 3), dtype=np.float32)
    return {
        "model.layers.0.self_attn.q_proj.lora_A.weight": (ONNX_FLOAT, a, a),
        "model.layers.0.self_attn.q_proj.lora_B.weight": (ONNX_FLOAT, b, b),
        "half": (ONNX_FLOAT16, half, half.astype(np.float32)),
        "brain": (ONNX_BFLOAT16, brain_bits, bfloat16_bits_to_float32(brain_bits)),
        "empty": (ONNX_FLOAT, empty, empty),
    }


def ort_value(element_type, stored):
    if element_type == ONNX_BFLOAT16:
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(stored, onnx_element_type=ONNX_BFLOAT16)
    return ort.OrtValue.ortvalue_from_numpy(stored)


def decoded_values(value):
    """An OrtValue's values as float32, whatever its element type."""
    element_type = value.data_type()
    if element_type == "tensor(bfloat16)":
        # numpy has no bfloat16 (OrtValue.numpy() refuses it): copy the bytes out of the tensor's memory.
        bits = np.frombuffer(ctypes.string_at(value.data_ptr(), value.tensor_size_in_bytes()), dtype=np.uint16)
        return bfloat16_bits_to_float32(bits).reshape(value.shape())
    return np.asarray(value.numpy()).astype(np.float32)


def export(path, adapter_version, model_version, parameters):
    adapter = ort.AdapterFormat()
    adapter.set_adapter_version(adapter_version)
    adapter.set_model_version(model_version)
    values = {name: ort_value(element_type, stored) for name, (element_type, stored, _) in parameters.items()}
    adapter.set_parameters(values)
    adapter.export_adapter(str(path))

    # What onnxruntime reads back must be what was written, or the fixture would lie.
    loaded = ort.AdapterFormat.read_adapter(str(path))
    assert loaded.get_adapter_version() == adapter_version and loaded.get_model_version() == model_version
    read = loaded.get_parameters()
    assert set(read) == set(parameters), (sorted(read), sorted(parameters))
    for name, (_, _, expected) in parameters.items():
        actual = decoded_values(read[name])
        assert actual.shape == expected.shape and np.array_equal(actual.view(np.uint32), expected.view(np.uint32)), name
    ort.LoraAdapter().Load(str(path))

    def number(v):
        return float(v) if np.isfinite(v) else ("inf" if v > 0 else "-inf")

    return {
        "format_version": loaded.get_format_version(),
        "adapter_version": adapter_version,
        "model_version": model_version,
        "parameters": {
            name: {"dtype": DTYPE_NAMES[element_type], "dims": list(expected.shape),
                   "values": [number(v) for v in expected.reshape(-1)]}
            for name, (element_type, _, expected) in parameters.items()
        },
    }


def write_references():
    OUT.mkdir(parents=True, exist_ok=True)
    reference = {
        "reference.onnx_adapter": export(OUT / "reference.onnx_adapter", 3, 7, reference_parameters()),
        "default_versions.onnx_adapter": export(
            OUT / "default_versions.onnx_adapter", 0, 0,
            {"only": (ONNX_FLOAT, np.array([1.0, -2.0], dtype=np.float32), np.array([1.0, -2.0], dtype=np.float32))}),
    }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")
    versions = {"onnxruntime": ort.__version__, "numpy": np.__version__}
    (OUT / "versions.json").write_text(json.dumps(versions, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


def check(path):
    """Loads `path` with onnxruntime both ways and prints its versions and parameters."""
    adapter = ort.AdapterFormat.read_adapter(path)
    print(f"format_version {adapter.get_format_version()} adapter_version {adapter.get_adapter_version()} "
          f"model_version {adapter.get_model_version()}")
    for name, value in sorted(adapter.get_parameters().items()):
        values = decoded_values(value)
        print(f"{name} {value.data_type()} {list(values.shape)} {values.reshape(-1).tolist()}")
    ort.LoraAdapter().Load(path)
    print("LoraAdapter.Load: ok")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "check":
        check(sys.argv[2])
    elif len(sys.argv) == 1:
        write_references()
    else:
        sys.exit(__doc__)
