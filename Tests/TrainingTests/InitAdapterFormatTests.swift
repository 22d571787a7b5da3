import Adapters
import Foundation
import ONNXGraph
import TestSupport
import Training
import XCTest

/// `train --init-adapter` reads its folder through `AdapterFolder.read`, like `run`, `export` and `convert`, so an
/// mlx-lm folder starts a run exactly as the PEFT folder it was converted from.
final class InitAdapterFormatTests: XCTestCase {
    func testAnMLXInitialAdapterTrainsExactlyAsItsPEFTOriginal() throws {
        let root = try temporaryDirectory(for: self)
        let model = try ExportFixture.named("llama-dynamo").model()
        let modules = try LoRAModule.modules(for: try LoRATargets.find(in: model), model: model)
        let peft = fixturePath("trl/initial_adapter")
        let mlx = root.appendingPathComponent("initial-mlx").path
        try AdapterFolder.read(peft, modules: modules).save(to: mlx, format: .mlx)
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(mlx)/adapters.safetensors"))

        func train(from initial: String, into name: String) throws -> Data {
            let output = root.appendingPathComponent(name).path
            var options = DPOTrainingOptions(
                modelPath: fixturePath("models/llama-dynamo/model.onnx"),
                tokenizerPath: fixturePath("models/llama-dynamo/tokenizer.json"),
                dataPath: fixturePath("dpo/preferences.jsonl"), outputDirectory: output)
            options.initAdapter = initial
            options.batchSize = 4
            options.maxSteps = 2
            options.shuffle = false
            try DPOTrainer(options: options).train { _ in }
            return try Data(contentsOf: URL(fileURLWithPath: "\(output)/adapter/adapter_model.safetensors"))
        }
        let fromPEFT = try train(from: peft, into: "peft-run")
        let fromMLX = try train(from: mlx, into: "mlx-run")
        XCTAssertEqual(fromMLX, fromPEFT, "the trained adapters are bit-identical")
        let initial = try AdapterFolder.read(peft, modules: modules)
        let trained = try AdapterFolder.read(root.appendingPathComponent("peft-run/adapter").path, modules: modules)
        let path = try XCTUnwrap(modules.first).modulePath
        XCTAssertNotEqual(trained.b[path]?.floats, initial.b[path]?.floats, "two steps changed the adapter")
    }
}
