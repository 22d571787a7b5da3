// Elementwise kernels (exp, softmax rows and their gradient, sigmoid, x·sigmoid(alpha·x) and its gradient, the row
// reductions of a log-softmax): one generic C body per function, written for the compiler to vectorise with the
// features of the function it is inlined into. vector_math_portable.c, vector_math_avx2.c and vector_math_avx512.c
// each say KERNELS_VECTOR_ENTRY_POINTS under their own target attributes; vector_math.c dispatches on the GEMM's
// active ISA. Not part of the public header.
//
// Contraction is off for every file that includes this header: with it, clang fuses `p * r + c` into an FMA where the
// target has one, so AVX2 and AVX-512 would round differently from the portable build and from the interpreter's
// Swift `fastExp` (baseline x86-64, no FMA). Without it every ISA computes the same IEEE operations in the same order
// per element, and sums keep KERNELS_VECTOR_PARTIALS partial sums added in one fixed order: the results are the same
// bits on every ISA.
#ifndef ONNX_DPO_KERNELS_VECTOR_MATH_H
#define ONNX_DPO_KERNELS_VECTOR_MATH_H

#include "Kernels.h"
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__clang__)
#pragma clang fp contract(off)
#endif
#pragma STDC FP_CONTRACT OFF

#define KERNELS_VECTOR_INLINE static inline __attribute__((always_inline))

// Partial sums a reduction keeps: 2 zmm, 4 ymm or 8 xmm accumulators, enough independent adds in flight to hide
// their latency; element i goes to partial i % 32 whatever the ISA.
#define KERNELS_VECTOR_PARTIALS 32

/// One ISA's elementwise kernels (the contracts are the public functions' in Kernels.h).
typedef struct {
    void (*exp)(size_t n, const float *x, float *y);
    float (*max)(size_t n, const float *x);
    float (*sum)(size_t n, const float *x);
    float (*exp_shifted_sum)(size_t n, const float *x, float shift, float *y);
    void (*exp_shifted_scaled)(size_t n, const float *x, float shift, float scale, float *y);
    void (*softmax_rows)(size_t rows, size_t n, const float *x, float *y);
    void (*softmax_backward_rows)(size_t rows, size_t n, const float *y, const float *dy, float *dx);
    void (*sigmoid)(size_t n, const float *x, float *y);
    void (*quick_gelu)(size_t n, float alpha, const float *x, float *y);
    void (*quick_gelu_backward)(size_t n, float alpha, const float *dy, const float *x, float *dx);
    void (*gated_quick_gelu)(size_t n, float alpha, const float *gate, const float *up, float *y);
    void (*gated_quick_gelu_backward)(size_t n, float alpha, const float *dy, const float *gate, const float *up,
                                      float *dgate, float *dup);
} kernels_vector_table;

extern const kernels_vector_table kernels_vector_portable_table;
#if defined(__x86_64__) || defined(_M_X64)
extern const kernels_vector_table kernels_vector_avx2_table;
extern const kernels_vector_table kernels_vector_avx512_table;
#endif

KERNELS_VECTOR_INLINE uint32_t kernels_float_bits(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

KERNELS_VECTOR_INLINE float kernels_bits_float(uint32_t bits) {
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/// `e^x`, the operations of the interpreter's Swift `fastExp` (Sources/Interpreter/Kernels/VectorMath.swift) one for
/// one: Cephes' `expf`, `x = n·ln2 + r` with `n = round(x·log2 e)` (rounded by adding and subtracting 1.5·2²³), ln2 in
/// two parts so that `r` is exact, `e^r ≈ 1 + r + r²·P(r)` (Cephes' degree-5 minimax P), `2^n` built in the exponent
/// bits in two halves so that n = 128 and n = -126 stay in range. Above ln(FLT_MAX): +inf; below ln(FLT_MIN): 0 (no
/// subnormal results); NaN: the same NaN. Branch-free so that loops over it vectorise.
KERNELS_VECTOR_INLINE float kernels_exp_element(float x) {
    const float upper = 88.72283935546875f;   // ln(FLT_MAX)
    const float lower = -87.33654022216797f;  // ln(FLT_MIN)
    float clamped = x > upper ? upper : x;
    clamped = clamped < lower ? lower : clamped;
    const float shifted = clamped * 1.44269504088896341f + 12582912.0f;
    const float n = shifted - 12582912.0f;
    float r = clamped - n * 0.693359375f;  // ln2, high part (exact in float)
    r = r - n * -2.12194440e-4f;           // ln2, low part
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float polynomial = p * r * r + r + 1.0f;
    // Unsigned arithmetic: the bits of a NaN's `shifted` wrap, as Swift's &- and &<< do.
    const uint32_t exponent = kernels_float_bits(shifted) - 0x4B400000u;
    const uint32_t half = (uint32_t)((int32_t)exponent >> 1);
    const float scale_low = kernels_bits_float((half + 127u) << 23);
    const float scale_high = kernels_bits_float((exponent - half + 127u) << 23);
    float result = polynomial * scale_low * scale_high;
    result = x > upper ? INFINITY : result;
    result = x < lower ? 0.0f : result;
    return x != x ? x : result;
}

/// `1 / (1 + e^-x)` as the Swift `Sigmoid.apply`: `e = e^-|x|` never overflows; `1/(1+e)` for x >= 0, `e/(1+e)` below.
KERNELS_VECTOR_INLINE float kernels_sigmoid_element(float x) {
    const float e = kernels_exp_element(x > 0 ? -x : x);
    const float positive = 1.0f / (1.0f + e);
    return x < 0 ? e * positive : positive;
}

/// The KERNELS_VECTOR_PARTIALS partial sums added pairwise (lane i with lane i + width, halving the width): a fixed
/// order, so every ISA gets the same total.
KERNELS_VECTOR_INLINE float kernels_reduce_sum(float *partial) {
    for (int width = KERNELS_VECTOR_PARTIALS / 2; width >= 1; width /= 2) {
        for (int lane = 0; lane < width; lane++) partial[lane] += partial[lane + width];
    }
    return partial[0];
}

KERNELS_VECTOR_INLINE void kernels_exp_body(size_t n, const float *x, float *y) {
    for (size_t i = 0; i < n; i++) y[i] = kernels_exp_element(x[i]);
}

/// The largest element, NaN ignored (a NaN never replaces a lane's maximum); -inf when n == 0 or all are NaN.
KERNELS_VECTOR_INLINE float kernels_max_body(size_t n, const float *x) {
    float partial[KERNELS_VECTOR_PARTIALS] __attribute__((aligned(64)));
    for (int lane = 0; lane < KERNELS_VECTOR_PARTIALS; lane++) partial[lane] = -INFINITY;
    size_t i = 0;
    for (; i + KERNELS_VECTOR_PARTIALS <= n; i += KERNELS_VECTOR_PARTIALS) {
        for (int lane = 0; lane < KERNELS_VECTOR_PARTIALS; lane++) {
            const float v = x[i + lane];
            partial[lane] = v > partial[lane] ? v : partial[lane];
        }
    }
    for (size_t lane = 0; i + lane < n; lane++) {
        const float v = x[i + lane];
        partial[lane] = v > partial[lane] ? v : partial[lane];
    }
    // Pairwise, as kernels_reduce_sum (vector shuffles rather than 32 serial steps); any order gives the same maximum.
    for (int width = KERNELS_VECTOR_PARTIALS / 2; width >= 1; width /= 2) {
        for (int lane = 0; lane < width; lane++) {
            partial[lane] = partial[lane + width] > partial[lane] ? partial[lane + width] : partial[lane];
        }
    }
    return partial[0];
}

KERNELS_VECTOR_INLINE float kernels_sum_body(size_t n, const float *x) {
    float partial[KERNELS_VECTOR_PARTIALS] __attribute__((aligned(64))) = {0};
    size_t i = 0;
    for (; i + KERNELS_VECTOR_PARTIALS <= n; i += KERNELS_VECTOR_PARTIALS) {
        for (int lane = 0; lane < KERNELS_VECTOR_PARTIALS; lane++) partial[lane] += x[i + lane];
    }
    for (size_t lane = 0; i + lane < n; lane++) partial[lane] += x[i + lane];
    return kernels_reduce_sum(partial);
}

/// Σ e^(x - shift), also written to y when `store` (a constant where it is inlined, so each case is its own loop).
KERNELS_VECTOR_INLINE float kernels_exp_shifted_sum_body(const int store, size_t n, const float *x, float shift,
                                                         float *y) {
    float partial[KERNELS_VECTOR_PARTIALS] __attribute__((aligned(64))) = {0};
    size_t i = 0;
    for (; i + KERNELS_VECTOR_PARTIALS <= n; i += KERNELS_VECTOR_PARTIALS) {
        for (int lane = 0; lane < KERNELS_VECTOR_PARTIALS; lane++) {
            const float e = kernels_exp_element(x[i + lane] - shift);
            if (store) y[i + lane] = e;
            partial[lane] += e;
        }
    }
    for (size_t lane = 0; i + lane < n; lane++) {
        const float e = kernels_exp_element(x[i + lane] - shift);
        if (store) y[i + lane] = e;
        partial[lane] += e;
    }
    return kernels_reduce_sum(partial);
}

KERNELS_VECTOR_INLINE void kernels_exp_shifted_scaled_body(size_t n, const float *x, float shift, float scale,
                                                           float *y) {
    for (size_t i = 0; i < n; i++) y[i] = scale * kernels_exp_element(x[i] - shift);
}

// Softmax of each row: exponentials first (stored, summed), then one scale pass. A row of -inf has maximum -inf and
// x - max = NaN everywhere, so it comes out NaN, as the Swift loop it replaces gave (a fully masked row); a row with
// +inf or NaN comes out NaN; -inf entries of a row with a finite maximum get 0.
KERNELS_VECTOR_INLINE void kernels_softmax_rows_body(size_t rows, size_t n, const float *x, float *y) {
    for (size_t row = 0; row < rows; row++) {
        const float *input = x + row * n;
        float *output = y + row * n;
        const float maximum = kernels_max_body(n, input);
        const float scale = 1.0f / kernels_exp_shifted_sum_body(1, n, input, maximum, output);
        for (size_t k = 0; k < n; k++) output[k] *= scale;
    }
}

// dX = Y · (dY − Σ dY · Y) per row; a row whose dY is all zero (no loss reads it; a fully masked attention row is NaN
// in the forward pass) gets zero, not NaN.
KERNELS_VECTOR_INLINE void kernels_softmax_backward_rows_body(size_t rows, size_t n, const float *y, const float *dy,
                                                              float *dx) {
    for (size_t row = 0; row < rows; row++) {
        const float *output = y + row * n, *gradient = dy + row * n;
        float *result = dx + row * n;
        // Any nonzero dY, a block at a time: an ordinary row answers in its first block.
        int nonzero = 0;
        for (size_t start = 0; start < n && !nonzero; start += KERNELS_VECTOR_PARTIALS) {
            const size_t end = n - start < KERNELS_VECTOR_PARTIALS ? n : start + KERNELS_VECTOR_PARTIALS;
            for (size_t k = start; k < end; k++) nonzero |= gradient[k] != 0;
        }
        if (!nonzero) {
            for (size_t k = 0; k < n; k++) result[k] = 0;
            continue;
        }
        float partial[KERNELS_VECTOR_PARTIALS] __attribute__((aligned(64))) = {0};
        size_t i = 0;
        for (; i + KERNELS_VECTOR_PARTIALS <= n; i += KERNELS_VECTOR_PARTIALS) {
            for (int lane = 0; lane < KERNELS_VECTOR_PARTIALS; lane++) partial[lane] += gradient[i + lane] * output[i + lane];
        }
        for (size_t lane = 0; i + lane < n; lane++) partial[lane] += gradient[i + lane] * output[i + lane];
        const float dot = kernels_reduce_sum(partial);
        for (size_t k = 0; k < n; k++) result[k] = output[k] * (gradient[k] - dot);
    }
}

KERNELS_VECTOR_INLINE void kernels_sigmoid_body(size_t n, const float *x, float *y) {
    for (size_t i = 0; i < n; i++) y[i] = kernels_sigmoid_element(x[i]);
}

KERNELS_VECTOR_INLINE void kernels_quick_gelu_body(size_t n, float alpha, const float *x, float *y) {
    for (size_t i = 0; i < n; i++) y[i] = x[i] * kernels_sigmoid_element(alpha * x[i]);
}

// z = alpha·x, s = sigmoid(z): dx = dy · (s + z·s·(1 − s)).
KERNELS_VECTOR_INLINE void kernels_quick_gelu_backward_body(size_t n, float alpha, const float *dy, const float *x,
                                                            float *dx) {
    for (size_t i = 0; i < n; i++) {
        const float z = alpha * x[i];
        const float s = kernels_sigmoid_element(z);
        dx[i] = dy[i] * (s + z * s * (1.0f - s));
    }
}

// QuickGelu(gate) · up, rounded as the two ops round: the product x·s, then its product with up.
KERNELS_VECTOR_INLINE void kernels_gated_quick_gelu_body(size_t n, float alpha, const float *gate, const float *up,
                                                         float *y) {
    for (size_t i = 0; i < n; i++) {
        const float activated = gate[i] * kernels_sigmoid_element(alpha * gate[i]);
        y[i] = activated * up[i];
    }
}

// y = q · up with q = QuickGelu(gate): dup = dy · q; dgate = (dy · up) · (s + z·s·(1 − s)), z = alpha·gate. Either
// output may be NULL (not wanted). The same operations as Mul's and QuickGelu's rules one after the other.
KERNELS_VECTOR_INLINE void kernels_gated_quick_gelu_backward_body(size_t n, float alpha, const float *dy,
                                                                  const float *gate, const float *up, float *dgate,
                                                                  float *dup) {
    if (dup) {
        for (size_t i = 0; i < n; i++) dup[i] = dy[i] * (gate[i] * kernels_sigmoid_element(alpha * gate[i]));
    }
    if (dgate) {
        for (size_t i = 0; i < n; i++) {
            const float dq = dy[i] * up[i];
            const float z = alpha * gate[i];
            const float s = kernels_sigmoid_element(z);
            dgate[i] = dq * (s + z * s * (1.0f - s));
        }
    }
}

/* The entry points of one ISA and their table: each ISA file defines TARGET (its function attributes, empty for the
 * portable build) and says KERNELS_VECTOR_ENTRY_POINTS(its table). */
#define KERNELS_VECTOR_ENTRY_POINTS(TABLE)                                                                          \
    static TARGET void vector_exp(size_t n, const float *x, float *y) { kernels_exp_body(n, x, y); }                \
    static TARGET float vector_max(size_t n, const float *x) { return kernels_max_body(n, x); }                     \
    static TARGET float vector_sum(size_t n, const float *x) { return kernels_sum_body(n, x); }                     \
    static TARGET float vector_exp_shifted_sum(size_t n, const float *x, float shift, float *y) {                   \
        return y ? kernels_exp_shifted_sum_body(1, n, x, shift, y) : kernels_exp_shifted_sum_body(0, n, x, shift, y); \
    }                                                                                                               \
    static TARGET void vector_exp_shifted_scaled(size_t n, const float *x, float shift, float scale, float *y) {    \
        kernels_exp_shifted_scaled_body(n, x, shift, scale, y);                                                     \
    }                                                                                                               \
    static TARGET void vector_softmax_rows(size_t rows, size_t n, const float *x, float *y) {                       \
        kernels_softmax_rows_body(rows, n, x, y);                                                                   \
    }                                                                                                               \
    static TARGET void vector_softmax_backward_rows(size_t rows, size_t n, const float *y, const float *dy,         \
                                                    float *dx) {                                                    \
        kernels_softmax_backward_rows_body(rows, n, y, dy, dx);                                                     \
    }                                                                                                               \
    static TARGET void vector_sigmoid(size_t n, const float *x, float *y) { kernels_sigmoid_body(n, x, y); }        \
    static TARGET void vector_quick_gelu(size_t n, float alpha, const float *x, float *y) {                         \
        kernels_quick_gelu_body(n, alpha, x, y);                                                                    \
    }                                                                                                               \
    static TARGET void vector_quick_gelu_backward(size_t n, float alpha, const float *dy, const float *x,           \
                                                  float *dx) {                                                      \
        kernels_quick_gelu_backward_body(n, alpha, dy, x, dx);                                                      \
    }                                                                                                               \
    static TARGET void vector_gated_quick_gelu(size_t n, float alpha, const float *gate, const float *up, float *y) { \
        kernels_gated_quick_gelu_body(n, alpha, gate, up, y);                                                       \
    }                                                                                                               \
    static TARGET void vector_gated_quick_gelu_backward(size_t n, float alpha, const float *dy, const float *gate,  \
                                                        const float *up, float *dgate, float *dup) {                \
        kernels_gated_quick_gelu_backward_body(n, alpha, dy, gate, up, dgate, dup);                                 \
    }                                                                                                               \
    const kernels_vector_table TABLE = {vector_exp, vector_max, vector_sum, vector_exp_shifted_sum,                 \
                                        vector_exp_shifted_scaled, vector_softmax_rows, vector_softmax_backward_rows, \
                                        vector_sigmoid, vector_quick_gelu, vector_quick_gelu_backward,              \
                                        vector_gated_quick_gelu, vector_gated_quick_gelu_backward};

#endif
