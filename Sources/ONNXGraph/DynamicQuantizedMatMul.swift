/// A MatMul that onnxruntime's dynamic quantizer (`onnxruntime.quantization.quantize_dynamic`, transformers.js's
/// `scripts/quantize.py` for onnx-community's `model_quantized` / `model_int8` / `model_uint8`) turned into integer
/// ops, found by structure in any of the three forms files hold:
///
///     quantizer:  DynamicQuantizeLinear(x) → MatMulInteger(x_q, W_q, x_zp, W_zp) → Cast(float)
///                 → Mul(·, Mul(x_scale, W_scale))                                  (`quantization/operators/matmul.py`)
///     optimised:  DynamicQuantizeLinear(x) → com.microsoft MatMulIntegerToFloat(x_q, W_q, x_scale, W_scale, x_zp, W_zp, bias)
///     optimised:  com.microsoft DynamicQuantizeMatMul(x, W_q, W_scale, W_zp, bias)
///
/// (onnxruntime's graph optimiser, level extended, writes the second where the DynamicQuantizeLinear has several
/// readers and the third where it has one.) All three compute `y = (q(x) − x_zp)·(W_q − W_zp)·x_scale·W_scale
/// (+ bias)` with `W_q` a frozen int8/uint8 `[in, out]` initializer. The interpreter runs them as one
/// `DynamicQuantizeMatMul` so that a gradient reaches x; LoRA discovery sees one linear layer whose float input is
/// `input` and whose float output is `output` (the last node's).
public struct DynamicQuantizedMatMul: Sendable, Equatable {
    /// The float activation the projection reads (the DynamicQuantizeLinear's input).
    public var input: String
    /// The quantised weight `[in, out]`, its scale and (optional, "" when absent) zero point: scalar or one per
    /// output column.
    public var weight: String
    public var weightScale: String
    public var weightZeroPoint: String
    /// A bias input of the fused forms ("" when absent).
    public var bias: String
    /// The node writing the projection's float output (the last `Mul`, or the fused node).
    public var outputNode: Int
    /// Every node of the form, the output node last (the DynamicQuantizeLinear first when it is part of it; it may
    /// be shared with other projections of the same input).
    public var nodes: [Int]

    /// The projection's float output.
    public func output(in nodes: [Node]) -> String { nodes[outputNode].outputs[0] }

    /// Every projection in `nodes` (a graph's nodes in order, `Node.index` their positions), in graph order of
    /// their output nodes.
    public static func find(in nodes: [Node]) -> [DynamicQuantizedMatMul] {
        var producer: [String: Int] = [:]
        for (position, node) in nodes.enumerated() {
            for output in node.outputs where !output.isEmpty { producer[output] = position }
        }
        func producing(_ value: String, _ opType: String, _ domain: String = "") -> Int? {
            guard let index = producer[value], nodes[index].opType == opType,
                  nodes[index].domain == domain || (domain.isEmpty && nodes[index].domain == "ai.onnx") else { return nil }
            return index
        }
        func input(_ node: Node, _ position: Int) -> String { position < node.inputs.count ? node.inputs[position] : "" }
        /// The DynamicQuantizeLinear writing `value` (its output 0), with all three outputs named.
        func quantizer(of value: String) -> Int? {
            guard let index = producing(value, "DynamicQuantizeLinear"), nodes[index].outputs.count == 3,
                  nodes[index].outputs[0] == value, nodes[index].inputs.count == 1 else { return nil }
            return index
        }
        var found: [DynamicQuantizedMatMul] = []
        for (position, node) in nodes.enumerated() {
            switch (node.domain, node.opType) {
            case ("com.microsoft", "DynamicQuantizeMatMul"):
                guard node.inputs.count >= 3, node.outputs.count >= 1 else { continue }
                found.append(DynamicQuantizedMatMul(
                    input: node.inputs[0], weight: node.inputs[1], weightScale: node.inputs[2],
                    weightZeroPoint: input(node, 3), bias: input(node, 4), outputNode: position, nodes: [position]))
            case ("com.microsoft", "MatMulIntegerToFloat"):
                guard node.inputs.count >= 5, let dq = quantizer(of: node.inputs[0]),
                      node.inputs[2] == nodes[dq].outputs[1], node.inputs[4] == nodes[dq].outputs[2] else { continue }
                found.append(DynamicQuantizedMatMul(
                    input: nodes[dq].inputs[0], weight: node.inputs[1], weightScale: node.inputs[3],
                    weightZeroPoint: input(node, 5), bias: input(node, 6), outputNode: position, nodes: [dq, position]))
            case ("", "Mul"), ("ai.onnx", "Mul"):
                guard node.inputs.count == 2 else { continue }
                for order in [(0, 1), (1, 0)] {
                    guard let cast = producing(node.inputs[order.0], "Cast"),
                          case .int(let to)? = nodes[cast].attributes["to"], to == Int(DataType.float.rawValue),
                          let product = producing(nodes[cast].inputs[0], "MatMulInteger"),
                          nodes[product].inputs.count >= 3, let dq = quantizer(of: nodes[product].inputs[0]),
                          nodes[product].inputs[2] == nodes[dq].outputs[2],
                          let scales = producing(node.inputs[order.1], "Mul"), nodes[scales].inputs.count == 2
                    else { continue }
                    let scaleInputs = nodes[scales].inputs
                    guard let own = scaleInputs.firstIndex(of: nodes[dq].outputs[1]) else { continue }
                    found.append(DynamicQuantizedMatMul(
                        input: nodes[dq].inputs[0], weight: nodes[product].inputs[1], weightScale: scaleInputs[1 - own],
                        weightZeroPoint: input(nodes[product], 3), bias: "", outputNode: position,
                        nodes: [dq, product, cast, scales, position]))
                    break
                }
            default:
                continue
            }
        }
        return found
    }
}
