import Foundation
import Kernels
import ONNXGraph

/// `Y = exp(X - max(X)) / Σ exp(X - max(X))` along `axis` (ONNX `Softmax`, opset 13, where the sum runs over the
/// one axis rather than over all axes from it as before 13). Subtracting the maximum first keeps `exp` from
/// overflowing and leaves the result unchanged; `e^x` is `fastExp`.
///
/// X is viewed as `[outer, n, inner]`, `n` the size of `axis`. Rows (`inner == 1`, the last axis, as in
/// attention) are contiguous and go to the C kernels (`kernels_softmax_rows`, at the CPU's vector width); otherwise
/// the `inner` lanes are processed side by side so reads stay contiguous. A fully masked row (all -inf) comes out NaN
/// either way.
///
/// Backward: `dX = Y * (dY - Σ(dY * Y, axis))`; a row whose `dY` is all zero gets zero (it may be NaN in the forward
/// pass: a fully masked row).
struct Softmax: Operator {
    static let opType = "Softmax"
    static let sinceVersions = [13]

    /// The ONNX attribute `axis`, possibly negative.
    let axis: Int

    init(node: Node, version: Int) throws {
        axis = try node.int("axis", default: -1)
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0)
        guard case .float(let x) = input.storage else {
            throw KernelError("Softmax needs a floating-point input, got \(input.dataType)")
        }
        let axis = try resolveAxis(self.axis, in: input.shape)
        guard input.rank > 0 else { throw KernelError("Softmax needs an input of rank 1 or more, got a scalar") }
        let (outer, inner) = splitAround(input.shape, axis: axis)
        let n = input.shape[axis]
        let y = x.isEmpty ? [] : [Float](unsafeUninitializedCapacity: x.count) { out, initialized in
            x.withUnsafeBufferPointer { x in
                let xBase = x.baseAddress!, yBase = out.baseAddress!
                if inner == 1 {
                    Self.rows(xBase, yBase, rows: outer, n: n)
                } else {
                    Self.lanes(xBase, yBase, outer: outer, n: n, inner: inner)
                }
            }
            initialized = x.count
        }
        return [Tensor(shape: input.shape, floats: roundedToPrecision(y, input.dataType), dataType: input.dataType)]
    }

    /// Softmax of `rows` contiguous rows of `n`.
    private static func rows(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, rows: Int, n: Int) {
        forEachRowChunk(rows: rows, rowLength: n) { range in
            let offset = range.lowerBound * n
            kernels_softmax_rows(range.count, n, x + offset, y + offset)
        }
    }

    /// Softmax along the middle axis of `[outer, n, inner]`, `inner` lanes at a time.
    private static func lanes(
        _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, outer: Int, n: Int, inner: Int
    ) {
        forEachRowChunk(rows: outer, rowLength: n * inner) { range in
            var maxima = [Float](repeating: 0, count: inner), sums = [Float](repeating: 0, count: inner)
            maxima.withUnsafeMutableBufferPointer { maxima in
                sums.withUnsafeMutableBufferPointer { sums in
                    for block in range {
                        let input = x + block * n * inner, output = y + block * n * inner
                        maxima.update(repeating: -.infinity)
                        sums.update(repeating: 0)
                        for j in 0..<n {
                            for i in 0..<inner { maxima[i] = Swift.max(maxima[i], input[j * inner + i]) }
                        }
                        for j in 0..<n {
                            for i in 0..<inner {
                                let e = fastExp(input[j * inner + i] - maxima[i])
                                output[j * inner + i] = e
                                sums[i] += e
                            }
                        }
                        for i in 0..<inner { sums[i] = 1 / sums[i] }
                        for j in 0..<n {
                            for i in 0..<inner { output[j * inner + i] *= sums[i] }
                        }
                    }
                }
            }
        }
    }
}

extension Softmax: DifferentiableOperator {
    // Reads only its output.
    func savedValues(wanted: [Bool]) -> SavedValues { SavedValues(outputs: [0]) }

    // dX = Y · (dY − Σ_axis dY · Y)
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        guard context.wants(0) else { return [nil] }
        let output = try context.output(0), dOutput = context.outputGradient()
        guard case .float(let y) = output.storage, case .float(let dy) = dOutput.storage else {
            throw KernelError("Softmax gradient needs floating-point values, got \(output.dataType)")
        }
        let axis = try resolveAxis(self.axis, in: output.shape)
        let (outer, inner) = splitAround(output.shape, axis: axis)
        let n = output.shape[axis]
        let dx = y.isEmpty ? [] : [Float](unsafeUninitializedCapacity: y.count) { out, initialized in
            y.withUnsafeBufferPointer { y in
                dy.withUnsafeBufferPointer { dy in
                    let yBase = y.baseAddress!, dyBase = dy.baseAddress!, dxBase = out.baseAddress!
                    if inner == 1 {
                        Self.gradientRows(yBase, dyBase, dxBase, rows: outer, n: n)
                    } else {
                        Self.gradientLanes(yBase, dyBase, dxBase, outer: outer, n: n, inner: inner)
                    }
                }
            }
            initialized = y.count
        }
        return [Tensor(shape: output.shape, floats: dx, dataType: output.dataType)]
    }

    /// The gradient along `rows` contiguous rows of `n` (`kernels_softmax_backward_rows`: a row whose `dY` is all
    /// zero, a fully masked attention row no loss reads and NaN in the forward pass, gets zero, not NaN).
    private static func gradientRows(
        _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, rows: Int, n: Int
    ) {
        forEachRowChunk(rows: rows, rowLength: n) { range in
            let offset = range.lowerBound * n
            kernels_softmax_backward_rows(range.count, n, y + offset, dy + offset, dx + offset)
        }
    }

    /// The gradient along the middle axis of `[outer, n, inner]`, `inner` lanes at a time.
    private static func gradientLanes(
        _ y: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
        outer: Int, n: Int, inner: Int
    ) {
        forEachRowChunk(rows: outer, rowLength: n * inner) { range in
            var dots = [Float](repeating: 0, count: inner)
            dots.withUnsafeMutableBufferPointer { dots in
                for block in range {
                    let offset = block * n * inner
                    let y = y + offset, dy = dy + offset, dx = dx + offset
                    if (0..<(n * inner)).allSatisfy({ dy[$0] == 0 }) {
                        dx.update(repeating: 0, count: n * inner)
                        continue
                    }
                    dots.update(repeating: 0)
                    for j in 0..<n {
                        for i in 0..<inner { dots[i] += dy[j * inner + i] * y[j * inner + i] }
                    }
                    for j in 0..<n {
                        for i in 0..<inner { dx[j * inner + i] = y[j * inner + i] * (dy[j * inner + i] - dots[i]) }
                    }
                }
            }
        }
    }
}
