import Foundation
import Interpreter
import ONNXGraph

/// `onnx-dpo bench generate`: prompt (prefill) and decode speed of `Generator` on synthetic prompts, greedy, EOS
/// ignored so every row makes all its tokens.
public enum GenerationBenchmark {
    /// One batch size's figures (snake_case in JSON).
    public struct Measurement: Encodable, Sendable {
        public var batch: Int
        public var promptTokens: Int
        public var newTokens: Int
        /// `batch · promptTokens` over the time from the call to the first chosen token (the prompt pass).
        public var promptTokensPerSecond: Double
        /// `batch · (newTokens − 1)` over the time after the first token (one token per row per step).
        public var decodeTokensPerSecond: Double
        public var promptSeconds: Double
        public var decodeSeconds: Double
    }

    public struct Result: Encodable, Sendable {
        public var runtime = "onnx-dpo"
        public var model: String
        /// `kv_cache` or `recompute`.
        public var strategy: DecodeStrategy
        public var loadSeconds: Double
        public var measurements: [Measurement]
        /// The process's peak resident memory after every measurement (`getrusage`).
        public var peakMemoryBytes: Int
    }

    /// Measures each batch size in `batches` once, after one untimed warm-up run of the first.
    public static func run(modelPath: String, batches: [Int], promptTokens: Int, newTokens: Int,
                           useKVCache: Bool = true) throws -> Result {
        for (option, value) in [("promptTokens", promptTokens), ("newTokens", newTokens)] + batches.map({ ("batch", $0) })
        where value < 1 {
            throw TrainingError.invalidOption(option: option, reason: "must be at least 1, got \(value)")
        }
        guard !batches.isEmpty else { throw TrainingError.invalidOption(option: "batch", reason: "no batch sizes given") }
        let start = DispatchTime.now()
        let generator = try Generator.open(modelPath: modelPath)
        let loadSeconds = seconds(since: start)
        let vocabulary = LogitsOutput.vocabularySize(of: generator.logitsOutput, in: generator.session.model) ?? 256
        var random = SeededGenerator(seed: 11)
        var options = GenerationOptions(maxNewTokens: newTokens, eosTokenIDs: [], useKVCache: useKVCache)
        options.sampling = .greedy()

        func measure(batch: Int) throws -> Measurement {
            let prompts = (0..<batch).map { _ in (0..<promptTokens).map { _ in Int(random.next() % UInt64(vocabulary)) } }
            let begin = DispatchTime.now()
            var firstToken: DispatchTime?
            _ = try generator.generate(prompts, options: options) { _, _ in
                if firstToken == nil { firstToken = DispatchTime.now() }
            }
            let end = DispatchTime.now()
            let prompt = Double(firstToken!.uptimeNanoseconds - begin.uptimeNanoseconds) / 1e9
            let decode = Double(end.uptimeNanoseconds - firstToken!.uptimeNanoseconds) / 1e9
            return Measurement(batch: batch, promptTokens: promptTokens, newTokens: newTokens,
                               promptTokensPerSecond: Double(batch * promptTokens) / prompt,
                               decodeTokensPerSecond: newTokens > 1 ? Double(batch * (newTokens - 1)) / decode : 0,
                               promptSeconds: prompt, decodeSeconds: decode)
        }
        _ = try measure(batch: batches[0])
        return Result(model: modelPath, strategy: useKVCache ? generator.strategy : .recompute, loadSeconds: loadSeconds,
                      measurements: try batches.map { try measure(batch: $0) }, peakMemoryBytes: peakResidentMemory())
    }

    private static func seconds(since start: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
    }
}
