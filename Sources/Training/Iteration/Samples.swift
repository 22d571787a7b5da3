import Tokenizers

/// A prompt of the loop: text, or a chat (`{"role", "content"}` messages, TRL's conversational prompt) that the
/// tokenizer's chat template renders. Samples, pairs and the training data keep the form: a chat prompt's pairs are
/// conversational records (`chosen`/`rejected` one assistant message each), which `train` renders as TRL does.
/// Written with sorted keys, a message's keys lose their order (templates read them by name).
public enum LoopPrompt: Codable, Sendable, Equatable {
    case text(String)
    case messages([JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            self = .text(text)
            return
        }
        guard let messages = try? container.decode([JSONValue].self),
              messages.allSatisfy({ if case .string? = $0["role"], $0["content"] != nil { true } else { false } }) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription:
                "must be a string or a list of {\"role\", \"content\"} messages")
        }
        self = .messages(messages)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .text(let text): try container.encode(text)
        case .messages(let messages): try container.encode(messages)
        }
    }

    /// A completion of this prompt in the same form: the text, or one assistant message.
    func completion(_ text: String) -> LoopPrompt {
        switch self {
        case .text: .text(text)
        case .messages: .messages([.object([("role", .string("assistant")), ("content", .string(text))])])
        }
    }

    /// The prompt as the generator takes it.
    var generatorPrompt: Prompt {
        switch self {
        case .text(let text): .text(text)
        case .messages(let messages): .messages(messages)
        }
    }

    /// The prompt as one text, for a judge's template: the text, or each message as `role: content` on its line.
    var plainText: String {
        switch self {
        case .text(let text): return text
        case .messages(let messages):
            return messages.map { message in
                let role: String = if case .string(let value)? = message["role"] { value } else { "" }
                let content: String = if case .string(let value)? = message["content"] { value } else { "" }
                return "\(role): \(content)"
            }.joined(separator: "\n")
        }
    }

    var isEmpty: Bool {
        switch self {
        case .text(let text): text.isEmpty
        case .messages(let messages): messages.isEmpty
        }
    }
}

/// A prompt to sample from: a line of the prompts file given to `sample` and `iterate`, its `prompt` text or
/// messages (or a `messages` list). Other keys on the line (a preference set's `chosen` and `rejected`) are ignored,
/// so a DPO data file, plain or conversational, serves as a prompt file.
public struct PromptRecord: Decodable, Sendable, Equatable {
    public var prompt: LoopPrompt

    public init(prompt: LoopPrompt) { self.prompt = prompt }

    enum CodingKeys: String, CodingKey { case prompt, messages }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        prompt = try container.decodeIfPresent(LoopPrompt.self, forKey: .prompt)
            ?? container.decode(LoopPrompt.self, forKey: .messages)
    }
}

/// A prompt and the completions sampled for it: one line of `sample`'s output, the input of `judge`.
public struct SampledPrompt: Codable, Sendable, Equatable {
    /// The prompt's line in the prompts file.
    public var line: Int
    /// The prompt as it was rendered: a text prompt sampled with `chat` is kept as its one user message.
    public var prompt: LoopPrompt
    public var completions: [String]

    public init(line: Int, prompt: LoopPrompt, completions: [String]) {
        self.line = line
        self.prompt = prompt
        self.completions = completions
    }
}

/// A preference pair a judge made: one line of `judge`'s output, which `train` reads as an explicit-prompt
/// preference record, plain or conversational (`preference`, when present, is the pair's soft label).
public struct JudgedPair: Codable, Sendable, Equatable {
    public var prompt: LoopPrompt
    /// The completions, in the prompt's form (text, or one assistant message).
    public var chosen: LoopPrompt
    public var rejected: LoopPrompt
    /// The probability that `chosen` is the better answer, from a pairwise judge (nil: a hard label).
    public var preference: Double?
    /// The judge's scores of the two completions (higher is better).
    public var chosenScore: Double
    public var rejectedScore: Double
    /// The line of the samples file the pair came from.
    public var sampleLine: Int

    enum CodingKeys: String, CodingKey {
        case prompt, chosen, rejected, preference
        case chosenScore = "chosen_score", rejectedScore = "rejected_score", sampleLine = "sample_line"
    }

    public init(prompt: LoopPrompt, chosen: LoopPrompt, rejected: LoopPrompt, preference: Double? = nil, chosenScore: Double,
                rejectedScore: Double, sampleLine: Int) {
        self.prompt = prompt
        self.chosen = chosen
        self.rejected = rejected
        self.preference = preference
        self.chosenScore = chosenScore
        self.rejectedScore = rejectedScore
        self.sampleLine = sampleLine
    }
}

extension LoopPrompt: ExpressibleByStringLiteral {
    public init(stringLiteral text: String) { self = .text(text) }
}
