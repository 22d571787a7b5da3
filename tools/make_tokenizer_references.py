#!/usr/bin/env python3
"""Builds the tokenizer fixtures that the Swift tokenizer (Sources/Tokenizers/) must agree with exactly.

Nothing is downloaded: every tokenizer is BUILT here with the `tokenizers` library, trained on
tools/fixture_corpus.txt, in the style of a real model family:

  gpt2       ByteLevel pre-tokenizer (GPT-2 regex), ByteLevel post-processor and decoder, <|endoftext|>.
  llama3     Split(Llama-3 regex) + ByteLevel(use_regex=False), BPE ignore_merges=True (with a few whole
             words injected into the vocabulary without merges, so ignore_merges changes ids),
             Sequence[ByteLevel, TemplateProcessing("<|begin_of_text|> $A")], Llama-3 special tokens.
  qwen2      NFC normalizer, Split(Qwen2 regex) + ByteLevel(use_regex=False), <|im_start|>/<|im_end|>.
  llama2     SentencePiece-style legacy conversion: Prepend("▁") + Replace(" ", "▁") normalizers, no
             pre-tokenizer, BPE with byte_fallback, <unk> with fuse_unk, <0x00>..<0xFF> in the vocabulary,
             TemplateProcessing("<s> $A"), decoders Replace + ByteFallback + Fuse + Strip.
  mistral    The non-legacy conversion: Metaspace(prepend_scheme="first", split=False) pre-tokenizer,
             otherwise as llama2.
  metaspace  Metaspace(prepend_scheme="always", split=True) pre-tokenizer and Metaspace decoder.
  roberta    ByteLevel(add_prefix_space=True), RobertaProcessing, <mask> with lstrip.
  bertlike   Normalizers NFKD + StripAccents + Lowercase + Replace(regex) + Strip, pre-tokenizers
             WhitespaceSplit + Punctuation + Digits, BPE with "##" continuing-subword prefix, "</w>"
             end-of-word suffix and [UNK] (fuse_unk, no byte fallback), BertProcessing, a normalized added
             token ("new york"), a single_word one ("ok") and an rstrip one ([MASK]).
and two tokenizers already committed beside the model fixtures (fixtures/models/gpt2-dynamo, fixtures/models/llama-dynamo).

Outputs, under fixtures/tokenizers/:
  <style>/tokenizer.json, <style>/tokenizer_config.json   the built tokenizers
  expected.json    {"cases": [text, ...], "styles": {style: {"path", "vocab_size", "bos_token",
                   "bos_token_id", "eos_token", "eos_token_id", "results": [{"ids", "ids_no_special",
                   "decoded", "decoded_skip"} per case], "decode_cases": [{"ids", "decoded",
                   "decoded_skip"}]}}}
                   cases = every line of corpus.txt, the whole file as one text, windows of five lines,
                   and a few texts a text file cannot hold well (CR, CRLF, lone combining marks).
                   "decoded" decodes the ids encoded WITH special tokens. "decode_cases" are random id
                   lists (fixed seed), which also cut multi-byte characters in half.
  components.json  single components run on the same cases, so the less common options are proven one by
                   one: [{"kind": "normalizer"|"pre_tokenizer"|"decoder", "config": {...}, "outputs": [...]}], and
                   a few tiny hand-built tokenizers for edge cases ("kind": "tokenizer", the whole tokenizer.json as
                   "config", outputs are the ids with special tokens)
                   with "inputs" (texts, or token lists for decoders) and "outputs" (the pre-tokenizer's
                   piece strings, the normalized text, the decoded text; null where the library panics).

The expected values come from `tokenizers` (Rust); bos/eos ids come from transformers' AutoTokenizer reading
tokenizer_config.json, and the script checks that transformers' `tokenizer(text)` gives the same ids as
`tokenizers` for every style (it does for PreTrainedTokenizerFast).

Run from the repository root (measured with tokenizers 0.23.3, transformers 5.23.0):
    /root/venv-tools/bin/python tools/make_tokenizer_references.py [--retrain]
Built tokenizers that already exist are kept and only the expected outputs are recomputed: the BPE trainer is
not deterministic (with a continuing-subword prefix its tie-breaking follows Rust's randomly seeded HashMap), so
retraining changes the vocabularies. Pass --retrain to rebuild them anyway.
"""
import json
import os
import pathlib
import random
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                        processors, trainers)

ROOT = pathlib.Path(__file__).resolve().parent.parent
TRAIN = ROOT / "tools" / "fixture_corpus.txt"
OUT = ROOT / "fixtures" / "tokenizers"
CORPUS = OUT / "corpus.txt"

GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
               r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")


def train(tokenizer, vocab_size, special_tokens, **options):
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
                                  **options)
    tokenizer.train([str(TRAIN)], trainer)
    return tokenizer


def byte_level_trainer_options():
    return {"initial_alphabet": pre_tokenizers.ByteLevel.alphabet()}


def gpt2():
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    train(tokenizer, 700, ["<|endoftext|>"], **byte_level_trainer_options())
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = decoders.ByteLevel()
    config = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": None}
    return tokenizer, config


def inject_whole_words(tokenizer, words):
    """Adds whole pre-tokens to the vocabulary without merges (after the trained ids, before nothing else), so
    that `ignore_merges` visibly changes the ids: BPE with merges alone would split these words."""
    data = json.loads(tokenizer.to_str())
    vocab = data["model"]["vocab"]
    next_id = max(max(vocab.values()), max(t["id"] for t in data["added_tokens"])) + 1
    mapped = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    added = []
    for word in words:
        token = mapped.pre_tokenize_str(word)[0][0]
        if token in vocab:
            continue
        if len(tokenizer.encode(word, add_special_tokens=False).ids) < 2:
            continue
        vocab[token] = next_id
        added.append(token)
        next_id += 1
    assert added, "no word to inject"
    return Tokenizer.from_str(json.dumps(data, ensure_ascii=False))


def llama3():
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>", "<|reserved_special_token_0|>"]
    tokenizer = Tokenizer(models.BPE(ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    train(tokenizer, 700, specials, **byte_level_trainer_options())
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer = inject_whole_words(tokenizer, [" furiously", " woodchuck", " Universe", " guillemets",
                                               " example", "Whitespace", " Spain"])
    bos = tokenizer.token_to_id("<|begin_of_text|>")
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A:0 <|begin_of_text|>:1 $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": None}
    return tokenizer, config


def qwen2():
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    train(tokenizer, 700, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], **byte_level_trainer_options())
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.decoder = decoders.ByteLevel()
    config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    return tokenizer, config


def sentencepiece_style(pre_tokenizer_for_use, normalizer_for_use, decoder, vocab_size=600):
    """A SentencePiece-like BPE: <unk> <s> </s> at ids 0-2, the 256 byte tokens <0x00>..<0xFF> at 3-258 (in
    the vocabulary, not added tokens, as in Llama-2), then the trained pieces. Trained with a Metaspace
    pre-tokenizer (so pieces never span a "▁" except at their start) and a small alphabet so that rare
    characters fall back to bytes."""
    trainer_tokenizer = Tokenizer(models.BPE())
    trainer_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                               split=True)
    train(trainer_tokenizer, vocab_size, ["<unk>", "<s>", "</s>"])
    trained = json.loads(trainer_tokenizer.to_str())
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for token, _ in sorted(trained["model"]["vocab"].items(), key=lambda item: item[1]):
        if token not in vocab:
            vocab[token] = len(vocab)
    model = models.BPE(vocab=vocab, merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                                            for m in trained["model"]["merges"]],
                       unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    tokenizer = Tokenizer(model)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ["<unk>", "<s>", "</s>"]])
    if normalizer_for_use is not None:
        tokenizer.normalizer = normalizer_for_use
    if pre_tokenizer_for_use is not None:
        tokenizer.pre_tokenizer = pre_tokenizer_for_use
    tokenizer.decoder = decoder
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                             special_tokens=[("<s>", 1)])
    config = {"bos_token": {"content": "<s>", "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "__type": "AddedToken"},
              "eos_token": {"content": "</s>", "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "__type": "AddedToken"},
              "pad_token": None, "unk_token": "<unk>"}
    return tokenizer, config


def sentencepiece_decoder():
    return decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                              decoders.Strip(" ", 1, 0)])


def llama2():
    return sentencepiece_style(
        None, normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]),
        sentencepiece_decoder())


def mistral():
    return sentencepiece_style(
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False), None,
        sentencepiece_decoder())


def metaspace():
    return sentencepiece_style(
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True), None,
        decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True))


def roberta():
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    train(tokenizer, 700, ["<s>", "<pad>", "</s>", "<unk>"], **byte_level_trainer_options())
    tokenizer.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True, normalized=False)])
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", tokenizer.token_to_id("</s>")),
                                                            ("<s>", tokenizer.token_to_id("<s>")),
                                                            trim_offsets=True, add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    config = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "mask_token": "<mask>"}
    return tokenizer, config


def bertlike():
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]", fuse_unk=True, continuing_subword_prefix="##",
                                     end_of_word_suffix="</w>"))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase(),
        normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(), pre_tokenizers.Digits(individual_digits=True),
    ])
    train(tokenizer, 600, ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"], continuing_subword_prefix="##",
          end_of_word_suffix="</w>")
    tokenizer.add_special_tokens([AddedToken("[MASK]", rstrip=True, special=True, normalized=False)])
    tokenizer.add_tokens([AddedToken("new york", normalized=True), AddedToken("ok", single_word=True, normalized=False)])
    tokenizer.post_processor = processors.BertProcessing(("[SEP]", tokenizer.token_to_id("[SEP]")),
                                                         ("[CLS]", tokenizer.token_to_id("[CLS]")))
    tokenizer.decoder = decoders.Sequence([decoders.Replace("##", ""), decoders.BPEDecoder(suffix="</w>")])
    config = {"bos_token": None, "eos_token": None, "pad_token": "[PAD]", "cls_token": "[CLS]",
              "sep_token": "[SEP]", "mask_token": "[MASK]", "unk_token": "[UNK]"}
    return tokenizer, config


BUILT = {"gpt2": gpt2, "llama3": llama3, "qwen2": qwen2, "llama2": llama2, "mistral": mistral,
         "metaspace": metaspace, "roberta": roberta, "bertlike": bertlike}
COMMITTED = {"gpt2-dynamo": "fixtures/models/gpt2-dynamo", "llama-dynamo": "fixtures/models/llama-dynamo"}


def cases():
    text = CORPUS.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    windows = ["\n".join(lines[start:start + 5]) for start in range(0, len(lines), 5)]
    extra = [
        text,
        "Windows\r\nline endings\r\n\r\nand a lone\rcarriage return",
        "\u0301 a lone combining mark, and e\u0301\u0301 two",
        "ZWJ alone \u200d and variation selector \ufe0f alone",
        "<|endoftext|><|endoftext|><s></s><s>",
        "<<|endoftext|>> <s<s>> </s </s>",
        "word<mask> <mask>   spaced <mask>",
        "[MASK]   after, OK ok Ok ok",
        "Other white space: a \u000b\u000bb, x \u0085\u0085y, p \u000c\u000cq, l \u2028\u2028m, n \u00a0\u00a0o",
    ]
    return lines + windows + extra


def decode_cases(vocab_size, seed):
    rng = random.Random(seed)
    out = []
    for length in [1, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20]:
        out.append([rng.randrange(vocab_size) for _ in range(length)])
    return out


def special_ids(directory):
    """bos/eos as transformers reads them from tokenizer_config.json, and a check that transformers' ids equal
    the `tokenizers` ids (TRL tokenises through transformers)."""
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(str(directory))
    return hf


def run_style(name, directory, texts):
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    hf = special_ids(directory)
    results = []
    for text in texts:
        with_special = tokenizer.encode(text, add_special_tokens=True).ids
        without = tokenizer.encode(text, add_special_tokens=False).ids
        hf_ids = hf(text)["input_ids"]
        assert hf_ids == with_special, f"{name}: transformers differs from tokenizers on {text!r}"
        results.append({"ids": with_special, "ids_no_special": without,
                        "decoded": tokenizer.decode(with_special, skip_special_tokens=False),
                        "decoded_skip": tokenizer.decode(with_special, skip_special_tokens=True)})
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    decoded = []
    for ids in decode_cases(vocab_size, seed=len(name)):
        decoded.append({"ids": ids, "decoded": tokenizer.decode(ids, skip_special_tokens=False),
                        "decoded_skip": tokenizer.decode(ids, skip_special_tokens=True)})
    return {
        "path": str(directory.relative_to(ROOT) / "tokenizer.json"),
        "vocab_size": vocab_size,
        "bos_token": hf.bos_token, "bos_token_id": hf.bos_token_id,
        "eos_token": hf.eos_token, "eos_token_id": hf.eos_token_id,
        "results": results, "decode_cases": decoded,
    }


def decode_or_none(decoder, tokens):
    """The library panics on some degenerate inputs (Strip on an empty token): those are recorded as null and
    only required not to crash in Swift."""
    if "" in tokens and json.loads(decoder.__getstate__())["type"] in ("Strip", "Sequence"):
        return None  # Strip panics on an empty token; skipped so the run prints no Rust backtrace
    try:
        return decoder.decode(tokens)
    except BaseException:  # pyo3's PanicException derives from BaseException
        return None


def component_cases(texts):
    """Single components on the corpus: every Split behaviour (with and without invert), the pre-tokenizers,
    normalizers and decoders that no built tokenizer above uses."""
    lines = [text for text in texts if len(text) < 400]
    behaviors = ["removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"]
    pre = []
    for behavior in behaviors:
        for invert in [False, True]:
            pre.append(pre_tokenizers.Split(Regex(r"\s+|[,.]"), behavior=behavior, invert=invert))
            pre.append(pre_tokenizers.Split(" ", behavior=behavior, invert=invert))
    pre += [
        pre_tokenizers.Whitespace(), pre_tokenizers.WhitespaceSplit(), pre_tokenizers.BertPreTokenizer(),
        pre_tokenizers.Digits(individual_digits=False), pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Punctuation(behavior="contiguous"), pre_tokenizers.Punctuation(behavior="merged_with_next"),
        pre_tokenizers.CharDelimiterSplit("a"),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        pre_tokenizers.Metaspace(replacement="_", prepend_scheme="never", split=True),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False),
        pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
                                 pre_tokenizers.Digits(individual_digits=True)]),
    ]
    norms = [
        normalizers.NFC(), normalizers.NFD(), normalizers.NFKC(), normalizers.NFKD(), normalizers.Lowercase(),
        normalizers.Prepend("▁"), normalizers.Replace(" ", "▁"), normalizers.Replace(Regex(r"[0-9]+"), "<n>"),
        normalizers.Strip(left=True, right=False), normalizers.Strip(left=False, right=True), normalizers.Strip(),
        normalizers.StripAccents(),
        normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()]),
    ]
    out = []
    for component in pre:
        config = json.loads(component.__getstate__())
        outputs = [[piece for piece, _ in component.pre_tokenize_str(text)] for text in lines]
        out.append({"kind": "pre_tokenizer", "config": config, "inputs": lines, "outputs": outputs})
    for component in norms:
        config = json.loads(component.__getstate__())
        out.append({"kind": "normalizer", "config": config, "inputs": lines,
                    "outputs": [component.normalize_str(text) for text in lines]})
    token_lists = [
        ["▁Hello", "▁world", "!"], ["Hello", "▁", "▁", "world▁"], ["▁", "▁a"], ["<0xE2>", "<0x96>", "<0x81>", "x"],
        ["<0xE2>", "<0x96>", "y", "<0x41>"], ["<0xFF>"], ["<0x4>", "<0x41>", "<0x4G>"], ["##ing", "go", "##ing"],
        ["hel", "lo</w>", "wor", "ld</w>"], ["  a  ", " b ", "c  "], ["ĠHello", "Ġworld", "č", "Ċ"], ["Ã", "©", "x"],
        ["Ã", "x", "ÂŃ", "▁"], [], [""], ["▁"],
    ]
    decs = [
        decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        decoders.Metaspace(replacement="▁", prepend_scheme="never", split=True),
        decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False),
        decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 1), decoders.Strip(" ", 2, 0),
        decoders.Replace("▁", " "), decoders.Replace(Regex(r"\s+"), "_"), decoders.ByteLevel(),
        decoders.BPEDecoder(suffix="</w>"), decoders.WordPiece(prefix="##", cleanup=True),
        decoders.WordPiece(prefix="##", cleanup=False),
        decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                           decoders.Strip(" ", 1, 0)]),
    ]
    for component in decs:
        config = json.loads(component.__getstate__())
        out.append({"kind": "decoder", "config": config, "inputs": token_lists,
                    "outputs": [decode_or_none(component, tokens) for tokens in token_lists]})
    return out


def edge_tokenizers():
    """Small hand-built tokenizers for behaviour the trained styles do not reach: Metaspace "first" after a normalizer
    that deletes the start of the text, overlapping added tokens (leftmost-longest), single_word, an unknown token
    without fusing next to byte fallback (tokenizers appends the pending <unk> after the byte tokens)."""
    out = []

    def add(tokenizer, texts):
        out.append({"kind": "tokenizer", "config": json.loads(tokenizer.to_str()), "inputs": texts,
                    "outputs": [tokenizer.encode(text).ids for text in texts]})

    sentencepiece_vocab = {"▁": 0, "h": 1, "i": 2, "x": 3}
    for normalizer in [normalizers.Strip(), normalizers.Replace("h", ""),
                       normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents()])]:
        tokenizer = Tokenizer(models.BPE(vocab=sentencepiece_vocab, merges=[]))
        tokenizer.normalizer = normalizer
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=True)
        add(tokenizer, ["  hi", "hi", " hi x", "i x", "hi  x ", "\u0301hi", "\u0301 hi"])
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate("abcdx ")}, merges=[]))
    tokenizer.add_tokens([AddedToken("ab"), AddedToken("abc"), AddedToken("bcd"),
                          AddedToken("cd", single_word=True), AddedToken("x ", rstrip=True, lstrip=True)])
    add(tokenizer, ["abcd", "xbcd", "abcdab", "cd x cd", "xcd", "a  x   b", "dx x x"])
    tokenizer = Tokenizer(models.BPE(vocab={"<unk>": 0, "a": 1, "<0xC3>": 2, "<0xA9>": 3, "<0x41>": 4}, merges=[],
                                     unk_token="<unk>", fuse_unk=False, byte_fallback=True))
    add(tokenizer, ["aéaAAzzé", "zz", "", "Zé"])
    return out


def main():
    retrain = "--retrain" in sys.argv[1:]
    texts = cases()
    styles = {}
    for name, build in BUILT.items():
        directory = OUT / name
        if retrain or not (directory / "tokenizer.json").exists():
            tokenizer, config = build()
            directory.mkdir(parents=True, exist_ok=True)
            tokenizer.save(str(directory / "tokenizer.json"))
            full_config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                           "model_max_length": 1000000, **config}
            (directory / "tokenizer_config.json").write_text(
                json.dumps(full_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        styles[name] = run_style(name, directory, texts)
    for name, relative in COMMITTED.items():
        styles[name] = run_style(name, ROOT / relative, texts)
    expected = {"cases": texts, "styles": styles}
    (OUT / "expected.json").write_text(json.dumps(expected, ensure_ascii=False) + "\n", encoding="utf-8")
    components = component_cases(texts) + edge_tokenizers()
    (OUT / "components.json").write_text(json.dumps(components, ensure_ascii=False) + "\n", encoding="utf-8")
    total = sum(path.stat().st_size for path in OUT.rglob("*") if path.is_file())
    print(f"{len(texts)} cases, {len(styles)} styles, {len(components)} components; fixtures {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
