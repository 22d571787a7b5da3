// AVX2 + FMA micro-kernel: a 6 x 16 tile of C in 12 ymm accumulators, two ymm of B and one broadcast of A per step
// (15 of the 16 registers). F16C widens fp16 panels; bf16 is widened by a zero-extend and a 16-bit shift.
//
// Reference (see kernels_reference_tile in internal.h):
//   for r < rows, j < cols:
//     C[r*rs_c + j*cs_c] = alpha * sum_p a[p*6 + r] * b[p*16 + j] + (beta == 0 ? 0 : beta * C[r*rs_c + j*cs_c])
//
// Per-function target attributes: the package builds for baseline x86-64 and this runs only after the dispatcher
// has seen AVX2, FMA and F16C in cpuid and ymm state enabled in XCR0.
#include "internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define MR 6
#define NR 16
#define TARGET __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))
// The row loops must unroll completely for the accumulators to live in registers (clang stops short at 14).
#if defined(__clang__)
#define UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define UNROLL _Pragma("GCC unroll 16")
#else
#define UNROLL
#endif

// 8 elements of a B panel widened to fp32 (exact).
INLINE TARGET __m256 load_b(const void *b, size_t index, const kernels_type type) {
    switch (type) {
    case KERNELS_TYPE_F32: return _mm256_loadu_ps((const float *)b + index);
    case KERNELS_TYPE_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)b + index)));
    default:
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)b + index))), 16));
    }
}

// Lanes below `count` set: the mask of a partial last panel for maskload/maskstore.
INLINE TARGET __m256i lane_mask(int count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

INLINE TARGET void tile(const int rows, const kernels_type type, const int direct, size_t k, const float *a,
                        size_t lda, const void *b, float alpha,
                        float beta, float *c, ptrdiff_t rs_c, ptrdiff_t cs_c, int cols) {
    __m256 acc[MR][2];
    UNROLL
    for (int r = 0; r < rows; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    if (direct) {
        // A's rows in place; row pointers hoisted (a few live on the stack, reloaded by the spare load slots).
        const float *rows_a[MR];
        UNROLL
        for (int r = 0; r < rows; r++) rows_a[r] = a + r * lda;
        for (size_t p = 0; p < k; p++) {
            const __m256 b0 = load_b(b, p * NR, type), b1 = load_b(b, p * NR + 8, type);
            UNROLL
            for (int r = 0; r < rows; r++) {
                const __m256 av = _mm256_broadcast_ss(rows_a[r] + p);
                acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
            }
        }
    } else {
        for (size_t p = 0; p < k; p++) {
            const __m256 b0 = load_b(b, p * NR, type), b1 = load_b(b, p * NR + 8, type);
            const float *ap = a + p * MR;
            UNROLL
            for (int r = 0; r < rows; r++) {
                const __m256 av = _mm256_broadcast_ss(ap + r);
                acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
            }
        }
    }
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (cs_c == 1 && cols == NR) {
        UNROLL
        for (int r = 0; r < rows; r++) {
            float *row = c + r * rs_c;
            __m256 r0 = _mm256_mul_ps(va, acc[r][0]), r1 = _mm256_mul_ps(va, acc[r][1]);
            if (beta != 0) {
                r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(row), r0);
                r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(row + 8), r1);
            }
            _mm256_storeu_ps(row, r0);
            _mm256_storeu_ps(row + 8, r1);
        }
    } else if (cs_c == 1) {
        // A partial last panel: masked-off lanes are neither read nor written.
        const __m256i m0 = lane_mask(cols), m1 = lane_mask(cols - 8);
        UNROLL
        for (int r = 0; r < rows; r++) {
            float *row = c + r * rs_c;
            __m256 r0 = _mm256_mul_ps(va, acc[r][0]), r1 = _mm256_mul_ps(va, acc[r][1]);
            if (beta != 0) {
                r0 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(row, m0), r0);
                r1 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(row + 8, m1), r1);
            }
            _mm256_maskstore_ps(row, m0, r0);
            _mm256_maskstore_ps(row + 8, m1, r1);
        }
    } else {
        float spill[MR * NR] __attribute__((aligned(32)));
        UNROLL
        for (int r = 0; r < rows; r++) {
            _mm256_store_ps(spill + r * NR, acc[r][0]);
            _mm256_store_ps(spill + r * NR + 8, acc[r][1]);
        }
        for (int r = 0; r < rows; r++) {
            for (int j = 0; j < cols; j++) {
                float *out = c + r * rs_c + j * cs_c;
                *out = beta == 0 ? alpha * spill[r * NR + j] : alpha * spill[r * NR + j] + beta * *out;
            }
        }
    }
}

#define ROW_CASES(type, DIRECT, LDA)                                                        \
    switch (rows) {                                                            \
    case 1: tile(1, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;   \
    case 2: tile(2, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;   \
    case 3: tile(3, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;   \
    case 4: tile(4, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;   \
    case 5: tile(5, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;   \
    default: tile(6, type, DIRECT, k, a, LDA, b, alpha, beta, c, rs_c, cs_c, cols); break;  \
    }

static TARGET void gemv(int transpose_a, int transpose_b, size_t m, size_t j0, size_t j1, size_t k, float alpha,
                        const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    kernels_gemv_body(16, transpose_a, transpose_b, m, j0, j1, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

KERNELS_X86_ENTRY_POINTS(kernels_avx2_table, KERNELS_ISA_AVX2, gemv)

#endif
