import Dispatch
import ONNXGraph

/// A model prepared to run: every node resolved to an op (unsupported ones reported here, at load), initializers
/// loaded, and the order in which intermediate values can be released worked out.
public final class Session: @unchecked Sendable {
    /// The model this session runs.
    public let model: Model
    /// Inputs a caller feeds (graph inputs without an initializer).
    public let inputs: [ValueInfo]
    /// Graph outputs, in order.
    public let outputs: [ValueInfo]

    private struct Step {
        let node: Node
        let op: any Operator
        let inputSlots: [Int?]
        let outputSlots: [Int?]
        /// Slots whose last reader is this step; released once it has run.
        var releases: [Int]
    }

    private let steps: [Step]

    /// The nodes the session runs, in order: the graph's, after `GraphOptimizer`'s rewrites when enabled.
    public var nodes: [Node] { steps.map(\.node) }
    private let slotByName: [String: Int]
    private let constants: [(slot: Int, tensor: Tensor)]
    private let slotCount: Int

    /// Prepares `model`. Throws `InterpreterError.unsupportedOperators` listing every node the registry cannot run,
    /// and `GraphError` for an initializer that cannot be loaded. `optimize` applies `GraphOptimizer`'s rewrites.
    public init(model: Model, registry: OperatorRegistry = .standard, optimize: Bool = true) throws {
        _ = Allocator.tuned
        self.model = model
        let graph = model.graph
        inputs = graph.runtimeInputs
        outputs = graph.outputs

        // Every unsupported op is reported together, before anything is loaded.
        let unsupported = registry.unsupportedOperators(in: model)
        guard unsupported.isEmpty else { throw InterpreterError.unsupportedOperators(unsupported) }
        var opsets = model.opsetImports
        opsets[GraphOptimizer.fusedDomain] = opsets[GraphOptimizer.fusedDomain] ?? 1
        let nodes = optimize ? GraphOptimizer.optimize(graph.nodes, graphOutputs: Set(graph.outputs.map(\.name))) : graph.nodes
        let resolved = nodes.map { try! registry.resolve($0, opsets: opsets).get() }

        var slots: [String: Int] = [:]
        func slot(_ name: String) -> Int {
            if let existing = slots[name] { return existing }
            slots[name] = slots.count
            return slots.count - 1
        }
        var constants: [(Int, Tensor)] = []
        for initializer in graph.initializers {
            constants.append((slot(initializer.name), try model.loadTensor(initializer)))
        }
        for input in graph.inputs { _ = slot(input.name) }

        var steps: [Step] = []
        for (node, entry) in zip(nodes, resolved) {
            let op: any Operator
            do {
                op = try entry.type.init(node: node, version: entry.version)
            } catch let error as KernelError {
                throw InterpreterError.nodeFailed(node: node.label, opType: node.opType, reason: error.message)
            }
            steps.append(Step(
                node: node, op: op,
                inputSlots: node.inputs.map { $0.isEmpty ? nil : slots[$0] },
                outputSlots: node.outputs.map { $0.isEmpty ? nil : slot($0) },
                releases: []))
        }

        // Release each intermediate after its last reader (or right away when nothing reads it).
        let kept = Set(graph.outputs.compactMap { slots[$0.name] } + constants.map(\.0))
        var lastReader: [Int: Int] = [:]
        for (index, step) in steps.enumerated() {
            for case let slot? in step.outputSlots { lastReader[slot] = index }
            for case let slot? in step.inputSlots { lastReader[slot] = index }
        }
        for input in graph.inputs {
            if let slot = slots[input.name], lastReader[slot] == nil { lastReader[slot] = -1 }
        }
        for (slot, index) in lastReader where !kept.contains(slot) && index >= 0 {
            steps[index].releases.append(slot)
        }
        self.steps = steps
        self.slotByName = slots
        self.constants = constants
        self.slotCount = slots.count
    }

    /// Runs the graph on `feeds` (keyed by input name) and returns the graph outputs named in `outputNames`
    /// (all of them by default). With a `profile`, adds each node's wall time to its op type's total.
    public func run(_ feeds: [String: Tensor], outputNames: [String]? = nil, profile: OpProfile? = nil) throws -> [String: Tensor] {
        try validate(feeds)
        let wanted = outputNames ?? outputs.map(\.name)
        for name in wanted where !outputs.contains(where: { $0.name == name }) {
            throw InterpreterError.invalidInput(name: name, reason: "is not a graph output; outputs are \(outputs.map(\.name))")
        }
        var values = [Tensor?](repeating: nil, count: slotCount)
        for (slot, tensor) in constants { values[slot] = tensor }
        for (name, tensor) in feeds { values[slotByName[name]!] = tensor }

        for step in steps {
            var arguments: [Tensor?] = []
            arguments.reserveCapacity(step.inputSlots.count)
            for (position, slot) in step.inputSlots.enumerated() {
                guard let slot else { arguments.append(nil); continue }
                guard let value = values[slot] else {
                    throw InterpreterError.invalidGraph(reason:
                        "\(step.node.opType) node \(step.node.label) reads '\(step.node.inputs[position])' before any node writes it")
                }
                arguments.append(value)
            }
            let results: [Tensor]
            let start = profile == nil ? 0 : DispatchTime.now().uptimeNanoseconds
            do {
                results = try step.op.run(arguments)
                profile?.record(step.node.opType, nanoseconds: DispatchTime.now().uptimeNanoseconds - start)
            } catch let error as KernelError {
                let shapes = arguments.map { $0.map { "\($0.dataType)\($0.shape)" } ?? "omitted" }.joined(separator: ", ")
                throw InterpreterError.nodeFailed(node: step.node.label, opType: step.node.opType,
                                                  reason: "\(error.message) (inputs: \(shapes))")
            }
            guard results.count >= step.outputSlots.count else {
                throw InterpreterError.nodeFailed(node: step.node.label, opType: step.node.opType,
                    reason: "produced \(results.count) outputs, the node names \(step.outputSlots.count)")
            }
            for (slot, result) in zip(step.outputSlots, results) where slot != nil {
                values[slot!] = result
            }
            for slot in step.releases { values[slot] = nil }
        }

        var result: [String: Tensor] = [:]
        for name in wanted {
            guard let value = values[slotByName[name]!] else {
                throw InterpreterError.invalidGraph(reason: "output '\(name)' was not computed")
            }
            result[name] = value
        }
        return result
    }

    /// Checks names, element types, ranks and fixed dimensions of `feeds` against the declared inputs, and that
    /// a symbolic dimension (`batch`) has one size across all inputs.
    private func validate(_ feeds: [String: Tensor]) throws {
        let declared = Dictionary(uniqueKeysWithValues: inputs.map { ($0.name, $0) })
        for name in feeds.keys.sorted() where declared[name] == nil {
            throw InterpreterError.invalidInput(name: name, reason:
                "the model has no input of that name; its inputs are \(inputs.map(\.name).joined(separator: ", "))")
        }
        var symbols: [String: (size: Int, input: String)] = [:]
        for input in inputs {
            guard let tensor = feeds[input.name] else {
                throw InterpreterError.invalidInput(name: input.name, reason: "is required but was not given")
            }
            if input.elementType != .undefined && tensor.dataType != input.elementType {
                throw InterpreterError.invalidInput(name: input.name, reason:
                    "expected element type \(input.elementType), got \(tensor.dataType)")
            }
            guard let shape = input.shape else { continue }
            guard shape.count == tensor.rank else {
                throw InterpreterError.invalidInput(name: input.name, reason:
                    "expected rank \(shape.count) (\(input.typeDescription)), got shape \(tensor.shape)")
            }
            for (axis, dimension) in shape.enumerated() {
                switch dimension {
                case .fixed(let size) where size != tensor.shape[axis]:
                    throw InterpreterError.invalidInput(name: input.name, reason:
                        "dimension \(axis) must be \(size) (\(input.typeDescription)), got shape \(tensor.shape)")
                case .symbolic(let symbol):
                    if let seen = symbols[symbol], seen.size != tensor.shape[axis] {
                        throw InterpreterError.invalidInput(name: input.name, reason:
                            "dimension \(axis) ('\(symbol)') is \(tensor.shape[axis]), but '\(seen.input)' has \(symbol) = \(seen.size)")
                    }
                    symbols[symbol] = (tensor.shape[axis], input.name)
                default: break
                }
            }
        }
    }
}

/// Wall time per op type over one or more runs (`Session.run(_:profile:)`), for finding what to optimise.
public final class OpProfile: @unchecked Sendable {
    public private(set) var nanoseconds: [String: UInt64] = [:]
    public private(set) var calls: [String: Int] = [:]

    public init() {}

    func record(_ opType: String, nanoseconds elapsed: UInt64) {
        nanoseconds[opType, default: 0] += elapsed
        calls[opType, default: 0] += 1
    }

    /// One line per op type, slowest first: total seconds, share of the total, and calls.
    public var table: String {
        let total = max(nanoseconds.values.reduce(0, +), 1)
        return nanoseconds.sorted { $0.value > $1.value }.map { opType, time in
            let seconds = Double(time) / 1e9
            let share = 100 * Double(time) / Double(total)
            return "\(opType.padding(toLength: 20, withPad: " ", startingAt: 0)) \(String(format: "%8.3f s %5.1f%%", seconds, share))  \(calls[opType]!) calls"
        }.joined(separator: "\n")
    }
}
