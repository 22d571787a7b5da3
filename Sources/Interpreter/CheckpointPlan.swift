/// Where gradient checkpointing cuts a graph: at the residual stream between transformer blocks, found from the
/// graph's structure (as LoRA targets are), never from names.
///
/// A boundary is a step that makes a value of the residual stream: a value that an `Add` reads (the next residual
/// sum) and something else reads too (the next block's normalisation), made by the embedding's `Gather`, an `Add`,
/// or a no-op `Cast` of one;
/// or an `Add` reading such a value (the last block's sum, which only the final norm reads); or a fused
/// `SkipLayerNormalization` / `SkipSimplifiedLayerNormalization` whose residual-sum output (3) the next one reads.
/// In a pre-norm transformer that is the embedding and two per layer, after attention and after the MLP. The steps strictly between two
/// consecutive boundaries form a segment; the steps before the first boundary (embeddings) and after the last (final
/// norm, LM head) are not checkpointed.
///
/// A segment's inputs are the values its steps read that a step before it produced or that were fed (initializers
/// are always at hand). Those are what the forward pass keeps: the residual stream at the boundary, and values
/// every block shares (the attention mask, rotary tables), each held once however many blocks read it.
public struct CheckpointPlan: Sendable {
    /// What the plans read of a session's step: its op type and the slots it reads and writes.
    typealias PlanStep = (opType: String, inputs: [Int?], outputs: [Int?])

    /// The steps of each segment, in order.
    public let segments: [ClosedRange<Int>]
    /// Per segment: the slots it reads from before it.
    let inputs: [[Int]]
    /// Per step: its segment, if checkpointed.
    let segmentOfStep: [Int?]
    let segmentStarting: [Int: Int]
    let segmentEnding: [Int: Int]

    /// The blocks between residual-stream boundaries (see the type's documentation).
    init(steps: [PlanStep], constantSlots: Set<Int>) {
        var readers: [Int: [Int]] = [:]
        var producer: [Int: Int] = [:]
        for (index, step) in steps.enumerated() {
            for case let slot? in step.inputs { readers[slot, default: []].append(index) }
            for case let slot? in step.outputs { producer[slot] = index }
        }
        func readerTypes(_ slot: Int) -> [String] { (readers[slot] ?? []).map { steps[$0].opType } }
        let isFusedResidual = { (opType: String) in opType.hasPrefix("Skip") && opType.hasSuffix("LayerNormalization") }
        // The residual stream: values an Add reads (the next residual sum) and something else reads too (the next
        // block's normalisation), made by the embedding, a residual sum or a no-op cast of one (TorchScript's
        // `.to(float32)`).
        var stream = Set<Int>()
        for (slot, made) in producer where ["Gather", "Add", "Cast", "Identity"].contains(steps[made].opType) {
            let types = readerTypes(slot)
            if types.contains("Add") && types.contains(where: { $0 != "Add" }) { stream.insert(slot) }
        }
        var boundaries: [Int] = []
        for (index, step) in steps.enumerated() {
            let makesStream = step.outputs.contains { $0.map(stream.contains) ?? false }
            let sumsStream = step.opType == "Add" && step.inputs.contains { $0.map(stream.contains) ?? false }
            let fused = isFusedResidual(step.opType) && step.outputs.count > 3
                && (step.outputs[3].map { readerTypes($0).contains(where: isFusedResidual) } ?? false)
            if makesStream || sumsStream || fused { boundaries.append(index) }
        }
        var segments: [ClosedRange<Int>] = []
        for (start, end) in zip(boundaries, boundaries.dropFirst()) where end > start + 1 {
            segments.append((start + 1)...end)
        }
        self.init(segments: segments, steps: steps, constantSlots: constantSlots, producer: producer)
    }

    /// `segments` (disjoint, ascending) with the values each reads from before it; `producer` maps a slot to the
    /// step writing it.
    private init(segments: [ClosedRange<Int>], steps: [PlanStep], constantSlots: Set<Int>, producer: [Int: Int]) {
        var segmentOfStep = [Int?](repeating: nil, count: steps.count)
        var inputs: [[Int]] = []
        for (number, segment) in segments.enumerated() {
            var read = Set<Int>()
            for index in segment {
                segmentOfStep[index] = number
                for case let slot? in steps[index].inputs where !constantSlots.contains(slot) {
                    if let made = producer[slot], made >= segment.lowerBound { continue }
                    read.insert(slot)
                }
            }
            inputs.append(read.sorted())
        }
        self.segments = segments
        self.inputs = inputs
        self.segmentOfStep = segmentOfStep
        segmentStarting = Dictionary(uniqueKeysWithValues: segments.enumerated().map { ($1.lowerBound, $0) })
        segmentEnding = Dictionary(uniqueKeysWithValues: segments.enumerated().map { ($1.upperBound, $0) })
    }

    /// Attention's score computation, recomputed in the backward pass instead of kept (as torch's memory-efficient
    /// scaled-dot-product attention does): one segment per `Softmax`, from the product that makes the scores
    /// (`Q·Kᵀ`, a `MatMul`, `FusedMatMul` or `GroupedMatMul`) through the elementwise steps between (scale, mask,
    /// soft-cap) to the product that reads the probabilities (`P·V`), no-op `Cast`s included. The segment's inputs are Q, K, V and
    /// the mask; the `[batch, heads, queries, keys]` scores, probabilities and their intermediates are made again
    /// just before the segment is differentiated, so a training step keeps none of them, for one more pass of the
    /// attention products. Found from the graph: every value between the two products is read once (by the next
    /// step of the chain) and is no graph output; the steps are contiguous in the session's order (exporters write
    /// them so; a core that is not is left alone).
    /// A core that is neither inside one of `blocks`' segments nor outside all of them is left alone, so that the
    /// two plans nest.
    static func attentionCores(steps: [PlanStep], constantSlots: Set<Int>, graphOutputSlots: Set<Int>,
                               nestingIn blocks: CheckpointPlan) -> CheckpointPlan {
        var readers: [Int: [Int]] = [:]
        var producer: [Int: Int] = [:]
        for (index, step) in steps.enumerated() {
            for case let slot? in step.inputs { readers[slot, default: []].append(index) }
            for case let slot? in step.outputs { producer[slot] = index }
        }
        let products: Set<String> = ["MatMul", "FusedMatMul", "GroupedMatMul"]
        // Steps allowed between the score product and Softmax (the scale, the mask, Gemma-2's soft-cap).
        let scoreSteps: Set<String> = ["Mul", "Div", "Add", "Sub", "Tanh", "Where", "Cast", "Identity", "Constant"]
        // The one step reading `slot`, when exactly one does and it is not a graph output.
        func soleReader(_ slot: Int) -> Int? {
            guard !graphOutputSlots.contains(slot), let reading = readers[slot], reading.count == 1 else { return nil }
            return reading[0]
        }
        var segments: [ClosedRange<Int>] = []
        for (index, step) in steps.enumerated() where step.opType == "Softmax" {
            // Back from the scores to the product that made them, through steps whose results only the chain reads.
            var chain: Set<Int> = [index]
            var pending = step.inputs.compactMap { $0 }
            var scoreProducts = 0
            while let slot = pending.popLast() {
                guard let made = producer[slot], let reader = soleReader(slot), chain.contains(reader) else { continue }
                if products.contains(steps[made].opType) {
                    chain.insert(made)
                    scoreProducts += 1
                } else if scoreSteps.contains(steps[made].opType) {
                    chain.insert(made)
                    pending += steps[made].inputs.compactMap { $0 }
                }
            }
            // Forward from the probabilities through no-op casts to the product that reads them as its first operand.
            var current = index, end: Int?
            while let output = steps[current].outputs.first ?? nil, let reader = soleReader(output) {
                if products.contains(steps[reader].opType) {
                    if steps[reader].inputs.first == output { end = reader }
                    break
                }
                guard ["Cast", "Identity"].contains(steps[reader].opType) else { break }
                current = reader
            }
            guard scoreProducts == 1, let end, let start = chain.min(), (end - start) < 64,
                  (segments.last?.upperBound ?? -1) < start,
                  (start...end).allSatisfy({ blocks.segmentOfStep[$0] == blocks.segmentOfStep[start] }) else { continue }
            segments.append(start...end)
        }
        return CheckpointPlan(segments: segments, steps: steps, constantSlots: constantSlots, producer: producer)
    }
}
