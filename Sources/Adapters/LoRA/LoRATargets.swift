import ONNXGraph

/// Finds the projections of an ONNX transformer that LoRA adapts, from the graph's structure.
///
/// Every attention block is found from its Softmax: the `Q·Kᵀ` MatMul before it (through scaling Mul/Div,
/// mask Add/Where, Cast) and the `probs·V` MatMul after it. Each operand is then followed back through
/// reshapes, transposes, slices and splits, elementwise ops (scaling, bias, rotary embedding) and
/// concatenations to the one linear layer (MatMul or Gemm on a 2-D initializer) it comes from, and the output
/// features of that layer are followed forward to the operand to learn which of them are q, k or v (all of
/// them, or a part of a fused projection). Node names and `pkg.torch.onnx.name_scopes` metadata only supply
/// the Hugging Face module path. No architecture is assumed.
public enum LoRATargets {
    /// The targets of `kinds` in every attention block (and, for `.mlp` and `.other`, every other linear
    /// layer), ordered by layer, then kind (q, k, v, o, mlp, other), then graph order.
    ///
    /// Throws `AdapterError.loraTargetsNotFound` naming the model when the graph has no attention block, when a
    /// block's projection of a requested kind cannot be found or told apart from the others (a fused
    /// projection whose q/k/v split could not be worked out), or when nothing of the requested kinds exists.
    public static func find(in model: Model, kinds: Set<LoRATarget.Kind> = [.q, .v]) throws(AdapterError) -> [LoRATarget] {
        let discovery = try Discovery(model: model)
        try discovery.checkProblems(for: kinds)
        let targets = discovery.targets.filter { kinds.contains($0.kind) }
        guard !targets.isEmpty else {
            let names = LoRATarget.Kind.allCases.filter(kinds.contains).map(\.rawValue).joined(separator: ", ")
            throw .loraTargetsNotFound(model: model.path, reason: "the graph has no projection of kind \(names)")
        }
        return targets
    }

    /// The targets matched by any of `patterns` (`--target`), each one of:
    /// - a kind: `q`, `k`, `v`, `o`, `mlp`, `other`, or `all-linear` (every linear layer in the transformer
    ///   blocks: q, k, v, o and mlp; not the output head, as PEFT's `all-linear`);
    /// - a regular expression matched against the whole module path, when the pattern starts with `re:` or
    ///   `.*`, or contains one of `^ $ ( ) [ ] { } | + \` (`.*\.(q|v)_proj`, `re:.*_proj`);
    /// - a glob over the whole module path, when it starts with `glob:` or contains `*` or `?`
    ///   (`*.self_attn.*_proj`, `transformer.h.*.attn.c_attn`, `model.layers.?.mlp.*`);
    /// - otherwise a module name, matched as PEFT's `target_modules` does: the whole path or its last
    ///   components (`q_proj`, `self_attn.o_proj`, `c_attn`).
    ///
    /// A fused projection is matched part by part: `c_attn` selects its q, k and v targets.
    public static func find(in model: Model, matching patterns: [String]) throws(AdapterError) -> [LoRATarget] {
        let compiled = try patterns.map { (text) throws(AdapterError) in try LoRATargetPattern(text) }
        guard !compiled.isEmpty else {
            throw .loraTargetsNotFound(model: model.path, reason: "no target pattern given")
        }
        let discovery = try Discovery(model: model)
        let selected = discovery.targets.filter { target in compiled.contains { $0.matches(target) } }
        var kinds = Set(selected.map(\.kind))
        for pattern in compiled { kinds.formUnion(pattern.keywordKinds) }
        try discovery.checkProblems(for: kinds)
        guard !selected.isEmpty else {
            var available: [String] = []
            for target in discovery.targets where !available.contains(target.modulePath) {
                available.append(target.modulePath)
            }
            let shown = available.prefix(12).joined(separator: ", ") + (available.count > 12 ? ", …" : "")
            throw .loraTargetsNotFound(model: model.path, reason:
                "no projection matches the target patterns \(patterns.joined(separator: " ")); the graph's projections are \(shown)")
        }
        return selected
    }
}

/// One `--target` pattern (see `LoRATargets.find(in:matching:)`).
public struct LoRATargetPattern: Sendable, Equatable {
    /// How the pattern is read.
    public enum Rule: Sendable, Equatable {
        case kinds(Set<LoRATarget.Kind>)
        /// A regular expression over the whole module path.
        case regex(String)
        /// A glob over the whole module path, `*` matching any run of characters (dots included).
        case glob(String)
        /// The whole module path, or its last dot-separated components.
        case moduleName(String)
    }

    public let text: String
    public let rule: Rule

    /// Reads `text`; throws `AdapterError.invalidTargetPattern` for an empty pattern or a bad regex.
    public init(_ text: String) throws(AdapterError) {
        self.text = text
        let keywords: [String: Set<LoRATarget.Kind>] = [
            "q": [.q], "k": [.k], "v": [.v], "o": [.o], "mlp": [.mlp], "other": [.other],
            "all-linear": [.q, .k, .v, .o, .mlp],
        ]
        if let kinds = keywords[text] {
            rule = .kinds(kinds)
        } else if text.isEmpty || text == "re:" || text == "glob:" {
            throw .invalidTargetPattern(pattern: text, reason: "empty pattern")
        } else if text.hasPrefix("glob:") {
            rule = .glob(String(text.dropFirst(5)))
        } else if text.hasPrefix("re:") || text.hasPrefix(".*") || text.contains(where: { "^$()[]{}|+\\".contains($0) }) {
            let expression = text.hasPrefix("re:") ? String(text.dropFirst(3)) : text
            do {
                _ = try Regex(expression)
            } catch {
                throw .invalidTargetPattern(pattern: text, reason: "not a regular expression: \(error)")
            }
            rule = .regex(expression)
        } else if text.contains("*") || text.contains("?") {
            rule = .glob(text)
        } else {
            rule = .moduleName(text)
        }
    }

    /// The kinds a keyword pattern names (empty for path patterns).
    public var keywordKinds: Set<LoRATarget.Kind> {
        if case .kinds(let kinds) = rule { return kinds }
        return []
    }

    public func matches(_ target: LoRATarget) -> Bool {
        let path = target.modulePath
        switch rule {
        case .kinds(let kinds):
            return kinds.contains(target.kind)
        case .regex(let pattern):
            guard let regex = try? Regex(pattern) else { return false }
            return (try? regex.wholeMatch(in: path)) != nil
        case .glob(let pattern):
            return Self.globMatches(Array(pattern), Array(path))
        case .moduleName(let name):
            return path == name || path.hasSuffix("." + name)
        }
    }

    /// `*` matches any run of characters, `?` one character; everything else itself.
    static func globMatches(_ pattern: [Character], _ text: [Character]) -> Bool {
        var p = 0, t = 0
        var star: Int?, resume = 0
        while t < text.count {
            if p < pattern.count, pattern[p] == "?" || pattern[p] == text[t] {
                p += 1
                t += 1
            } else if p < pattern.count, pattern[p] == "*" {
                star = p
                resume = t
                p += 1
            } else if let star {
                p = star + 1
                resume += 1
                t = resume
            } else {
                return false
            }
        }
        while p < pattern.count, pattern[p] == "*" { p += 1 }
        return p == pattern.count
    }
}

// MARK: - Discovery

/// One pass over a model: every attention block, every linear layer, labelled.
struct Discovery {
    let model: Model
    private(set) var targets: [LoRATarget] = []
    /// Blocks whose projection of a kind could not be found, per kind.
    private(set) var problems: [LoRATarget.Kind: [String]] = [:]

    init(model: Model) throws(AdapterError) {
        self.model = model
        let index = GraphIndex(model: model)
        let search = AttentionSearch(index: index)
        let blocks = search.blocks()
        guard !blocks.isEmpty else {
            let softmaxes = model.graph.nodes.filter { $0.opType == "Softmax" }.count
            throw .loraTargetsNotFound(model: model.path, reason: softmaxes == 0
                ? "no attention block: the graph has no Softmax node and no attention op (GroupQueryAttention, MultiHeadAttention, Attention)"
                : "no attention block: none of its \(softmaxes) Softmax node(s) has a MatMul of two computed values (Q·Kᵀ) before it and a MatMul taking its output as left operand (probs·V) after it")
        }
        let paths = ModulePaths(graph: model.graph)
        var used = Set<Int>()  // linear nodes that are q, k, v or o
        var nodeIndices: [Int] = []  // graph position of each target's node, for ordering
        let sourceFusesQKV = ModulePaths.builderModelType(modelPath: model.path).map(ModulePaths.fusedQKVModelTypes.contains) ?? false
        var blockStarts: [Int] = []

        for (layer, block) in blocks.enumerated() {
            var sources: [(kind: LoRATarget.Kind, source: OperandSource)] = []
            var packed = Set<LoRATarget.Kind>()
            for operand in block.operands {
                switch search.source(of: operand) {
                case .success(let source):
                    sources.append((operand.kind, source))
                    if operand.positions != nil { packed.insert(operand.kind) }
                case .failure(let failure):
                    problems[operand.kind, default: []].append(
                        "attention block \(layer) (\(block.label)): the \(Self.role(operand.kind)) operand '\(operand.value)' of \(operand.reader.opType) \(operand.reader.label): \(failure.reason)")
                }
            }
            // Parts of one fused projection must not overlap unless both are known exactly (a projection
            // genuinely shared); an upper bound that overlaps means the q/k/v split was not understood.
            for first in sources.indices {
                for second in sources.indices where second > first {
                    let a = sources[first], b = sources[second]
                    guard a.source.projection.node.index == b.source.projection.node.index,
                          !(a.source.isExact && b.source.isExact),
                          !a.source.columns.isDisjoint(with: b.source.columns) else { continue }
                    let message = "attention block \(layer) (\(block.label)): the \(a.kind.rawValue) and \(b.kind.rawValue) parts of fused projection \(a.source.projection.node.label) overlap: how its output is split into q, k and v could not be worked out"
                    problems[a.kind, default: []].append(message)
                    problems[b.kind, default: []].append(message)
                }
            }
            blockStarts.append(sources.map(\.source.projection.node.index).min() ?? block.anchor.index)
            for (kind, source) in sources {
                let projection = source.projection
                used.insert(projection.node.index)
                let sharing = sources.filter { $0.source.projection.node.index == projection.node.index }.map(\.kind.rawValue)
                var label = paths.modulePath(of: projection.node) ?? "layers.\(layer).attention.\(sharing.joined())"
                if packed.contains(kind), sharing.count > 1 {
                    // An attention op's packed input: the runtime's packing of the source model's separate q, k
                    // and v projections, so each part is its own module (see `LoRAModule`); unless the builder's
                    // configuration names a model whose own attention is fused (Phi-3), whose one module stays shared.
                    label = sourceFusesQKV
                        ? ModulePaths.fusedInSource(paths.modulePath(of: projection.node), layer: layer)
                        : ModulePaths.packedPart(of: paths.modulePath(of: projection.node), kind: kind, layer: layer)
                }
                targets.append(Self.target(projection, kind: kind, columns: source.columns, layer: layer, modulePath: label))
                nodeIndices.append(projection.node.index)
            }
            if let output = search.outputProjection(of: block) {
                used.insert(output.node.index)
                let label = paths.modulePath(of: output.node) ?? "layers.\(layer).attention.o"
                targets.append(Self.target(output, kind: .o, columns: nil, layer: layer, modulePath: label))
                nodeIndices.append(output.node.index)
            } else {
                problems[.o, default: []].append(
                    "attention block \(layer) (\(block.label)): no linear layer reads its output '\(block.output)' through transposes and reshapes")
            }
        }

        // Every other linear layer: inside a block's span it is part of the MLP, outside it (or the output
        // head, whose result reaches a graph output without another linear layer or residual Add) it is other.
        let head = Self.headCandidates(index: index, search: search)
        var perLayer: [Int: Int] = [:]
        for node in model.graph.nodes where !used.contains(node.index) {
            guard let linear = search.linear(node.index) else { continue }
            let layer = blockStarts.lastIndex { $0 <= node.index }
            let kind: LoRATarget.Kind = layer == nil || head.contains(node.index) ? .other : .mlp
            let number = perLayer[layer ?? -1, default: 0]
            perLayer[layer ?? -1] = number + 1
            let fallback = kind == .mlp ? "layers.\(layer!).mlp.\(number)" : "linear.\(node.index)"
            targets.append(Self.target(linear, kind: kind, columns: nil, layer: layer ?? 0,
                                       modulePath: paths.modulePath(of: node) ?? fallback))
            nodeIndices.append(node.index)
        }
        let order = Dictionary(uniqueKeysWithValues: LoRATarget.Kind.allCases.enumerated().map { ($1, $0) })
        targets = zip(targets, nodeIndices)
            .sorted { ($0.0.layer, order[$0.0.kind]!, $0.1) < ($1.0.layer, order[$1.0.kind]!, $1.1) }
            .map(\.0)
    }

    /// Throws the problems found for any of `kinds`, naming the model.
    func checkProblems(for kinds: Set<LoRATarget.Kind>) throws(AdapterError) {
        let relevant = LoRATarget.Kind.allCases.filter(kinds.contains).flatMap { problems[$0] ?? [] }
        var unique: [String] = []
        for problem in relevant where !unique.contains(problem) { unique.append(problem) }
        guard !unique.isEmpty else { return }
        let shown = unique.prefix(4).joined(separator: "; ") + (unique.count > 4 ? "; and \(unique.count - 4) more" : "")
        throw .loraTargetsNotFound(model: model.path, reason: shown)
    }

    private static func role(_ kind: LoRATarget.Kind) -> String {
        switch kind {
        case .q: "query"
        case .k: "key"
        case .v: "value"
        default: kind.rawValue
        }
    }

    private static func target(
        _ linear: GraphIndex.Linear, kind: LoRATarget.Kind, columns: Set<Int>?, layer: Int, modulePath: String
    ) -> LoRATarget {
        var layout = linear.layout
        var outFeatures = linear.outFeatures
        if let columns, columns.count < linear.outFeatures {
            layout = .fused(storage: linear.layout, columns: ranges(columns.sorted()))
            outFeatures = columns.count
        }
        return LoRATarget(
            modulePath: modulePath, kind: kind, node: linear.node.name.isEmpty ? linear.node.label : linear.node.name,
            weight: linear.weight.name, bias: linear.bias, layer: layer, inFeatures: linear.inFeatures,
            outFeatures: outFeatures, layout: layout)
    }

    /// Sorted indices as maximal runs: [0, 1, 2, 5, 6] -> [0..<3, 5..<7].
    static func ranges(_ sorted: [Int]) -> [Swift.Range<Int>] {
        var result: [Swift.Range<Int>] = []
        for value in sorted {
            if let last = result.last, last.upperBound == value {
                result[result.count - 1] = last.lowerBound..<(value + 1)
            } else {
                result.append(value..<(value + 1))
            }
        }
        return result
    }

    /// Linear layers whose output reaches a graph output through no other linear layer and no Add of two
    /// computed values (a residual connection): the output head, not a block's last projection.
    private static func headCandidates(index: GraphIndex, search: AttentionSearch) -> Set<Int> {
        var reaches = Set<String>(index.graph.outputs.map(\.name))
        var result = Set<Int>()
        for node in index.graph.nodes.reversed() {
            let flows = node.outputs.contains { reaches.contains($0) }
            guard flows else { continue }
            if search.linear(node.index) != nil {
                result.insert(node.index)
                continue
            }
            if node.opType == "Add", node.inputs.filter({ !index.isConstant($0) }).count > 1 { continue }
            for input in node.inputs where !input.isEmpty { reaches.insert(input) }
        }
        return result
    }
}
