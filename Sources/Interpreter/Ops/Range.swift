import Foundation
import ONNXGraph

/// `start, start + delta, ...` while short of `limit`: `max(ceil((limit - start) / delta), 0)` elements, of
/// `start`'s type. Each value adds `delta` to the previous one, as the ONNX function body and onnxruntime do.
///
/// Named `RangeOperator`, not `Range`, because a module-level `Range` would hide `Swift.Range` from every file of
/// the module (`Range<Int>` in the kernels would stop compiling).
struct RangeOperator: Operator {
    static let opType = "Range"
    static let sinceVersions = [11]

    /// More elements than this is taken for a mistake rather than allocated.
    private static let maximumCount = Int(Int32.max)

    init(node: Node, version: Int) throws {}

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let start = try inputs.required(0), limit = try inputs.required(1), delta = try inputs.required(2)
        let operands = [start, limit, delta]
        guard operands.allSatisfy({ $0.count == 1 && $0.storage.kind == start.storage.kind }) else {
            throw KernelError("Range needs three scalars of one type, got "
                + operands.map { "\($0.dataType)\($0.shape)" }.joined(separator: ", "))
        }
        switch start.widenedStorage {
        case .float(let values):
            let (first, end, step) = (values[0], limit.floats[0], delta.floats[0])
            guard step != 0 else { throw KernelError("Range delta must not be zero") }
            let steps = (Double(end - first) / Double(step)).rounded(.up)
            guard steps.isFinite else {
                throw KernelError("Range from \(first) to \(end) by \(step) has no finite length")
            }
            let count = try checkedCount(steps <= 0 ? 0 : steps >= Double(Self.maximumCount) ? Self.maximumCount + 1 : Int(steps))
            return [Tensor(shape: [count], floats: accumulate(from: first, by: step, count: count), dataType: start.dataType)]
        case .int64(let values):
            let (first, end, step) = (values[0], limit.int64s[0], delta.int64s[0])
            guard step != 0 else { throw KernelError("Range delta must not be zero") }
            let (span, overflow) = end.subtractingReportingOverflow(first)
            guard !overflow else { throw KernelError("Range from \(first) to \(end) overflows int64") }
            // Ceiling division: round the truncated quotient up when there is a remainder of the same sign.
            var steps = span / step
            if span % step != 0 && (span > 0) == (step > 0) { steps += 1 }
            let count = try checkedCount(steps <= 0 ? 0 : steps > Int64(Self.maximumCount) ? Self.maximumCount + 1 : Int(steps))
            return [Tensor(shape: [count], int64s: accumulate(from: first, by: step, count: count), dataType: start.dataType)]
        case .bool, .bytes:  // widened storage is never bytes
            throw KernelError("Range does not accept bool inputs")
        }
    }

    /// `count`, or an error when it is more than a range should hold.
    private func checkedCount(_ count: Int) throws(KernelError) -> Int {
        guard count <= Self.maximumCount else {
            throw KernelError("Range would produce more than \(Self.maximumCount) elements")
        }
        return count
    }

    /// `count` values from `start`, each `delta` more than the previous.
    private func accumulate<Value: AdditiveArithmetic>(from start: Value, by delta: Value, count: Int) -> [Value] {
        var values: [Value] = []
        values.reserveCapacity(count)
        var value = start
        for index in 0..<count {
            values.append(value)
            // Never step past the last value: an integer range may end next to the type's limit.
            if index + 1 < count { value = value + delta }
        }
        return values
    }
}
