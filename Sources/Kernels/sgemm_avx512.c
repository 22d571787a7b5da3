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

// ---------------------------------------------------------------------------------------------------------------
// The full 14 x 32 fp32 tile (every tile but a product's ragged edges) in inline assembly. Compiled from the C
// above, clang keeps fewer than the 28 accumulators in registers (it spills two, shuffles others between
// registers every step and chains the fourteen row addresses through serial adds); here the accumulators are
// zmm0-27, B's two vectors zmm28-29, and the broadcasts of A alternate between zmm30 and zmm31, so a k step is
// 2 loads of B, 14 broadcasts and 28 FMAs and nothing else. The k loop runs four steps per iteration.
//
// A's rows are read where they lie (the direct tile, `lda` bytes apart; x86 addressing reaches row r from five
// bases with scales 1, 2, 4 and 8: rows 0, 1, 2, 4, 8 from row 0; 3, 5 from row 3; 6, 7 from row 6; 9, 10, 11 from
// row 9; 12, 13 from row 12) or from a packed micro-panel (14 floats per k step).

#define ASM_ZERO                                                                                                  \
    "vpxord %%zmm0, %%zmm0, %%zmm0\n\t" "vpxord %%zmm1, %%zmm1, %%zmm1\n\t" "vpxord %%zmm2, %%zmm2, %%zmm2\n\t"    \
    "vpxord %%zmm3, %%zmm3, %%zmm3\n\t" "vpxord %%zmm4, %%zmm4, %%zmm4\n\t" "vpxord %%zmm5, %%zmm5, %%zmm5\n\t"    \
    "vpxord %%zmm6, %%zmm6, %%zmm6\n\t" "vpxord %%zmm7, %%zmm7, %%zmm7\n\t" "vpxord %%zmm8, %%zmm8, %%zmm8\n\t"    \
    "vpxord %%zmm9, %%zmm9, %%zmm9\n\t" "vpxord %%zmm10, %%zmm10, %%zmm10\n\t"                                   \
    "vpxord %%zmm11, %%zmm11, %%zmm11\n\t" "vpxord %%zmm12, %%zmm12, %%zmm12\n\t"                                \
    "vpxord %%zmm13, %%zmm13, %%zmm13\n\t" "vpxord %%zmm14, %%zmm14, %%zmm14\n\t"                                \
    "vpxord %%zmm15, %%zmm15, %%zmm15\n\t" "vpxord %%zmm16, %%zmm16, %%zmm16\n\t"                                \
    "vpxord %%zmm17, %%zmm17, %%zmm17\n\t" "vpxord %%zmm18, %%zmm18, %%zmm18\n\t"                                \
    "vpxord %%zmm19, %%zmm19, %%zmm19\n\t" "vpxord %%zmm20, %%zmm20, %%zmm20\n\t"                                \
    "vpxord %%zmm21, %%zmm21, %%zmm21\n\t" "vpxord %%zmm22, %%zmm22, %%zmm22\n\t"                                \
    "vpxord %%zmm23, %%zmm23, %%zmm23\n\t" "vpxord %%zmm24, %%zmm24, %%zmm24\n\t"                                \
    "vpxord %%zmm25, %%zmm25, %%zmm25\n\t" "vpxord %%zmm26, %%zmm26, %%zmm26\n\t"                                \
    "vpxord %%zmm27, %%zmm27, %%zmm27\n\t"

// One row's two FMAs: broadcast A's element at ADDR into zmmT, multiply by B's two vectors.
#define ASM_ROW(ACC0, ACC1, ADDR, T)                                                                              \
    "vbroadcastss " ADDR ", %%zmm" T "\n\t"                                                                       \
    "vfmadd231ps %%zmm28, %%zmm" T ", %%zmm" ACC0 "\n\t"                                                          \
    "vfmadd231ps %%zmm29, %%zmm" T ", %%zmm" ACC1 "\n\t"

#define ASM_LOAD_B(U)                                                                                             \
    "vmovups 128*" U "(%[b]), %%zmm28\n\t"                                                                        \
    "vmovups 128*" U "+64(%[b]), %%zmm29\n\t"

// Step U of an unrolled group, A in place: element p + U of row r.
#define ASM_DIRECT_STEP(U)                                                                                        \
    ASM_LOAD_B(U)                                                                                                 \
    ASM_ROW("0", "1", "4*" U "(%[a0])", "30")                                                                     \
    ASM_ROW("2", "3", "4*" U "(%[a0],%[lda],1)", "31")                                                            \
    ASM_ROW("4", "5", "4*" U "(%[a0],%[lda],2)", "30")                                                            \
    ASM_ROW("6", "7", "4*" U "(%[a3])", "31")                                                                     \
    ASM_ROW("8", "9", "4*" U "(%[a0],%[lda],4)", "30")                                                            \
    ASM_ROW("10", "11", "4*" U "(%[a3],%[lda],2)", "31")                                                          \
    ASM_ROW("12", "13", "4*" U "(%[a6])", "30")                                                                   \
    ASM_ROW("14", "15", "4*" U "(%[a6],%[lda],1)", "31")                                                          \
    ASM_ROW("16", "17", "4*" U "(%[a0],%[lda],8)", "30")                                                          \
    ASM_ROW("18", "19", "4*" U "(%[a9])", "31")                                                                   \
    ASM_ROW("20", "21", "4*" U "(%[a9],%[lda],1)", "30")                                                          \
    ASM_ROW("22", "23", "4*" U "(%[a9],%[lda],2)", "31")                                                          \
    ASM_ROW("24", "25", "4*" U "(%[a12])", "30")                                                                  \
    ASM_ROW("26", "27", "4*" U "(%[a12],%[lda],1)", "31")

// Step U of an unrolled group, A packed: 14 floats per step.
#define ASM_PACKED_STEP(U)                                                                                        \
    ASM_LOAD_B(U)                                                                                                 \
    ASM_ROW("0", "1", "56*" U "+0(%[a0])", "30")                                                                  \
    ASM_ROW("2", "3", "56*" U "+4(%[a0])", "31")                                                                  \
    ASM_ROW("4", "5", "56*" U "+8(%[a0])", "30")                                                                  \
    ASM_ROW("6", "7", "56*" U "+12(%[a0])", "31")                                                                 \
    ASM_ROW("8", "9", "56*" U "+16(%[a0])", "30")                                                                 \
    ASM_ROW("10", "11", "56*" U "+20(%[a0])", "31")                                                               \
    ASM_ROW("12", "13", "56*" U "+24(%[a0])", "30")                                                               \
    ASM_ROW("14", "15", "56*" U "+28(%[a0])", "31")                                                               \
    ASM_ROW("16", "17", "56*" U "+32(%[a0])", "30")                                                               \
    ASM_ROW("18", "19", "56*" U "+36(%[a0])", "31")                                                               \
    ASM_ROW("20", "21", "56*" U "+40(%[a0])", "30")                                                               \
    ASM_ROW("22", "23", "56*" U "+44(%[a0])", "31")                                                               \
    ASM_ROW("24", "25", "56*" U "+48(%[a0])", "30")                                                               \
    ASM_ROW("26", "27", "56*" U "+52(%[a0])", "31")

#define ASM_ADVANCE_DIRECT(BYTES)                                                                                 \
    "add $" BYTES ", %[a0]\n\t" "add $" BYTES ", %[a3]\n\t" "add $" BYTES ", %[a6]\n\t"                           \
    "add $" BYTES ", %[a9]\n\t" "add $" BYTES ", %[a12]\n\t"

// Row r of C: scale by alpha (zmm28), add beta (zmm29) times C when WITH_BETA, store, step to the next row.
#define ASM_STORE_ROW(ACC0, ACC1, WITH_BETA)                                                                      \
    "vmulps %%zmm28, %%zmm" ACC0 ", %%zmm" ACC0 "\n\t"                                                            \
    "vmulps %%zmm28, %%zmm" ACC1 ", %%zmm" ACC1 "\n\t"                                                            \
    WITH_BETA("vfmadd231ps (%[c]), %%zmm29, %%zmm" ACC0 "\n\t"                                                    \
              "vfmadd231ps 64(%[c]), %%zmm29, %%zmm" ACC1 "\n\t")                                                 \
    "vmovups %%zmm" ACC0 ", (%[c])\n\t"                                                                           \
    "vmovups %%zmm" ACC1 ", 64(%[c])\n\t"                                                                         \
    "add %[rs_c], %[c]\n\t"
#define ASM_KEEP(X) X
#define ASM_DROP(X)
#define ASM_STORE(WITH_BETA)                                                                                      \
    ASM_STORE_ROW("0", "1", WITH_BETA) ASM_STORE_ROW("2", "3", WITH_BETA) ASM_STORE_ROW("4", "5", WITH_BETA)       \
    ASM_STORE_ROW("6", "7", WITH_BETA) ASM_STORE_ROW("8", "9", WITH_BETA) ASM_STORE_ROW("10", "11", WITH_BETA)     \
    ASM_STORE_ROW("12", "13", WITH_BETA) ASM_STORE_ROW("14", "15", WITH_BETA)                                     \
    ASM_STORE_ROW("16", "17", WITH_BETA) ASM_STORE_ROW("18", "19", WITH_BETA)                                     \
    ASM_STORE_ROW("20", "21", WITH_BETA) ASM_STORE_ROW("22", "23", WITH_BETA)                                     \
    ASM_STORE_ROW("24", "25", WITH_BETA) ASM_STORE_ROW("26", "27", WITH_BETA)

// The k loop (four steps per iteration, then one at a time) and the store, for STEP and ADVANCE(bytes per step
// as a string, times the steps).
#define ASM_TILE(STEP, ADVANCE4, ADVANCE1)                                                                        \
    ASM_ZERO                                                                                                      \
    "cmp $4, %[k]\n\t"                                                                                            \
    "jb 2f\n\t"                                                                                                   \
    ".p2align 5\n\t"                                                                                              \
    "1:\n\t"                                                                                                      \
    STEP("0") STEP("1") STEP("2") STEP("3")                                                                       \
    ADVANCE4                                                                                                      \
    "add $512, %[b]\n\t"                                                                                          \
    "sub $4, %[k]\n\t"                                                                                            \
    "cmp $4, %[k]\n\t"                                                                                            \
    "jae 1b\n\t"                                                                                                  \
    "2:\n\t"                                                                                                      \
    "test %[k], %[k]\n\t"                                                                                         \
    "jz 4f\n\t"                                                                                                   \
    "3:\n\t"                                                                                                      \
    STEP("0")                                                                                                     \
    ADVANCE1                                                                                                      \
    "add $128, %[b]\n\t"                                                                                          \
    "dec %[k]\n\t"                                                                                                \
    "jnz 3b\n\t"                                                                                                  \
    "4:\n\t"                                                                                                      \
    "vbroadcastss %[alpha], %%zmm28\n\t"                                                                          \
    "vbroadcastss %[beta], %%zmm29\n\t"                                                                           \
    "test %[with_beta], %[with_beta]\n\t"                                                                         \
    "jnz 5f\n\t"                                                                                                  \
    ASM_STORE(ASM_DROP)                                                                                           \
    "jmp 6f\n\t"                                                                                                  \
    "5:\n\t"                                                                                                      \
    ASM_STORE(ASM_KEEP)                                                                                           \
    "6:\n\t"

#define ASM_CLOBBERS                                                                                              \
    "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",       \
    "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22",   \
    "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31"

// C[14 x 32] (rows `rs_c` floats apart, columns contiguous) = alpha * A·B + beta * C, beta == 0 not reading C.
static TARGET void full_tile_asm(int direct, size_t k, const float *a, size_t lda, const float *b, float alpha,
                                 float beta, float *c, ptrdiff_t rs_c) {
    const size_t with_beta = beta != 0;
    const ptrdiff_t rs_bytes = rs_c * (ptrdiff_t)sizeof(float);
    if (direct) {
        const size_t lda_bytes = lda * sizeof(float);
        const float *a3 = a + 3 * lda, *a6 = a + 6 * lda, *a9 = a + 9 * lda, *a12 = a + 12 * lda;
        __asm__ volatile(ASM_TILE(ASM_DIRECT_STEP, ASM_ADVANCE_DIRECT("16"), ASM_ADVANCE_DIRECT("4"))
                         : [a0] "+r"(a), [a3] "+r"(a3), [a6] "+r"(a6), [a9] "+r"(a9), [a12] "+r"(a12), [b] "+r"(b),
                           [k] "+r"(k), [c] "+r"(c)
                         : [lda] "r"(lda_bytes), [rs_c] "r"(rs_bytes), [alpha] "m"(alpha), [beta] "m"(beta),
                           [with_beta] "r"(with_beta)
                         : ASM_CLOBBERS);
    } else {
        __asm__ volatile(ASM_TILE(ASM_PACKED_STEP, "add $224, %[a0]\n\t", "add $56, %[a0]\n\t")
                         : [a0] "+r"(a), [b] "+r"(b), [k] "+r"(k), [c] "+r"(c)
                         : [rs_c] "r"(rs_bytes), [alpha] "m"(alpha), [beta] "m"(beta), [with_beta] "r"(with_beta)
                         : ASM_CLOBBERS);
    }
}

// `rows` and `type` are constants in every call below, so the loops over rows unroll and the accumulators live
// in registers.
INLINE TARGET void tile(const int rows, const kernels_type type, const int direct, size_t k, const float *a,
                        size_t lda, const void *b, float alpha,
                        float beta, float *c, ptrdiff_t rs_c, ptrdiff_t cs_c, int cols) {
    if (rows == MR && type == KERNELS_TYPE_F32 && cols == NR && cs_c == 1) {
        full_tile_asm(direct, k, a, lda, (const float *)b, alpha, beta, c, rs_c);
        return;
    }
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
