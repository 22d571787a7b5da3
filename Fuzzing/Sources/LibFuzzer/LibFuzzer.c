// Declarations only (include/LibFuzzer.h); the driver itself comes from the compiler's libFuzzer runtime.
#include "LibFuzzer.h"
