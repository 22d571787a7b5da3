// AVX-512F micro-kernel: a 14 x 32 tile of C in 28 zmm accumulators, two zmm of B and one broadcast of A per step
// (31 of the 32 registers). Per k step: 2 loads of B, 14 broadcasts (folded into the FMAs as {1to16} memory
// operands) and 28 FMAs, so the two FMA ports, not the loads, set the pace.
//
// Reference (see kernels_reference_tile in internal.h):
//   for r < rows, j < cols:
//     C[r*rs_c + j*cs_c] = alpha * sum_p a[p*14 + r] * b[p*32 + j] + (beta == 0 ? 0 : beta * C[r*rs_c + j*cs_c])
//
// Compiled with per-function target attributes so the package builds for baseline x86-64; only called after the
// dispatcher has seen AVX-512F in cpuid and zmm state enabled in XCR0.
#include "internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define MR 14
#define NR 32
#define TARGET __attribute__((target("avx512f")))
#define INLINE static inline __attribute__((always_inline))
// The row loops must unroll completely for the accumulators to live in registers (clang stops short at 14).
#if defined(__clang__)
#define UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define UNROLL _Pragma("GCC unroll 16")
#else
#define UNROLL
#endif

// 16 elements of a B panel widened to fp32 (exact: fp16 and bf16 are subsets of fp32).
INLINE TARGET __m512 load_b(const void *b, size_t index, const kernels_type type) {
    switch (type) {
    case KERNELS_TYPE_F32: return _mm512_loadu_ps((const float *)b + index);
    case KERNELS_TYPE_F16:
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)b + index)));
    default:
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)b + index))), 16));
    }
}

// `rows` and `type` are constants in every call below, so the loops over rows unroll and the accumulators live
// in registers.
INLINE TARGET void tile(const int rows, const kernels_type type, const int direct, size_t k, const float *a,
                        size_t lda, const void *b, float alpha,
                        float beta, float *c, ptrdiff_t rs_c, ptrdiff_t cs_c, int cols) {
    __m512 acc[MR][2];
    UNROLL
    for (int r = 0; r < rows; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    if (direct) {
        // A's rows in place; row pointers hoisted (a few live on the stack, reloaded by the spare load slots).
        const float *rows_a[MR];
        UNROLL
        for (int r = 0; r < rows; r++) rows_a[r] = a + r * lda;
        for (size_t p = 0; p < k; p++) {
            const __m512 b0 = load_b(b, p * NR, type), b1 = load_b(b, p * NR + 16, type);
            UNROLL
            for (int r = 0; r < rows; r++) {
                const __m512 av = _mm512_set1_ps(rows_a[r][p]);
                acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
            }
        }
    } else {
        for (size_t p = 0; p < k; p++) {
            const __m512 b0 = load_b(b, p * NR, type), b1 = load_b(b, p * NR + 16, type);
            const float *ap = a + p * MR;
            UNROLL
            for (int r = 0; r < rows; r++) {
                const __m512 av = _mm512_set1_ps(ap[r]);
                acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
            }
        }
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    if (cs_c == 1) {
        // Masked loads and stores cover a partial last panel; masked-off lanes are neither read nor written.
        const __mmask16 m0 = cols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cols) - 1);
        const __mmask16 m1 = cols >= 32 ? (__mmask16)0xffff : cols > 16 ? (__mmask16)((1u << (cols - 16)) - 1) : 0;
        UNROLL
        for (int r = 0; r < rows; r++) {
            float *row = c + r * rs_c;
            __m512 r0 = _mm512_mul_ps(va, acc[r][0]), r1 = _mm512_mul_ps(va, acc[r][1]);
            if (beta != 0) {
                r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, row), r0);
                r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, row + 16), r1);
            }
            _mm512_mask_storeu_ps(row, m0, r0);
            _mm512_mask_storeu_ps(row + 16, m1, r1);
        }
    } else {
        // Strided C (a transposed view): spill and store element by element.
        float spill[MR * NR] __attribute__((aligned(64)));
        UNROLL
        for (int r = 0; r < rows; r++) {
            _mm512_store_ps(spill + r * NR, acc[r][0]);
            _mm512_store_ps(spill + r * NR + 16, acc[r][1]);
        }
        for (int r = 0; r < rows; r++) {
            for (int j = 0; j < cols; j++) {
                float *out = c + r * rs_c + j * cs_c;
                *out = beta == 0 ? alpha * spill[r * NR + j] : alpha * spill[r * NR + j] + beta * *out;
            }
        }
    }
}

#define ROW_CASES(type, DIRECT, LDA)                                                                    \
    switch (rows) {                                                                        \
    case 1: tile(1, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;               \
    case 2: tile(2, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;               \
    case 3: tile(3, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;               \
    case 4: tile(4, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;               \
    case 5: tile(5, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;               \
    case 6: tile(6, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;               \
    case 7: tile(7, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;               \
    case 8: tile(8, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;               \
    case 9: tile(9, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;               \
    case 10: tile(10, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;             \
    case 11: tile(11, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;             \
    case 12: tile(12, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;             \
    case 13: tile(13, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;             \
    default: tile(14, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;             \
    }

static TARGET void gemv(int transpose_a, int transpose_b, size_t m, size_t j0, size_t j1, size_t k, float alpha,
                        const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    kernels_gemv_body(64, transpose_a, transpose_b, m, j0, j1, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

KERNELS_X86_ENTRY_POINTS(kernels_avx512_table, KERNELS_ISA_AVX512, gemv)

#endif
