// Portable micro-kernel: plain C over a 4 x 16 tile, which compilers vectorise for the build's baseline (SSE2 on
// x86-64, NEON on ARM64). The fallback for CPUs the vector files do not cover and the lowest forced level.
//
// Reference (see kernels_reference_tile in internal.h):
//   for r < rows, j < cols:
//     C[r*rs_c + j*cs_c] = alpha * sum_p a[p*4 + r] * b[p*16 + j] + (beta == 0 ? 0 : beta * C[r*rs_c + j*cs_c])
#include "internal.h"

#define MR 4
#define NR 16

static inline __attribute__((always_inline)) void tile(const kernels_type type, size_t k, const float *a, const void *b,
                                                       float alpha, float beta, float *c, ptrdiff_t rs_c,
                                                       ptrdiff_t cs_c, int rows, int cols) {
    float acc[MR][NR] = {{0}};
    float widened[NR];
    for (size_t p = 0; p < k; p++) {
        const float *bp;
        if (type == KERNELS_TYPE_F32) {
            bp = (const float *)b + p * NR;
        } else {
            // Widen this step's 16 half-precision elements once, not once per row.
            for (int j = 0; j < NR; j++) widened[j] = kernels_panel_element(b, p * NR + j, type);
            bp = widened;
        }
        const float *ap = a + p * MR;
        for (int r = 0; r < MR; r++) {
            for (int j = 0; j < NR; j++) acc[r][j] += ap[r] * bp[j];
        }
    }
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < cols; j++) {
            float *out = c + r * rs_c + j * cs_c;
            *out = beta == 0 ? alpha * acc[r][j] : alpha * acc[r][j] + beta * *out;
        }
    }
}

static void tile_f32(size_t k, const float *a, const void *b, float alpha, float beta, float *c, ptrdiff_t rs_c,
                     ptrdiff_t cs_c, int rows, int cols) {
    tile(KERNELS_TYPE_F32, k, a, b, alpha, beta, c, rs_c, cs_c, rows, cols);
}

static void tile_f16(size_t k, const float *a, const void *b, float alpha, float beta, float *c, ptrdiff_t rs_c,
                     ptrdiff_t cs_c, int rows, int cols) {
    tile(KERNELS_TYPE_F16, k, a, b, alpha, beta, c, rs_c, cs_c, rows, cols);
}

static void tile_bf16(size_t k, const float *a, const void *b, float alpha, float beta, float *c, ptrdiff_t rs_c,
                      ptrdiff_t cs_c, int rows, int cols) {
    tile(KERNELS_TYPE_BF16, k, a, b, alpha, beta, c, rs_c, cs_c, rows, cols);
}

const kernels_table kernels_portable_table = {KERNELS_ISA_PORTABLE, MR, NR, {tile_f32, tile_f16, tile_bf16}, {NULL, NULL, NULL}, NULL};
