import Foundation
import Interpreter
import Tokenizers

/// Which judge to build and how to pair its verdicts: the settings of `judge` and of `iterate`'s judging step,
/// kept in a round folder so a resumed loop judges the same way.
public struct JudgeSpecification: Codable, Sendable, Equatable {
    public enum Method: String, Codable, Sendable, CaseIterable {
        /// The model's own confidence (`ConfidenceJudge`).
        case confidence
        /// A judge ONNX model comparing two answers (`ModelJudge`).
        case judgeModel = "judge-model"
        /// An external scoring command (`CommandJudge`).
        case command
    }

    public var method: Method
    public var confidence: ConfidenceJudge.Measure = .meanLogProb
    /// `judge-model`: the judge's .onnx file, tokenizer, prompt template file (nil: the default) and answers.
    public var judgeModel: String?
    public var judgeTokenizer: String?
    public var judgeTemplate: String?
    public var judgeChoices: [String] = [" 1", " 2"]
    /// `command`: the shell command.
    public var command: String?
    /// Pairing (nil: the method's default) and the margin scores must differ by.
    public var selection: PairSelection?
    public var margin: Double = 0
    /// Rows per forward pass of a model judge.
    public var batchSize: Int = 4
    /// The chat template of chat prompts (confidence by mean log-prob; nil: the one beside the tokenizer).
    public var chatTemplatePath: String?

    public init(method: Method) { self.method = method }

    /// The judge, scoring with the model at `modelPath` (and `adapterPath`, unmerged) where the method scores with
    /// the policy (confidence by mean log-prob), tokenised by `tokenizerPath`.
    public func makeJudge(modelPath: String?, adapterPath: String? = nil, tokenizerPath: String?) throws -> any CompletionJudge {
        func required(_ value: String?, _ option: String) throws -> String {
            guard let value else {
                throw TrainingError.invalidOption(option: option, reason: "is needed to judge by \(method.rawValue)")
            }
            return value
        }
        switch method {
        case .confidence where confidence == .agreement:
            return ConfidenceJudge()
        case .confidence:
            let path = try required(tokenizerPath, "tokenizerPath")
            let tokenizer = try Tokenizer(path: path)
            let session = try Session.open(modelPath: try required(modelPath, "modelPath"), adapterPath: adapterPath)
            return ConfidenceJudge(scorer: try ContinuationScorer(session: session, padTokenID: try PreferenceBatch.padTokenID(for: tokenizer),
                                                                  batchSize: batchSize),
                                   tokenizer: tokenizer, tokenizerPath: path, chatTemplatePath: chatTemplatePath)
        case .judgeModel:
            let judgePath = try required(judgeModel, "judgeModel")
            let tokenizer = try Tokenizer(path: judgeTokenizer ?? Self.tokenizerBeside(judgePath))
            guard judgeChoices.count == 2 else {
                throw TrainingError.invalidOption(option: "judgeChoices", reason: "must name exactly two answers, got \(judgeChoices.count)")
            }
            var template = ModelJudge.defaultTemplate
            if let judgeTemplate {
                guard let data = FileManager.default.contents(atPath: judgeTemplate) else {
                    throw TrainingError.invalidOption(option: "judgeTemplate", reason: "'\(judgeTemplate)' cannot be read")
                }
                template = String(decoding: data, as: UTF8.self)
            }
            let scorer = try ContinuationScorer(session: try Session.open(modelPath: judgePath),
                                                padTokenID: tokenizer.padTokenID ?? tokenizer.eosTokenID ?? 0, batchSize: batchSize)
            return try ModelJudge(scorer: scorer, tokenizer: tokenizer, template: template, templatePath: judgeTemplate,
                                  choices: (judgeChoices[0], judgeChoices[1]))
        case .command:
            return CommandJudge(command: try required(command, "command"))
        }
    }

    /// The tokenizer.json beside a model file.
    static func tokenizerBeside(_ modelPath: String) -> String {
        ((modelPath as NSString).deletingLastPathComponent as NSString).appendingPathComponent("tokenizer.json")
    }
}
