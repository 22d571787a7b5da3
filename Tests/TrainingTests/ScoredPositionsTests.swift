import Training
import Adapters
import Tokenizers
import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import XCTest

/// Logits computed only at scored positions give the same completion log-probabilities as full logits.
final class ScoredPositionsTests: XCTestCase {
    func testEveryFixtureScoresTheSameWithTheRewrite() throws {
        for fixture in try ExportFixture.all() {
            let (model, feeds) = (try fixture.model(), try fixture.inputs())
            let rewritten = try XCTUnwrap(ScoredPositions.rewrite(model), "\(fixture.name): output projection found")
            let ids = try XCTUnwrap(feeds["input_ids"]).int64s
            let mask = try XCTUnwrap(feeds["attention_mask"]).int64s
            let (sequences, length) = (feeds["input_ids"]!.shape[0], feeds["input_ids"]!.shape[1])
            // Score every real token after the first, as if the whole text were a completion.
            let scored = (0..<ids.count).map { $0 % length > 0 && mask[$0] == 1 }
            let full = try SequenceLogProbs(logits: try Session(model: model).run(feeds)["logits"]!,
                                            inputIDs: ids, completionMask: scored)
            let rows = SequenceLogProbs.scoredRows(completionMask: scored, sequences: sequences, length: length)
            var compactFeeds = feeds
            compactFeeds[ScoredPositions.inputName] = Tensor(shape: [rows.count], int64s: rows)
            let logits = try Session(model: rewritten).run(compactFeeds)["logits"]!
            XCTAssertEqual(logits.shape[0], rows.count, "\(fixture.name): one logits row per scored token")
            let compact = try SequenceLogProbs(scoredLogits: logits, sequences: sequences, length: length,
                                               inputIDs: ids, completionMask: scored)
            for (a, b) in zip(compact.sums, full.sums) {
                XCTAssertEqual(a, b, accuracy: 1e-4 + 1e-5 * abs(b), fixture.name)
            }
        }
    }
}
