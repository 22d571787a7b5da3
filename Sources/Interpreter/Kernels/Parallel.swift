import Dispatch
import Foundation

/// Splitting loops across the cores. Only large loops are split: below `minimumPerThread` elements a thread's
/// start-up costs more than it saves.
public enum Parallel {
    /// Threads used for elementwise and reduction loops (BLAS manages its own): the cores, unless set before the first
    /// parallel loop (`onnx-dpo train --threads`, or cores / local processes under mpirun).
    nonisolated(unsafe) public static var threadCount = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Calls `body` on disjoint ranges that together cover `0..<count`, concurrently when `count` is large.
    @inlinable
    public static func forEachChunk(
        _ count: Int, minimumPerThread: Int = 32_768, _ body: (Swift.Range<Int>) -> Void
    ) {
        let threads = min(threadCount, count / max(minimumPerThread, 1))
        if threads <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let box = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: threads) { chunk in
                let start = count * chunk / threads
                let end = count * (chunk + 1) / threads
                box.value(start..<end)
            }
        }
    }
}

/// Carries a value the caller knows to be safe across the threads of `Parallel.forEachChunk`
/// (each thread writes a disjoint range of the output).
@usableFromInline
struct UncheckedSendable<Value>: @unchecked Sendable {
    @usableFromInline let value: Value
    @usableFromInline init(_ value: Value) { self.value = value }
}
