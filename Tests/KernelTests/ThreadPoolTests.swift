import Foundation
import Kernels
import XCTest

// `kernels_pool_run`: every index runs exactly once, on more than one thread at a time, also after the workers
// have gone to sleep; calls nested in a body or made from several threads at once run to completion.
final class ThreadPoolTests: XCTestCase {
    func testEveryIndexRunsExactlyOnce() {
        for threads in [1, 2, 3, 5] {
            for count in [0, 1, 2, 3, 7, 64, 1000] {
                var runs = [Int](repeating: 0, count: count)
                runs.withUnsafeMutableBufferPointer { runs in
                    poolRun(threads: threads, count: count) { index in runs[index] += 1 }
                }
                XCTAssertEqual(runs, [Int](repeating: 1, count: count), "threads \(threads), count \(count)")
            }
        }
    }

    func testIndicesRunConcurrently() {
        // Two indices that each wait (up to 5 s) until both have started: both see the other only when two threads
        // run them at the same time.
        for round in 0..<20 {
            let condition = NSCondition()
            var started = 0
            var sawBoth = [false, false]
            sawBoth.withUnsafeMutableBufferPointer { sawBoth in
                poolRun(threads: 2, count: 2) { index in
                    condition.lock()
                    started += 1
                    condition.broadcast()
                    let deadline = Date(timeIntervalSinceNow: 5)
                    while started < 2 && condition.wait(until: deadline) {}
                    sawBoth[index] = started == 2
                    condition.unlock()
                }
            }
            XCTAssertEqual(sawBoth, [true, true], "round \(round)")
            if sawBoth != [true, true] { return }
            // Let the worker fall asleep (it polls for 0.2 ms) every other round, so that waking it is tested too.
            if round % 2 == 1 { usleep(5_000) }
        }
    }

    func testNestedCallsRunSerially() {
        var sums = [Int](repeating: 0, count: 8)
        sums.withUnsafeMutableBufferPointer { sums in
            poolRun(threads: 2, count: 8) { outer in
                poolRun(threads: 2, count: 100) { inner in sums[outer] += inner }
            }
        }
        XCTAssertEqual(sums, [Int](repeating: 4950, count: 8))
    }

    func testCallersOnSeveralThreads() {
        // Four threads each run 200 jobs at once: one gets the pool at a time, the others run theirs serially.
        let callers = 4, jobs = 200, count = 37
        var totals = [Int](repeating: 0, count: callers)
        totals.withUnsafeMutableBufferPointer { totals in
            nonisolated(unsafe) let totals = totals
            DispatchQueue.concurrentPerform(iterations: callers) { caller in
                for _ in 0..<jobs {
                    var runs = [Int](repeating: 0, count: count)
                    runs.withUnsafeMutableBufferPointer { runs in
                        poolRun(threads: 2, count: count) { index in runs[index] += index }
                    }
                    totals[caller] += runs.reduce(0, +)
                }
            }
        }
        XCTAssertEqual(totals, [Int](repeating: jobs * count * (count - 1) / 2, count: callers))
    }
}

/// One job as its body sees it.
private struct Job {
    let body: (Int) -> Void
}

/// `kernels_pool_run` with a Swift closure.
private func poolRun(threads: Int, count: Int, _ body: (Int) -> Void) {
    withoutActuallyEscaping(body) { body in
        var job = Job(body: body)
        withUnsafeMutablePointer(to: &job) { job in
            kernels_pool_run(threads, count, job) { context, index in
                context!.assumingMemoryBound(to: Job.self).pointee.body(index)
            }
        }
    }
}
