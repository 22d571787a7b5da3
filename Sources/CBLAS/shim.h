// OpenBLAS's CBLAS interface (Debian: libopenblas-dev). On Apple platforms the
// Interpreter uses Accelerate instead and this module is not built.
#include <cblas.h>
