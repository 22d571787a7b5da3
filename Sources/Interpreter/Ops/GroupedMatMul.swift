import ONNXGraph

/// `onnx_dpo.GroupedMatMul(A, B, expandShape, reshapeShape)`: `Y = alpha · A · op(B')` where B' is B's heads repeated
/// as grouped-query attention's `repeat_kv` does, `Reshape(Expand(Unsqueeze(B, 2), expandShape), reshapeShape)`:
/// `[b, kv, r, c] → [b, kv, n, r, c] → [b, kv·n, r, c]`, so that query head h reads key/value head h / n. Written by
/// `GraphOptimizer.fuseGroupedProducts` for attention's `Q·Kᵀ` and `P·V` on Hugging Face's grouped-query exports.
///
/// Instead of copying each key/value head n times and running one product per query head, the n query heads that share
/// a key/value head are stacked (A `[b, kv·n, m, k]` read as `[b, kv, n·m, k]`, the same memory) into one product of
/// n·m rows per key/value head; the output `[b, kv, n·m, N]` is `[b, kv·n, m, N]` in memory. Each element is the same
/// dot product, so Y is the unfused graph's bit for bit. When the shapes do not have that form (the expand or reshape
/// shape says otherwise), the three ops are run as written and the product reads their result.
/// The op is internal to a session (its domain is ours; no exported file contains it).
///
/// Backward: the product's on the stacked views, `dA = alpha · dY · op(B)ᵀ`, and `dB` summed over each group by the
/// stacked product itself (its inner dimension runs over the group's n·m rows).
struct GroupedMatMul: Operator {
    static let opType = "GroupedMatMul"
    static let domain = GraphOptimizer.internalDomain
    static let sinceVersions = [1]

    let alpha: Float
    let transB: Bool
    private let expand: Expand
    /// The replaced Reshape, with its `allowzero`: it resolves `reshapeShape` for the stacked form and runs in the
    /// general one.
    private let reshape: Reshape

    init(node: Node, version: Int) throws {
        alpha = try node.float("alpha", default: 1)
        transB = try node.int("transB", default: 0) != 0
        expand = try Expand(node: Node(name: node.name, opType: Expand.opType, inputs: ["", ""], outputs: [""]), version: 13)
        reshape = try Reshape(node: Node(name: node.name, opType: Reshape.opType, inputs: ["", ""], outputs: [""],
                                         attributes: ["allowzero": .int(try node.int("allowzero", default: 0))]), version: 14)
    }

    /// The group size n when A `[b, kv·n, m, k]` and B `[b, kv, r, c]` with these shape inputs are the stacked form.
    private func groupSize(_ aShape: [Int], _ bShape: [Int], _ expandShape: Tensor, _ reshapeShape: Tensor) -> Int? {
        guard aShape.count == 4, bShape.count == 4, expandShape.storage.kind.isInteger else { return nil }
        let (batch, heads, rows, columns) = (bShape[0], bShape[1], bShape[2], bShape[3])
        guard heads > 0, let expanded = try? broadcastShape([[batch, heads, 1, rows, columns], expandShape.int64s.map(Int.init)]),
              expanded.count == 5, expanded[0] == batch, expanded[1] == heads, expanded[3] == rows, expanded[4] == columns
        else { return nil }
        let group = expanded[2]
        guard let target = try? reshape.resolvedShape(reshapeShape, for: expanded),
              target == [batch, heads * group, rows, columns], aShape[0] == batch, aShape[1] == heads * group,
              group > 0 else { return nil }
        return group
    }

    /// B's heads repeated as the three ops the rewrite replaced compute them.
    private func repeated(_ b: Tensor, _ expandShape: Tensor, _ reshapeShape: Tensor) throws -> Tensor {
        guard b.rank >= 2 else { throw KernelError("B \(b.shape) has no axis 2 to repeat its heads along (Unsqueeze axes [2])") }
        let unsqueezed = b.reshaped(Array(b.shape.prefix(2)) + [1] + Array(b.shape.dropFirst(2)))
        return try reshape.run([try expand.run([unsqueezed, expandShape])[0], reshapeShape])[0]
    }

    /// A as `[b, kv, n·m, k]` for B `[b, kv, ...]`.
    private static func stacked(_ a: Tensor, heads: Int) -> Tensor {
        a.reshaped([a.shape[0], heads, a.shape[1] / heads * a.shape[2], a.shape[3]])
    }

    func run(_ inputs: [Tensor?]) throws -> [Tensor] {
        let a = try inputs.required(0), b = try inputs.required(1)
        let expandShape = try inputs.required(2), reshapeShape = try inputs.required(3)
        guard groupSize(a.shape, b.shape, expandShape, reshapeShape) != nil else {
            return [try matrixProduct(a, try repeated(b, expandShape, reshapeShape), transposeB: transB, alpha: alpha)]
        }
        let product = try matrixProduct(Self.stacked(a, heads: b.shape[1]), b, transposeB: transB, alpha: alpha)
        return [product.reshaped(Array(a.shape.dropLast()) + [product.shape.last!])]
    }
}

extension GroupedMatMul: DifferentiableOperator {
    // dA reads B, dB reads A; both read the shape inputs (to tell the stacked form from the general one, whose
    // backward repeats B again).
    func savedValues(wanted: [Bool]) -> SavedValues {
        SavedValues(inputs: Set([1, 2, 3] + (wanted.count > 1 && wanted[1] ? [0] : [])))
    }

    // dA = alpha · dY · op(B)ᵀ, dB = alpha · op(A)ᵀ · dY on the stacked views (the general form: dB summed over the
    // repeats)
    func gradient(_ context: GradientContext) throws -> [Tensor?] {
        let (wantA, wantB) = (context.wants(0), context.wants(1))
        let aShape = try context.inputShape(0), b = try context.input(1)
        let expandShape = try context.input(2), reshapeShape = try context.input(3)
        let a = wantB ? try context.input(0) : nil
        let dY = context.outputGradient()
        if groupSize(aShape, b.shape, expandShape, reshapeShape) != nil {
            let heads = b.shape[1]
            let rows = aShape[1] / heads * aShape[2]
            let stackedShape = [aShape[0], heads, rows, aShape[3]]
            let (dA, dB) = try matrixProductGradient(a?.reshaped(stackedShape), b, aShape: stackedShape, bShape: b.shape,
                                                     dY.reshaped([aShape[0], heads, rows, dY.shape.last!]),
                                                     transposeA: false, transposeB: transB, alpha: alpha,
                                                     wantA: wantA, wantB: wantB)
            return [dA?.reshaped(aShape), dB, nil, nil]
        }
        // The general form: the product's gradients with the repeated B, B's summed back over the repeats.
        let full = try repeated(b, expandShape, reshapeShape)
        let (dA, dFull) = try matrixProductGradient(a, full, aShape: aShape, bShape: full.shape, dY, transposeA: false,
                                                    transposeB: transB, alpha: alpha, wantA: wantA, wantB: wantB)
        guard let dFull else { return [dA, nil, nil, nil] }
        let unsqueezed = Array(b.shape.prefix(2)) + [1] + Array(b.shape.dropFirst(2))
        let expanded = try broadcastShape([unsqueezed, expandShape.int64s.map(Int.init)])
        return [dA, try reduceGradient(dFull.reshaped(expanded), to: unsqueezed).reshaped(b.shape), nil, nil]
    }
}
