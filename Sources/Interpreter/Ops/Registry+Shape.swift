/// Ops that create, move, select or reshape values without arithmetic on them.
let shapeOperators: [any Operator.Type] = [
]
