/// Matrix products, through BLAS, and the attention and quantised-weight products built on them.
let linearAlgebraOperators: [any Operator.Type] = [
    MatMul.self,
    FusedMatMul.self,
    GroupedMatMul.self,
    Gemm.self,
    MatMulNBits.self,
    DynamicQuantizeLinear.self,
    MatMulInteger.self,
    MatMulIntegerToFloat.self,
    DynamicQuantizeMatMul.self,
    GroupQueryAttention.self,
    MultiHeadAttention.self,
    Attention23.self,
    RotaryEmbedding.self,
    RotaryEmbedding23.self,
    RotateHalfEmbedding.self,
]
