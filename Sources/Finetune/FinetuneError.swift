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

    public var description: String {
        switch self {
        case .invalidTokenizer(let path, let reason):
            "tokenizer '\(path)': \(reason)"
        case .unsupportedTokenizerComponent(let path, let component, let type):
            "tokenizer '\(path)': \(component) of type '\(type)' is not supported"
        case .loraTargetsNotFound(let model, let reason):
            "no LoRA targets in '\(model)': \(reason)"
        }
    }
}
