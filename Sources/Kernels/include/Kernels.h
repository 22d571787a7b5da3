// Kernels: our own single-precision GEMM (BLIS/MLAS style: packed panels, register-blocked micro-kernels per ISA,
// one dispatch table chosen from cpuid feature bits at first use). Knows nothing of ONNX or tensors: every entry
// point takes sizes, pointers and leading dimensions. All matrices are row-major; leading dimensions count elements.
#ifndef ONNX_DPO_KERNELS_H
#define ONNX_DPO_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The instruction-set levels a micro-kernel exists for, ordered so that a larger value needs more of the CPU.
typedef enum {
    /// Plain C, vectorised by the compiler for the build's baseline (SSE2 on x86-64).
    KERNELS_ISA_PORTABLE = 0,
    /// ARM64 Advanced SIMD (every aarch64 CPU has it).
    KERNELS_ISA_NEON = 1,
    /// x86-64 AVX2 + FMA + F16C, ymm registers, 6x16 tile.
    KERNELS_ISA_AVX2 = 2,
    /// x86-64 AVX-512F, zmm registers, 14x32 tile.
    KERNELS_ISA_AVX512 = 3,
} kernels_isa;

/// Element types a packed B panel can hold. Half-precision panels stay half precision in memory and are widened
/// to fp32 inside the micro-kernel (the widening is exact).
typedef enum {
    /// IEEE binary32.
    KERNELS_TYPE_F32 = 0,
    /// IEEE binary16.
    KERNELS_TYPE_F16 = 1,
    /// bfloat16 (the upper half of a binary32).
    KERNELS_TYPE_BF16 = 2,
} kernels_type;

/// The best ISA this CPU and operating system support (cpuid feature bits and XGETBV register state).
kernels_isa kernels_best_isa(void);

/// The ISA products use now: the best one, unless lowered by `ONNX_DPO_ISA` (read at first use) or
/// `kernels_force_isa`.
kernels_isa kernels_active_isa(void);

/// Makes products use `isa`, or the best supported ISA below it when the machine lacks it; returns the ISA now in
/// use. For tests and benchmarks; not meant to be called while products run on other threads.
kernels_isa kernels_force_isa(kernels_isa isa);

/// A short lower-case name for `isa`: "portable", "neon", "avx2", "avx512".
const char *kernels_isa_name(kernels_isa isa);

/// Parses a name as `kernels_isa_name` returns it; returns -1 for an unknown name.
int kernels_isa_from_name(const char *name);

/// Whether `isa` can run here (it is at or below `kernels_best_isa` on this architecture).
int kernels_isa_supported(kernels_isa isa);

/// `C = alpha · op(A) · op(B) + beta · C`, op(A) `[m, k]`, op(B) `[k, n]`, C `[m, n]`; `op(X)` is X or Xᵀ as
/// `transpose_a` / `transpose_b` say. With `k == 0` or `beta == 0`, C is overwritten, never read (NaN in C is
/// ignored). Runs on the calling thread; callers split large products by rows or columns of C.
void kernels_sgemm(int transpose_a, int transpose_b, size_t m, size_t n, size_t k, float alpha,
                   const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc);

/// A B operand packed once into the micro-kernel's panel layout for the ISA active when it was packed.
typedef struct kernels_packed_b kernels_packed_b;

/// Packs op(B) (`[k, n]`; B is `[k, n]` with leading dimension `ldb`, or `[n, k]` when `transpose_b`) whose
/// elements have type `type`, keeping that type in the panels. For a weight W `[K, N]`: `x·W` packs W as is;
/// `dY·Wᵀ` packs it with `transpose_b` (k = N, n = K). Gemm's `transB=1` weight `[N, K]` is the same with the roles
/// swapped. Returns NULL when memory runs out. Free with `kernels_packed_b_free`.
kernels_packed_b *kernels_pack_b(kernels_type type, int transpose_b, size_t k, size_t n, const void *b, size_t ldb);

/// Releases a packed operand (NULL is allowed).
void kernels_packed_b_free(kernels_packed_b *packed);

/// The k of op(B) a packed operand holds.
size_t kernels_packed_b_k(const kernels_packed_b *packed);

/// The n of op(B) a packed operand holds.
size_t kernels_packed_b_n(const kernels_packed_b *packed);

/// Bytes the panels of a packed operand take.
size_t kernels_packed_b_bytes(const kernels_packed_b *packed);

/// Column ranges passed to `kernels_sgemm_packed` must start at a multiple of this (the panel width).
size_t kernels_packed_b_column_alignment(const kernels_packed_b *packed);

/// Copies column `column` of a packed op(B) (`k` values, widened to float) to `out`: a row of a weight packed
/// transposed, such as an embedding also read by a tied LM head's product.
void kernels_packed_b_column(const kernels_packed_b *packed, size_t column, float *out);

/// `C[:, n_begin..<n_end] = alpha · op(A) · op(B)[:, n_begin..<n_end] + beta · C[:, n_begin..<n_end]` with a packed
/// op(B) `[k, n]`, op(A) `[m, k]`; `c` points at C's first element (column 0) and `n_begin` must be a multiple of
/// `kernels_packed_b_column_alignment`. To compute a range of rows, offset `a` and `c` and pass fewer rows as `m`.
/// Same beta contract as `kernels_sgemm`.
void kernels_sgemm_packed(int transpose_a, size_t m, size_t n_begin, size_t n_end, float alpha,
                          const float *a, size_t lda, const kernels_packed_b *b, float beta, float *c, size_t ldc);

/// A parallel loop the caller provides (its thread pool): calls `body(body_context, index)` once for every index in
/// `0 ..< count`, on any of its threads and in any order, and returns when all calls have returned.
typedef void (*kernels_parallel_for)(void *loop_context, size_t count, void *body_context,
                                     void (*body)(void *body_context, size_t index));

/// Our thread pool: calls `body(body_context, index)` for every index in `0 ..< count` on the calling thread and up to
/// `threads - 1` of the pool's workers (started at first need, kept for the process; an idle worker polls for
/// 0.2 ms, then sleeps), and returns when all calls have returned. Indices are handed out one at a time to whichever
/// thread asks next. A call made while another call's job runs (from a second thread, or from inside a `body`)
/// runs its indices serially on its own thread.
void kernels_pool_run(size_t threads, size_t count, void *body_context, void (*body)(void *body_context, size_t index));

/// `kernels_pool_run` as a `kernels_parallel_for`: `loop_context` points at a `size_t` holding `threads` (NULL runs
/// serially).
void kernels_pool_for(void *loop_context, size_t count, void *body_context,
                      void (*body)(void *body_context, size_t index));

/// `kernels_sgemm` split into pieces run by `loop` (about `threads` at a time). Small products run on the calling
/// thread. Pieces are rows of C sharing one copy of op(B) packed once for the call, or, when op(B) is too large
/// to pack whole (an LM head), ranges of columns; there are several per thread so that a thread slowed by other
/// work on its core hands its share to the others.
void kernels_sgemm_parallel(int transpose_a, int transpose_b, size_t m, size_t n, size_t k, float alpha,
                            const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc,
                            size_t threads, kernels_parallel_for loop, void *loop_context);

/// `kernels_sgemm_packed` over all columns of the packed operand, split like `kernels_sgemm_parallel`.
void kernels_sgemm_packed_parallel(int transpose_a, size_t m, float alpha, const float *a, size_t lda,
                                   const kernels_packed_b *b, float beta, float *c, size_t ldc,
                                   size_t threads, kernels_parallel_for loop, void *loop_context);

/// `C = alpha · A · op(B)ᵀ + beta · C` with A `[m, n]` and C `[m, k]` (k and n those of the packed op(B)): the input
/// gradient `dY·Wᵀ` of a product `x·W` whose W was packed for the forward, so that one packing serves both. op(B)ᵀ is
/// repacked block by block from the panels as the product runs (as a plain operand is), never whole. Split across
/// threads like `kernels_sgemm_parallel`; same beta contract.
void kernels_sgemm_packed_transposed_parallel(size_t m, float alpha, const float *a, size_t lda,
                                              const kernels_packed_b *b, float beta, float *c, size_t ldc,
                                              size_t threads, kernels_parallel_for loop, void *loop_context);

// Block-quantised weights

/// Few-row products with a block-quantised weight read where it lies (onnxruntime's `MatMulNBits` layout, decoding):
///
///     C[r * ldc + n] = Σ_p A[r * lda + p] · (q[n][p] − z[n][p / block_size]) · s[n][p / block_size]
///
/// for r < m and n0 <= n < n1. q holds `bits` (4 or 8) bit codes: row n starts at `b + n · blocks · block_size ·
/// bits / 8` (blocks = ⌈k / block_size⌉), block after block, low bits first within a byte. s is
/// `scales[n · blocks + block]`; z is `zero_points[n · blocks + block]` as a float, or `default_zero_point` for every
/// block when `zero_points` is NULL. Each weight is made as `(float(q) − z) · s`, the value a dequantised GEMM reads;
/// sums are in float. `block_size` is a power of 2 of at least 16. Runs on the calling thread: split n across
/// threads.
void kernels_nbits_rows(size_t m, size_t n0, size_t n1, size_t k, size_t block_size, int bits, const float *a,
                        size_t lda, const uint8_t *b, const float *scales, const float *zero_points,
                        float default_zero_point, float *c, size_t ldc);

// Elementwise
//
// Vectorised at the width of the ISA the GEMM uses now (`kernels_active_isa`: AVX-512 16 lanes, AVX2 8, portable 4),
// with the same results on every ISA: `e^x` is the interpreter's Swift `fastExp` operation for operation (no fused
// multiply-adds), so bit-identical to it, and sums keep 32 partial sums (element i in partial i % 32) added in one fixed
// order. Sums therefore round differently from a serial loop (a few ulp on long rows). Outputs may alias inputs of the
// same index (`y == x`); they may not overlap otherwise. Each call runs on the calling thread.

/// `y[i] = e^x[i]`, `i < n`: Cephes' `expf` (within 1 ulp of the correctly rounded value); x > ln(FLT_MAX) gives
/// +inf, x < ln(FLT_MIN) = -87.3365 gives 0 (no subnormal results), NaN gives the same NaN.
void kernels_exp(size_t n, const float *x, float *y);

/// The largest of `x[0 ..< n]`, NaN ignored; -inf when `n == 0` or every element is NaN.
float kernels_max(size_t n, const float *x);

/// `Σ x[i]`, `i < n`.
float kernels_sum(size_t n, const float *x);

/// `Σ e^(x[i] - shift)`, `i < n`, writing each term to `y[i]` unless `y` is NULL: with `shift = kernels_max(n, x)`
/// the sum of a stable log-sum-exp, `log Σ e^x = shift + log(result)`.
float kernels_exp_shifted_sum(size_t n, const float *x, float shift, float *y);

/// `y[i] = scale · e^(x[i] - shift)`, `i < n`: a softmax row scaled in one pass once its sum is known.
void kernels_exp_shifted_scaled(size_t n, const float *x, float shift, float scale, float *y);

/// Softmax of `rows` contiguous rows of `n`: `y = e^(x - max) / Σ e^(x - max)` per row. A row of -inf (fully
/// masked) and a row holding +inf or NaN come out NaN; -inf entries of a row with a finite maximum give 0.
void kernels_softmax_rows(size_t rows, size_t n, const float *x, float *y);

/// Softmax's gradient along `rows` contiguous rows of `n`: `dx = y · (dy - Σ dy · y)` per row; a row whose `dy` is
/// all zero gets zero (its `y` may be NaN: a fully masked row no loss reads).
void kernels_softmax_backward_rows(size_t rows, size_t n, const float *y, const float *dy, float *dx);

/// `y[i] = 1 / (1 + e^-x[i])`, as `e^x / (1 + e^x)` for negative x so that it never overflows.
void kernels_sigmoid(size_t n, const float *x, float *y);

/// `y[i] = x[i] · sigmoid(alpha · x[i])`: QuickGelu (onnxruntime's contrib op), SiLU with `alpha = 1`.
void kernels_quick_gelu(size_t n, float alpha, const float *x, float *y);

/// QuickGelu's gradient: with `z = alpha · x`, `s = sigmoid(z)`, `dx[i] = dy[i] · (s + z · s · (1 - s))`.
void kernels_quick_gelu_backward(size_t n, float alpha, const float *dy, const float *x, float *dx);

/// `y[i] = QuickGelu(gate[i]) · up[i]`, the two products rounded as the separate ops round them: a gated MLP's
/// `SiLU(gate) · up` with `alpha = 1`.
void kernels_gated_quick_gelu(size_t n, float alpha, const float *gate, const float *up, float *y);

/// Its gradient: `dup = dy · QuickGelu(gate)`, `dgate = (dy · up) · (s + z · s · (1 - s))` with `z = alpha · gate`,
/// `s = sigmoid(z)`. A NULL `dgate` or `dup` is not computed.
void kernels_gated_quick_gelu_backward(size_t n, float alpha, const float *dy, const float *gate, const float *up,
                                       float *dgate, float *dup);

#ifdef __cplusplus
}
#endif

#endif
