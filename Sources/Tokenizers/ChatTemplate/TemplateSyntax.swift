// The syntax tree of a template: statements (text, `{{ }}`, tags) holding expressions, each with where it starts.

struct Expression {
    indirect enum Kind {
        case literal(TemplateValue)
        case name(String)
        case list([Expression])
        case tuple([Expression])
        case dictionary([(key: Expression, value: Expression)])
        case attribute(Expression, String)
        case index(Expression, Expression)
        case slice(Expression, start: Expression?, stop: Expression?, step: Expression?)
        case call(Expression, [Argument])
        case filter(Expression, name: String, [Argument])
        case test(Expression, name: String, [Argument], negated: Bool)
        case not(Expression)
        case negate(Expression)
        case plus(Expression)
        /// `+ - * / // % ** ~`.
        case arithmetic(String, Expression, Expression)
        case and(Expression, Expression)
        case or(Expression, Expression)
        /// A comparison chain, as Python evaluates `a < b < c`: `==, !=, <, >, <=, >=, in, not in`.
        case compare(Expression, [(symbol: String, operand: Expression)])
        /// `then if condition else otherwise`; no `else` gives Undefined.
        case conditional(condition: Expression, then: Expression, otherwise: Expression?)
    }

    let kind: Kind
    let location: SourceLocation
}

enum Argument {
    case positional(Expression)
    case keyword(String, Expression)
}

/// What `{% set %}` and `{% for %}` assign to.
enum AssignmentTarget {
    case name(String)
    /// `ns.attribute` (set only).
    case attribute(namespace: String, attribute: String)
    case tuple([String])
}

/// A filter of a `{% filter %}` block or a block `{% set x | filter %}`.
struct FilterApplication {
    let name: String
    let arguments: [Argument]
    let location: SourceLocation
}

struct MacroDefinition {
    let name: String
    let parameters: [(name: String, defaultValue: Expression?)]
    let body: [Statement]
}

indirect enum Statement {
    case text(String)
    case output(Expression)
    case conditional(branches: [(condition: Expression, body: [Statement])], otherwise: [Statement])
    case loop(target: AssignmentTarget, iterable: Expression, filter: Expression?, body: [Statement],
              otherwise: [Statement], location: SourceLocation)
    case assign(AssignmentTarget, Expression, location: SourceLocation)
    case assignBlock(AssignmentTarget, body: [Statement], filters: [FilterApplication], location: SourceLocation)
    case macro(MacroDefinition)
    /// `{% call(parameters) callee(arguments) %}body{% endcall %}`: the callee gets `caller`, a macro of the body.
    case callBlock(call: Expression, callerParameters: [(name: String, defaultValue: Expression?)], body: [Statement])
    case filterBlock(filters: [FilterApplication], body: [Statement])
    /// `{% with a = x, b = y %}body{% endwith %}`: the names exist only inside the body.
    case scoped(assignments: [(name: String, value: Expression)], body: [Statement], location: SourceLocation)
    case breakLoop(location: SourceLocation)
    case continueLoop(location: SourceLocation)
}
