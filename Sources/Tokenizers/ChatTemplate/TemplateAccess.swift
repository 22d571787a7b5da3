// How a template reaches into values, as jinja2's sandboxed environment does: `x.name` looks for a Python attribute
// (a method of str, dict or list) before a key; `x[key]` looks for a key before an attribute; a missing one is
// Undefined, except on Undefined itself, which fails.

/// `value.name`.
func attribute(of value: TemplateValue, _ name: String) throws -> TemplateValue {
    switch value {
    case .undefined(let hint):
        throw TemplateFailure(hint)
    case .dictionary(let dictionary):
        if let method = TemplateMethods.method(of: value, name) { return method }
        return dictionary[name] ?? .undefined(hint: "'dict object' has no attribute '\(name)'")
    case .namespace(let namespace):
        return namespace.attributes[name] ?? .undefined(hint: "'Namespace object' has no attribute '\(name)'")
    default:
        if let method = TemplateMethods.method(of: value, name) { return method }
        return .undefined(hint: "'\(value.typeName) object' has no attribute '\(name)'")
    }
}

/// `value[key]`.
func item(of value: TemplateValue, _ key: TemplateValue) throws -> TemplateValue {
    switch (value, key) {
    case (.undefined(let hint), _):
        throw TemplateFailure(hint)
    case (.dictionary(let dictionary), .string(let name)):
        if let found = dictionary[name] { return found }
    case (.list(let items), _):
        if let index = TemplateOperators.integer(key) {
            let position = index < 0 ? items.count + index : index
            if items.indices.contains(position) { return items[position] }
            return .undefined(hint: "list object has no element \(index)")
        }
    case (.string(let text), _):
        if let index = TemplateOperators.integer(key) {
            let scalars = Array(text.unicodeScalars)
            let position = index < 0 ? scalars.count + index : index
            if scalars.indices.contains(position) { return .string(String(scalars[position])) }
            return .undefined(hint: "str object has no element \(index)")
        }
    case (.namespace(let namespace), .string(let name)):
        if let found = namespace.attributes[name] { return found }
    default:
        break
    }
    if case .string(let name) = key, let method = TemplateMethods.method(of: value, name) { return method }
    return .undefined(hint: "'\(value.typeName) object' has no attribute \(key.pythonRepr)")
}

/// `value[start:stop:step]` on a list or a string, with Python's rules for negative and missing bounds.
func slice(_ value: TemplateValue, start: TemplateValue, stop: TemplateValue, step: TemplateValue) throws
    -> TemplateValue
{
    func bound(_ value: TemplateValue, _ name: String) throws -> Int? {
        if case .none = value { return nil }
        guard let number = TemplateOperators.integer(value) else {
            throw TemplateFailure("slice indices must be integers or None, not \(value.typeName)")
        }
        return number
    }
    let stride = try bound(step, "step") ?? 1
    guard stride != 0 else { throw TemplateFailure("slice step cannot be zero") }
    func indices(count: Int) throws -> [Int] {
        func clamp(_ index: Int?, _ defaultValue: Int) -> Int {
            guard var index else { return defaultValue }
            if index < 0 { index += count }
            return stride > 0 ? min(max(index, 0), count) : min(max(index, -1), count - 1)
        }
        let first = clamp(try bound(start, "start"), stride > 0 ? 0 : count - 1)
        let last = clamp(try bound(stop, "stop"), stride > 0 ? count : -1)
        var result: [Int] = []
        var index = first
        while stride > 0 ? index < last : index > last {
            result.append(index)
            index += stride
        }
        return result
    }
    switch value {
    case .list(let items):
        return .list(try indices(count: items.count).map { items[$0] })
    case .string(let text):
        let scalars = Array(text.unicodeScalars)
        var view = String.UnicodeScalarView()
        view.append(contentsOf: try indices(count: scalars.count).map { scalars[$0] })
        return .string(String(view))
    case .undefined(let hint):
        throw TemplateFailure(hint)
    default:
        throw TemplateFailure("'\(value.typeName)' object is not subscriptable")
    }
}

/// What `for x in value` visits: a list's items, a dict's keys, a string's characters; Undefined gives nothing.
func iterate(_ value: TemplateValue) throws -> [TemplateValue] {
    switch value {
    case .undefined: return []
    case .list(let items): return items
    case .dictionary(let dictionary): return dictionary.keys.map { .string($0) }
    case .string(let text): return text.unicodeScalars.map { .string(String($0)) }
    default: throw TemplateFailure("'\(value.typeName)' object is not iterable")
    }
}
