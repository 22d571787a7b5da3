import ArgumentParser
import Foundation
import Tokenizers

struct ChatTemplateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat-template",
        abstract: "Render a tokenizer's chat template over messages, exactly as transformers' apply_chat_template(tokenize=False) does.")

    @Option(help: "The tokenizer_config.json (or its folder); chat_template.jinja beside it wins over its chat_template.")
    var tokenizerConfig: String

    @Option(help: "A JSON list of {\"role\", \"content\"} messages, or an object with \"messages\", \"tools\" and other template variables.")
    var messages: String

    @Flag(help: "End with the header of an assistant turn (add_generation_prompt=True).")
    var addGenerationPrompt = false

    @Option(help: "A Jinja file to use instead of the tokenizer's template.")
    var template: String?

    func run() throws {
        let chatTemplate = try TokenizerChatTemplate.load(path: tokenizerConfig, templatePath: template)
        let text = try chatTemplate.render(messagesFile: messages, addGenerationPrompt: addGenerationPrompt)
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}
