import Foundation
import ONNXGraph
import TestSupport
@testable import Training
import XCTest

/// `sample` and the iterative loop (`iterate`) on the tiny Llama fixture.
final class IterativeDPOTests: XCTestCase {
    let model = fixturePath("models/llama-dynamo/model.onnx")
    let tokenizer = fixturePath("models/llama-dynamo/tokenizer.json")

    /// The first `count` prompts of the DPO fixture as a prompts file.
    private func prompts(_ count: Int, in folder: URL) throws -> String {
        let lines = try String(contentsOfFile: fixturePath("dpo/preferences.jsonl"), encoding: .utf8)
            .split(separator: "\n").prefix(count)
        let path = folder.appendingPathComponent("prompts.jsonl").path
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    private func samplingRun(_ folder: URL, prompts: String) -> SamplingRun {
        var run = SamplingRun(modelPath: model, tokenizerPath: tokenizer, promptsPath: prompts,
                              outputPath: folder.appendingPathComponent("samples.jsonl").path)
        run.completionsPerPrompt = 3
        run.generation = GenerationOptions(maxNewTokens: 6, sampling: .sampling(temperature: 1.5), seed: 7)
        return run
    }

    func testSamplingIsSeededPerPromptAndResumesAfterAKill() throws {
        let folder = try temporaryDirectory(for: self)
        let run = samplingRun(folder, prompts: try prompts(3, in: folder))
        let summary = try Sampling.run(run)
        XCTAssertEqual(summary.prompts, 3)
        XCTAssertEqual(summary.completions, 9)
        let whole = try JSONLines.read(SampledPrompt.self, from: run.outputPath).map(\.value)
        XCTAssertEqual(whole.map(\.line), [1, 2, 3])
        XCTAssertTrue(whole.allSatisfy { Set($0.completions).count > 1 }, "temperature 1.5 gives different completions: \(whole)")

        // A run killed after the first prompt, with half of the second prompt's line written.
        let encoder = JSONEncoder()
        var partial = try encoder.encode(whole[0]) + Data("\n".utf8)
        partial += try encoder.encode(whole[1]).prefix(20)
        try FileManager.default.removeItem(atPath: run.outputPath)
        try partial.write(to: URL(fileURLWithPath: run.outputPath + ".partial"))
        var resumed = run
        resumed.resume = true
        XCTAssertEqual(try Sampling.run(resumed).resumedPrompts, 1)
        XCTAssertEqual(try JSONLines.read(SampledPrompt.self, from: run.outputPath).map(\.value), whole,
                       "a resumed run samples what an uninterrupted one did")
        XCTAssertFalse(FileManager.default.fileExists(atPath: run.outputPath + ".partial"))
    }

    func testAPartialFileOfOtherPromptsIsRefused() throws {
        let folder = try temporaryDirectory(for: self)
        var run = samplingRun(folder, prompts: try prompts(2, in: folder))
        try Data("{\"completions\": [\"x\"], \"line\": 1, \"prompt\": \"another prompt\"}\n".utf8)
            .write(to: URL(fileURLWithPath: run.outputPath + ".partial"))
        run.resume = true
        XCTAssertThrowsError(try Sampling.run(run)) { error in
            XCTAssertTrue("\(error)".contains("is not the sample of prompt 1"), "\(error)")
        }
    }

    private func iteration(_ folder: URL, judge: JudgeSpecification, rounds: Int) throws -> IterationOptions {
        var options = IterationOptions(modelPath: model, tokenizerPath: tokenizer, promptsPath: try prompts(4, in: folder),
                                       outputDirectory: folder.appendingPathComponent("loop").path, rounds: rounds, judge: judge)
        options.completionsPerPrompt = 3
        options.generation = GenerationOptions(maxNewTokens: 6, sampling: .sampling(temperature: 1.5), seed: 3)
        options.training.batchSize = 2
        options.training.maxSteps = 2
        options.training.learningRate = 5e-3
        options.training.tensorBoard = false
        return options
    }

    /// Two rounds judged by the policy's confidence: round 2 samples from round 1's merged model, trains on it as the
    /// reference, and the rounds' files are all there.
    func testTwoRoundsByConfidence() throws {
        let folder = try temporaryDirectory(for: self)
        let options = try iteration(folder, judge: JudgeSpecification(method: .confidence), rounds: 2)
        var stages: [String] = []
        let summaries = try IterativeDPO(options: options).run { event in
            if case .stage(let round, let name, let skipped) = event { stages.append("\(round):\(name)\(skipped ? " skipped" : "")") }
        }
        XCTAssertEqual(stages, ["1:sample", "1:judge", "1:train", "1:merge", "2:sample", "2:judge", "2:train", "2:merge"])
        XCTAssertEqual(summaries.map(\.round), [1, 2])
        XCTAssertEqual(summaries[0].policy, model)
        XCTAssertEqual(summaries[1].policy, summaries[0].mergedModel)
        for summary in summaries {
            XCTAssertGreaterThan(summary.judge.pairs, 0)
            XCTAssertEqual(summary.samples.completions, 12)
            XCTAssertEqual(summary.trainingSteps, 2)
            XCTAssertTrue(summary.rewardAccuracy >= 0 && summary.rewardAccuracy <= 1)
        }
        // Round 1's merged model differs from the base in the adapted weights only, and runs.
        let base = try Model.load(path: model), merged = try Model.load(path: summaries[0].mergedModel)
        XCTAssertEqual(base.graph.nodes.count, merged.graph.nodes.count)
        var changed: [String] = []
        for initializer in base.graph.initializers where initializer.dataType == .float {
            let other = try XCTUnwrap(merged.graph.initializers.first { $0.name == initializer.name })
            if try base.loadTensor(initializer).floats != merged.loadTensor(other).floats { changed.append(initializer.name) }
        }
        XCTAssertEqual(changed.count, 4, "q and v of 2 layers merged: \(changed)")
        let written = try JSONDecoder().decode([RoundSummary].self, from: Data(contentsOf: URL(fileURLWithPath: options.outputDirectory + "/summary.json")))
        XCTAssertEqual(written, summaries)

        // Run again: nothing is redone. With a lost merge and round summary, only the merge runs again.
        stages = []
        try FileManager.default.removeItem(atPath: options.outputDirectory + "/round-2/round.json")
        try FileManager.default.removeItem(atPath: options.outputDirectory + "/round-2/model.onnx")
        let again = try IterativeDPO(options: options).run { event in
            if case .stage(let round, let name, let skipped) = event { stages.append("\(round):\(name)\(skipped ? " skipped" : "")") }
        }
        XCTAssertEqual(stages, ["1:round skipped", "2:sample skipped", "2:judge skipped", "2:train skipped", "2:merge"])
        XCTAssertEqual(again, summaries)
    }

    /// Two rounds judged by an external command (the completion's length in characters: longer is better), best
    /// against worst.
    func testTwoRoundsByCommand() throws {
        let folder = try temporaryDirectory(for: self)
        var judge = JudgeSpecification(method: .command)
        judge.command = "awk '{ print length($0) }'"
        let summaries = try IterativeDPO(options: try iteration(folder, judge: judge, rounds: 2)).run()
        XCTAssertEqual(summaries.count, 2)
        for summary in summaries {
            let pairs = try JSONLines.read(JudgedPair.self, from: folder.appendingPathComponent("loop/round-\(summary.round)/pairs.jsonl").path)
            XCTAssertEqual(pairs.count, summary.judge.pairs)
            XCTAssertLessThanOrEqual(pairs.count, 4, "best against worst: one pair per prompt at most")
            XCTAssertTrue(pairs.allSatisfy { $0.value.chosenScore > $0.value.rejectedScore })
        }
    }

    func testARoundWithoutPairsNamesTheRoundAndKeepsItsSamples() throws {
        let folder = try temporaryDirectory(for: self)
        var judge = JudgeSpecification(method: .command)
        judge.command = "awk '{ print 1 }'"  // every completion ties
        let options = try iteration(folder, judge: judge, rounds: 1)
        XCTAssertThrowsError(try IterativeDPO(options: options).run()) { error in
            XCTAssertTrue("\(error)".hasPrefix("round 1 ("), "\(error)")
            XCTAssertTrue("\(error)".contains("no usable pair"), "\(error)")
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: options.outputDirectory + "/round-1/samples.jsonl"))
    }

    /// Chat prompts: rendered with the chat template when sampled, kept as messages, paired as conversational records
    /// that training renders as TRL does.
    func testAChatRoundTrainsOnConversationalPairs() throws {
        let folder = try temporaryDirectory(for: self)
        let model = fixturePath("models/qwen2-dynamo/model.onnx"), tokenizer = fixturePath("models/qwen2-dynamo/tokenizer.json")
        let prompts = folder.appendingPathComponent("chats.jsonl").path
        try """
            {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]}
            {"prompt": "Name a colour."}
            {"messages": [{"role": "user", "content": "Count to three."}]}

            """.write(toFile: prompts, atomically: true, encoding: .utf8)
        var options = IterationOptions(modelPath: model, tokenizerPath: tokenizer, promptsPath: prompts,
                                       outputDirectory: folder.appendingPathComponent("loop").path, rounds: 1,
                                       judge: JudgeSpecification(method: .confidence))
        options.chat = true
        options.completionsPerPrompt = 3
        options.generation = GenerationOptions(maxNewTokens: 5, sampling: .sampling(temperature: 1.5), seed: 11)
        options.training.chatTemplatePath = fixturePath("chat_templates/qwen2_5.jinja")
        options.training.batchSize = 2
        options.training.maxSteps = 1
        options.training.tensorBoard = false
        let summary = try XCTUnwrap(try IterativeDPO(options: options).run().first)
        let samples = try JSONLines.read(SampledPrompt.self, from: options.outputDirectory + "/round-1/samples.jsonl").map(\.value)
        XCTAssertEqual(samples[1].prompt, .messages([.object([("role", .string("user")), ("content", .string("Name a colour."))])]),
                       "a text prompt sampled with chat is kept as its user message")
        let pairs = try PreferenceDataset.load(path: options.outputDirectory + "/round-1/pairs.jsonl")
        XCTAssertEqual(pairs.format, .conversational)
        XCTAssertEqual(pairs.pairs.count, summary.judge.pairs)
        XCTAssertEqual(summary.trainingSteps, 1)
    }
}
