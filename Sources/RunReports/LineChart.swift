import Foundation

/// An SVG chart of metric values against step: each series' raw values as dots and a line through them, smoothed
/// the way TensorBoard smooths scalars (see `smoothed`) or joining the raw values. Axes span the data, the value
/// axis rounded out to "nice" ticks (1, 2 or 5 times a power of ten; Heckbert, "Nice numbers for graph labels",
/// Graphics Gems 1990).
public struct LineChart: Sendable {
    /// One series: its label, CSS colour, values, and the smoothing weight of its line (0: the line joins the values).
    public struct Series: Sendable {
        public var label: String
        public var color: String
        public var points: [RunMetrics.Point]
        public var smoothing: Double

        public init(label: String, color: String, points: [RunMetrics.Point], smoothing: Double) {
            (self.label, self.color, self.points, self.smoothing) = (label, color, points, smoothing)
        }
    }

    /// The SVG's size in user units and the plot area inside it.
    public static let width = 460.0, height = 250.0
    public static let plotLeft = 60.0, plotRight = 446.0, plotTop = 12.0, plotBottom = 218.0

    public let series: [Series]
    public let xDomain: ClosedRange<Double>
    public let yDomain: ClosedRange<Double>
    public let xTicks: [Double]
    public let yTicks: [Double]

    public init(series: [Series]) {
        self.series = series
        let points = series.flatMap(\.points).filter { $0.step.isFinite && $0.value.isFinite }
        let steps = points.map(\.step), values = points.map(\.value)
        var xDomain = (steps.min() ?? 0)...(steps.max() ?? 1)
        if xDomain.lowerBound == xDomain.upperBound { xDomain = xDomain.lowerBound - 1...xDomain.upperBound + 1 }
        self.xDomain = xDomain
        xTicks = Self.ticks(in: xDomain, count: 6, integral: true).filter { xDomain.contains($0) }
        var low = values.min() ?? 0, high = values.max() ?? 1
        if low == high {
            let pad = low == 0 ? 1 : abs(low) * 0.1
            (low, high) = (low - pad, high + pad)
        }
        let yStep = Self.niceStep((high - low) / 4)
        yDomain = (low / yStep).rounded(.down) * yStep...(high / yStep).rounded(.up) * yStep
        yTicks = Self.ticks(in: yDomain, count: 5, integral: false)
    }

    /// The horizontal position of `step` in the SVG.
    public func x(_ step: Double) -> Double {
        Self.plotLeft + (step - xDomain.lowerBound) / (xDomain.upperBound - xDomain.lowerBound) * (Self.plotRight - Self.plotLeft)
    }

    /// The vertical position of `value` in the SVG (larger values higher up).
    public func y(_ value: Double) -> Double {
        Self.plotBottom - (value - yDomain.lowerBound) / (yDomain.upperBound - yDomain.lowerBound) * (Self.plotBottom - Self.plotTop)
    }

    /// TensorBoard's scalar smoothing (its `vz_line_chart2` `resmoothDataset`): an exponential moving average with
    /// `weight`, debiased by `1 - weight^n` so the first values are not pulled towards zero; non-finite values pass
    /// through unsmoothed.
    public static func smoothed(_ values: [Double], weight: Double) -> [Double] {
        var last = 0.0, count = 0.0
        return values.map { value in
            guard value.isFinite else { return value }
            last = last * weight + (1 - weight) * value
            count += 1
            let debias = weight == 1 ? 1 : 1 - pow(weight, count)
            return last / debias
        }
    }

    /// The step of "nice" ticks nearest `rough`: 1, 2, 5 or 10 times a power of ten.
    static func niceStep(_ rough: Double) -> Double {
        guard rough > 0, rough.isFinite else { return 1 }
        let power = pow(10, (log10(rough)).rounded(.down))
        let fraction = rough / power
        return (fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10) * power
    }

    static func ticks(in domain: ClosedRange<Double>, count: Int, integral: Bool) -> [Double] {
        var step = niceStep((domain.upperBound - domain.lowerBound) / Double(count - 1))
        if integral { step = max(1, step.rounded()) }
        let first = (domain.lowerBound / step).rounded(.up)
        return stride(from: first, through: (domain.upperBound / step).rounded(.down), by: 1).map { $0 * step }
    }

    /// Tick labels with as many decimals as the tick spacing needs; exponent form for very small or large values.
    static func labels(_ ticks: [Double]) -> [String] {
        guard ticks.count > 1 else { return ticks.map { String(format: "%g", $0) } }
        let spacing = ticks[1] - ticks[0]
        let largest = ticks.map(abs).max() ?? 0
        if largest >= 1e5 || (largest > 0 && largest < 1e-3) {
            return ticks.map { $0 == 0 ? "0" : String(format: "%.1e", $0) }
        }
        let decimals = max(0, Int((-log10(spacing) - 1e-9).rounded(.up)))
        return ticks.map { String(format: "%.\(decimals)f", $0 == 0 ? 0 : $0) }
    }

    private static func number(_ value: Double) -> String { String(format: "%.2f", value) }

    /// The chart as an inline `<svg>` element (scales with its container).
    public var svg: String {
        let (left, right, top, bottom) = (Self.plotLeft, Self.plotRight, Self.plotTop, Self.plotBottom)
        var parts = ["<svg class=\"chart\" viewBox=\"0 0 \(Int(Self.width)) \(Int(Self.height))\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\">"]
        for (tick, label) in zip(yTicks, Self.labels(yTicks)) {
            let y = Self.number(self.y(tick))
            parts.append("<line class=\"grid\" x1=\"\(left)\" x2=\"\(right)\" y1=\"\(y)\" y2=\"\(y)\"/>")
            parts.append("<text class=\"tick\" x=\"\(left - 6)\" y=\"\(y)\" text-anchor=\"end\" dominant-baseline=\"middle\">\(label)</text>")
        }
        for (tick, label) in zip(xTicks, Self.labels(xTicks)) {
            let x = Self.number(self.x(tick))
            parts.append("<line class=\"grid\" x1=\"\(x)\" x2=\"\(x)\" y1=\"\(top)\" y2=\"\(bottom)\"/>")
            parts.append("<text class=\"tick\" x=\"\(x)\" y=\"\(bottom + 16)\" text-anchor=\"middle\">\(label)</text>")
        }
        parts.append("<rect class=\"frame\" x=\"\(left)\" y=\"\(top)\" width=\"\(right - left)\" height=\"\(bottom - top)\"/>")
        parts.append("<text class=\"axis\" x=\"\(right)\" y=\"\(Self.height - 2)\" text-anchor=\"end\">step</text>")
        for series in series {
            let points = series.points.filter { $0.step.isFinite && $0.value.isFinite }
            let name = HTML.escape(series.label)
            parts.append("<g class=\"points\" data-series=\"\(name)\" fill=\"\(series.color)\">")
            for point in points {
                parts.append("<circle cx=\"\(Self.number(x(point.step)))\" cy=\"\(Self.number(y(point.value)))\" r=\"\(series.smoothing > 0 ? 2.4 : 3.2)\">"
                             + "<title>\(name) step \(Int(point.step)): \(String(format: "%.6g", point.value))</title></circle>")
            }
            parts.append("</g>")
            let lineValues = series.smoothing > 0 ? Self.smoothed(points.map(\.value), weight: series.smoothing) : points.map(\.value)
            let path = zip(points, lineValues).enumerated().map { index, pair in
                "\(index == 0 ? "M" : "L")\(Self.number(x(pair.0.step))),\(Self.number(y(pair.1)))"
            }.joined(separator: " ")
            if points.count > 1 {
                parts.append("<path class=\"line\" data-series=\"\(name)\" stroke=\"\(series.color)\" d=\"\(path)\"/>")
            }
        }
        parts.append("</svg>")
        return parts.joined(separator: "\n")
    }
}

