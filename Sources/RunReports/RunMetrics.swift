import Foundation

/// A run's `metrics.jsonl` as series per metric: one JSON object per line with a `step`, training lines keyed by
/// TRL's names (`loss`, `rewards/margins`, ...), eval lines by the same names prefixed `eval_`, as transformers
/// logs them. Lines that do not parse are skipped and counted: the last line of a run that is still writing, or was
/// killed, can be cut short.
public struct RunMetrics: Sendable {
    /// One logged value.
    public struct Point: Equatable, Sendable {
        public var step: Double
        public var value: Double
        public init(step: Double, value: Double) { (self.step, self.value) = (step, value) }
    }

    /// Training values by metric name, in file order.
    public var train: [String: [Point]] = [:]
    /// Eval values by metric name without the `eval_` prefix, in file order.
    public var eval: [String: [Point]] = [:]
    /// The last training line and the last eval line (eval keys without their prefix).
    public var lastTrain: [String: Double] = [:]
    public var lastEval: [String: Double] = [:]
    /// Lines that were not a JSON object with a numeric `step`.
    public var skippedLines = 0

    public init(jsonl text: String) {
        for line in text.split(whereSeparator: \.isNewline) where !line.allSatisfy(\.isWhitespace) {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let step = (object["step"] as? NSNumber)?.doubleValue
            else {
                skippedLines += 1
                continue
            }
            let values = object.compactMapValues { ($0 as? NSNumber)?.doubleValue }.filter { $0.key != "step" }
            let isEval = values.keys.contains { $0.hasPrefix("eval_") }
            var named: [String: Double] = [:]
            for (key, value) in values {
                let name = isEval && key.hasPrefix("eval_") ? String(key.dropFirst("eval_".count)) : key
                named[name] = value
                if isEval { eval[name, default: []].append(Point(step: step, value: value)) }
                else { train[name, default: []].append(Point(step: step, value: value)) }
            }
            named["step"] = step
            if isEval { lastEval = named } else { lastTrain = named }
        }
    }

    /// Reads `metrics.jsonl` at `path`.
    public static func load(path: String) throws -> RunMetrics {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RunReportError.missingMetrics(path: path, hint: "is this the --output-dir of a `train` run?")
        }
        return RunMetrics(jsonl: String(decoding: data, as: UTF8.self))
    }

    /// Every metric name, train or eval.
    public var names: Set<String> { Set(train.keys).union(eval.keys) }
}
