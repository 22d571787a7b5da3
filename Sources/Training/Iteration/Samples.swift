/// A prompt to sample from: a line of the prompts file given to `sample` and `iterate`. Other keys on the line
/// (a preference set's `chosen` and `rejected`) are ignored, so a DPO data file serves as a prompt file.
public struct PromptRecord: Decodable, Sendable, Equatable {
    public var prompt: String

    public init(prompt: String) { self.prompt = prompt }
}

/// A prompt and the completions sampled for it: one line of `sample`'s output, the input of `judge`.
public struct SampledPrompt: Codable, Sendable, Equatable {
    /// The prompt's line in the prompts file.
    public var line: Int
    public var prompt: String
    public var completions: [String]

    public init(line: Int, prompt: String, completions: [String]) {
        self.line = line
        self.prompt = prompt
        self.completions = completions
    }
}

/// A preference pair a judge made: one line of `judge`'s output, which `train` reads as an explicit-prompt
/// preference record (`preference`, when present, is the pair's soft label).
public struct JudgedPair: Codable, Sendable, Equatable {
    public var prompt: String
    public var chosen: String
    public var rejected: String
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

    public init(prompt: String, chosen: String, rejected: String, preference: Double? = nil, chosenScore: Double,
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
