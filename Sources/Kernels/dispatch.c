// Which micro-kernels run: chosen once, at first use, from what the CPU *and* the operating system support
// (cpuid feature bits plus XGETBV's register-state bits), never from the CPU's model number: a model table goes
// stale with the next CPU generation (Debian's OpenBLAS 0.3.21 runs its SSE3 kernels on Emerald Rapids that way).
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

// XCR0: which register files the OS saves on a context switch. Without OS support the instructions fault even
// when cpuid lists them. Written as asm so this file needs no -mxsave.
static uint64_t read_xcr0(void) {
    uint32_t low, high;
    __asm__ volatile("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
    return ((uint64_t)high << 32) | low;
}
#endif

static kernels_isa detect_best(void) {
#if defined(__x86_64__) || defined(_M_X64)
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return KERNELS_ISA_PORTABLE;
    int fma = (ecx >> 12) & 1, osxsave = (ecx >> 27) & 1, avx = (ecx >> 28) & 1, f16c = (ecx >> 29) & 1;
    if (!osxsave || !avx) return KERNELS_ISA_PORTABLE;
    uint64_t xcr0 = read_xcr0();
    if ((xcr0 & 0x6) != 0x6) return KERNELS_ISA_PORTABLE;  // SSE and AVX (ymm upper halves) state
    if (__get_cpuid_max(0, 0) < 7) return KERNELS_ISA_PORTABLE;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    int avx2 = (ebx >> 5) & 1, avx512f = (ebx >> 16) & 1;
    if (!(avx2 && fma && f16c)) return KERNELS_ISA_PORTABLE;
    // Opmask, upper halves of zmm0-15 and zmm16-31.
    int zmm_state = (xcr0 & 0xe0) == 0xe0;
#if defined(__APPLE__)
    // macOS enables AVX-512 state lazily, on first use, so XCR0 can lack it; the kernel reports support instead.
    if (avx512f && !zmm_state) {
        int value = 0;
        size_t size = sizeof value;
        if (sysctlbyname("hw.optional.avx512f", &value, &size, NULL, 0) == 0 && value) zmm_state = 1;
    }
#endif
    if (avx512f && zmm_state) return KERNELS_ISA_AVX512;
    return KERNELS_ISA_AVX2;
#elif defined(__aarch64__)
    return KERNELS_ISA_NEON;
#else
    return KERNELS_ISA_PORTABLE;
#endif
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static kernels_isa best_isa = KERNELS_ISA_PORTABLE;
static _Atomic int active_isa = KERNELS_ISA_PORTABLE;

int kernels_isa_supported(kernels_isa isa) {
    switch (isa) {
    case KERNELS_ISA_PORTABLE: return 1;
    case KERNELS_ISA_NEON: return best_isa == KERNELS_ISA_NEON;
    case KERNELS_ISA_AVX2: return best_isa == KERNELS_ISA_AVX2 || best_isa == KERNELS_ISA_AVX512;
    case KERNELS_ISA_AVX512: return best_isa == KERNELS_ISA_AVX512;
    }
    return 0;
}

// `isa` if it runs here, else the best one below it that does.
static kernels_isa clamp(kernels_isa isa) {
    int level = (int)isa;
    while (level > KERNELS_ISA_PORTABLE && !kernels_isa_supported((kernels_isa)level)) level--;
    return (kernels_isa)level;
}

static void initialize(void) {
    best_isa = detect_best();
    kernels_isa chosen = best_isa;
    // For tests and benchmarks only: speed never depends on it being set.
    const char *forced = getenv("ONNX_DPO_ISA");
    if (forced && *forced) {
        int parsed = kernels_isa_from_name(forced);
        if (parsed >= 0) chosen = clamp((kernels_isa)parsed);
    }
    atomic_store(&active_isa, (int)chosen);
}

kernels_isa kernels_best_isa(void) {
    pthread_once(&once, initialize);
    return best_isa;
}

kernels_isa kernels_active_isa(void) {
    pthread_once(&once, initialize);
    return (kernels_isa)atomic_load_explicit(&active_isa, memory_order_relaxed);
}

kernels_isa kernels_force_isa(kernels_isa isa) {
    pthread_once(&once, initialize);
    kernels_isa chosen = clamp(isa);
    atomic_store(&active_isa, (int)chosen);
    return chosen;
}

const char *kernels_isa_name(kernels_isa isa) {
    switch (isa) {
    case KERNELS_ISA_PORTABLE: return "portable";
    case KERNELS_ISA_NEON: return "neon";
    case KERNELS_ISA_AVX2: return "avx2";
    case KERNELS_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

int kernels_isa_from_name(const char *name) {
    if (!name) return -1;
    for (int isa = KERNELS_ISA_PORTABLE; isa <= KERNELS_ISA_AVX512; isa++) {
        if (strcmp(name, kernels_isa_name((kernels_isa)isa)) == 0) return isa;
    }
    return -1;
}

const kernels_table *kernels_table_for(kernels_isa isa) {
    switch (isa) {
#if defined(__x86_64__) || defined(_M_X64)
    case KERNELS_ISA_AVX512: return &kernels_avx512_table;
    case KERNELS_ISA_AVX2: return &kernels_avx2_table;
#endif
#if defined(__aarch64__)
    case KERNELS_ISA_NEON: return &kernels_neon_table;
#endif
    default: return &kernels_portable_table;
    }
}
