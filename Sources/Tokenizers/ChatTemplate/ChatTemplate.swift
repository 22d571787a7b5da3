import Foundation

/// A Hugging Face chat template: the Jinja subset that tokenizer_config.json templates use, rendered as
/// transformers' `apply_chat_template(..., tokenize=False)` renders it (jinja2 with `trim_blocks`, `lstrip_blocks`,
/// the loop-controls extension, transformers' `tojson`, `raise_exception`, `strftime_now` and `{% generation %}`).
///
/// Parsing happens once, in `init(source:)`; a syntax error or an unsupported tag fails there, naming the line and
/// column. Rendering fails with the place of the expression that failed, or of the `raise_exception` call.
///
/// Known differences from jinja2, none used by TRL's 72 bundled templates: no `{% include %}`, `{% import %}`,
/// `{% extends %}`, `{% block %}`, recursive loops, `*args`; filters beyond the ones chat templates use
/// (`groupby`, `batch`, `slice`, `urlencode`, ... fail as unsupported); tuples print as lists (`[1, 2]`, not
/// `(1, 2)`); `is sameas` is false for lists and dicts (values are copies); integers are 64-bit; a JSON number
/// written `2.0` reaches the template as the int 2 (the JSON reader keeps doubles only), so `tojson` writes `2`.
public struct ChatTemplate: @unchecked Sendable {
    /// The template text.
    public let source: String
    private let statements: [Statement]

    /// Parses `source`; fails with `.syntax` or `.unsupported`, naming the line and column.
    public init(source: String) throws(ChatTemplateError) {
        self.source = source
        statements = try TemplateParser.parse(try TemplateLexer.tokenize(source))
    }

    /// The template rendered over `messages`, as `apply_chat_template(messages, tools=tools,
    /// add_generation_prompt=..., tokenize=False, **context)` does: messages lose their keys whose value is null and
    /// get `reasoning_content`/`thinking` copied from `reasoning` (transformers' normalisation); `tools` and
    /// `documents` are defined and none unless given; `context` adds variables (`bos_token`, `enable_thinking`,
    /// `date_string`, ...).
    public func render(messages: [JSONValue], addGenerationPrompt: Bool = false, tools: JSONValue? = nil,
                       context: [String: JSONValue] = [:]) throws(ChatTemplateError) -> String
    {
        var variables = context.mapValues(TemplateValue.init(json:))
        var normalized: [TemplateValue] = []
        for (index, message) in messages.enumerated() {
            guard case .object(let entries) = message else {
                throw .invalidInput(reason: "message \(index) is \(message.kindName), not an object")
            }
            normalized.append(.dictionary(normalizedMessage(entries)))
        }
        variables["messages"] = .list(normalized)
        variables["tools"] = tools.map(TemplateValue.init(json:)) ?? TemplateValue.none
        if variables["documents"] == nil { variables["documents"] = TemplateValue.none }
        variables["add_generation_prompt"] = .bool(addGenerationPrompt)
        return try render(variables: variables)
    }

    /// The template rendered with exactly these top-level variables.
    public func render(variables: [String: TemplateValue]) throws(ChatTemplateError) -> String {
        try TemplateEvaluator.render(statements, scope: TemplateScope(parent: nil, variables: variables))
    }

    /// transformers' `_normalize_chat_messages` and `_alias_reasoning_fields`: null values dropped; when one of
    /// `reasoning_content`, `thinking`, `reasoning` is set, `thinking` (first) and `reasoning_content` (last) hold it.
    private func normalizedMessage(_ entries: [(key: String, value: JSONValue)]) -> TemplateDictionary {
        var message = TemplateDictionary(entries.filter { !$0.value.isNull }.map { ($0.key, TemplateValue(json: $0.value)) })
        let reasoning = ["reasoning_content", "thinking", "reasoning"].lazy.compactMap { message[$0] }.first
        guard let reasoning else { return message }
        var aliased = TemplateDictionary([("thinking", reasoning)])
        for (key, value) in message.entries where key != "thinking" { aliased[key] = value }
        if let thinking = message["thinking"] { aliased["thinking"] = thinking }
        aliased["reasoning_content"] = reasoning
        message = aliased
        return message
    }
}
