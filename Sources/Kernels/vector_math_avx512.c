// The elementwise kernels (vector_math.h) compiled for AVX-512F (16 lanes, zmm). Per-function target attributes: the
// package builds for baseline x86-64 and this runs only after the dispatcher has seen AVX-512F in cpuid and zmm state
// enabled in XCR0. The vectoriser picks 512-bit vectors here: the attribute sets no narrower preferred width.
#include "vector_math.h"

#if defined(__x86_64__) || defined(_M_X64)
#define TARGET __attribute__((target("avx512f")))

KERNELS_VECTOR_ENTRY_POINTS(kernels_vector_avx512_table)
#endif
