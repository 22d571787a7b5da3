import Foundation
import ONNXGraph

/// How a prompt's judged completions become preference pairs.
public enum PairSelection: String, Sendable, CaseIterable, Codable {
    /// The best completion against the worst, when they differ by more than the margin (self-rewarding LMs,
    /// Snorkel's iterative DPO).
    case bestVsWorst = "best-vs-worst"
    /// Every pair that differs by more than the margin (factuality tuning; RLAIF's pairwise labels).
    case all
}

/// What a `judge` run made.
public struct JudgeSummary: Codable, Sendable, Equatable {
    public var prompts: Int
    public var completions: Int
    public var pairs: Int
    /// Prompts none of whose completions could be paired (all tied, or within the margin).
    public var promptsWithoutPairs: Int
    /// The mean score over every completion, and what a score is.
    public var meanScore: Double
    public var scoreName: String

    enum CodingKeys: String, CodingKey {
        case prompts, completions, pairs
        case promptsWithoutPairs = "prompts_without_pairs", meanScore = "mean_score", scoreName = "score_name"
    }
}

public enum Judging {
    /// The pairs of one prompt's completions under `selection`. Scores must differ by more than `margin` (a
    /// pairwise judge's win probability from ½ by more than `margin`); identical completions are never paired.
    public static func pairs(_ sample: SampledPrompt, _ judgement: Judgement, selection: PairSelection,
                             margin: Double) -> [JudgedPair] {
        let texts = sample.completions, scores = judgement.scores
        func pair(_ better: Int, _ worse: Int) -> JudgedPair? {
            guard texts[better] != texts[worse] else { return nil }
            var preference: Double?
            if let win = judgement.winProbabilities {
                let p = win[better][worse]
                guard abs(p - 0.5) > margin else { return nil }
                if p < 0.5 { return pair(worse, better) }
                preference = p
            } else {
                guard scores[better] - scores[worse] > margin else { return nil }
            }
            return JudgedPair(prompt: sample.prompt, chosen: sample.prompt.completion(texts[better]),
                              rejected: sample.prompt.completion(texts[worse]), preference: preference,
                              chosenScore: scores[better], rejectedScore: scores[worse], sampleLine: sample.line)
        }
        guard texts.count >= 2 else { return [] }
        switch selection {
        case .bestVsWorst:
            // The first best and the last worst, so that ties resolve the same way every run.
            let best = scores.indices.max { scores[$0] < scores[$1] || (scores[$0] == scores[$1] && $0 > $1) }!
            let worst = scores.indices.min { scores[$0] < scores[$1] || (scores[$0] == scores[$1] && $0 > $1) }!
            return best == worst ? [] : pair(best, worst).map { [$0] } ?? []
        case .all:
            var result: [JudgedPair] = []
            for i in texts.indices {
                for j in texts.indices where j > i {
                    let ordered = judgement.winProbabilities != nil || scores[i] >= scores[j] ? (i, j) : (j, i)
                    if let made = pair(ordered.0, ordered.1) { result.append(made) }
                }
            }
            return result
        }
    }

    /// `onnx-dpo judge`: judges every prompt of the samples file at `input`, builds pairs (`selection`, or the
    /// judge's own default), and writes them to `output` as preference JSONL, atomically. Throws
    /// `TrainingError.emptyDataset` when no prompt gives a pair.
    @discardableResult
    public static func run(input: String, output: String, judge: any CompletionJudge, selection: PairSelection? = nil,
                           margin: Double = 0) throws -> JudgeSummary {
        guard margin >= 0, margin.isFinite else {
            throw TrainingError.invalidOption(option: "margin", reason: "must be a finite number of at least 0, got \(margin)")
        }
        let samples = try JSONLines.read(SampledPrompt.self, from: input).map { line, sample in
            var sample = sample
            sample.line = sample.line > 0 ? sample.line : line
            return sample
        }
        let judgements = try judge.judge(samples, path: input)
        var lines = Data()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var pairs = 0, unpaired = 0
        for (sample, judgement) in zip(samples, judgements) {
            let made = Self.pairs(sample, judgement, selection: selection ?? judge.defaultSelection, margin: margin)
            if made.isEmpty { unpaired += 1 }
            pairs += made.count
            for pair in made {
                lines += try encoder.encode(pair)
                lines.append(0x0A)
            }
        }
        let allScores = judgements.flatMap(\.scores)
        guard pairs > 0 else {
            throw TrainingError.emptyDataset(path: input, reason:
                "the judge left no usable pair: every prompt's completions are identical, tied or within the margin "
                + "(\(margin)) of each other; sample more completions (--n) or at a higher temperature")
        }
        do { try AtomicFile.write(lines, to: output) } catch { throw TrainingError.cannotWrite(path: output, reason: "\(error)") }
        return JudgeSummary(prompts: samples.count, completions: allScores.count, pairs: pairs, promptsWithoutPairs: unpaired,
                            meanScore: allScores.reduce(0, +) / Double(max(allScores.count, 1)), scoreName: judge.scoreName)
    }
}
