import ONNXGraph

/// Converts a tensor to the element type `to` (ONNX `Cast`; 19 adds `saturate` and 21 adds 4-bit types, both of
/// which only concern types this interpreter does not hold, so 13, 19 and 21 share this implementation).
///
/// - floating → integer truncates toward zero, then wraps into the target width (-1.7 → uint8 255); NaN and
///   values beyond Int64 become Int64.min before wrapping, what x86-64 (and so onnxruntime there) produce.
/// - → float16 / bfloat16 rounds to that precision (round to nearest even), though the values stay `Float`s.
/// - → bool is `x != 0`; bool → number is 0 or 1.
///
/// Backward: `dInput = Cast(dOutput, to: input type)` between floating types; none for integer or bool.
struct Cast: Operator {
    static let opType = "Cast"
    static let sinceVersions = [13, 19, 21]

    /// The target type, the ONNX attribute `to`.
    let to: DataType

    init(node: Node, version: Int) throws {
        guard let raw = try node.int("to") else {
            throw GraphError.invalidAttribute(node: node.label, opType: node.opType, attribute: "to",
                                              reason: "is required")
        }
        guard let type = DataType(rawValue: Int32(truncatingIfNeeded: raw)), type.storageKind != nil else {
            let name = DataType(rawValue: Int32(truncatingIfNeeded: raw)).map { " (\($0))" } ?? ""
            throw GraphError.invalidAttribute(
                node: node.label, opType: node.opType, attribute: "to",
                reason: "names type \(raw)\(name), which the interpreter cannot hold "
                    + "(strings, complex, float8 and 4-bit types are not supported)")
        }
        to = type
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let input = try inputs.required(0)
        let storage: Tensor.Storage
        switch input.storage {
        case .float(let x):
            switch to.storageKind {
            case .float: storage = .float(roundedToPrecision(x, to))
            case .int64 where to == .uint64: storage = .int64(x.map { Self.truncatedToUInt64(Double($0)) })
            case .int64, .bytes: storage = .int64(wrappedToWidth(x.map { Self.truncatedToInt64(Double($0)) }, to))
            default: storage = .bool(x.map { $0 != 0 })
            }
        case .int64(let x):
            switch to.storageKind {
            case .float:
                let values = input.dataType == .uint64
                    ? x.map { Float(UInt64(bitPattern: $0)) } : x.map { Float($0) }
                storage = .float(roundedToPrecision(values, to))
            case .int64, .bytes: storage = .int64(wrappedToWidth(x, to))
            default: storage = .bool(x.map { $0 != 0 })
            }
        case .bytes(let x):
            switch to.storageKind {
            case .float:
                let values = input.dataType == .int8 ? x.map { Float(Int8(bitPattern: $0)) } : x.map { Float($0) }
                storage = .float(roundedToPrecision(values, to))
            case .bytes: storage = .bytes(x)  // uint8 ↔ int8 keeps the bit pattern, as wrapping does
            case .int64: storage = .int64(wrappedToWidth(input.int64s, to))
            default: storage = .bool(x.map { $0 != 0 })
            }
        case .bool(let x):
            switch to.storageKind {
            case .float: storage = .float(x.map { $0 ? 1 : 0 })
            case .int64, .bytes: storage = .int64(x.map { $0 ? 1 : 0 })
            default: storage = .bool(x)
            }
        }
        return [Tensor(shape: input.shape, dataType: to, storage: storage)]
    }

    /// `value` truncated toward zero; NaN and values outside Int64's range give Int64.min.
    static func truncatedToInt64(_ value: Double) -> Int64 {
        value >= -0x1p63 && value < 0x1p63 ? Int64(value) : .min
    }

    /// `value` truncated toward zero as a uint64 (held as its bit pattern); negative values wrap.
    static func truncatedToUInt64(_ value: Double) -> Int64 {
        value >= 0x1p63 && value < 0x1p64 ? Int64(bitPattern: UInt64(value)) : truncatedToInt64(value)
    }
}

extension Cast: DifferentiableOperator {
    // Reads only shapes.
    func savedValues(wanted: [Bool]) -> SavedValues { .shapes }

    // dInput = Cast(dOutput, to: input type), between floating types (an integer or bool output carries none)
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let (shape, type) = (try context.inputShape(0), try context.inputType(0))
        guard context.wants(0), type.isFloatingPoint,
              case .float(let dOutput) = context.outputGradient().storage else { return [nil] }
        let values = roundedToPrecision(dOutput, type)
        return [Tensor(shape: shape, floats: values, dataType: type)]
    }
}
