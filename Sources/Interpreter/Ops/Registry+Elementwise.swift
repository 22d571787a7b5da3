/// Elementwise, comparison, activation, normalisation and reduction ops.
let elementwiseOperators: [any Operator.Type] = [
]
