import ONNXGraph

/// Maps `(domain, opType, sinceVersion)` to the type implementing it, as onnx's reference evaluator and
/// onnxruntime's kernel registry do. Ops are resolved when a model loads, so a missing one is reported then.
public struct OperatorRegistry: Sendable {
    private struct Key: Hashable { var domain: String; var opType: String }
    private var entries: [Key: any Operator.Type] = [:]

    /// The newest default-domain opset whose changes this interpreter has been checked against. A model declaring
    /// a newer one runs each op at the newest version implemented, and `inspect` says so. Opset 22 (onnxruntime-genai's
    /// builder writes it) only adds bfloat16 and other types to ops this interpreter implements (Cos, Sin, ...), whose
    /// semantics are unchanged; the builder fixtures run at 22 against onnxruntime.
    public static let newestVerifiedOpset = 22

    /// Every op this interpreter implements.
    public static let standard = OperatorRegistry(
        elementwiseOperators + shapeOperators + linearAlgebraOperators)

    /// A registry of `operators`; two types for the same op and domain are a bug.
    public init(_ operators: [any Operator.Type]) {
        for op in operators {
            let key = Key(domain: Self.canonicalDomain(op.domain), opType: op.opType)
            precondition(entries[key] == nil, "\(op.opType) registered twice")
            precondition(!op.sinceVersions.isEmpty && op.sinceVersions == op.sinceVersions.sorted(),
                         "\(op.opType): sinceVersions must be non-empty and ascending")
            entries[key] = op
        }
    }

    /// `ai.onnx` and `""` name the same domain.
    public static func canonicalDomain(_ domain: String) -> String { domain == "ai.onnx" ? "" : domain }

    /// The implementation of `node` under `opsets` (domain → version), or why there is none.
    public func resolve(_ node: Node, opsets: [String: Int]) -> Result<(type: any Operator.Type, version: Int), UnsupportedOperator> {
        let domain = Self.canonicalDomain(node.domain)
        let opset = opsets[domain] ?? 0
        func unsupported(_ reason: String) -> UnsupportedOperator {
            UnsupportedOperator(node: node.label, opType: node.opType, domain: node.domainLabel, opset: opset, reason: reason)
        }
        guard let op = entries[Key(domain: domain, opType: node.opType)] else {
            if opsets[domain] == nil {
                return .failure(unsupported("the model imports no opset for domain \(node.domainLabel)"))
            }
            return .failure(unsupported("not implemented by this interpreter"))
        }
        guard let version = op.sinceVersions.last(where: { $0 <= opset }) else {
            let versions = op.sinceVersions.map(String.init).joined(separator: ", ")
            return .failure(unsupported("opset \(opset) is older than the versions implemented (\(versions))"))
        }
        return .success((op, version))
    }

    /// The nodes of `model` this registry cannot run, in graph order (empty when it can run them all).
    public func unsupportedOperators(in model: Model) -> [UnsupportedOperator] {
        model.graph.nodes.compactMap { node in
            if case .failure(let problem) = resolve(node, opsets: model.opsetImports) { return problem }
            return nil
        }
    }

    /// The type implementing `opType` in `domain`, if registered.
    public func implementation(of opType: String, domain: String = "") -> (any Operator.Type)? {
        entries[Key(domain: Self.canonicalDomain(domain), opType: opType)]
    }

    /// Every op type registered, sorted, for `inspect` and documentation.
    public var operatorTypes: [String] { entries.keys.map(\.opType).sorted() }
}
