import Adapters
import Interpreter
import ONNXGraph

/// `onnx-dpo inspect`: the model report plus the projections LoRA would adapt in each attention block.
public struct ModelInspection: Encodable, Sendable {
    /// One found projection, as `inspect --json` lists it under `lora_targets`.
    public struct Target: Encodable, Sendable {
        public var modulePath: String
        public var kind: String
        public var node: String
        public var weight: String
        public var layer: Int
        public var inFeatures: Int
        public var outFeatures: Int
    }

    public var report: ModelReport
    /// The kind of file: producer, quantisation, KV-cache inputs, attention op per layer.
    public var format: ModelFormat
    public var loraTargets: [Target]
    /// Why no target was found, when none was (a model without attention, or an unfamiliar structure).
    public var loraError: String?
    /// How `generate` decodes it: `kv_cache` or `recompute`, and why.
    public var generation: GenerationPlan

    /// `Generator`'s decode strategy for the model, as `inspect` reports it.
    public struct GenerationPlan: Encodable, Sendable {
        public var strategy: DecodeStrategy
        public var reason: String
    }

    public init(model: Model) {
        report = ModelReport(model: model)
        format = ModelFormat(model: model)
        do {
            let plan = Generator.plan(model: model, cache: try KVCacheInputs(model: model))
            generation = GenerationPlan(strategy: plan.strategy, reason: plan.reason)
        } catch {
            generation = GenerationPlan(strategy: .recompute, reason: "\(error): the whole prefix is recomputed each step")
        }
        do {
            loraTargets = try LoRATargets.find(in: model).map {
                Target(modulePath: $0.modulePath, kind: $0.kind.rawValue, node: $0.node, weight: $0.weight,
                       layer: $0.layer, inFeatures: $0.inFeatures, outFeatures: $0.outFeatures)
            }
            loraError = nil
        } catch {
            loraTargets = []
            loraError = "\(error)"
        }
    }

    private enum CodingKeys: String, CodingKey { case format, loraTargets, loraError, generation }

    /// The report's keys and `lora_targets` (and `lora_error`) side by side in one object.
    public func encode(to encoder: any Encoder) throws {
        try report.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(format, forKey: .format)
        try container.encode(loraTargets, forKey: .loraTargets)
        try container.encodeIfPresent(loraError, forKey: .loraError)
        try container.encode(generation, forKey: .generation)
    }

    /// The report's text followed by the LoRA targets, one line each.
    public var text: String {
        var lines = [report.text, format.text, "Generation: \(generation.strategy.rawValue) (\(generation.reason))"]
        if let loraError {
            lines.append("LoRA targets: none (\(loraError))")
        } else {
            lines.append("LoRA targets (q and v, found by structure):")
            lines += loraTargets.map { "  layer \($0.layer) \($0.kind) \($0.modulePath): node \($0.node), weight \($0.weight) [\($0.inFeatures) -> \($0.outFeatures)]" }
        }
        return lines.joined(separator: "\n")
    }
}
