import Adapters
import Distributed
import ONNXGraph

// Data parallelism over a `Communicator`: each process takes a contiguous share of every global batch, and the
// shares' gradients and metrics (computed against the whole batch's `BatchTotals`) are summed over the processes, so
// a step equals the one-process step up to float summation order. Alone (`SingleProcess`) every function here
// returns its input.

/// A process's rows of a global batch of pairs.
struct BatchShare {
    /// Positions in the global batch: rows `pairs` are the chosen rows taken, `B + pairs` the rejected ones.
    var pairs: Range<Int>
    /// The global batch's pair count B.
    var batchPairs: Int
    var isWhole: Bool { pairs.count == batchPairs }
    /// The rows of the batch taken: the pairs' chosen rows, then their rejected rows.
    var rows: [Int] { Array(pairs) + pairs.map { $0 + batchPairs } }
}

extension Communicator {
    /// This process's share of a global batch of `pairs` pairs.
    func share(ofBatch pairs: Int) -> BatchShare {
        BatchShare(pairs: share(of: pairs), batchPairs: pairs)
    }

    /// Sums the processes' gradients of `parameters` (a process with no rows contributes zeros), as one float32
    /// allreduce in name order.
    func sumGradients(_ gradients: inout [String: Tensor], of parameters: [String: Tensor]) throws {
        guard size > 1 else { return }
        let names = parameters.keys.sorted()
        var flat: [Float] = []
        flat.reserveCapacity(names.reduce(0) { $0 + parameters[$1]!.count })
        for name in names {
            flat += gradients[name]?.floats ?? [Float](repeating: 0, count: parameters[name]!.count)
        }
        try allreduceSum(&flat)
        var offset = 0
        for name in names {
            let count = parameters[name]!.count
            gradients[name] = Tensor(shape: parameters[name]!.shape, floats: Array(flat[offset..<(offset + count)]))
            offset += count
        }
    }

    /// The sum of the processes' metric shares.
    func sum(_ metrics: ObjectiveMetrics) throws -> ObjectiveMetrics {
        guard size > 1 else { return metrics }
        // Every process holds the same `extra` names (`ObjectiveMetrics.zero(extra:)`), summed in sorted order.
        let extraNames = metrics.extra.keys.sorted()
        var values = ObjectiveMetrics.fields.map { metrics[keyPath: $0.keyPath] } + extraNames.map { metrics.extra[$0]! }
        try allreduceSum(&values)
        var result = metrics
        for (index, field) in ObjectiveMetrics.fields.enumerated() { result[keyPath: field.keyPath] = values[index] }
        for (index, name) in extraNames.enumerated() { result.extra[name] = values[ObjectiveMetrics.fields.count + index] }
        return result
    }
}

extension Communicator {
    /// Every process's `values` of consecutive batches of `batchSizes` pairs (a value per pair of its share of each
    /// batch, batch after batch) put back in the order of the pairs.
    func gatherShares(_ values: [Double], batchSizes: [Int]) throws -> [Double] {
        guard size > 1 else { return values }
        let gathered = try allgather(values)
        var cursors = [Int](repeating: 0, count: size)
        var ordered: [Double] = []
        ordered.reserveCapacity(batchSizes.reduce(0, +))
        for pairs in batchSizes {
            for rank in 0..<size {
                let count = shareRange(count: pairs, rank: rank, size: size).count
                ordered += gathered[rank][cursors[rank]..<(cursors[rank] + count)]
                cursors[rank] += count
            }
        }
        return ordered
    }
}

extension PreferenceBatch {
    /// `share`'s rows of this batch (its pairs' chosen rows, then their rejected rows), padded to this batch's
    /// length, so each row is computed exactly as in the whole batch.
    init(rowsOf share: BatchShare, in batch: PreferenceBatch) {
        let rows = share.rows
        func cut(_ values: [Int]) -> [Int] { rows.flatMap { batch.row($0, of: values) } }
        pairCount = share.pairs.count
        sequenceLength = batch.sequenceLength
        inputIDs = cut(batch.inputIDs)
        attentionMask = cut(batch.attentionMask)
        completionMask = cut(batch.completionMask)
        lossMask = cut(batch.lossMask)
        targetIDs = cut(batch.targetIDs)
        padTokenID = batch.padTokenID
        lines = Array(batch.lines[share.pairs])
    }
}

extension AdaptedModel {
    /// The adapters' dropout masks for `share`'s rows of `batch`: drawn for the whole batch, as one process draws
    /// them, then cut to the share's chosen and rejected rows. Masks without a row axis (`[1, in]`: no dropout) are
    /// returned as they are.
    func dropoutFeeds(share: BatchShare, of batch: PreferenceBatch, generator: inout SeededGenerator?) -> [String: Tensor] {
        let masks = dropoutFeeds(rows: batch.rowCount, tokens: batch.sequenceLength, generator: &generator)
        guard !share.isWhole else { return masks }
        let rows = share.rows
        return masks.mapValues { mask in
            guard mask.rank == 3 else { return mask }
            let block = mask.shape[1] * mask.shape[2]
            let values = mask.floats
            return Tensor(shape: [rows.count, mask.shape[1], mask.shape[2]],
                          floats: rows.flatMap { values[($0 * block)..<(($0 + 1) * block)] })
        }
    }
}
