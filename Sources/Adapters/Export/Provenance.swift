import Crypto
import Foundation
import ONNXGraph

/// The provenance an export records in the model's `metadata_props` (`ONNXExport.provenanceKey`), as JSON:
///
///     {"tool": "onnx-dpo", "form": "merged",
///      "base_model": {"file": "model.onnx", "sha256": "…", "external_data": {"model.onnx.data": "…"}},
///      "adapter": {"source": "…", "sha256": "…", "peft_type": "LORA", "r": 8, "lora_alpha": 16, "use_rslora": false,
///                  "scale": 2, "modules": ["model.layers.0.self_attn.q_proj", …], "format": "peft"}}
///
/// Hashes are SHA-256 of the files as they are on disk, so `sha256sum model.onnx` checks them.
enum Provenance {
    struct Record: Encodable {
        struct BaseModel: Encodable {
            var file: String
            var sha256: String
            var externalData: [String: String]?
            enum CodingKeys: String, CodingKey { case file, sha256, externalData = "external_data" }
        }
        struct Adapter: Encodable {
            var peftType = "LORA"
            var r: Int
            var loraAlpha: Double
            var useRSLoRA: Bool
            var scale: Double
            var modules: [String]
            var source: String?
            var format: AdapterFormat?
            var sha256: String?
            enum CodingKeys: String, CodingKey {
                case peftType = "peft_type", r, loraAlpha = "lora_alpha", useRSLoRA = "use_rslora", scale, modules, source, format, sha256
            }
        }
        var tool = "onnx-dpo"
        var form: ONNXExportForm
        var baseModel: BaseModel
        var adapter: Adapter?
        enum CodingKeys: String, CodingKey { case tool, form, baseModel = "base_model", adapter }
    }

    static func json(model: Model, adapter: LoRAAdapter?, adapterSource: String?, form: ONNXExportForm) throws -> String {
        var externalHashes: [String: String] = [:]
        for location in Set(model.graph.initializers.compactMap(\.externalReference?.location)) {
            let path = try model.externalData.resolve(location, tensor: location)
            externalHashes[location] = try sha256(ofFile: path)
        }
        var record = Record(form: form, baseModel: .init(file: (model.path as NSString).lastPathComponent,
                                                         sha256: try sha256(ofFile: model.path),
                                                         externalData: externalHashes.isEmpty ? nil : externalHashes))
        if let adapter {
            let configuration = adapter.configuration
            var entry = Record.Adapter(r: configuration.rank, loraAlpha: configuration.alpha, useRSLoRA: configuration.useRSLoRA,
                                       scale: configuration.scale, modules: adapter.modules.map(\.modulePath))
            if let adapterSource {
                entry.source = adapterSource
                if let format = try? AdapterFormat.detect(adapterSource) {
                    entry.format = format
                    entry.sha256 = try sha256(ofFile: "\(adapterSource)/\(format.fileFormat.weightsFileName)")
                }
            }
            record.adapter = entry
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(record), as: UTF8.self)
    }

    /// SHA-256 of a file, hex, read in 16 MiB pieces with `read(2)` (so a model's weights never become resident
    /// memory of this process, as a memory map's pages would).
    static func sha256(ofFile path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw GraphError.unreadableFile(path: path, reason: "cannot be opened to hash it")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        while true {
            let piece: Data?
            do {
                piece = try handle.read(upToCount: 16 << 20)
            } catch {
                throw GraphError.unreadableFile(path: path, reason: "reading it to hash it failed: \(error.localizedDescription)")
            }
            guard let piece, !piece.isEmpty else { break }
            hasher.update(data: piece)
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}
