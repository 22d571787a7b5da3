// ARM64 Advanced SIMD micro-kernel: an 8 x 12 tile of C in 24 q-register accumulators, three q of B and two q of
// A per step (29 of the 32 registers); A's lanes are used with by-element FMAs instead of broadcasts.
// Not measured or tested on hardware here (the development machine is x86-64); the tests run it on any ARM64 host.
//
// Reference (see kernels_reference_tile in internal.h):
//   for r < rows, j < cols:
//     C[r*rs_c + j*cs_c] = alpha * sum_p a[p*8 + r] * b[p*12 + j] + (beta == 0 ? 0 : beta * C[r*rs_c + j*cs_c])
#include "internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>

#define MR 8
#define NR 12
#define INLINE static inline __attribute__((always_inline))

// 4 elements of a B panel widened to fp32 (exact).
INLINE float32x4_t load_b(const void *b, size_t index, const kernels_type type) {
    switch (type) {
    case KERNELS_TYPE_F32: return vld1q_f32((const float *)b + index);
    case KERNELS_TYPE_F16: return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)b + index)));
    default: return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)b + index), 16));
    }
}

INLINE void tile(const kernels_type type, size_t k, const float *a, const void *b, float alpha, float beta, float *c,
                 ptrdiff_t rs_c, ptrdiff_t cs_c, int rows, int cols) {
    float32x4_t acc[MR][3];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = acc[r][2] = vdupq_n_f32(0);
    for (size_t p = 0; p < k; p++) {
        const float32x4_t b0 = load_b(b, p * NR, type), b1 = load_b(b, p * NR + 4, type), b2 = load_b(b, p * NR + 8, type);
        const float32x4_t a0 = vld1q_f32(a + p * MR), a1 = vld1q_f32(a + p * MR + 4);
#define ROW(r, av, lane)                                          \
        acc[r][0] = vfmaq_laneq_f32(acc[r][0], b0, av, lane);     \
        acc[r][1] = vfmaq_laneq_f32(acc[r][1], b1, av, lane);     \
        acc[r][2] = vfmaq_laneq_f32(acc[r][2], b2, av, lane);
        ROW(0, a0, 0) ROW(1, a0, 1) ROW(2, a0, 2) ROW(3, a0, 3)
        ROW(4, a1, 0) ROW(5, a1, 1) ROW(6, a1, 2) ROW(7, a1, 3)
#undef ROW
    }
    float spill[MR * NR];
    for (int r = 0; r < MR; r++) {
        vst1q_f32(spill + r * NR, acc[r][0]);
        vst1q_f32(spill + r * NR + 4, acc[r][1]);
        vst1q_f32(spill + r * NR + 8, acc[r][2]);
    }
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < cols; j++) {
            float *out = c + r * rs_c + j * cs_c;
            *out = beta == 0 ? alpha * spill[r * NR + j] : alpha * spill[r * NR + j] + beta * *out;
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

const kernels_table kernels_neon_table = {KERNELS_ISA_NEON, MR, NR, {tile_f32, tile_f16, tile_bf16}, {NULL, NULL, NULL}, NULL};

#endif
