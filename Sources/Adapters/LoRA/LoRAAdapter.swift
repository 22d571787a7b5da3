import Foundation
import ONNXGraph

/// LoRA hyper-parameters, with PEFT's meaning (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models",
/// 2021; rsLoRA: Kalajdzievski, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA", 2023).
public struct LoRAConfiguration: Sendable, Equatable, Codable {
    /// How A and B start.
    public enum Initialization: String, Sendable, Equatable, Codable, CaseIterable {
        /// PEFT's default: A Kaiming-uniform (`a = √5`, so `U(−1/√in, 1/√in)`), B = 0.
        case kaiming
        /// PEFT's `"gaussian"`: A ~ N(0, 1/r), B = 0.
        case gaussian
    }

    public var rank: Int
    public var alpha: Double
    /// Dropout on the adapter's input during training.
    public var dropout: Double
    public var useRSLoRA: Bool
    public var initialization: Initialization

    public init(rank: Int = 8, alpha: Double = 16, dropout: Double = 0, useRSLoRA: Bool = false,
                initialization: Initialization = .kaiming) {
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.useRSLoRA = useRSLoRA
        self.initialization = initialization
    }

    /// `alpha / r`, or `alpha / √r` with rsLoRA.
    public var scale: Double { useRSLoRA ? alpha / Double(rank).squareRoot() : alpha / Double(rank) }
}

/// One adapted weight: the projection node, its weight, and which of its output features may change (all of
/// them, or for a fused q/k/v projection only the targeted q and v features).
public struct LoRAModule: Sendable, Equatable {
    /// The Hugging Face module path, PEFT's key (`model.layers.0.self_attn.q_proj`, `transformer.h.0.attn.c_attn`).
    public var modulePath: String
    public var node: String
    public var weight: String
    public var inFeatures: Int
    /// Output features of the whole stored weight (B has this many rows).
    public var outFeatures: Int
    /// The output features the adapter may change, ascending; every one unless the projection is fused.
    public var trainableOutputs: [Int]
    /// The targets this module adapts (q and v share one module on a fused projection).
    public var targets: [LoRATarget]

    /// Groups targets by the node they adapt: one module per weight, as PEFT has one adapter per module.
    public static func modules(for targets: [LoRATarget], model: Model) throws -> [LoRAModule] {
        let shapes = Dictionary(model.graph.initializers.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
        var modules: [LoRAModule] = []
        for target in targets {
            if let index = modules.firstIndex(where: { $0.node == target.node }) {
                modules[index].targets.append(target)
                let columns = target.layout.columns(outOf: modules[index].outFeatures)
                modules[index].trainableOutputs = Array(Set(modules[index].trainableOutputs + columns)).sorted()
                continue
            }
            guard let shape = shapes[target.weight], let outputs = target.storedOutFeatures(shape: shape) else {
                throw AdapterError.loraTargetsNotFound(model: model.path,
                    reason: "the weight '\(target.weight)' of \(target.modulePath) does not have the shape its node implies")
            }
            modules.append(LoRAModule(modulePath: target.modulePath, node: target.node, weight: target.weight,
                                      inFeatures: target.inFeatures, outFeatures: outputs,
                                      trainableOutputs: target.layout.columns(outOf: outputs), targets: [target]))
        }
        return modules
    }
}

/// A LoRA adapter's weights in PEFT's orientation: `A: [r, in]`, `B: [out, r]`, keyed by module path. The
/// adapted weight is `W + scale · (B·A)` in `[out, in]` terms, `W + scale · (B·A)ᵀ` for an ONNX MatMul weight.
public struct LoRAAdapter: Sendable {
    public var configuration: LoRAConfiguration
    public var modules: [LoRAModule]
    /// `[r, in]` per module path.
    public var a: [String: Tensor]
    /// `[out, r]` per module path; rows of frozen output features stay zero.
    public var b: [String: Tensor]

    public init(configuration: LoRAConfiguration, modules: [LoRAModule], a: [String: Tensor], b: [String: Tensor]) {
        self.configuration = configuration
        self.modules = modules
        self.a = a
        self.b = b
    }

    /// A fresh adapter: A drawn as `configuration.initialization` says (seeded), B zero, as PEFT starts.
    public static func initialized(modules: [LoRAModule], configuration: LoRAConfiguration, seed: UInt64) -> LoRAAdapter {
        var generator = SeededGenerator(seed: seed)
        var a: [String: Tensor] = [:]
        var b: [String: Tensor] = [:]
        let rank = configuration.rank
        for module in modules {
            let values: [Float]
            switch configuration.initialization {
            case .kaiming:
                let bound = 1 / Double(module.inFeatures).squareRoot()
                values = (0..<(rank * module.inFeatures)).map { _ in Float(Double.random(in: -bound..<bound, using: &generator)) }
            case .gaussian:
                let deviation = 1 / Double(rank).squareRoot()
                values = (0..<(rank * module.inFeatures)).map { _ in Float(generator.nextGaussian() * deviation) }
            }
            a[module.modulePath] = Tensor(shape: [rank, module.inFeatures], floats: values)
            b[module.modulePath] = Tensor(shape: [module.outFeatures, rank], floats: [Float](repeating: 0, count: module.outFeatures * rank))
        }
        return LoRAAdapter(configuration: configuration, modules: modules, a: a, b: b)
    }
}

extension LoRAAdapter {
    /// `weight` (module `module`'s stored weight) with this adapter merged in, in the weight's own orientation:
    /// `W + scale·(B·A)ᵀ` for `[in, out]`, `W + scale·B·A` for `[out, in]` (Gemm with `transB = 1`). Only the
    /// module's trainable output features can change, and of those only the ones whose row of B is not all zero,
    /// so a fused projection's k features (zero rows when only q and v were trained) keep their exact bits.
    /// Merged in Float.
    public func merged(_ weight: Tensor, module: LoRAModule, scale: Float? = nil) throws -> Tensor {
        guard let a = a[module.modulePath]?.floats, let b = b[module.modulePath]?.floats, weight.rank == 2,
              case .float(var values) = weight.storage else {
            throw AdapterError.inconsistentAdapter(reason: "cannot merge the adapter of \(module.modulePath) into \(weight)")
        }
        let scale = scale ?? Float(configuration.scale)
        let rank = configuration.rank, inputs = module.inFeatures, outputs = module.outFeatures
        let outByIn = module.targets.first?.layout.isWeightOutByIn ?? false
        for output in module.trainableOutputs where b[(output * rank)..<((output + 1) * rank)].contains(where: { $0 != 0 }) {
            for input in 0..<inputs {
                var delta: Float = 0
                for r in 0..<rank { delta += b[output * rank + r] * a[r * inputs + input] }
                values[outByIn ? output * inputs + input : input * outputs + output] += scale * delta
            }
        }
        return Tensor(shape: weight.shape, floats: values, dataType: weight.dataType)
    }
}
