import ArgumentParser
import Foundation
import Interpreter
import RunReports

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a self-contained HTML report of a training run (charts of every metric, the run's settings); works on a run still going.")

    @Argument(help: "The --output-dir of a train run.")
    var outputDir: String

    @Option(help: "The HTML file to write (default: <output-dir>/report.html).")
    var output: String?

    func run() throws {
        let path = output ?? (outputDir as NSString).appendingPathComponent("report.html")
        try RunReport.load(folder: outputDir).write(to: path)
        print("report written to \(path)")
    }
}

extension ProfileReport {
    /// The page of a `bench --profile-report` run.
    init(title: String, model: String, shape: String, profile: OpProfile) {
        self.init(title: title, facts: [("model", model), ("batch", shape)],
                  seconds: profile.nanoseconds.mapValues { Double($0) / 1e9 }, calls: profile.calls)
    }
}
