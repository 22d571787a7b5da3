// The libFuzzer entry points: one binary, one target per file format a user hands onnx-dpo, chosen with the
// environment variable `ONNX_DPO_FUZZ_TARGET` (`scripts/fuzz` sets it). Each target feeds the input to the
// library's public reader exactly as a user's file would reach it (written to a file in a scratch folder, since
// every reader takes a path), and then uses what was read the way the trainer does. A thrown error is the correct
// answer to bad input; a trap, a sanitizer report, a leak or a timeout is a bug.
import Adapters
import Foundation
import ONNXGraph
import Tokenizers
import Training

/// A parser under fuzzing: takes the fuzzer's bytes, returns normally or throws.
struct FuzzTarget: Sendable {
    /// The name `scripts/fuzz` and `ONNX_DPO_FUZZ_TARGET` use; also the corpus folder `Fuzzing/Corpus/<name>`.
    let name: String
    let run: @Sendable (ScratchFolder, [UInt8]) throws -> Void
}

/// Every target, in the order `scripts/fuzz` runs them.
let fuzzTargets: [FuzzTarget] = [
    FuzzTarget(name: "onnx", run: fuzzONNXModel),
    FuzzTarget(name: "npz", run: fuzzNPZ),
    FuzzTarget(name: "safetensors", run: fuzzSafeTensors),
    FuzzTarget(name: "adapter_config", run: fuzzAdapterConfiguration),
    FuzzTarget(name: "onnx_adapter", run: fuzzONNXAdapter),
    FuzzTarget(name: "tokenizer", run: fuzzTokenizer),
    FuzzTarget(name: "jsonl", run: fuzzPreferenceData),
    FuzzTarget(name: "chat_template", run: fuzzChatTemplate),
]

/// An ONNX model file (through the C++ bridge over libonnx/libprotobuf), every initializer then decoded, inline or
/// from external data. The scratch folder holds data files for `external_data` to point at (with any location,
/// offset and length the fuzzer makes up), one in a subfolder, and a symlink that leaves the folder, which must be
/// refused.
func fuzzONNXModel(_ scratch: ScratchFolder, _ bytes: [UInt8]) throws {
    let path = try scratch.write(bytes, to: "model.onnx")
    let model = try Model.load(path: path)
    for initializer in model.graph.initializers {
        _ = try? model.loadTensor(initializer)
    }
}

/// A NumPy `.npz` archive (zip, stored or deflated, of `.npy` arrays).
func fuzzNPZ(_ scratch: ScratchFolder, _ bytes: [UInt8]) throws {
    _ = try NPZ.read(path: try scratch.write(bytes, to: "arrays.npz"))
}

/// A safetensors file, its float tensors' values then read (as an adapter's are).
func fuzzSafeTensors(_ scratch: ScratchFolder, _ bytes: [UInt8]) throws {
    let file = try SafeTensors.read(path: try scratch.write(bytes, to: "weights.safetensors"))
    for (_, tensor) in file.tensors where tensor.storage.kind == .float { _ = tensor.floats.reduce(0, +) }
}

/// `adapter_config.json`, read as PEFT's and as mlx-lm's: decoded, turned into a LoRA configuration and checked,
/// beside an empty weights file so that the configuration is all that can fail.
func fuzzAdapterConfiguration(_ scratch: ScratchFolder, _ bytes: [UInt8]) throws {
    var firstError: (any Error)?
    for folder in ["peft", "mlx"] {
        _ = try scratch.write(bytes, to: "\(folder)/adapter_config.json")
        do {
            _ = try AdapterFolder.read(scratch.path(folder), modules: [])
        } catch {
            firstError = firstError ?? error
        }
    }
    if let firstError { throw firstError }
}

/// An `.onnx_adapter` file (onnxruntime's FlatBuffer adapter format).
func fuzzONNXAdapter(_ scratch: ScratchFolder, _ bytes: [UInt8]) throws {
    let contents = try ONNXAdapterFile.read(path: try scratch.write(bytes, to: "adapter.onnx_adapter"))
    for (_, tensor) in contents.parameters where tensor.storage.kind == .float { _ = tensor.floats.reduce(0, +) }
}

/// Text the tokenizer target encodes and decodes with each tokenizer it reads: ASCII, accents, CJK, an emoji,
/// digits, whitespace runs and special-token spellings, so that normalizers, pre-tokenizers, BPE merges, byte
/// fallback, added tokens and decoders all run.
let tokenizerProbe = "Hello world!  It's 2024: naïve café, 日本語, 🤗\n\t<|endoftext|><s></s>[CLS] ▁x  "

/// A `tokenizer.json`: parsed (the JSON parser of `Tokenizers`), built into a tokenizer, then used to encode and
/// decode a probe text, as `train` does with a dataset.
func fuzzTokenizer(_ scratch: ScratchFolder, _ bytes: [UInt8]) throws {
    let tokenizer = try Tokenizer(path: try scratch.write(bytes, to: "tokenizer/tokenizer.json"))
    let ids = tokenizer.encode(tokenizerProbe)
    _ = tokenizer.decode(ids)
    _ = tokenizer.decode(ids, skipSpecialTokens: true)
}

/// A preference-data JSONL file (explicit, implicit or pre-tokenised rows, told from the keys), also read as
/// unpaired KTO rows (prompt, completion, label).
func fuzzPreferenceData(_ scratch: ScratchFolder, _ bytes: [UInt8]) throws {
    let path = try scratch.write(bytes, to: "preferences.jsonl")
    _ = try? UnpairedDataset.load(path: path)
    _ = try PreferenceDataset.load(path: path)
}

/// The conversations a fuzzed chat template renders: a system prompt, a multi-turn exchange with an assistant
/// tool call, and a message whose content is a list of parts, as real chat data has them.
let chatProbes: [[JSONValue]] = {
    let text = """
        [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <|im_end|> {{ x }}"},
          {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "naïve 日本語 🤗\\n"}],
         [{"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
          {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}]},
          {"role": "tool", "content": "4"}]]
        """
    guard case .array(let conversations) = try! parseJSON(Array(text.utf8)) else { fatalError("chat probes") }
    return conversations.map { if case .array(let messages) = $0 { messages } else { [] } }
}()

/// A chat template (the Jinja source of a tokenizer_config.json's `chat_template`): parsed, then rendered over each
/// probe conversation with and without the generation prompt, with special tokens and a tool list. Template errors
/// (unsupported constructs, `raise_exception`, a failing filter) are thrown; the engine's limits on recursion,
/// nesting and repetition keep a hostile template from hanging or overflowing the stack.
func fuzzChatTemplate(_ scratch: ScratchFolder, _ bytes: [UInt8]) throws {
    let template = try ChatTemplate(source: String(decoding: bytes, as: UTF8.self))
    let tools: JSONValue = .array([.object([("type", .string("function")), ("function", .object([("name", .string("add"))]))])])
    for messages in chatProbes {
        for generationPrompt in [false, true] {
            _ = try? template.render(messages: messages, addGenerationPrompt: generationPrompt, tools: tools,
                                     context: ["bos_token": .string("<s>"), "eos_token": .string("</s>")])
        }
    }
}
