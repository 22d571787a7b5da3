import Foundation
import Tokenizers

/// A judge's verdict on one prompt's completions.
public struct Judgement: Sendable, Equatable {
    /// One score per completion; higher is better.
    public var scores: [Double]
    /// For a pairwise judge, `winProbabilities[i][j]`: the probability that completion `i` is better than `j`
    /// (`1 − winProbabilities[j][i]`); nil for a judge that scores each completion alone.
    public var winProbabilities: [[Double]]?

    public init(scores: [Double], winProbabilities: [[Double]]? = nil) {
        self.scores = scores
        self.winProbabilities = winProbabilities
    }
}

/// Something that judges sampled completions: the model's own confidence, an external command, a judge model.
public protocol CompletionJudge {
    /// What a score is, for summaries ("token log-prob", "win probability").
    var scoreName: String { get }
    /// How this method's paper builds pairs from its verdicts.
    var defaultSelection: PairSelection { get }
    /// One judgement per prompt of `samples` (read from `path`, named in errors).
    func judge(_ samples: [SampledPrompt], path: String) throws -> [Judgement]
}

// MARK: - Confidence (factuality tuning)

/// Factuality tuning's reference-free truthfulness signal (Tian et al. 2023, arXiv 2311.08401): the model's own
/// confidence in each sample, as
/// - `meanLogProb`: the mean token log-probability of the completion (EOS included, tokenised as training
///   tokenises it) under a model, usually the policy that sampled it;
/// - `agreement`: how much a sample agrees with the prompt's other samples (consistent answers are more often
///   true): the mean unigram F1 between its words and each other sample's (lower-cased, split on anything not a
///   letter or digit). The paper measures agreement per extracted claim; this whole-answer form needs no claim
///   extractor and suits short answers.
///
/// Pairs: every pair whose scores differ by more than the margin, as the paper builds them.
public struct ConfidenceJudge: CompletionJudge {
    public enum Measure: String, Sendable, CaseIterable, Codable {
        case meanLogProb = "mean-logprob"
        case agreement
    }

    public let measure: Measure
    let scorer: ContinuationScorer?
    let tokenizer: Tokenizer?
    /// Where chat prompts' template comes from: the tokenizer's folder, or a template file.
    let tokenizerPath: String?, chatTemplatePath: String?

    /// Mean token log-probabilities under the model `scorer` runs, tokenised by `tokenizer` (read from
    /// `tokenizerPath`; chat prompts rendered with the template beside it, or `chatTemplatePath`).
    public init(scorer: ContinuationScorer, tokenizer: Tokenizer, tokenizerPath: String, chatTemplatePath: String? = nil) {
        measure = .meanLogProb
        self.scorer = scorer
        self.tokenizer = tokenizer
        self.tokenizerPath = tokenizerPath
        self.chatTemplatePath = chatTemplatePath
    }

    /// Agreement among each prompt's samples (no model needed).
    public init() {
        measure = .agreement
        scorer = nil
        tokenizer = nil
        tokenizerPath = nil
        chatTemplatePath = nil
    }

    public var scoreName: String { measure == .meanLogProb ? "token log-prob" : "agreement (unigram F1)" }
    public var defaultSelection: PairSelection { .all }

    public func judge(_ samples: [SampledPrompt], path: String) throws -> [Judgement] {
        guard let scorer, let tokenizer else {
            return try samples.map { sample in
                guard sample.completions.count >= 2 else {
                    throw TrainingError.invalidDataRecord(path: path, line: sample.line, reason:
                        "agreement needs at least 2 completions per prompt, found \(sample.completions.count)")
                }
                return Judgement(scores: Self.agreementScores(sample.completions))
            }
        }
        // Chats are tokenised as training tokenises conversational pairs, with the chat template.
        let chats = samples.contains { if case .messages = $0.prompt { true } else { false } }
        let template = chats ? try TokenizerChatTemplate.load(path: tokenizerPath ?? tokenizer.path, templatePath: chatTemplatePath) : nil
        var rows: [ContinuationScorer.Row] = []
        for sample in samples {
            for completion in sample.completions {
                let content: PreferencePair.Content
                switch (sample.prompt, sample.prompt.completion(completion)) {
                case (.messages(let prompt), .messages(let answer)):
                    content = .conversational(Conversation(prompt: prompt, chosen: answer, rejected: answer))
                case (.text(let prompt), _), (.messages, .text(let prompt)):
                    content = .explicit(prompt: prompt, chosen: completion, rejected: completion)
                }
                let pair = PreferencePair(content: content, line: sample.line)
                let tokenized = try pair.tokenized(with: tokenizer, chatTemplate: template, path: path)
                rows.append(.init(context: tokenized.promptIDs, continuation: tokenized.chosenIDs))
            }
        }
        var scores = try scorer.score(rows).map(\.mean)[...]
        return samples.map { sample in
            defer { scores = scores.dropFirst(sample.completions.count) }
            return Judgement(scores: Array(scores.prefix(sample.completions.count)))
        }
    }

    /// Each text's mean unigram F1 against every other text.
    static func agreementScores(_ texts: [String]) -> [Double] {
        let bags = texts.map { text in
            text.lowercased().split { !$0.isLetter && !$0.isNumber }.reduce(into: [Substring: Int]()) { $0[$1, default: 0] += 1 }
        }
        func f1(_ a: [Substring: Int], _ b: [Substring: Int]) -> Double {
            let sizeA = a.values.reduce(0, +), sizeB = b.values.reduce(0, +)
            guard sizeA > 0, sizeB > 0 else { return sizeA == sizeB ? 1 : 0 }
            let common = a.reduce(0) { $0 + min($1.value, b[$1.key] ?? 0) }
            return 2 * Double(common) / Double(sizeA + sizeB)
        }
        return bags.indices.map { i in
            let others = bags.indices.filter { $0 != i }
            return others.map { f1(bags[i], bags[$0]) }.reduce(0, +) / Double(max(others.count, 1))
        }
    }
}

// MARK: - An external command

/// Any scorer a user has (a reward model, a test suite, a fact checker) as a shell command: it reads one JSON
/// object per completion on stdin, `{"completion", "index", "line", "prompt"}` (`line`: the samples file's line,
/// `index`: the completion's position on it; `prompt`: text, or a chat's messages), and prints one score per completion, in order, on its own line: a
/// number, or an object with a numeric `"score"`. It runs once over the whole samples file.
///
/// Pairs: best against worst of each prompt, as self-rewarding LMs and Snorkel's iterative DPO build them.
public struct CommandJudge: CompletionJudge {
    public let command: String

    public init(command: String) { self.command = command }

    public var scoreName: String { "score" }
    public var defaultSelection: PairSelection { .bestVsWorst }

    private struct Request: Encodable {
        var completion: String
        var index: Int
        var line: Int
        /// Text, or a chat's messages.
        var prompt: LoopPrompt
    }

    public func judge(_ samples: [SampledPrompt], path: String) throws -> [Judgement] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var input = Data()
        var origins: [(line: Int, index: Int)] = []
        for sample in samples {
            for (index, completion) in sample.completions.enumerated() {
                input += try encoder.encode(Request(completion: completion, index: index, line: sample.line, prompt: sample.prompt))
                input.append(0x0A)
                origins.append((sample.line, index))
            }
        }
        let output = try run(input: input)
        func fail(_ reason: String) -> TrainingError { .judgeFailed(judge: "command '\(command)'", reason: reason) }
        let lines = output.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .enumerated().filter { !$0.element.allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D } }
        guard lines.count == origins.count else {
            throw fail("it printed \(lines.count) scores for \(origins.count) completions of \(path) (one line per completion, in order)")
        }
        var scores: [Double] = []
        for ((outputLine, text), origin) in zip(lines, origins) {
            let where_ = "output line \(outputLine + 1) (\(path) line \(origin.line), completion \(origin.index))"
            let value: JSONValue
            do { value = try parseJSON(Array(text)) } catch {
                throw fail("\(where_) is not JSON: '\(String(decoding: text.prefix(80), as: UTF8.self))'")
            }
            let number: Double
            switch value {
            case .number(let score): number = score
            case .object where value["score"] != nil:
                guard case .number(let score)? = value["score"] else { throw fail("\(where_): 'score' is not a number") }
                number = score
            default:
                throw fail("\(where_) is \(value.kindName), not a number or an object with a numeric 'score'")
            }
            guard number.isFinite else { throw fail("\(where_) is not a finite number") }
            scores.append(number)
        }
        var remaining = scores[...]
        return samples.map { sample in
            defer { remaining = remaining.dropFirst(sample.completions.count) }
            return Judgement(scores: Array(remaining.prefix(sample.completions.count)))
        }
    }

    /// Runs the command through `/bin/sh -c` with `input` on stdin; its stdout, or an error with the end of its
    /// stderr when it fails.
    private func run(input: Data) throws -> Data {
        // A command that exits before reading all of its input would otherwise kill this process with SIGPIPE on
        // the next write; ignored, the write fails with EPIPE instead and the exit status is reported.
        signal(SIGPIPE, SIG_IGN)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        do { try process.run() } catch {
            throw TrainingError.judgeFailed(judge: "command '\(command)'", reason: "it could not be started: \(error.localizedDescription)")
        }
        // Feed stdin and drain stderr on their own threads, so a command that writes before it has read
        // everything cannot block on a full pipe.
        let group = DispatchGroup()
        let errors = LockedData()
        DispatchQueue.global().async(group: group) {
            // A command that exits without reading all of its input closes the pipe: the write then fails, which
            // the exit status reports better.
            try? stdin.fileHandleForWriting.write(contentsOf: input)
            try? stdin.fileHandleForWriting.close()
        }
        DispatchQueue.global().async(group: group) { errors.set(stderr.fileHandleForReading.readDataToEndOfFile()) }
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        group.wait()
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            let tail = String(decoding: errors.value.suffix(600), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            let status = process.terminationReason == .exit ? "exit status \(process.terminationStatus)" : "signal \(process.terminationStatus)"
            throw TrainingError.judgeFailed(judge: "command '\(command)'", reason: "it failed (\(status))" + (tail.isEmpty ? "" : ": \(tail)"))
        }
        return output
    }
}

/// Data one thread sets and another reads after a `DispatchGroup.wait()`.
private final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    func set(_ value: Data) { lock.withLock { data = value } }
    var value: Data { lock.withLock { data } }
}

// MARK: - A judge model (RLAIF)

/// RLAIF's AI labeler (Lee et al. 2023, arXiv 2309.00267): a judge model reads the prompt (a chat as `role: content`
/// lines) and two answers and the
/// probability it gives to answering "1" rather than "2" (from its next-token log-probabilities, normalised over the
/// two choices) says which answer is better. Each pair is judged in both orders and the two probabilities averaged,
/// which removes the judge's position bias; the result is the pair's soft `preference`.
///
/// A completion's score is its mean win probability against the prompt's other completions. Pairs: each pair of
/// completions whose win probability differs from ½ by more than the margin, oriented so that `chosen` is the one
/// judged better.
public struct ModelJudge: CompletionJudge {
    /// The default judge prompt; `{prompt}`, `{answer_1}` and `{answer_2}` are replaced.
    public static let defaultTemplate = """
        Below are a question and two answers. A better answer is helpful, correct and honest.

        Question: {prompt}

        Answer 1: {answer_1}

        Answer 2: {answer_2}

        Which answer is better? Reply with 1 or 2.
        Better answer:
        """
    static let placeholders = ["{prompt}", "{answer_1}", "{answer_2}"]

    let scorer: ContinuationScorer
    let tokenizer: Tokenizer
    let template: String
    let choices: (String, String)

    /// A judge running `scorer`'s model with `tokenizer`; `choices` are the texts appended after the rendered
    /// template whose probabilities are compared (" 1" and " 2" after the default template's "Better answer:").
    /// Throws when `template` lacks a placeholder (`templatePath` names it in the error).
    public init(scorer: ContinuationScorer, tokenizer: Tokenizer, template: String = ModelJudge.defaultTemplate,
                templatePath: String? = nil, choices: (String, String) = (" 1", " 2")) throws {
        for placeholder in Self.placeholders where !template.contains(placeholder) {
            throw TrainingError.judgeFailed(judge: "template \(templatePath.map { "'\($0)'" } ?? "(default)")",
                                            reason: "it has no \(placeholder) placeholder (it needs {prompt}, {answer_1} and {answer_2})")
        }
        self.scorer = scorer
        self.tokenizer = tokenizer
        self.template = template
        self.choices = choices
    }

    public var scoreName: String { "win probability" }
    public var defaultSelection: PairSelection { .all }

    /// The template with its placeholders replaced in one pass (an answer containing "{answer_2}" stays as written).
    func render(prompt: String, first: String, second: String) -> String {
        let values = ["{prompt}": prompt, "{answer_1}": first, "{answer_2}": second]
        var result = ""
        var rest = template[...]
        while let next = Self.placeholders.compactMap({ key in rest.range(of: key).map { (key, $0) } })
            .min(by: { $0.1.lowerBound < $1.1.lowerBound }) {
            result += rest[..<next.1.lowerBound] + values[next.0]!
            rest = rest[next.1.upperBound...]
        }
        return result + rest
    }

    /// The two rows scoring `choices` after `text`: the ids the tokenizer gives text + choice, split where they stop
    /// sharing the ids of `text` alone.
    func choiceRows(after text: String) throws -> [ContinuationScorer.Row] {
        let context = tokenizer.encode(text)
        let rows = [choices.0, choices.1].map { choice in
            let full = tokenizer.encode(text + choice)
            let shared = commonPrefixLength(context, full)
            return ContinuationScorer.Row(context: Array(full[..<shared]), continuation: Array(full[shared...]))
        }
        guard !rows[0].continuation.isEmpty, !rows[1].continuation.isEmpty, rows[0] != rows[1] else {
            throw TrainingError.judgeFailed(judge: "judge model", reason:
                "its tokenizer does not tell the answers '\(choices.0)' and '\(choices.1)' apart after the prompt "
                + "(the same ids, or none): choose other answer texts or another judge")
        }
        return rows
    }

    public func judge(_ samples: [SampledPrompt], path: String) throws -> [Judgement] {
        // Every ordered pair (i, j), i ≠ j: the probability the judge answers "1" when i is shown first.
        var rows: [ContinuationScorer.Row] = []
        for sample in samples {
            for i in sample.completions.indices {
                for j in sample.completions.indices where j != i {
                    rows += try choiceRows(after: render(prompt: sample.prompt.plainText, first: sample.completions[i],
                                                         second: sample.completions[j]))
                }
            }
        }
        let scores = try scorer.score(rows)
        var next = 0
        return samples.map { sample in
            let count = sample.completions.count
            var first = [[Double]](repeating: [Double](repeating: 0.5, count: count), count: count)
            for i in 0..<count {
                for j in 0..<count where j != i {
                    // P("1" | i shown first), normalised over the two answers.
                    first[i][j] = sigmoid(scores[next].sum - scores[next + 1].sum)
                    next += 2
                }
            }
            var win = first
            for i in 0..<count {
                for j in 0..<count where j != i {
                    // i better: "1" with i first, and "2" with i second.
                    win[i][j] = (first[i][j] + (1 - first[j][i])) / 2
                }
            }
            let means = (0..<count).map { (i: Int) -> Double in
                guard count > 1 else { return 0.5 }
                let others = (0..<count).filter { $0 != i }.map { (j: Int) -> Double in win[i][j] }
                return others.reduce(0, +) / Double(count - 1)
            }
            return Judgement(scores: means, winProbabilities: win)
        }
    }
}
