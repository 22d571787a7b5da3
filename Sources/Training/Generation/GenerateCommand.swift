import Adapters
import Foundation
import ONNXGraph
import Tokenizers

/// Text decoded as tokens arrive, handing out only complete characters: a byte-level token can end inside a
/// multi-byte UTF-8 character, which decodes to U+FFFD until the next token completes it.
public struct IncrementalDecoder: Sendable {
    public let tokenizer: Tokenizer
    public private(set) var ids: [Int] = []
    private var emitted = 0

    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    /// Adds `token` and returns the text that became complete (possibly empty). Special tokens are skipped.
    public mutating func append(_ token: Int) -> String {
        ids.append(token)
        let scalars = Array(tokenizer.decode(ids, skipSpecialTokens: true).unicodeScalars)
        var end = scalars.count
        while end > emitted, scalars[end - 1] == "\u{FFFD}" { end -= 1 }
        guard end > emitted else { return "" }
        var text = String.UnicodeScalarView()
        text.append(contentsOf: scalars[emitted..<end])
        emitted = end
        return String(text)
    }
}

/// Appends JSON lines to a file, each line with a single `write(2)` of the whole line and an `fsync`, so a killed
/// run leaves only whole lines.
public final class JSONLinesWriter {
    public let path: String
    private let descriptor: Int32

    /// Creates (or truncates) `path`.
    public init(path: String) throws {
        self.path = path
        descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o644)
        guard descriptor >= 0 else {
            throw TrainingError.cannotWrite(path: path, reason: String(cString: strerror(errno)))
        }
    }

    deinit { close(descriptor) }

    /// Writes `object` (JSON-serialisable, keys sorted) and a newline as one write, then flushes it to disk.
    public func write(_ object: [String: Any]) throws {
        var line = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        line.append(0x0A)
        let written = line.withUnsafeBytes { Foundation.write(descriptor, $0.baseAddress, $0.count) }
        guard written == line.count else {
            throw TrainingError.cannotWrite(path: path, reason: written < 0 ? String(cString: strerror(errno))
                                            : "only \(written) of \(line.count) bytes written")
        }
        fsync(descriptor)
    }
}

/// `onnx-dpo generate`: what the command line asks for.
public struct GenerateParameters: Sendable {
    public var modelPath: String
    public var adapterPath: String?
    /// tokenizer.json; nil: the one beside the model.
    public var tokenizerPath: String?
    public var prompts: [Prompt]
    public var options: GenerationOptions
    /// A JSONL file to write one line per row to.
    public var outputPath: String?
    /// Render every prompt through the tokenizer's chat template (a text prompt as one user message) with the
    /// generation prompt, as transformers' `apply_chat_template(add_generation_prompt=True)`; message-list prompts
    /// are always rendered.
    public var chat = false
    /// A Jinja template replacing the tokenizer_config.json's `chat_template`.
    public var chatTemplatePath: String?

    public init(modelPath: String, adapterPath: String? = nil, tokenizerPath: String? = nil, prompts: [Prompt],
                options: GenerationOptions, outputPath: String? = nil) {
        self.modelPath = modelPath
        self.adapterPath = adapterPath
        self.tokenizerPath = tokenizerPath
        self.prompts = prompts
        self.options = options
        self.outputPath = outputPath
    }

    /// The prompts of a JSONL file: one object per line with `prompt` (text) or `prompt_ids` (ids); blank lines
    /// are skipped. Errors name the line.
    public static func prompts(fromFile path: String) throws -> [Prompt] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TrainingError.invalidOption(option: "promptFile", reason: "'\(path)' cannot be read")
        }
        var prompts: [Prompt] = []
        for (offset, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            guard !line.trimmingCharacters(in: .whitespaces).isEmpty else { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw TrainingError.invalidDataRecord(path: path, line: offset + 1, reason: "not a JSON object")
            }
            if let text = object["prompt"] as? String {
                prompts.append(.text(text))
            } else if object["prompt"] is [Any] || object["messages"] is [Any] {
                // A chat (TRL's conversational prompt, or a `messages` row): kept as JSON for the template.
                let row = try? parseJSON(Array(line.utf8))
                guard case .array(let messages)? = row?["prompt"] ?? row?["messages"],
                      messages.allSatisfy({ if case .string? = $0["role"] { true } else { false } }) else {
                    throw TrainingError.invalidDataRecord(path: path, line: offset + 1, reason:
                        "a chat prompt must be a list of {\"role\", \"content\"} messages")
                }
                prompts.append(.messages(messages))
            } else if let ids = object["prompt_ids"] as? [Int] {
                prompts.append(.ids(ids))
            } else {
                throw TrainingError.missingDataKey(path: path, line: offset + 1,
                                                   key: "prompt (text or messages), messages, or prompt_ids (a list of ids)")
            }
        }
        guard !prompts.isEmpty else { throw TrainingError.emptyDataset(path: path, reason: "no prompt lines") }
        return prompts
    }
}

/// The rows of a `generate` run, as `--json` prints them.
public struct GenerationOutput: Encodable, Sendable {
    /// The new tokens of each row (prompt i's K rows at i·K ..< (i+1)·K).
    public var outputIds: [[Int]]
    /// Each row's new tokens decoded, special tokens skipped (empty without a tokenizer).
    public var text: [String]
    public var finishReasons: [FinishReason]
}

public enum GenerateCommand {
    /// Loads the model (with the adapter unmerged) and tokenizer, generates, writes `outputPath` line by line, and
    /// returns the rows. With exactly one row, `stream` receives its text as it becomes complete.
    public static func run(_ parameters: GenerateParameters, stream: ((String) -> Void)? = nil) throws -> GenerationOutput {
        let tokenizerPath = parameters.tokenizerPath ?? ((parameters.modelPath as NSString).deletingLastPathComponent as NSString)
            .appendingPathComponent("tokenizer.json")
        let needsTokenizer = parameters.tokenizerPath != nil || parameters.prompts.contains { if case .text = $0 { true } else { false } }
            || !parameters.options.stopStrings.isEmpty || FileManager.default.fileExists(atPath: tokenizerPath)
        let tokenizer = needsTokenizer ? try Tokenizer(path: tokenizerPath) : nil
        let prompts: [[Int]]
        if let tokenizer {
            let prompter = try PromptTokenizer(tokenizer: tokenizer, tokenizerPath: tokenizerPath, chat: parameters.chat,
                                               templatePath: parameters.chatTemplatePath, prompts: parameters.prompts)
            prompts = try parameters.prompts.enumerated().map { try prompter.ids($1, index: $0) }
        } else {
            prompts = try parameters.prompts.enumerated().map { try $1.tokenIDs(tokenizer: nil, index: $0) }
        }
        let generator: Generator
        do {
            generator = try Generator.open(modelPath: parameters.modelPath, adapterPath: parameters.adapterPath)
        } catch let error as AdapterError where parameters.adapterPath != nil {
            throw TrainingError.invalidOption(option: "adapter", reason:
                "'\(parameters.adapterPath!)' does not fit the model '\(parameters.modelPath)': \(error)")
        }
        let writer = try parameters.outputPath.map { try JSONLinesWriter(path: $0) }
        let rowCount = prompts.count * parameters.options.numReturnSequences
        var decoder = tokenizer.map(IncrementalDecoder.init)
        let sequences = try generator.generate(prompts, options: parameters.options, tokenizer: tokenizer) { _, token in
            guard rowCount == 1, let stream, decoder != nil else { return }
            let text = decoder!.append(token)
            if !text.isEmpty { stream(text) }
        }
        var output = GenerationOutput(outputIds: [], text: [], finishReasons: [])
        for sequence in sequences {
            let text = tokenizer?.decode(sequence.outputIDs, skipSpecialTokens: true) ?? ""
            output.outputIds.append(sequence.outputIDs)
            output.text.append(text)
            output.finishReasons.append(sequence.finishReason)
            try writer?.write(["prompt_index": sequence.promptIndex, "prompt_ids": prompts[sequence.promptIndex],
                               "output_ids": sequence.outputIDs, "text": text,
                               "finish_reason": sequence.finishReason.rawValue])
        }
        return output
    }
}

/// Prompts to ids: text with the tokenizer's special tokens, ids as given, and chats (a `Prompt.messages`, or any
/// text prompt when `chat`) rendered by the chat template with the generation prompt and tokenised without added
/// special tokens (the template writes them), as transformers' `apply_chat_template(add_generation_prompt=True)`.
public struct PromptTokenizer {
    public let tokenizer: Tokenizer
    public let chat: Bool
    /// The template, read when chats are expected (`chat`, or a message-list prompt among those given to `init`).
    public let template: TokenizerChatTemplate?

    /// `tokenizerPath` locates the tokenizer_config.json (or chat_template.jinja) beside it; `templatePath` replaces
    /// its template.
    public init(tokenizer: Tokenizer, tokenizerPath: String, chat: Bool, templatePath: String?, prompts: [Prompt]) throws {
        self.tokenizer = tokenizer
        self.chat = chat
        let chats = chat || prompts.contains { if case .messages = $0 { true } else { false } }
        do {
            template = chats ? try TokenizerChatTemplate.load(path: tokenizerPath, templatePath: templatePath) : nil
        } catch {
            throw TrainingError.invalidOption(option: "chat", reason: "needs a chat template: \(error)")
        }
    }

    /// The messages a prompt is rendered from when it is a chat (a text prompt under `chat`: one user message).
    public func messages(_ prompt: Prompt) -> [JSONValue]? {
        switch prompt {
        case .messages(let messages): messages
        case .text(let text) where chat: [.object([("role", .string("user")), ("content", .string(text))])]
        default: nil
        }
    }

    /// The ids of prompt number `index` (0-based; errors name it from 1).
    public func ids(_ prompt: Prompt, index: Int) throws -> [Int] {
        guard let messages = messages(prompt), let template else {
            return try prompt.tokenIDs(tokenizer: tokenizer, index: index)
        }
        let rendered: String
        do {
            rendered = try template.render(messages: messages, addGenerationPrompt: true)
        } catch {
            throw TrainingError.invalidOption(option: "prompt", reason: "#\(index + 1): the chat template of '\(template.configPath)' failed: \(error)")
        }
        let ids = tokenizer.encode(rendered, addSpecialTokens: false)
        guard !ids.isEmpty else { throw TrainingError.invalidOption(option: "prompt", reason: "#\(index + 1) renders to no tokens") }
        return ids
    }
}
