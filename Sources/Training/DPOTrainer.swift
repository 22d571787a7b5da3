import Adapters
import Tokenizers
import Dispatch
import Distributed
import Foundation
import Interpreter
import ONNXGraph

/// Everything `onnx-dpo train` takes. Defaults are TRL's `DPOConfig` / transformers' `TrainingArguments` defaults
/// where they exist, so a run compares with a TRL run configured the same way.
public struct DPOTrainingOptions: Sendable {
    public enum OptimizerKind: String, Sendable, CaseIterable { case adamw, rmsprop }

    public var modelPath: String
    public var tokenizerPath: String
    public var dataPath: String
    public var outputDirectory: String
    /// A Jinja chat template for conversational data, instead of the one of the tokenizer_config.json beside
    /// `tokenizerPath` (whose special tokens the template still gets).
    public var chatTemplatePath: String?
    /// A separate eval dataset; otherwise `evalFraction` of the training data is held out.
    public var evalDataPath: String?
    public var evalFraction: Double = 0
    public var lora = LoRAConfiguration()
    /// `--target` patterns (`q`, `v`, `all-linear`, module names, globs, regexes).
    public var targets: [String] = ["q", "v"]
    public var objective = DPOObjective()
    /// KTO on unpaired data instead of DPO (`--loss kto`): `dataPath` and `evalDataPath` then hold unpaired records
    /// (`UnpairedDataset`), and `objective` is not used.
    public var kto: KTOObjective?
    public var optimizer: OptimizerKind = .adamw
    public var learningRate: Double = 1e-6
    public var weightDecay: Double = 0
    public var warmupSteps: Int = 0
    public var schedule: LearningRateSchedule.Shape = .linear
    /// Clip the global gradient norm to this (nil: no clipping).
    public var maxGradNorm: Double? = 1
    public var batchSize: Int = 8
    public var gradientAccumulation: Int = 1
    /// Stop after this many optimiser steps (overrides `epochs`).
    public var maxSteps: Int?
    public var epochs: Int = 3
    public var data = PreferenceDataOptions()
    public var seed: UInt64 = 42
    public var shuffle = true
    /// Evaluate every this many steps (nil: at the end only, when there is eval data).
    public var evalEvery: Int?
    /// Write a checkpoint every this many steps (nil: none).
    public var checkpointEvery: Int?
    public var resume = false
    /// Start from this adapter folder (PEFT or MLX) instead of a fresh adapter.
    public var initAdapter: String?
    /// The graph output holding the logits; nil finds it by structure (`LogitsOutput.find`).
    public var logitsOutput: String?
    /// Keep activations only at block boundaries and recompute each block in the backward pass
    /// (`Session.forward(gradientCheckpointing:)`): far less memory for long sequences, one more forward of the
    /// blocks per step, the same gradients.
    public var gradientCheckpointing = false
    /// Keep attention's score and probability matrices for the backward pass instead of recomputing them
    /// (`Session.forward(recomputeAttention:)`): a little faster, and `layers × batch × heads × length²` floats more
    /// memory per step. Off by default, as torch's memory-efficient attention.
    public var keepAttentionScores = false

    /// Where the trained adapter is written (PEFT format): `<outputDirectory>/adapter`.
    public var adapterDirectory: String { (outputDirectory as NSString).appendingPathComponent("adapter") }
    /// Also write TensorBoard event files to `<outputDirectory>/runs/` (TRL's `report_to="tensorboard"`).
    public var tensorBoard = true

    public init(modelPath: String, tokenizerPath: String, dataPath: String, outputDirectory: String) {
        self.modelPath = modelPath
        self.tokenizerPath = tokenizerPath
        self.dataPath = dataPath
        self.outputDirectory = outputDirectory
    }

    /// Checks the options a user sets, naming the option at fault by its name here.
    public func validate() throws {
        func check(_ condition: Bool, _ option: String, _ reason: String) throws {
            if !condition { throw TrainingError.invalidOption(option: option, reason: reason) }
        }
        try check(lora.rank >= 1, "lora.rank", "must be at least 1, got \(lora.rank)")
        try check(lora.alpha > 0, "lora.alpha", "must be positive, got \(lora.alpha)")
        try check(lora.dropout >= 0 && lora.dropout < 1, "lora.dropout", "must be in [0, 1), got \(lora.dropout)")
        try check(objective.beta > 0, "objective.beta", "must be positive, got \(objective.beta)")
        try objective.validate()
        try check(learningRate > 0 && learningRate.isFinite, "learningRate", "must be positive, got \(learningRate)")
        try check(weightDecay >= 0, "weightDecay", "must be non-negative, got \(weightDecay)")
        try check(warmupSteps >= 0, "warmupSteps", "must be non-negative, got \(warmupSteps)")
        try check(maxGradNorm.map { $0 > 0 } ?? true, "maxGradNorm", "must be positive")
        try check(batchSize >= 1, "batchSize", "must be at least 1, got \(batchSize)")
        try check(gradientAccumulation >= 1, "gradientAccumulation", "must be at least 1, got \(gradientAccumulation)")
        try check(maxSteps.map { $0 >= 1 } ?? true, "maxSteps", "must be at least 1")
        try check(epochs >= 1, "epochs", "must be at least 1, got \(epochs)")
        try check(evalEvery.map { $0 >= 1 } ?? true, "evalEvery", "must be at least 1")
        try check(checkpointEvery.map { $0 >= 1 } ?? true, "checkpointEvery", "must be at least 1")
        if let kto {
            try check(kto.beta > 0, "kto.beta", "must be positive, got \(kto.beta)")
            try check(kto.desirableWeight >= 0, "kto.desirableWeight", "must be non-negative, got \(kto.desirableWeight)")
            try check(kto.undesirableWeight >= 0, "kto.undesirableWeight", "must be non-negative, got \(kto.undesirableWeight)")
            try check(data.truncationMode == .keepStart, "truncationMode", "must be keep_start with KTO (TRL's KTO collator keeps the start)")
            // TRL's KTOTrainer refuses both: each row's KL completion is a neighbour's in dataset order, fixed per
            // block of batchSize rows, and with one row per batch the KL term would be the row's own reward.
            try check(!kto.estimatesKL || batchSize > 1, "batchSize",
                      "must be more than 1 with the kto loss: its KL term pairs each prompt with another row's completion in the batch")
            try check(!kto.estimatesKL || !shuffle, "shuffle",
                      "must be off with the kto loss: each row's KL completion is its neighbour's in dataset order (TRL requires sequential sampling)")
        }
    }
}

/// What a training run reports as it goes.
public enum TrainingEvent: Sendable {
    /// Reference log-probs: `done` of `total` pairs (or `cached` when read from the cache).
    case reference(done: Int, total: Int, cached: Bool)
    /// One optimiser step's metrics.
    case step(StepMetrics)
    /// The eval data's metrics after a step.
    case evaluation(EvalMetrics)
    case checkpoint(path: String)
    case resumed(step: Int)
    /// The output folder's lock file named process `pid`, which is gone (killed): its lock was taken over.
    case staleLockTakenOver(pid: Int32)
    /// The objective reads no cached reference log-probs (`reason` says why: no reference, or one every step).
    case referenceNotCached(reason: String)
}

/// DPO training of LoRA adapters on an ONNX model (Rafailov et al. 2023, as TRL's `DPOTrainer` runs it): the policy
/// is the model with adapters, the reference the same graph with adapters off (their scale set to 0), its
/// log-probs computed once and cached; each step is one policy forward and backward per micro-batch.
public final class DPOTrainer {
    public let options: DPOTrainingOptions
    public let adapted: AdaptedModel
    public let trainPairs: [TokenizedPair]
    public let evalPairs: [TokenizedPair]
    /// With KTO: whether each training (eval) row's completion is desirable; `trainPairs` hold its completion as
    /// `chosenIDs` and its KL completion as `rejectedIDs` (`UnpairedRows`). Empty for DPO.
    public let trainLabels: [Bool]
    public let evalLabels: [Bool]
    private let session: Session
    /// The graph output holding the logits.
    public let logitsOutput: String
    private let padTokenID: Int
    private var parameters: [String: Tensor]
    private var optimizer: any Optimizer
    private let cacheKey: String?
    /// Whether the session computes logits only at scored positions (`ScoredPositions`).
    public let scoresCompletionsOnly: Bool
    /// A KV-cache graph's past inputs, fed empty: every batch is one whole right-padded prompt (as
    /// GroupQueryAttention requires: it reads the mask only as per-row lengths), and the present outputs go unread.
    private let kvCache: KVCacheInputs
    /// When set, collects time per op type (forward, and backward rules) over the training steps.
    public var profile: OpProfile?
    /// The processes sharing each batch (`SingleProcess`: this one alone). Rank 0 writes every file.
    public let communicator: any Communicator

    /// Loads the model, tokenizer and data named in `options` and prepares the session; nothing is trained yet.
    public convenience init(options: DPOTrainingOptions, communicator: any Communicator = SingleProcess()) throws {
        try options.validate()
        let model = try Model.load(path: options.modelPath)
        let tokenizer = try Tokenizer(path: options.tokenizerPath)
        // Read before hashing, so that a missing or malformed data file is reported as such.
        let paired: (train: PreferenceDataset, eval: PreferenceDataset)?
        let unpaired: (train: UnpairedDataset, eval: UnpairedDataset)?
        if options.kto != nil {
            let dataset = try UnpairedDataset.load(path: options.dataPath)
            unpaired = try options.evalDataPath.map { (dataset, try UnpairedDataset.load(path: $0)) }
                ?? dataset.split(evalFraction: options.evalFraction, seed: options.seed)
            paired = nil
        } else {
            let dataset = try PreferenceDataset.load(path: options.dataPath)
            paired = try options.evalDataPath.map { (dataset, try PreferenceDataset.load(path: $0)) }
                ?? dataset.split(evalFraction: options.evalFraction, seed: options.seed)
            unpaired = nil
        }
        var hash = ContentHash()
        try hash.add(file: options.modelPath)
        for location in Set(model.graph.initializers.compactMap { initializer -> String? in
            if case .external(let reference) = initializer.location { return reference.location }
            return nil
        }).sorted() {
            try hash.add(file: try model.externalData.resolve(location, tensor: location))
        }
        try hash.add(file: options.dataPath)
        if let evalPath = options.evalDataPath { try hash.add(file: evalPath) }
        try hash.add(file: options.tokenizerPath)
        // Conversational data is rendered with the chat template, read only when the data needs it.
        var chatTemplate: TokenizerChatTemplate?
        if let paired, [paired.train.format, paired.eval.format].contains(where: \.isConversational) {
            chatTemplate = try TokenizerChatTemplate.load(path: options.tokenizerPath,
                                                          templatePath: options.chatTemplatePath)
            for (name, template) in (chatTemplate?.templates ?? [:]).sorted(by: { $0.key < $1.key }) {
                hash.add("chat template \(name): \(template.source)")
            }
            hash.add("special tokens: \(chatTemplate?.specialTokens.sorted { $0.key < $1.key } ?? [])")
        }
        hash.add("\(options.data.maxLength ?? -1) \(options.data.truncationMode.rawValue) \(options.evalFraction) \(options.seed) v1")
        if let kto = options.kto, let unpaired {
            let (train, eval) = unpaired
            // The KL completions depend on the loss and the batch size, and so do their reference log-probs.
            hash.add("kto \(kto.estimatesKL ? options.batchSize : 0)")
            let block = kto.estimatesKL ? options.batchSize : nil
            let trainRows = try train.tokenized(with: tokenizer, options: options.data, klBlock: block)
            let evalRows = eval.examples.isEmpty ? UnpairedRows(rows: [], labels: [])
                : try eval.tokenized(with: tokenizer, options: options.data, klBlock: block)
            try self.init(
                options: options, model: model, padTokenID: try PreferenceBatch.padTokenID(for: tokenizer),
                trainPairs: trainRows.rows, evalPairs: evalRows.rows, trainLabels: trainRows.labels,
                evalLabels: evalRows.labels, cacheKey: hash.hex, communicator: communicator)
            return
        }
        guard let paired else { preconditionFailure("no dataset was read") }
        let (train, eval) = paired
        let style = options.objective.tokenizationStyle
        try self.init(
            options: options, model: model, padTokenID: try PreferenceBatch.padTokenID(for: tokenizer),
            trainPairs: try train.tokenized(with: tokenizer, options: options.data, style: style, chatTemplate: chatTemplate).pairs,
            evalPairs: eval.pairs.isEmpty ? []
                : try eval.tokenized(with: tokenizer, options: options.data, style: style, chatTemplate: chatTemplate).pairs,
            cacheKey: hash.hex, communicator: communicator)
    }

    /// Prepares a run on an already loaded model and tokenised pairs (`cacheKey` names the reference log-prob
    /// cache; nil disables it). `options`' paths other than the output folder and `initAdapter` are not read.
    /// With `options.kto`, the pairs are `UnpairedRows.rows` and the labels theirs.
    public init(options: DPOTrainingOptions, model: Model, padTokenID: Int, trainPairs: [TokenizedPair],
                evalPairs: [TokenizedPair] = [], trainLabels: [Bool] = [], evalLabels: [Bool] = [], cacheKey: String?,
                communicator: any Communicator = SingleProcess()) throws {
        try options.validate()
        guard !trainPairs.isEmpty else {
            throw TrainingError.emptyDataset(path: options.dataPath, reason: "no pair is left to train on")
        }
        if options.kto != nil, trainLabels.count != trainPairs.count || evalLabels.count != evalPairs.count {
            throw TrainingError.invalidTrainingState(reason: "KTO needs a label for every row")
        }
        if options.kto != nil, communicator.size > 1 {
            // The KL estimate is a mean over the whole batch: shares would need it summed before the loss (not done).
            throw TrainingError.invalidOption(option: "kto", reason: "runs in one process only, not under mpirun (yet)")
        }
        self.trainLabels = trainLabels
        self.evalLabels = evalLabels
        self.options = options
        self.padTokenID = padTokenID
        self.trainPairs = trainPairs
        self.evalPairs = evalPairs
        self.cacheKey = cacheKey
        self.communicator = communicator
        let targets = try LoRATargets.find(in: model, matching: options.targets)
        let modules = try LoRAModule.modules(for: targets, model: model)
        var adapter = LoRAAdapter.initialized(modules: modules, configuration: options.lora, seed: options.seed)
        if let path = options.initAdapter {
            adapter = try AdapterFolder.read(path, modules: modules)
        }
        adapted = try AdaptedModel(model: model, adapter: adapter)
        logitsOutput = try LogitsOutput.find(in: model, named: options.logitsOutput)
        // Logits only where a completion token is scored, when the graph's output projection can be found.
        let scored = ScoredPositions.rewrite(adapted.model, output: logitsOutput)
        scoresCompletionsOnly = scored != nil
        session = try Session(model: scored ?? adapted.model, additionalInitializers: adapted.initializers)
        // The frozen projections packed once into the GEMM's panels, read by the forward products and, repacked
        // block by block, by their input gradients: no per-call packing, and each weight still held once. The
        // adapter's own initializers (trained, or replaced between runs) stay as they are.
        try session.packWeights(keeping: Set(adapted.initializers.keys))
        kvCache = try KVCacheInputs(model: model)
        let trainable = Set(adapted.parameterNames)
        parameters = adapted.initializers.filter { trainable.contains($0.key) }
        switch options.optimizer {
        case .adamw: optimizer = AdamW(weightDecay: options.weightDecay)
        case .rmsprop: optimizer = RMSprop(weightDecay: options.weightDecay)
        }
    }

    /// The optimiser steps the run takes: `maxSteps`, or `epochs` × ⌈pairs / batch⌉ / accumulation.
    public var totalSteps: Int {
        if let maxSteps = options.maxSteps { return maxSteps }
        return options.epochs * max(1, batchesPerEpoch / options.gradientAccumulation)
    }

    private var batchesPerEpoch: Int { (trainPairs.count + options.batchSize - 1) / options.batchSize }

    /// The training pairs of micro-batch `index` (counting across epochs, in the seeded order of each epoch).
    private func microBatch(_ index: Int) -> [Int] {
        let epoch = index / batchesPerEpoch, within = index % batchesPerEpoch
        let order = options.shuffle
            ? PreferenceDataOrder.epochOrder(count: trainPairs.count, seed: options.seed, epoch: epoch)
            : Array(0..<trainPairs.count)
        let start = within * options.batchSize
        return Array(order[start..<min(start + options.batchSize, order.count)])
    }

    // MARK: - Reference log-probs

    /// `(chosen, rejected)` reference log-prob sums per pair of `pairs`, from the cache file when its key matches.
    /// With several processes, rank 0 reads the cache and shares it; otherwise each process computes its share of
    /// every batch and the shares are gathered.
    private func referenceLogProbs(_ pairs: [TokenizedPair], name: String, report: (TrainingEvent) -> Void) throws -> ([Double], [Double]) {
        let cacheFolder = (options.outputDirectory as NSString).appendingPathComponent("reference_cache")
        let cachePath = (cacheFolder as NSString).appendingPathComponent("\(name)-\(cacheKey ?? "uncached").json")
        var cached: ReferenceCache?
        if cacheKey != nil, communicator.isRoot, let data = try? Data(contentsOf: URL(fileURLWithPath: cachePath)),
           let decoded = try? JSONDecoder().decode(ReferenceCache.self, from: data),
           decoded.chosen.count == pairs.count, decoded.rejected.count == pairs.count {
            cached = decoded
        }
        if communicator.size > 1 {
            let shared = try communicator.broadcastFromRoot(cached.map { $0.chosen + $0.rejected } ?? [])
            cached = shared.isEmpty ? nil : ReferenceCache(chosen: Array(shared[..<pairs.count]), rejected: Array(shared[pairs.count...]))
        }
        if let cached {
            report(.reference(done: pairs.count, total: pairs.count, cached: true))
            return (cached.chosen, cached.rejected)
        }
        var chosen: [Double] = [], rejected: [Double] = []
        let starts = Array(stride(from: 0, to: pairs.count, by: options.batchSize))
        for start in starts {
            let slice = Array(pairs[start..<min(start + options.batchSize, pairs.count)])
            let global = makeBatch(slice)
            let share = communicator.share(ofBatch: slice.count)
            guard !share.pairs.isEmpty else { continue }
            let batch = share.isWhole ? global : PreferenceBatch(rowsOf: share, in: global)
            let logits = try referenceLogits(batch)
            let logProbs = try logProbabilities(logits, batch)
            chosen += logProbs.sums[0..<batch.pairCount]
            rejected += logProbs.sums[batch.pairCount...]
            report(.reference(done: start + slice.count, total: pairs.count, cached: false))
        }
        let batchSizes = starts.map { min(options.batchSize, pairs.count - $0) }
        chosen = try communicator.gatherShares(chosen, batchSizes: batchSizes)
        rejected = try communicator.gatherShares(rejected, batchSizes: batchSizes)
        guard cacheKey != nil, communicator.isRoot else { return (chosen, rejected) }
        try FileManager.default.createDirectory(atPath: cacheFolder, withIntermediateDirectories: true)
        // JSON doubles round-trip exactly, so a cached run equals an uncached one bit for bit.
        try AtomicFile.write(try JSONEncoder().encode(ReferenceCache(chosen: chosen, rejected: rejected)), to: cachePath)
        return (chosen, rejected)
    }

    /// The reference log-prob sums of a dataset, as cached on disk.
    private struct ReferenceCache: Codable {
        var chosen: [Double]
        var rejected: [Double]
    }

    /// The completion log-probabilities of `batch` from the session's logits (scored rows or full).
    private func logProbabilities(_ logits: Tensor, _ batch: PreferenceBatch) throws -> SequenceLogProbs {
        let ids = batch.inputIDs.map(Int64.init), mask = scoredMask(batch)
        return scoresCompletionsOnly
            ? try SequenceLogProbs(scoredLogits: logits, sequences: batch.rowCount, length: batch.sequenceLength,
                                   inputIDs: ids, completionMask: mask)
            : try SequenceLogProbs(logits: logits, inputIDs: ids, completionMask: mask)
    }

    /// The logits among a run's outputs.
    private func logits(from outputs: [String: Tensor]) throws -> Tensor {
        guard let logits = outputs[logitsOutput] else {
            throw TrainingError.invalidTrainingState(reason: "the session did not return the logits output '\(logitsOutput)'")
        }
        return logits
    }

    private func makeBatch(_ pairs: [TokenizedPair]) -> PreferenceBatch {
        PreferenceBatch(pairs: pairs, padTokenID: padTokenID, options: options.data)
    }

    /// The model's inputs for a batch: ids and mask, positions where the model takes them, the scored rows, and
    /// the adapters' dropout masks: drawn from `dropoutSeed` while training, ones otherwise.
    private func feeds(_ batch: PreferenceBatch, dropoutSeed: UInt64? = nil) -> [String: Tensor] {
        var feeds = ["input_ids": batch.inputIDsTensor, "attention_mask": batch.attentionMaskTensor]
        feeds.merge(kvCache.emptyFeeds(batch: batch.rowCount)) { a, _ in a }
        var generator = dropoutSeed.map { SeededGenerator(seed: $0) }
        feeds.merge(adapted.dropoutFeeds(rows: batch.rowCount, tokens: batch.sequenceLength, generator: &generator)) { a, _ in a }
        if scoresCompletionsOnly {
            let rows = SequenceLogProbs.scoredRows(completionMask: scoredMask(batch),
                                                   sequences: batch.rowCount, length: batch.sequenceLength)
            feeds[ScoredPositions.inputName] = Tensor(shape: [rows.count], int64s: rows)
        }
        if session.inputs.contains(where: { $0.name == "position_ids" }) {
            // TRL passes none, so the model counts positions 0, 1, 2, ... on every row.
            let length = batch.sequenceLength
            feeds["position_ids"] = Tensor(shape: [batch.rowCount, length],
                                           int64s: (0..<(batch.rowCount * length)).map { Int64($0 % length) })
        }
        return feeds
    }

    // MARK: - Training

    /// Runs the training loop (resuming from the newest checkpoint when `options.resume`), writes
    /// `metrics.jsonl`, `run_config.json`, TensorBoard event files (`runs/`), checkpoints and the final adapter, and
    /// returns the last step's metrics (nil when a resumed run had no step left).
    @discardableResult
    public func train(report: (TrainingEvent) -> Void = { _ in }) throws -> StepMetrics? {
        let output = options.outputDirectory
        // Rank 0 alone writes the output folder, so it alone holds its lock.
        let lock = communicator.isRoot ? try OutputLock.folder(output) : nil
        defer { lock?.release() }
        if let pid = lock?.takenOverFrom { report(.staleLockTakenOver(pid: pid)) }
        let (referenceChosen, referenceRejected) = try cachedReference(trainPairs, name: "train", report: report)
        let evalReference = evalPairs.isEmpty ? ([], []) : try cachedReference(evalPairs, name: "eval", report: report)

        var firstStep = 0
        if options.resume, let (step, path) = try agreedCheckpoint() {
            try restore(checkpoint: path)
            firstStep = step
            report(.resumed(step: step))
        }
        let metricsPath = (output as NSString).appendingPathComponent("metrics.jsonl")
        let metrics = communicator.isRoot ? try MetricsLog(path: metricsPath, keepingStepsThrough: firstStep) : nil
        let runLog = communicator.isRoot
            ? try TrainingRunLog(options: options, totalSteps: totalSteps, keepingStepsThrough: firstStep) : nil
        let schedule = LearningRateSchedule(peak: options.learningRate, shape: options.schedule,
                                            warmupSteps: options.warmupSteps, totalSteps: totalSteps)
        let stepsPerEpoch = Double(max(1, batchesPerEpoch / options.gradientAccumulation))
        var last: StepMetrics?
        let started = DispatchTime.now().uptimeNanoseconds
        for step in firstStep..<totalSteps {
            let stepStart = DispatchTime.now().uptimeNanoseconds
            var gradients: [String: Tensor] = [:]
            var sums = noMetrics
            var logged: [String: Int] = [:]  // micro-batches that have each metric
            var tokens = 0
            var lines: [Int] = []
            for micro in 0..<options.gradientAccumulation {
                let indices = microBatch(step * options.gradientAccumulation + micro)
                let batch = makeBatch(indices.map { trainPairs[$0] })
                tokens += batch.attentionMask.reduce(0, +)
                // Dropout masks are a function of the seed and the micro-batch, so a resumed run draws the same ones.
                let dropoutSeed = options.seed &+ 0x4452_4F50 &* UInt64(step * options.gradientAccumulation + micro + 1)
                // This process's rows of the micro-batch (all of them alone); means divide by the whole batch's totals.
                let share = communicator.share(ofBatch: indices.count)
                guard !share.pairs.isEmpty else { continue }
                let mine = Array(indices[share.pairs])
                let (evaluation, microGradients) = try policyStep(
                    share.isWhole ? batch : PreferenceBatch(rowsOf: share, in: batch), share: share, of: batch,
                    referenceChosen: mine.map { referenceChosen[$0] },
                    referenceRejected: mine.map { referenceRejected[$0] },
                    preferences: mine.map { trainPairs[$0].preference },
                    labels: trainLabels.isEmpty ? [] : indices.map { trainLabels[$0] }, dropoutSeed: dropoutSeed)
                lines += batch.lines
                // NaN or infinity anywhere stops the run before it is logged or stepped on (`nonFinite`); a share's
                // metrics are its part of the batch's sums, finite exactly when its rows are.
                if let (name, value) = evaluation.metrics.firstNonFinite {
                    throw TrainingError.nonFinite(quantity: name == "loss" ? "the loss" : name, step: step + 1, value: value,
                                                  lines: batch.lines, checkpoint: try latestCheckpoint()?.path)
                }
                let scale = Float(1 / Double(options.gradientAccumulation))
                for (name, gradient) in microGradients {
                    let scaled = Tensor(shape: gradient.shape, floats: gradient.floats.map { $0 * scale })
                    gradients[name] = try gradients[name].map { try addGradients($0, scaled) } ?? scaled
                }
                sums = sums.combined(with: evaluation.metrics) { $0 + $1 / Double(options.gradientAccumulation) }
                for name in evaluation.metrics.names { logged[name, default: 0] += 1 }
            }
            try communicator.sumGradients(&gradients, of: parameters)
            if options.kto != nil {
                // KTOTrainer averages a metric over the micro-batches that have it (one without undesirable rows has
                // no rewards/rejected).
                for (name, count) in logged where count < options.gradientAccumulation {
                    sums[name] = sums[name].map { $0 * Double(options.gradientAccumulation) / Double(count) }
                }
            }
            sums = try communicator.sum(sums)
            adapted.maskFrozenOutputs(&gradients)
            let norm = clipGradientNorm(&gradients, maxNorm: options.maxGradNorm)
            guard norm.isFinite else {
                // A NaN or infinite gradient element makes the norm so; the adapter is left as it was.
                throw TrainingError.nonFinite(quantity: "the gradient norm", step: step + 1, value: norm, lines: lines,
                                              checkpoint: try latestCheckpoint()?.path)
            }
            try optimizer.step(&parameters, gradients: gradients, learningRate: schedule.rate(atStep: step))
            for (name, tensor) in parameters { try session.setInitializer(name, tensor) }

            let seconds = Double(DispatchTime.now().uptimeNanoseconds - stepStart) / 1e9
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            let entry = StepMetrics(
                objective: sums, gradNorm: norm,
                // transformers logs the rate after the scheduler has stepped: the next step's rate.
                learningRate: schedule.rate(atStep: step + 1), step: step + 1,
                epoch: Double(step + 1) / stepsPerEpoch, tokensPerSecond: Double(tokens) / seconds,
                etaSeconds: elapsed / Double(step + 1 - firstStep) * Double(totalSteps - step - 1),
                worldSize: communicator.size)
            try metrics?.append(entry)
            try runLog?.log(entry)
            report(.step(entry))
            last = entry

            let isLast = step + 1 == totalSteps
            if !evalPairs.isEmpty, isLast || options.evalEvery.map({ (step + 1) % $0 == 0 }) ?? false {
                let logged = EvalMetrics(objective: try evaluate(evalPairs, reference: evalReference, labels: evalLabels),
                                         step: step + 1,
                                         worldSize: communicator.size)
                if let (name, value) = logged.objective.firstNonFinite {
                    throw TrainingError.nonFinite(quantity: "eval \(name)", step: step + 1, value: value, lines: [],
                                                  checkpoint: try latestCheckpoint()?.path)
                }
                try metrics?.append(logged)
                try runLog?.log(logged)
                report(.evaluation(logged))
            }
            if let every = options.checkpointEvery, (step + 1) % every == 0 || isLast, communicator.isRoot {
                report(.checkpoint(path: try saveCheckpoint(step: step + 1)))
            }
        }
        if communicator.isRoot { try currentAdapter().save(to: options.adapterDirectory) }
        return last
    }

    /// One micro-batch: policy forward with the adapters, the objective, and its gradients for the parameters.
    /// `batch` is `share`'s rows of the micro-batch `global` (all of them alone), whose totals the objective divides by.
    /// `labels` are the KTO labels of `global`'s rows (empty for DPO).
    private func policyStep(_ batch: PreferenceBatch, share: BatchShare, of global: PreferenceBatch,
                            referenceChosen: [Double], referenceRejected: [Double], preferences: [Double?], labels: [Bool],
                            dropoutSeed: UInt64) throws
        -> (DPOObjective.Evaluation, [String: Tensor])
    {
        // TDPO's reference distributions, before the policy's pass holds the tape.
        let reference = options.objective.isTokenLevel ? try referenceLogits(batch) : nil
        var inputs = feeds(batch, dropoutSeed: options.lora.dropout > 0 ? dropoutSeed : nil)
        if options.lora.dropout > 0, !share.isWhole {
            // The masks one process would draw for the whole micro-batch, cut to this share's rows.
            var generator: SeededGenerator? = SeededGenerator(seed: dropoutSeed)
            inputs.merge(adapted.dropoutFeeds(share: share, of: global, generator: &generator)) { _, shared in shared }
        }
        let pass = try session.forward(inputs,
                                       trainable: Set(adapted.parameterNames), outputNames: [logitsOutput],
                                       profile: profile, gradientCheckpointing: options.gradientCheckpointing,
                                       recomputeAttention: !options.keepAttentionScores)
        let logits = try logits(from: pass.outputs)
        let (evaluation, dLogits) = try options.kto.map {
            try applyKTO($0, batch, logits: logits, share: share, of: global, reference: referenceChosen,
                         referenceKL: referenceRejected, labels: labels)
        } ?? applyObjective(
            batch, logits: logits, referenceLogits: reference, referenceChosen: referenceChosen,
            referenceRejected: referenceRejected, preferences: preferences, totals: BatchTotals(global))
        return (evaluation, try pass.backward([logitsOutput: dLogits], profile: profile))
    }

    /// The start of a sum of the objective's metrics: DPO's nine and the objective's extra ones at 0, so that a
    /// process whose share of every batch is empty still sums the same names as the others; KTO (one process) logs
    /// only the metrics its batches have.
    private var noMetrics: ObjectiveMetrics {
        options.kto == nil ? .zero(extra: options.objective.extraMetricNames) : .empty
    }

    /// KTO on `share`'s rows of `global` (one process: the trainer refuses KTO under mpirun): the completion rows'
    /// log-probs against `reference`, the KL rows' against `referenceKL` (both the share's), `labels` the whole
    /// batch's; the loss's logits gradient, zero on the KL rows (the KL estimate is detached).
    private func applyKTO(_ kto: KTOObjective, _ batch: PreferenceBatch, logits: Tensor, share: BatchShare,
                          of global: PreferenceBatch, reference: [Double], referenceKL: [Double], labels: [Bool]) throws
        -> (DPOObjective.Evaluation, Tensor)
    {
        let policy = try logProbabilities(logits, batch)
        let rows = batch.pairCount
        let evaluation = try kto.evaluate(
            policy: policy, labels: Array(labels[share.pairs]), reference: reference, referenceKL: referenceKL,
            totals: KTOObjective.Totals(global, labels: labels),
            entropySum: KTOObjective.entropySum(logits: logits, policy: policy, rows: rows))
        let dLogits = SequenceLogProbs.logitsGradient(logits: logits, inputIDs: batch.inputIDs.map(Int64.init),
                                                      tokens: policy.tokens, length: batch.sequenceLength) { sequence, _ in
            Float(sequence < rows ? evaluation.chosenSequenceGradients[sequence] : 0)
        }
        return (evaluation, dLogits)
    }

    /// Loss, reward accuracy and margins of the adapter on the whole training dataset (`onnx-dpo eval`), its
    /// reference log-probs cached like a training run's.
    public func evaluateDataset(report: (TrainingEvent) -> Void = { _ in }) throws -> ObjectiveMetrics {
        let lock = communicator.isRoot ? try OutputLock.folder(options.outputDirectory) : nil
        defer { lock?.release() }
        if let pid = lock?.takenOverFrom { report(.staleLockTakenOver(pid: pid)) }
        return try evaluate(trainPairs, reference: try cachedReference(trainPairs, name: "train", report: report),
                            labels: trainLabels)
    }

    /// Reward accuracy, margins and loss of the current adapter on `pairs` (no gradients): batch means weighted by
    /// the batches' pairs. Each process of `communicator` evaluates its share of every batch (all must call this).
    /// `labels`: the KTO labels of `pairs` (empty for DPO).
    public func evaluate(_ pairs: [TokenizedPair], reference: ([Double], [Double]), labels: [Bool] = []) throws -> ObjectiveMetrics {
        var totals = noMetrics
        var batches: [String: Int] = [:]  // KTO: the batches that have each metric
        for start in stride(from: 0, to: pairs.count, by: options.batchSize) {
            let end = min(start + options.batchSize, pairs.count)
            let global = makeBatch(Array(pairs[start..<end]))
            let share = communicator.share(ofBatch: end - start)
            guard !share.pairs.isEmpty else { continue }
            let mine = (start + share.pairs.lowerBound)..<(start + share.pairs.upperBound)
            let batch = share.isWhole ? global : PreferenceBatch(rowsOf: share, in: global)
            let logits = try logits(from: try session.run(feeds(batch)))
            if let kto = options.kto {
                // As transformers and KTOTrainer average them: the loss weighted by the batch's rows, the other
                // metrics a plain mean over the batches that have them.
                let (evaluation, _) = try applyKTO(kto, batch, logits: logits, share: share, of: global,
                                                   reference: Array(reference.0[mine]), referenceKL: Array(reference.1[mine]),
                                                   labels: Array(labels[start..<end]))
                for name in evaluation.metrics.names {
                    totals[name] = (totals[name] ?? 0) + evaluation.metrics[name]! * (name == "loss" ? Double(end - start) : 1)
                    batches[name, default: 0] += 1
                }
                continue
            }
            let referenceLogits = options.objective.isTokenLevel ? try referenceLogits(batch) : nil
            let (evaluation, _) = try applyObjective(
                batch, logits: logits, referenceLogits: referenceLogits,
                referenceChosen: Array(reference.0[mine]), referenceRejected: Array(reference.1[mine]),
                preferences: pairs[mine].map(\.preference), totals: BatchTotals(global))
            totals = totals.combined(with: evaluation.metrics) { $0 + $1 * Double(end - start) }
        }
        if options.kto != nil {
            return ObjectiveMetrics(named: Dictionary(uniqueKeysWithValues: totals.names.map {
                ($0, totals[$0]! / Double($0 == "loss" ? max(pairs.count, 1) : batches[$0]!))
            }))
        }
        return try communicator.sum(totals).map { $0 / Double(max(pairs.count, 1)) }
    }

    // MARK: - Objectives beyond sequence-level DPO (ORPO, SimPO, soft labels, TDPO)

    /// The reference log-prob sums the objective reads from the cache; zeros, without a reference pass, for the
    /// objectives that read none from it (ORPO and SimPO have no reference; TDPO runs the reference every step).
    private func cachedReference(_ pairs: [TokenizedPair], name: String, report: (TrainingEvent) -> Void) throws
        -> ([Double], [Double])
    {
        guard !options.objective.usesReferenceCache else { return try referenceLogProbs(pairs, name: name, report: report) }
        let zeros = [Double](repeating: 0, count: pairs.count)
        guard name == "train" else { return (zeros, zeros) }  // said once, for the training data
        let loss = options.objective.terms[0].type.rawValue
        report(.referenceNotCached(reason: options.objective.isTokenLevel
            ? "\(loss) reads the reference's whole next-token distribution, which the reference cache does not hold: "
                + "the reference (adapters off) runs forward at every step"
            : "\(loss) needs no reference model: no reference pass"))
        return (zeros, zeros)
    }

    /// The reference's logits for `batch`: the session run with the adapters' scale at 0.
    private func referenceLogits(_ batch: PreferenceBatch) throws -> Tensor {
        try session.setInitializer(AdaptedModel.scaleName, Tensor(shape: [], floats: [0]))
        let policyScale = adapted.initializers[AdaptedModel.scaleName] ?? Tensor(shape: [], floats: [1])
        defer { try? session.setInitializer(AdaptedModel.scaleName, policyScale) }
        return try logits(from: try session.run(feeds(batch)))
    }

    /// The tokens whose log-probabilities the objective reads: the completions, and for ORPO every chosen token after
    /// the first (its NLL covers the prompt too).
    private func scoredMask(_ batch: PreferenceBatch) -> [Bool] {
        let completion = batch.completionMask.map { $0 != 0 }
        guard options.objective.scoresChosenPrompts else { return completion }
        let chosenEnd = batch.pairCount * batch.sequenceLength
        return completion.indices.map { $0 < chosenEnd ? batch.attentionMask[$0] != 0 : completion[$0] }
    }

    /// The objective on `batch` from the policy's logits (and, for TDPO, the reference's): its evaluation and
    /// `dLoss/dLogits`.
    private func applyObjective(_ batch: PreferenceBatch, logits: Tensor, referenceLogits: Tensor?,
                                referenceChosen: [Double], referenceRejected: [Double], preferences: [Double?],
                                totals: BatchTotals) throws -> (DPOObjective.Evaluation, Tensor) {
        let ids = batch.inputIDs.map(Int64.init), length = batch.sequenceLength
        let scored = try logProbabilities(logits, batch)
        if let referenceLogits {
            return try TDPO.evaluate(options.objective, policyLogits: logits, referenceLogits: referenceLogits,
                                     policy: scored, reference: try logProbabilities(referenceLogits, batch),
                                     inputIDs: ids, length: length, totals: totals)
        }
        let completion = batch.completionMask.map { $0 != 0 }
        let (policy, promptSums) = options.objective.scoresChosenPrompts
            ? scored.restricted(to: completion, length: length) : (scored, [])
        let evaluation = try options.objective.evaluate(
            policy: policy, referenceChosen: referenceChosen, referenceRejected: referenceRejected, totals: totals,
            preferences: preferences, chosenPromptSums: Array(promptSums.prefix(batch.pairCount)))
        let pairs = batch.pairCount
        let dLogits = SequenceLogProbs.logitsGradient(logits: logits, inputIDs: ids, tokens: scored.tokens,
                                                      length: length) { sequence, position in
            Float(evaluation.tokenGradient(sequence: sequence, pairs: pairs, isCompletion: completion[sequence * length + position]))
        }
        return (evaluation, dLogits)
    }

    /// The adapter as it is now, in PEFT's orientation.
    public func currentAdapter() throws -> LoRAAdapter {
        try adapted.adapter(from: parameters)
    }

    // MARK: - Checkpoints

    private struct CheckpointState: Codable {
        var step: Int
        var cacheKey: String
        var optimizer: String
        var optimizerStep: Int
        var seed: UInt64
    }

    /// Writes `checkpoint-<step>/` (parameters and optimiser state in float32, so that resuming continues
    /// bit for bit; the adapter in PEFT format) to a temporary folder renamed into place (`AtomicFile.replaceFolder`).
    private func saveCheckpoint(step: Int) throws -> String {
        let final = (options.outputDirectory as NSString).appendingPathComponent("checkpoint-\(step)")
        let temporary = (options.outputDirectory as NSString).appendingPathComponent(".checkpoint-\(step).tmp")
        try? FileManager.default.removeItem(atPath: temporary)
        try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: true)
        let state = optimizer.state
        var arrays: [(name: String, tensor: Tensor)] = parameters.sorted { $0.key < $1.key }.map { ("parameter/\($0.key)", $0.value) }
        arrays += state.buffers.sorted { $0.key < $1.key }.map { ("optimizer/\($0.key)", Tensor(shape: [$0.value.count], floats: $0.value)) }
        try NPZ.write(arrays, path: (temporary as NSString).appendingPathComponent("trainer_state.npz"))
        let json = try JSONEncoder().encode(CheckpointState(step: step, cacheKey: cacheKey ?? "", optimizer: state.kind,
                                                            optimizerStep: state.step, seed: options.seed))
        try AtomicFile.write(json, to: (temporary as NSString).appendingPathComponent("trainer_state.json"))
        try currentAdapter().save(to: (temporary as NSString).appendingPathComponent("adapter"))
        try AtomicFile.replaceFolder(at: final, with: temporary)
        return final
    }

    /// The newest checkpoint, which every process must see: they read it from the output folder (a shared file
    /// system, or the same files at the same path on every machine).
    private func agreedCheckpoint() throws -> (step: Int, path: String)? {
        let latest = try latestCheckpoint()
        guard communicator.size > 1 else { return latest }
        let steps = try communicator.allgather([Double(latest?.step ?? 0)]).map { Int($0[0]) }
        guard Set(steps).count == 1 else {
            throw DistributedError.disagreement(reason: "--resume: the processes see different newest checkpoints in "
                + "\(options.outputDirectory) (steps by rank: \(steps.map(String.init).joined(separator: ", "))); under "
                + "mpirun the output folder must be on a file system every machine shares")
        }
        return latest
    }

    /// The newest complete checkpoint in the output folder, if any.
    private func latestCheckpoint() throws -> (step: Int, path: String)? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: options.outputDirectory)) ?? []
        return names.compactMap { name -> (Int, String)? in
            guard name.hasPrefix("checkpoint-"), let step = Int(name.dropFirst("checkpoint-".count)) else { return nil }
            let path = (options.outputDirectory as NSString).appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("trainer_state.json")) else { return nil }
            return (step, path)
        }.max { $0.0 < $1.0 }
    }

    private func restore(checkpoint path: String) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: (path as NSString).appendingPathComponent("trainer_state.json")))
        let state = try JSONDecoder().decode(CheckpointState.self, from: data)
        guard state.cacheKey == (cacheKey ?? ""), state.seed == options.seed else {
            throw TrainingError.invalidTrainingState(reason:
                "checkpoint \(path) was made with another model, dataset, tokenizer or seed; refusing to resume from it")
        }
        let arrays = try NPZ.read(path: (path as NSString).appendingPathComponent("trainer_state.npz"))
        for name in parameters.keys {
            guard let tensor = arrays["parameter/\(name)"], tensor.shape == parameters[name]!.shape else {
                throw TrainingError.invalidTrainingState(reason: "checkpoint \(path) has no parameter \(name) of shape \(parameters[name]!.shape)")
            }
            parameters[name] = tensor
            try session.setInitializer(name, tensor)
        }
        let buffers = arrays.filter { $0.key.hasPrefix("optimizer/") }
            .reduce(into: [String: [Float]]()) { $0[String($1.key.dropFirst("optimizer/".count))] = $1.value.floats }
        try optimizer.restore(OptimizerState(kind: state.optimizer, step: state.optimizerStep, buffers: buffers))
    }
}

/// `metrics.jsonl`: one JSON object per line, appended and flushed as steps finish.
final class MetricsLog {
    private let handle: FileHandle
    private let encoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    /// Opens `path`, keeping only the lines of steps up to `keepingStepsThrough` (the rest of a run resumed from
    /// a checkpoint is written again).
    init(path: String, keepingStepsThrough step: Int) throws {
        /// The one key a kept line is judged by; a line that does not decode (a kill mid-write) is dropped.
        struct Logged: Decodable { var step: Double }
        var kept = ""
        if step > 0, let existing = try? String(contentsOfFile: path, encoding: .utf8) {
            for line in existing.split(separator: "\n") {
                if let logged = try? JSONDecoder().decode(Logged.self, from: Data(line.utf8)), Int(logged.step) <= step {
                    kept += line + "\n"
                }
            }
        }
        try AtomicFile.write(Data(kept.utf8), to: path)
        handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
    }

    /// Appends one line: a step's or an evaluation's metrics under TRL's names, keys sorted, `/` escaped (as
    /// `JSONSerialization` wrote them before, so files of older runs and newer ones compare line for line).
    func append<Metrics: Encodable>(_ entry: Metrics) throws {
        var data = try encoder.encode(entry)
        data.append(0x0A)
        try handle.write(contentsOf: data)
    }

    deinit { try? handle.close() }
}
