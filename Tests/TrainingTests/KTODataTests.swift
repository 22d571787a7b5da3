import Training
import Tokenizers
import Foundation
import TestSupport
import XCTest

/// Unpaired (KTO) data: records, their errors, tokenisation and the KL completions.
final class KTODataTests: XCTestCase {
    func write(_ text: String) throws -> String {
        let path = try temporaryDirectory(for: self).appendingPathComponent("rows.jsonl").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func message(_ body: () throws -> Void) -> String {
        do { try body() } catch { return "\(error)" }
        return "no error"
    }

    func testRecordsAreRead() throws {
        let path = try write("""
            {"prompt": "Q:", "completion": " yes", "label": true}

            {"prompt": "Q:", "completion": " no", "label": false}
            """)
        let dataset = try UnpairedDataset.load(path: path)
        XCTAssertEqual(dataset.examples, [
            UnpairedExample(prompt: "Q:", completion: " yes", isDesirable: true, line: 1),
            UnpairedExample(prompt: "Q:", completion: " no", isDesirable: false, line: 3),
        ])
    }

    func testALabelThatIsNotABooleanNamesTheFileAndLine() throws {
        for (label, found) in [("1", "a number"), ("\"true\"", "a string"), ("null", "null")] {
            let path = try write("""
                {"prompt": "Q:", "completion": " yes", "label": true}
                {"prompt": "Q:", "completion": " no", "label": \(label)}
                """)
            XCTAssertEqual(message { _ = try UnpairedDataset.load(path: path) },
                           "\(path), line 2: 'label' must be a boolean (true: a desirable completion, false: an "
                           + "undesirable one), found \(found)")
        }
        let missing = try write(#"{"prompt": "Q:", "completion": " yes"}"#)
        XCTAssertEqual(message { _ = try UnpairedDataset.load(path: missing) }, "\(missing), line 1: missing key 'label'")
    }

    func testOtherBadRecordsNameTheFileAndLine() throws {
        let path = try write(#"{"prompt": "Q:", "completion": 3, "label": true}"#)
        XCTAssertEqual(message { _ = try UnpairedDataset.load(path: path) },
                       "\(path), line 1: 'completion' must be a string, found a number")
        let pretokenized = try write(#"{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3]}"#)
        assertThrows(["\(pretokenized), line 1", "pre-tokenised pairs cannot be unpaired"]) {
            try UnpairedDataset.load(path: pretokenized)
        }
        let broken = try write("{\"prompt\": \"Q:\", \"completion\": \" a\", \"label\": true}\n{\"prompt\"")
        assertThrows(["\(broken), line 2", "not valid JSON"]) { try UnpairedDataset.load(path: broken) }
        let chat = try write(#"{"prompt": [{"role": "user", "content": "Q"}], "completion": " a", "label": true}"#)
        assertThrows(["line 1", "chat messages"]) { try UnpairedDataset.load(path: chat) }
    }

    /// TRL's `unpair_preference_dataset`: per chunk of pairs, the chosen completions (desirable), then the rejected.
    func testPairsAreUnpairedAsTRLUnpairsThem() throws {
        let path = try write("""
            {"prompt": "Q1:", "chosen": " a", "rejected": " b"}
            {"prompt": "Q2:", "chosen": " c", "rejected": " d"}
            """)
        XCTAssertEqual(try UnpairedDataset.load(path: path).examples, [
            UnpairedExample(prompt: "Q1:", completion: " a", isDesirable: true, line: 1),
            UnpairedExample(prompt: "Q2:", completion: " c", isDesirable: true, line: 2),
            UnpairedExample(prompt: "Q1:", completion: " b", isDesirable: false, line: 1),
            UnpairedExample(prompt: "Q2:", completion: " d", isDesirable: false, line: 2),
        ])
        let implicit = try write(#"{"chosen": "Q: yes", "rejected": "Q: no"}"#)
        XCTAssertEqual(try UnpairedDataset.load(path: implicit).examples.map(\.prompt), ["Q:", "Q:"])
        XCTAssertEqual(try UnpairedDataset.load(path: implicit).examples.map(\.completion), [" yes", " no"])
        let pairs = (0..<1001).map { PreferencePair(content: .explicit(prompt: "Q\($0)", chosen: "c", rejected: "r"), line: $0 + 1) }
        let unpaired = try UnpairedDataset(unpairing: PreferenceDataset(path: "p", format: .explicit, pairs: pairs))
        XCTAssertEqual(unpaired.examples.map(\.isDesirable), [Bool](repeating: true, count: 1000)
            + [Bool](repeating: false, count: 1000) + [true, false], "chunks of 1000 pairs")
    }

    func testAnEmptyDatasetIsAnError() throws {
        let path = try write("\n\n")
        XCTAssertEqual(message { _ = try UnpairedDataset.load(path: path) }, "\(path): no preference pairs: the file has no records")
        assertThrows(["no such file"]) { try UnpairedDataset.load(path: path + ".missing") }
    }

    func testKLCompletionsRotateWithinBlocksAndLongPromptsAreDropped() throws {
        let tokenizer = try Tokenizer(path: fixturePath("models/llama-dynamo/tokenizer.json"))
        let dataset = UnpairedDataset(path: "rows.jsonl", examples: (0..<5).map {
            UnpairedExample(prompt: "Question \($0):", completion: " answer \($0)", isDesirable: $0 % 2 == 0, line: $0 + 1)
        })
        let rows = try dataset.tokenized(with: tokenizer, klBlock: 2)
        let completions = rows.rows.map(\.chosenIDs)
        // Blocks [0, 1], [2, 3], [4]: (x₁, y₂), (x₂, y₁); (x₃, y₄), (x₄, y₃); (x₅, y₅).
        XCTAssertEqual(rows.rows.map(\.rejectedIDs), [completions[1], completions[0], completions[3], completions[2], completions[4]])
        XCTAssertEqual(rows.labels, [true, false, true, false, true])
        XCTAssert(completions.allSatisfy { $0.last == tokenizer.eosTokenID }, "EOS appended to every completion")
        XCTAssertEqual(try dataset.tokenized(with: tokenizer, klBlock: nil).rows.map(\.rejectedIDs), [[], [], [], [], []])

        let promptLength = rows.rows[0].promptIDs.count
        let long = UnpairedDataset(path: "rows.jsonl", examples: [
            UnpairedExample(prompt: "Question 0:", completion: " a", isDesirable: true, line: 1),
            UnpairedExample(prompt: "Question 0: and a much longer prompt", completion: " b", isDesirable: false, line: 2),
        ])
        let kept = try long.tokenized(with: tokenizer, options: PreferenceDataOptions(maxLength: promptLength + 1), klBlock: 2)
        XCTAssertEqual(kept.droppedLines, [2])
        XCTAssertEqual(kept.rows[0].rejectedIDs, kept.rows[0].chosenIDs, "a block of one row is its own KL completion")
        assertThrows(["no preference pairs", "--max-length"]) {
            try long.tokenized(with: tokenizer, options: PreferenceDataOptions(maxLength: 1), klBlock: 2)
        }
    }

    func testKTOOptionsAreChecked() throws {
        var options = DPOTrainingOptions(modelPath: "m", tokenizerPath: "t", dataPath: "d", outputDirectory: "o")
        options.kto = KTOObjective()
        options.shuffle = false
        options.batchSize = 1
        assertThrows(["batchSize", "more than 1"]) { try options.validate() }
        options.batchSize = 4
        options.shuffle = true
        assertThrows(["shuffle", "sequential"]) { try options.validate() }
        options.kto = KTOObjective(lossType: .apoZeroUnpaired)
        options.batchSize = 1
        XCTAssertNoThrow(try options.validate(), "apo_zero_unpaired has no KL term: any batch size and order")
        options.kto = KTOObjective(undesirableWeight: -1)
        options.shuffle = false
        options.batchSize = 2
        assertThrows(["kto.undesirableWeight"]) { try options.validate() }
    }
}
