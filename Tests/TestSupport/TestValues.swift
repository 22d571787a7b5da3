import ONNXGraph

/// `count` deterministic values uniform in [-1, 1), drawn from the package's own `SeededGenerator`: inputs and loss
/// weights for kernel and gradient tests.
public func uniformTestValues(_ count: Int, seed: UInt64) -> [Float] {
    var generator = SeededGenerator(seed: seed)
    return (0..<count).map { _ in Float.random(in: -1..<1, using: &generator) }
}
