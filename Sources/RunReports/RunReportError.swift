/// What can go wrong writing event files or a report, with the file at fault.
public enum RunReportError: Error, CustomStringConvertible {
    case cannotWrite(path: String, reason: String)
    case missingMetrics(path: String, hint: String)

    public var description: String {
        switch self {
        case .cannotWrite(let path, let reason): return "cannot write \(path): \(reason)"
        case .missingMetrics(let path, let hint): return "no metrics in \(path): \(hint)"
        }
    }
}
