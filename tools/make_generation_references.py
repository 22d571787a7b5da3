#!/usr/bin/env python3
"""Writes fixtures/generation/expected.json: what transformers' `generate` (greedy) and onnxruntime-genai (greedy,
builder fixtures) produce on the fixture models, and what transformers' logits processors compute, for the
generation tests (Tests/TrainingTests/GenerationTests.swift, interop/test_generate.py).

  * Every export of fixtures/models/fixtures.json plus gemma3-torchscript: the Hugging Face model rebuilt by
    tools/make_fixtures.py's or tools/make_gemma3_fixture.py's `build_model`, checked bit for bit against
    the export's ONNX initializers (each parameter equals some initializer, as is or transposed, as
    tools/reference_dpo.py checks), then per prompt `generate(do_sample=False, max_new_tokens=N)` on the prompt alone
    (batch 1, no padding): the new ids, and per step the margin between the two largest logits; again with
    repetition_penalty=REPETITION_PENALTY (still greedy), whose outputs vary more than plain greedy's.
  * Every builder fixture (fixtures/builder/fixtures.json): onnxruntime-genai's greedy output on the same prompts
    (MatMulNBits rewritten to accuracy_level 0 in a temporary copy, as make_builder_fixtures.py does for its
    logits: level 4 quantises activations to int8), and transformers' on the model the builder was given.
  * fixtures/generation/llama-with-past/: a very small Llama (vocabulary 64, no tokenizer: prompts are ids)
    exported with KV-cache inputs and present outputs in optimum's layout (input_ids, attention_mask, position_ids,
    past_key_values.N.key/value -> logits, present.N.*), for the general-mask cache path, with its own references.
  * Prompts: tiny random models have near-ties, so a prompt is kept for a model only when every step's top-2 margin
    is > MARGIN (1e-4); the first PROMPTS_PER_MODEL such prompts of CANDIDATES are recorded, with their margins.
  * Logits processors: one [2, 24] batch of scores and ids through RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper alone and chained in
    `_get_logits_processor`'s order (repetition penalty, temperature, top-k, top-p, min-p); -inf is written as null.

Run with /work/venv-builder/bin/python (torch 2.15, transformers 5.24, onnxruntime 1.32, onnxruntime-genai 0.18)
from anywhere: /work/venv-builder/bin/python tools/make_generation_references.py
"""
import json
import pathlib
import shutil
import sys
import tempfile
import warnings

import numpy as np
import onnx
import torch
import transformers

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_fixtures as fx  # noqa: E402
import make_gemma3_fixture  # noqa: E402

OUT = ROOT / "fixtures" / "generation"
MAX_NEW_TOKENS = 8
MARGIN = 1e-4
REPETITION_PENALTY = 1.5  # a second greedy run with it: the penalty makes tiny random models stop repeating one token
PROMPTS_PER_MODEL = 2
CANDIDATES = [
    "The quick brown fox",
    "Once upon a time there was",
    "A model",
    "Hello world, this is a longer prompt about training small language models with preferences",
    "In the beginning",
    "Data",
]


def check_against_onnx(model, path, folded_norms=False):
    """Every parameter equals (bitwise) some float initializer of the export at `path`, as is or transposed (or,
    with `folded_norms`, a 1-D one plus 1)."""
    proto = onnx.load(str(path), load_external_data=True)
    by_shape = {}
    for tensor in proto.graph.initializer:
        array = onnx.numpy_helper.to_array(tensor)
        if array.dtype == np.float32:
            by_shape.setdefault(array.shape, []).append(array)
    for name, parameter in model.named_parameters():
        value = parameter.detach().numpy()
        candidates = [value] + ([value.T] if value.ndim == 2 else [])
        if folded_norms and value.ndim == 1:
            candidates.append(np.float32(1) + value)  # Gemma's RMSNorm scales by (1 + w); TorchScript folds the sum
        found = any(np.array_equal(c, a) for c in candidates for a in by_shape.get(c.shape, []))
        assert found, f"{path}: {name} {tuple(value.shape)} not found among the ONNX initializers"


def hf_greedy(model, ids, repetition_penalty=1.0):
    """transformers' greedy continuation of `ids` (batch 1) and the top-2 margin of the processed scores at each
    step."""
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             do_sample=False, max_new_tokens=MAX_NEW_TOKENS, output_scores=True,
                             repetition_penalty=repetition_penalty,
                             return_dict_in_generate=True, pad_token_id=model.config.pad_token_id)
    new = out.sequences[0, len(ids):].tolist()
    margins = []
    for logits in out.scores:
        top = torch.topk(logits[0].float(), 2).values
        margins.append(float(top[0] - top[1]))
    return new, margins


def genai_greedy(folder, ids, max_length, repetition_penalty=1.0):
    """onnxruntime-genai's greedy continuation of `ids` on the builder model in `folder`."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=max_length, repetition_penalty=repetition_penalty)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    while not generator.is_done():
        generator.generate_next_token()
    return [int(t) for t in generator.get_sequence(0)][len(ids):]


def accuracy_level_zero(folder, into):
    """A copy of the builder folder with every MatMulNBits at accuracy_level 0 (float activations)."""
    shutil.copytree(folder, into)
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=True)
    for node in proto.graph.node:
        if node.op_type == "MatMulNBits":
            for attribute in node.attribute:
                if attribute.name == "accuracy_level":
                    attribute.i = 0
    (into / "model.onnx").unlink()
    (into / "model.onnx.data").unlink()
    onnx.save(proto, str(into / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    return into


class WithPast(torch.nn.Module):
    """forward(input_ids, attention_mask, position_ids, past k/v per layer) -> logits, present k/v per layer: the
    inputs and outputs of optimum's text-generation-with-past exports (`past_key_values.N.key`, `present.N.key`)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        cache = transformers.DynamicCache(config=self.model.config)
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        presents = []
        for layer in out.past_key_values.layers:
            presents += [layer.keys, layer.values]
        return (out.logits, *presents)


def with_past_model():
    """A very small Llama (vocabulary 64, hidden 16, 2 layers, 2 q / 1 kv heads) for the with-past export: the
    fixtures' size budget has no room for another copy of make_fixtures' Llama."""
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=True,
        bos_token_id=62, eos_token_id=63, pad_token_id=63, attn_implementation="eager")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval().to(torch.float32)
    with torch.no_grad():
        # Weights at unit-variance-preserving scale (std 1/sqrt(fan-in), embeddings std 1) rather than
        # transformers' 0.02, so the next token depends on the context: at 0.02 so small a model repeats one
        # token whatever the prompt, and a wrong position or mask would go unseen.
        for _, parameter in sorted(model.named_parameters()):
            if parameter.dim() == 1:
                parameter.add_(torch.randn_like(parameter) * 0.1)
            else:
                parameter.normal_(0, 1 / parameter.shape[1] ** 0.5 if parameter.shape[0] != 64 else 1.0)
    return model


def export_with_past(model):
    """`model` exported with a KV cache (TorchScript, opset 17) into fixtures/generation/llama-with-past: the
    general-mask cache path (a padded prompt leaves holes in the mask; positions fed per row). Traced on a mask with
    a hole so no all-ones shortcut is baked in; checked against torch with a past and a hole."""
    import onnxruntime as ort

    folder = OUT / "llama-with-past"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    layers, kv_heads = model.config.num_hidden_layers, model.config.num_key_value_heads
    head = model.config.hidden_size // model.config.num_attention_heads
    names = ["input_ids", "attention_mask", "position_ids"] + [
        f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    outputs = ["logits"] + [f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"},
            "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    axes.update({name: {0: "batch", 2: "past"} for name in names[3:]})
    axes.update({name: {0: "batch", 2: "total"} for name in outputs[1:]})
    generator = torch.Generator().manual_seed(5)
    batch, past_length, new = 2, 3, 4
    ids = torch.randint(0, model.config.vocab_size, (batch, new), generator=generator)
    mask = torch.ones(batch, past_length + new, dtype=torch.long)
    mask[1, 1] = 0
    positions = torch.tensor([[3, 4, 5, 6], [2, 3, 4, 5]])
    past = [torch.randn(batch, kv_heads, past_length, head, generator=generator) for _ in range(2 * layers)]
    wrapper = WithPast(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (ids, mask, positions, *past), str(folder / "model.onnx"), dynamo=False,
                          input_names=names, output_names=outputs, dynamic_axes=axes, opset_version=17)
    shorten_names(folder / "model.onnx")
    with torch.no_grad():
        want = wrapper(ids, mask, positions, *past)[0].numpy()
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = dict(zip(names, [t.numpy() for t in (ids, mask, positions, *past)]))
    got = session.run(["logits"], feeds)[0]
    assert np.abs(got - want).max() < 1e-4, f"with-past export: max |ort - torch| {np.abs(got - want).max()}"
    model.config.to_json_file(str(folder / "config.json"))
    check_against_onnx(model, folder / "model.onnx")
    return str((folder / "model.onnx").relative_to(ROOT))


def shorten_names(path):
    """Node names dropped and intermediate values renamed t0, t1, ... (inputs, outputs and initializers keep
    theirs): TorchScript's long names are most of so small a file, and fixtures/ has a size budget."""
    proto = onnx.load(str(path))
    graph = proto.graph
    kept = {v.name for v in graph.input} | {v.name for v in graph.output} | {t.name for t in graph.initializer}
    renamed = {}
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        for index, name in enumerate(node.output):
            if name and name not in kept:
                renamed[name] = renamed.get(name, f"t{len(renamed)}")
                node.output[index] = renamed[name]
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
    del graph.value_info[:]
    onnx.save(proto, str(path))


def with_past_prompts(model):
    """Seeded random id prompts (lengths 6 and 3, below the EOS id) whose greedy steps all have margins > MARGIN."""
    rng = np.random.default_rng(2)
    chosen = []
    for attempt in range(40):
        length = 6 if not chosen else 3
        ids = [int(i) for i in rng.integers(0, 62, size=length)]
        new, margins = hf_greedy(model, ids)
        penalised, penalised_margins = hf_greedy(model, ids, REPETITION_PENALTY)
        if min(margins + penalised_margins) > MARGIN:
            chosen.append({"text": f"ids {ids}", "prompt_ids": ids, "transformers": new, "margins": margins,
                           "transformers_repetition_penalty": penalised,
                           "margins_repetition_penalty": penalised_margins})
        if len(chosen) == 2:
            return chosen
    raise AssertionError("no prompts without near-ties for the with-past model")


def pick_prompts(model, tok):
    chosen, rejected = [], []
    for text in CANDIDATES:
        ids = tok.encode(text).ids
        new, margins = hf_greedy(model, ids)
        penalised, penalised_margins = hf_greedy(model, ids, REPETITION_PENALTY)
        if min(margins + penalised_margins) > MARGIN:
            chosen.append({"text": text, "prompt_ids": ids, "transformers": new, "margins": margins,
                           "transformers_repetition_penalty": penalised,
                           "margins_repetition_penalty": penalised_margins})
        else:
            rejected.append((text, min(margins)))
        if len(chosen) == PROMPTS_PER_MODEL:
            break
    assert len(chosen) == PROMPTS_PER_MODEL, f"only {len(chosen)} prompts with margins > {MARGIN}: {rejected}"
    return chosen, rejected


def processors():
    from transformers.generation import logits_process as lp

    torch.manual_seed(3)
    scores = torch.randn(2, 24) * 2
    input_ids = torch.tensor([[3, 5, 5, 7, 0], [1, 2, 23, 9, 2]])
    steps = {
        "repetition_penalty": lp.RepetitionPenaltyLogitsProcessor(1.3),
        "temperature": lp.TemperatureLogitsWarper(0.7),
        "top_k": lp.TopKLogitsWarper(5),
        "top_p": lp.TopPLogitsWarper(0.8),
        "min_p": lp.MinPLogitsWarper(0.2),
    }
    settings = {"repetition_penalty": 1.3, "temperature": 0.7, "top_k": 5, "top_p": 0.8, "min_p": 0.2}

    def encode(tensor):
        return [[None if np.isneginf(v) else float(v) for v in row] for row in tensor.numpy().tolist()]

    result = {"scores": encode(scores), "input_ids": input_ids.tolist(), "settings": settings, "alone": {},
              "order": list(steps)}
    for name, processor in steps.items():
        result["alone"][name] = encode(processor(input_ids, scores.clone()))
    chained = scores.clone()
    for processor in steps.values():
        chained = processor(input_ids, chained)
    result["chained"] = encode(chained)
    return result


def main():
    torch.set_num_threads(1)
    tokenizers = {style: fx.train_tokenizer(style) for style in ("gpt2", "llama3")}
    entries = []
    exports = json.loads((fx.MODELS / "fixtures.json").read_text())
    exports.append({"name": "gemma3-torchscript", "architecture": "gemma3",
                    "path": "fixtures/models/gemma3-torchscript/model.onnx"})
    cache = {}
    for export in exports:
        arch = export["architecture"]
        style = "llama3" if arch == "gemma3" else fx.ARCHS[arch][0]
        tok, info = tokenizers[style]
        model = make_gemma3_fixture.build_model(info) if arch == "gemma3" else fx.build_model(arch, info)
        check_against_onnx(model, ROOT / export["path"], folded_norms=arch == "gemma3")
        if arch not in cache:
            cache[arch] = pick_prompts(model, tok)
        prompts, rejected = cache[arch]
        entries.append({"name": export["name"], "model": export["path"], "kv_cache": False, "prompts": prompts})
        print(f"{export['name']}: weights equal the ONNX initializers; prompts "
              + ", ".join(f"{p['text']!r} (min margin {min(p['margins']):.2e})" for p in prompts)
              + (f"; near-ties skipped: {rejected}" if rejected else ""))

    small = with_past_model()
    path = export_with_past(small)
    prompts = with_past_prompts(small)
    entries.append({"name": "llama-with-past", "model": path, "kv_cache": True, "prompts": prompts})
    print("llama-with-past: exported with KV-cache inputs; prompts "
          + ", ".join(f"{p['prompt_ids']} -> {p['transformers']} / {p['transformers_repetition_penalty']} "
                      f"(min margin {min(p['margins'] + p['margins_repetition_penalty']):.2e})" for p in prompts))

    builders = json.loads((ROOT / "fixtures" / "builder" / "fixtures.json").read_text())
    with tempfile.TemporaryDirectory() as temporary:
        for builder in builders:
            arch = builder["architecture"]
            folder = ROOT / pathlib.Path(builder["path"]).parent
            copy = accuracy_level_zero(folder, pathlib.Path(temporary) / builder["name"])
            prompts = []
            for prompt in cache[arch][0]:
                ids = prompt["prompt_ids"]
                genai = genai_greedy(copy, ids, len(ids) + MAX_NEW_TOKENS)
                genai_penalised = genai_greedy(copy, ids, len(ids) + MAX_NEW_TOKENS, REPETITION_PENALTY)
                prompts.append(dict(prompt, genai=genai, genai_repetition_penalty=genai_penalised))
                same = genai == prompt["transformers"]
                print(f"{builder['name']}: {prompt['text']!r} genai {genai} "
                      f"{'equals' if same else 'DIFFERS FROM'} transformers {prompt['transformers']}; with repetition "
                      f"penalty genai {genai_penalised} transformers {prompt['transformers_repetition_penalty']}")
            entries.append({"name": builder["name"], "model": builder["path"], "kv_cache": True, "prompts": prompts})

    OUT.mkdir(parents=True, exist_ok=True)
    document = {
        "max_new_tokens": MAX_NEW_TOKENS,
        "margin": MARGIN,
        "repetition_penalty": REPETITION_PENALTY,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "models": entries,
        "processors": processors(),
    }
    (OUT / "expected.json").write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {OUT / 'expected.json'}")


if __name__ == "__main__":
    main()
