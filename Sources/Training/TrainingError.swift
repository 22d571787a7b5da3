/// What can go wrong preparing or running a training run (data, objective, optimiser, trainer), each case naming
/// what a user needs to act: the file, the line, the option, the step.
///
/// Options are named by their library names (`learningRate`, `maxLength`); the command line maps them to its flags.
public enum TrainingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A checkpoint's optimiser state is for another optimiser.
    case optimizerStateMismatch(expected: String, found: String)
    /// Parameters, gradients or optimiser state disagree (a bug or a corrupt checkpoint).
    case invalidTrainingState(reason: String)
    /// A preference-data record that cannot be used: not JSON, a value of the wrong kind, a format unlike the
    /// file's other records. `line` is 1-based.
    case invalidDataRecord(path: String, line: Int, reason: String)
    /// A preference-data record without a key its format needs.
    case missingDataKey(path: String, line: Int, key: String)
    /// A preference dataset with no pairs (an empty file, or every pair dropped by truncation or the split).
    case emptyDataset(path: String, reason: String)
    /// A data option out of range (`maxLength`, `evalFraction`), or a tokenizer without the token it needs.
    case invalidDataOption(option: String, reason: String)
    /// A training option is out of range.
    case invalidOption(option: String, reason: String)
    /// A model this trainer cannot train as it is (no logits output, or no single one).
    case invalidModel(path: String, reason: String)
    /// A file that could not be written (the destination is a folder, its folder is missing, the disk is full).
    case cannotWrite(path: String, reason: String)
    /// The loss, a metric or the gradient norm became NaN or infinite (`quantity` says which: "the loss",
    /// "rewards/margins", "the gradient norm"); the run stopped before writing it or stepping on it, the last
    /// checkpoint (if any) is intact. `lines` are the data lines of the batch.
    case nonFinite(quantity: String, step: Int, value: Double, lines: [Int], checkpoint: String?)
    /// A judge of the iterative loop failed: a scorer command that failed or printed something else than scores,
    /// a judge model that cannot tell its two answers apart, a judge template without its placeholders.
    case judgeFailed(judge: String, reason: String)
    /// A round of `iterate` failed; what the earlier rounds and this round's finished stages wrote in `folder` is
    /// kept, and running the same command again resumes there.
    case roundFailed(round: Int, folder: String, reason: String)

    public var description: String {
        switch self {
        case .optimizerStateMismatch(let expected, let found):
            "the checkpoint's optimiser state is for \(found), but this run uses \(expected)"
        case .invalidTrainingState(let reason):
            "invalid training state: \(reason)"
        case .invalidOption(let option, let reason):
            "\(option) \(reason)"
        case .nonFinite(let quantity, let step, let value, let lines, let checkpoint):
            "\(quantity) is \(value.isNaN ? "NaN" : "\(value)") at step \(step)"
                + (lines.isEmpty ? "; " : " (batch of data lines \(lines.map(String.init).joined(separator: ", "))); ")
                + "training stopped. " + (checkpoint.map { "The last good checkpoint is \($0); lower learningRate or check those lines, then resume." }
                    ?? "No checkpoint was written yet; lower learningRate or check those lines.")
        case .invalidDataRecord(let path, let line, let reason):
            "\(path), line \(line): \(reason)"
        case .missingDataKey(let path, let line, let key):
            "\(path), line \(line): missing key '\(key)'"
        case .emptyDataset(let path, let reason):
            "\(path): no preference pairs: \(reason)"
        case .invalidDataOption(let option, let reason):
            "\(option): \(reason)"
        case .invalidModel(let path, let reason):
            "model '\(path)': \(reason)"
        case .cannotWrite(let path, let reason):
            "cannot write '\(path)': \(reason)"
        case .judgeFailed(let judge, let reason):
            "judge \(judge): \(reason)"
        case .roundFailed(let round, let folder, let reason):
            "round \(round) (\(folder)): \(reason). Earlier rounds and this round's finished stages are kept; run the same command again to resume."
        }
    }
}
