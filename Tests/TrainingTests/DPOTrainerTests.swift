import Training
import Adapters
import Tokenizers
import Foundation
import ONNXGraph
import TestSupport
import XCTest

/// The training loop on the bundled tiny Llama and preference data.
final class DPOTrainerTests: XCTestCase {
    static let model = fixturePath("models/llama-dynamo/model.onnx")
    static let tokenizer = fixturePath("models/llama-dynamo/tokenizer.json")
    static let data = fixturePath("dpo/preferences.jsonl")

    func options(_ output: URL) -> DPOTrainingOptions {
        var options = DPOTrainingOptions(modelPath: Self.model, tokenizerPath: Self.tokenizer, dataPath: Self.data,
                                         outputDirectory: output.path)
        options.learningRate = 1e-2
        options.batchSize = 4
        options.maxSteps = 4
        options.shuffle = false
        return options
    }

    static func metrics(_ output: URL) throws -> [[String: Double]] {
        try String(contentsOf: output.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
            .split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Double] }
    }

    func testFirstStepLossIsLog2AndTheCachedReferenceGivesTheSameRun() throws {
        let first = try temporaryDirectory(for: self)
        var firstStep: StepMetrics?
        try DPOTrainer(options: options(first)).train { event in
            if case .step(let metrics) = event, metrics.step == 1 { firstStep = metrics }
        }
        XCTAssertEqual(firstStep?.objective.loss, log(2), "B = 0: the policy is the reference, and the sigmoid loss is exactly log 2")
        let metrics = try Self.metrics(first)
        XCTAssertEqual(metrics.count, 4)
        XCTAssertEqual(metrics[0]["loss"]!, log(2), accuracy: 1e-15, "metrics.jsonl")
        XCTAssertEqual(metrics[0]["rewards/margins"], 0)
        XCTAssertNotEqual(metrics[3]["loss"], log(2), "training moves the policy")
        // A second run in the same folder reads the reference log-probs from the cache and repeats the first.
        let cache = try FileManager.default.contentsOfDirectory(atPath: first.appendingPathComponent("reference_cache").path)
        XCTAssertEqual(cache.count, 1)
        try DPOTrainer(options: options(first)).train()
        XCTAssertEqual(try Self.metrics(first).map { $0.filter { !["tokens_per_second", "eta_seconds"].contains($0.key) } },
                       metrics.map { $0.filter { !["tokens_per_second", "eta_seconds"].contains($0.key) } })
    }

    /// Gradient checkpointing recomputes blocks, and by default attention's score matrices are recomputed rather
    /// than kept (`keepAttentionScores`): every combination trains the same run, bit for bit.
    func testRecomputationTrainsTheSameAdapter() throws {
        func train(checkpointing: Bool, keepAttention: Bool) throws -> (metrics: [[String: Double]], adapter: Data) {
            let output = try temporaryDirectory(for: self)
            var options = options(output)
            options.gradientCheckpointing = checkpointing
            options.keepAttentionScores = keepAttention
            options.tensorBoard = false
            try DPOTrainer(options: options).train()
            let adapter = try Data(contentsOf: output.appendingPathComponent("adapter/adapter_model.safetensors"))
            return (try Self.metrics(output).map { $0.filter { !["tokens_per_second", "eta_seconds"].contains($0.key) } }, adapter)
        }
        let plain = try train(checkpointing: false, keepAttention: true)
        for (checkpointing, keepAttention) in [(false, false), (true, false), (true, true)] {
            let run = try train(checkpointing: checkpointing, keepAttention: keepAttention)
            XCTAssertEqual(run.metrics, plain.metrics, "checkpointing \(checkpointing), attention kept \(keepAttention)")
            XCTAssertEqual(run.adapter, plain.adapter, "checkpointing \(checkpointing), attention kept \(keepAttention)")
        }
    }

    func testAKilledRunResumesToABitIdenticalAdapter() throws {
        let arguments = ["train", "--model", Self.model, "--tokenizer", Self.tokenizer, "--data", Self.data,
                         "--lr", "1e-2", "--batch-size", "2", "--max-steps", "8", "--no-shuffle", "--checkpoint-every", "1"]
        let straight = try temporaryDirectory(for: self), interrupted = try temporaryDirectory(for: self)
        try Self.succeed(arguments + ["--output-dir", straight.path])

        // Kill the second run (SIGKILL: no chance to clean up) once it has written a few checkpoints.
        _ = try runOnnxDPO(arguments + ["--output-dir", interrupted.path]) {
            FileManager.default.fileExists(atPath: interrupted.appendingPathComponent("checkpoint-3").path)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: interrupted.appendingPathComponent("adapter").path),
                       "the run was killed before it finished")
        try Self.succeed(arguments + ["--output-dir", interrupted.path, "--resume"])

        let file = "adapter/adapter_model.safetensors"
        XCTAssertEqual(try Data(contentsOf: interrupted.appendingPathComponent(file)),
                       try Data(contentsOf: straight.appendingPathComponent(file)), "resumed adapter is bit-identical")
        let steps = try Self.metrics(interrupted).compactMap { $0["step"] }
        XCTAssertEqual(steps, (1...8).map(Double.init), "metrics.jsonl has each step once")
    }

    func testANonFiniteLossStopsTheRunAndKeepsTheLastCheckpoint() throws {
        let output = try temporaryDirectory(for: self)
        var options = options(output)
        // A step that overflows float32 makes the adapter infinite after step 1 (a merely large rate does not:
        // RMSNorm and Adam's normalised steps keep the loss finite).
        options.learningRate = 1e300
        options.maxGradNorm = nil
        options.maxSteps = 10
        options.checkpointEvery = 1
        assertThrows(["the loss is", "training stopped", "checkpoint-"]) { try DPOTrainer(options: options).train() }
        XCTAssert(try FileManager.default.contentsOfDirectory(atPath: output.path).contains("checkpoint-1"))
    }

    func testDropoutIsDeterministicForASeedAndChangesTraining() throws {
        func run(dropout: Double) throws -> [[String: Double]] {
            let output = try temporaryDirectory(for: self)
            var options = options(output)
            options.lora.dropout = dropout
            try DPOTrainer(options: options).train()
            return try Self.metrics(output).map { $0.filter { !["tokens_per_second", "eta_seconds"].contains($0.key) } }
        }
        let first = try run(dropout: 0.3), second = try run(dropout: 0.3), none = try run(dropout: 0)
        XCTAssertEqual(first, second, "the same seed draws the same dropout masks")
        XCTAssertEqual(first[0]["loss"], none[0]["loss"], "B = 0 at step 1: dropout on the adapter input changes nothing yet")
        XCTAssertNotEqual(first[3]["loss"], none[3]["loss"], "dropout changes the gradients, so later steps differ")
    }

    func testBadOptionsAndDataAreRefusedWithTheirNames() throws {
        let output = try temporaryDirectory(for: self)
        var options = options(output)
        options.batchSize = 0
        assertThrows(["batchSize", "at least 1"]) { try DPOTrainer(options: options) }
        options = self.options(output)
        options.lora.dropout = 1
        assertThrows(["lora.dropout", "[0, 1)"]) { try DPOTrainer(options: options) }
        options = self.options(output)
        options.dataPath = fixturePath("data/bad_empty.jsonl")
        assertThrows(["bad_empty.jsonl"]) { try DPOTrainer(options: options) }
        options = self.options(output)
        options.targets = ["no_such_module"]
        assertThrows(["no_such_module"]) { try DPOTrainer(options: options) }
    }

    /// Runs `onnx-dpo` and fails the test, with its standard error, unless it exits with status 0.
    static func succeed(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let run = try runOnnxDPO(arguments)
        if run.status != 0 {
            XCTFail("onnx-dpo \(arguments.joined(separator: " ")) failed: \(run.standardError)", file: file, line: line)
        }
    }
}
