import ONNXGraph

/// What can go wrong preparing or running a graph, each case naming what a user needs to act.
public enum InterpreterError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Ops the registry lacks (or lacks at the model's opset), found when the model is loaded.
    case unsupportedOperators([UnsupportedOperator])
    /// A node failed while running.
    case nodeFailed(node: String, opType: String, reason: String)
    /// A caller-supplied input is wrong (unknown name, wrong type, wrong rank or size, missing).
    case invalidInput(name: String, reason: String)
    /// The graph itself cannot be run (a value read before anything writes it, a cycle, ...).
    case invalidGraph(reason: String)

    public var description: String {
        switch self {
        case .unsupportedOperators(let operators):
            let lines = operators.map { "  - \($0)" }.joined(separator: "\n")
            return "the model uses \(operators.count) node(s) this interpreter cannot run:\n\(lines)"
        case .nodeFailed(let node, let opType, let reason):
            return "\(opType) node \(node) failed: \(reason)"
        case .invalidInput(let name, let reason):
            return "input '\(name)': \(reason)"
        case .invalidGraph(let reason):
            return "the graph cannot be run: \(reason)"
        }
    }
}

/// A node whose op the registry lacks, with everything needed to tell a user which and why.
public struct UnsupportedOperator: Error, Sendable, Equatable, CustomStringConvertible {
    public var node: String
    public var opType: String
    public var domain: String
    public var opset: Int
    /// Why: an unknown op, or a known op at an opset older than any version implemented.
    public var reason: String

    public var description: String {
        "node \(node): op \(opType) (domain \(domain), opset \(opset)): \(reason)"
    }
}

/// An error raised inside an op's kernel; the session adds the node's name and op type.
public struct KernelError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
