import Foundation

/// Variables visible at one point of a template. jinja2's scoping: a `for` iteration and a macro call get a scope
/// of their own (what they `set` does not leak out); `if` does not.
final class TemplateScope {
    private var variables: [String: TemplateValue] = [:]
    let parent: TemplateScope?

    init(parent: TemplateScope?, variables: [String: TemplateValue] = [:]) {
        self.parent = parent
        self.variables = variables
    }

    func lookUp(_ name: String) -> TemplateValue? {
        var scope: TemplateScope? = self
        while let current = scope {
            if let value = current.variables[name] { return value }
            scope = current.parent
        }
        return nil
    }

    func set(_ name: String, _ value: TemplateValue) { variables[name] = value }

    /// Drops every variable: breaks the cycle a macro makes with the scope it is defined in (the scope holds the
    /// macro, whose closure holds the scope), which reference counting would never free.
    func removeAll() { variables.removeAll() }
}

/// What a statement asks of the loop around it.
private enum ControlFlow {
    case proceed, breakLoop, continueLoop
}

/// Renders a parsed template: statements write into `output`, expressions evaluate to `TemplateValue`s.
final class TemplateEvaluator {
    private var output = ""
    /// Macro calls under way: a template that recurses without end fails (as Python's RecursionError) instead of
    /// overflowing the stack.
    private var callDepth = 0
    private static let maximumCallDepth = 100
    /// The scopes macros were defined in and the namespaces assigned to: cleared when rendering ends, since a macro
    /// in its own scope (or a namespace holding itself) is a reference cycle.
    private var cyclicScopes: [TemplateScope] = []
    private var assignedNamespaces: [TemplateNamespace] = []

    static func render(_ statements: [Statement], scope: TemplateScope) throws(ChatTemplateError) -> String {
        let evaluator = TemplateEvaluator()
        defer {
            for scope in evaluator.cyclicScopes { scope.removeAll() }
            for namespace in evaluator.assignedNamespaces { namespace.attributes = TemplateDictionary() }
        }
        do {
            _ = try evaluator.execute(statements, scope: scope)
        } catch let error as ChatTemplateError {
            throw error
        } catch {
            throw .runtime(message: "\(error)", location: SourceLocation(line: 1, column: 1))
        }
        return evaluator.output
    }

    // MARK: Statements

    private func execute(_ statements: [Statement], scope: TemplateScope) throws -> ControlFlow {
        for statement in statements {
            let flow = try execute(statement, scope: scope)
            if flow != .proceed { return flow }
        }
        return .proceed
    }

    /// The output of `statements`, rendered apart (block set, macro bodies, filter blocks).
    private func capture(_ statements: [Statement], scope: TemplateScope) throws -> String {
        let saved = output
        output = ""
        defer { output = saved }
        _ = try execute(statements, scope: scope)
        return output
    }

    private func execute(_ statement: Statement, scope: TemplateScope) throws -> ControlFlow {
        switch statement {
        case .text(let text):
            output += text
        case .output(let expression):
            output += try evaluate(expression, scope: scope).pythonString
        case .conditional(let branches, let otherwise):
            for branch in branches where try evaluate(branch.condition, scope: scope).isTruthy {
                return try execute(branch.body, scope: scope)
            }
            return try execute(otherwise, scope: scope)
        case .loop(let target, let iterable, let filter, let body, let otherwise, let location):
            return try executeLoop(target: target, iterable: iterable, filter: filter, body: body,
                                   otherwise: otherwise, location: location, scope: scope)
        case .assign(let target, let expression, let location):
            try bind(target, try evaluate(expression, scope: scope), scope: scope, location: location)
        case .assignBlock(let target, let body, let filters, let location):
            var value = TemplateValue.string(try capture(body, scope: scope))
            for filter in filters {
                value = try applyFilter(filter.name, to: value, arguments: filter.arguments, scope: scope,
                                        location: filter.location)
            }
            try bind(target, value, scope: scope, location: location)
        case .macro(let definition):
            scope.set(definition.name, .function(makeMacro(definition, scope: scope)))
        case .callBlock(let call, let parameters, let body):
            guard case .call(let callee, let arguments) = call.kind else { return .proceed }
            let caller = makeMacro(MacroDefinition(name: "caller", parameters: parameters, body: body), scope: scope)
            let value = try evaluateCall(callee, arguments, caller: .function(caller), location: call.location,
                                         scope: scope)
            output += value.pythonString
        case .filterBlock(let filters, let body):
            var value = TemplateValue.string(try capture(body, scope: scope))
            for filter in filters {
                value = try applyFilter(filter.name, to: value, arguments: filter.arguments, scope: scope,
                                        location: filter.location)
            }
            output += value.pythonString
        case .scoped(let assignments, let body, let location):
            let inner = TemplateScope(parent: scope)
            for (name, value) in assignments {
                try bind(.name(name), try evaluate(value, scope: scope), scope: inner, location: location)
            }
            return try execute(body, scope: inner)
        case .breakLoop:
            return .breakLoop
        case .continueLoop:
            return .continueLoop
        }
        return .proceed
    }

    private func executeLoop(target: AssignmentTarget, iterable: Expression, filter: Expression?, body: [Statement],
                             otherwise: [Statement], location: SourceLocation, scope: TemplateScope) throws
        -> ControlFlow
    {
        let sequence = try evaluate(iterable, scope: scope)
        var items: [TemplateValue]
        do {
            items = try iterate(sequence)
        } catch let failure as TemplateFailure {
            throw ChatTemplateError.runtime(message: failure.message, location: iterable.location)
        }
        if let filter {
            items = try items.filter { item in
                let filterScope = TemplateScope(parent: scope)
                try bind(target, item, scope: filterScope, location: location)
                return try evaluate(filter, scope: filterScope).isTruthy
            }
        }
        if items.isEmpty {
            _ = try execute(otherwise, scope: TemplateScope(parent: scope))
            return .proceed
        }
        let count = items.count
        for (index, item) in items.enumerated() {
            let iterationScope = TemplateScope(parent: scope)
            try bind(target, item, scope: iterationScope, location: location)
            var loop = TemplateDictionary([
                ("index", .int(index + 1)), ("index0", .int(index)),
                ("revindex", .int(count - index)), ("revindex0", .int(count - index - 1)),
                ("first", .bool(index == 0)), ("last", .bool(index == count - 1)),
                ("length", .int(count)), ("depth", .int(1)), ("depth0", .int(0)),
            ])
            if index > 0 { loop["previtem"] = items[index - 1] }
            if index < count - 1 { loop["nextitem"] = items[index + 1] }
            loop["cycle"] = .function(TemplateFunction(name: "loop.cycle") { arguments in
                guard !arguments.positional.isEmpty else { throw TemplateFailure("no items for cycling given") }
                return arguments.positional[index % arguments.positional.count]
            })
            iterationScope.set("loop", .dictionary(loop))
            if try execute(body, scope: iterationScope) == .breakLoop { break }
        }
        return .proceed
    }

    /// Binds a loop or `set` target (unpacking a tuple target; `ns.attribute` writes into the namespace).
    private func bind(_ target: AssignmentTarget, _ value: TemplateValue, scope: TemplateScope,
                      location: SourceLocation) throws {
        switch target {
        case .name(let name):
            scope.set(name, value)
        case .tuple(let names):
            let parts: [TemplateValue]
            do { parts = try iterate(value) } catch let failure as TemplateFailure {
                throw ChatTemplateError.runtime(message: "cannot unpack: \(failure.message)", location: location)
            }
            guard parts.count == names.count else {
                throw ChatTemplateError.runtime(
                    message: "cannot unpack \(parts.count) values into \(names.count) names", location: location)
            }
            for (name, part) in zip(names, parts) { scope.set(name, part) }
        case .attribute(let namespaceName, let attribute):
            guard case .namespace(let namespace) = scope.lookUp(namespaceName) ?? .none else {
                throw ChatTemplateError.runtime(
                    message: "cannot assign attribute on non-namespace object '\(namespaceName)'", location: location)
            }
            namespace.attributes[attribute] = value
            assignedNamespaces.append(namespace)
        }
    }

    private func makeMacro(_ definition: MacroDefinition, scope: TemplateScope) -> TemplateFunction {
        cyclicScopes.append(scope)
        return TemplateFunction(name: definition.name) { [unowned self] arguments in
            let callScope = TemplateScope(parent: scope)
            if arguments.positional.count > definition.parameters.count {
                throw TemplateFailure(
                    "macro '\(definition.name)' takes not more than \(definition.parameters.count) argument(s)")
            }
            for (position, parameter) in definition.parameters.enumerated() {
                if let value = arguments.value(position, parameter.name) {
                    callScope.set(parameter.name, value)
                } else if let defaultValue = parameter.defaultValue {
                    callScope.set(parameter.name, try self.evaluate(defaultValue, scope: callScope))
                } else {
                    callScope.set(parameter.name, .undefined(hint: "'\(parameter.name)' is undefined"))
                }
            }
            if let unknown = arguments.keyword.first(where: { keyword in
                !definition.parameters.contains { $0.name == keyword.name }
            }) {
                throw TemplateFailure("macro '\(definition.name)' takes no keyword argument '\(unknown.name)'")
            }
            if let caller = arguments.caller { callScope.set("caller", caller) }
            guard self.callDepth < Self.maximumCallDepth else {
                throw TemplateFailure("maximum recursion depth exceeded (\(Self.maximumCallDepth) nested macro calls)")
            }
            self.callDepth += 1
            defer { self.callDepth -= 1 }
            return .string(try self.capture(definition.body, scope: callScope))
        }
    }

    // MARK: Expressions

    /// Evaluates `expression`; a failure without a position gets this expression's.
    func evaluate(_ expression: Expression, scope: TemplateScope) throws -> TemplateValue {
        do {
            return try evaluateKind(expression, scope: scope)
        } catch let failure as TemplateFailure {
            if failure.isRaised {
                throw ChatTemplateError.raised(message: failure.message, location: expression.location)
            }
            throw ChatTemplateError.runtime(message: failure.message, location: expression.location)
        }
    }

    private func evaluateKind(_ expression: Expression, scope: TemplateScope) throws -> TemplateValue {
        switch expression.kind {
        case .literal(let value):
            return value
        case .name(let name):
            return scope.lookUp(name) ?? TemplateGlobals.value(name) ?? .undefined(hint: "'\(name)' is undefined")
        case .list(let items), .tuple(let items):
            return .list(try items.map { try evaluate($0, scope: scope) })
        case .dictionary(let items):
            var dictionary = TemplateDictionary()
            for item in items {
                guard case .string(let key) = try evaluate(item.key, scope: scope) else {
                    throw TemplateFailure("only string keys are supported in dict literals")
                }
                dictionary[key] = try evaluate(item.value, scope: scope)
            }
            return .dictionary(dictionary)
        case .attribute(let base, let name):
            return try attribute(of: try evaluate(base, scope: scope), name)
        case .index(let base, let index):
            return try item(of: try evaluate(base, scope: scope), try evaluate(index, scope: scope))
        case .slice(let base, let start, let stop, let step):
            func bound(_ expression: Expression?) throws -> TemplateValue {
                guard let expression else { return .none }
                return try evaluate(expression, scope: scope)
            }
            return try slice(try evaluate(base, scope: scope), start: try bound(start), stop: try bound(stop),
                             step: try bound(step))
        case .call(let callee, let arguments):
            return try evaluateCall(callee, arguments, caller: nil, location: expression.location, scope: scope)
        case .filter(let input, let name, let arguments):
            return try applyFilter(name, to: try evaluate(input, scope: scope), arguments: arguments, scope: scope,
                                   location: expression.location)
        case .test(let input, let name, let arguments, let negated):
            guard let test = TemplateTests.all[name] else {
                throw ChatTemplateError.unsupported(construct: "the test '\(name)'", location: expression.location)
            }
            let value = try evaluate(input, scope: scope)
            let result = try test(value, try evaluateArguments(arguments, scope: scope))
            return .bool(result != negated)
        case .not(let operand):
            return .bool(!(try evaluate(operand, scope: scope).isTruthy))
        case .negate(let operand):
            return try TemplateOperators.negate(try evaluate(operand, scope: scope))
        case .plus(let operand):
            return try TemplateOperators.arithmetic("+", .int(0), try evaluate(operand, scope: scope))
        case .arithmetic(let symbol, let left, let right):
            return try TemplateOperators.arithmetic(symbol, try evaluate(left, scope: scope),
                                                    try evaluate(right, scope: scope))
        case .and(let left, let right):
            let value = try evaluate(left, scope: scope)
            return value.isTruthy ? try evaluate(right, scope: scope) : value
        case .or(let left, let right):
            let value = try evaluate(left, scope: scope)
            return value.isTruthy ? value : try evaluate(right, scope: scope)
        case .compare(let first, let operations):
            var left = try evaluate(first, scope: scope)
            for operation in operations {
                let right = try evaluate(operation.operand, scope: scope)
                guard try TemplateOperators.compare(operation.symbol, left, right) else { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .conditional(let condition, let then, let otherwise):
            if try evaluate(condition, scope: scope).isTruthy { return try evaluate(then, scope: scope) }
            guard let otherwise else { return .undefined(hint: "the inline if expression had no else branch") }
            return try evaluate(otherwise, scope: scope)
        }
    }

    func evaluateArguments(_ arguments: [Argument], scope: TemplateScope) throws -> TemplateArguments {
        var result = TemplateArguments()
        for argument in arguments {
            switch argument {
            case .positional(let expression): result.positional.append(try evaluate(expression, scope: scope))
            case .keyword(let name, let expression): result.keyword.append((name, try evaluate(expression, scope: scope)))
            }
        }
        return result
    }

    private func evaluateCall(_ callee: Expression, _ arguments: [Argument], caller: TemplateValue?,
                              location: SourceLocation, scope: TemplateScope) throws -> TemplateValue {
        let function = try evaluate(callee, scope: scope)
        var values = try evaluateArguments(arguments, scope: scope)
        values.caller = caller
        do {
            switch function {
            case .function(let function): return try function.call(values)
            case .undefined(let hint): throw TemplateFailure(hint)
            default: throw TemplateFailure("'\(function.typeName)' object is not callable")
            }
        } catch let failure as TemplateFailure {
            if failure.isRaised { throw ChatTemplateError.raised(message: failure.message, location: location) }
            throw ChatTemplateError.runtime(message: failure.message, location: location)
        }
    }

    private func applyFilter(_ name: String, to value: TemplateValue, arguments: [Argument], scope: TemplateScope,
                             location: SourceLocation) throws -> TemplateValue {
        guard let filter = TemplateFilters.all[name] else {
            throw ChatTemplateError.unsupported(construct: "the filter '\(name)'", location: location)
        }
        let values = try evaluateArguments(arguments, scope: scope)
        do {
            return try filter(value, values)
        } catch let failure as TemplateFailure {
            throw ChatTemplateError.runtime(message: failure.message, location: location)
        }
    }
}
