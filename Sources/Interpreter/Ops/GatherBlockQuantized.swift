import ONNXGraph

/// `com.microsoft.GatherBlockQuantized` (onnxruntime `docs/ContribOperators.md`; CPU kernel
/// `contrib_ops/cpu/quantization/gather_block_quantized.cc`): `Gather` from a block-quantised table, dequantised.
/// onnxruntime-genai's builder reads a tied int4 embedding through it, from the lm_head's MatMulNBits weight.
///
/// Supported here: data uint8 `[rows, C·bits/8]` packed along the last axis (low bits first), so C values per row;
/// `gather_axis` 0 and `quantize_axis` the last axis; scales `[rows, ⌈C / block_size⌉]`; optional uint8
/// zero_points packed the same way as data, default `2^(bits−1)`; bits 4 or 8; block_size a power of 2 ≥ 16.
///
///     output[i..., c] = (q[idx, c] − zero_point[idx, c / bs]) · scale[idx, c / bs],   idx = indices[i...]
///
/// An index outside `[-rows, rows)` gives a row of zeros (onnxruntime's behaviour, unlike `Gather`).
///
/// Backward: only scales get a gradient, `dScale[idx, c / bs] += dOutput[i..., c] · (q − zero_point)`; the
/// quantised data and zero points are integers, the indices positions.
struct GatherBlockQuantized: Operator {
    static let opType = "GatherBlockQuantized"
    static let domain = "com.microsoft"
    static let sinceVersions = [1]

    let bits: Int
    let blockSize: Int

    init(node: Node, version: Int) throws {
        func refuse(_ attribute: String, _ reason: String) -> GraphError {
            .invalidAttribute(node: node.label, opType: node.opType, attribute: attribute, reason: reason)
        }
        bits = try node.int("bits", default: 4)
        guard bits == 4 || bits == 8 else { throw refuse("bits", "= \(bits) is not supported; 4 and 8 are") }
        blockSize = try node.int("block_size", default: 128)
        guard blockSize >= 16, blockSize & (blockSize - 1) == 0 else {
            throw refuse("block_size", "= \(blockSize) must be a power of 2 of at least 16")
        }
        let gatherAxis = try node.int("gather_axis", default: 0)
        guard gatherAxis == 0 else { throw refuse("gather_axis", "= \(gatherAxis) is not supported; only 0 is") }
        let quantizeAxis = try node.int("quantize_axis", default: 1)
        guard quantizeAxis == 1 || quantizeAxis == -1 else {
            throw refuse("quantize_axis", "= \(quantizeAxis) is not supported; only the last axis of 2-D data (1) is")
        }
    }

    /// The table's shapes and values, checked.
    private struct Table {
        let rows: Int, columns: Int, blocks: Int, rowBytes: Int
        let bytes: [UInt8], scales: [Float], zeroPoints: [UInt8]?
    }

    private func table(_ inputs: [Tensor?]) throws(KernelError) -> Table {
        let data = try inputs.required(0), scales = try inputs.required(2)
        guard data.dataType == .uint8, data.rank == 2, case .bytes(let bytes) = data.storage else {
            throw KernelError("data must be 2-D uint8 (packed \(bits)-bit values), got \(data.dataType)\(data.shape)")
        }
        let rows = data.shape[0], rowBytes = data.shape[1], columns = rowBytes * 8 / bits
        let blocks = (columns + blockSize - 1) / blockSize
        guard scales.shape == [rows, blocks], case .float(let scaleValues) = scales.storage else {
            throw KernelError("scales must be floating-point [\(rows), \(blocks)], got \(scales.dataType)\(scales.shape)")
        }
        var zeroPoints: [UInt8]?
        if let zeros = inputs.optional(3) {
            guard zeros.dataType == .uint8, zeros.shape == [rows, (blocks * bits + 7) / 8], case .bytes(let values) = zeros.storage else {
                throw KernelError("zero_points must be uint8 [\(rows), \((blocks * bits + 7) / 8)], got \(zeros.dataType)\(zeros.shape)")
            }
            zeroPoints = values
        }
        return Table(rows: rows, columns: columns, blocks: blocks, rowBytes: rowBytes, bytes: bytes,
                     scales: scaleValues, zeroPoints: zeroPoints)
    }

    /// Calls `body(outputRow, tableRow)` for each index in range (the rows out of range stay zero).
    private func forEachRow(_ indices: [Int], _ table: Table, _ body: (Int, Int) -> Void) {
        for (position, index) in indices.enumerated() {
            let row = index < 0 ? index + table.rows : index
            if row >= 0 && row < table.rows { body(position, row) }
        }
    }

    /// `q − zero_point` for value c of table row `row`.
    @inline(__always)
    private func centered(_ table: Table, _ row: Int, _ c: Int) -> Float {
        let perByte = 8 / bits, mask = UInt8((1 << bits) - 1)
        let q = (table.bytes[row * table.rowBytes + c / perByte] >> UInt8((c % perByte) * bits)) & mask
        let block = c / blockSize
        var zero = UInt8(1 << (bits - 1))
        if let zeroPoints = table.zeroPoints {
            let zeroRowBytes = (table.blocks * bits + 7) / 8
            zero = (zeroPoints[row * zeroRowBytes + block / perByte] >> UInt8((block % perByte) * bits)) & mask
        }
        return Float(q) - Float(zero)
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let table = try table(inputs), indexTensor = try inputs.required(1)
        let indices = try indexTensor.intValues("indices")
        let columns = table.columns
        var output = [Float](repeating: 0, count: indices.count * columns)
        forEachRow(indices, table) { position, row in
            for c in 0..<columns {
                output[position * columns + c] = centered(table, row, c) * table.scales[row * table.blocks + c / blockSize]
            }
        }
        let scales = try inputs.required(2)
        return [Tensor(shape: indexTensor.shape + [columns], floats: roundedToPrecision(output, scales.dataType),
                       dataType: scales.dataType)]
    }
}

extension GatherBlockQuantized: DifferentiableOperator {
    // Reads the table and the indices; not the output.
    func savedValues(wanted: [Bool]) -> SavedValues { SavedValues(inputs: [0, 1, 2, 3]) }

    // dScale[idx, c / bs] += dOutput[i, c] · (q[idx, c] − zero_point); nothing for data, indices, zero_points
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        var result = [Tensor?](repeating: nil, count: context.inputs.count)
        guard context.wants(2) else { return result }
        let table = try table(context.inputs)
        let indices = try context.input(1).intValues("indices")
        let dOutput = context.outputGradient().floats, columns = table.columns
        var dScales = [Float](repeating: 0, count: table.scales.count)
        forEachRow(indices, table) { position, row in
            for c in 0..<columns {
                dScales[row * table.blocks + c / blockSize] += dOutput[position * columns + c] * centered(table, row, c)
            }
        }
        let scales = try context.input(2)
        result[2] = Tensor(shape: scales.shape, floats: dScales, dataType: scales.dataType)
        return result
    }
}
