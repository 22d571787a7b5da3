// The elementwise kernels (vector_math.h) compiled for the build's baseline: SSE2 on x86-64, NEON on ARM64 (the
// table the NEON level uses too). The fallback for CPUs the vector files do not cover and the lowest forced level.
#include "vector_math.h"

#define TARGET

KERNELS_VECTOR_ENTRY_POINTS(kernels_vector_portable_table)
