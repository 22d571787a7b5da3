import Foundation
import RunReports

/// What a run writes for people to look at, beside `metrics.jsonl`: `run_config.json` (read by `onnx-dpo report`)
/// and, unless `options.tensorBoard` is off, TensorBoard event files in `<output-dir>/runs/` holding the same numbers
/// under transformers' tags (`train/loss`, `eval/rewards/margins`) and the options as text.
final class TrainingRunLog {
    private let writer: TensorBoardWriter?

    /// Starts this session's log; `keepingStepsThrough` is the checkpoint step resumed from (0 for a fresh run),
    /// after which the event files of earlier sessions are dropped, as `metrics.jsonl` drops its lines.
    init(options: DPOTrainingOptions, totalSteps: Int, keepingStepsThrough step: Int) throws {
        let configuration = options.runConfiguration(totalSteps: totalSteps)
        try configuration.write(toFolder: options.outputDirectory)
        guard options.tensorBoard else {
            writer = nil
            return
        }
        writer = try TensorBoardWriter(folder: (options.outputDirectory as NSString).appendingPathComponent("runs"),
                                       keepingStepsThrough: step, now: configuration.started)
        try writer?.addText(tag: "args", markdown: configuration.markdown, step: step, wallTime: configuration.started)
    }

    /// Logs one `metrics.jsonl` entry (a step's or an evaluation's, keyed by TRL's names) at its `step`.
    func log(_ entry: some LoggedMetrics) throws {
        guard let writer else { return }
        let values = entry.namedValues.compactMap { name, value in
            TensorBoardWriter.tag(forMetric: name).map { (tag: $0, value: value) }
        }
        try writer.addScalars(values.sorted { $0.tag < $1.tag }, step: entry.step)
    }
}

extension DPOTrainingOptions {
    /// The run's configuration with TRL's `DPOConfig` and PEFT's `LoraConfig` argument names.
    func runConfiguration(totalSteps: Int) -> RunConfiguration {
        let loss = objective.terms.map { $0.weight == 1 ? $0.type.rawValue : "\($0.type.rawValue)×\($0.weight)" }
            .joined(separator: " + ")
        typealias Parameter = RunConfiguration.Parameter
        var parameters = [
            Parameter("beta", "\(objective.beta)"),
            Parameter("learning_rate", "\(learningRate)"),
            Parameter("lr_scheduler_type", schedule.rawValue),
            Parameter("warmup_steps", "\(warmupSteps)"),
            Parameter("optim", optimizer.rawValue),
            Parameter("weight_decay", "\(weightDecay)"),
            Parameter("max_grad_norm", maxGradNorm.map { "\($0)" } ?? "none"),
            Parameter("per_device_train_batch_size", "\(batchSize)"),
            Parameter("gradient_accumulation_steps", "\(gradientAccumulation)"),
            Parameter("num_train_epochs", maxSteps == nil ? "\(epochs)" : "– (max_steps)"),
            Parameter("max_length", data.maxLength.map { "\($0)" } ?? "none"),
            Parameter("truncation_mode", data.truncationMode.rawValue),
            Parameter("r", "\(lora.rank)"),
            Parameter("lora_alpha", "\(lora.alpha)"),
            Parameter("lora_dropout", "\(lora.dropout)"),
            Parameter("use_rslora", "\(lora.useRSLoRA)"),
            Parameter("init_lora_weights", lora.initialization.rawValue),
            Parameter("target_modules", targets.joined(separator: ", ")),
            Parameter("seed", "\(seed)"),
            Parameter("shuffle", "\(shuffle)"),
        ]
        let types = objective.terms.map(\.type)
        if types.contains(.robust) || (objective.labelSmoothing > 0 && (types.contains(.sigmoid) || types.contains(.simpo))) {
            parameters.insert(Parameter("label_smoothing", "\(objective.labelSmoothing)"), at: 1)
        }
        if types.contains(.simpo) {
            parameters.insert(contentsOf: [Parameter("simpo_gamma", "\(objective.simpoGamma)"),
                                           Parameter("cpo_alpha", "\(objective.cpoAlpha)")], at: 1)
        }
        if types.contains(.tdpo2) { parameters.insert(Parameter("tdpo_alpha", "\(objective.tdpoAlpha)"), at: 1) }
        if evalDataPath == nil, evalFraction > 0 { parameters.append(Parameter("eval_fraction", "\(evalFraction)")) }
        if let evalEvery { parameters.append(Parameter("eval_steps", "\(evalEvery)")) }
        if let checkpointEvery { parameters.append(Parameter("save_steps", "\(checkpointEvery)")) }
        if let initAdapter { parameters.append(Parameter("init_adapter", initAdapter)) }
        return RunConfiguration(model: modelPath, data: dataPath, evalData: evalDataPath, loss: loss,
                                totalSteps: totalSteps, started: Date(), parameters: parameters)
    }
}
