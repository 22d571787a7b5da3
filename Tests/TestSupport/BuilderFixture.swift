import Foundation
import ONNXGraph

/// One onnxruntime-genai builder fixture of `fixtures/builder/fixtures.json` (`tools/make_builder_fixtures.py
/// models`): a tiny Llama or Qwen2 built with `-p fp32` or `-p int4`, the batch it was run on and onnxruntime's
/// logits for it (empty past, MatMulNBits at accuracy_level 0).
public struct BuilderFixture: Decodable, Sendable {
    public var name: String
    public var path: String
    public var architecture: String
    /// `fp32` or `int4`.
    public var precision: String

    /// Every committed builder fixture.
    public static func all() throws -> [BuilderFixture] {
        let data = try Data(contentsOf: URL(fileURLWithPath: repositoryPath("fixtures/builder/fixtures.json")))
        return try JSONDecoder().decode([BuilderFixture].self, from: data)
    }

    /// The folder holding the model, its tokenizer, genai_config.json and reference data.
    public var folder: String { (repositoryPath(path) as NSString).deletingLastPathComponent }
    public func model() throws -> Model { try Model.load(path: repositoryPath(path)) }
    /// `input_ids` and `attention_mask` of the reference batch (batch 2, right padding).
    public func inputs() throws -> [String: Tensor] { try NPZ.read(path: "\(folder)/inputs.npz") }

    /// onnxruntime's logits for `inputs()`.
    public func ortLogits() throws -> Tensor {
        guard let logits = try NPZ.read(path: "\(folder)/ort_logits.npz")["logits"] else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "\(folder)/ort_logits.npz has no logits"])
        }
        return logits
    }
}
