#if canImport(Glibc)
import Glibc
#endif

/// Tuning of the C allocator for the interpreter's allocation pattern: every op allocates its outputs (up to a
/// few MB each, 100 MB for a language model's logits) and the session frees them a few nodes later.
///
/// By default glibc serves blocks above `M_MMAP_THRESHOLD` (at most 32 MB) with fresh `mmap`s and returns free
/// memory at the heap's top above `M_TRIM_THRESHOLD` to the kernel, so each such output costs page faults and the
/// zeroing of new pages on every run (~7% of a forward pass in `perf`). Serving every block from the heap
/// (`M_MMAP_MAX` 0) and keeping freed memory (`M_TRIM_THRESHOLD` 1 GiB) lets the next run reuse it: measured
/// +15-25% tokens/s on a 135M-parameter Llama, with a lower peak, since the heap never holds more than the peak
/// of live tensors. Applied once, process-wide, when the first session is made.
enum Allocator {
    static let tuned: Void = {
        #if os(Linux) && canImport(Glibc)
        _ = glibcMallopt(-4, 0)         // M_MMAP_MAX: no block gets its own mapping
        _ = glibcMallopt(-1, -1)        // M_TRIM_THRESHOLD: never give freed memory back
        #endif
    }()
}

extension Allocator {
    /// Hands the free pages inside the heap back to the kernel (glibc's `malloc_trim`, which since 2.8 also releases
    /// whole free pages between live blocks), once after a session freed much at once: packing drops every unpacked
    /// weight, and without this their holes stay resident while the blocks that reuse them fit only partly.
    static func releaseFreeMemory() {
        #if os(Linux) && canImport(Glibc)
        _ = glibcMallocTrim(0)
        #endif
    }
}

#if os(Linux) && canImport(Glibc)
/// glibc's `malloc_trim` (declared in <malloc.h>).
@_silgen_name("malloc_trim")
private func glibcMallocTrim(_ pad: Int) -> Int32

/// glibc's `mallopt` (declared in <malloc.h>, which the Glibc module does not import).
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif
