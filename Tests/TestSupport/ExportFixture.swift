import Foundation
import ONNXGraph

/// One exported model of `fixtures/models/fixtures.json` (made by `tools/make_fixtures.py`), with the batch it was run on.
public struct ExportFixture: Decodable, Sendable {
    public var name: String
    public var path: String
    public var architecture: String
    public var exporter: String
    public var opset: Int
    public var external_data: Bool

    /// How many float32 roundings an export's logits carry, for `gradientCheck`'s tolerance
    /// (`LossValue.weightedSum(_:_:depth:)`): two blocks of attention and MLP (GEMMs, normalisations, softmaxes)
    /// between a weight and the logits. Measured: |rule − finite differences| on the fixtures is at most about 4.6
    /// times the one-rounding estimate; 16 leaves a margin of three.
    public static let roundingDepth = 16.0

    /// Every committed export.
    public static func all() throws -> [ExportFixture] {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath("models/fixtures.json")))
        return try JSONDecoder().decode([ExportFixture].self, from: data)
    }

    /// The export called `name`.
    public static func named(_ name: String) throws -> ExportFixture {
        guard let fixture = try all().first(where: { $0.name == name }) else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "no fixture named \(name)"])
        }
        return fixture
    }

    /// The folder holding the model and its reference data.
    public var folder: String { (repositoryPath(path) as NSString).deletingLastPathComponent }

    public func model() throws -> Model { try Model.load(path: repositoryPath(path)) }

    /// `input_ids` and `attention_mask` of the reference batch (batch 2, right padding).
    public func inputs() throws -> [String: Tensor] { try NPZ.read(path: "\(folder)/inputs.npz") }

    /// torch's logits for `inputs()`.
    public func torchLogits() throws -> Tensor {
        guard let logits = try NPZ.read(path: "\(folder)/torch_logits.npz")["logits"] else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "\(folder)/torch_logits.npz has no logits"])
        }
        return logits
    }
}
