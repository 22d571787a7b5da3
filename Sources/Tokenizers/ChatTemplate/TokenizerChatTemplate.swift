import Foundation

/// A tokenizer's chat template with the special tokens transformers passes to it, read as transformers 5 reads them:
/// `chat_template.jinja` beside tokenizer_config.json wins over the config's `chat_template`, which is a string or a
/// list of `{"name", "template"}` (the one named `tool_use` when tools are given and it exists, else `default`);
/// `bos_token`, `eos_token`, `unk_token`, `sep_token`, `pad_token`, `cls_token`, `mask_token` are strings or
/// AddedToken objects (`{"content": ...}`), read from special_tokens_map.json when the config lacks them.
public struct TokenizerChatTemplate: Sendable {
    /// The tokenizer_config.json read (or the folder's, when a folder or tokenizer.json was named).
    public let configPath: String
    /// The templates by name; a single template is named "default".
    public let templates: [String: ChatTemplate]
    /// The special tokens as template variables (`bos_token` → "<s>").
    public let specialTokens: [String: String]

    private static let specialTokenKeys = [
        "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
    ]

    /// Reads the template of a tokenizer: `path` is a tokenizer_config.json, a tokenizer.json (the config beside it
    /// is read) or their folder. `templatePath`, when given, is a Jinja file used instead of the config's template
    /// (the special tokens still come from the config, which may then be missing).
    public static func load(path: String, templatePath: String? = nil) throws(ChatTemplateError)
        -> TokenizerChatTemplate
    {
        var isDirectory: ObjCBool = false
        var configPath = path
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            configPath = (path as NSString).appendingPathComponent("tokenizer_config.json")
        } else if (path as NSString).lastPathComponent == "tokenizer.json" {
            configPath = ((path as NSString).deletingLastPathComponent as NSString)
                .appendingPathComponent("tokenizer_config.json")
        }
        let folder = (configPath as NSString).deletingLastPathComponent
        var config = JSONValue.object([])
        if FileManager.default.fileExists(atPath: configPath) {
            config = try readJSON(configPath)
        } else if templatePath == nil {
            throw .invalidConfiguration(path: configPath, reason: "no such file")
        }

        // Older saves keep the special tokens in special_tokens_map.json; the config's win.
        var sources = [config]
        let mapPath = (folder as NSString).appendingPathComponent("special_tokens_map.json")
        if FileManager.default.fileExists(atPath: mapPath) { sources.append(try readJSON(mapPath)) }
        var specialTokens: [String: String] = [:]
        for key in specialTokenKeys {
            for source in sources where specialTokens[key] == nil {
                switch source[key] {
                case .string(let token)?: specialTokens[key] = token
                case .object(let entries)?:
                    if case .string(let token)? = JSONValue.object(entries)["content"] { specialTokens[key] = token }
                default: break
                }
            }
        }

        var templateSources: [String: String] = [:]
        let jinjaPath = (folder as NSString).appendingPathComponent("chat_template.jinja")
        if let templatePath {
            templateSources["default"] = try readText(templatePath)
        } else if FileManager.default.fileExists(atPath: jinjaPath) {
            templateSources["default"] = try readText(jinjaPath)
        } else {
            switch config["chat_template"] {
            case .string(let text)?:
                templateSources["default"] = text
            case .array(let entries)?:
                for entry in entries {
                    guard case .string(let name)? = entry["name"], case .string(let text)? = entry["template"] else {
                        throw .invalidConfiguration(
                            path: configPath, reason: "chat_template list entries need string 'name' and 'template'")
                    }
                    templateSources[name] = text
                }
            case nil, .null?:
                throw .invalidConfiguration(
                    path: configPath,
                    reason: "no chat_template in the file and no chat_template.jinja beside it (give one with "
                        + "--chat-template)")
            case let other?:
                throw .invalidConfiguration(
                    path: configPath, reason: "chat_template must be a string or a list, found \(other.kindName)")
            }
        }
        var templates: [String: ChatTemplate] = [:]
        let templateOrigin = templatePath ?? (FileManager.default.fileExists(atPath: jinjaPath) ? jinjaPath : configPath)
        for (name, source) in templateSources {
            do {
                templates[name] = try ChatTemplate(source: source)
            } catch {
                // The error names the template's line and column; this names the file (and the template).
                throw .invalidConfiguration(
                    path: templateOrigin, reason: (templateSources.count > 1 ? "template '\(name)': " : "") + "\(error)")
            }
        }
        return TokenizerChatTemplate(configPath: configPath, templates: templates, specialTokens: specialTokens)
    }

    /// A tokenizer's templates and special tokens given directly (`load(path:templatePath:)` reads them from files).
    public init(configPath: String, templates: [String: ChatTemplate], specialTokens: [String: String]) {
        self.configPath = configPath
        self.templates = templates
        self.specialTokens = specialTokens
    }

    /// The template transformers' `get_chat_template` picks.
    public func template(hasTools: Bool) throws(ChatTemplateError) -> ChatTemplate {
        if templates.count == 1, let only = templates.values.first { return only }
        if hasTools, let toolUse = templates["tool_use"] { return toolUse }
        guard let template = templates["default"] else {
            throw .invalidConfiguration(
                path: configPath,
                reason: "several chat templates (\(templates.keys.sorted().joined(separator: ", "))) and none named "
                    + "'default'")
        }
        return template
    }

    /// `apply_chat_template(messages, tools=tools, add_generation_prompt=..., tokenize=False, **context)`: the special
    /// tokens are variables too (`context` wins over them).
    public func render(messages: [JSONValue], addGenerationPrompt: Bool = false, tools: JSONValue? = nil,
                       context: [String: JSONValue] = [:]) throws(ChatTemplateError) -> String
    {
        var variables = specialTokens.mapValues(JSONValue.string)
        variables.merge(context) { _, new in new }
        let template = try template(hasTools: tools.map { !$0.isNull } ?? false)
        return try template.render(messages: messages, addGenerationPrompt: addGenerationPrompt, tools: tools,
                                   context: variables)
    }

    /// The rendering of a JSON file of messages: a list of `{"role", "content", ...}` objects, or an object with
    /// `messages`, optionally `tools`, and any other keys as template variables (`enable_thinking`, `date_string`).
    public func render(messagesFile path: String, addGenerationPrompt: Bool) throws(ChatTemplateError) -> String {
        let document = try Self.readJSON(path)
        switch document {
        case .array(let messages):
            return try render(messages: messages, addGenerationPrompt: addGenerationPrompt)
        case .object(let entries):
            guard case .array(let messages)? = document["messages"] else {
                throw .invalidConfiguration(path: path, reason: "expected a list of messages or an object with 'messages'")
            }
            var context: [String: JSONValue] = [:]
            for (key, value) in entries where key != "messages" && key != "tools" { context[key] = value }
            return try render(messages: messages, addGenerationPrompt: addGenerationPrompt, tools: document["tools"],
                              context: context)
        default:
            throw .invalidConfiguration(
                path: path, reason: "expected a list of messages or an object with 'messages', found \(document.kindName)")
        }
    }

    private static func readText(_ path: String) throws(ChatTemplateError) -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "the file cannot be read" : "no such file"
            throw .invalidConfiguration(path: path, reason: reason)
        }
        return String(decoding: data, as: UTF8.self)
    }

    private static func readJSON(_ path: String) throws(ChatTemplateError) -> JSONValue {
        do {
            return try parseJSON(Array(try readText(path).utf8))
        } catch let error as JSONSyntaxError {
            throw .invalidConfiguration(
                path: path, reason: "not valid JSON: \(error.message) at line \(error.line), column \(error.column)")
        } catch let error as ChatTemplateError {
            throw error
        } catch {
            throw .invalidConfiguration(path: path, reason: "\(error)")
        }
    }
}
