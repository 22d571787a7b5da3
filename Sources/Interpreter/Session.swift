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
        var op: any Operator
        /// Where each input is read from; nil for an absent optional input, or a weight packed into the op.
        var inputSlots: [Int?]
        let outputSlots: [Int?]
        /// Slots whose last reader is this step; released once it has run.
        var releases: [Int]
    }

    private var steps: [Step]
    /// Where `forward(gradientCheckpointing: true)` cuts the graph (see `CheckpointPlan`).
    public private(set) var checkpointPlan: CheckpointPlan
    /// The attention score computations `forward` recomputes in the backward pass instead of keeping
    /// (`CheckpointPlan.attentionCores`), nested in `checkpointPlan`'s blocks.
    public private(set) var attentionPlan: CheckpointPlan
    private let graphOutputSlots: Set<Int>
    /// Initializers read by nodes `foldConstants` precomputed: training them would not reach those nodes.
    private var foldedSources: Set<String> = []
    /// Constants `GraphOptimizer` copied into a fused node's attribute (an epsilon, a scale): they can no longer be
    /// replaced or trained.
    private var fusedSources: Set<String> = []
    /// Weights `packWeights` packed into their products: they can no longer be replaced or trained.
    private var packedSources: Set<String> = []

    /// The initializers `packWeights` packed into their products.
    public var packedWeightNames: Set<String> { packedSources }

    /// The nodes the session runs, in order: the graph's, after `GraphOptimizer`'s rewrites when enabled.
    public var nodes: [Node] { steps.map(\.node) }
    private let slotByName: [String: Int]
    private var constants: [(slot: Int, tensor: Tensor)]
    /// How many initializer values the session holds (`packWeights` drops the copies it packs).
    var constantCount: Int { constants.count }
    private let slotCount: Int

    /// Prepares `model`. Throws `InterpreterError.unsupportedOperators` listing every node the registry cannot run,
    /// and `GraphError` for an initializer that cannot be loaded. `optimize` applies `GraphOptimizer`'s rewrites.
    /// `additionalInitializers` are constants the model's file does not hold (adapter weights a rewrite added).
    public init(model: Model, registry: OperatorRegistry = .standard, optimize: Bool = true,
                additionalInitializers: [String: Tensor] = [:]) throws {
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
        opsets[GraphOptimizer.internalDomain] = 1
        let nodes: [Node]
        if optimize {
            // Only the model's own constants may be folded: additional initializers are replaced between runs. The
            // rewrites read only small values (an epsilon, a scale, an axis), loaded here for them alone (a dictionary
            // of every loaded weight, held until the session was built, raised a builder model's peak by 160 MiB).
            var small: [String: Tensor] = [:], shapes: [String: [Int]] = [:]
            for initializer in graph.initializers where additionalInitializers[initializer.name] == nil {
                shapes[initializer.name] = initializer.shape
                if initializer.count <= GraphOptimizer.Constants.maximumCount {
                    small[initializer.name] = try model.loadTensor(initializer)
                }
            }
            let constants = GraphOptimizer.Constants(initializers: small, shapes: shapes, nodes: graph.nodes)
            let rewritten = GraphOptimizer.optimize(graph.nodes, graphOutputs: Set(graph.outputs.map(\.name)), constants: constants)
            nodes = rewritten.nodes
            fusedSources = rewritten.foldedConstants
        } else {
            nodes = graph.nodes
        }
        let resolved = nodes.map { try! registry.resolve($0, opsets: opsets).get() }

        var slots: [String: Int] = [:]
        func slot(_ name: String) -> Int {
            if let existing = slots[name] { return existing }
            slots[name] = slots.count
            return slots.count - 1
        }
        var constants: [(Int, Tensor)] = []
        for initializer in graph.initializers where additionalInitializers[initializer.name] == nil {
            constants.append((slot(initializer.name), try model.loadTensor(initializer)))
        }
        for (name, tensor) in additionalInitializers.sorted(by: { $0.key < $1.key }) {
            constants.append((slot(name), tensor))
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
            for input in node.inputs where !input.isEmpty && slots[input] == nil {
                throw InterpreterError.invalidGraph(reason:
                    "\(node.opType) node \(node.label) reads '\(input)', which no graph input, initializer or earlier node defines")
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
        graphOutputSlots = Set(graph.outputs.compactMap { slots[$0.name] })
        (checkpointPlan, attentionPlan) = Self.plans(steps, constants: constants, graphOutputSlots: graphOutputSlots)
        try prepareOperators()
    }

    /// Runs the graph on `feeds` (keyed by input name) and returns the graph outputs named in `outputNames`
    /// (all of them by default). With a `profile`, adds each node's wall time to its op type's total.
    public func run(_ feeds: [String: Tensor], outputNames: [String]? = nil, profile: OpProfile? = nil) throws -> [String: Tensor] {
        try execute(feeds, outputNames: outputNames, profile: profile, tape: nil)
    }

    /// Runs the graph recording what `ForwardPass.backward` needs to differentiate the outputs with respect to the
    /// `trainable` values (initializers or graph inputs, floating-point). Only nodes a trainable value reaches are
    /// recorded; everything else (masks, shapes, rotary tables, frozen branches) runs as in `run` and is released
    /// as soon as it is read.
    ///
    /// With `gradientCheckpointing`, the nodes between block boundaries (`checkpointPlan`) save nothing: only the
    /// values each block reads from before it are kept, and `backward` runs each block's forward again, recording
    /// it, just before differentiating it. Gradients are those of the run without checkpointing, bit for bit; the
    /// activations held at once drop from every block's to one block's, for one more forward pass of the blocks.
    ///
    /// With `recomputeAttention` (the default), attention's score and probability matrices (`attentionPlan`) are
    /// not kept either: each attention core is run again from its Q, K, V and mask just before it is
    /// differentiated, inside a recomputed block too. Gradients are again the same bit for bit; a step holds no
    /// `[batch, heads, queries, keys]` matrix but the one being differentiated, for one more pass of the attention
    /// products.
    public func forward(_ feeds: [String: Tensor], trainable: Set<String>, outputNames: [String]? = nil,
                        profile: OpProfile? = nil, gradientCheckpointing: Bool = false,
                        recomputeAttention: Bool = true) throws -> ForwardPass {
        var slots: [String: Int] = [:]
        for name in trainable.sorted() {
            guard !packedSources.contains(name) else {
                throw InterpreterError.invalidInput(name: name, reason:
                    "was packed into its products (packWeights), so it cannot be trained; pack with keeping: the trainable weights")
            }
            guard !foldedSources.contains(name) else {
                throw InterpreterError.invalidInput(name: name, reason: "feeds a node foldConstants precomputed, so it cannot be trained")
            }
            guard !fusedSources.contains(name) else {
                throw InterpreterError.invalidInput(name: name, reason:
                    "was folded into a fused op's attribute, so it cannot be trained; build the session with optimize: false")
            }
            guard let slot = slotByName[name],
                  constants.contains(where: { $0.slot == slot }) || inputs.contains(where: { $0.name == name }) else {
                throw InterpreterError.invalidInput(name: name, reason: "is not an initializer or graph input, so it cannot be trained")
            }
            slots[name] = slot
        }
        let tape = Tape(slotCount: slotCount, trainable: slots,
                        checkpoints: gradientCheckpointing && !checkpointPlan.segments.isEmpty ? checkpointPlan : nil,
                        attention: recomputeAttention && !attentionPlan.segments.isEmpty ? attentionPlan : nil)
        let outputs = try execute(feeds, outputNames: outputNames, profile: profile, tape: tape)
        return ForwardPass(outputs: outputs, session: self, tape: tape)
    }

    /// Precomputes, once, every node whose inputs are all initializers (or outputs of nodes already precomputed),
    /// keeping its outputs as constants and dropping it from the run: for sessions that only run inference many
    /// times, as generation does (onnxruntime-genai's builder graphs transpose the whole `[hidden, vocabulary]`
    /// lm_head weight before the embedding Gather on every run). Nodes without inputs are left alone. Afterwards
    /// `setInitializer` on a folded node's source no longer reaches it, and `forward` refuses to train one.
    /// Returns the number of nodes folded.
    @discardableResult
    public func foldConstants() throws -> Int {
        var constantSlots = Dictionary(uniqueKeysWithValues: constants.map { ($0.slot, $0.tensor) })
        let names = Dictionary(uniqueKeysWithValues: slotByName.map { ($1, $0) })
        var kept: [Step] = []
        var folded = 0
        for step in steps {
            let inputs = step.inputSlots.compactMap { $0 }
            guard !inputs.isEmpty, inputs.allSatisfy({ constantSlots[$0] != nil }) else {
                kept.append(step)
                continue
            }
            let arguments = step.inputSlots.map { $0.flatMap { constantSlots[$0] } }
            let results: [Tensor]
            do {
                results = try step.op.run(arguments)
            } catch let error as KernelError {
                throw InterpreterError.nodeFailed(node: step.node.label, opType: step.node.opType, reason: error.message)
            }
            for (slot, result) in zip(step.outputSlots, results) where slot != nil {
                constantSlots[slot!] = result
                constants.append((slot!, result))
            }
            foldedSources.formUnion(inputs.compactMap { names[$0] })
            folded += 1
        }
        steps = kept
        (checkpointPlan, attentionPlan) = Self.plans(steps, constants: constants, graphOutputSlots: graphOutputSlots)
        try prepareOperators()
        return folded
    }

    /// Packs, once, every frozen weight a product reads (`WeightPackingOperator`: MatMul, FusedMatMul with an
    /// untransposed A) into the GEMM's panel layout, in the weight's stored precision (float16 and bfloat16 weights
    /// stay 2 bytes a value), so that no run packs it again, and drops the session's unpacked copy: weights are held
    /// once. A tied embedding is packed too, its Gathers then reading rows from the LM head's panels. A weight
    /// anything else reads too (a second product, a graph output) stays unpacked, and so do weights of fewer than
    /// `minimumCount` values (LoRA's rank-r matrices: packing them saves nothing) and the weights named in `keeping`
    /// (those a trainer trains or replaces between runs).
    ///
    /// The backward pass reads the same panels for the input gradient `dY · Wᵀ` (repacked block by block as the
    /// product runs), so a training session holds each frozen weight once too. Afterwards `setInitializer` refuses
    /// a packed weight and `forward` refuses to train one. Returns the number of weights packed.
    @discardableResult
    public func packWeights(minimumCount: Int = PackedWeight.minimumCount, keeping: Set<String> = []) throws -> Int {
        var constantBySlot = Dictionary(constants.map { ($0.slot, $0.tensor) }, uniquingKeysWith: { _, last in last })
        // Each weight's reads by products that could take it packed ([step, input]), by ops that can read it from
        // a product's panels (an embedding Gather on a tied LM head's weight), and whether anything else (another
        // op, a graph output) reads it too: such a weight would be held twice, so it stays unpacked.
        var candidates: [Int: [[Int]]] = [:]
        var panelReaders: [Int: [[Int]]] = [:]
        var readElsewhere = graphOutputSlots
        for (index, step) in steps.enumerated() {
            let packable = (step.op as? any WeightPackingOperator)?.packableInput
            let readable = (step.op as? any PackedWeightReadingOperator)?.packedReadableInput
            for (input, slot) in step.inputSlots.enumerated() {
                guard let slot else { continue }
                if input == packable && constantBySlot[slot] != nil {
                    candidates[slot, default: []].append([index, input])
                } else if input == readable && constantBySlot[slot] != nil {
                    panelReaders[slot, default: []].append([index, input])
                } else {
                    readElsewhere.insert(slot)
                }
            }
        }
        var packedCount = 0
        let names = Dictionary(uniqueKeysWithValues: slotByName.map { ($1, $0) })
        // Weight by weight, so that each one's unpacked copy is released as soon as its product holds it packed.
        let kept = Set(keeping.compactMap { slotByName[$0] })
        for (slot, reads) in candidates.sorted(by: { $0.key < $1.key })
        where reads.count == 1 && !readElsewhere.contains(slot) && !kept.contains(slot) {
            let (index, input) = (reads[0][0], reads[0][1])
            guard let op = steps[index].op as? any WeightPackingOperator, let weight = constantBySlot[slot] else { continue }
            let packed: (any WeightPackingOperator)?
            do {
                packed = weight.count >= minimumCount ? try op.packing(weight) : nil
            } catch let error as KernelError {
                throw InterpreterError.nodeFailed(node: steps[index].node.label, opType: steps[index].node.opType,
                                                  reason: error.message)
            }
            guard let packed, let panels = packed.packedWeight else { continue }
            // Every other reader must read the panels, or the weight stays unpacked.
            let readers = panelReaders[slot, default: []].map { read in
                ((steps[read[0]].op as? any PackedWeightReadingOperator)?.reading(panels), read)
            }
            guard readers.allSatisfy({ $0.0 != nil }) else { continue }
            steps[index].op = packed
            steps[index].inputSlots[input] = nil  // the product no longer reads the weight's slot
            for (reader, read) in readers {
                steps[read[0]].op = reader!
                steps[read[0]].inputSlots[read[1]] = nil
            }
            constantBySlot[slot] = nil
            constants.removeAll { $0.slot == slot }
            if let name = names[slot] { packedSources.insert(name) }
            packedCount += 1
        }
        (checkpointPlan, attentionPlan) = Self.plans(steps, constants: constants, graphOutputSlots: graphOutputSlots)
        if packedCount > 0 { Allocator.releaseFreeMemory() }
        return packedCount
    }

    private static func plans(_ steps: [Step], constants: [(slot: Int, tensor: Tensor)], graphOutputSlots: Set<Int>)
        -> (blocks: CheckpointPlan, attention: CheckpointPlan) {
        let planSteps = steps.map { ($0.node.opType, $0.inputSlots, $0.outputSlots) }
        let constantSlots = Set(constants.map(\.slot))
        let blocks = CheckpointPlan(steps: planSteps, constantSlots: constantSlots)
        return (blocks, CheckpointPlan.attentionCores(steps: planSteps, constantSlots: constantSlots,
                                                      graphOutputSlots: graphOutputSlots, nestingIn: blocks))
    }

    /// Prepares the steps whose op derives something from its initializer inputs (`PreparingOperator`): all of
    /// them, or those reading one of `slots`.
    private func prepareOperators(readingAny slots: Set<Int>? = nil) throws {
        let targets = steps.indices.filter { index in
            steps[index].op is any PreparingOperator
                && (slots.map { slots in steps[index].inputSlots.contains { $0.map(slots.contains) ?? false } } ?? true)
        }
        guard !targets.isEmpty else { return }
        let constantBySlot = Dictionary(constants.map { ($0.slot, $0.tensor) }, uniquingKeysWith: { _, last in last })
        for index in targets {
            guard let op = steps[index].op as? any PreparingOperator else { continue }
            do {
                steps[index].op = try op.prepared(constants: steps[index].inputSlots.map { $0.flatMap { constantBySlot[$0] } })
            } catch let error as KernelError {
                throw InterpreterError.nodeFailed(node: steps[index].node.label, opType: steps[index].node.opType,
                                                  reason: error.message)
            }
        }
    }

    /// Replaces the values of initializer `name` (same shape and type), for parameters that change between runs.
    public func setInitializer(_ name: String, _ tensor: Tensor) throws {
        guard !packedSources.contains(name) else {
            throw InterpreterError.invalidInput(name: name, reason:
                "was packed into its products (packWeights), so it cannot be replaced; build another session")
        }
        guard !fusedSources.contains(name) else {
            throw InterpreterError.invalidInput(name: name, reason:
                "was folded into a fused op's attribute, so it cannot be replaced; build the session with optimize: false")
        }
        guard let slot = slotByName[name], let index = constants.firstIndex(where: { $0.slot == slot }) else {
            throw InterpreterError.invalidInput(name: name, reason: "is not an initializer of the model")
        }
        let current = constants[index].tensor
        guard current.shape == tensor.shape, current.dataType == tensor.dataType else {
            throw InterpreterError.invalidInput(name: name, reason:
                "expected \(current.dataType)\(current.shape), got \(tensor.dataType)\(tensor.shape)")
        }
        constants[index].tensor = tensor
        try prepareOperators(readingAny: [slot])
    }

    /// The forward pass shared by `run` and `forward`: with a `tape`, marks which values depend on a trainable one
    /// and saves the inputs and outputs of the nodes that compute them.
    private func execute(_ feeds: [String: Tensor], outputNames: [String]?, profile: OpProfile?, tape: Tape?) throws -> [String: Tensor] {
        try validate(feeds)
        let wanted = outputNames ?? outputs.map(\.name)
        for name in wanted where !outputs.contains(where: { $0.name == name }) {
            throw InterpreterError.invalidInput(name: name, reason: "is not a graph output; outputs are \(outputs.map(\.name))")
        }
        var values = [Tensor?](repeating: nil, count: slotCount)
        for (slot, tensor) in constants { values[slot] = tensor }
        for (name, tensor) in feeds { values[slotByName[name]!] = tensor }
        if let tape {
            for (name, slot) in tape.trainable {
                guard values[slot]?.storage.kind == .float else {
                    throw InterpreterError.invalidInput(name: name, reason: "is not floating-point, so it cannot be trained")
                }
                tape.requiresGradient[slot] = true
            }
        }

        for index in steps.indices {
            var save = true
            if let tape {
                if let segment = tape.checkpoints?.segmentStarting[index] {
                    tape.segmentInputs[segment] = tape.checkpoints!.inputs[segment].map { ($0, values[$0]!) }
                }
                // A block's steps save nothing (nor capture their attention cores' inputs: the block's
                // recomputation does); an attention core's steps save nothing but the core's inputs.
                if tape.checkpoints?.segmentOfStep[index] != nil {
                    save = false
                } else {
                    save = tape.captureAttentionInputs(at: index, values)
                }
            }
            try run(step: index, values: &values, profile: profile, tape: tape, save: save)
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

    /// Runs step `index` on `values`, storing its results and releasing the values it read last. With a `tape`,
    /// marks what depends on a trainable value and, when `save`, saves what the step's gradient rule needs.
    private func run(step index: Int, values: inout [Tensor?], profile: OpProfile?, tape: Tape?, save: Bool,
                     profileSuffix: String = "") throws {
        let step = steps[index]
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
            profile?.record(step.node.opType + profileSuffix, nanoseconds: DispatchTime.now().uptimeNanoseconds - start)
        } catch let error as KernelError {
            let shapes = arguments.map { $0.map { "\($0.dataType)\($0.shape)" } ?? "omitted" }.joined(separator: ", ")
            throw InterpreterError.nodeFailed(node: step.node.label, opType: step.node.opType,
                                              reason: "\(error.message) (inputs: \(shapes))")
        }
        guard results.count >= step.outputSlots.count else {
            throw InterpreterError.nodeFailed(node: step.node.label, opType: step.node.opType,
                reason: "produced \(results.count) outputs, the node names \(step.outputSlots.count)")
        }
        if let tape {
            try tape.record(step: index, step.node, step.op, step.inputSlots, step.outputSlots, arguments, results, save: save)
        }
        for (slot, result) in zip(step.outputSlots, results) where slot != nil {
            values[slot!] = result
        }
        for slot in step.releases { values[slot] = nil }
    }

    /// Runs checkpointed block `segment` again from the values saved at its start, recording it on `tape` (its
    /// attention cores' inputs only, when the tape recomputes those too).
    private func recompute(segment: Int, tape: Tape, profile: OpProfile?) throws {
        guard let plan = tape.checkpoints, let saved = tape.segmentInputs.removeValue(forKey: segment) else {
            throw InterpreterError.invalidGraph(reason: "checkpointed block \(segment) has no saved inputs")
        }
        try runAgain(plan.segments[segment], from: saved, tape: tape, profile: profile) { index, values in
            tape.captureAttentionInputs(at: index, values)
        }
    }

    /// Runs attention core `core` again from its saved inputs, recording it on `tape`.
    private func recompute(attentionCore core: Int, tape: Tape, profile: OpProfile?) throws {
        guard let plan = tape.attention, let saved = tape.attentionInputs.removeValue(forKey: core) else {
            throw InterpreterError.invalidGraph(reason: "attention core \(core) has no saved inputs")
        }
        try runAgain(plan.segments[core], from: saved, tape: tape, profile: profile) { _, _ in true }
    }

    /// Runs `range`'s steps again on the constants and `saved`, recording them on `tape`; `save(step, values)`, asked
    /// before each step runs, says whether it keeps what its rule needs.
    private func runAgain(_ range: ClosedRange<Int>, from saved: [(slot: Int, tensor: Tensor)], tape: Tape,
                          profile: OpProfile?, save: (Int, [Tensor?]) -> Bool) throws {
        var values = [Tensor?](repeating: nil, count: slotCount)
        for (slot, tensor) in constants { values[slot] = tensor }
        for (slot, tensor) in saved { values[slot] = tensor }
        for index in range {
            try run(step: index, values: &values, profile: profile, tape: tape, save: save(index, values),
                    profileSuffix: " (recompute)")
        }
    }

    /// Differentiates the recorded nodes in reverse order (see `ForwardPass.backward`).
    fileprivate func backward(_ tape: Tape, seeds: [String: Tensor], profile: OpProfile?) throws -> [String: Tensor] {
        var gradients = [Tensor?](repeating: nil, count: slotCount)
        for (name, seed) in seeds {
            guard let slot = slotByName[name], outputs.contains(where: { $0.name == name }) else {
                throw InterpreterError.invalidInput(name: name, reason: "is not a graph output")
            }
            guard tape.requiresGradient[slot] else {
                throw InterpreterError.invalidInput(name: name, reason: "does not depend on any trainable value")
            }
            gradients[slot] = seed
        }
        for index in steps.indices.reversed() {
            if let segment = tape.checkpoints?.segmentEnding[index] {
                try recompute(segment: segment, tape: tape, profile: profile)
            }
            if let core = tape.attention?.segmentEnding[index] {
                try recompute(attentionCore: core, tape: tape, profile: profile)
            }
            guard let record = tape.records[index] else { continue }
            tape.records[index] = nil  // saved activations go as soon as this rule has run
            let step = steps[index]
            let outputGradients = step.outputSlots.map { $0.flatMap { gradients[$0] } }
            for case let slot? in step.outputSlots { gradients[slot] = nil }  // read once, by this rule
            guard outputGradients.contains(where: { $0 != nil }) else { continue }
            let wanted = step.inputSlots.map { $0.map { tape.requiresGradient[$0] } ?? false }
            let context = GradientContext(saved: record, outputGradients: outputGradients, wanted: wanted)
            let inputGradients: [Tensor?]
            let start = profile == nil ? 0 : DispatchTime.now().uptimeNanoseconds
            do {
                inputGradients = try record.op.gradient(context)
                profile?.record("\(step.node.opType) (backward)", nanoseconds: DispatchTime.now().uptimeNanoseconds - start)
            } catch let error as KernelError {
                throw InterpreterError.nodeFailed(node: step.node.label, opType: step.node.opType,
                                                  reason: "gradient: \(error.message)")
            }
            for (position, slot) in step.inputSlots.enumerated() where wanted[position] {
                guard position < inputGradients.count, let gradient = inputGradients[position] else { continue }
                let shape = record.inputShapes[position] ?? []
                guard gradient.shape == shape else {
                    throw InterpreterError.nodeFailed(node: step.node.label, opType: step.node.opType, reason:
                        "gradient rule returned shape \(gradient.shape) for input \(position) of shape \(shape)")
                }
                let slot = slot!
                gradients[slot] = try gradients[slot].map { try addGradients($0, gradient) } ?? gradient
            }
        }
        var result: [String: Tensor] = [:]
        for (name, slot) in tape.trainable {
            let value = constants.first(where: { $0.slot == slot })?.tensor ?? tape.trainableValues[slot]
            result[name] = gradients[slot] ?? value.map {
                Tensor(shape: $0.shape, floats: [Float](repeating: 0, count: $0.count), dataType: $0.dataType)
            }
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

/// The record of a forward pass, which `backward` differentiates once.
public final class ForwardPass: @unchecked Sendable {
    /// The graph outputs the pass computed.
    public let outputs: [String: Tensor]
    private let session: Session
    private var tape: Tape?

    /// The op types of the nodes recorded for the backward pass, in graph order: those a trainable value
    /// reaches. Everything else ran without saving anything.
    public let recordedOperators: [String]

    /// Bytes of forward values the pass holds for `backward` (saved rule inputs and outputs, checkpointed blocks'
    /// and attention cores' inputs), each buffer counted once however many records share it; 0 after `backward`.
    public var keptBytes: Int { tape?.keptBytes ?? 0 }

    fileprivate init(outputs: [String: Tensor], session: Session, tape: Tape) {
        self.outputs = outputs
        self.session = session
        self.tape = tape
        recordedOperators = zip(session.nodes, tape.recorded).compactMap { $1 ? $0.opType : nil }
    }

    /// The gradients of a scalar loss with respect to every trainable value, given `seeds`: `dLoss/dOutput` for
    /// the graph outputs the loss reads (same shapes as the outputs). A trainable value the loss does not reach
    /// gets zeros. The saved activations are released as the pass goes, so it can run once.
    /// With a `profile`, adds each rule's wall time under `"<op type> (backward)"`.
    public func backward(_ seeds: [String: Tensor], profile: OpProfile? = nil) throws -> [String: Tensor] {
        guard let tape else {
            throw InterpreterError.invalidGraph(reason: "backward was already run on this forward pass")
        }
        self.tape = nil
        return try session.backward(tape, seeds: seeds, profile: profile)
    }
}

/// What a forward pass records for its backward pass.
final class Tape {

    /// Trainable value names and their slots.
    let trainable: [String: Int]
    /// Per slot: whether the value depends on a trainable one (and is floating-point).
    var requiresGradient: [Bool]
    /// Per step: the saved inputs and outputs of the nodes a trainable value reaches.
    var records: [SavedRecord?]
    /// Per step: whether the step is differentiated (its record saved now, or after its block is recomputed).
    var recorded: [Bool] = []
    /// The fed values of trainable graph inputs, to shape their zero gradients.
    var trainableValues: [Int: Tensor] = [:]
    /// With gradient checkpointing: the blocks, and per block the values it reads from before it, kept until its
    /// backward recomputes it.
    let checkpoints: CheckpointPlan?
    var segmentInputs: [Int: [(slot: Int, tensor: Tensor)]] = [:]
    /// The attention cores recomputed in the backward pass, and per core its inputs, kept until then.
    let attention: CheckpointPlan?
    var attentionInputs: [Int: [(slot: Int, tensor: Tensor)]] = [:]

    init(slotCount: Int, trainable: [String: Int], checkpoints: CheckpointPlan? = nil, attention: CheckpointPlan? = nil) {
        self.trainable = trainable
        self.checkpoints = checkpoints
        self.attention = attention
        requiresGradient = [Bool](repeating: false, count: slotCount)
        records = []
    }

    /// Bytes of the values held, each storage buffer once (see `ForwardPass.keptBytes`).
    var keptBytes: Int {
        var seen = Set<UnsafeRawPointer>()
        var bytes = 0
        func count(_ tensor: Tensor?) {
            guard let tensor else { return }
            let (address, size): (UnsafeRawPointer?, Int) = switch tensor.storage {
            case .float(let values): values.withUnsafeBytes { ($0.baseAddress, $0.count) }
            case .int64(let values): values.withUnsafeBytes { ($0.baseAddress, $0.count) }
            case .bool(let values): values.withUnsafeBytes { ($0.baseAddress, $0.count) }
            case .bytes(let values): values.withUnsafeBytes { ($0.baseAddress, $0.count) }
            }
            guard let address, seen.insert(address).inserted else { return }
            bytes += size
        }
        for case let record? in records {
            record.inputs.forEach(count)
            record.outputs.forEach(count)
        }
        for inputs in segmentInputs.values { inputs.forEach { count($0.tensor) } }
        for inputs in attentionInputs.values { inputs.forEach { count($0.tensor) } }
        return bytes
    }

    /// Before step `index` runs on `values`: keeps the inputs of the attention core starting there, and says
    /// whether the step saves what its rule needs (false inside a core, which is recomputed instead).
    func captureAttentionInputs(at index: Int, _ values: [Tensor?]) -> Bool {
        guard let attention else { return true }
        if let core = attention.segmentStarting[index] {
            attentionInputs[core] = attention.inputs[core].compactMap { slot in values[slot].map { (slot, $0) } }
        }
        return attention.segmentOfStep[index] == nil
    }

    /// Marks the float outputs of a node that reads a value requiring a gradient, and saves what its rule needs.
    /// Without `save` (a checkpointed block's first pass) only the marks are made.
    func record(step index: Int, _ node: Node, _ op: any Operator, _ inputSlots: [Int?], _ outputSlots: [Int?],
                _ inputs: [Tensor?], _ outputs: [Tensor], save: Bool = true) throws {
        if records.count <= index { records += [SavedRecord?](repeating: nil, count: index + 1 - records.count) }
        if recorded.count <= index { recorded += [Bool](repeating: false, count: index + 1 - recorded.count) }
        for (slot, input) in zip(inputSlots, inputs) {
            if let slot, trainable.values.contains(slot), let input { trainableValues[slot] = input }
        }
        let reached = inputSlots.contains { $0.map { requiresGradient[$0] } ?? false }
        guard reached else { return }
        let floatOutputs = outputSlots.enumerated().filter { $0.element != nil && outputs[$0.offset].storage.kind == .float }
        guard !floatOutputs.isEmpty else { return }  // integer or bool results (Shape, Equal, ...) carry no gradient
        guard let differentiable = op as? any DifferentiableOperator else {
            let through = zip(node.inputs, inputSlots).filter { $0.1.map { requiresGradient[$0] } ?? false }.map(\.0)
            throw InterpreterError.nodeFailed(node: node.label, opType: node.opType, reason:
                "has no gradient rule, but trainable values reach it through \(through.joined(separator: ", "))")
        }
        let wanted = inputSlots.map { $0.map { requiresGradient[$0] } ?? false }
        for (_, slot) in floatOutputs { requiresGradient[slot!] = true }
        recorded[index] = true
        if save { records[index] = SavedRecord(op: differentiable, inputs: inputs, outputs: outputs, wanted: wanted) }
    }
}
