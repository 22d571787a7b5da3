import Foundation
import ONNXGraph

/// The files beside an onnxruntime-genai model that the runtime reads (`genai_config.json`, the tokenizer files),
/// carried by `ONNXExport` from the input model's folder into the output's, so that the output folder runs in
/// onnxruntime-genai as it is (`og.Model(folder)`), whichever export form was written.
enum RuntimeFolder {
    /// The configuration that marks a folder as onnxruntime-genai's.
    static let configuration = "genai_config.json"
    /// What the runtime and its tokenizer read besides the model (onnxruntime-genai's `Config`, its tokenizer's
    /// Hugging Face files, and the chat template).
    static let carried = [
        configuration, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
        "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
        "generation_config.json", "config.json", "preprocessor_config.json", "processor_config.json",
    ]

    /// The files to write beside `output` (name and contents), read from the folder of `model` now, so that a file
    /// that cannot be read refuses the export before anything is written. Empty when that folder holds no
    /// `genai_config.json`, or is the output's own folder. `genai_config.json`'s `model.decoder.filename` is set to
    /// the output's file name when it differs.
    static func files(model: String, output: String) throws -> [(name: String, data: Data)] {
        let source = URL(fileURLWithPath: model).deletingLastPathComponent().standardizedFileURL
        let destination = URL(fileURLWithPath: output).deletingLastPathComponent().standardizedFileURL
        let manager = FileManager.default
        guard manager.fileExists(atPath: source.appendingPathComponent(configuration).path),
              source.resolvingSymlinksInPath().path != destination.resolvingSymlinksInPath().path else { return [] }
        var files: [(name: String, data: Data)] = []
        for name in carried {
            let path = source.appendingPathComponent(name).path
            guard manager.fileExists(atPath: path) else { continue }
            guard var data = manager.contents(atPath: path) else {
                throw AdapterError.cannotWrite(path: output, reason: "cannot read '\(path)', which the runtime needs beside the model")
            }
            if name == configuration { data = try renamingDecoder(in: data, to: URL(fileURLWithPath: output).lastPathComponent, path: path) }
            files.append((name, data))
        }
        return files
    }

    /// `genai_config.json` with `model.decoder.filename` set to `fileName` (unchanged bytes when it already is).
    static func renamingDecoder(in data: Data, to fileName: String, path: String) throws -> Data {
        guard var root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              var model = root["model"] as? [String: Any], var decoder = model["decoder"] as? [String: Any] else {
            throw AdapterError.cannotWrite(path: path, reason: "not an onnxruntime-genai configuration: no model.decoder object")
        }
        guard decoder["filename"] as? String != fileName else { return data }
        decoder["filename"] = fileName
        model["decoder"] = decoder
        root["model"] = model
        return try JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
    }
}
