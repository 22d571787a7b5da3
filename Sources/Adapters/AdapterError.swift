/// What can go wrong finding LoRA targets, reading, writing or applying an adapter, and exporting a model, each
/// case naming what a user needs to act: the file, the module, the tensor key, the expected and actual shape.
///
/// Options are named by their library names (`targets`, `form`); the command line maps them to its flags.
public enum AdapterError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No projection to adapt was found in the graph, or one was found but cannot be adapted.
    case loraTargetsNotFound(model: String, reason: String)
    /// A target pattern that cannot be read (empty, or a bad regular expression).
    case invalidTargetPattern(pattern: String, reason: String)
    /// An adapter whose values disagree with its own modules (a bug, or a corrupt checkpoint).
    case inconsistentAdapter(reason: String)
    /// A safetensors file that cannot be read or breaks the format (the reason names the tensor).
    case invalidSafeTensors(path: String, reason: String)
    /// A file that could not be written (the destination is a folder, its folder is missing, the disk is full).
    case cannotWrite(path: String, reason: String)
    /// An adapter folder, or one of its files, that does not exist.
    case adapterNotFound(path: String)
    /// An adapter this loader does not apply (another PEFT method, DoRA, per-module rank or alpha patterns).
    case unsupportedAdapter(path: String, reason: String)
    /// An adapter whose configuration or tensor names cannot be read.
    case invalidAdapter(path: String, reason: String)
    /// An adapter whose modules differ from the model's (`module` is the Hugging Face module path).
    case adapterModuleMismatch(path: String, module: String, reason: String)
    /// An adapter tensor whose shape is not the one the model's module needs.
    case adapterShapeMismatch(path: String, key: String, expected: [Int], actual: [Int])
    /// An export or conversion option that cannot be honoured.
    case invalidOption(option: String, reason: String)

    public var description: String {
        switch self {
        case .loraTargetsNotFound(let model, let reason):
            "no LoRA targets in '\(model)': \(reason)"
        case .invalidTargetPattern(let pattern, let reason):
            "target pattern '\(pattern)': \(reason)"
        case .inconsistentAdapter(let reason):
            "inconsistent adapter: \(reason)"
        case .invalidSafeTensors(let path, let reason):
            "safetensors file '\(path)': \(reason)"
        case .cannotWrite(let path, let reason):
            "cannot write '\(path)': \(reason)"
        case .adapterNotFound(let path):
            "adapter: '\(path)' does not exist"
        case .unsupportedAdapter(let path, let reason):
            "adapter '\(path)' is not supported: \(reason)"
        case .invalidAdapter(let path, let reason):
            "adapter '\(path)': \(reason)"
        case .adapterModuleMismatch(let path, let module, let reason):
            "adapter '\(path)': module '\(module)' \(reason)"
        case .adapterShapeMismatch(let path, let key, let expected, let actual):
            "adapter '\(path)': '\(key)' has shape \(actual), but the model needs \(expected)"
        case .invalidOption(let option, let reason):
            "\(option): \(reason)"
        }
    }
}
