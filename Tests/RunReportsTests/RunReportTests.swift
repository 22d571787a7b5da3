import Foundation
import XCTest

@testable import RunReports

/// The metrics reader, the charts' coordinates and the page, on small hand-made runs.
final class RunReportTests: XCTestCase {
    func testMetricsSkipAPartialLastLineAndSplitEvalLines() {
        let text = """
            {"loss":0.69,"rewards/margins":0,"step":1}
            {"loss":0.5,"rewards/margins":0.25,"step":2}
            {"eval_loss":0.6,"eval_rewards/margins":0.125,"step":2}
            {"loss":0.4,"rewards/mar
            """
        let metrics = RunMetrics(jsonl: text)
        XCTAssertEqual(metrics.skippedLines, 1)
        XCTAssertEqual(metrics.train["loss"], [.init(step: 1, value: 0.69), .init(step: 2, value: 0.5)])
        XCTAssertEqual(metrics.eval["rewards/margins"], [.init(step: 2, value: 0.125)])
        XCTAssertNil(metrics.train["eval_loss"])
        XCTAssertEqual(metrics.lastTrain["loss"], 0.5)
        XCTAssertEqual(metrics.lastEval["loss"], 0.6)
        XCTAssertEqual(metrics.lastEval["step"], 2)
    }

    /// The `x,y` pairs of the path of `series` in `svg`.
    private func pathPoints(_ svg: String, series: String) throws -> [(Double, Double)] {
        let line = try XCTUnwrap(svg.split(separator: "\n").first { $0.hasPrefix("<path") && $0.contains("data-series=\"\(series)\"") })
        let d = try XCTUnwrap(line.range(of: " d=\"").map { line[$0.upperBound...].prefix { $0 != "\"" } })
        return try d.split(separator: " ").map { command in
            let numbers = command.dropFirst().split(separator: ",").compactMap { Double($0) }
            XCTAssertEqual(numbers.count, 2, "\(command)")
            return (try XCTUnwrap(numbers.first), try XCTUnwrap(numbers.last))
        }
    }

    private func circles(_ svg: String, series: String) -> [(Double, Double)] {
        let group = svg.components(separatedBy: "data-series=\"\(series)\" fill=")[1].components(separatedBy: "</g>")[0]
        return group.components(separatedBy: "<circle cx=\"").dropFirst().map { circle in
            let cx = Double(circle.prefix { $0 != "\"" })!
            let cy = Double(circle.components(separatedBy: "cy=\"")[1].prefix { $0 != "\"" })!
            return (cx, cy)
        }
    }

    func testChartCoordinatesFollowTheData() throws {
        // Steps 0...10, values step/10: the axes span exactly [0, 10] × [0, 1], so the plot area
        // x 60...446, y 218 (bottom) ... 12 (top) maps step s, value v to (60 + 38.6 s, 218 - 206 v).
        let train = (0...10).map { RunMetrics.Point(step: Double($0), value: Double($0) / 10) }
        let eval = [RunMetrics.Point(step: 5, value: 0.9), RunMetrics.Point(step: 10, value: 0.3)]
        let chart = LineChart(series: [
            .init(label: "train", color: "#000", points: train, smoothing: 0),
            .init(label: "eval", color: "#f00", points: eval, smoothing: 0),
        ])
        XCTAssertEqual(chart.xDomain, 0...10)
        XCTAssertEqual(chart.yDomain, 0...1)
        let expected = train.map { (60 + 38.6 * $0.step, 218 - 206 * $0.value) }
        let drawn = try pathPoints(chart.svg, series: "train")
        XCTAssertEqual(drawn.count, expected.count)
        for (point, want) in zip(drawn, expected) {
            XCTAssertEqual(point.0, want.0, accuracy: 0.006)
            XCTAssertEqual(point.1, want.1, accuracy: 0.006)
        }
        let evalDrawn = try pathPoints(chart.svg, series: "eval")
        XCTAssertEqual(evalDrawn.map(\.0), [253, 446])
        XCTAssertEqual(evalDrawn[0].1, 218 - 206 * 0.9, accuracy: 0.006)
        XCTAssertEqual(evalDrawn[1].1, 218 - 206 * 0.3, accuracy: 0.006)
        XCTAssertEqual(circles(chart.svg, series: "eval").map(\.0), [253, 446])
    }

    func testSmoothedLineIsTensorBoardsDebiasedAverageAndDotsStayRaw() throws {
        // weight 0.6 on 1, 0, 1: averages 0.4, 0.24, 0.544 debiased by 0.4, 0.64, 0.784.
        let smoothed = LineChart.smoothed([1, 0, 1], weight: 0.6)
        for (value, want) in zip(smoothed, [1, 0.375, 0.544 / 0.784]) { XCTAssertEqual(value, want, accuracy: 1e-12) }

        let points = [1.0, 0, 1].enumerated().map { RunMetrics.Point(step: Double($0.offset), value: $0.element) }
        let chart = LineChart(series: [.init(label: "train", color: "#000", points: points, smoothing: 0.6)])
        XCTAssertEqual(chart.yDomain, 0...1)
        let line = try pathPoints(chart.svg, series: "train").map(\.1)
        for (y, value) in zip(line, smoothed) { XCTAssertEqual(y, 218 - 206 * value, accuracy: 0.006) }
        XCTAssertEqual(circles(chart.svg, series: "train").map(\.1), [12, 218, 12])
    }

    func testNiceAxes() {
        let chart = LineChart(series: [.init(label: "train", color: "#000", points: [
            .init(step: 1, value: 0.6931), .init(step: 24, value: 0.52),
        ], smoothing: 0)])
        XCTAssertEqual(chart.yDomain.lowerBound, 0.5, accuracy: 1e-12)
        XCTAssertEqual(chart.yDomain.upperBound, 0.7, accuracy: 1e-12)
        XCTAssertEqual(chart.xTicks, [5, 10, 15, 20])
        XCTAssertEqual(LineChart.labels(chart.yTicks), ["0.50", "0.55", "0.60", "0.65", "0.70"])
        XCTAssertEqual(LineChart.labels([0, 0.0001, 0.0002]), ["0", "1.0e-04", "2.0e-04"])
    }

    func testFiguresAndScheduledMetrics() {
        XCTAssertEqual(RunReport.format(0.612345), "0.6123")
        XCTAssertEqual(RunReport.format(1059.3485), "1059.3")
        XCTAssertEqual(RunReport.format(-0.00037), "-3.700e-04")
        XCTAssertEqual(RunReport.format(nil), "–")
        let metrics = RunMetrics(jsonl: #"{"loss":0.7,"learning_rate":0.001,"step":1}"#)
        let report = RunReport(title: "run", metrics: metrics, configuration: nil, duration: nil)
        XCTAssertEqual(report.chart("loss").series.map(\.smoothing), [RunReport.smoothing])
        XCTAssertEqual(report.chart("learning_rate").series.map(\.smoothing), [0], "a schedule is drawn as it is")
    }

    func testPageIsSelfContainedAndShowsTheLastFigures() {
        let metrics = RunMetrics(jsonl: """
            {"loss":0.6931,"rewards/accuracies":0,"epoch":0.5,"step":1}
            {"loss":0.61234,"rewards/accuracies":0.75,"epoch":1,"step":2}
            {"eval_loss":0.65,"step":2}
            """)
        let configuration = RunConfiguration(model: "m.onnx", data: "d.jsonl", evalData: nil, loss: "sigmoid",
                                             totalSteps: 4, started: Date(timeIntervalSince1970: 0),
                                             parameters: [.init("beta", "0.1"), .init("note", "<b>")])
        let html = RunReport(title: "run", metrics: metrics, configuration: configuration, duration: 75).html
        XCTAssertTrue(html.contains("<div class=\"value\" data-metric=\"loss\">0.6123</div>"))
        XCTAssertTrue(html.contains("step 2 of 4"))
        XCTAssertTrue(html.contains("1m 15s"))
        XCTAssertTrue(html.contains("&lt;b&gt;"))
        XCTAssertEqual(html.components(separatedBy: "<section class=\"card\"").count - 1, 2, "loss and rewards/accuracies, not epoch")
        for external in ["<script", "<link", "src=", "url(", "@import", "https://"] {
            XCTAssertFalse(html.contains(external), external)
        }
    }
}
