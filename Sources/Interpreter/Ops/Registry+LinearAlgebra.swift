/// Matrix products, through BLAS.
let linearAlgebraOperators: [any Operator.Type] = [
    MatMul.self,
    Gemm.self,
]
