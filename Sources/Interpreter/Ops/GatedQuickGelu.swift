import Kernels
import ONNXGraph

/// `onnx_dpo.GatedQuickGelu(gate, up)`: `Y = QuickGelu(gate) · up`, a gated MLP's `SiLU(gate) · up` (`alpha = 1`),
/// which `GraphOptimizer.fuseGatedActivation` writes in place of `Mul(QuickGelu(gate), up)`: one pass reading gate and
/// up instead of two passes and an intermediate tensor, and a backward that keeps gate and up only (the separate ops
/// also keep the activation). Float32 operands of one shape run in the C kernels (`kernels_gated_quick_gelu`),
/// rounding each product as the separate ops do; anything else (half precision, broadcasting) runs the two ops.
/// The op is internal to a session (its domain is ours; no exported file contains it).
///
/// Backward: `dup = dY · QuickGelu(gate)`, `dgate = (dY · up) · (s + z · s · (1 − s))` with `z = alpha · gate`,
/// `s = sigmoid(z)`.
struct GatedQuickGelu: Operator {
    static let opType = "GatedQuickGelu"
    static let domain = GraphOptimizer.internalDomain
    static let sinceVersions = [1]

    let alpha: Float
    private let activation: QuickGelu
    private let product: Mul

    init(node: Node, version: Int) throws {
        alpha = try node.float("alpha", default: 1)
        activation = try QuickGelu(node: Node(name: node.name, opType: QuickGelu.opType, domain: QuickGelu.domain,
                                              inputs: [node.inputs.first ?? ""], outputs: [""], attributes: ["alpha": .float(alpha)]),
                                   version: 1)
        product = try Mul(node: Node(name: node.name, opType: Mul.opType, inputs: node.inputs, outputs: node.outputs), version: 14)
    }

    /// Whether the kernels' fused path applies: float32 operands of one shape.
    private static func fusable(_ gate: Tensor, _ up: Tensor) -> Bool {
        gate.dataType == .float && up.dataType == .float && gate.shape == up.shape
            && gate.storage.kind == .float && up.storage.kind == .float
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let gate = try inputs.required(0), up = try inputs.required(1)
        guard Self.fusable(gate, up) else {
            return try product.run([try activation.run([gate])[0], up])
        }
        let alpha = self.alpha
        let (g, u) = (gate.floats, up.floats)
        let y = [Float](unsafeUninitializedCapacity: g.count) { out, initialized in
            initialized = g.count
            g.withUnsafeBufferPointer { g in
                u.withUnsafeBufferPointer { u in
                    guard let gBase = g.baseAddress, let uBase = u.baseAddress, let outBase = out.baseAddress else { return }
                    Parallel.forEachChunk(g.count) { range in
                        let start = range.lowerBound
                        kernels_gated_quick_gelu(range.count, alpha, gBase + start, uBase + start, outBase + start)
                    }
                }
            }
        }
        return [Tensor(shape: gate.shape, floats: y)]
    }
}

extension GatedQuickGelu: DifferentiableOperator {
    // Both gradients read both inputs (dup the activation of gate, dgate up); nothing else is kept.
    func savedValues(wanted: [Bool]) -> SavedValues { SavedValues(inputs: [0, 1]) }

    // dup = dY · QuickGelu(gate); dgate = (dY · up) · (s + z·s·(1 − s)), z = alpha · gate
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let gate = try context.input(0), up = try context.input(1), dy = context.outputGradient()
        let (wantsGate, wantsUp) = (context.wants(0), context.wants(1))
        guard Self.fusable(gate, up), dy.shape == gate.shape, dy.storage.kind == .float else {
            // The two ops' rules, one after the other.
            let activated = try activation.run([gate])[0]
            let products = try product.gradient(GradientContext(inputs: [activated, up], outputs: [], outputGradients: [dy],
                                                                wanted: [wantsGate, wantsUp]))
            let dGate = try products[0].map { dActivated in
                try activation.gradient(GradientContext(inputs: [gate], outputs: [activated], outputGradients: [dActivated],
                                                        wanted: [true]))[0]
            }
            return [dGate ?? nil, products[1]]
        }
        let alpha = self.alpha
        let (g, u, d) = (gate.floats, up.floats, dy.floats)
        // One gradient per call of the kernel (the other pointer NULL): each array is written once, uninitialised before.
        func gradient(ofGate: Bool) -> [Float] {
            [Float](unsafeUninitializedCapacity: g.count) { out, initialized in
                initialized = g.count
                g.withUnsafeBufferPointer { g in
                    u.withUnsafeBufferPointer { u in
                        d.withUnsafeBufferPointer { d in
                            guard let gBase = g.baseAddress, let uBase = u.baseAddress, let dBase = d.baseAddress,
                                  let outBase = out.baseAddress else { return }
                            Parallel.forEachChunk(g.count) { range in
                                let (start, target) = (range.lowerBound, outBase + range.lowerBound)
                                kernels_gated_quick_gelu_backward(range.count, alpha, dBase + start, gBase + start, uBase + start,
                                                                  ofGate ? target : nil, ofGate ? nil : target)
                            }
                        }
                    }
                }
            }
        }
        let dGate = wantsGate ? gradient(ofGate: true) : [], dUp = wantsUp ? gradient(ofGate: false) : []
        return [wantsGate ? Tensor(shape: gate.shape, floats: dGate) : nil, wantsUp ? Tensor(shape: up.shape, floats: dUp) : nil]
    }
}
