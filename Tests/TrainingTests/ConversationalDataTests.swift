import Foundation
import TestSupport
import XCTest

@testable import Training
import Tokenizers

/// Conversational preference data (message lists rendered with a chat template) against TRL's own pipeline, on
/// fixtures made by tools/make_conversational_references.py, and one short training run on it.
final class ConversationalDataTests: XCTestCase {
    private struct Expected: Decodable {
        let cases: [Case]
    }

    private struct Case: Decodable {
        let dataset: String
        let tokenizer: String
        let chatTemplate: String
        let pairs: [Pair]
    }

    private struct Pair: Decodable {
        let line: Int
        let promptIds: [Int]
        let chosenIds: [Int]
        let rejectedIds: [Int]
        let promptText: String
        let chosenText: String
    }

    private static func fixture(_ name: String) -> String { fixturePath("conversational/\(name)") }

    func testIdsAreTRLsForExplicitAndImplicitPromptsAndToolsOnTwoTemplates() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.fixture("expected.json")))
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let expected = try decoder.decode(Expected.self, from: data)
        XCTAssertEqual(expected.cases.count, 6)
        for referenceCase in expected.cases {
            let label = "\(referenceCase.dataset) with \(referenceCase.chatTemplate)"
            let dataset = try PreferenceDataset.load(path: Self.fixture(referenceCase.dataset))
            XCTAssertEqual(dataset.format, referenceCase.dataset == "implicit.jsonl" ? .implicitConversational
                           : .conversational, label)
            let tokenizer = try Tokenizer(path: repositoryPath(referenceCase.tokenizer))
            let template = try TokenizerChatTemplate.load(
                path: repositoryPath(referenceCase.tokenizer), templatePath: repositoryPath(referenceCase.chatTemplate))
            let tokenized = try dataset.tokenized(with: tokenizer, options: PreferenceDataOptions(maxLength: nil),
                                                  chatTemplate: template)
            XCTAssertEqual(tokenized.pairs.count, referenceCase.pairs.count, label)
            for (pair, reference) in zip(tokenized.pairs, referenceCase.pairs) {
                XCTAssertEqual(pair.line, reference.line, label)
                XCTAssertEqual(pair.promptIDs, reference.promptIds, "\(label), line \(reference.line): prompt_ids")
                XCTAssertEqual(pair.chosenIDs, reference.chosenIds, "\(label), line \(reference.line): chosen_ids")
                XCTAssertEqual(pair.rejectedIDs, reference.rejectedIds, "\(label), line \(reference.line): rejected_ids")
            }
            // The renderings behind the ids, for a readable message when they differ.
            for (record, reference) in zip(dataset.pairs, referenceCase.pairs) {
                guard case .conversational(let conversation) = record.content else { continue }
                let split = conversation.prompt.map { ($0, conversation.chosen) }
                    ?? extractPrompt(chosen: conversation.chosen, rejected: conversation.rejected).map { ($0.prompt, $0.chosen) }
                guard let (prompt, chosen) = split else { return XCTFail("\(label): no prompt found") }
                XCTAssertEqual(try template.render(messages: prompt, addGenerationPrompt: true, tools: conversation.tools,
                                                   context: conversation.templateVariables), reference.promptText, label)
                XCTAssertEqual(try template.render(messages: prompt + chosen, tools: conversation.tools,
                                                   context: conversation.templateVariables),
                               reference.chosenText, label)
            }
        }
    }

    func testBadRecordsAndTemplateFailuresNameTheLine() throws {
        assertThrows(["no_role.jsonl", "line 2", "'chosen'[0] has no 'role'"]) {
            try PreferenceDataset.load(path: Self.fixture("bad/no_role.jsonl"))
        }
        assertThrows(["no_content.jsonl", "line 1", "'prompt'[0] has no 'content'"]) {
            try PreferenceDataset.load(path: Self.fixture("bad/no_content.jsonl"))
        }
        // Gemma's template refuses two user turns in a row: the error names the data line and the template's.
        let dataset = try PreferenceDataset.load(path: Self.fixture("bad/system_last.jsonl"))
        let tokenizer = try Tokenizer(path: fixturePath("models/llama-dynamo/tokenizer.json"))
        let template = try TokenizerChatTemplate.load(path: fixturePath("models/llama-dynamo"),
                                                      templatePath: fixturePath("chat_templates/gemma.jinja"))
        assertThrows(["system_last.jsonl, line 2", "Conversation roles must alternate", "line 1, column 211"]) {
            try dataset.tokenized(with: tokenizer, chatTemplate: template)
        }
        // Without a template, conversational data is refused up front.
        assertThrows(["conversational data needs a chat template"]) {
            try PreferenceDataset.load(path: Self.fixture("preferences.jsonl")).tokenized(with: tokenizer)
        }
    }

    func testOneTrainingStepOnConversationalData() throws {
        let output = try temporaryDirectory(for: self)
        var options = DPOTrainingOptions(
            modelPath: fixturePath("models/qwen2-dynamo/model.onnx"),
            tokenizerPath: fixturePath("models/qwen2-dynamo/tokenizer.json"),
            dataPath: Self.fixture("preferences.jsonl"), outputDirectory: output.path)
        options.chatTemplatePath = fixturePath("chat_templates/qwen2_5.jinja")
        options.maxSteps = 1
        options.batchSize = 2
        options.learningRate = 1e-2
        options.shuffle = false
        options.tensorBoard = false
        let trainer = try DPOTrainer(options: options)
        XCTAssertEqual(trainer.trainPairs.count, 4)
        var losses: [Double] = []
        try trainer.train { event in
            if case .step(let metrics) = event { losses.append(metrics.objective.loss) }
        }
        XCTAssertEqual(losses.count, 1)
        XCTAssertEqual(losses.first ?? 0, log(2), accuracy: 1e-6, "B = 0: the first step's loss is log 2")
        XCTAssertTrue(FileManager.default.fileExists(
            atPath: output.appendingPathComponent("adapter/adapter_model.safetensors").path))
    }
}
