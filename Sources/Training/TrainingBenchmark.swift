import Adapters
import Dispatch
import Distributed
import Foundation
import Interpreter
import ONNXGraph

/// `onnx-dpo bench train`: the time of one DPO step (policy forward and backward of `pairs` chosen/rejected
/// pairs of `seq` tokens, LoRA r 8 / alpha 16 on q and v, AdamW), with reference log-probs computed beforehand
/// as a training run caches them.
public enum TrainingBenchmark {
    /// What the benchmark measured (encoded with snake_case keys: `step_seconds`, `tokens_per_second`,
    /// `peak_memory_bytes`).
    public struct Result: Encodable, Sendable {
        public var runtime = "onnx-dpo"
        public var pairs: Int
        public var seq: Int
        public var steps: Int
        public var gradientCheckpointing: Bool
        /// Whether attention's score matrices were kept rather than recomputed (`--keep-attention`).
        public var keepAttentionScores: Bool
        /// Median over the timed steps.
        public var stepSeconds: Double
        /// `2 · pairs · seq / stepSeconds`: tokens through the policy per second.
        public var tokensPerSecond: Double
        /// The process's peak resident memory, model weights included.
        public var peakMemoryBytes: Int
        /// The reference pass (not part of a step: computed once and cached in a training run).
        public var referenceSeconds: Double
        /// The processes sharing each step's pairs (`mpirun -np`).
        public var processes: Int
        /// The median time of one allreduce of the adapter's gradient over the processes, timed alone after the
        /// steps (0 for one process): the part of `stepSeconds` that is communication.
        public var allreduceSeconds: Double
    }

    /// Runs `warmup` untimed and `steps` timed DPO steps on synthetic pairs: token ids drawn (seeded) below the
    /// vocabulary size, the first half of each row prompt and the second half completion.
    public static func run(modelPath: String, pairs: Int, seq: Int, warmup: Int = 1, steps: Int = 3,
                           gradientCheckpointing: Bool = false, keepAttentionScores: Bool = false,
                           profile: OpProfile? = nil,
                           communicator: any Communicator = SingleProcess()) throws -> Result {
        for (option, value, least) in [("pairs", pairs, 1), ("seq", seq, 2), ("steps", steps, 1), ("warmup", warmup, 0)]
        where value < least {
            throw TrainingError.invalidOption(option: option, reason: "must be at least \(least), got \(value)")
        }
        let model = try Model.load(path: modelPath)
        let vocabulary = try vocabularySize(model)
        var generator = SeededGenerator(seed: 7)
        func ids(_ count: Int) -> [Int] { (0..<count).map { _ in Int(generator.next() % UInt64(vocabulary)) } }
        let promptLength = seq / 2, completionLength = seq - seq / 2
        let synthetic = (0..<pairs).map { index in
            TokenizedPair(promptIDs: ids(promptLength), chosenIDs: ids(completionLength),
                          rejectedIDs: ids(completionLength), line: index + 1)
        }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("onnx-dpo-bench-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        var options = DPOTrainingOptions(modelPath: modelPath, tokenizerPath: "", dataPath: "", outputDirectory: output)
        options.learningRate = 1e-4
        options.batchSize = pairs
        options.maxSteps = warmup + steps
        options.shuffle = false
        options.data.maxLength = nil
        options.gradientCheckpointing = gradientCheckpointing
        options.keepAttentionScores = keepAttentionScores
        let trainer = try DPOTrainer(options: options, model: model, padTokenID: 0, trainPairs: synthetic, cacheKey: nil,
                                  communicator: communicator)
        trainer.profile = profile
        var stepEnds: [UInt64] = []
        var referenceEnd: UInt64 = 0
        let start = DispatchTime.now().uptimeNanoseconds
        try trainer.train { event in
            switch event {
            case .reference(let done, let total, _) where done == total: referenceEnd = DispatchTime.now().uptimeNanoseconds
            case .step: stepEnds.append(DispatchTime.now().uptimeNanoseconds)
            default: break
            }
        }
        let boundaries = [referenceEnd] + stepEnds
        let durations = (warmup..<(warmup + steps)).map { Double(boundaries[$0 + 1] - boundaries[$0]) / 1e9 }.sorted()
        let median = durations[durations.count / 2]
        let adapter = try trainer.currentAdapter()
        let gradientFloats = adapter.a.values.reduce(0) { $0 + $1.count } + adapter.b.values.reduce(0) { $0 + $1.count }
        return Result(pairs: pairs, seq: seq, steps: steps, gradientCheckpointing: gradientCheckpointing,
                      keepAttentionScores: keepAttentionScores, stepSeconds: median,
                      tokensPerSecond: Double(2 * pairs * seq) / median, peakMemoryBytes: peakResidentMemory(),
                      referenceSeconds: Double(referenceEnd - start) / 1e9, processes: communicator.size,
                      allreduceSeconds: communicator.size > 1 ? try communicator.timeAllreduce(floats: gradientFloats) : 0)
    }

    /// The vocabulary: the last dimension of the logits output when declared, else the rows of the table the
    /// `input_ids` input indexes.
    static func vocabularySize(_ model: Model) throws -> Int {
        if let size = LogitsOutput.vocabularySize(of: try LogitsOutput.find(in: model), in: model) { return size }
        let tables = Dictionary(model.graph.initializers.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
        if let gather = model.graph.nodes.first(where: { $0.opType == "Gather" && $0.inputs.count > 1 && $0.inputs[1] == "input_ids" }),
           let rows = tables[gather.inputs[0]]?.first {
            return rows
        }
        throw TrainingError.invalidOption(option: "bench train", reason: "cannot tell the vocabulary size of \(model.path)")
    }
}
