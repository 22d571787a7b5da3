import ONNXGraph
import Interpreter

/// Seeded, platform-independent orders over a dataset's pairs: the held-out eval split and the order of each epoch.
///
/// Randomness: SplitMix64 (`SeededGenerator`), the same sequence on every platform and Swift version, with its own
/// bounded draw (Lemire's multiply-shift with rejection) rather than the standard library's, whose algorithm is not
/// promised to stay the same. A permutation is a Fisher–Yates shuffle: for `i` from `n - 1` down to 1, swap `i` with
/// a uniform `j` in `0...i`. The split and the epochs draw from separate streams, each seeded by mixing `seed` with
/// a stream constant (and the epoch) through SplitMix64's output function, so changing the eval fraction does not
/// change the epoch orders and epoch `k`'s order does not depend on how many epochs ran before it (a resumed run
/// can recompute it).
public enum PreferenceDataOrder {
    /// The indices `0..<count` split into training and eval sets: `ceil(evalFraction · count)` indices (as
    /// `datasets`' `train_test_split` rounds a fractional test size) chosen by a seeded permutation go to eval; each
    /// set is returned in ascending (file) order. `evalFraction` must be in [0, 1) and leave at least one training
    /// pair.
    public static func split(count: Int, evalFraction: Double, seed: UInt64) throws(TrainingError)
        -> (train: [Int], eval: [Int])
    {
        guard evalFraction >= 0, evalFraction < 1 else {
            throw .invalidDataOption(option: "evalFraction", reason: "must be in [0, 1), got \(evalFraction)")
        }
        let evalCount = Int((evalFraction * Double(count)).rounded(.up))
        guard evalCount < count else {
            throw .invalidDataOption(
                option: "evalFraction",
                reason: "\(evalFraction) of \(count) pairs leaves no pair to train on")
        }
        let order = permutation(count: count, seed: streamSeed(seed, stream: 0x5350_4C49_5400_0000, index: 0))
        return (train: order[evalCount...].sorted(), eval: order[..<evalCount].sorted())
    }

    /// The order in which epoch `epoch` (0-based) visits `0..<count`, for seed `seed`.
    public static func epochOrder(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        permutation(count: count, seed: streamSeed(seed, stream: 0x4550_4F43_4800_0000, index: UInt64(epoch)))
    }

    /// A Fisher–Yates permutation of `0..<count` driven by SplitMix64 seeded with `seed`.
    public static func permutation(count: Int, seed: UInt64) -> [Int] {
        var generator = SeededGenerator(seed: seed)
        var order = Array(0..<count)
        var i = count - 1
        while i > 0 {
            let j = Int(boundedDraw(UInt64(i + 1), using: &generator))
            order.swapAt(i, j)
            i -= 1
        }
        return order
    }

    /// A uniform draw in `0..<bound` (`bound > 0`): the high word of `next() · bound`, redrawn while the low word
    /// falls in the biased range (Lemire 2019, "Fast random integer generation in an interval").
    static func boundedDraw(_ bound: UInt64, using generator: inout SeededGenerator) -> UInt64 {
        var product = generator.next().multipliedFullWidth(by: bound)
        if product.low < bound {
            let threshold = (0 &- bound) % bound
            while product.low < threshold { product = generator.next().multipliedFullWidth(by: bound) }
        }
        return product.high
    }

    /// SplitMix64's output function applied to `seed ^ stream` advanced `index + 1` steps: distinct, well-mixed
    /// seeds for independent streams.
    static func streamSeed(_ seed: UInt64, stream: UInt64, index: UInt64) -> UInt64 {
        var z = (seed ^ stream) &+ (index &+ 1) &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension PreferenceDataset {
    /// The training and eval datasets of `PreferenceDataOrder.split` (pairs keep their file order and lines).
    /// An `evalFraction` of 0 gives an empty eval dataset.
    public func split(evalFraction: Double, seed: UInt64) throws(TrainingError)
        -> (train: PreferenceDataset, eval: PreferenceDataset)
    {
        let (train, eval) = try PreferenceDataOrder.split(count: pairs.count, evalFraction: evalFraction, seed: seed)
        return (
            PreferenceDataset(path: path, format: format, pairs: train.map { pairs[$0] }),
            PreferenceDataset(path: path, format: format, pairs: eval.map { pairs[$0] }))
    }
}
