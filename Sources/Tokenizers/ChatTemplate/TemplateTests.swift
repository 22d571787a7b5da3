import Foundation

/// jinja2's built-in tests (`x is defined`, `x is string`, `x is equalto 3`), with Python's notion of each type:
/// bools are numbers, strings are sequences, Undefined is iterable and a sequence (it has `__iter__`, `__len__` and
/// `__getitem__`).
enum TemplateTests {
    typealias Test = @Sendable (TemplateValue, TemplateArguments) throws -> Bool

    static let all: [String: Test] = {
        @Sendable func other(_ arguments: TemplateArguments) -> TemplateValue { arguments.value(0, "other") ?? .none }
        var tests: [String: Test] = [
            "defined": { value, _ in !value.isUndefined },
            "undefined": { value, _ in value.isUndefined },
            "none": { value, _ in if case .none = value { true } else { false } },
            "string": { value, _ in if case .string = value { true } else { false } },
            "mapping": { value, _ in if case .dictionary = value { true } else { false } },
            "boolean": { value, _ in if case .bool = value { true } else { false } },
            "true": { value, _ in if case .bool(true) = value { true } else { false } },
            "false": { value, _ in if case .bool(false) = value { true } else { false } },
            "integer": { value, _ in if case .int = value { true } else { false } },
            "float": { value, _ in if case .double = value { true } else { false } },
            "number": { value, _ in
                switch value {
                case .int, .double, .bool: true
                default: false
                }
            },
            "iterable": { value, _ in
                switch value {
                case .undefined, .string, .list, .dictionary: true
                default: false
                }
            },
            "sequence": { value, _ in
                switch value {
                case .undefined, .string, .list, .dictionary: true
                default: false
                }
            },
            "callable": { value, _ in if case .function = value { true } else { false } },
            "equalto": { value, arguments in TemplateOperators.equal(value, other(arguments)) },
            "ne": { value, arguments in !TemplateOperators.equal(value, other(arguments)) },
            "lt": { value, arguments in try TemplateOperators.less(value, other(arguments)) },
            "gt": { value, arguments in try TemplateOperators.less(other(arguments), value) },
            "le": { value, arguments in try !TemplateOperators.less(other(arguments), value) },
            "ge": { value, arguments in try !TemplateOperators.less(value, other(arguments)) },
            "in": { value, arguments in try TemplateOperators.contains(arguments.value(0, "seq") ?? .none, value) },
            "sameas": { value, arguments in
                switch (value, other(arguments)) {
                case (.none, .none): true
                case (.bool(let a), .bool(let b)): a == b
                case (.namespace(let a), .namespace(let b)): a === b
                default: false
                }
            },
            "odd": { value, _ in
                guard let number = TemplateOperators.integer(value) else { throw TemplateFailure("odd needs an integer") }
                return number % 2 != 0
            },
            "even": { value, _ in
                guard let number = TemplateOperators.integer(value) else { throw TemplateFailure("even needs an integer") }
                return number % 2 == 0
            },
            "divisibleby": { value, arguments in
                guard let number = TemplateOperators.integer(value),
                      let divisor = TemplateOperators.integer(arguments.value(0, "num") ?? .none), divisor != 0 else {
                    throw TemplateFailure("divisibleby needs integers")
                }
                return number % divisor == 0
            },
            "lower": { value, _ in value.pythonString == value.pythonString.lowercased() },
            "upper": { value, _ in value.pythonString == value.pythonString.uppercased() },
        ]
        tests["=="] = tests["equalto"]
        tests["eq"] = tests["equalto"]
        tests["!="] = tests["ne"]
        tests["<"] = tests["lt"]
        tests["lessthan"] = tests["lt"]
        tests[">"] = tests["gt"]
        tests["greaterthan"] = tests["gt"]
        tests["<="] = tests["le"]
        tests[">="] = tests["ge"]
        return tests
    }()
}

/// The global functions of transformers' template environment: jinja2's `range`, `dict`, `namespace`, and
/// transformers' `raise_exception` and `strftime_now`.
enum TemplateGlobals {
    static func value(_ name: String) -> TemplateValue? {
        let body: ((TemplateArguments) throws -> TemplateValue)?
        switch name {
        case "range": body = range
        case "dict":
            body = { arguments in .dictionary(TemplateDictionary(arguments.keyword.map { ($0.name, $0.value) })) }
        case "namespace":
            body = { arguments in
                var attributes = TemplateDictionary()
                if case .dictionary(let initial)? = arguments.positional.first { attributes = initial }
                for (key, value) in arguments.keyword { attributes[key] = value }
                return .namespace(TemplateNamespace(attributes))
            }
        case "raise_exception":
            body = { arguments in
                throw TemplateFailure((arguments.value(0, "message") ?? .none).pythonString, raised: true)
            }
        case "strftime_now":
            body = { arguments in .string(strftimeNow((arguments.value(0, "format") ?? .none).pythonString)) }
        default:
            body = nil
        }
        return body.map { .function(TemplateFunction(name: name, call: $0)) }
    }

    private static func range(_ arguments: TemplateArguments) throws -> TemplateValue {
        let numbers = try arguments.positional.map { value in
            guard let number = TemplateOperators.integer(value) else {
                throw TemplateFailure("'\(value.typeName)' object cannot be interpreted as an integer")
            }
            return number
        }
        let (start, stop, step): (Int, Int, Int)
        switch numbers.count {
        case 1: (start, stop, step) = (0, numbers[0], 1)
        case 2: (start, stop, step) = (numbers[0], numbers[1], 1)
        case 3: (start, stop, step) = (numbers[0], numbers[1], numbers[2])
        default: throw TemplateFailure("range expected 1 to 3 arguments, got \(numbers.count)")
        }
        guard step != 0 else { throw TemplateFailure("range() arg 3 must not be zero") }
        guard (stop - start) / step < 100_000 else { throw TemplateFailure("range too big, maximum size is 100000") }
        return .list(Swift.stride(from: start, to: stop, by: step).map { .int($0) })
    }

    /// `datetime.now().strftime(format)`, local time.
    private static func strftimeNow(_ format: String) -> String {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        var buffer = [Int8](repeating: 0, count: 512)
        let count = strftime(&buffer, buffer.count, format, &parts)
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
