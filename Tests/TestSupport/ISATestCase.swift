import Kernels
import XCTest

/// A test case that forces the kernels to each ISA this machine runs: forcing changes a process-wide setting, so the
/// ISA active before each test is restored after it.
open class ISATestCase: XCTestCase {
    private var saved = KERNELS_ISA_PORTABLE

    override open func setUp() {
        super.setUp()
        saved = kernels_active_isa()
    }

    override open func tearDown() {
        _ = kernels_force_isa(saved)
        super.tearDown()
    }

    /// Each ISA this machine runs, best first.
    public var isas: [kernels_isa] {
        [KERNELS_ISA_AVX512, KERNELS_ISA_AVX2, KERNELS_ISA_NEON, KERNELS_ISA_PORTABLE].filter { kernels_isa_supported($0) != 0 }
    }
}
