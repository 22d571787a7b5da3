import Foundation

/// What a run was asked to do, written by the trainer as `run_config.json` in its output folder and read by the
/// report: the model and data paths, the loss, the planned steps, when this session started, and the
/// hyper-parameters as `(name, value)` text in a meaningful order (TRL's / transformers' argument names).
public struct RunConfiguration: Codable, Equatable, Sendable {
    /// One hyper-parameter, named as TRL's `DPOConfig` or PEFT's `LoraConfig` names it.
    public struct Parameter: Codable, Equatable, Sendable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) { (self.name, self.value) = (name, value) }
    }

    public static let fileName = "run_config.json"

    public var model: String
    public var data: String
    public var evalData: String?
    public var loss: String
    public var totalSteps: Int
    /// When this session of the run started (a resumed run writes its own).
    public var started: Date
    public var parameters: [Parameter]

    enum CodingKeys: String, CodingKey {
        case model, data, loss, started, parameters
        case evalData = "eval_data"
        case totalSteps = "total_steps"
    }

    public init(model: String, data: String, evalData: String?, loss: String, totalSteps: Int, started: Date,
                parameters: [Parameter]) {
        (self.model, self.data, self.evalData, self.loss) = (model, data, evalData, loss)
        (self.totalSteps, self.started, self.parameters) = (totalSteps, started, parameters)
    }

    /// Writes `run_config.json` into `folder` (a temporary file renamed into place).
    public func write(toFolder folder: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        try encoder.encode(self).write(to: URL(fileURLWithPath: (folder as NSString).appendingPathComponent(Self.fileName)),
                                       options: .atomic)
    }

    /// The configuration in `folder`, nil when there is none or it cannot be read (a run from an older version).
    public static func read(folder: String) -> RunConfiguration? {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: (folder as NSString).appendingPathComponent(fileName)))
        else { return nil }
        return try? decoder.decode(RunConfiguration.self, from: data)
    }

    /// Every field as `(name, value)` rows: the paths and loss first, then the hyper-parameters.
    public var rows: [Parameter] {
        [Parameter("model", model), Parameter("data", data)] + (evalData.map { [Parameter("eval_data", $0)] } ?? [])
            + [Parameter("loss_type", loss), Parameter("max_steps", String(totalSteps))] + parameters
    }

    /// A markdown table of `rows`, for TensorBoard's text plugin.
    public var markdown: String {
        let escape = { (text: String) in text.replacingOccurrences(of: "|", with: "\\|") }
        return (["| option | value |", "|---|---|"] + rows.map { "| \(escape($0.name)) | \(escape($0.value)) |" })
            .joined(separator: "\n")
    }
}
