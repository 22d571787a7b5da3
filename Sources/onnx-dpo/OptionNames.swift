import Adapters
import Foundation
import Training

/// The flag that sets each library option, by the name `TrainingError` and `AdapterError` give it: the one table
/// between the library's names and the command line's.
let flagsByOption: [String: String] = [
    "lora.rank": "--rank", "lora.alpha": "--alpha", "lora.dropout": "--dropout", "targets": "--target",
    "objective.beta": "--beta", "kto.beta": "--beta", "kto.desirableWeight": "--desirable-weight",
    "kto.undesirableWeight": "--undesirable-weight", "kto": "--loss kto", "learningRate": "--lr", "weightDecay": "--weight-decay",
    "warmupSteps": "--warmup-steps", "maxGradNorm": "--max-grad-norm", "batchSize": "--batch-size",
    "gradientAccumulation": "--grad-accum", "maxSteps": "--max-steps", "epochs": "--epochs",
    "evalEvery": "--eval-every", "checkpointEvery": "--checkpoint-every", "resume": "--resume",
    "maxLength": "--max-length", "evalFraction": "--eval-fraction",
    "form": "--form", "logitsOutput": "--logits-output",
    "objective.labelSmoothing": "--label-smoothing", "objective.simpoGamma": "--simpo-gamma",
    "objective.cpoAlpha": "--cpo-alpha", "objective.tdpoAlpha": "--tdpo-alpha", "objective.terms": "--loss",
    "pairs": "--pairs", "seq": "--seq", "steps": "--steps", "warmup": "--warmup",
    "modelPath": "--model", "tokenizerPath": "--tokenizer", "judgeModel": "--judge", "judgeTemplate": "--judge-template",
    "judgeChoices": "--judge-choices", "command": "--command", "margin": "--margin",
    "maxNewTokens": "--max-new-tokens", "temperature": "--temperature", "topK": "--top-k", "topP": "--top-p",
    "minP": "--min-p", "repetitionPenalty": "--repetition-penalty", "numReturnSequences": "--num-return-sequences",
    "prompt": "--prompt", "promptFile": "--prompt-file", "stop": "--stop", "tokenizer": "--tokenizer",
    "promptTokens": "--prompt-tokens", "adapter": "--adapter", "newTokens": "--new-tokens", "batch": "--batch",
]

/// The flag for a library option name (the name itself when no flag sets it).
func flag(_ option: String) -> String { flagsByOption[option] ?? option }

/// A message for the command line, printed as ArgumentParser prints any error (`Error: <description>`).
struct CommandLineError: Error, CustomStringConvertible {
    var description: String
}

/// `error` as the command line reports it: a library error that names an option names its flag instead
/// (`batchSize must be at least 1` becomes `--batch-size must be at least 1`); any other error is unchanged.
func namingFlags(_ error: any Error) -> any Error {
    switch error {
    case TrainingError.invalidOption(let option, let reason):
        TrainingError.invalidOption(option: flag(option), reason: reason)
    case TrainingError.invalidDataOption(let option, let reason):
        TrainingError.invalidDataOption(option: flag(option), reason: reason)
    case TrainingError.nonFinite:
        // The hint names the rate and resuming; the library says it in its own names.
        CommandLineError(description: "\(error)"
            .replacingOccurrences(of: "lower learningRate", with: "lower \(flag("learningRate"))")
            .replacingOccurrences(of: "then resume.", with: "then \(flag("resume"))."))
    case AdapterError.invalidOption(let option, let reason):
        AdapterError.invalidOption(option: flag(option), reason: reason)
    case TrainingError.invalidModel(let path, let reason):
        TrainingError.invalidModel(path: path, reason: reason.replacingOccurrences(of: "logitsOutput", with: flag("logitsOutput")))
    case AdapterError.invalidTargetPattern(let pattern, let reason):
        CommandLineError(description: "\(flag("targets")) '\(pattern)': \(reason)")
    default:
        error
    }
}
