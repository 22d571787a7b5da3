// The elementwise kernels (vector_math.h) compiled for AVX2 (8 lanes, ymm). Per-function target attributes: the
// package builds for baseline x86-64 and this runs only after the dispatcher has seen AVX2, FMA and F16C in cpuid and
// ymm state enabled in XCR0. FMA is allowed but unused: contraction is off (see vector_math.h).
#include "vector_math.h"

#if defined(__x86_64__) || defined(_M_X64)
#define TARGET __attribute__((target("avx2,fma")))

KERNELS_VECTOR_ENTRY_POINTS(kernels_vector_avx2_table)
#endif
