import Foundation

/// A value as a chat template sees it: the Python objects jinja2 hands a template (str, int, float, bool, None,
/// list, dict), plus jinja2's `Undefined`, `namespace()` objects and callables. Strings compare and index by Unicode
/// scalar, as Python's `str` does.
public indirect enum TemplateValue: Sendable {
    /// jinja2's default `Undefined`: renders empty, is falsy and iterates as nothing; any other use is an error
    /// naming `hint` ("'tools' is undefined").
    case undefined(hint: String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([TemplateValue])
    /// A dict; keys in insertion order (Python 3.7+).
    case dictionary(TemplateDictionary)
    /// A `namespace()`: the only mutable object a template can change (`{% set ns.x = ... %}`).
    case namespace(TemplateNamespace)
    case function(TemplateFunction)

    /// The value of a JSON document (integral numbers become ints, as Python's `json.loads` reads `1`; the JSON
    /// reader keeps no distinction between `1` and `1.0`).
    public init(json: JSONValue) {
        switch json {
        case .null: self = .none
        case .bool(let flag): self = .bool(flag)
        case .number(let number):
            if number.rounded() == number, abs(number) < 9.0e15 { self = .int(Int(number)) } else { self = .double(number) }
        case .string(let text): self = .string(text)
        case .array(let elements): self = .list(elements.map(TemplateValue.init(json:)))
        case .object(let entries):
            var dictionary = TemplateDictionary()
            for (key, value) in entries where dictionary[key] == nil { dictionary[key] = TemplateValue(json: value) }
            self = .dictionary(dictionary)
        }
    }

    var isUndefined: Bool {
        if case .undefined = self { return true }
        return false
    }

    /// Python's truthiness.
    var isTruthy: Bool {
        switch self {
        case .undefined, .none: false
        case .bool(let flag): flag
        case .int(let number): number != 0
        case .double(let number): number != 0
        case .string(let text): !text.isEmpty
        case .list(let elements): !elements.isEmpty
        case .dictionary(let dictionary): !dictionary.isEmpty
        case .namespace, .function: true
        }
    }

    /// Python's type name, for error messages ("'dict object' has no attribute 'x'").
    var typeName: String {
        switch self {
        case .undefined: "Undefined"
        case .none: "NoneType"
        case .bool: "bool"
        case .int: "int"
        case .double: "float"
        case .string: "str"
        case .list: "list"
        case .dictionary: "dict"
        case .namespace: "Namespace"
        case .function: "function"
        }
    }
}

/// An insertion-ordered dictionary with string keys compared by Unicode scalars (as Python compares `str`).
public struct TemplateDictionary: Sendable {
    /// The entries in insertion order.
    public private(set) var entries: [(key: String, value: TemplateValue)] = []

    public init() {}

    /// A dictionary of these entries; a repeated key keeps its first place and its last value, as a dict literal.
    public init(_ entries: [(String, TemplateValue)]) {
        for (key, value) in entries { self[key] = value }
    }

    public var isEmpty: Bool { entries.isEmpty }
    public var count: Int { entries.count }
    public var keys: [String] { entries.map(\.key) }

    /// The value under `key`; setting nil removes it, setting a new key appends it.
    public subscript(key: String) -> TemplateValue? {
        get { index(of: key).map { entries[$0].value } }
        set {
            if let index = index(of: key) {
                if let newValue { entries[index].value = newValue } else { entries.remove(at: index) }
            } else if let newValue {
                entries.append((key, newValue))
            }
        }
    }

    private func index(of key: String) -> Int? {
        entries.firstIndex { $0.key.unicodeScalars.elementsEqual(key.unicodeScalars) }
    }
}

/// The state of a `namespace()` object, shared by every reference to it.
public final class TemplateNamespace: @unchecked Sendable {
    var attributes: TemplateDictionary

    init(_ attributes: TemplateDictionary) { self.attributes = attributes }
}

/// A callable: a global (`range`, `raise_exception`), a bound method (`text.split`), a macro or `loop.cycle`.
public struct TemplateFunction: @unchecked Sendable {
    let name: String
    let call: (TemplateArguments) throws -> TemplateValue
}

/// The arguments of a call: positional, then keyword in the order written.
struct TemplateArguments {
    var positional: [TemplateValue] = []
    var keyword: [(name: String, value: TemplateValue)] = []
    /// The caller's body, when called from `{% call %}`.
    var caller: TemplateValue?

    /// The argument at `position`, or the keyword `name`, or nil.
    func value(_ position: Int, _ name: String) -> TemplateValue? {
        if position < positional.count { return positional[position] }
        return keyword.first { $0.name == name }?.value
    }

    /// Fails when more than `count` positional arguments, or a keyword not in `names`, were given.
    func expect(atMost count: Int, names: [String], function: String) throws {
        if positional.count > count {
            throw TemplateFailure("\(function)() takes at most \(count) arguments (\(positional.count) given)")
        }
        if let unknown = keyword.first(where: { !names.contains($0.name) }) {
            throw TemplateFailure("\(function)() got an unexpected keyword argument '\(unknown.name)'")
        }
    }
}

/// A failure with no position yet; the evaluator attaches the line and column of the expression that raised it.
struct TemplateFailure: Error {
    let message: String
    /// Raised by the template itself (`raise_exception`), not by a misuse of a value.
    var isRaised = false

    init(_ message: String, raised: Bool = false) {
        self.message = message
        isRaised = raised
    }
}
