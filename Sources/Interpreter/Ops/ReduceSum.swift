import ONNXGraph

/// The sum over `axes` (ONNX `ReduceSum`, opset 13: https://onnx.ai/onnx/operators/onnx__ReduceSum.html). Axes
/// come from the optional second input; absent or empty axes reduce every axis unless `noop_with_empty_axes` is 1
/// (then the input is returned unchanged); `keepdims` (default 1) keeps reduced axes as size 1. onnxruntime-genai's
/// builder graphs compute `seqlens_k` as `ReduceSum(attention_mask, axes [1]) - 1` with it.
///
/// The same reduction as `ReduceMean` without the division (ReduceSum 13 takes its axes as ReduceMean 18 does), so
/// it runs through ReduceMean's loops.
///
/// Backward: `dData = dReduced`, broadcast back over the reduced axes.
struct ReduceSum: Operator {
    static let opType = "ReduceSum"
    static let sinceVersions = [13]

    private let reduction: ReduceMean

    init(node: Node, version: Int) throws {
        var reduction = try ReduceMean(node: node, version: 18)
        reduction.averaging = false
        self.reduction = reduction
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] { try reduction.run(inputs) }
}

extension ReduceSum: DifferentiableOperator {
    // dData = broadcast(dReduced) over the reduced axes; none for axes
    func gradient(_ context: GradientContext) throws -> [Tensor?] { try reduction.gradient(context) }
}
