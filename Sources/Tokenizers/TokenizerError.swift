/// What can go wrong reading a tokenizer, each case naming the file and the component at fault.
public enum TokenizerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A `tokenizer.json` that cannot be read or is inconsistent.
    case invalidTokenizer(path: String, reason: String)
    /// A `tokenizer.json` component (normalizer, pre-tokenizer, model, post-processor, decoder) of a type this
    /// tokenizer does not implement.
    case unsupportedTokenizerComponent(path: String, component: String, type: String)

    public var description: String {
        switch self {
        case .invalidTokenizer(let path, let reason):
            "tokenizer '\(path)': \(reason)"
        case .unsupportedTokenizerComponent(let path, let component, let type):
            "tokenizer '\(path)': \(component) of type '\(type)' is not supported"
        }
    }
}
