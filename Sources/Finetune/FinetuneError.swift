/// What can go wrong preparing a fine-tuning run (tokenizer, adapters, data, training), each case naming what a
/// user needs to act: the file, the line, the node, the component.
public enum FinetuneError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A `tokenizer.json` that cannot be read or is inconsistent.
    case invalidTokenizer(path: String, reason: String)
    /// A `tokenizer.json` component (normalizer, pre-tokenizer, model, post-processor, decoder) of a type this
    /// tokenizer does not implement.
    case unsupportedTokenizerComponent(path: String, component: String, type: String)
    /// No projection to adapt was found in the graph, or one was found but cannot be adapted.
    case loraTargetsNotFound(model: String, reason: String)
    /// A `--target` pattern that cannot be read (empty, or a bad regular expression).
    case invalidTargetPattern(pattern: String, reason: String)
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
    /// A data option out of range (`--max-length`, `--eval-fraction`), or a tokenizer without the token it needs.
    case invalidDataOption(option: String, reason: String)
    /// A safetensors file that cannot be read or breaks the format (the reason names the tensor).
    case invalidSafeTensors(path: String, reason: String)
    /// A file that could not be written (the destination is a folder, its folder is missing, the disk is full).
    case cannotWrite(path: String, reason: String)
    /// A PEFT adapter folder, or one of its files, that does not exist.
    case adapterNotFound(path: String)
    /// A PEFT adapter this loader does not apply (another PEFT method, DoRA, per-module rank or alpha patterns).
    case unsupportedAdapter(path: String, reason: String)
    /// A PEFT adapter whose `adapter_config.json` or tensor names cannot be read.
    case invalidAdapter(path: String, reason: String)
    /// A PEFT adapter whose modules differ from the model's (`module` is the Hugging Face module path).
    case adapterModuleMismatch(path: String, module: String, reason: String)
    /// A PEFT adapter tensor whose shape is not the one the model's module needs.
    case adapterShapeMismatch(path: String, key: String, expected: [Int], actual: [Int])
    /// A training option is out of range.
    case invalidOption(option: String, reason: String)
    /// The loss became NaN or infinite; the run stopped, the last checkpoint (if any) is intact.
    case nonFiniteLoss(step: Int, loss: Double, lines: [Int], checkpoint: String?)

    public var description: String {
        switch self {
        case .invalidTokenizer(let path, let reason):
            "tokenizer '\(path)': \(reason)"
        case .unsupportedTokenizerComponent(let path, let component, let type):
            "tokenizer '\(path)': \(component) of type '\(type)' is not supported"
        case .loraTargetsNotFound(let model, let reason):
            "no LoRA targets in '\(model)': \(reason)"
        case .invalidTargetPattern(let pattern, let reason):
            "--target '\(pattern)': \(reason)"
        case .optimizerStateMismatch(let expected, let found):
            "the checkpoint's optimiser state is for \(found), but this run uses \(expected)"
        case .invalidTrainingState(let reason):
            "invalid training state: \(reason)"
        case .invalidOption(let option, let reason):
            "\(option) \(reason)"
        case .nonFiniteLoss(let step, let loss, let lines, let checkpoint):
            "the loss is \(loss) at step \(step) (batch of data lines \(lines.map(String.init).joined(separator: ", "))); "
                + "training stopped. " + (checkpoint.map { "The last good checkpoint is \($0); lower --lr or check those lines, then --resume." }
                    ?? "No checkpoint was written yet; lower --lr or check those lines.")
        case .invalidDataRecord(let path, let line, let reason):
            "\(path), line \(line): \(reason)"
        case .missingDataKey(let path, let line, let key):
            "\(path), line \(line): missing key '\(key)'"
        case .emptyDataset(let path, let reason):
            "\(path): no preference pairs: \(reason)"
        case .invalidDataOption(let option, let reason):
            "\(option): \(reason)"
        case .invalidSafeTensors(let path, let reason):
            "safetensors file '\(path)': \(reason)"
        case .cannotWrite(let path, let reason):
            "cannot write '\(path)': \(reason)"
        case .adapterNotFound(let path):
            "PEFT adapter: '\(path)' does not exist"
        case .unsupportedAdapter(let path, let reason):
            "PEFT adapter '\(path)' is not supported: \(reason)"
        case .invalidAdapter(let path, let reason):
            "PEFT adapter '\(path)': \(reason)"
        case .adapterModuleMismatch(let path, let module, let reason):
            "PEFT adapter '\(path)': module '\(module)' \(reason)"
        case .adapterShapeMismatch(let path, let key, let expected, let actual):
            "PEFT adapter '\(path)': '\(key)' has shape \(actual), but the model needs \(expected)"
        }
    }
}
