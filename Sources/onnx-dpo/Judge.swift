import ArgumentParser
import Foundation
import Training

extension JudgeSpecification.Method: ExpressibleByArgument {}
extension ConfidenceJudge.Measure: ExpressibleByArgument {}
extension PairSelection: ExpressibleByArgument {}

/// The flags choosing a judge, shared by `judge` and `iterate`.
struct JudgeOptions: ParsableArguments {
    @Option(help: "How completions are judged: confidence (the model's own), judge-model (RLAIF: a judge model compares two answers) or command (an external scorer).")
    var by: JudgeSpecification.Method

    @Option(help: "--by confidence: mean-logprob (under --model) or agreement (among a prompt's samples).")
    var confidence: ConfidenceJudge.Measure = .meanLogProb

    @Option(help: "--by judge-model: the judge's .onnx model.")
    var judge: String?
    @Option(help: "--by judge-model: the judge's tokenizer.json (default: beside --judge).")
    var judgeTokenizer: String?
    @Option(help: "--by judge-model: a prompt template with {prompt}, {answer_1} and {answer_2} (default: a built-in one ending in 'Better answer:').")
    var judgeTemplate: String?
    @Option(help: "--by judge-model: the two answer texts whose probabilities are compared, comma-separated.")
    var judgeChoices = CommaList([" 1", " 2"])

    @Option(help: "--by command: a shell command reading one JSON object per completion on stdin ({\"completion\", \"index\", \"line\", \"prompt\"}) and printing one score per line.")
    var command: String?

    @Option(help: "Pairs per prompt: best-vs-worst or all (default: the method's own: all for confidence and judge-model, best-vs-worst for command).")
    var pairs: PairSelection?
    @Option(help: "Scores must differ by more than this (a judge model's win probability from 0.5) to make a pair.")
    var margin = 0.0

    var specification: JudgeSpecification {
        var specification = JudgeSpecification(method: by)
        specification.confidence = confidence
        specification.judgeModel = judge
        specification.judgeTokenizer = judgeTokenizer
        specification.judgeTemplate = judgeTemplate
        specification.judgeChoices = judgeChoices.values
        specification.command = command
        specification.selection = pairs
        specification.margin = margin
        return specification
    }
}

struct Judge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Judge sampled completions and write preference pairs (the judging step of iterative DPO, RLAIF and factuality tuning).",
        discussion: """
            Reads `onnx-dpo sample`'s JSONL ({"line", "prompt", "completions"}) and writes preference JSONL \
            ({"prompt", "chosen", "rejected", "preference"?, "chosen_score", "rejected_score", "sample_line"}) that \
            `onnx-dpo train` reads.
            --by confidence --confidence mean-logprob   the mean token log-prob under --model (factuality tuning)
            --by confidence --confidence agreement      mean word overlap with the prompt's other samples
            --by judge-model --judge J.onnx             RLAIF: P(answer 1) vs P(answer 2), both orders averaged; a soft preference
            --by command --command CMD                  any scorer: JSONL on stdin, one score per line on stdout
            """)

    @Option(help: "The samples file (JSONL from `onnx-dpo sample`).")
    var input: String
    @Option(help: "Where the preference pairs go (JSONL).")
    var output: String

    @OptionGroup var judging: JudgeOptions

    @Option(help: "--by confidence --confidence mean-logprob: the model whose confidence is measured (the policy).")
    var model: String?
    @Option(help: "An adapter folder applied to --model.")
    var adapter: String?
    @Option(help: "The tokenizer of --model.")
    var tokenizer: String?
    @Option(help: "--by confidence on chat samples: a Jinja chat template replacing the tokenizer_config.json's.")
    var chatTemplate: String?

    @Flag(help: "Print the summary as one JSON object.")
    var json = false

    func run() throws {
        var specification = judging.specification
        specification.chatTemplatePath = chatTemplate
        let judge = try specification.makeJudge(modelPath: model, adapterPath: adapter, tokenizerPath: tokenizer)
        let summary = try Judging.run(input: input, output: output, judge: judge, selection: specification.selection,
                                      margin: specification.margin)
        if json {
            print(try jsonText(summary))
        } else {
            print("\(summary.pairs) pairs from \(summary.prompts) prompts (\(summary.completions) completions; "
                  + "\(summary.promptsWithoutPairs) prompts without a pair); mean \(summary.scoreName) "
                  + String(format: "%.4f", summary.meanScore) + "; written to \(output)")
        }
    }
}
