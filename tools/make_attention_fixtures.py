#!/usr/bin/env python3
"""Builds the fixtures of com.microsoft MultiHeadAttention and ONNX Attention (issue 9) under fixtures/attention/.

  python tools/make_attention_fixtures.py ops      the cases of tools/attention_op_cases.py, written as
                                                   tools/make_op_references.py writes its cases (NAME.onnx,
                                                   NAME.inputs.npz, NAME.outputs.npz by onnxruntime), into
                                                   fixtures/attention/ops/.
  python tools/make_attention_fixtures.py refused  one-node models of variants the interpreter refuses at load
                                                   (fixtures/attention/refused/NAME.onnx) and refused.json: per
                                                   model, the fragments its error must name.
  python tools/make_attention_fixtures.py models   whole models (see tools/make_attention_models.py).

Needs a Python with numpy, onnx and onnxruntime (measured: onnx 1.23.2, onnxruntime 1.32.0). Writes only under
fixtures/attention/.
"""
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "attention"
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tools" / "op_cases"))  # attention_op_cases uses their make_case


def ops():
    import onnx

    import attention_op_cases
    import make_op_references

    folder = OUT / "ops"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*"):
        stale.unlink()
    for case in attention_op_cases.CASES:
        model = make_op_references.build_model(case)
        outputs, source = make_op_references.run_reference(case, model)
        model.doc_string = f"reference outputs computed by {source}"
        onnx.save(model, folder / f"{case['name']}.onnx")
        np.savez(folder / f"{case['name']}.inputs.npz", **{n: a for n, a in case["inputs"] if a is not None})
        np.savez(folder / f"{case['name']}.outputs.npz", **outputs)
    print(f"wrote {len(attention_op_cases.CASES)} op cases to {folder.relative_to(ROOT)}")


# name -> (op, domain, opset, node inputs, attributes, fragments the refusal must name)
REFUSED = {
    "mha_packed_qkv": ("MultiHeadAttention", "com.microsoft", 22, ["qkv"], {"num_heads": 2},
                       ["'refused_node'", "MultiHeadAttention", "input 1 (key)", "packed QKV", "separate query, key and value"]),
    "mha_cache_indirection": ("MultiHeadAttention", "com.microsoft", 22,
                              ["q", "k", "v", "", "", "", "pk", "pv", "past_sequence_length", "cache_indirection"],
                              {"num_heads": 2}, ["MultiHeadAttention", "past_sequence_length", "only inputs 0-7"]),
    "mha_no_num_heads": ("MultiHeadAttention", "com.microsoft", 22, ["q", "k", "v"], {},
                         ["MultiHeadAttention", "num_heads", "required"]),
    "attention23_nonpad_kv_seqlen": ("Attention", "", 23, ["Q", "K", "V", "", "", "", "nonpad_kv_seqlen"], {},
                                     ["'refused_node'", "Attention", "nonpad_kv_seqlen", "only inputs 0-5", "opset 24"]),
    "attention_qk_mode_4": ("Attention", "", 23, ["Q", "K", "V"], {"qk_matmul_output_mode": 4},
                            ["Attention", "qk_matmul_output_mode", "0, 1, 2 and 3"]),
    "attention_q_heads_alone": ("Attention", "", 23, ["Q", "K", "V"], {"q_num_heads": 4},
                                ["Attention", "kv_num_heads", "go together"]),
}


def refused():
    from onnx import helper, TensorProto
    import onnx

    folder = OUT / "refused"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*"):
        stale.unlink()
    expected = {}
    for name, (op, domain, opset, inputs, attributes, fragments) in REFUSED.items():
        node = helper.make_node(op, inputs, ["y"], name="refused_node", domain=domain, **attributes)
        graph = helper.make_graph([node], name, [helper.make_tensor_value_info(i, TensorProto.FLOAT, None)
                                                 for i in inputs if i],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = 10
        onnx.save(model, folder / f"{name}.onnx")
        expected[name] = fragments
    (folder / "refused.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(f"wrote {len(expected)} refused models to {folder.relative_to(ROOT)}")


def models():
    import make_attention_models

    make_attention_models.main()


if __name__ == "__main__":
    what = sys.argv[1:] or ["ops", "refused", "models"]
    for step in what:
        {"ops": ops, "refused": refused, "models": models}[step]()
