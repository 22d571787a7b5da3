// Shared between the driver (gemm.c), the dispatcher (dispatch.c) and the per-ISA micro-kernel files.
// Not part of the public header.
#ifndef ONNX_DPO_KERNELS_INTERNAL_H
#define ONNX_DPO_KERNELS_INTERNAL_H

#include "Kernels.h"
#include <stddef.h>
#include <stdint.h>
#include <string.h>

// A micro-kernel ("tile") computes one block of at most mr x nr elements of C from a packed A micro-panel and a
// packed B micro-panel:
//   a: packed A, k steps of mr floats: a[p * mr + r] = op(A)[row0 + r][p0 + p] (rows past `rows` are zero)
//   b: packed B, k steps of nr elements of the panel's type: b[p * nr + j] = op(B)[p0 + p][col0 + j] (zero padded)
//   C[r * rs_c + j * cs_c] = alpha * sum_p a[p*mr+r] * b[p*nr+j] + beta * C[...], for r < rows, j < cols;
//   beta == 0 means C is written without being read.
// `kernels_reference_tile` below is that loop written out; every ISA file implements exactly it.
typedef void (*kernels_tile_fn)(size_t k, const float *a, const void *b, float alpha, float beta,
                                float *c, ptrdiff_t rs_c, ptrdiff_t cs_c, int rows, int cols);

// The same product reading op(A) = A in place (row-major, `lda` apart) instead of from a packed micro-panel:
// a[r * lda + p]. Packing A is a transpose (rows of A become columns of the panel) that costs as much as the
// micro-kernel itself when n is small (k/v projections: n = 128..192), so where a kernel can read A's rows
// directly it does.
typedef void (*kernels_direct_tile_fn)(size_t k, const float *a, size_t lda, const void *b, float alpha, float beta,
                                       float *c, ptrdiff_t rs_c, ptrdiff_t cs_c, int rows, int cols);

// Products of at most KERNELS_GEMV_MAX_ROWS rows (decoding: one token per sequence) are bound by reading op(B),
// which the packed path would read, write into panels and read again. These read it once, in place:
//   C[r * ldc + j] = alpha * sum_p op(A)[r][p] * op(B)[p][j] + beta * C[r * ldc + j]   for r < m, j0 <= j < j1,
// op(A)[r][p] = a[r * lda + p] (a[p * lda + r] when transpose_a), op(B)[p][j] = b[p * ldb + j] (b[j * ldb + p]
// when transpose_b); beta == 0 means C is written without being read. With op(B) = B the rows of B stream through
// in column chunks while C's chunk stays in L1; with op(B) = Bᵀ each output is a dot product of contiguous rows.
#define KERNELS_GEMV_MAX_ROWS 4
typedef void (*kernels_gemv_fn)(int transpose_a, int transpose_b, size_t m, size_t j0, size_t j1, size_t k,
                                float alpha, const float *a, size_t lda, const float *b, size_t ldb, float beta,
                                float *c, size_t ldc);

/// One ISA's micro-kernels and the blocking that suits its register tile.
typedef struct {
    kernels_isa isa;
    int mr;                    // rows of the register tile
    int nr;                    // columns of the register tile (the width of a packed B panel)
    kernels_tile_fn tile[3];   // indexed by kernels_type of the B panel
    kernels_direct_tile_fn direct_tile[3];  // the same on an unpacked A, or NULL where A is always packed
    kernels_gemv_fn gemv;      // few-row products on an unpacked op(B), or NULL for `kernels_portable_gemv`
} kernels_table;

/// The few-row product in plain C (see kernels_gemv_fn), for ISAs without their own.
void kernels_portable_gemv(int transpose_a, int transpose_b, size_t m, size_t j0, size_t j1, size_t k, float alpha,
                           const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc);

// Columns of C a few-row product over op(B) = B accumulates at once: C's chunk (4 rows x 4 KiB) stays in L1 while
// each row of B's chunk streams through.
#define KERNELS_GEMV_CHUNK 1024

// The tables each ISA file defines (only those the build's architecture can run exist).
extern const kernels_table kernels_portable_table;
#if defined(__x86_64__) || defined(_M_X64)
extern const kernels_table kernels_avx2_table;
extern const kernels_table kernels_avx512_table;
#endif
#if defined(__aarch64__)
extern const kernels_table kernels_neon_table;
#endif

/// The table of `isa` (which must be supported).
const kernels_table *kernels_table_for(kernels_isa isa);

/// Element size of a panel type, in bytes.
static inline size_t kernels_type_size(kernels_type type) { return type == KERNELS_TYPE_F32 ? 4 : 2; }

/// bfloat16 -> float: the bits are the upper half of the binary32 (exact).
static inline float kernels_bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/// binary16 -> float, exact for every input (subnormals, infinities, NaN payloads).
static inline float kernels_f16_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu, bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent == 0) {
        // Zero or subnormal: mantissa * 2^-24, exact in binary32.
        float f = (float)mantissa * 0x1p-24f;
        return sign ? -f : f;
    } else {
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/// Element `index` of a B panel of `type`, widened to float.
static inline float kernels_panel_element(const void *b, size_t index, kernels_type type) {
    switch (type) {
    case KERNELS_TYPE_F32: return ((const float *)b)[index];
    case KERNELS_TYPE_F16: return kernels_f16_to_float(((const uint16_t *)b)[index]);
    default: return kernels_bf16_to_float(((const uint16_t *)b)[index]);
    }
}

/// The naive loop every micro-kernel implements (see the contract above); accumulates in float in p order, as the
/// vector kernels do per lane.
static inline void kernels_reference_tile(int mr, int nr, kernels_type type, size_t k, const float *a, const void *b,
                                          float alpha, float beta, float *c, ptrdiff_t rs_c, ptrdiff_t cs_c,
                                          int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < cols; j++) {
            float sum = 0;
            for (size_t p = 0; p < k; p++) sum += a[p * (size_t)mr + r] * kernels_panel_element(b, p * (size_t)nr + j, type);
            float *out = c + r * rs_c + j * cs_c;
            *out = beta == 0 ? alpha * sum : alpha * sum + beta * *out;
        }
    }
}

/// `rows` x `width` outputs of the few-row product over op(B) = B (`width` <= 64, both constants where it is inlined,
/// so that the sums stay in registers: 4 x 64 floats are 16 zmm; an AVX2 caller takes 16 columns, 8 ymm), B's rows
/// read in place `width` columns at a time.
static inline __attribute__((always_inline)) void kernels_gemv_tile(
    const int rows, const int width, size_t k, const float *a, size_t a_row, size_t a_step, const float *b, size_t ldb,
    float alpha, float beta, float *c, size_t ldc) {
    float acc[KERNELS_GEMV_MAX_ROWS][64];
    for (int r = 0; r < rows; r++) {
        for (int x = 0; x < width; x++) acc[r][x] = 0;
    }
    for (size_t p = 0; p < k; p++) {
        const float *row = b + p * ldb;
        for (int r = 0; r < rows; r++) {
            const float scale = a[(size_t)r * a_row + p * a_step];
            for (int x = 0; x < width; x++) acc[r][x] += scale * row[x];
        }
    }
    for (int r = 0; r < rows; r++) {
        float *out = c + (size_t)r * ldc;
        if (beta == 0) {
            for (int x = 0; x < width; x++) out[x] = alpha * acc[r][x];
        } else {
            for (int x = 0; x < width; x++) out[x] = alpha * acc[r][x] + beta * out[x];
        }
    }
}

/// The few-row product (see kernels_gemv_fn) in plain C, written for the compiler to vectorise with the features of
/// the function it is inlined into (each ISA file wraps it in its TARGET, with the tile width its registers hold; 0
/// for none): the j loops are independent lanes, and a dot product keeps 32 partial sums (several vector
/// accumulators in flight), added in a fixed order at the end.
static inline __attribute__((always_inline)) void kernels_gemv_body(
    const int tile_width, int transpose_a, int transpose_b, size_t m, size_t j0, size_t j1, size_t k, float alpha,
    const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    const size_t a_row = transpose_a ? 1 : lda, a_step = transpose_a ? lda : 1;
    if (!transpose_b) {
        size_t j = j0;
        // Two rows or more: whole tiles with their sums in registers (the chunk's loads and stores of C, one pass per
        // row, would bound the product); one row streams B's chunks below, bound by memory.
        if (tile_width > 0 && m >= 2) {
            for (; j + (size_t)tile_width <= j1; j += (size_t)tile_width) {
                switch (m) {
                case 2: kernels_gemv_tile(2, tile_width, k, a, a_row, a_step, b + j, ldb, alpha, beta, c + j, ldc); break;
                case 3: kernels_gemv_tile(3, tile_width, k, a, a_row, a_step, b + j, ldb, alpha, beta, c + j, ldc); break;
                default: kernels_gemv_tile(4, tile_width, k, a, a_row, a_step, b + j, ldb, alpha, beta, c + j, ldc); break;
                }
            }
        }
        float acc[KERNELS_GEMV_MAX_ROWS][KERNELS_GEMV_CHUNK] __attribute__((aligned(64)));
        for (; j < j1; j += KERNELS_GEMV_CHUNK) {
            const size_t width = j1 - j < KERNELS_GEMV_CHUNK ? j1 - j : KERNELS_GEMV_CHUNK;
            for (size_t r = 0; r < m; r++) memset(acc[r], 0, width * sizeof(float));
            for (size_t p = 0; p < k; p++) {
                const float *row = b + p * ldb + j;
                for (size_t r = 0; r < m; r++) {
                    const float scale = a[r * a_row + p * a_step];
                    float *out = acc[r];
                    for (size_t x = 0; x < width; x++) out[x] += scale * row[x];
                }
            }
            for (size_t r = 0; r < m; r++) {
                float *out = c + r * ldc + j;
                const float *sums = acc[r];
                if (beta == 0) {
                    for (size_t x = 0; x < width; x++) out[x] = alpha * sums[x];
                } else {
                    for (size_t x = 0; x < width; x++) out[x] = alpha * sums[x] + beta * out[x];
                }
            }
        }
        return;
    }
    for (size_t j = j0; j < j1; j++) {
        const float *column = b + j * ldb;  // op(B)[.][j], contiguous
        for (size_t r = 0; r < m; r++) {
            const float *row = a + r * a_row;
            float partial[32] __attribute__((aligned(64))) = {0};
            size_t p = 0;
            if (a_step == 1) {
                for (; p + 32 <= k; p += 32) {
                    for (int lane = 0; lane < 32; lane++) partial[lane] += row[p + lane] * column[p + lane];
                }
            }
            float sum = 0;
            for (int lane = 0; lane < 32; lane++) sum += partial[lane];
            for (; p < k; p++) sum += row[p * a_step] * column[p];
            float *out = c + r * ldc + j;
            *out = beta == 0 ? alpha * sum : alpha * sum + beta * *out;
        }
    }
}

/* The six entry points of an x86 ISA file and its table, one definition for every ISA file that includes this
 * header: each file defines TARGET (its function attributes), MR, NR and ROW_CASES(type, DIRECT, LDA) (a switch
 * over `rows` calling its register-blocked `tile`) and its few-row product, then says
 * KERNELS_X86_ENTRY_POINTS(its table, its ISA, its few-row product). */
#define KERNELS_X86_ENTRY_POINTS(TABLE, ISA, GEMV)                                                                 \
    static TARGET void tile_f32(size_t k, const float *a, const void *b, float alpha, float beta, float *c,        \
                                ptrdiff_t rs_c, ptrdiff_t cs_c, int rows, int cols) {                              \
        ROW_CASES(KERNELS_TYPE_F32, 0, 0)                                                                          \
    }                                                                                                              \
    static TARGET void tile_f16(size_t k, const float *a, const void *b, float alpha, float beta, float *c,        \
                                ptrdiff_t rs_c, ptrdiff_t cs_c, int rows, int cols) {                              \
        ROW_CASES(KERNELS_TYPE_F16, 0, 0)                                                                          \
    }                                                                                                              \
    static TARGET void tile_bf16(size_t k, const float *a, const void *b, float alpha, float beta, float *c,       \
                                 ptrdiff_t rs_c, ptrdiff_t cs_c, int rows, int cols) {                             \
        ROW_CASES(KERNELS_TYPE_BF16, 0, 0)                                                                         \
    }                                                                                                              \
    static TARGET void direct_f32(size_t k, const float *a, size_t lda, const void *b, float alpha, float beta,    \
                                  float *c, ptrdiff_t rs_c, ptrdiff_t cs_c, int rows, int cols) {                  \
        ROW_CASES(KERNELS_TYPE_F32, 1, lda)                                                                        \
    }                                                                                                              \
    static TARGET void direct_f16(size_t k, const float *a, size_t lda, const void *b, float alpha, float beta,    \
                                  float *c, ptrdiff_t rs_c, ptrdiff_t cs_c, int rows, int cols) {                  \
        ROW_CASES(KERNELS_TYPE_F16, 1, lda)                                                                        \
    }                                                                                                              \
    static TARGET void direct_bf16(size_t k, const float *a, size_t lda, const void *b, float alpha, float beta,   \
                                   float *c, ptrdiff_t rs_c, ptrdiff_t cs_c, int rows, int cols) {                 \
        ROW_CASES(KERNELS_TYPE_BF16, 1, lda)                                                                       \
    }                                                                                                              \
    const kernels_table TABLE = {ISA, MR, NR, {tile_f32, tile_f16, tile_bf16}, {direct_f32, direct_f16, direct_bf16}, \
                                 GEMV};

#endif
