import Foundation

/// The HTML page of a `bench --profile` run: a horizontal bar per op type, slowest first, its forward time and
/// (for a training step) its backward time stacked, with the share of the total and the calls. Self-contained like
/// `RunReport`, in the same style.
public struct ProfileReport: Sendable {
    /// One op type's totals.
    public struct Row: Equatable, Sendable {
        public var op: String
        public var forward: Double
        public var backward: Double
        public var calls: Int
        public var total: Double { forward + backward }
    }

    public var title: String
    /// `(name, value)` lines for the header: the model, the shapes, the benchmark's own result.
    public var facts: [(String, String)]
    public let rows: [Row]

    /// The SVG's width and the bars' horizontal extent in it; each row is `rowHeight` tall.
    public static let width = 900.0, barLeft = 180.0, barRight = 680.0, rowHeight = 24.0, barHeight = 14.0

    /// Rows from an op profile's seconds and calls per key, where backward rules are keyed `"<op> (backward)"`
    /// (`OpProfile`'s naming); a row's calls are its forward calls, or its backward ones when it has no forward.
    public init(title: String, facts: [(String, String)], seconds: [String: Double], calls: [String: Int]) {
        (self.title, self.facts) = (title, facts)
        let suffix = " (backward)"
        var rows: [String: Row] = [:]
        for (key, time) in seconds {
            let isBackward = key.hasSuffix(suffix)
            let op = isBackward ? String(key.dropLast(suffix.count)) : key
            var row = rows[op] ?? Row(op: op, forward: 0, backward: 0, calls: 0)
            if isBackward { row.backward += time } else { row.forward += time }
            if !isBackward || row.calls == 0 { row.calls = calls[key] ?? 0 }
            rows[op] = row
        }
        self.rows = rows.values.sorted { ($0.total, $1.op) > ($1.total, $0.op) }
    }

    /// The horizontal extent of a bar of `seconds` (the slowest op spans the whole width).
    public func barWidth(_ seconds: Double) -> Double {
        let longest = rows.first?.total ?? 0
        return longest > 0 ? seconds / longest * (Self.barRight - Self.barLeft) : 0
    }

    static func duration(_ seconds: Double) -> String {
        seconds < 1 ? String(format: "%.1f ms", seconds * 1000) : String(format: "%.2f s", seconds)
    }

    /// The chart as an inline `<svg>`.
    public var svg: String {
        let total = rows.reduce(0) { $0 + $1.total }
        let height = Double(rows.count) * Self.rowHeight + 8
        var parts = ["<svg class=\"chart bars\" viewBox=\"0 0 \(Int(Self.width)) \(Int(height))\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\">"]
        for (index, row) in rows.enumerated() {
            let top = 4 + Double(index) * Self.rowHeight
            let middle = String(format: "%.2f", top + Self.rowHeight / 2)
            let barTop = String(format: "%.2f", top + (Self.rowHeight - Self.barHeight) / 2)
            let forward = barWidth(row.forward), backward = barWidth(row.backward)
            parts.append("<text class=\"tick\" x=\"\(Self.barLeft - 8)\" y=\"\(middle)\" text-anchor=\"end\" dominant-baseline=\"middle\">\(HTML.escape(row.op))</text>")
            parts.append("<rect class=\"bar forward\" data-op=\"\(HTML.escape(row.op))\" x=\"\(Self.barLeft)\" y=\"\(barTop)\" width=\"\(String(format: "%.2f", forward))\" height=\"\(Self.barHeight)\"/>")
            if row.backward > 0 {
                parts.append("<rect class=\"bar backward\" data-op=\"\(HTML.escape(row.op))\" x=\"\(String(format: "%.2f", Self.barLeft + forward))\" y=\"\(barTop)\" width=\"\(String(format: "%.2f", backward))\" height=\"\(Self.barHeight)\"/>")
            }
            let share = total > 0 ? 100 * row.total / total : 0
            parts.append("<text class=\"tick\" x=\"\(String(format: "%.2f", Self.barLeft + forward + backward + 6))\" y=\"\(middle)\" dominant-baseline=\"middle\">"
                         + "\(Self.duration(row.total)) · \(String(format: "%.1f%%", share)) · \(row.calls) calls</text>")
        }
        parts.append("</svg>")
        return parts.joined(separator: "\n")
    }

    /// The whole page.
    public var html: String {
        let total = rows.reduce(0) { $0 + $1.total }
        let hasBackward = rows.contains { $0.backward > 0 }
        let facts = self.facts + [("total", "\(Self.duration(total)) over \(rows.count) op types")]
        return HTML.page(title: title, css: RunReport.css, body: """
            <header><div class="title"><span class="brand">onnx-dpo</span><h1>\(HTML.escape(title))</h1></div>
            <dl class="facts">\(facts.map { "<div><dt>\(HTML.escape($0.0))</dt><dd>\(HTML.escape($0.1))</dd></div>" }.joined())</dl></header>
            <main><div class="legend"><span class="key train"></span>forward\(hasBackward ? "<span class=\"key eval\"></span>backward" : "")</div>
            <section class="card"><h2>time per op type<span>slowest first</span></h2>\(svg)</section></main>
            <footer>written by onnx-dpo bench --profile-report</footer>
            """)
    }

    /// Writes `html` to `path` (a temporary file renamed into place).
    public func write(to path: String) throws { try HTML.write(html, to: path) }
}
