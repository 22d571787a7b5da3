import ArgumentParser
import Adapters
import Training

// Every enum a flag takes parses with ArgumentParser, so a bad value is refused while parsing, naming the flag and
// listing the choices. The library stays free of ArgumentParser: the conformances live here.
extension DPOObjective.LossType: ExpressibleByArgument {}
extension KTOObjective.LossType: ExpressibleByArgument {}
extension DPOTrainingOptions.OptimizerKind: ExpressibleByArgument {}
extension LearningRateSchedule.Shape: ExpressibleByArgument {}
extension LoRAConfiguration.Initialization: ExpressibleByArgument {}
extension ONNXExportForm: ExpressibleByArgument {}
extension ConversionTarget: ExpressibleByArgument {}

/// A comma-separated list of values in one flag (`--loss sigmoid,sft`, `--loss-weights 1,0.5`).
struct CommaList<Element: ExpressibleByArgument>: ExpressibleByArgument {
    var values: [Element]

    init(_ values: [Element]) { self.values = values }

    init?(argument: String) {
        var values: [Element] = []
        for item in argument.split(separator: ",") {
            guard let value = Element(argument: item.trimmingCharacters(in: .whitespaces)) else { return nil }
            values.append(value)
        }
        guard !values.isEmpty else { return nil }
        self.values = values
    }

    var defaultValueDescription: String { values.map(\.defaultValueDescription).joined(separator: ",") }

    /// The element's choices: listed in `--help` and in the error for a bad value.
    static var allValueStrings: [String] { Element.allValueStrings }
}
