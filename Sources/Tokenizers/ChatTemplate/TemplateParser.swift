/// Builds the syntax tree from tokens with jinja2's grammar and operator precedence (loosest first): `x if c else y`,
/// `or`, `and`, `not`, comparisons (`== != < > <= >= in not in`), `+ -`, `~`, `* / // %`, `**`, unary `- +`, then
/// filters (`|`) and tests (`is`) on a primary with its postfixes (`.name`, `[index]`, `[a:b:c]`, `(arguments)`).
struct TemplateParser {
    private let tokens: [Token]
    private var index = 0
    /// How deeply blocks and expressions nest here: past `maximumNesting` the template is refused rather than the
    /// recursive descent overflowing the stack.
    private var nesting = 0
    private static let maximumNesting = 200

    private mutating func enterNesting() throws(ChatTemplateError) {
        nesting += 1
        if nesting > Self.maximumNesting {
            throw error("blocks or expressions nested more than \(Self.maximumNesting) deep")
        }
    }

    static func parse(_ tokens: [Token]) throws(ChatTemplateError) -> [Statement] {
        var parser = TemplateParser(tokens: tokens)
        let (body, _) = try parser.parseBody(until: [], opener: nil)
        return body
    }

    private init(tokens: [Token]) { self.tokens = tokens }

    // MARK: Tokens

    private var current: Token { tokens[index] }

    private mutating func advance() -> Token {
        let token = tokens[index]
        if index < tokens.count - 1 { index += 1 }
        return token
    }

    private func isSymbol(_ symbol: String) -> Bool { current.kind == .symbol(symbol) }
    private func isName(_ name: String) -> Bool { current.kind == .name(name) }

    private mutating func skip(symbol: String) -> Bool {
        guard isSymbol(symbol) else { return false }
        _ = advance()
        return true
    }

    private mutating func skip(name: String) -> Bool {
        guard isName(name) else { return false }
        _ = advance()
        return true
    }

    private func describe(_ kind: TokenKind) -> String {
        switch kind {
        case .text: "text"
        case .variableBegin: "'{{'"
        case .variableEnd: "'}}'"
        case .blockBegin: "'{%'"
        case .blockEnd: "'%}'"
        case .name(let name): "'\(name)'"
        case .string(let text): "the string \(pythonStringRepr(text))"
        case .integer(let number): "\(number)"
        case .float(let number): "\(number)"
        case .symbol(let symbol): "'\(symbol)'"
        case .end: "the end of the template"
        }
    }

    private func error(_ message: String) -> ChatTemplateError {
        .syntax(message: message, location: current.location)
    }

    private mutating func expect(symbol: String) throws(ChatTemplateError) {
        guard skip(symbol: symbol) else { throw error("expected '\(symbol)', found \(describe(current.kind))") }
    }

    private mutating func expect(name: String) throws(ChatTemplateError) {
        guard skip(name: name) else { throw error("expected '\(name)', found \(describe(current.kind))") }
    }

    private mutating func expectBlockEnd() throws(ChatTemplateError) {
        guard current.kind == .blockEnd else { throw error("expected '%}', found \(describe(current.kind))") }
        _ = advance()
    }

    private mutating func expectIdentifier() throws(ChatTemplateError) -> String {
        guard case .name(let name) = current.kind else {
            throw error("expected a name, found \(describe(current.kind))")
        }
        _ = advance()
        return name
    }

    // MARK: Statements

    /// Statements up to a `{% name %}` with `name` in `endNames` (the tag's name is consumed, the rest of the tag
    /// is not); at the top level, up to the end of the template.
    private mutating func parseBody(until endNames: Set<String>, opener: (name: String, location: SourceLocation)?)
        throws(ChatTemplateError) -> ([Statement], String?)
    {
        var body: [Statement] = []
        while true {
            let token = current
            switch token.kind {
            case .text(let text):
                _ = advance()
                body.append(.text(text))
            case .variableBegin:
                _ = advance()
                let expression = try parseTuple()
                guard current.kind == .variableEnd else {
                    throw error("expected '}}', found \(describe(current.kind))")
                }
                _ = advance()
                body.append(.output(expression))
            case .blockBegin:
                _ = advance()
                guard case .name(let name) = current.kind else {
                    throw error("expected a tag name after '{%', found \(describe(current.kind))")
                }
                if endNames.contains(name) {
                    _ = advance()
                    return (body, name)
                }
                body.append(contentsOf: try parseStatement())
            case .end:
                if let opener {
                    let expected = endNames.sorted().map { "'\($0)'" }.joined(separator: " or ")
                    throw ChatTemplateError.syntax(
                        message: "'\(opener.name)' opened at \(opener.location) is not closed: expected \(expected) "
                            + "before the end of the template",
                        location: token.location)
                }
                return (body, nil)
            default:
                throw error("unexpected \(describe(token.kind))")
            }
        }
    }

    private mutating func parseStatement() throws(ChatTemplateError) -> [Statement] {
        try enterNesting()
        defer { nesting -= 1 }
        let location = current.location
        let name = try expectIdentifier()
        switch name {
        case "if": return [try parseIf(location: location)]
        case "for": return [try parseFor(location: location)]
        case "set": return [try parseSet(location: location)]
        case "macro": return [try parseMacro(location: location)]
        case "call": return [try parseCallBlock(location: location)]
        case "filter":
            let filters = try parseFilterChain()
            try expectBlockEnd()
            let (body, _) = try parseBody(until: ["endfilter"], opener: ("filter", location))
            try expectBlockEnd()
            return [.filterBlock(filters: filters, body: body)]
        case "with":
            var assignments: [(name: String, value: Expression)] = []
            while current.kind != .blockEnd {
                if !assignments.isEmpty { try expect(symbol: ",") }
                let name = try expectIdentifier()
                try expect(symbol: "=")
                assignments.append((name, try parseExpression()))
            }
            try expectBlockEnd()
            let (body, _) = try parseBody(until: ["endwith"], opener: ("with", location))
            try expectBlockEnd()
            return [.scoped(assignments: assignments, body: body, location: location)]
        case "break", "continue":
            try expectBlockEnd()
            return [name == "break" ? .breakLoop(location: location) : .continueLoop(location: location)]
        case "generation":
            // transformers' AssistantTracker: the body renders as it is (the tag only records where it is).
            try expectBlockEnd()
            let (body, _) = try parseBody(until: ["endgeneration"], opener: ("generation", location))
            try expectBlockEnd()
            return body
        default:
            let known = ["include", "import", "from", "extends", "block", "do", "autoescape", "trans"]
            if known.contains(name) {
                throw ChatTemplateError.unsupported(construct: "the '{% \(name) %}' tag", location: location)
            }
            if name.hasPrefix("end") || name == "else" || name == "elif" {
                throw ChatTemplateError.syntax(message: "unexpected '{% \(name) %}': no open block it closes",
                                               location: location)
            }
            throw ChatTemplateError.syntax(message: "unknown tag '\(name)'", location: location)
        }
    }

    private mutating func parseIf(location: SourceLocation) throws(ChatTemplateError) -> Statement {
        var branches: [(condition: Expression, body: [Statement])] = []
        var condition = try parseTuple(allowConditional: false)
        while true {
            try expectBlockEnd()
            let (body, end) = try parseBody(until: ["elif", "else", "endif"], opener: ("if", location))
            branches.append((condition, body))
            switch end {
            case "elif":
                condition = try parseTuple(allowConditional: false)
            case "else":
                try expectBlockEnd()
                let (otherwise, _) = try parseBody(until: ["endif"], opener: ("if", location))
                try expectBlockEnd()
                return .conditional(branches: branches, otherwise: otherwise)
            default:
                try expectBlockEnd()
                return .conditional(branches: branches, otherwise: [])
            }
        }
    }

    private mutating func parseFor(location: SourceLocation) throws(ChatTemplateError) -> Statement {
        let target = try parseAssignmentTarget(allowAttribute: false)
        try expect(name: "in")
        let iterable = try parseTuple(allowConditional: false, endNames: ["if", "recursive"])
        var filter: Expression?
        if skip(name: "if") { filter = try parseExpression() }
        if isName("recursive") {
            throw ChatTemplateError.unsupported(construct: "a recursive for loop", location: current.location)
        }
        try expectBlockEnd()
        let (body, end) = try parseBody(until: ["endfor", "else"], opener: ("for", location))
        var otherwise: [Statement] = []
        if end == "else" {
            try expectBlockEnd()
            (otherwise, _) = try parseBody(until: ["endfor"], opener: ("for", location))
        }
        try expectBlockEnd()
        return .loop(target: target, iterable: iterable, filter: filter, body: body, otherwise: otherwise,
                     location: location)
    }

    private mutating func parseSet(location: SourceLocation) throws(ChatTemplateError) -> Statement {
        let target = try parseAssignmentTarget(allowAttribute: true)
        if skip(symbol: "=") {
            let value = try parseTuple()
            try expectBlockEnd()
            return .assign(target, value, location: location)
        }
        let filters = skip(symbol: "|") ? try parseFilterChain() : []
        try expectBlockEnd()
        let (body, _) = try parseBody(until: ["endset"], opener: ("set", location))
        try expectBlockEnd()
        return .assignBlock(target, body: body, filters: filters, location: location)
    }

    private mutating func parseAssignmentTarget(allowAttribute: Bool) throws(ChatTemplateError) -> AssignmentTarget {
        let parenthesized = skip(symbol: "(")
        let first = try expectIdentifier()
        if allowAttribute && !parenthesized && skip(symbol: ".") {
            return .attribute(namespace: first, attribute: try expectIdentifier())
        }
        var names = [first]
        while skip(symbol: ",") {
            if case .name(let name) = current.kind, name != "in" {
                names.append(try expectIdentifier())
            } else {
                break
            }
        }
        if parenthesized { try expect(symbol: ")") }
        return names.count == 1 && !parenthesized ? .name(first) : .tuple(names)
    }

    private mutating func parseParameters() throws(ChatTemplateError) -> [(name: String, defaultValue: Expression?)] {
        var parameters: [(name: String, defaultValue: Expression?)] = []
        try expect(symbol: "(")
        while !isSymbol(")") {
            if !parameters.isEmpty { try expect(symbol: ",") }
            if isSymbol(")") { break }
            let name = try expectIdentifier()
            parameters.append((name, skip(symbol: "=") ? try parseExpression() : nil))
        }
        try expect(symbol: ")")
        return parameters
    }

    private mutating func parseMacro(location: SourceLocation) throws(ChatTemplateError) -> Statement {
        let name = try expectIdentifier()
        let parameters = try parseParameters()
        try expectBlockEnd()
        let (body, _) = try parseBody(until: ["endmacro"], opener: ("macro", location))
        if case .name = current.kind { _ = advance() }  // `{% endmacro name %}`
        try expectBlockEnd()
        return .macro(MacroDefinition(name: name, parameters: parameters, body: body))
    }

    private mutating func parseCallBlock(location: SourceLocation) throws(ChatTemplateError) -> Statement {
        let parameters = isSymbol("(") ? try parseParameters() : []
        let call = try parseExpression()
        guard case .call = call.kind else {
            throw ChatTemplateError.syntax(message: "'{% call %}' needs a macro call", location: call.location)
        }
        try expectBlockEnd()
        let (body, _) = try parseBody(until: ["endcall"], opener: ("call", location))
        try expectBlockEnd()
        return .callBlock(call: call, callerParameters: parameters, body: body)
    }

    /// `name(arguments) | name ...` (the first `|` already consumed, or none for `{% filter %}`).
    private mutating func parseFilterChain() throws(ChatTemplateError) -> [FilterApplication] {
        var filters: [FilterApplication] = []
        repeat {
            let location = current.location
            let name = try expectIdentifier()
            let arguments = isSymbol("(") ? try parseCallArguments() : []
            filters.append(FilterApplication(name: name, arguments: arguments, location: location))
        } while skip(symbol: "|")
        return filters
    }

    // MARK: Expressions

    /// Expressions separated by commas: one expression, or a tuple of them.
    private mutating func parseTuple(allowConditional: Bool = true, endNames: Set<String> = [])
        throws(ChatTemplateError) -> Expression
    {
        let location = current.location
        func parseItem(_ parser: inout TemplateParser) throws(ChatTemplateError) -> Expression {
            allowConditional ? try parser.parseExpression() : try parser.parseOr()
        }
        let first = try parseItem(&self)
        guard isSymbol(",") else { return first }
        var items = [first]
        while skip(symbol: ",") {
            switch current.kind {
            case .blockEnd, .variableEnd, .symbol(")"): break
            case .name(let name) where endNames.contains(name): break
            default:
                items.append(try parseItem(&self))
                continue
            }
            break
        }
        return Expression(kind: .tuple(items), location: location)
    }

    private mutating func parseExpression() throws(ChatTemplateError) -> Expression {
        try enterNesting()
        defer { nesting -= 1 }
        var expression = try parseOr()
        while isName("if") {
            let location = current.location
            _ = advance()
            let condition = try parseOr()
            let otherwise = skip(name: "else") ? try parseExpression() : nil
            expression = Expression(
                kind: .conditional(condition: condition, then: expression, otherwise: otherwise), location: location)
        }
        return expression
    }

    private mutating func parseOr() throws(ChatTemplateError) -> Expression {
        var left = try parseAnd()
        while isName("or") {
            let location = advance().location
            left = Expression(kind: .or(left, try parseAnd()), location: location)
        }
        return left
    }

    private mutating func parseAnd() throws(ChatTemplateError) -> Expression {
        var left = try parseNot()
        while isName("and") {
            let location = advance().location
            left = Expression(kind: .and(left, try parseNot()), location: location)
        }
        return left
    }

    private mutating func parseNot() throws(ChatTemplateError) -> Expression {
        try enterNesting()
        defer { nesting -= 1 }
        if isName("not") {
            let location = advance().location
            return Expression(kind: .not(try parseNot()), location: location)
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws(ChatTemplateError) -> Expression {
        let left = try parseMath1()
        var operations: [(symbol: String, operand: Expression)] = []
        while true {
            if case .symbol(let symbol) = current.kind, ["==", "!=", "<", ">", "<=", ">="].contains(symbol) {
                _ = advance()
                operations.append((symbol, try parseMath1()))
            } else if skip(name: "in") {
                operations.append(("in", try parseMath1()))
            } else if isName("not"), index + 1 < tokens.count, tokens[index + 1].kind == .name("in") {
                _ = advance()
                _ = advance()
                operations.append(("not in", try parseMath1()))
            } else {
                break
            }
        }
        return operations.isEmpty ? left : Expression(kind: .compare(left, operations), location: left.location)
    }

    private mutating func parseBinary(_ symbols: [String], next: (inout TemplateParser) throws(ChatTemplateError) -> Expression)
        throws(ChatTemplateError) -> Expression
    {
        var left = try next(&self)
        while case .symbol(let symbol) = current.kind, symbols.contains(symbol) {
            let location = advance().location
            left = Expression(kind: .arithmetic(symbol, left, try next(&self)), location: location)
        }
        return left
    }

    private mutating func parseMath1() throws(ChatTemplateError) -> Expression {
        try parseBinary(["+", "-"]) { (parser: inout TemplateParser) throws(ChatTemplateError) in try parser.parseConcat() }
    }

    private mutating func parseConcat() throws(ChatTemplateError) -> Expression {
        try parseBinary(["~"]) { (parser: inout TemplateParser) throws(ChatTemplateError) in try parser.parseMath2() }
    }

    private mutating func parseMath2() throws(ChatTemplateError) -> Expression {
        try parseBinary(["*", "/", "//", "%"]) { (parser: inout TemplateParser) throws(ChatTemplateError) in
            try parser.parsePower()
        }
    }

    private mutating func parsePower() throws(ChatTemplateError) -> Expression {
        try parseBinary(["**"]) { (parser: inout TemplateParser) throws(ChatTemplateError) in try parser.parseUnary() }
    }

    private mutating func parseUnary(withFilters: Bool = true) throws(ChatTemplateError) -> Expression {
        try enterNesting()
        defer { nesting -= 1 }
        var expression: Expression
        if isSymbol("-") || isSymbol("+") {
            let token = advance()
            let operand = try parseUnary(withFilters: false)
            expression = Expression(kind: token.kind == .symbol("-") ? .negate(operand) : .plus(operand),
                                    location: token.location)
        } else {
            expression = try parsePrimary()
        }
        expression = try parsePostfix(expression)
        if withFilters { expression = try parseFiltersAndTests(expression) }
        return expression
    }

    private mutating func parsePrimary() throws(ChatTemplateError) -> Expression {
        let token = current
        switch token.kind {
        case .name(let name):
            _ = advance()
            switch name {
            case "true", "True": return Expression(kind: .literal(.bool(true)), location: token.location)
            case "false", "False": return Expression(kind: .literal(.bool(false)), location: token.location)
            case "none", "None": return Expression(kind: .literal(.none), location: token.location)
            default: return Expression(kind: .name(name), location: token.location)
            }
        case .string(var text):
            _ = advance()
            while case .string(let more) = current.kind {
                text += more
                _ = advance()
            }
            return Expression(kind: .literal(.string(text)), location: token.location)
        case .integer(let number):
            _ = advance()
            return Expression(kind: .literal(.int(number)), location: token.location)
        case .float(let number):
            _ = advance()
            return Expression(kind: .literal(.double(number)), location: token.location)
        case .symbol("("):
            _ = advance()
            if skip(symbol: ")") { return Expression(kind: .tuple([]), location: token.location) }
            let inner = try parseTuple()
            try expect(symbol: ")")
            return inner
        case .symbol("["):
            _ = advance()
            var items: [Expression] = []
            while !isSymbol("]") {
                if !items.isEmpty { try expect(symbol: ",") }
                if isSymbol("]") { break }
                items.append(try parseExpression())
            }
            try expect(symbol: "]")
            return Expression(kind: .list(items), location: token.location)
        case .symbol("{"):
            _ = advance()
            var items: [(key: Expression, value: Expression)] = []
            while !isSymbol("}") {
                if !items.isEmpty { try expect(symbol: ",") }
                if isSymbol("}") { break }
                let key = try parseExpression()
                try expect(symbol: ":")
                items.append((key, try parseExpression()))
            }
            try expect(symbol: "}")
            return Expression(kind: .dictionary(items), location: token.location)
        default:
            throw error("expected an expression, found \(describe(token.kind))")
        }
    }

    private mutating func parsePostfix(_ base: Expression) throws(ChatTemplateError) -> Expression {
        var expression = base
        while true {
            let location = current.location
            if skip(symbol: ".") {
                switch current.kind {
                case .name(let name):
                    _ = advance()
                    expression = Expression(kind: .attribute(expression, name), location: location)
                case .integer(let number):
                    _ = advance()
                    expression = Expression(
                        kind: .index(expression, Expression(kind: .literal(.int(number)), location: location)),
                        location: location)
                default:
                    throw error("expected an attribute name after '.', found \(describe(current.kind))")
                }
            } else if skip(symbol: "[") {
                expression = try parseSubscript(expression, location: location)
            } else if isSymbol("(") {
                // A call is placed at its callee, so an error names `raise_exception(...)` where it starts.
                expression = Expression(kind: .call(expression, try parseCallArguments()), location: expression.location)
            } else {
                return expression
            }
        }
    }

    private mutating func parseSubscript(_ base: Expression, location: SourceLocation) throws(ChatTemplateError)
        -> Expression
    {
        var parts: [Expression?] = []
        var isSlice = false
        func atPartEnd(_ parser: TemplateParser) -> Bool { parser.isSymbol(":") || parser.isSymbol("]") }
        parts.append(atPartEnd(self) ? nil : try parseExpression())
        while skip(symbol: ":") {
            isSlice = true
            guard parts.count < 3 else { throw error("a slice has at most three parts") }
            parts.append(atPartEnd(self) ? nil : try parseExpression())
        }
        try expect(symbol: "]")
        guard isSlice else {
            guard let index = parts[0] else { throw error("expected an index inside '[]'") }
            return Expression(kind: .index(base, index), location: location)
        }
        while parts.count < 3 { parts.append(nil) }
        return Expression(kind: .slice(base, start: parts[0], stop: parts[1], step: parts[2]), location: location)
    }

    private mutating func parseCallArguments() throws(ChatTemplateError) -> [Argument] {
        try expect(symbol: "(")
        var arguments: [Argument] = []
        while !isSymbol(")") {
            if !arguments.isEmpty { try expect(symbol: ",") }
            if isSymbol(")") { break }
            if isSymbol("*") || isSymbol("**") {
                throw ChatTemplateError.unsupported(construct: "'*' and '**' arguments", location: current.location)
            }
            if case .name(let name) = current.kind, index + 1 < tokens.count, tokens[index + 1].kind == .symbol("=") {
                _ = advance()
                _ = advance()
                arguments.append(.keyword(name, try parseExpression()))
            } else {
                arguments.append(.positional(try parseExpression()))
            }
        }
        try expect(symbol: ")")
        return arguments
    }

    private mutating func parseFiltersAndTests(_ base: Expression) throws(ChatTemplateError) -> Expression {
        var expression = base
        while true {
            if isSymbol("|") {
                _ = advance()
                let location = current.location
                let name = try expectIdentifier()
                let arguments = isSymbol("(") ? try parseCallArguments() : []
                expression = Expression(kind: .filter(expression, name: name, arguments), location: location)
            } else if isName("is") {
                _ = advance()
                let negated = skip(name: "not")
                let location = current.location
                let name = try expectIdentifier()
                var arguments: [Argument] = []
                if isSymbol("(") {
                    arguments = try parseCallArguments()
                } else {
                    switch current.kind {
                    case .name("else"), .name("or"), .name("and"): break
                    case .name, .string, .integer, .float, .symbol("["), .symbol("{"):
                        arguments = [.positional(try parsePostfix(try parsePrimary()))]
                    default: break
                    }
                }
                expression = Expression(kind: .test(expression, name: name, arguments, negated: negated),
                                        location: location)
            } else if isSymbol("(") {
                expression = Expression(kind: .call(expression, try parseCallArguments()), location: current.location)
            } else {
                return expression
            }
        }
    }
}
