/// What can go wrong with a chat template, each case naming the place in the template at fault.
public enum ChatTemplateError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The template does not parse (an unclosed tag, a missing `endif`, a malformed expression).
    case syntax(message: String, location: SourceLocation)
    /// A jinja2 construct this engine does not implement (`{% include %}`, an unknown filter or test).
    case unsupported(construct: String, location: SourceLocation)
    /// Rendering failed: a type error, an undefined value used as an object, a division by zero.
    case runtime(message: String, location: SourceLocation)
    /// The template called `raise_exception(message)`.
    case raised(message: String, location: SourceLocation)
    /// No template, or a tokenizer_config.json that cannot give one.
    case invalidConfiguration(path: String, reason: String)
    /// Messages or variables a template cannot be given (a message that is not an object).
    case invalidInput(reason: String)

    public var description: String {
        switch self {
        case .syntax(let message, let location):
            "chat template syntax error at \(location): \(message)"
        case .unsupported(let construct, let location):
            "chat template at \(location): \(construct) is not supported"
        case .runtime(let message, let location):
            "chat template error at \(location): \(message)"
        case .raised(let message, let location):
            "chat template raised an exception at \(location): \(message)"
        case .invalidConfiguration(let path, let reason):
            "chat template of '\(path)': \(reason)"
        case .invalidInput(let reason):
            "chat template input: \(reason)"
        }
    }

    /// The template location the error names, if any.
    public var location: SourceLocation? {
        switch self {
        case .syntax(_, let location), .unsupported(_, let location), .runtime(_, let location),
             .raised(_, let location):
            location
        case .invalidConfiguration, .invalidInput:
            nil
        }
    }
}
