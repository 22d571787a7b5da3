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
///
/// One module per module path, as PEFT has one adapter per module. Targets on one node that share a module path
/// share one module (GPT-2's `c_attn`, Phi-3's `qkv_proj`: one Hugging Face module, one A for q and v, B over every
/// fused output with the k rows zero). Targets on one node with different module paths are separate modules, each
/// with its own A `[r, in]` and a B `[part, r]` over its own output features only (`placement`): the packed qkv
/// projection that an attention op (onnxruntime-genai's GroupQueryAttention) reads, which a builder made from the
/// separate `q_proj`, `k_proj` and `v_proj` of the Hugging Face model (see `Discovery`).
public struct LoRAModule: Sendable, Equatable {
    /// The Hugging Face module path, PEFT's key (`model.layers.0.self_attn.q_proj`, `transformer.h.0.attn.c_attn`).
    public var modulePath: String
    public var node: String
    public var weight: String
    public var inFeatures: Int
    /// Rows of B: the output features of the whole stored weight, or of the part when `placement` is set.
    public var outFeatures: Int
    /// Rows of B the adapter may change, ascending; every one unless the module is a shared fused projection.
    public var trainableOutputs: [Int]
    /// The targets this module adapts (q and v share one module on a fused projection of one module path).
    public var targets: [LoRATarget]
    /// For a part of a packed projection: the stored weight's output feature of each row of B, ascending; nil when
    /// row i of B is output feature i of the weight.
    public var placement: [Int]?
    /// Output features of the whole stored weight.
    public var storedOutFeatures: Int

    public init(modulePath: String, node: String, weight: String, inFeatures: Int, outFeatures: Int,
                trainableOutputs: [Int], targets: [LoRATarget], placement: [Int]? = nil, storedOutFeatures: Int? = nil) {
        self.modulePath = modulePath
        self.node = node
        self.weight = weight
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.trainableOutputs = trainableOutputs
        self.targets = targets
        self.placement = placement
        self.storedOutFeatures = storedOutFeatures ?? outFeatures
    }

    /// The stored weight's output feature that row `row` of B adapts.
    public func storedOutput(ofRow row: Int) -> Int { placement?[row] ?? row }

    /// Groups targets by module path: one module per weight and path, as PEFT has one adapter per module (see the
    /// type's comment for fused projections).
    public static func modules(for targets: [LoRATarget], model: Model) throws -> [LoRAModule] {
        let shapes = Dictionary(model.graph.initializers.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
        var modules: [LoRAModule] = []
        for target in targets {
            if let index = modules.firstIndex(where: { $0.node == target.node && $0.modulePath == target.modulePath }) {
                modules[index].targets.append(target)
                let columns = target.layout.columns(outOf: modules[index].outFeatures)
                modules[index].trainableOutputs = Array(Set(modules[index].trainableOutputs + columns)).sorted()
                continue
            }
            guard let shape = shapes[target.weight], let outputs = target.storedOutFeatures(shape: shape) else {
                throw AdapterError.loraTargetsNotFound(model: model.path,
                    reason: "the weight '\(target.weight)' of \(target.modulePath) does not have the shape its node implies")
            }
            if modules.contains(where: { $0.modulePath == target.modulePath }) {
                throw AdapterError.loraTargetsNotFound(model: model.path,
                    reason: "two projections have the module path \(target.modulePath) (nodes \(target.node) and \(modules.first { $0.modulePath == target.modulePath }!.node))")
            }
            let separate = targets.contains { $0.node == target.node && $0.modulePath != target.modulePath }
            if separate, target.isFused {
                // A part of a packed projection: B covers only its own output features.
                let columns = target.layout.columns(outOf: outputs)
                modules.append(LoRAModule(modulePath: target.modulePath, node: target.node, weight: target.weight,
                                          inFeatures: target.inFeatures, outFeatures: columns.count,
                                          trainableOutputs: Array(columns.indices), targets: [target],
                                          placement: columns, storedOutFeatures: outputs))
            } else {
                modules.append(LoRAModule(modulePath: target.modulePath, node: target.node, weight: target.weight,
                                          inFeatures: target.inFeatures, outFeatures: outputs,
                                          trainableOutputs: target.layout.columns(outOf: outputs), targets: [target]))
            }
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
        let rank = configuration.rank, inputs = module.inFeatures, outputs = module.storedOutFeatures
        let outByIn = module.targets.first?.layout.isWeightOutByIn ?? false
        guard values.count == inputs * outputs else {
            throw AdapterError.inconsistentAdapter(reason: "cannot merge the adapter of \(module.modulePath) [\(inputs) -> \(outputs)] into \(weight)")
        }
        for row in module.trainableOutputs where b[(row * rank)..<((row + 1) * rank)].contains(where: { $0 != 0 }) {
            let output = module.storedOutput(ofRow: row)
            for input in 0..<inputs {
                var delta: Float = 0
                for r in 0..<rank { delta += b[row * rank + r] * a[r * inputs + input] }
                values[outByIn ? output * inputs + input : input * outputs + output] += scale * delta
            }
        }
        return Tensor(shape: weight.shape, floats: values, dataType: weight.dataType)
    }
}
