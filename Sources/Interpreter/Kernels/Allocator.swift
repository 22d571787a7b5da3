#if canImport(Glibc)
import Glibc
#endif

/// Tuning of the C allocator for the interpreter's allocation pattern: every op allocates its outputs (up to a few
/// MB each) and the session frees them a few nodes later.
///
/// glibc serves blocks above `M_MMAP_THRESHOLD` with fresh `mmap`s and returns free memory at the heap's top
/// above `M_TRIM_THRESHOLD` to the kernel, so by default each such output costs page faults and zeroing of new
/// pages (~7% of a forward pass in `perf`). Raising both keeps freed blocks for reuse; the heap still never holds
/// more than the peak of live tensors. Applied once, process-wide, when the first session is made.
enum Allocator {
    static let tuned: Void = {
        #if os(Linux) && canImport(Glibc)
        _ = glibcMallopt(-3, 32 << 20)  // M_MMAP_THRESHOLD: glibc's maximum on 64-bit
        _ = glibcMallopt(-1, 1 << 30)   // M_TRIM_THRESHOLD
        #endif
    }()
}

#if os(Linux) && canImport(Glibc)
/// glibc's `mallopt` (declared in <malloc.h>, which the Glibc module does not import).
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif
