import Foundation
import ONNXGraph

/// What `onnx-dpo inspect` reports about a model: versions, inputs and outputs, ops, parameters, external data,
/// and what this interpreter cannot run. Encodable, so the command can print it as JSON.
public struct ModelReport: Encodable, Sendable {
    public struct OpsetImport: Encodable, Sendable { public var domain: String; public var version: Int }
    public struct Value: Encodable, Sendable {
        public var name: String
        public var elementType: String
        /// Dimensions as numbers or symbol names; nil when the model declares no shape.
        public var shape: [String]?
    }
    public struct ParameterType: Encodable, Sendable {
        public var dataType: String
        public var tensors: Int
        public var parameters: Int
        public var bytes: Int
    }
    public struct ExternalFile: Encodable, Sendable {
        public var location: String
        public var tensors: Int
        public var bytes: Int
    }
    public struct Unsupported: Encodable, Sendable {
        public var node: String
        public var opType: String
        public var domain: String
        public var opset: Int
        public var reason: String
    }
    public struct Checker: Encodable, Sendable {
        /// `passed`, `failed` or `skipped`.
        public var status: String
        public var message: String?
    }

    public var path: String
    public var irVersion: Int
    public var producer: String
    public var opsetImports: [OpsetImport]
    public var inputs: [Value]
    public var outputs: [Value]
    public var nodeCount: Int
    /// Op type (prefixed with its domain when not the default one) to node count.
    public var operators: [String: Int]
    public var parameterCount: Int
    public var parameterTypes: [ParameterType]
    public var externalData: [ExternalFile]
    public var unsupportedOperators: [Unsupported]
    public var metadata: [String: String]
    public var onnxChecker: Checker
    /// Notes a user should know (an opset newer than the interpreter was verified against, ...).
    public var warnings: [String]

    /// Summarises `model`; runs libonnx's checker where the model's versions allow.
    public init(model: Model, registry: OperatorRegistry = .standard) {
        let graph = model.graph
        path = model.path
        irVersion = model.irVersion
        producer = [model.producerName, model.producerVersion].filter { !$0.isEmpty }.joined(separator: " ")
        opsetImports = model.opsetImports.sorted { $0.key < $1.key }
            .map { OpsetImport(domain: $0.key.isEmpty ? "ai.onnx" : $0.key, version: $0.value) }
        func value(_ info: ValueInfo) -> Value {
            Value(name: info.name, elementType: info.isTensor ? info.elementType.description : "non-tensor",
                  shape: info.shape?.map(\.description))
        }
        inputs = graph.runtimeInputs.map(value)
        outputs = graph.outputs.map(value)
        nodeCount = graph.nodes.count
        var operators: [String: Int] = [:]
        for node in graph.nodes {
            let domain = OperatorRegistry.canonicalDomain(node.domain)
            operators[domain.isEmpty ? node.opType : "\(domain).\(node.opType)", default: 0] += 1
        }
        self.operators = operators
        var types: [DataType: ParameterType] = [:]
        var files: [String: ExternalFile] = [:]
        for initializer in graph.initializers {
            types[initializer.dataType, default: ParameterType(dataType: initializer.dataType.description,
                                                               tensors: 0, parameters: 0, bytes: 0)].tensors += 1
            types[initializer.dataType]!.parameters += initializer.count
            types[initializer.dataType]!.bytes += initializer.byteCount
            if case .external(let reference) = initializer.location {
                files[reference.location, default: ExternalFile(location: reference.location, tensors: 0, bytes: 0)].tensors += 1
                files[reference.location]!.bytes += initializer.byteCount
            }
        }
        parameterCount = graph.initializers.reduce(0) { $0 + $1.count }
        parameterTypes = types.values.sorted { $0.parameters > $1.parameters }
        externalData = files.values.sorted { $0.location < $1.location }
        unsupportedOperators = registry.unsupportedOperators(in: model).map {
            Unsupported(node: $0.node, opType: $0.opType, domain: $0.domain, opset: $0.opset, reason: $0.reason)
        }
        metadata = Dictionary(model.metadata.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
        switch model.runONNXChecker() {
        case .passed: onnxChecker = Checker(status: "passed", message: nil)
        case .failed(let message): onnxChecker = Checker(status: "failed", message: message)
        case .skipped(let reason): onnxChecker = Checker(status: "skipped", message: reason)
        }
        warnings = []
        if model.opset > OperatorRegistry.newestVerifiedOpset {
            warnings.append("opset \(model.opset) is newer than opset \(OperatorRegistry.newestVerifiedOpset), the newest this "
                + "interpreter was verified against; each op runs with the semantics of its newest implemented version")
        }
    }

    /// A human-readable rendering.
    public var text: String {
        var lines: [String] = []
        lines.append("model:       \(path)")
        lines.append("IR version:  \(irVersion)" + (producer.isEmpty ? "" : "   producer: \(producer)"))
        lines.append("opsets:      " + opsetImports.map { "\($0.domain) \($0.version)" }.joined(separator: ", "))
        lines.append("checker:     \(onnxChecker.status)" + (onnxChecker.message.map { " (\($0))" } ?? ""))
        func shape(_ value: Value) -> String {
            value.shape.map { "[" + $0.joined(separator: ", ") + "]" } ?? "[?]"
        }
        lines.append("inputs:")
        lines += inputs.map { "  \($0.name): \($0.elementType)\(shape($0))" }
        lines.append("outputs:")
        lines += outputs.map { "  \($0.name): \($0.elementType)\(shape($0))" }
        lines.append("parameters:  \(parameterCount.formatted()) in " + parameterTypes.map {
            "\($0.tensors) \($0.dataType) tensors (\(ByteCountFormatter.string(fromByteCount: Int64($0.bytes), countStyle: .memory)))"
        }.joined(separator: ", "))
        if externalData.isEmpty {
            lines.append("external data: none")
        } else {
            lines.append("external data:")
            lines += externalData.map {
                "  \($0.location): \($0.tensors) tensors, \(ByteCountFormatter.string(fromByteCount: Int64($0.bytes), countStyle: .memory))"
            }
        }
        lines.append("operators (\(nodeCount) nodes):")
        lines += operators.sorted { ($1.value, $0.key) < ($0.value, $1.key) }.map { "  \($0.key): \($0.value)" }
        if !metadata.isEmpty {
            lines.append("metadata:")
            lines += metadata.sorted { $0.key < $1.key }.map { "  \($0.key): \($0.value)" }
        }
        if unsupportedOperators.isEmpty {
            lines.append("unsupported operators: none")
        } else {
            lines.append("unsupported operators (\(unsupportedOperators.count)):")
            lines += unsupportedOperators.map { "  node \($0.node): \($0.opType) (\($0.domain), opset \($0.opset)): \($0.reason)" }
        }
        lines += warnings.map { "warning: \($0)" }
        return lines.joined(separator: "\n")
    }
}
