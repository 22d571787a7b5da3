/// Ops that create, move, select or reshape values without arithmetic on them.
let shapeOperators: [any Operator.Type] = [
    Concat.self,
    Constant.self,
    ConstantOfShape.self,
    Expand.self,
    Flatten.self,
    Gather.self,
    Identity.self,
    GatherND.self,
    RangeOperator.self,
    Reshape.self,
    Shape.self,
    Slice.self,
    Split.self,
    Squeeze.self,
    Transpose.self,
    Unsqueeze.self,
]
