import Foundation
import Interpreter
import ONNXGraph
import TestSupport
import Tokenizers
import Training
import XCTest

/// `Generator` against transformers' greedy `generate` and onnxruntime-genai (fixtures/generation/expected.json,
/// written by tools/make_generation_references.py: prompts whose top-2 logit margin is > 1e-4 at every step), the
/// cache and no-cache paths against each other, and the logits processors against transformers' own.
final class GenerationTests: XCTestCase {
    struct Expected: Decodable {
        struct ModelCase: Decodable {
            var name: String
            var model: String
            var kvCache: Bool
            var prompts: [PromptCase]
        }
        struct PromptCase: Decodable {
            var text: String
            var promptIds: [Int]
            var transformers: [Int]
            var transformersRepetitionPenalty: [Int]
            var genai: [Int]?
            var genaiRepetitionPenalty: [Int]?
        }
        struct Processors: Decodable {
            var scores: [[Float?]]
            var inputIds: [[Int]]
            var settings: [String: Float]
            var alone: [String: [[Float?]]]
            var chained: [[Float?]]
        }
        var maxNewTokens: Int
        var repetitionPenalty: Float
        var models: [ModelCase]
        var processors: Processors
    }

    static let expected: Expected = {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let data = FileManager.default.contents(atPath: fixturePath("generation/expected.json"))!
        return try! decoder.decode(Expected.self, from: data)
    }()

    /// The ids a greedy run must give: onnxruntime-genai's on builder graphs (int4 weights differ from the
    /// Hugging Face model's), transformers' elsewhere.
    private func reference(_ prompt: Expected.PromptCase, penalised: Bool) -> [Int] {
        penalised ? (prompt.genaiRepetitionPenalty ?? prompt.transformersRepetitionPenalty) : (prompt.genai ?? prompt.transformers)
    }

    /// Greedy (with and without the repetition penalty) equals the reference token for token on every fixture, one
    /// prompt at a time and both prompts in one right-padded batch, with the cache (where the graph has one) and
    /// without.
    func testGreedyEqualsTransformersOnEveryFixture() throws {
        let expected = Self.expected
        for modelCase in expected.models {
            let generator = try Generator.open(modelPath: repositoryPath(modelCase.model))
            XCTAssertEqual(generator.strategy, modelCase.kvCache ? .kvCache : .recompute, modelCase.name)
            for penalty in [Float(1), expected.repetitionPenalty] {
                let want = modelCase.prompts.map { reference($0, penalised: penalty != 1) }
                for useCache in modelCase.kvCache ? [true, false] : [false] {
                    let options = GenerationOptions(maxNewTokens: expected.maxNewTokens,
                                                    sampling: .greedy(repetitionPenalty: penalty), eosTokenIDs: [],
                                                    useKVCache: useCache)
                    let label = "\(modelCase.name) penalty \(penalty) cache \(useCache)"
                    for (prompt, ids) in zip(modelCase.prompts, want) {
                        let got = try generator.generate([prompt.promptIds], options: options)
                        XCTAssertEqual(got.map(\.outputIDs), [ids], "\(label): '\(prompt.text)'")
                    }
                    let batch = try generator.generate(modelCase.prompts.map(\.promptIds), options: options)
                    XCTAssertEqual(batch.map(\.outputIDs), want, "\(label): both prompts in one batch")
                }
            }
        }
    }

    /// On builder graphs (GroupQueryAttention) and on the optimum-layout export (general mask with holes, positions
    /// per row) the cached decode equals the whole-prefix recomputation, tokens and each token's
    /// log-probability (within 1e-4), for a batch of two prompts of different lengths.
    func testCachedDecodeEqualsRecomputation() throws {
        let cases = [("builder/llama-fp32", [[510, 20, 31, 45, 7, 99, 3], [510, 300, 12]]),
                     ("builder/qwen2-int4", [[510, 20, 31, 45, 7, 99, 3], [510, 300, 12]]),
                     ("generation/llama-with-past", [[51, 16, 6, 18, 25, 50, 9], [27, 5, 20]])]
        for (name, prompts) in cases {
            let session = try Session(model: try Model.load(path: fixturePath("\(name)/model.onnx")))
            let generator = try Generator(session: session)
            var runs: [Bool: [GeneratedSequence]] = [:]
            for useCache in [true, false] {
                let options = GenerationOptions(maxNewTokens: 6, sampling: .greedy(repetitionPenalty: 1.5),
                                                eosTokenIDs: [], useKVCache: useCache)
                runs[useCache] = try generator.generate(prompts, options: options)
            }
            let cached = runs[true]!, recomputed = runs[false]!
            XCTAssertEqual(cached.map(\.outputIDs), recomputed.map(\.outputIDs), name)
            for (a, b) in zip(cached, recomputed) {
                for (x, y) in zip(a.tokenLogProbs, b.tokenLogProbs) { XCTAssertEqual(x, y, accuracy: 1e-4, name) }
            }
        }
    }

    /// `Generator.open` precomputes the constant nodes (the builder's Transpose of the lm_head weight before the
    /// embedding Gather) and packs the weights, and generates exactly what the plain session does; a folded source
    /// cannot be trained.
    func testFoldedConstantsChangeNothing() throws {
        let path = fixturePath("builder/llama-fp32/model.onnx")
        let folded = try Generator.open(modelPath: path)
        let plain = try Generator(session: try Session(model: try Model.load(path: path)))
        XCTAssert(plain.session.nodes.contains { $0.opType == "Transpose" })
        XCTAssertFalse(folded.session.nodes.contains { $0.opType == "Transpose" })
        let options = GenerationOptions(maxNewTokens: 4, sampling: .greedy(repetitionPenalty: 1.5), eosTokenIDs: [])
        let prompts = [[510, 20, 31, 45], [510, 300]]
        let a = try folded.generate(prompts, options: options), b = try plain.generate(prompts, options: options)
        XCTAssertEqual(a, b)
        let foldedOnly = try Session(model: try Model.load(path: path))
        try foldedOnly.foldConstants()
        assertThrows(["lm_head.MatMul.weight", "foldConstants"]) {
            try foldedOnly.forward([:], trainable: ["lm_head.MatMul.weight"])
        }
        // `Generator.open` also packs the weights: its session refuses to train a packed one.
        let packedWeight = try XCTUnwrap(folded.session.packedWeightNames.sorted().first)
        assertThrows([packedWeight, "packed", "cannot be trained"]) {
            try folded.session.forward([:], trainable: [packedWeight])
        }
    }

    /// Sampling: the same seed gives the same tokens, another seed other tokens, a row's tokens do not depend on
    /// the rows beside it, and every token drawn under top-k 1 is the greedy one.
    func testSamplingIsReproducibleFromTheSeed() throws {
        let generator = try Generator.open(modelPath: fixturePath("models/phi3-dynamo/model.onnx"))
        let prompt = Self.expected.models.first { $0.name == "phi3-dynamo" }!.prompts[0]
        var options = GenerationOptions(maxNewTokens: 8, sampling: .sampling(temperature: 1.5, topK: 0), seed: 42,
                                        eosTokenIDs: [], numReturnSequences: 3)
        let first = try generator.generate([prompt.promptIds], options: options).map(\.outputIDs)
        let again = try generator.generate([prompt.promptIds], options: options).map(\.outputIDs)
        XCTAssertEqual(first, again)
        XCTAssertNotEqual(first[0], first[1], "rows of one prompt draw differently")
        options.seed = 43
        XCTAssertNotEqual(try generator.generate([prompt.promptIds], options: options).map(\.outputIDs), first)
        options.seed = 42
        options.numReturnSequences = 1
        XCTAssertEqual(try generator.generate([prompt.promptIds], options: options).map(\.outputIDs), [first[0]],
                       "row 0 draws the same alone")
        options.sampling = .sampling(topK: 1)
        XCTAssertEqual(try generator.generate([prompt.promptIds], options: options).map(\.outputIDs), [prompt.transformers])
    }

    /// Each processor alone and the chain in transformers' order equal transformers' processors on the same
    /// scores (`-inf` where they filter).
    func testLogitsProcessorsEqualTransformers() {
        let reference = Self.expected.processors
        let settings = reference.settings
        let scores = reference.scores.map { $0.map { $0 ?? -.infinity } }
        func check(_ name: String, _ want: [[Float?]], _ apply: ([Float], [Int]) -> [Float]) {
            for (row, ids) in reference.inputIds.enumerated() {
                let got = apply(scores[row], ids)
                for (index, value) in want[row].enumerated() {
                    if let value {
                        XCTAssertEqual(got[index], value, accuracy: 1e-5 * max(1, abs(value)), "\(name) row \(row) token \(index)")
                    } else {
                        XCTAssertEqual(got[index], -.infinity, "\(name) row \(row) token \(index) is filtered")
                    }
                }
            }
        }
        func alone(_ configure: (inout SamplingOptions) -> Void) -> ([Float], [Int]) -> [Float] {
            var options = SamplingOptions.sampling(topK: 0)
            configure(&options)
            return { options.process($0, previous: $1) }
        }
        check("repetition_penalty", reference.alone["repetition_penalty"]!, alone { $0.repetitionPenalty = settings["repetition_penalty"]! })
        check("temperature", reference.alone["temperature"]!, alone { $0.temperature = settings["temperature"]! })
        check("top_k", reference.alone["top_k"]!, alone { $0.topK = Int(settings["top_k"]!) })
        check("top_p", reference.alone["top_p"]!, alone { $0.topP = settings["top_p"]! })
        check("min_p", reference.alone["min_p"]!, alone { $0.minP = settings["min_p"]! })
        let chain = SamplingOptions.sampling(temperature: settings["temperature"]!, topK: Int(settings["top_k"]!),
                                             topP: settings["top_p"]!, minP: settings["min_p"]!,
                                             repetitionPenalty: settings["repetition_penalty"]!)
        check("chained", reference.chained) { chain.process($0, previous: $1) }
        // Greedy applies only the repetition penalty.
        XCTAssertEqual(SamplingOptions.greedy().process(scores[0], previous: [1]), scores[0])
    }

    /// A draw never picks a filtered token.
    func testSamplingDrawsOnlyKeptTokens() {
        let scores = Self.expected.processors.scores[0].map { $0 ?? -.infinity }
        let options = SamplingOptions.sampling(topK: 3)
        let kept = Set(options.process(scores, previous: []).enumerated().filter { $0.element > -.infinity }.map(\.offset))
        XCTAssertEqual(kept.count, 3)
        var random = SeededGenerator(seed: 5)
        var seen: Set<Int> = []
        for _ in 0..<200 { seen.insert(options.choose(scores, previous: [], generator: &random)) }
        XCTAssertEqual(seen, kept)
    }

    /// EOS ends a row (kept in its output), a stop string ends it once the text contains it, and the context length
    /// of config.json ends it there.
    func testStoppingOnEOSStopStringsAndContext() throws {
        let model = fixturePath("models/phi3-dynamo/model.onnx")
        let generator = try Generator.open(modelPath: model)
        XCTAssertEqual(generator.defaults.eosTokenIDs, [511])
        XCTAssertEqual(generator.defaults.contextLength, 128)
        let prompt = Self.expected.models.first { $0.name == "phi3-dynamo" }!.prompts[0]
        let third = prompt.transformers[2]
        var options = GenerationOptions(maxNewTokens: 8, eosTokenIDs: [third])
        var rows = try generator.generate([prompt.promptIds], options: options)
        XCTAssertEqual(rows[0].outputIDs, Array(prompt.transformers.prefix(3)))
        XCTAssertEqual(rows[0].finishReason, .eos)

        let tokenizer = try Tokenizer(path: fixturePath("models/phi3-dynamo/tokenizer.json"))
        let text = tokenizer.decode(Array(prompt.transformers.prefix(2)))
        options = GenerationOptions(maxNewTokens: 8, stopStrings: [String(text.suffix(1))], eosTokenIDs: [])
        rows = try generator.generate([prompt.promptIds], options: options, tokenizer: tokenizer)
        XCTAssertLessThanOrEqual(rows[0].outputIDs.count, 2)
        XCTAssertEqual(rows[0].finishReason, .stopString)

        let long = Array(repeating: 5, count: 125)
        rows = try generator.generate([long], options: GenerationOptions(maxNewTokens: 8, eosTokenIDs: []))
        XCTAssertEqual(rows[0].outputIDs.count, 3)
        XCTAssertEqual(rows[0].finishReason, .contextLength)
    }

    /// A cached batch whose longest row would pass the context runs its rows one at a time: each equals its own run,
    /// and the long row stops at the context.
    func testBatchReachingTheContextEqualsRowsAlone() throws {
        let generator = try Generator.open(modelPath: fixturePath("builder/llama-fp32/model.onnx"))
        let long = (0..<100).map { ($0 * 7) % 500 }, short = Array(long.prefix(50))
        let options = GenerationOptions(maxNewTokens: 40, sampling: .greedy(repetitionPenalty: 1.5), eosTokenIDs: [])
        let batch = try generator.generate([long, short], options: options)
        let alone = try [long, short].map { try generator.generate([$0], options: options)[0] }
        XCTAssertEqual(batch.map(\.outputIDs), alone.map(\.outputIDs))
        XCTAssertEqual(batch.map(\.outputIDs.count), [28, 40])
        XCTAssertEqual(batch.map(\.finishReason), [.contextLength, .maxNewTokens])
    }

    /// Bad input is refused naming it.
    func testBadInputIsRefusedNamingIt() throws {
        let generator = try Generator.open(modelPath: fixturePath("builder/llama-fp32/model.onnx"))
        let options = GenerationOptions(maxNewTokens: 4)
        assertThrows(["prompt", "#1", "128 tokens", "context is 128", "genai_config.json"]) {
            try generator.generate([Array(repeating: 5, count: 128)], options: options)
        }
        assertThrows(["prompt", "#2", "empty"]) { try generator.generate([[1], []], options: options) }
        assertThrows(["maxNewTokens", "≥ 1"]) { try generator.generate([[1]], options: GenerationOptions(maxNewTokens: 0)) }
        assertThrows(["prompt", "token id 512", "vocabulary"]) { try generator.generate([[512]], options: options) }
        assertThrows(["topP"]) {
            try generator.generate([[1]], options: GenerationOptions(sampling: .sampling(topP: 0)))
        }
        assertThrows(["prompt", "#1", "empty"]) { try Prompt.text("").tokenIDs(tokenizer: nil, index: 0) }
    }

    /// Incremental decoding hands out only whole characters and ends with the whole text.
    func testIncrementalDecoderEmitsCompleteCharacters() throws {
        let tokenizer = try Tokenizer(path: fixturePath("models/gpt2-dynamo/tokenizer.json"))
        let ids = tokenizer.encode("naïve café — ok")
        var decoder = IncrementalDecoder(tokenizer: tokenizer)
        var pieces: [String] = []
        for id in ids { pieces.append(decoder.append(id)) }
        XCTAssertEqual(pieces.joined(), tokenizer.decode(ids, skipSpecialTokens: true))
        XCTAssertFalse(pieces.joined().contains("\u{FFFD}"))
    }
}

/// `generate --chat`: prompts rendered by the chat template with the generation prompt, as transformers renders them.
final class ChatGenerationTests: XCTestCase {
    func testChatPromptsAreRenderedAsTransformersDoes() throws {
        struct Case: Decodable { var template: String, conversation: String, add_generation_prompt: Bool, rendered: String? }
        struct References: Decodable { var cases: [Case] }
        let references = try JSONDecoder().decode(References.self, from: Data(contentsOf: URL(fileURLWithPath: fixturePath("chat_templates/expected.json"))))
        let expected = try XCTUnwrap(references.cases.first {
            $0.template == "qwen2_5" && $0.conversation == "user" && $0.add_generation_prompt
        }).rendered ?? ""
        let folder = try temporaryDirectory(for: self)
        let tokenizerPath = fixturePath("models/qwen2-dynamo/tokenizer.json")
        let tokenizer = try Tokenizer(path: tokenizerPath)
        for prompt in [Prompt.text("Hello!"), .messages([.object([("role", .string("user")), ("content", .string("Hello!"))])])] {
            let output = folder.appendingPathComponent("out.jsonl").path
            var parameters = GenerateParameters(modelPath: fixturePath("models/qwen2-dynamo/model.onnx"), tokenizerPath: tokenizerPath,
                                                prompts: [prompt], options: GenerationOptions(maxNewTokens: 2), outputPath: output)
            parameters.chat = true
            parameters.chatTemplatePath = fixturePath("chat_templates/qwen2_5.jinja")
            _ = try GenerateCommand.run(parameters)
            struct Line: Decodable { var prompt_ids: [Int] }
            let line = try JSONDecoder().decode(Line.self, from: Data(try String(contentsOfFile: output, encoding: .utf8).utf8))
            XCTAssertEqual(tokenizer.decode(line.prompt_ids), expected)
            XCTAssertEqual(line.prompt_ids, tokenizer.encode(expected, addSpecialTokens: false), "no BOS added to a rendered chat")
        }
        // Without a template the request is refused naming --chat.
        var parameters = GenerateParameters(modelPath: fixturePath("models/gpt2-dynamo/model.onnx"),
                                            prompts: [.text("Hello!")], options: GenerationOptions(maxNewTokens: 2))
        parameters.chat = true
        XCTAssertThrowsError(try GenerateCommand.run(parameters)) { error in
            XCTAssertTrue("\(error)".contains("chat"), "\(error)")
        }
    }
}
