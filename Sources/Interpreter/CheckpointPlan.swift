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
    /// The steps of each segment, in order.
    public let segments: [ClosedRange<Int>]
    /// Per segment: the slots it reads from before it.
    let inputs: [[Int]]
    /// Per step: its segment, if checkpointed.
    let segmentOfStep: [Int?]
    let segmentStarting: [Int: Int]
    let segmentEnding: [Int: Int]

    init(steps: [(opType: String, inputs: [Int?], outputs: [Int?])], constantSlots: Set<Int>) {
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
}
