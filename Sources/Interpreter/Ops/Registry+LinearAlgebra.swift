/// Matrix products, through BLAS.
let linearAlgebraOperators: [any Operator.Type] = [
    MatMul.self,
    FusedMatMul.self,
    Gemm.self,
]
