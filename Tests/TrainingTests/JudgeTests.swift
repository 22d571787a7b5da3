import Foundation
import Interpreter
import TestSupport
import Tokenizers
@testable import Training
import XCTest

/// The judges of the iterative loop (`onnx-dpo judge`) and how their verdicts become pairs.
final class JudgeTests: XCTestCase {
    let model = fixturePath("models/llama-dynamo/model.onnx")
    let tokenizer = fixturePath("models/llama-dynamo/tokenizer.json")

    private func sample(_ completions: [String], line: Int = 1) -> SampledPrompt {
        SampledPrompt(line: line, prompt: "Q:", completions: completions)
    }

    // MARK: Pairs

    func testBestVsWorstPairsTheExtremesAndSkipsTies() {
        let made = Judging.pairs(sample(["a", "b", "c"]), Judgement(scores: [1, 3, 2]), selection: .bestVsWorst, margin: 0)
        XCTAssertEqual(made.map { [$0.chosen.plainText, $0.rejected.plainText] }, [["b", "a"]])
        XCTAssertEqual(made.first?.chosenScore, 3)
        XCTAssertNil(made.first?.preference, "a scoring judge gives hard labels")
        XCTAssertTrue(Judging.pairs(sample(["a", "b"]), Judgement(scores: [2, 2]), selection: .bestVsWorst, margin: 0).isEmpty)
        XCTAssertTrue(Judging.pairs(sample(["a", "b"]), Judgement(scores: [2, 2.5]), selection: .bestVsWorst, margin: 0.5).isEmpty,
                      "a difference equal to the margin is not more than it")
        XCTAssertTrue(Judging.pairs(sample(["same", "same"]), Judgement(scores: [1, 2]), selection: .bestVsWorst, margin: 0).isEmpty,
                      "identical completions carry no preference")
    }

    func testAllPairsAboveTheMarginHigherScoreChosen() {
        let made = Judging.pairs(sample(["a", "b", "c", "d"]), Judgement(scores: [1, 3, 2, 3]), selection: .all, margin: 0.5)
        XCTAssertEqual(made.map { $0.chosen.plainText + $0.rejected.plainText }, ["ba", "ca", "da", "bc", "dc"])
    }

    func testPairwiseVerdictsAreOrientedAndSoft() {
        let win = [[0.5, 0.2, 0.9], [0.8, 0.5, 0.55], [0.1, 0.45, 0.5]]
        let judgement = Judgement(scores: [0.55, 0.675, 0.275], winProbabilities: win)
        let all = Judging.pairs(sample(["a", "b", "c"]), judgement, selection: .all, margin: 0.1)
        XCTAssertEqual(all.map { $0.chosen.plainText + $0.rejected.plainText }, ["ba", "ac"], "b over c is within the margin")
        XCTAssertEqual(all.map(\.preference), [0.8, 0.9])
        let best = Judging.pairs(sample(["a", "b", "c"]), judgement, selection: .bestVsWorst, margin: 0)
        XCTAssertEqual(best.map { $0.chosen.plainText + $0.rejected.plainText }, ["bc"])
        XCTAssertEqual(best.first?.preference, 0.55)
    }

    // MARK: Confidence

    func testAgreementIsTheMeanUnigramF1WithTheOtherSamples() {
        let scores = ConfidenceJudge.agreementScores(["Paris is the capital.", "The capital is Paris!", "It is Lyon"])
        // Bags: {paris, is, the, capital} ×2 (F1 1 between them); "it is lyon" shares "is" with each: F1 2·1/7.
        XCTAssertEqual(scores[0], (1 + 2.0 / 7) / 2, accuracy: 1e-12)
        XCTAssertEqual(scores[1], (1 + 2.0 / 7) / 2, accuracy: 1e-12)
        XCTAssertEqual(scores[2], 2.0 / 7, accuracy: 1e-12)
    }

    /// The mean-log-prob judge scores a completion as training does: TRL's tokenisation (EOS appended) and its
    /// reference log-probs, which `tools/reference_dpo.py` recomputed in PyTorch for the fixture's pairs.
    func testMeanLogProbEqualsTRLsReferenceLogProbs() throws {
        struct Pair: Decodable {
            var prompt: String, chosen: String, rejected: String
            var chosen_ids: [Int], rejected_ids: [Int]
            var reference_logps: [String: Double]?
        }
        struct Tokenized: Decodable { var pairs: [Pair] }
        let reference = try JSONDecoder().decode(Tokenized.self, from: Data(contentsOf: URL(fileURLWithPath: fixturePath("trl/tokenized.json"))))
        let pairs = Array(reference.pairs.filter { $0.reference_logps != nil }.prefix(6))
        let samples = pairs.enumerated().map { SampledPrompt(line: $0 + 1, prompt: .text($1.prompt), completions: [$1.chosen, $1.rejected]) }
        var specification = JudgeSpecification(method: .confidence)
        specification.batchSize = 3  // rows of different lengths share a padded batch
        let judge = try specification.makeJudge(modelPath: model, tokenizerPath: tokenizer)
        let judgements = try judge.judge(samples, path: "samples.jsonl")
        for (pair, judgement) in zip(pairs, judgements) {
            XCTAssertEqual(judgement.scores[0], pair.reference_logps!["chosen"]! / Double(pair.chosen_ids.count), accuracy: 2e-4)
            XCTAssertEqual(judgement.scores[1], pair.reference_logps!["rejected"]! / Double(pair.rejected_ids.count), accuracy: 2e-4)
        }
    }

    // MARK: A command

    private func writeSamples(_ samples: [SampledPrompt]) throws -> String {
        let path = try temporaryDirectory(for: self).appendingPathComponent("samples.jsonl").path
        let encoder = JSONEncoder()
        let lines = try samples.map { String(decoding: try encoder.encode($0), as: UTF8.self) }
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testCommandScoresArriveInOrderAndPairsAreWritten() throws {
        let input = try writeSamples([sample(["short", "a longer one", "mid one"], line: 1),
                                      sample(["x", "x"], line: 2)])
        let output = (input as NSString).deletingLastPathComponent + "/pairs.jsonl"
        // Score = the length of the request line: the longest completion wins.
        let summary = try Judging.run(input: input, output: output, judge: CommandJudge(command: "awk '{ print length($0) }'"))
        XCTAssertEqual(summary.pairs, 1)
        XCTAssertEqual(summary.promptsWithoutPairs, 1)
        XCTAssertEqual(summary.completions, 5)
        let written = try JSONLines.read(JudgedPair.self, from: output)
        XCTAssertEqual(written.map { [$0.value.chosen.plainText, $0.value.rejected.plainText] }, [["a longer one", "short"]])
        // Train reads the file as explicit-prompt preference data.
        let dataset = try PreferenceDataset.load(path: output)
        XCTAssertEqual(dataset.pairs.first?.content, .explicit(prompt: "Q:", chosen: "a longer one", rejected: "short"))
    }

    func testCommandFailuresNameTheCommandAndTheLine() throws {
        let input = try writeSamples([sample(["a", "b"])])
        func message(_ command: String) -> String {
            do {
                _ = try CommandJudge(command: command).judge([sample(["a", "b"])], path: input)
                return "no error"
            } catch { return "\(error)" }
        }
        XCTAssertTrue(message("echo broken scorer >&2; exit 3").contains("exit status 3): broken scorer"), message("echo broken scorer >&2; exit 3"))
        XCTAssertTrue(message("echo 1").contains("printed 1 scores for 2 completions"), message("echo 1"))
        let garbage = message("printf '1\\nmaybe\\n'")
        XCTAssertTrue(garbage.contains("output line 2") && garbage.contains("completion 1") && garbage.contains("not JSON"), garbage)
        XCTAssertTrue(message("printf '1\\n{\"score\": \"high\"}\\n'").contains("'score' is not a number"))
        XCTAssertTrue(message("printf '1\\n{\"score\": 2}\\n'") == "no error")
    }

    func testNoUsablePairIsAnErrorAndWritesNothing() throws {
        let input = try writeSamples([sample(["same", "same"])])
        let output = (input as NSString).deletingLastPathComponent + "/pairs.jsonl"
        XCTAssertThrowsError(try Judging.run(input: input, output: output, judge: CommandJudge(command: "awk '{ print 1 }'"))) { error in
            XCTAssertTrue("\(error)".contains("no usable pair"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
    }

    func testASamplesLineWithoutCompletionsIsNamed() throws {
        let path = try temporaryDirectory(for: self).appendingPathComponent("samples.jsonl").path
        try "{\"line\": 1, \"prompt\": \"Q\", \"completions\": [\"a\"]}\n{\"line\": 2, \"prompt\": \"Q\"}\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try JSONLines.read(SampledPrompt.self, from: path)) { error in
            XCTAssertEqual("\(error)", "\(path), line 2: missing key 'completions'")
        }
    }

    // MARK: A judge model

    func testJudgeModelAveragesBothOrders() throws {
        var specification = JudgeSpecification(method: .judgeModel)
        specification.judgeModel = model
        let judge = try XCTUnwrap(try specification.makeJudge(modelPath: nil, tokenizerPath: nil) as? ModelJudge)
        let prompt = sample(["Paris.", "Lyon, I think.", "Paris."])
        let judgement = try XCTUnwrap(try judge.judge([prompt], path: "s.jsonl").first)
        let win = try XCTUnwrap(judgement.winProbabilities)
        // Each probability from the judge's own log-probs, recomputed here one row at a time.
        func firstWins(_ a: String, _ b: String) throws -> Double {
            let rows = try judge.choiceRows(after: judge.render(prompt: "Q:", first: a, second: b))
            let scores = try judge.scorer.score([rows[0]]) + judge.scorer.score([rows[1]])
            return 1 / (1 + exp(-(scores[0].sum - scores[1].sum)))
        }
        let expected = (try firstWins("Paris.", "Lyon, I think.") + 1 - (try firstWins("Lyon, I think.", "Paris."))) / 2
        XCTAssertEqual(win[0][1], expected, accuracy: 1e-9)
        XCTAssertEqual(win[1][0], 1 - expected, accuracy: 1e-9)
        XCTAssertEqual(win[0][2], 0.5, accuracy: 1e-9, "the same answer in both orders is a tie")
        XCTAssertEqual(judgement.scores[1], (win[1][0] + win[1][2]) / 2, accuracy: 1e-12)
    }

    func testJudgeTemplateWithoutAPlaceholderIsRefused() throws {
        let path = try temporaryDirectory(for: self).appendingPathComponent("judge.txt").path
        try "Question: {prompt}\nAnswer: {answer_1}\nBetter:".write(toFile: path, atomically: true, encoding: .utf8)
        var specification = JudgeSpecification(method: .judgeModel)
        specification.judgeModel = model
        specification.judgeTemplate = path
        XCTAssertThrowsError(try specification.makeJudge(modelPath: nil, tokenizerPath: nil)) { error in
            XCTAssertTrue("\(error)".contains("'\(path)'") && "\(error)".contains("{answer_2}"), "\(error)")
        }
    }

    func testRenderingReplacesPlaceholdersOnce() throws {
        var specification = JudgeSpecification(method: .judgeModel)
        specification.judgeModel = model
        let judge = try XCTUnwrap(try specification.makeJudge(modelPath: nil, tokenizerPath: nil) as? ModelJudge)
        let text = judge.render(prompt: "say {answer_2}", first: "one", second: "two")
        XCTAssertTrue(text.contains("Question: say {answer_2}\n\nAnswer 1: one\n\nAnswer 2: two\n"), text)
    }
}
