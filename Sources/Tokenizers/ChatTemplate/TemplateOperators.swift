import Foundation

/// Python's operators on template values: what `+`, `==`, `<`, `in` do to str, int, float, bool, list and dict.
/// jinja2's `Undefined` fails in arithmetic and ordering, and equals only another Undefined.
enum TemplateOperators {
    private static func undefinedFailure(_ values: TemplateValue...) -> TemplateFailure? {
        for case .undefined(let hint) in values { return TemplateFailure(hint) }
        return nil
    }

    /// A number's value as Int (bools count as 0 and 1), or nil.
    static func integer(_ value: TemplateValue) -> Int? {
        switch value {
        case .int(let number): number
        case .bool(let flag): flag ? 1 : 0
        default: nil
        }
    }

    static func double(_ value: TemplateValue) -> Double? {
        switch value {
        case .double(let number): number
        default: integer(value).map(Double.init)
        }
    }

    /// The most copies `'text' * n` and `[items] * n` make (a template is untrusted input).
    private static let maximumRepetition = 1_000_000

    static func negate(_ value: TemplateValue) throws -> TemplateValue {
        if let failure = undefinedFailure(value) { throw failure }
        if let number = integer(value) { return .int(-number) }
        if case .double(let number) = value { return .double(-number) }
        throw TemplateFailure("bad operand type for unary -: '\(value.typeName)'")
    }

    static func arithmetic(_ symbol: String, _ left: TemplateValue, _ right: TemplateValue) throws -> TemplateValue {
        if symbol == "~" { return .string(left.pythonString + right.pythonString) }
        if let failure = undefinedFailure(left, right) { throw failure }
        let unsupported = TemplateFailure(
            "unsupported operand type(s) for \(symbol): '\(left.typeName)' and '\(right.typeName)'")
        if symbol == "*", let count = integer(left) ?? integer(right), count > maximumRepetition {
            throw TemplateFailure("repeating a value \(count) times is more than the \(maximumRepetition) allowed")
        }
        switch (symbol, left, right) {
        case ("+", .string(let a), .string(let b)): return .string(a + b)
        case ("+", .list(let a), .list(let b)): return .list(a + b)
        case ("*", .string(let text), _) where integer(right) != nil:
            return .string(String(repeating: text, count: max(0, integer(right) ?? 0)))
        case ("*", _, .string(let text)) where integer(left) != nil:
            return .string(String(repeating: text, count: max(0, integer(left) ?? 0)))
        case ("*", .list(let items), _) where integer(right) != nil:
            return .list(Array(repeating: items, count: max(0, integer(right) ?? 0)).flatMap { $0 })
        case ("%", .string(let format), _):
            return .string(try percentFormat(format, right))
        default: break
        }
        if let a = integer(left), let b = integer(right) {
            switch symbol {
            case "+": return .int(a &+ b)
            case "-": return .int(a &- b)
            case "*": return .int(a &* b)
            case "/":
                guard b != 0 else { throw TemplateFailure("division by zero") }
                return .double(Double(a) / Double(b))
            case "//":
                guard b != 0 else { throw TemplateFailure("integer division or modulo by zero") }
                return .int(Int((Double(a) / Double(b)).rounded(.down)))
            case "%":
                guard b != 0 else { throw TemplateFailure("integer division or modulo by zero") }
                let remainder = a % b
                return .int(remainder != 0 && (remainder < 0) != (b < 0) ? remainder + b : remainder)
            case "**":
                if b >= 0 {
                    var result = 1
                    for _ in 0..<b { result = result &* a }
                    return .int(result)
                }
                return .double(pow(Double(a), Double(b)))
            default: throw unsupported
            }
        }
        guard let a = double(left), let b = double(right) else { throw unsupported }
        switch symbol {
        case "+": return .double(a + b)
        case "-": return .double(a - b)
        case "*": return .double(a * b)
        case "/":
            guard b != 0 else { throw TemplateFailure("float division by zero") }
            return .double(a / b)
        case "//":
            guard b != 0 else { throw TemplateFailure("float floor division by zero") }
            return .double((a / b).rounded(.down))
        case "%":
            guard b != 0 else { throw TemplateFailure("float modulo") }
            let remainder = fmod(a, b)
            return .double(remainder != 0 && (remainder < 0) != (b < 0) ? remainder + b : remainder)
        case "**": return .double(pow(a, b))
        default: throw unsupported
        }
    }

    /// Python's `==`.
    static func equal(_ left: TemplateValue, _ right: TemplateValue) -> Bool {
        switch (left, right) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.undefined, _), (_, .undefined), (.none, _), (_, .none): return false
        case (.string(let a), .string(let b)): return a.unicodeScalars.elementsEqual(b.unicodeScalars)
        case (.list(let a), .list(let b)): return a.count == b.count && zip(a, b).allSatisfy { equal($0, $1) }
        case (.dictionary(let a), .dictionary(let b)):
            return a.count == b.count && a.entries.allSatisfy { entry in
                b[entry.key].map { equal(entry.value, $0) } ?? false
            }
        case (.namespace(let a), .namespace(let b)): return a === b
        default:
            if let a = integer(left), let b = integer(right) { return a == b }
            if let a = double(left), let b = double(right) { return a == b }
            return false
        }
    }

    /// Python's `<` (numbers, strings by code point, lists element by element).
    static func less(_ left: TemplateValue, _ right: TemplateValue, symbol: String = "<") throws -> Bool {
        if let failure = undefinedFailure(left, right) { throw failure }
        switch (left, right) {
        case (.string(let a), .string(let b)):
            return a.unicodeScalars.lexicographicallyPrecedes(b.unicodeScalars) { $0.value < $1.value }
        case (.list(let a), .list(let b)):
            for (x, y) in zip(a, b) where !equal(x, y) { return try less(x, y, symbol: symbol) }
            return a.count < b.count
        default:
            if let a = integer(left), let b = integer(right) { return a < b }
            if let a = double(left), let b = double(right) { return a < b }
            throw TemplateFailure(
                "'\(symbol)' not supported between instances of '\(left.typeName)' and '\(right.typeName)'")
        }
    }

    /// Python's `item in container`.
    static func contains(_ container: TemplateValue, _ item: TemplateValue) throws -> Bool {
        switch container {
        case .undefined: return false
        case .string(let text):
            guard case .string(let part) = item else {
                throw TemplateFailure("'in <string>' requires string as left operand, not \(item.typeName)")
            }
            return part.isEmpty || scalarRange(of: Array(part.unicodeScalars), in: Array(text.unicodeScalars)) != nil
        case .list(let items): return items.contains { equal($0, item) }
        case .dictionary(let dictionary):
            guard case .string(let key) = item else { return false }
            return dictionary[key] != nil
        case .namespace(let namespace):
            guard case .string(let key) = item else { return false }
            return namespace.attributes[key] != nil
        default:
            throw TemplateFailure("argument of type '\(container.typeName)' is not iterable")
        }
    }

    static func compare(_ symbol: String, _ left: TemplateValue, _ right: TemplateValue) throws -> Bool {
        switch symbol {
        case "==": equal(left, right)
        case "!=": !equal(left, right)
        case "<": try less(left, right, symbol: symbol)
        case ">": try less(right, left, symbol: symbol)
        case "<=": try !less(right, left, symbol: symbol)
        case ">=": try !less(left, right, symbol: symbol)
        case "in": try contains(right, left)
        default: try !contains(right, left)
        }
    }

    /// Python's `format % values` for `%s`, `%d`, `%i`, `%r`, `%f` (with an optional precision) and `%%`.
    static func percentFormat(_ format: String, _ values: TemplateValue) throws -> String {
        var arguments: [TemplateValue]
        if case .list(let items) = values { arguments = items } else { arguments = [values] }
        var result = ""
        var scalars = Array(format.unicodeScalars)[...]
        while let scalar = scalars.popFirst() {
            guard scalar == "%" else {
                result.unicodeScalars.append(scalar)
                continue
            }
            var precision: Int?
            if scalars.first == "." {
                scalars.removeFirst()
                var digits = ""
                while let digit = scalars.first, ("0"..."9").contains(digit) {
                    digits.unicodeScalars.append(digit)
                    scalars.removeFirst()
                }
                precision = Int(digits) ?? 0
            }
            guard let conversion = scalars.popFirst() else { throw TemplateFailure("incomplete format") }
            if conversion == "%" {
                result += "%"
                continue
            }
            guard !arguments.isEmpty else { throw TemplateFailure("not enough arguments for format string") }
            let argument = arguments.removeFirst()
            switch conversion {
            case "s": result += argument.pythonString
            case "r": result += argument.pythonRepr
            case "d", "i":
                guard let number = double(argument) else {
                    throw TemplateFailure("%\(conversion) format: a real number is required, not \(argument.typeName)")
                }
                result += String(Int(number))
            case "f":
                guard let number = double(argument) else {
                    throw TemplateFailure("must be real number, not \(argument.typeName)")
                }
                result += String(format: "%.\(precision ?? 6)f", number)
            default:
                throw TemplateFailure("unsupported format character '\(conversion)'")
            }
        }
        guard arguments.isEmpty else { throw TemplateFailure("not all arguments converted during string formatting") }
        return result
    }
}

/// Where `part` first occurs in `text` (Unicode scalars), from `start`.
func scalarRange(of part: [Unicode.Scalar], in text: [Unicode.Scalar], from start: Int = 0) -> Range<Int>? {
    guard part.count <= text.count else { return nil }
    var index = start
    while index + part.count <= text.count {
        if text[index..<index + part.count].elementsEqual(part) { return index..<index + part.count }
        index += 1
    }
    return nil
}
