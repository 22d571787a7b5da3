import Tokenizers

/// The JSONL record formats TRL's DPO trainer reads: plain strings, chat messages (conversational), token ids.
public enum PreferenceFormat: String, Sendable, CaseIterable {
    /// Decide from the records: every record must then have the same format.
    case auto
    /// `{"prompt": String, "chosen": String, "rejected": String}`.
    case explicit
    /// `{"chosen": String, "rejected": String}`: the prompt is their shared beginning (TRL's `extract_prompt`).
    case implicit
    /// `{"prompt_ids": [Int], "chosen_ids": [Int], "rejected_ids": [Int]}` (TRL's tokenised columns, the input of
    /// its `DataCollatorForPreference`; TRL < 1.0's `prompt_input_ids` / `chosen_input_ids` / `rejected_input_ids`
    /// are read too). Taken as given: no BOS or EOS is added.
    case pretokenized
    /// `{"prompt": [messages], "chosen": [messages], "rejected": [messages]}`, each message an object with `role` and
    /// `content` (TRL's conversational format); optional `tools` (a list, or JSON text of one) and
    /// `chat_template_kwargs` (an object of template variables). Rendered with the tokenizer's chat template.
    case conversational
    /// `{"chosen": [messages], "rejected": [messages]}`: the prompt is their shared leading messages.
    case implicitConversational = "implicit_conversational"
}

extension PreferenceFormat {
    /// Whether records of this format are chat messages, rendered with a chat template.
    public var isConversational: Bool { self == .conversational || self == .implicitConversational }
}

/// A conversational record's messages and what its template is rendered with, verbatim from the file.
public struct Conversation: Sendable, Equatable {
    /// The prompt's messages; nil for an implicit prompt (found by `extractPrompt(chosen:rejected:)`).
    public var prompt: [JSONValue]?
    public var chosen: [JSONValue]
    public var rejected: [JSONValue]
    /// The record's `tools` (TRL passes them to the template; nil when absent).
    public var tools: JSONValue?
    /// The record's `chat_template_kwargs`, in file order.
    public var templateVariables: [String: JSONValue]

    public init(prompt: [JSONValue]?, chosen: [JSONValue], rejected: [JSONValue], tools: JSONValue? = nil,
                templateVariables: [String: JSONValue] = [:]) {
        self.prompt = prompt
        self.chosen = chosen
        self.rejected = rejected
        self.tools = tools
        self.templateVariables = templateVariables
    }
}

/// One preference record as read from the file, with its 1-based line number.
public struct PreferencePair: Sendable, Equatable {
    /// The record's values, verbatim.
    public enum Content: Sendable, Equatable {
        case explicit(prompt: String, chosen: String, rejected: String)
        case implicit(chosen: String, rejected: String)
        case pretokenized(prompt: [Int], chosen: [Int], rejected: [Int])
        case conversational(Conversation)
    }

    public let content: Content
    /// The line of the file the record is on (1-based), for error messages.
    public let line: Int
    /// The record's optional `preference`: the probability in [0, 1] that `chosen` is better than `rejected` (a soft
    /// label, read by the sigmoid and SimPO losses); nil when the record has none (a hard label, 1).
    public let preference: Double?

    public init(content: Content, line: Int, preference: Double? = nil) {
        self.content = content
        self.line = line
        self.preference = preference
    }

    /// The record's format (never `.auto`).
    public var format: PreferenceFormat {
        switch content {
        case .explicit: .explicit
        case .implicit: .implicit
        case .pretokenized: .pretokenized
        case .conversational(let conversation): conversation.prompt == nil ? .implicitConversational : .conversational
        }
    }
}

/// TRL's `extract_prompt` on message lists: the prompt is the messages before the first index where chosen and
/// rejected differ (compared as Python dicts); when neither differs up to the shorter length, the loop's last index,
/// `min(count) - 1`. Nil when either list is empty (TRL fails there).
public func extractPrompt(chosen: [JSONValue], rejected: [JSONValue])
    -> (prompt: [JSONValue], chosen: [JSONValue], rejected: [JSONValue])?
{
    let count = min(chosen.count, rejected.count)
    guard count > 0 else { return nil }
    let index = (0..<count).first { chosen[$0] != rejected[$0] } ?? count - 1
    return (Array(chosen[..<index]), Array(chosen[index...]), Array(rejected[index...]))
}

/// The prompt and completions of an implicit-prompt pair, split as TRL's `extract_prompt` (trl/data_utils.py) splits
/// plain strings: walk both strings (Python `str`, so Unicode scalars, not grapheme clusters) to the first index `i`
/// where they differ; when the character before it is a space, step back one so the space starts the completions;
/// the prompt is `chosen[:i]`, the completions `chosen[i:]` and `rejected[i:]`.
///
/// Two consequences of that loop are reproduced, since TRL is the reference:
/// - when one string is a prefix of the other, the loop ends without a difference and `i` is the last index it
///   visited, `min(len) - 1`: `("Hello world, how are you?", "Hello world")` gives `"Hello worl"`, `"d, how are
///   you?"`, `"d"`;
/// - when the strings differ at index 0 and `chosen` ends with a space, `i` becomes -1 and Python's slices count
///   from the end.
/// An empty `chosen` or `rejected` leaves `i` unset in TRL (it fails); here it returns nil.
public func extractPrompt(chosen: String, rejected: String) -> (prompt: String, chosen: String, rejected: String)? {
    let chosenScalars = Array(chosen.unicodeScalars)
    let rejectedScalars = Array(rejected.unicodeScalars)
    let count = min(chosenScalars.count, rejectedScalars.count)
    guard count > 0 else { return nil }
    var index = count - 1
    for candidate in 0..<count where chosenScalars[candidate] != rejectedScalars[candidate] {
        index = candidate
        // Python's `chosen[idx - 1]`: index -1 is the last character.
        let previous = candidate > 0 ? chosenScalars[candidate - 1] : chosenScalars[chosenScalars.count - 1]
        if previous == " " { index -= 1 }
        break
    }
    return (
        String(scalars: pythonSlice(chosenScalars, to: index)),
        String(scalars: pythonSlice(chosenScalars, from: index)),
        String(scalars: pythonSlice(rejectedScalars, from: index)))
}

/// Python's `a[start:]` and `a[:end]` for an index that may be negative (counted from the end).
private func pythonSlice(_ array: [Unicode.Scalar], from start: Int) -> ArraySlice<Unicode.Scalar> {
    let lower = start < 0 ? max(0, array.count + start) : min(start, array.count)
    return array[lower...]
}

private func pythonSlice(_ array: [Unicode.Scalar], to end: Int) -> ArraySlice<Unicode.Scalar> {
    let upper = end < 0 ? max(0, array.count + end) : min(end, array.count)
    return array[..<upper]
}

extension String {
    /// Python's `str.endswith`: compares Unicode scalars, where Swift's `hasSuffix` compares canonically equivalent
    /// characters.
    func hasScalarSuffix(_ suffix: String) -> Bool {
        let scalars = Array(unicodeScalars)
        let suffixScalars = Array(suffix.unicodeScalars)
        return scalars.count >= suffixScalars.count && scalars.suffix(suffixScalars.count).elementsEqual(suffixScalars)
    }
}
