import Foundation
import ONNXGraph

/// `onnx-dpo bench forward`: times forward passes of a model on generated token inputs.
public enum ForwardBenchmark {
    /// What one benchmark run measured (encoded with snake_case keys: `tokens_per_second`, `peak_memory_bytes`).
    public struct Result: Encodable, Sendable {
        public var runtime = "onnx-dpo"
        public var batch: Int
        public var seq: Int
        public var iterations: Int
        public var secondsPerRun: Double
        public var tokensPerSecond: Double
        /// The process's peak resident memory (VmHWM), model weights included.
        public var peakMemoryBytes: Int
        public var loadSeconds: Double

    }

    /// Loads the model, runs `warmup` untimed passes and `iterations` timed ones on a `[batch, seq]` batch, and
    /// reports the median. The weights are packed once (`Session.packWeights`), as any inference session packs them,
    /// and the packing counts in the load time. A `profile` collects time per op type over the timed passes. Token
    /// ids are drawn (seeded) below the size of the table the ids input indexes.
    public static func run(modelPath: String, batch: Int, seq: Int, warmup: Int, iterations: Int,
                           profile: OpProfile? = nil) throws -> Result {
        let loadStart = Date()
        let model = try Model.load(path: modelPath)
        let session = try Session(model: model)
        try session.packWeights()
        let loadSeconds = Date().timeIntervalSince(loadStart)
        let feeds = try syntheticInputs(for: session, batch: batch, seq: seq)
        for _ in 0..<warmup { _ = try session.run(feeds) }
        var times: [Double] = []
        for _ in 0..<max(iterations, 1) {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try session.run(feeds, profile: profile)
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        let median = times.sorted()[times.count / 2]
        return Result(batch: batch, seq: seq, iterations: times.count, secondsPerRun: median,
                      tokensPerSecond: Double(batch * seq) / median, peakMemoryBytes: peakResidentMemory(),
                      loadSeconds: loadSeconds)
    }

    /// Inputs for a language model: an integer input that a `Gather` uses as indices into an initializer gets
    /// random ids below that table's size; other integer inputs get ones (attention masks), or `0..<seq` per
    /// row when their dimensions are `[batch, seq]` and their name says positions; float inputs get zeros; KV-cache
    /// inputs are empty.
    static func syntheticInputs(for session: Session, batch: Int, seq: Int) throws -> [String: Tensor] {
        let graph = session.model.graph
        let tableSizes = Dictionary(graph.initializers.map { ($0.name, $0.shape.first ?? 1) }, uniquingKeysWith: { a, _ in a })
        var generator = SeededGenerator(seed: 0)
        var feeds: [String: Tensor] = [:]
        for input in session.inputs {
            let shape = (input.shape ?? [.symbolic("batch"), .symbolic("sequence")]).enumerated().map { axis, dimension in
                if case .fixed(let size) = dimension { return size }
                return axis == 0 ? batch : (axis == 1 ? seq : 0)
            }
            let count = shape.reduce(1, *)
            switch input.elementType.storageKind {
            case .int64, .bytes:
                let gather = graph.nodes.first { $0.opType == "Gather" && $0.inputs.count > 1 && $0.inputs[1] == input.name }
                let values: [Int64]
                if let table = gather.flatMap({ tableSizes[$0.inputs[0]] }) {
                    values = (0..<count).map { _ in Int64(generator.next() % UInt64(table)) }
                } else if input.name.contains("position") && shape.count == 2 {
                    values = (0..<count).map { Int64($0 % shape[1]) }
                } else {
                    values = [Int64](repeating: 1, count: count)
                }
                feeds[input.name] = Tensor(shape: shape, int64s: values, dataType: input.elementType)
            case .float:
                feeds[input.name] = Tensor(shape: shape, floats: [Float](repeating: 0, count: count), dataType: input.elementType)
            case .bool:
                feeds[input.name] = Tensor(shape: shape, bools: [Bool](repeating: true, count: count))
            case nil:
                throw InterpreterError.invalidInput(name: input.name, reason: "has element type \(input.elementType), which the benchmark cannot generate")
            }
        }
        // A decoder with past: the caches empty ([batch, heads, 0, head size]), the whole sequence one prompt.
        feeds.merge(try KVCacheInputs(model: session.model).emptyFeeds(batch: batch)) { _, empty in empty }
        return feeds
    }
}

/// The process's peak resident set size in bytes, from `getrusage` (`ru_maxrss`: kilobytes on Linux, bytes on
/// Darwin). It once parsed `VmHWM` from /proc/self/status by spaces, which failed past 10 GB, where the number
/// fills the tab-aligned column and no space is left before it, and reported 0.
public func peakResidentMemory() -> Int {
    var usage = rusage()
    #if os(Linux)
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Int(usage.ru_maxrss) * 1024
    #else
    getrusage(RUSAGE_SELF, &usage)
    return Int(usage.ru_maxrss)
    #endif
}
