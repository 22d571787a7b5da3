import ONNXGraph

/// Names for values and initializers added to a graph that collide with none already in it: `base`, else
/// `base_1`, `base_2`, … (the LoRA attachment's nodes and the exporter's private merged copies both use it).
struct FreshNames {
    private var taken: Set<String>

    /// Every node output, initializer and graph input of `model` is taken.
    init(model: Model) {
        let graph = model.graph
        taken = Set(graph.nodes.flatMap(\.outputs) + graph.initializers.map(\.name) + graph.inputs.map(\.name))
    }

    /// A name not yet taken, which is taken from now on.
    mutating func make(_ base: String) -> String {
        var name = base
        var counter = 1
        while taken.contains(name) { name = "\(base)_\(counter)"; counter += 1 }
        taken.insert(name)
        return name
    }
}
