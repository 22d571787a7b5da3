#!/usr/bin/env python3
"""Writes small malformed (or unusual) ONNX models into fixtures/graph/bad/, for the
importer's error paths. Needs only onnx and numpy:  python tools/make_bad_fixtures.py  (from the repo root,
or anywhere: paths are relative to this file).

  escaping_location.onnx   initializer W with data_location EXTERNAL, location "../outside.bin"
                           (path traversal out of the model's folder; the file is never created)
  absolute_location.onnx   the same with location "/etc/hostname" (absolute path)
  missing_external.onnx    the same with location "missing.bin" (no such file)
  short_external.onnx      W (2x3 float32 = 24 bytes) at offset 16, length 24 in short_external.bin,
  short_external.bin         which is only 32 bytes long (shorter than offset + length = 40)
  unsupported_op.onnx      valid model, opset 17: Y = Einsum("ij,jk->ik", A, B), node "my_einsum", on graph
                           inputs A [2,3] and B [3,4]
  custom_domain.onnx       valid model: node "fancy", op "FancyOp" in domain "com.example" (opset import
                           com.example v1, plus the default domain at 17), X [2,3] -> Y [2,3]
  node_metadata.onnx       valid model, IR 10 / opset 20: Y = Add(X, W) (node "add0", W an inline
                           initializer) whose NodeProto.metadata_props (a field newer than ONNX 1.12) hold
                           pkg.torch.onnx.name_scopes = "['', 'model.layers.0.self_attn.q_proj']" and
                           namespace = "test", as the dynamo exporter writes them

The four external-data models are otherwise valid: graph input X [2,3] float, Y = Add(X, W), IR 8 /
opset 17. The onnx checker is run on every model (by path, so external data is looked at) and its verdict
printed; it is expected to refuse the external-data ones.
"""
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "graph" / "bad"
PRODUCER = "onnx-dpo tools/make_bad_fixtures.py"

W_VALUES = np.arange(6, dtype=np.float32).reshape(2, 3) / 4.0


def model(nodes, inputs, outputs, initializers=(), opsets=(("", 17),), ir_version=8, name="bad"):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets],
        producer_name=PRODUCER,
    )
    proto.ir_version = ir_version
    return proto


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def external_tensor(location, offset=0, length=W_VALUES.nbytes):
    tensor = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=list(W_VALUES.shape))
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def add_model(w, ir_version=8, opset=17):
    return model(
        [helper.make_node("Add", ["X", "W"], ["Y"], name="add0")],
        [f32("X", [2, 3])],
        [f32("Y", [2, 3])],
        [w],
        opsets=(("", opset),),
        ir_version=ir_version,
    )


def build():
    files = {}
    files["escaping_location.onnx"] = add_model(external_tensor("../outside.bin"))
    files["absolute_location.onnx"] = add_model(external_tensor("/etc/hostname"))
    files["missing_external.onnx"] = add_model(external_tensor("missing.bin"))
    files["short_external.onnx"] = add_model(external_tensor("short_external.bin", offset=16, length=24))

    files["unsupported_op.onnx"] = model(
        [helper.make_node("Einsum", ["A", "B"], ["Y"], name="my_einsum", equation="ij,jk->ik")],
        [f32("A", [2, 3]), f32("B", [3, 4])],
        [f32("Y", [2, 4])],
    )

    files["custom_domain.onnx"] = model(
        [helper.make_node("FancyOp", ["X"], ["Y"], name="fancy", domain="com.example")],
        [f32("X", [2, 3])],
        [f32("Y", [2, 3])],
        opsets=(("", 17), ("com.example", 1)),
    )

    proto = add_model(numpy_helper.from_array(W_VALUES, "W"), ir_version=10, opset=20)
    node = proto.graph.node[0]
    for key, value in (
        ("pkg.torch.onnx.name_scopes", "['', 'model.layers.0.self_attn.q_proj']"),
        ("namespace", "test"),
    ):
        entry = node.metadata_props.add()
        entry.key, entry.value = key, value
    files["node_metadata.onnx"] = proto
    return files


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    files = build()
    for name, proto in files.items():
        # onnx.save would try to resolve external data; serialise the proto exactly as built.
        (OUT / name).write_bytes(proto.SerializeToString())
    # 32 bytes: the 24-byte tensor at offset 16 would need 40.
    short = np.arange(8, dtype=np.float32).tobytes()
    (OUT / "short_external.bin").write_bytes(short)

    for name in list(files) + ["short_external.bin"]:
        path = OUT / name
        line = f"{path.relative_to(ROOT)}  {path.stat().st_size} bytes"
        if name.endswith(".onnx"):
            proto = files[name]
            line += f"  IR {proto.ir_version} opsets {[(o.domain or 'ai.onnx', o.version) for o in proto.opset_import]}"
            try:
                onnx.checker.check_model(str(path), full_check=True)
                line += "  checker: ok"
            except Exception as error:  # noqa: BLE001 - report whatever the checker says
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                line += f"  checker: {type(error).__name__}: {first}"
        print(line)


if __name__ == "__main__":
    main()
