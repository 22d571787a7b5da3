import Foundation

/// The HTML report of a training run: one self-contained page (inline CSS and SVG; no scripts, fonts or anything
/// fetched) with a header (model, data, loss, hyper-parameters, duration, the last figures) and a chart per metric,
/// train and eval overlaid. It reads only what the run has written so far, so it works on a run still going or
/// killed.
public struct RunReport: Sendable {
    public var title: String
    public var metrics: RunMetrics
    public var configuration: RunConfiguration?
    /// Seconds the run has been training (summed over its sessions when resumed), if known.
    public var duration: Double?

    /// Charts come in this order (TRL's names), then any other metric by name; `epoch` and `eta_seconds` get none.
    static let chartOrder = ["loss", "kl", "rewards/accuracies", "rewards/margins", "rewards/chosen",
                             "rewards/rejected", "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected",
                             "grad_norm", "learning_rate", "tokens_per_second"]
    static let notCharted: Set<String> = ["epoch", "eta_seconds"]
    /// Metrics that follow a schedule rather than the data: their line joins the values, unsmoothed.
    static let unsmoothed: Set<String> = ["learning_rate"]
    /// TensorBoard's default smoothing weight.
    public static let smoothing = 0.6
    static let trainColor = "#2563eb", evalColor = "#ea580c"

    public init(title: String, metrics: RunMetrics, configuration: RunConfiguration?, duration: Double?) {
        (self.title, self.metrics, self.configuration, self.duration) = (title, metrics, configuration, duration)
    }

    /// The report of the run in `folder`: its `metrics.jsonl`, `run_config.json` when present, and the duration
    /// from the wall times of its TensorBoard event files (each file is one session), else from the configuration's
    /// start to the last write of `metrics.jsonl`.
    public static func load(folder: String) throws -> RunReport {
        let metricsPath = (folder as NSString).appendingPathComponent("metrics.jsonl")
        let metrics = try RunMetrics.load(path: metricsPath)
        let configuration = RunConfiguration.read(folder: folder)
        var duration: Double?
        let sessions = try TensorBoardWriter.eventFiles(in: (folder as NSString).appendingPathComponent("runs"))
            .map { try TensorBoardWriter.events(inFile: $0).map(\.wallTime) }.filter { !$0.isEmpty }
        if !sessions.isEmpty {
            duration = sessions.reduce(0) { $0 + ($1.max()! - $1.min()!) }
        } else if let started = configuration?.started,
                  let modified = try? FileManager.default.attributesOfItem(atPath: metricsPath)[.modificationDate] as? Date {
            duration = max(0, modified.timeIntervalSince(started))
        }
        let name = (URL(fileURLWithPath: folder).standardizedFileURL.lastPathComponent)
        return RunReport(title: name, metrics: metrics, configuration: configuration, duration: duration)
    }

    /// The metrics that get a chart, in display order.
    public var chartedMetrics: [String] {
        let names = metrics.names.subtracting(Self.notCharted)
        return Self.chartOrder.filter(names.contains) + names.subtracting(Self.chartOrder).sorted()
    }

    /// The chart of one metric: its training values (dots, smoothed line) and eval values (dots joined).
    public func chart(_ metric: String) -> LineChart {
        var series: [LineChart.Series] = []
        if let train = metrics.train[metric] {
            series.append(.init(label: "train", color: Self.trainColor, points: train,
                                smoothing: Self.unsmoothed.contains(metric) ? 0 : Self.smoothing))
        }
        if let eval = metrics.eval[metric] {
            series.append(.init(label: "eval", color: Self.evalColor, points: eval, smoothing: 0))
        }
        return LineChart(series: series)
    }

    static func format(_ value: Double?) -> String {
        guard let value else { return "–" }
        if value == 0 { return "0" }
        if abs(value) < 1e-3 || abs(value) >= 1e5 { return String(format: "%.3e", value) }
        return String(format: abs(value) >= 100 ? "%.1f" : "%.4f", value)
    }

    static func format(duration seconds: Double) -> String {
        let total = Int(seconds.rounded())
        if total >= 3600 { return String(format: "%dh %02dm", total / 3600, total % 3600 / 60) }
        return total >= 60 ? String(format: "%dm %02ds", total / 60, total % 60) : "\(total) s"
    }

    /// The status line: complete, or the step it has reached (still running, or stopped).
    var status: (text: String, complete: Bool) {
        let step = Int(metrics.lastTrain["step"] ?? 0)
        guard let total = configuration?.totalSteps else { return ("step \(step)", false) }
        return step >= total ? ("complete: \(total) steps", true) : ("step \(step) of \(total): running or stopped", false)
    }

    /// The whole page.
    public var html: String {
        let escape = HTML.escape
        var page: [String] = []
        page.append("""
            <header><div class="title"><span class="brand">onnx-dpo</span><h1>\(escape(title))</h1>
            <span class="status \(status.complete ? "done" : "partial")">\(escape(status.text))</span></div>
            """)
        var facts: [(String, String)] = []
        if let configuration {
            facts.append(("model", configuration.model))
            facts.append(("data", configuration.data + (configuration.evalData.map { " · eval " + $0 } ?? "")))
            facts.append(("loss", configuration.loss))
            facts.append(("started", Self.timestamp(configuration.started)))
        }
        if let duration { facts.append(("duration", Self.format(duration: duration))) }
        if let epoch = metrics.lastTrain["epoch"] { facts.append(("epoch", String(format: "%.2f", epoch))) }
        page.append("<dl class=\"facts\">" + facts.map { "<div><dt>\($0.0)</dt><dd>\(escape($0.1))</dd></div>" }.joined() + "</dl>")

        let figures: [(String, Double?)] = [
            ("loss", metrics.lastTrain["loss"]), ("reward accuracy", metrics.lastTrain["rewards/accuracies"]),
            ("reward margin", metrics.lastTrain["rewards/margins"]), ("eval loss", metrics.lastEval["loss"]),
            ("eval reward accuracy", metrics.lastEval["rewards/accuracies"]),
            ("eval reward margin", metrics.lastEval["rewards/margins"]),
        ]
        let trainStep = metrics.lastTrain["step"].map { "step \(Int($0))" } ?? ""
        let evalStep = metrics.lastEval["step"].map { "step \(Int($0))" } ?? ""
        page.append("<div class=\"figures\">" + figures.enumerated().filter { $0.element.1 != nil }.map { index, figure in
            "<div class=\"figure \(index < 3 ? "train" : "eval")\"><div class=\"value\" data-metric=\"\(figure.0)\">\(Self.format(figure.1))</div>"
                + "<div class=\"label\">\(figure.0) <span>\(index < 3 ? trainStep : evalStep)</span></div></div>"
        }.joined() + "</div>")
        if let configuration, !configuration.parameters.isEmpty {
            page.append("<details class=\"parameters\" open><summary>hyper-parameters</summary><table>"
                        + configuration.parameters.map { "<tr><th>\(escape($0.name))</th><td>\(escape($0.value))</td></tr>" }.joined()
                        + "</table></details>")
        }
        page.append("</header><main>")
        if chartedMetrics.isEmpty {
            page.append("<p class=\"empty\">No metrics yet: metrics.jsonl has no complete step.</p>")
        }
        page.append("<div class=\"legend\"><span class=\"key train\"></span>train (dots: each step; line: smoothed, "
                    + "TensorBoard's weight \(Self.smoothing))<span class=\"key eval\"></span>eval</div><div class=\"charts\">")
        for metric in chartedMetrics {
            let last = metrics.lastTrain[metric] ?? metrics.lastEval[metric]
            page.append("<section class=\"card\" data-metric=\"\(escape(metric))\"><h2>\(escape(metric))<span>\(Self.format(last))</span></h2>\(chart(metric).svg)</section>")
        }
        let steps = metrics.train["loss"]?.count ?? 0, evaluations = metrics.eval["loss"]?.count ?? 0
        page.append("</div></main><footer>metrics.jsonl: \(steps) training step\(steps == 1 ? "" : "s"), "
                    + "\(evaluations) evaluation\(evaluations == 1 ? "" : "s")"
                    + (metrics.skippedLines > 0 ? ", \(metrics.skippedLines) incomplete line(s) skipped" : "")
                    + " · written by onnx-dpo report</footer>")
        return HTML.page(title: title, css: Self.css, body: page.joined(separator: "\n"))
    }

    static func timestamp(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm 'UTC'"
        return formatter.string(from: date)
    }

    static let css = """
        :root{--train:\(trainColor);--eval:\(evalColor);--ink:#1f2937;--muted:#6b7280;--line:#e5e7eb}
        *{box-sizing:border-box}
        body{margin:0;background:#f5f6f8;color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
        header{background:#fff;border-bottom:1px solid var(--line);padding:20px 28px 16px}
        .title{display:flex;align-items:baseline;gap:12px;flex-wrap:wrap}
        .brand{font-weight:600;color:var(--muted);letter-spacing:.02em}
        h1{font-size:22px;margin:0;font-weight:650}
        .status{font-size:12px;padding:2px 10px;border-radius:999px;background:#fef3c7;color:#92400e}
        .status.done{background:#dcfce7;color:#166534}
        .facts{display:flex;flex-wrap:wrap;gap:6px 28px;margin:12px 0 14px}
        .facts div{display:flex;gap:8px;min-width:0}
        dt{color:var(--muted)}dd{margin:0;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px;word-break:break-all}
        .figures{display:flex;flex-wrap:wrap;gap:10px}
        .figure{border:1px solid var(--line);border-left:4px solid var(--train);border-radius:8px;padding:8px 14px;min-width:150px}
        .figure.eval{border-left-color:var(--eval)}
        .figure .value{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
        .figure .label{color:var(--muted);font-size:12px}.figure .label span{opacity:.75}
        .parameters{margin-top:12px}.parameters summary{cursor:pointer;color:var(--muted)}
        .parameters table{border-collapse:collapse;margin-top:6px;columns:3;display:block;column-gap:28px}
        .parameters tr{display:flex;gap:10px;break-inside:avoid;padding:1px 0}
        .parameters th{font-weight:400;color:var(--muted);text-align:left;min-width:190px}
        .parameters td{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
        main{padding:16px 28px}
        .legend{display:flex;align-items:center;gap:8px;color:var(--muted);font-size:12px;margin-bottom:10px}
        .key{display:inline-block;width:18px;height:3px;border-radius:2px;background:var(--train);margin-left:10px}
        .key.eval{background:var(--eval)}
        .charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:14px}
        .card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:10px 12px 4px}
        .card h2{font-size:14px;margin:0 0 2px;display:flex;justify-content:space-between;font-weight:600}
        .card h2 span{color:var(--muted);font-weight:400;font-variant-numeric:tabular-nums}
        .chart{width:100%;height:auto;display:block}
        .chart .grid{stroke:#eef0f3;stroke-width:1}
        .chart .frame{fill:none;stroke:#d1d5db}
        .chart .tick,.chart .axis{fill:var(--muted);font-size:11px;font-family:inherit}
        .chart .points circle{fill-opacity:.45}
        .chart .points[data-series=eval] circle{fill-opacity:1}
        .chart .line{fill:none;stroke-width:2;stroke-linejoin:round;stroke-linecap:round}
        .chart .bar.forward{fill:var(--train)}.chart .bar.backward{fill:var(--eval)}
        .empty{color:var(--muted)}
        footer{color:var(--muted);font-size:12px;padding:4px 28px 24px}
        """
}

extension RunReport {
    /// Writes `html` to `path` (a temporary file renamed into place, so a browser never reads half a report).
    public func write(to path: String) throws { try HTML.write(html, to: path) }
}
