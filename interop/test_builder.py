"""Interoperability on onnxruntime-genai builder graphs (fixtures/builder, made by tools/make_builder_fixtures.py):
`onnx-dpo run` (KV-cache inputs fed empty) against onnxruntime, and what `onnx-dpo export` writes for a builder
base, run with onnxruntime (and, where onnxruntime-genai is installed, loaded through its Adapters API) against
`onnx-dpo run --adapter`. MatMulNBits runs at accuracy_level 0 in onnxruntime (level 4 quantises activations to
int8 inside onnxruntime; onnx-dpo computes the exact dequantised product)."""
import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import FIXTURES, ROOT, onnx_dpo
from test_export import ort_logits, random_adapter

BUILDER = json.loads((FIXTURES / "builder" / "fixtures.json").read_text())
IDS = [f["name"] for f in BUILDER]
TOLERANCE = 1e-4


def feeds_with_empty_past(session, inputs):
    feeds = dict(inputs)
    batch = feeds["input_ids"].shape[0]
    for value in session.get_inputs():
        if value.name.startswith("past_key_values."):
            feeds[value.name] = np.zeros((batch, value.shape[1], 0, 16), dtype=np.float32)
    return feeds


def accuracy_level_0(path, tmp_path):
    """A copy of the model at `path` with every MatMulNBits at accuracy_level 0, for onnxruntime."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        for attribute in node.attribute:
            if node.op_type == "MatMulNBits" and attribute.name == "accuracy_level":
                attribute.i = 0
    copy = tmp_path / f"{path.stem}-accuracy0.onnx"
    onnx.save(model, str(copy), save_as_external_data=True, location=f"{copy.name}.data")
    return copy


@pytest.mark.parametrize("fixture", BUILDER, ids=IDS)
def test_run_matches_onnxruntime(fixture, tmp_path):
    model = ROOT / fixture["path"]
    inputs = model.parent / "inputs.npz"
    onnx_dpo("run", "--model", model, "--inputs", inputs, "--output", tmp_path / "out.npz")
    ours = np.load(tmp_path / "out.npz")
    feeds = dict(np.load(inputs))
    reference = ort_logits(accuracy_level_0(model, tmp_path), feeds_with_empty_past(ort.InferenceSession(str(model)), feeds))
    mask = feeds["attention_mask"].astype(bool)
    assert np.abs(ours["logits"] - reference)[mask].max() < TOLERANCE
    assert ours["present.0.key"].shape == (2, 2, mask.shape[1], 16)


@pytest.mark.parametrize("fixture", BUILDER, ids=IDS)
def test_exports_run_in_onnxruntime_like_the_unmerged_adapter(fixture, tmp_path):
    model = ROOT / fixture["path"]
    adapter = random_adapter(model, tmp_path / "adapter", seed=5)
    inputs = model.parent / "inputs.npz"
    onnx_dpo("run", "--model", model, "--inputs", inputs, "--output", tmp_path / "ours.npz", "--adapter", adapter)
    ours = np.load(tmp_path / "ours.npz")["logits"]
    onnx_dpo("run", "--model", model, "--inputs", inputs, "--output", tmp_path / "base.npz")
    base = np.load(tmp_path / "base.npz")["logits"]
    feeds = dict(np.load(inputs))
    mask = feeds["attention_mask"].astype(bool)
    assert np.abs(ours - base)[mask].max() > 1e-3, "the adapter changes the output"

    # lora-inputs: the base graph plus LoRA nodes reading graph inputs, the adapter in an .onnx_adapter file.
    onnx_dpo("export", "--model", model, "--adapter", adapter, "--output", tmp_path / "lora-inputs.onnx",
             "--form", "lora-inputs")
    exported = accuracy_level_0(tmp_path / "lora-inputs.onnx", tmp_path)
    feeds = feeds_with_empty_past(ort.InferenceSession(str(exported)), feeds)
    with_adapter = ort_logits(exported, feeds, adapter=tmp_path / "lora-inputs.onnx_adapter")
    assert np.abs(with_adapter - ours)[mask].max() < TOLERANCE

    if fixture["precision"] == "fp32":
        merged = tmp_path / "merged.onnx"
        onnx_dpo("export", "--model", model, "--adapter", adapter, "--output", merged)
        merged_logits = ort_logits(accuracy_level_0(merged, tmp_path), feeds)
        assert np.abs(merged_logits - ours)[mask].max() < TOLERANCE
    # int4 merged: test_int4_merged_export_requantises_as_onnxruntimes_quantizer.


def nibbles(packed, rows):
    """4-bit codes [N, K'] of a MatMulNBits B (low nibble first)."""
    packed = packed.reshape(rows, -1)
    return np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(rows, -1).astype(np.int64)


INT4 = [f for f in BUILDER if f["precision"] == "int4"]


@pytest.mark.parametrize("fixture", INT4, ids=[f["name"] for f in INT4])
def test_int4_merged_export_requantises_as_onnxruntimes_quantizer(fixture, tmp_path):
    """`export --form merged` on an int4 base: each adapted MatMulNBits weight dequantised, W + scale·ΔW added in fp32
    and re-quantised. The written codes and scales equal onnxruntime's own blockwise quantizer (`quantize_matmul_4bits`,
    what the builder calls) run on those merged fp32 weights; the k rows of the packed qkv keep their exact bytes; the
    report gives the error / scale (max ≤ 1: the symmetric scheme reaches −8·s on one side and only 7·s on the other;
    RMS about 1/√12, uniform rounding). In onnxruntime the merged file equals `onnx-dpo run` on it (the file is what we
    say), and its logits differ from `onnx-dpo run --adapter` (the unmerged fp32 adapter) by what re-rounding the q/v
    rows costs: at most 1.5x the difference between the builder's int4 and fp32 builds of the same model (rounding
    every weight to int4 once), and at most a quarter of the adapter's own effect, so the merge keeps the adapter."""
    import sys
    sys.path.insert(0, str(ROOT / "tools"))
    from dequantize_builder_int4 import dequantize_matmul_nbits
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits
    from test_mpi import safetensors as load_file

    model = ROOT / fixture["path"]
    adapter = random_adapter(model, tmp_path / "adapter", seed=5)
    out = tmp_path / "out"
    out.mkdir()
    report = json.loads(onnx_dpo("export", "--model", model, "--adapter", adapter, "--output", out / "model.onnx",
                                 "--json").stdout)
    assert len(report["requantized"]) == 2, report
    for entry in report["requantized"]:
        assert entry["bits"] == 4 and entry["block_size"] == 32 and entry["symmetric"]
        assert entry["output_features"] == 96, "q (64) and v (32) rows; k rows untouched"
        assert 0.4 < entry["error"]["maximum"] <= 1.0 + 1e-6 and 0.2 < entry["error"]["rms"] < 0.36, entry
    assert sorted(pathlib.Path(f).name for f in report["carried_files"]) == ["genai_config.json", "tokenizer.json", "tokenizer_config.json"]

    base = onnx.load(str(model), load_external_data=True)
    written = onnx.load(str(out / "model.onnx"), load_external_data=True)
    before = {t.name: onnx.numpy_helper.to_array(t) for t in base.graph.initializer}
    after = {t.name: onnx.numpy_helper.to_array(t) for t in written.graph.initializer}
    tensors = load_file(adapter / "adapter_model.safetensors")
    config = json.loads((adapter / "adapter_config.json").read_text())
    scale = np.float32(config["lora_alpha"] / config["r"])
    checked = 0
    for node in base.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        if "qkv_proj" not in node.name:
            assert all(np.array_equal(before[name], after[name]) for name in node.input[1:3]), node.name
            continue
        layer = node.name.split("/")[2].split(".")[1]
        weight = dequantize_matmul_nbits(node, before)  # [N, K]
        rows = weight.shape[0]
        for part, columns in (("q_proj", slice(0, 64)), ("v_proj", slice(96, 128))):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{part}"
            delta = tensors[prefix + ".lora_B.weight"].astype(np.float32) @ tensors[prefix + ".lora_A.weight"].astype(np.float32)
            weight[columns] += scale * delta
        packed = np.zeros((rows, 2, 16), np.uint8)
        scales = np.zeros((rows, 2), np.float32)
        zero_points = np.zeros((rows, 1), np.uint8)
        quantize_matmul_4bits(packed, np.ascontiguousarray(weight.T), scales, zero_points, 32, rows, weight.shape[1], True)
        ours_scales = after[node.input[2]].reshape(rows, 2)
        assert np.allclose(ours_scales, scales, rtol=1e-6, atol=0), node.name
        mismatched = nibbles(after[node.input[1]], rows) != nibbles(packed, rows)
        # fp32 sums in another order may move a value across a rounding boundary; none did when measured.
        assert mismatched.sum() <= 2, (node.name, mismatched.sum())
        assert np.array_equal(after[node.input[1]][64:96], before[node.input[1]][64:96]), "k rows keep their bytes"
        assert np.array_equal(ours_scales[64:96], before[node.input[2]].reshape(rows, 2)[64:96])
        checked += 1
    assert checked == 2

    inputs = model.parent / "inputs.npz"
    feeds = dict(np.load(inputs))
    mask = feeds["attention_mask"].astype(bool)
    onnx_dpo("run", "--model", model, "--inputs", inputs, "--output", tmp_path / "unmerged.npz", "--adapter", adapter)
    onnx_dpo("run", "--model", out / "model.onnx", "--inputs", inputs, "--output", tmp_path / "merged.npz")
    unmerged = np.load(tmp_path / "unmerged.npz")["logits"]
    exported = accuracy_level_0(out / "model.onnx", tmp_path)
    merged = ort_logits(exported, feeds_with_empty_past(ort.InferenceSession(str(exported)), feeds))
    assert np.abs(merged - np.load(tmp_path / "merged.npz")["logits"])[mask].max() < TOLERANCE
    base_int4 = np.load(model.parent / "ort_logits.npz")["logits"]
    base_fp32 = np.load(ROOT / "fixtures" / "builder" / fixture["name"].replace("int4", "fp32") / "ort_logits.npz")["logits"]
    requantisation = np.abs(merged - unmerged)[mask].max()
    rounding_every_weight = np.abs(base_int4 - base_fp32)[mask].max()
    adapter_effect = np.abs(unmerged - base_int4)[mask].max()
    print(f"{fixture['name']}: |merged int4 - unmerged| {requantisation:.4f}, |int4 - fp32 build| "
          f"{rounding_every_weight:.4f}, adapter effect {adapter_effect:.4f}")
    assert 0 < requantisation <= 1.5 * rounding_every_weight
    assert requantisation <= 0.25 * adapter_effect


FORMS = ["merged", "lora-nodes", "lora-inputs"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("fixture", BUILDER, ids=IDS)
def test_every_export_folder_runs_in_onnxruntime_genai_as_it_is(fixture, form, tmp_path):
    """The output folder of every export form holds what onnxruntime-genai reads (genai_config.json and the tokenizer
    files, carried by the export) and generates greedily as written, with no file copied by hand; its tokens equal
    `onnx-dpo generate` on the same exported model (and, for lora-inputs, with the adapter loaded through
    onnxruntime-genai's Adapters). MatMulNBits runs at the file's accuracy_level 4 in onnxruntime-genai."""
    og = pytest.importorskip("onnxruntime_genai")
    model = ROOT / fixture["path"]
    adapter = random_adapter(model, tmp_path / "adapter", seed=7)
    folder = tmp_path / "folder"
    folder.mkdir()
    onnx_dpo("export", "--model", model, "--adapter", adapter, "--output", folder / "model.onnx", "--form", form)
    assert (folder / "genai_config.json").read_bytes() == (model.parent / "genai_config.json").read_bytes()
    prompt = [5, 17, 42]
    genai = og.Model(str(folder))
    params = og.GeneratorParams(genai)
    params.set_search_options(max_length=len(prompt) + 6, do_sample=False)
    generator = og.Generator(genai, params)
    if form == "lora-inputs":
        adapters = og.Adapters(genai)
        adapters.load(str(folder / "model.onnx_adapter"), "dpo")
        generator.set_active_adapter(adapters, "dpo")
    generator.append_tokens(np.array([prompt], dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    tokens = list(generator.get_sequence(0))
    assert len(tokens) == len(prompt) + 6 and tokens[:3] == prompt
    ours_model = model if form == "lora-inputs" else folder / "model.onnx"
    extra = ["--adapter", adapter] if form == "lora-inputs" else []
    ours = json.loads(onnx_dpo("generate", "--model", ours_model, "--prompt-ids", ",".join(map(str, prompt)),
                               "--max-new-tokens", 6, "--greedy", "--json", *extra).stdout)["output_ids"][0]
    assert tokens[len(prompt):] == ours, (tokens, ours)


@pytest.mark.parametrize("fixture", BUILDER, ids=IDS)
def test_lora_inputs_export_loads_in_onnxruntime_genai(fixture, tmp_path):
    og = pytest.importorskip("onnxruntime_genai")
    model = ROOT / fixture["path"]
    adapter = random_adapter(model, tmp_path / "adapter", seed=6)
    folder = tmp_path / "genai"
    folder.mkdir()
    for name in ("genai_config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((model.parent / name).read_bytes())
    onnx_dpo("export", "--model", model, "--adapter", adapter, "--output", folder / "model.onnx", "--form", "lora-inputs")
    genai = og.Model(str(folder))
    adapters = og.Adapters(genai)
    adapters.load(str(folder / "model.onnx_adapter"), "dpo")
    params = og.GeneratorParams(genai)
    params.set_search_options(max_length=8)
    generator = og.Generator(genai, params)
    generator.set_active_adapter(adapters, "dpo")
    generator.append_tokens(np.array([[5, 17, 42]], dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    assert len(generator.get_sequence(0)) == 8


def test_carried_genai_config_names_the_output_and_a_refused_export_writes_nothing(tmp_path):
    """Exported under another file name, the carried genai_config.json names that file (decoder.filename), and the
    folder still runs in onnxruntime-genai. A refused export writes nothing: no model, data, adapter or side file."""
    model = ROOT / "fixtures" / "builder" / "llama-int4" / "model.onnx"
    adapter = random_adapter(model, tmp_path / "adapter", seed=8)
    folder = tmp_path / "renamed"
    folder.mkdir()
    onnx_dpo("export", "--model", model, "--adapter", adapter, "--output", folder / "tuned.onnx")
    config = json.loads((folder / "genai_config.json").read_text())
    assert config["model"]["decoder"]["filename"] == "tuned.onnx"
    assert config["search"] == json.loads((model.parent / "genai_config.json").read_text())["search"]
    try:
        import onnxruntime_genai as og
    except ImportError:
        og = None
    if og is not None:
        genai = og.Model(str(folder))
        params = og.GeneratorParams(genai)
        params.set_search_options(max_length=6)
        generator = og.Generator(genai, params)
        generator.append_tokens(np.array([[5, 17, 42]], dtype=np.int32))
        while not generator.is_done():
            generator.generate_next_token()
        assert len(generator.get_sequence(0)) == 6

    refused = tmp_path / "refused"
    refused.mkdir()
    result = onnx_dpo("export", "--model", model, "--output", refused / "model.onnx", "--form", "lora-inputs", check=False)
    assert result.returncode != 0 and "lora-inputs needs an adapter" in result.stderr
    assert sorted(p.name for p in refused.iterdir()) == []


def test_int4_merge_into_the_tied_lm_head_gives_the_projection_its_own_copy(tmp_path):
    """The int4 builds read their embedding through GatherBlockQuantized from the lm_head's int4 weight and scales. An
    adapter on lm_head merges into private copies of both (reported), so the embedding keeps the original bytes; the
    merged model in onnxruntime is within a quarter of the adapter's effect of `onnx-dpo run --adapter`."""
    from test_export import write_safetensors

    model = ROOT / "fixtures" / "builder" / "llama-int4" / "model.onnx"
    rng = np.random.default_rng(3)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    write_safetensors(adapter / "adapter_model.safetensors", {
        "base_model.model.lm_head.lora_A.weight": rng.standard_normal((4, 64)) * 0.1,
        "base_model.model.lm_head.lora_B.weight": rng.standard_normal((512, 4)) * 0.1})
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8.0, "lora_dropout": 0.0, "use_rslora": False,
         "target_modules": ["lm_head"], "bias": "none"}))
    out = tmp_path / "out"
    out.mkdir()
    report = json.loads(onnx_dpo("export", "--model", model, "--adapter", adapter, "--output", out / "model.onnx",
                                 "--json").stdout)
    assert report["merged_weights"] == [] and len(report["copied_weights"]) == 2, report
    written = onnx.load(str(out / "model.onnx"), load_external_data=True)
    base = onnx.load(str(model), load_external_data=True)
    gather = next(n for n in written.graph.node if n.op_type == "GatherBlockQuantized")
    head = next(n for n in written.graph.node if n.name == "/lm_head/MatMul_Q4")
    assert "merged" in head.input[1] and "merged" in head.input[2] and "merged" not in gather.input[2]
    values = lambda m: {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}  # noqa: E731
    before, after = values(base), values(written)
    assert np.array_equal(before["lm_head.MatMul.weight_Q4"], after["lm_head.MatMul.weight_Q4"])
    assert not np.array_equal(before["lm_head.MatMul.weight_Q4"], after[head.input[1]])

    inputs = model.parent / "inputs.npz"
    feeds = dict(np.load(inputs))
    mask = feeds["attention_mask"].astype(bool)
    onnx_dpo("run", "--model", model, "--inputs", inputs, "--output", tmp_path / "unmerged.npz", "--adapter", adapter)
    unmerged = np.load(tmp_path / "unmerged.npz")["logits"]
    exported = accuracy_level_0(out / "model.onnx", tmp_path)
    merged = ort_logits(exported, feeds_with_empty_past(ort.InferenceSession(str(exported)), feeds))
    effect = np.abs(unmerged - np.load(model.parent / "ort_logits.npz")["logits"])[mask].max()
    assert np.abs(merged - unmerged)[mask].max() <= 0.25 * effect


def test_adapter_trained_on_the_int4_builder_graph_loads_in_peft_on_the_hf_model(tmp_path):
    """`train` on the int4 builder Llama writes a PEFT adapter with the Hugging Face module names (separate
    self_attn.q_proj / v_proj on the packed qkv): PEFT loads it onto the Hugging Face Llama holding the file's
    dequantised weights (tools/dequantize_builder_int4.py) with no missing or unexpected key, and its logits equal
    `onnx-dpo run --adapter` on the int4 file within 1e-4."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    import sys
    sys.path.insert(0, str(ROOT / "tools"))
    from dequantize_builder_int4 import dequantized_model

    folder = ROOT / "fixtures" / "builder" / "llama-int4"
    run = tmp_path / "run"
    onnx_dpo("train", "--model", folder / "model.onnx", "--tokenizer", folder / "tokenizer.json",
             "--data", FIXTURES / "dpo" / "preferences.jsonl", "--output-dir", run, "--batch-size", 4,
             "--max-steps", 2, "--lr", "1e-2", "--no-tensorboard")
    adapter = run / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"], config
    model, _, _ = dequantized_model(folder, "llama")
    peft_model = peft.PeftModel.from_pretrained(model, str(adapter))
    loaded = {n for n, _ in peft_model.named_parameters() if "lora_" in n}
    assert len(loaded) == 8, loaded  # A and B of q_proj and v_proj in 2 layers
    inputs = folder / "inputs.npz"
    onnx_dpo("run", "--model", folder / "model.onnx", "--inputs", inputs, "--output", tmp_path / "ours.npz",
             "--adapter", adapter)
    feeds = dict(np.load(inputs))
    with torch.no_grad():
        theirs = peft_model(input_ids=torch.from_numpy(feeds["input_ids"]),
                            attention_mask=torch.from_numpy(feeds["attention_mask"]), use_cache=False).logits.numpy()
    mask = feeds["attention_mask"].astype(bool)
    ours = np.load(tmp_path / "ours.npz")["logits"]
    assert np.abs(ours - theirs)[mask].max() < TOLERANCE
    assert np.abs(ours - np.load(folder / "ort_logits.npz")["logits"])[mask].max() > 1e-3, "training moved the adapter"
