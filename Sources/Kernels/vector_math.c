// The public elementwise entry points (Kernels.h, "Elementwise"): each runs the table of the ISA the GEMM uses now
// (kernels_active_isa), so ONNX_DPO_ISA and kernels_force_isa lower these too.
#include "vector_math.h"

static const kernels_vector_table *active_table(void) {
    switch (kernels_active_isa()) {
#if defined(__x86_64__) || defined(_M_X64)
    case KERNELS_ISA_AVX512: return &kernels_vector_avx512_table;
    case KERNELS_ISA_AVX2: return &kernels_vector_avx2_table;
#endif
    default: return &kernels_vector_portable_table;
    }
}

void kernels_exp(size_t n, const float *x, float *y) { active_table()->exp(n, x, y); }

float kernels_max(size_t n, const float *x) { return active_table()->max(n, x); }

float kernels_sum(size_t n, const float *x) { return active_table()->sum(n, x); }

float kernels_exp_shifted_sum(size_t n, const float *x, float shift, float *y) {
    return active_table()->exp_shifted_sum(n, x, shift, y);
}

void kernels_exp_shifted_scaled(size_t n, const float *x, float shift, float scale, float *y) {
    active_table()->exp_shifted_scaled(n, x, shift, scale, y);
}

void kernels_softmax_rows(size_t rows, size_t n, const float *x, float *y) {
    active_table()->softmax_rows(rows, n, x, y);
}

void kernels_softmax_backward_rows(size_t rows, size_t n, const float *y, const float *dy, float *dx) {
    active_table()->softmax_backward_rows(rows, n, y, dy, dx);
}

void kernels_sigmoid(size_t n, const float *x, float *y) { active_table()->sigmoid(n, x, y); }

void kernels_quick_gelu(size_t n, float alpha, const float *x, float *y) { active_table()->quick_gelu(n, alpha, x, y); }

void kernels_quick_gelu_backward(size_t n, float alpha, const float *dy, const float *x, float *dx) {
    active_table()->quick_gelu_backward(n, alpha, dy, x, dx);
}

void kernels_gated_quick_gelu(size_t n, float alpha, const float *gate, const float *up, float *y) {
    active_table()->gated_quick_gelu(n, alpha, gate, up, y);
}

void kernels_gated_quick_gelu_backward(size_t n, float alpha, const float *dy, const float *gate, const float *up,
                                       float *dgate, float *dup) {
    active_table()->gated_quick_gelu_backward(n, alpha, dy, gate, up, dgate, dup);
}
