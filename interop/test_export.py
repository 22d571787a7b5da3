"""Interoperability of `onnx-dpo export` and `onnx-dpo convert`: what they write is checked with the onnx package's
current checker and run with onnxruntime, against `onnx-dpo run` on the base model with the adapter applied
unmerged, and against PEFT's `merge_and_unload` (references made by tools/make_convert_references.py).
The binary and the shared pieces: conftest.py."""
import json
import os
import pathlib
import resource
import signal
import struct

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnx import numpy_helper

from conftest import FIXTURES, ROOT, each_export, export_path, onnx_dpo

PEFT_CASES = sorted(p.name for p in (FIXTURES / "peft").iterdir() if (p / "reference.json").exists())
TOLERANCE = 1e-4


def ort_logits(path, feeds, adapter=None):
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the lora-inputs form's overridable initializers are intended
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    run_options = None
    if adapter is not None:
        lora = ort.LoraAdapter()
        lora.Load(str(adapter))
        run_options = ort.RunOptions()
        run_options.add_active_adapter(lora)
    return session.run(["logits"], feeds, run_options)[0]


def max_diff(a, b, mask):
    return float(np.abs(a - b)[mask].max())


def write_safetensors(path, tensors):
    """The safetensors format by hand (8-byte header length, JSON header, data), float32 only."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def random_adapter(model_path, folder, seed, rank=4, alpha=8.0):
    """A PEFT adapter with random non-zero A and B on the q and v projections `onnx-dpo inspect` finds; B covers
    every output feature of the stored weight (all of a fused q/k/v projection), or, for the separate q and v
    modules of an attention op's packed qkv (several module paths on one weight), the module's own part."""
    targets = json.loads(onnx_dpo("inspect", "--json", model_path).stdout)["lora_targets"]
    paths_per_weight = {}
    for target in targets:
        paths_per_weight.setdefault(target["weight"], set()).add(target["module_path"])
    shapes = {t.name: list(t.dims) for t in onnx.load(str(model_path), load_external_data=False).graph.initializer}
    rng = np.random.default_rng(seed)
    tensors, modules = {}, []
    for target in targets:
        path = target["module_path"]
        if path in modules:
            continue
        modules.append(path)
        shape, inputs = shapes[target["weight"]], target["in_features"]
        # [in, out] (MatMul) or [out, in] (Gemm transB); a MatMulNBits weight is [out, blocks, block bytes].
        outputs = shape[0] if len(shape) == 3 else shape[1] if shape[0] == inputs else shape[0]
        if len(paths_per_weight[target["weight"]]) > 1:
            outputs = target["out_features"]
        tensors[f"base_model.model.{path}.lora_A.weight"] = rng.standard_normal((rank, inputs)) * 0.1
        tensors[f"base_model.model.{path}.lora_B.weight"] = rng.standard_normal((outputs, rank)) * 0.1
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "adapter_model.safetensors", tensors)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0, "use_rslora": False,
              "target_modules": sorted({m.split(".")[-1] for m in modules}), "bias": "none"}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def fixture_inputs(model_path):
    feeds = dict(np.load(model_path.parent / "inputs.npz"))
    return feeds, feeds["attention_mask"].astype(bool)


def initializer_bytes(model_path):
    """name -> (data type, dims, raw little-endian bytes), external data read from beside the model."""
    model = onnx.load(str(model_path), load_external_data=True)
    return {t.name: (t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes()) for t in model.graph.initializer}


@each_export
def test_merged_export_runs_in_onnxruntime_like_the_unmerged_adapter(fixture, tmp_path):
    model = ROOT / fixture["path"]
    feeds, mask = fixture_inputs(model)
    adapter = random_adapter(model, tmp_path / "adapter", seed=len(fixture["name"]))
    merged = tmp_path / "out" / "merged.onnx"
    merged.parent.mkdir()
    report = json.loads(onnx_dpo("export", "--model", model, "--adapter", adapter, "--output", merged, "--json").stdout)

    onnx.checker.check_model(str(merged), full_check=True)
    if fixture["ir_version"] <= 8 and fixture["opset"] <= 17:
        assert report["checker"] == "passed"
    else:
        assert report["checker"].startswith("skipped: "), report["checker"]

    unmerged = tmp_path / "unmerged.npz"
    onnx_dpo("run", "--model", model, "--adapter", adapter, "--inputs", model.parent / "inputs.npz", "--output", unmerged)
    ours = np.load(unmerged)["logits"]
    theirs = ort_logits(merged, feeds)
    base = np.load(model.parent / "ort_logits.npz")["logits"]
    assert max_diff(theirs, ours, mask) < TOLERANCE
    assert max_diff(theirs, base, mask) > 1e-3, "the adapter must change the logits, else this proves nothing"

    # Same graph: nodes, inputs, outputs, value_info, opsets, IR version; only the adapted weights differ.
    before = onnx.load(str(model), load_external_data=False)
    after = onnx.load(str(merged), load_external_data=False)
    assert [n.SerializeToString() for n in after.graph.node] == [n.SerializeToString() for n in before.graph.node]
    for field in ("input", "output", "value_info", "opset_import"):
        container = after if field == "opset_import" else after.graph
        original = before if field == "opset_import" else before.graph
        assert [x.SerializeToString() for x in getattr(container, field)] == \
            [x.SerializeToString() for x in getattr(original, field)], field
    assert after.ir_version == before.ir_version
    old, new = initializer_bytes(model), initializer_bytes(merged)
    assert old.keys() == new.keys()
    changed = sorted(name for name in old if old[name] != new[name])
    assert changed == sorted(report["merged_weights"])
    assert all(old[n][:2] == new[n][:2] for n in old), "data types and shapes are kept"
    external_before = {t.name for t in before.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    external_after = {t.name for t in after.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    assert external_after == external_before
    if external_before:
        assert {e.value for t in after.graph.initializer for e in t.external_data if e.key == "location"} == {"merged.onnx.data"}
    provenance = json.loads({p.key: p.value for p in after.metadata_props}["onnx_dpo.provenance"])
    assert provenance["adapter"]["r"] == 4 and provenance["form"] == "merged"
    assert len(provenance["base_model"]["sha256"]) == 64


@each_export
def test_export_without_adapter_keeps_every_tensor_bit_for_bit(fixture, tmp_path):
    model = ROOT / fixture["path"]
    out = tmp_path / "copy.onnx"
    onnx_dpo("export", "--model", model, "--output", out)
    onnx.checker.check_model(str(out), full_check=True)
    assert initializer_bytes(out) == initializer_bytes(model)
    before = onnx.load(str(model), load_external_data=False)
    after = onnx.load(str(out), load_external_data=False)
    assert [n.SerializeToString() for n in after.graph.node] == [n.SerializeToString() for n in before.graph.node]
    metadata = {p.key: p.value for p in after.metadata_props}
    assert {p.key: p.value for p in before.metadata_props}.items() <= metadata.items()
    assert "onnx_dpo.provenance" in metadata
    feeds, mask = fixture_inputs(model)
    assert max_diff(ort_logits(out, feeds), np.load(model.parent / "ort_logits.npz")["logits"], mask) == 0


@pytest.mark.parametrize("name", ["llama-dynamo", "gpt2-torchscript", "gpt-neox-dynamo", "phi3-torchscript"])
def test_lora_forms_and_onnx_adapter_file(name, tmp_path):
    model = export_path(name)
    feeds, mask = fixture_inputs(model)
    adapter = random_adapter(model, tmp_path / "adapter", seed=7)
    for form in ("merged", "lora-nodes", "lora-inputs"):
        onnx_dpo("export", "--model", model, "--adapter", adapter, "--form", form, "--output", tmp_path / f"{form}.onnx")
        onnx.checker.check_model(str(tmp_path / f"{form}.onnx"), full_check=True)
    merged = ort_logits(tmp_path / "merged.onnx", feeds)
    assert max_diff(ort_logits(tmp_path / "lora-nodes.onnx", feeds), merged, mask) < TOLERANCE

    # Form lora-inputs: the adapter loaded from its .onnx_adapter file through onnxruntime's LoraAdapter.
    adapter_file = tmp_path / "lora-inputs.onnx_adapter"
    assert adapter_file.read_bytes()[4:8] == b"TORT"
    with_adapter = ort_logits(tmp_path / "lora-inputs.onnx", feeds, adapter=adapter_file)
    assert max_diff(with_adapter, merged, mask) < TOLERANCE
    graph = onnx.load(str(tmp_path / "lora-inputs.onnx"), load_external_data=False).graph
    lora_inputs = [i for i in graph.input if i.name.endswith((".lora_A", ".lora_B"))]
    assert lora_inputs and all("lora_rank" in [d.dim_param for d in i.type.tensor_type.shape.dim] for i in lora_inputs)
    # No adapter active: the rank-0 defaults give the base model.
    base = np.load(model.parent / "ort_logits.npz")["logits"]
    assert max_diff(ort_logits(tmp_path / "lora-inputs.onnx", feeds), base, mask) < TOLERANCE

    # `convert --to onnx-adapter` writes the same file for an existing lora-inputs export.
    onnx_dpo("convert", "--model", model, "--adapter", adapter, "--to", "onnx-adapter", "--output", tmp_path / "again.onnx_adapter")
    again = ort_logits(tmp_path / "lora-inputs.onnx", feeds, adapter=tmp_path / "again.onnx_adapter")
    assert max_diff(again, with_adapter, mask) == 0


@pytest.mark.parametrize("case", PEFT_CASES)
def test_convert_matches_peft_merge_and_unload(case, tmp_path):
    folder = FIXTURES / "peft" / case
    reference = json.loads((folder / "reference.json").read_text())
    model = export_path(reference["fixture"])
    feeds, mask = fixture_inputs(model)
    expected = np.load(folder / "merged_logits.npz")["logits"]
    onnx_dpo("convert", "--model", model, "--adapter", folder, "--to", "merged", "--output", tmp_path / "merged.onnx")
    onnx.checker.check_model(str(tmp_path / "merged.onnx"), full_check=True)
    assert max_diff(ort_logits(tmp_path / "merged.onnx", feeds), expected, mask) < TOLERANCE
    onnx_dpo("convert", "--model", model, "--adapter", folder, "--to", "lora-inputs", "--output", tmp_path / "inputs.onnx")
    with_adapter = ort_logits(tmp_path / "inputs.onnx", feeds, adapter=tmp_path / "inputs.onnx_adapter")
    assert max_diff(with_adapter, expected, mask) < TOLERANCE


def test_dora_adapter_is_refused_saying_why(tmp_path):
    model = export_path("llama-dynamo")
    result = onnx_dpo("export", "--model", model, "--adapter", FIXTURES / "peft" / "bad" / "dora",
                      "--output", tmp_path / "out.onnx", check=False)
    assert result.returncode != 0 and "DoRA" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_output_equal_to_input_is_refused_and_input_untouched(tmp_path):
    source = export_path("gpt2-torchscript")
    model = tmp_path / "model.onnx"
    model.write_bytes(source.read_bytes())
    before = model.read_bytes()
    result = onnx_dpo("export", "--model", model, "--output", tmp_path / "." / "model.onnx", check=False)
    assert result.returncode != 0 and "input model" in result.stderr
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_full_disk_leaves_no_partial_file(tmp_path):
    """A file-size limit makes write(2) fail mid-file (EFBIG), as a full disk does (ENOSPC): the command fails,
    names the file, and leaves neither the output nor a temporary file behind."""
    model = export_path("llama-dynamo")  # external data: two files to write
    out = tmp_path / "out"
    out.mkdir()

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    result = onnx_dpo("export", "--model", model, "--output", out / "merged.onnx", check=False, preexec_fn=limit_file_size)
    assert result.returncode != 0
    assert "merged.onnx" in result.stderr and "File too large" in result.stderr, result.stderr
    assert list(out.iterdir()) == []


def test_unwritable_folder_is_a_clear_error(tmp_path):
    model = export_path("gpt2-torchscript")
    if os.geteuid() == 0:
        folder = pathlib.Path("/proc/self")  # not writable even for root
    else:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
    result = onnx_dpo("export", "--model", model, "--output", folder / "out.onnx", check=False)
    assert result.returncode != 0 and "cannot write" in result.stderr, result.stderr
    assert not (folder / "out.onnx").exists()


def test_float16_model_keeps_float16_weights(tmp_path):
    """tools/make_float16_fixture.py's float16 Llama: the merged export keeps every weight float16 and runs in
    onnxruntime like the LoRA-as-nodes form (whose adapter tensors are float16 too)."""
    model = FIXTURES / "export" / "llama-float16" / "model.onnx"
    feeds, mask = fixture_inputs(model)
    adapter = random_adapter(model, tmp_path / "adapter", seed=5)
    for form in ("merged", "lora-nodes"):
        onnx_dpo("export", "--model", model, "--adapter", adapter, "--form", form, "--output", tmp_path / f"{form}.onnx")
        onnx.checker.check_model(str(tmp_path / f"{form}.onnx"), full_check=True)
    types = {t.data_type for t in onnx.load(str(tmp_path / "merged.onnx")).graph.initializer if t.dims}
    assert types == {onnx.TensorProto.FLOAT16}
    merged = ort_logits(tmp_path / "merged.onnx", feeds)
    assert max_diff(merged, ort_logits(tmp_path / "lora-nodes.onnx", feeds), mask) < 1e-2
    assert max_diff(merged, np.load(model.parent / "ort_logits.npz")["logits"], mask) > 1e-2


def external_tensor_bytes(model_path):
    """name -> raw bytes of each initializer, reading external data by offset (never loading a whole file)."""
    model = onnx.load(str(model_path), load_external_data=False)
    result = {}
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            result[tensor.name] = numpy_helper.to_array(tensor).tobytes()
            continue
        info = {e.key: e.value for e in tensor.external_data}
        if tensor.name == "padding":
            result[tensor.name] = (int(info["offset"]), int(info["length"]))
            continue
        with open(model_path.parent / info["location"], "rb") as file:
            file.seek(int(info.get("offset", 0)))
            result[tensor.name] = file.read(int(info["length"]))
    return result


def test_model_over_2_gib_exports_with_64_bit_offsets(tmp_path):
    """llama-dynamo with a 2 GiB + 1 MiB (sparse, unused) tensor in front of its weights, so every weight lies past
    offset 2³¹: the merged export must equal the small model's merged export tensor for tensor."""
    source = export_path("llama-dynamo")
    big_size = (1 << 31) + (1 << 20)
    model = onnx.load(str(source), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "big.onnx.data"
            elif entry.key == "offset":
                entry.value = str(int(entry.value) + big_size)
    padding = model.graph.initializer.add()
    padding.name, padding.data_type = "padding", onnx.TensorProto.UINT8
    padding.dims.append(big_size)
    padding.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "big.onnx.data"), ("offset", "0"), ("length", str(big_size))):
        entry = padding.external_data.add()
        entry.key, entry.value = key, value
    big = tmp_path / "big" / "big.onnx"
    big.parent.mkdir()
    with open(big.parent / "big.onnx.data", "wb") as data:
        data.truncate(big_size)  # sparse: no disk used for the padding
        data.seek(big_size)
        data.write((source.parent / "model.onnx.data").read_bytes())
    onnx.save(model, str(big))

    adapter = random_adapter(source, tmp_path / "adapter", seed=3)
    onnx_dpo("export", "--model", source, "--adapter", adapter, "--output", tmp_path / "small.onnx")
    onnx_dpo("export", "--model", big, "--adapter", adapter, "--output", tmp_path / "merged.onnx")
    assert (tmp_path / "merged.onnx.data").stat().st_size > 1 << 31
    small, merged = external_tensor_bytes(tmp_path / "small.onnx"), external_tensor_bytes(tmp_path / "merged.onnx")
    assert merged.pop("padding")[1] == big_size
    assert merged == small
