import Foundation
import TestSupport
import Training
import XCTest

/// Three DPO steps on every bundled pair at once (fixtures/dpo/preferences.jsonl, constant learning rate 1e-2), so
/// that each step sees the same batch and the loss must fall: the check a quantised base (int8, q4) has to pass
/// to show that its adapters train. The first loss is log 2 (B = 0: the policy is the reference), every gradient
/// norm is finite and positive, the loss falls at each step, and the adapter is written.
func assertFullBatchDPOStepsLowerTheLoss(model: String, tokenizer: String, output: URL, label: String,
                                         file: StaticString = #filePath, line: UInt = #line) throws {
    var options = DPOTrainingOptions(modelPath: model, tokenizerPath: tokenizer,
                                     dataPath: fixturePath("dpo/preferences.jsonl"), outputDirectory: output.path)
    options.learningRate = 1e-2
    options.batchSize = 24  // every pair
    options.maxSteps = 3
    options.shuffle = false
    options.schedule = .constant
    var losses: [Double] = [], norms: [Double] = []
    try DPOTrainer(options: options).train { event in
        if case .step(let metrics) = event {
            losses.append(metrics.objective.loss)
            norms.append(metrics.gradNorm)
        }
    }
    print("\(label) DPO losses \(losses), gradient norms \(norms)")
    XCTAssertEqual(losses.count, 3, file: file, line: line)
    guard losses.count == 3 else { return }
    XCTAssertEqual(losses[0], log(2), accuracy: 1e-12, "B = 0, so the policy is the reference", file: file, line: line)
    XCTAssert(norms.allSatisfy { $0.isFinite && $0 > 0 }, "\(norms)", file: file, line: line)
    for step in 1..<losses.count {
        XCTAssertLessThan(losses[step], losses[step - 1], "step \(step + 1): \(losses)", file: file, line: line)
    }
    XCTAssert(FileManager.default.fileExists(atPath: output.appendingPathComponent("adapter/adapter_config.json").path),
              file: file, line: line)
}
