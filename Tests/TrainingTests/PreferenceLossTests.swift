import Training
import Adapters
import Tokenizers
import Foundation
import ONNXGraph
import TestSupport
import XCTest

/// Soft preference labels (sigmoid, SimPO) and TDPO against PyTorch computations of their formulas
/// (`tools/reference_soft_labels.py`, `tools/reference_tdpo.py`), and short training runs of each.
final class PreferenceLossTests: XCTestCase {
    /// A reference file's logits, ids and completion mask.
    struct Case {
        var json: [String: Any]
        var pairs: Int { json["pairs"] as! Int }
        var length: Int { json["length"] as! Int }
        var vocabulary: Int { json["vocabulary"] as! Int }
        var ids: [Int64] { (json["ids"] as! [Int]).map(Int64.init) }
        var mask: [Bool] { (json["completion_mask"] as! [Int]).map { $0 != 0 } }
        var cases: [[String: Any]] { json["cases"] as! [[String: Any]] }

        init(_ path: String) throws {
            json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: fixturePath(path)))) as? [String: Any])
        }

        func tensor(_ key: String) -> Tensor {
            Tensor(shape: [2 * pairs, length, vocabulary], floats: (json[key] as! [Double]).map(Float.init))
        }
    }

    func testSoftLabelsMatchPyTorch() throws {
        let reference = try Case("soft_labels/reference.json")
        let logits = reference.tensor("logits")
        let referenceSums = reference.json["reference"] as! [Double]
        let pairs = reference.pairs
        let policy = try SequenceLogProbs(logits: logits, inputIDs: reference.ids, completionMask: reference.mask)
        for item in reference.cases {
            let name = item["name"] as! String
            let type = DPOObjective.LossType(rawValue: item["loss_type"] as! String)!
            var objective = DPOObjective(beta: item["beta"] as! Double, terms: [(type, 1)],
                                         labelSmoothing: item["label_smoothing"] as! Double)
            if type == .simpo {
                objective.simpoGamma = item["simpo_gamma"] as! Double
                objective.cpoAlpha = item["cpo_alpha"] as! Double
            }
            let preferences = (item["preferences"] as! [Any]).map { $0 as? Double }
            let evaluation = try objective.evaluate(
                policy: policy, referenceChosen: type == .simpo ? [Double](repeating: 0, count: pairs) : Array(referenceSums[..<pairs]),
                referenceRejected: type == .simpo ? [Double](repeating: 0, count: pairs) : Array(referenceSums[pairs...]),
                preferences: preferences)
            let expectedLoss = item["loss"] as! Double
            XCTAssertEqual(evaluation.loss, expectedLoss, accuracy: 1e-6 * max(1, abs(expectedLoss)), name)
            let gradient = SequenceLogProbs.logitsGradient(logits: logits, inputIDs: reference.ids, tokens: policy.tokens,
                                                           length: reference.length) { sequence, _ in
                Float(evaluation.tokenGradient(sequence: sequence, pairs: pairs, isCompletion: true))
            }
            let expected = Tensor(shape: logits.shape, floats: (item["d_logits"] as! [Double]).map(Float.init))
            assertClose(gradient, expected, relative: 1e-4, absolute: 1e-6, name)
            print("soft labels \(name): |loss − torch| \(abs(evaluation.loss - expectedLoss)), "
                  + "max |dLogits − torch| \(zip(gradient.floats, expected.floats).map { abs($0 - $1) }.max()!)")
        }
    }

    func testHardLabelOfOneIsDPOAndOneHalfIsSymmetric() throws {
        let reference = try Case("soft_labels/reference.json")
        let policy = try SequenceLogProbs(logits: reference.tensor("logits"), inputIDs: reference.ids, completionMask: reference.mask)
        let sums = reference.json["reference"] as! [Double]
        let (chosen, rejected) = (Array(sums[..<3]), Array(sums[3...]))
        let hard = try DPOObjective(beta: 0.5).evaluate(policy: policy, referenceChosen: chosen, referenceRejected: rejected)
        let ones = try DPOObjective(beta: 0.5).evaluate(policy: policy, referenceChosen: chosen, referenceRejected: rejected,
                                                        preferences: [1, 1, 1])
        XCTAssertEqual(hard.loss, ones.loss)
        XCTAssertEqual(hard.chosenSequenceGradients, ones.chosenSequenceGradients)
        // p = 1/2: the loss is even in δ, so swapping chosen and rejected changes nothing.
        let half = try DPOObjective(beta: 0.5).evaluate(policy: policy, referenceChosen: chosen, referenceRejected: rejected,
                                                        preferences: [0.5, 0.5, 0.5])
        var swapped = policy
        swapped.sums = Array(policy.sums[3...] + policy.sums[..<3])
        let halfSwapped = try DPOObjective(beta: 0.5).evaluate(policy: swapped, referenceChosen: rejected, referenceRejected: chosen,
                                                               preferences: [0.5, 0.5, 0.5])
        XCTAssertEqual(half.loss, halfSwapped.loss, accuracy: 1e-12)
    }

    func testPreferenceIsReadInEveryFormatAndCheckedAtItsLine() throws {
        let folder = try temporaryDirectory(for: self)
        let good = folder.appendingPathComponent("good.jsonl").path
        try """
        {"prompt": "a", "chosen": " b", "rejected": " c", "preference": 0.75}
        {"prompt": "a", "chosen": " b", "rejected": " c"}
        {"prompt": "a", "chosen": " b", "rejected": " c", "preference": null}
        """.write(toFile: good, atomically: true, encoding: .utf8)
        XCTAssertEqual(try PreferenceDataset.load(path: good).pairs.map(\.preference), [0.75, nil, nil])
        let implicit = folder.appendingPathComponent("implicit.jsonl").path
        try #"{"chosen": "a b", "rejected": "a c", "preference": 0}"#.write(toFile: implicit, atomically: true, encoding: .utf8)
        XCTAssertEqual(try PreferenceDataset.load(path: implicit).pairs.map(\.preference), [0])
        let ids = folder.appendingPathComponent("ids.jsonl").path
        try #"{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3], "preference": 1}"#
            .write(toFile: ids, atomically: true, encoding: .utf8)
        XCTAssertEqual(try PreferenceDataset.load(path: ids).pairs.map(\.preference), [1])

        for (value, fragment) in [("1.5", "found 1.5"), ("-0.1", "found -0.1"), (#""high""#, "found a string"), ("[1]", "found an array")] {
            let bad = folder.appendingPathComponent("bad.jsonl").path
            try """
            {"prompt": "a", "chosen": " b", "rejected": " c"}
            {"prompt": "a", "chosen": " b", "rejected": " c", "preference": \(value)}
            """.write(toFile: bad, atomically: true, encoding: .utf8)
            assertThrows(["\(bad), line 2", "'preference'", fragment]) { try PreferenceDataset.load(path: bad) }
        }
    }

    /// ORPO's and SimPO's data as TRL's ORPOTrainer/CPOTrainer `tokenize_row` makes it (tools/make_cpo_data_references.py):
    /// prompts without special tokens, BOS and EOS ids added (GPT-2's too), a completion boundary per completion.
    func testCPOTokenizationMatchesTRL() throws {
        let url = URL(fileURLWithPath: fixturePath("data/expected_cpo.json"))
        let expected = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        var asymmetric = 0, compared = 0
        for item in try XCTUnwrap(expected["cases"] as? [[String: Any]]) {
            let tokenizer = try Tokenizer(path: repositoryPath(item["tokenizer"] as! String))
            let maxLength = item["max_length"] as! Int
            let dataset = try PreferenceDataset.load(path: fixturePath("data/\(item["dataset"] as! String)"))
            let ours = try dataset.tokenized(with: tokenizer, options: PreferenceDataOptions(maxLength: maxLength), style: .cpo)
            let context = "\(item["dataset"]!) \(item["tokenizer"]!) max_length \(maxLength)"
            for pair in item["pairs"] as! [[String: Any]] {
                let line = pair["line"] as! Int
                let ids = { (key: String) in pair[key] as! [Int] }
                guard let mine = ours.pairs.first(where: { $0.line == line }) else {
                    // Dropped: a prompt fills max_length, where TRL leaves that completion empty.
                    XCTAssert(ours.droppedLines.contains(line), "\(context) line \(line)")
                    XCTAssert(ids("chosen_ids").isEmpty || ids("rejected_ids").isEmpty, "\(context) line \(line)")
                    continue
                }
                XCTAssertEqual(mine.promptIDs, ids("chosen_prompt_ids"), "\(context) line \(line)")
                XCTAssertEqual(mine.rejectedPromptIDs ?? mine.promptIDs, ids("rejected_prompt_ids"), "\(context) line \(line)")
                if mine.rejectedPromptIDs != nil { asymmetric += 1 }
                // TRL cuts the completion to max_length − prompt; the batch's keep-start truncation does the same.
                let batch = PreferenceBatch(pairs: [mine], padTokenID: 0, maxLength: maxLength)
                for (row, prompt, completion) in [(0, "chosen_prompt_ids", "chosen_ids"), (1, "rejected_prompt_ids", "rejected_ids")] {
                    let expectedRow = ids(prompt) + ids(completion)
                    XCTAssertEqual(Array(batch.row(row, of: batch.inputIDs).prefix(expectedRow.count)), expectedRow, "\(context) line \(line)")
                    XCTAssertEqual(Array(batch.row(row, of: batch.completionMask).prefix(expectedRow.count)),
                                   ids(prompt).map { _ in 0 } + ids(completion).map { _ in 1 }, "\(context) line \(line) mask")
                }
                compared += 1
            }
        }
        XCTAssertGreaterThan(asymmetric, 0, "the fixtures include prompts split differently before chosen and rejected")
        print("CPO tokenisation: \(compared) pairs equal TRL's, \(asymmetric) with a different rejected prompt")
    }

    func testTDPOMatchesPyTorch() throws {
        let reference = try Case("tdpo/reference.json")
        let policyLogits = reference.tensor("policy_logits"), referenceLogits = reference.tensor("reference_logits")
        let policy = try SequenceLogProbs(logits: policyLogits, inputIDs: reference.ids, completionMask: reference.mask)
        let referenceLogProbs = try SequenceLogProbs(logits: referenceLogits, inputIDs: reference.ids, completionMask: reference.mask)
        for item in reference.cases {
            let name = item["name"] as! String
            var objective = DPOObjective(beta: item["beta"] as! Double,
                                         terms: [(DPOObjective.LossType(rawValue: item["loss_type"] as! String)!, 1)])
            objective.tdpoAlpha = item["alpha"] as! Double
            let (evaluation, dLogits) = try TDPO.evaluate(
                objective, policyLogits: policyLogits, referenceLogits: referenceLogits, policy: policy,
                reference: referenceLogProbs, inputIDs: reference.ids, length: reference.length)
            let expectedLoss = item["loss"] as! Double
            XCTAssertEqual(evaluation.loss, expectedLoss, accuracy: 1e-6, name)
            let metrics = try JSONSerialization.jsonObject(with: JSONEncoder().encode(evaluation.metrics)) as! [String: Double]
            for (key, value) in item["metrics"] as! [String: Double] {
                XCTAssertEqual(try XCTUnwrap(metrics[key], key), value, accuracy: 1e-5 * max(1, abs(value)), "\(name) \(key)")
            }
            let expected = Tensor(shape: policyLogits.shape, floats: (item["d_logits"] as! [Double]).map(Float.init))
            assertClose(dLogits, expected, relative: 1e-4, absolute: 1e-6, name)
            print("TDPO \(name): |loss − torch| \(abs(evaluation.loss - expectedLoss)), "
                  + "max |dLogits − torch| \(zip(dLogits.floats, expected.floats).map { abs($0 - $1) }.max()!)")
        }
    }

    func testObjectivesThatStandAloneRefuseCombinations() {
        for type in [DPOObjective.LossType.orpo, .simpo, .tdpo1, .tdpo2] {
            assertThrows(["objective.terms", type.rawValue]) {
                try DPOObjective(terms: [(type, 1), (.sft, 1)]).validate()
            }
        }
        assertThrows(["objective.labelSmoothing"]) { try DPOObjective(labelSmoothing: 1.5).validate() }
    }

    // MARK: - Training runs on the tiny Llama

    static func options(_ test: XCTestCase, data: String, objective: DPOObjective, steps: Int) throws -> DPOTrainingOptions {
        var options = DPOTrainingOptions(
            modelPath: fixturePath("models/llama-dynamo/model.onnx"),
            tokenizerPath: fixturePath("models/llama-dynamo/tokenizer.json"),
            dataPath: data, outputDirectory: try temporaryDirectory(for: test).appendingPathComponent("run").path)
        options.objective = objective
        options.learningRate = 1e-3
        options.batchSize = 4
        options.maxSteps = steps
        options.shuffle = false
        return options
    }

    /// Soft labels end to end: the data's preferences reach the loss. `preference: 1` on every record is the hard label,
    /// bit for bit; other values change the loss but not step 1's policy (the TRL fixture's initial adapter), so step
    /// 1's rewards equal the hard-label run's.
    func testSoftLabelledTrainingRun() throws {
        let folder = try temporaryDirectory(for: self)
        let lines = try String(contentsOfFile: fixturePath("dpo/preferences.jsonl"), encoding: .utf8)
            .split(separator: "\n").prefix(8)
        func write(_ name: String, _ preference: (Int) -> Double?) throws -> String {
            let path = folder.appendingPathComponent(name).path
            try lines.enumerated().map { index, line in
                preference(index).map { String(line.dropLast()) + ", \"preference\": \($0)}" } ?? String(line)
            }.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let files = [try write("hard.jsonl") { _ in nil }, try write("ones.jsonl") { _ in 1 },
                     try write("soft.jsonl") { [0.9, 0.6, 0.5, 0.2][$0 % 4] }]
        var runs: [[ObjectiveMetrics]] = []
        for data in files {
            var options = try Self.options(self, data: data, objective: DPOObjective(beta: 0.1), steps: 2)
            options.initAdapter = fixturePath("trl/initial_adapter")
            options.outputDirectory += "-\((data as NSString).lastPathComponent)"
            var steps: [ObjectiveMetrics] = []
            try DPOTrainer(options: options).train { if case .step(let metrics) = $0 { steps.append(metrics.objective) } }
            XCTAssert(FileManager.default.fileExists(atPath: "\(options.adapterDirectory)/adapter_model.safetensors"))
            let logged = try String(contentsOfFile: "\(options.outputDirectory)/metrics.jsonl", encoding: .utf8)
            XCTAssertEqual(logged.split(separator: "\n").count, 2)
            runs.append(steps)
        }
        let (hard, ones, soft) = (runs[0], runs[1], runs[2])
        XCTAssertEqual(ones, hard, "preference 1 is the hard label")
        XCTAssertEqual(soft[0].rewardsMargins, hard[0].rewardsMargins, accuracy: 1e-12)
        XCTAssertNotEqual(soft[0].loss, hard[0].loss)
        XCTAssertNotEqual(soft[1].rewardsMargins, hard[1].rewardsMargins, "the soft labels moved the adapter differently")
    }

    /// TDPO2 through the whole model against a PyTorch + PEFT run of the paper's formulas (`tools/reference_tdpo.py`:
    /// the TRL fixture's model, LoRA, B perturbation and first three batches; reference = adapter disabled): the
    /// metrics of every step, and the final adapter, which the full-vocabulary KL gradient moved.
    func testThreeTDPO2StepsMatchPyTorchAndPEFT() throws {
        var objective = DPOObjective(beta: 0.1, terms: [(.tdpo2, 1)])
        objective.tdpoAlpha = 0.5
        try TRLParityTests.assertMatchesReference(self, folder: "tdpo/run", objective: objective,
                                                  extraKeys: ["kl/chosen", "kl/rejected", "kl/margin"], steps: 3)
    }

    /// TDPO end to end: with a fresh adapter (B = 0) the policy is the reference, so step 1 has KL 0, log-ratios 0
    /// and loss log 2 exactly; no reference cache is written, and a second step moves the policy away.
    func testTDPOTrainingRunStartsAtLog2() throws {
        for type in [DPOObjective.LossType.tdpo1, .tdpo2] {
            let options = try Self.options(self, data: fixturePath("dpo/preferences.jsonl"),
                                           objective: DPOObjective(beta: 0.1, terms: [(type, 1)]), steps: 2)
            var steps: [StepMetrics] = [], notes: [String] = []
            try DPOTrainer(options: options).train { event in
                if case .step(let metrics) = event { steps.append(metrics) }
                if case .referenceNotCached(let reason) = event { notes.append(reason) }
            }
            XCTAssertEqual(notes.count, 1)
            XCTAssert(notes.first?.contains("every step") ?? false, "\(notes)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: "\(options.outputDirectory)/reference_cache"))
            let first = steps[0].objective
            XCTAssertEqual(first.loss, log(2), accuracy: 1e-6, type.rawValue)
            XCTAssertEqual(try XCTUnwrap(first.extra["kl/chosen"]), 0, accuracy: 1e-6)
            XCTAssertGreaterThan(steps[0].gradNorm, 0)
            let second = steps[1].objective
            XCTAssertGreaterThan(try XCTUnwrap(second.extra["kl/chosen"]), 0, "\(type.rawValue): the policy moved")
            let logged = try String(contentsOfFile: "\(options.outputDirectory)/metrics.jsonl", encoding: .utf8)
            XCTAssert(logged.contains("\"kl\\/chosen\""), logged)
        }
    }
}
