import Interpreter
import XCTest

/// `bench --json` reports `peak_memory_bytes` from `peakResidentMemory()`; it once read 0 past 10 GB.
final class PeakMemoryTests: XCTestCase {
    func testPeakCoversMemoryJustTouched() {
        let before = peakResidentMemory()
        XCTAssertGreaterThan(before, 0)
        let count = 512 << 20  // 512 MiB, written so that every page is resident
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: count)
        defer { buffer.deallocate() }
        for page in stride(from: 0, to: count, by: 4096) { buffer[page] = 1 }
        XCTAssertGreaterThanOrEqual(peakResidentMemory(), count, "the peak includes the pages just written")
    }
}
