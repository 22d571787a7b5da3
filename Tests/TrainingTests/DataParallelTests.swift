import Distributed
import Foundation
import ONNXGraph
import TestSupport
import Training
import XCTest

/// The arithmetic that makes N processes equal one: shares of a batch, evaluated against the whole batch's totals,
/// sum to the whole batch's loss, metrics and gradients. (The processes themselves: interop/test_mpi.py.)
final class DataParallelTests: XCTestCase {
    // Five pairs: sequences [c0..c4, r0..r4], 6 positions, vocabulary 9, completions of different lengths.
    static let (pairs, length, vocabulary) = (5, 6, 9)
    static let completionStarts = [2, 3, 1, 4, 2, 3, 2, 5, 1, 2]
    static let completionEnds = [4, 6, 3, 6, 5, 6, 3, 6, 6, 4]

    static var ids: [Int64] { (0..<(2 * pairs * length)).map { Int64(($0 * 7 + 3) % vocabulary) } }
    static var mask: [Bool] {
        (0..<(2 * pairs)).flatMap { row in (0..<length).map { completionStarts[row] <= $0 && $0 < completionEnds[row] } }
    }

    static func logits(seed: Double) -> Tensor {
        let count = 2 * pairs * length * vocabulary
        return Tensor(shape: [2 * pairs, length, vocabulary], floats: (0..<count).map { Float(sin(Double($0) * 1.3 + seed) * 3) })
    }

    /// The log-probs of `pairs`' rows only (their chosen rows, then their rejected rows), as a process holding them
    /// computes them.
    static func share(_ shared: Range<Int>, of logits: Tensor) throws -> SequenceLogProbs {
        let rows = Array(shared) + shared.map { $0 + pairs }
        let values = logits.floats, ids = self.ids, mask = self.mask
        let block = length * vocabulary
        let cut = rows.flatMap { values[($0 * block)..<(($0 + 1) * block)] }
        return try SequenceLogProbs(
            logits: Tensor(shape: [rows.count, length, vocabulary], floats: cut),
            inputIDs: rows.flatMap { ids[($0 * length)..<(($0 + 1) * length)] },
            completionMask: rows.flatMap { mask[($0 * length)..<(($0 + 1) * length)] })
    }

    func testSharesEvaluatedAgainstTheBatchTotalsSumToTheWholeBatch() throws {
        let reference = try SequenceLogProbs(logits: Self.logits(seed: 1), inputIDs: Self.ids, completionMask: Self.mask)
        let policyLogits = Self.logits(seed: 2)
        let whole = try SequenceLogProbs(logits: policyLogits, inputIDs: Self.ids, completionMask: Self.mask)
        let totals = BatchTotals(whole)
        XCTAssertEqual(totals, BatchTotals(pairs: 5, chosenTokens: 2 + 3 + 2 + 2 + 3, rejectedTokens: 3 + 1 + 1 + 5 + 2))
        let objectives: [(String, DPOObjective)] = [
            ("sigmoid", DPOObjective(beta: 0.5)),
            ("ipo", DPOObjective(beta: 0.5, terms: [(.ipo, 1)])),
            ("robust", DPOObjective(beta: 0.5, terms: [(.robust, 1)], labelSmoothing: 0.2)),
            ("rpo: sigmoid + token-weighted sft", DPOObjective(beta: 0.5, terms: [(.sigmoid, 1), (.sft, 0.7)])),
            ("sigmoid_norm + hinge", DPOObjective(beta: 2, terms: [(.sigmoidNorm, 1), (.hinge, 0.5)])),
            ("simpo + token-weighted nll", {
                var simpo = DPOObjective(beta: 2, terms: [(.simpo, 1)], labelSmoothing: 0.1)
                simpo.cpoAlpha = 0.4
                return simpo
            }()),
        ]
        for (label, objective) in objectives {
            let expected = try objective.evaluate(policy: whole, referenceChosen: Array(reference.sums[..<5]),
                                                  referenceRejected: Array(reference.sums[5...]))
            // One process alone: passing its own totals changes nothing, bit for bit.
            let alone = try objective.evaluate(policy: whole, referenceChosen: Array(reference.sums[..<5]),
                                               referenceRejected: Array(reference.sums[5...]), totals: totals)
            XCTAssertEqual(alone.metrics, expected.metrics, label)
            XCTAssertEqual(alone.chosenSequenceGradients, expected.chosenSequenceGradients, label)
            for size in [2, 3, 4, 7] {
                var metrics = ObjectiveMetrics.zero
                var dChosen: [Double] = [], dRejected: [Double] = []
                for rank in 0..<size {
                    let shared = shareRange(count: 5, rank: rank, size: size)
                    guard !shared.isEmpty else { continue }
                    let part = try objective.evaluate(
                        policy: try Self.share(shared, of: policyLogits),
                        referenceChosen: Array(reference.sums[shared]),
                        referenceRejected: Array(reference.sums[shared.lowerBound + 5..<shared.upperBound + 5]),
                        totals: totals)
                    metrics = metrics.combined(with: part.metrics, +)
                    dChosen += part.chosenSequenceGradients
                    dRejected += part.rejectedSequenceGradients
                    XCTAssertEqual(part.chosenTokenGradient, expected.chosenTokenGradient, "\(label): -weight / N of the batch")
                }
                let context = "\(label), \(size) processes"
                for (name, keyPath) in [("loss", \ObjectiveMetrics.loss), ("rewards/margins", \.rewardsMargins),
                                        ("rewards/accuracies", \.rewardsAccuracies), ("logps/chosen", \.logpsChosen),
                                        ("logits/chosen", \.logitsChosen), ("logits/rejected", \.logitsRejected)] {
                    assertRelativelyClose(metrics[keyPath: keyPath], expected.metrics[keyPath: keyPath], "\(context): \(name)")
                }
                for (name, value) in expected.metrics.extra {
                    assertRelativelyClose(metrics.extra[name] ?? .nan, value, "\(context): \(name)")
                }
                for (got, want) in zip(dChosen + dRejected, expected.chosenSequenceGradients + expected.rejectedSequenceGradients) {
                    assertRelativelyClose(got, want, "\(context): dLoss/dπ")
                }
            }
        }
    }

    func testPerProcessMeansWouldNotEqualTheWholeBatch() throws {
        // The reason for BatchTotals: averaging each process's own token-weighted mean is not the batch's mean.
        let whole = try SequenceLogProbs(logits: Self.logits(seed: 2), inputIDs: Self.ids, completionMask: Self.mask)
        let objective = DPOObjective(terms: [(.sft, 1)])
        let zeros = [Double](repeating: 0, count: 5)
        let expected = try objective.evaluate(policy: whole, referenceChosen: zeros, referenceRejected: zeros).loss
        let halves = try [0..<2, 2..<5].map { range in
            try objective.evaluate(policy: try Self.share(range, of: Self.logits(seed: 2)),
                                   referenceChosen: Array(zeros[range]), referenceRejected: Array(zeros[range])).loss
        }
        XCTAssertGreaterThan(abs((halves[0] + halves[1]) / 2 - expected), 1e-3 * abs(expected))
    }

    func testSharesCoverABatchInOrderAndDifferByAtMostOne() {
        for count in [0, 1, 2, 3, 5, 8, 13] {
            for size in 1...6 {
                let shares = (0..<size).map { shareRange(count: count, rank: $0, size: size) }
                XCTAssertEqual(shares.flatMap { Array($0) }, Array(0..<count), "\(count) over \(size)")
                let sizes = shares.map(\.count)
                XCTAssertLessThanOrEqual(sizes.max()! - sizes.min()!, 1, "\(count) over \(size)")
            }
        }
    }

    func testSingleProcessCollectivesReturnTheirInput() throws {
        let alone = SingleProcess()
        var doubles = [1.5, -2.25]
        try alone.allreduceSum(&doubles)
        XCTAssertEqual(doubles, [1.5, -2.25])
        XCTAssertEqual(try alone.allgather([3.0, 4.0]), [[3.0, 4.0]])
        XCTAssertEqual(try alone.broadcastFromRoot([7.0]), [7.0])
        XCTAssertEqual(alone.share(of: 5), 0..<5)
    }

    func testThreadsDefaultToTheCoresOverTheLocalProcesses() {
        XCTAssertEqual(World.defaultThreads(cores: 8, environment: [:]), 8)
        XCTAssertEqual(World.defaultThreads(cores: 8, environment: ["OMPI_COMM_WORLD_LOCAL_SIZE": "2"]), 4)
        XCTAssertEqual(World.defaultThreads(cores: 2, environment: ["OMPI_COMM_WORLD_LOCAL_SIZE": "3"]), 1)
        XCTAssertTrue(try World.join(collectiveTimeout: 1, environment: ["OMPI_COMM_WORLD_SIZE": "1"]) is SingleProcess)
    }

    func testWorldReportGroupsRanksByHost() throws {
        let report = WorldReport(processes: [
            .init(rank: 0, host: "node-a", threads: 2), .init(rank: 1, host: "node-a", threads: 2),
            .init(rank: 2, host: "node-b", threads: 4),
        ])
        XCTAssertEqual(report.description, "world: 3 processes on 2 hosts\n  node-a: ranks 0-1, 2 threads each\n  node-b: rank 2, 4 threads each")
        let gathered = try WorldReport.gather(SingleProcess(), threads: 3, host: "here")
        XCTAssertEqual(gathered.processes, [.init(rank: 0, host: "here", threads: 3)])
    }

    func testWorldSizeIsWrittenOnlyForSeveralProcesses() throws {
        let encoder = JSONEncoder()
        let alone = StepMetrics(objective: .zero, gradNorm: 1, learningRate: 1, step: 1, epoch: 1, tokensPerSecond: 1, etaSeconds: 0)
        let aloneObject = try JSONSerialization.jsonObject(with: encoder.encode(alone)) as! [String: Any]
        XCTAssertNil(aloneObject["world_size"], "a one-process row keeps TRL's keys")
        XCTAssertEqual(aloneObject.count, 15)
        var shared = alone
        shared.worldSize = 4
        let object = try JSONSerialization.jsonObject(with: encoder.encode(shared)) as! [String: Any]
        XCTAssertEqual(object["world_size"] as? Int, 4)
        XCTAssertEqual(try JSONDecoder().decode(StepMetrics.self, from: encoder.encode(shared)), shared)
        let eval = EvalMetrics(objective: .zero, step: 2, worldSize: 2)
        let evalObject = try JSONSerialization.jsonObject(with: encoder.encode(eval)) as! [String: Any]
        XCTAssertEqual(evalObject["world_size"] as? Int, 2)
        XCTAssertEqual(try JSONDecoder().decode(EvalMetrics.self, from: encoder.encode(eval)), eval)
    }

    private func assertRelativelyClose(_ actual: Double, _ expected: Double, _ message: String,
                                       file: StaticString = #filePath, line: UInt = #line) {
        let tolerance = 1e-12 * max(1, abs(expected))
        XCTAssertLessThanOrEqual(abs(actual - expected), tolerance, "\(message): \(actual) vs \(expected)", file: file, line: line)
    }
}
