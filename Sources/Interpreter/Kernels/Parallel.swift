import Foundation
import Kernels

/// Splitting loops across the cores, on the kernels' thread pool (`kernels_pool_run`: workers that poll briefly
/// between jobs, so a hand-off costs about a microsecond instead of GCD's tens). Only large loops are split: below
/// `minimumPerThread` elements one more thread costs more than it saves.
public enum Parallel {
    /// Threads used for products and elementwise loops: the cores, unless set before the first parallel loop
    /// (`onnx-dpo train --threads`, or cores / local processes under mpirun).
    nonisolated(unsafe) public static var threadCount = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Calls `body` on disjoint ranges that together cover `0..<count`, concurrently when `count` is large.
    public static func forEachChunk(
        _ count: Int, minimumPerThread: Int = 32_768, _ body: (Swift.Range<Int>) -> Void
    ) {
        let threads = min(threadCount, count / max(minimumPerThread, 1))
        if threads <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        withoutActuallyEscaping(body) { body in
            var job = ChunkJob(count: count, chunks: threads, body: body)
            withUnsafeMutablePointer(to: &job) { job in
                kernels_pool_run(threads, threads, job) { context, chunk in
                    let job = context!.assumingMemoryBound(to: ChunkJob.self)
                    let (count, chunks) = (job.pointee.count, job.pointee.chunks)
                    job.pointee.body(count * chunk / chunks ..< count * (chunk + 1) / chunks)
                }
            }
        }
    }

    /// Runs `kernels_parallel_for` loops (the GEMM's) on the pool with at most `threads` threads:
    /// `body(loop, context)` with the loop and the context it takes.
    static func withParallelFor<Result>(
        threads: Int = threadCount, _ body: (kernels_parallel_for, UnsafeMutableRawPointer) -> Result
    ) -> Result {
        var threads = threads
        return withUnsafeMutablePointer(to: &threads) { body(kernels_pool_for, UnsafeMutableRawPointer($0)) }
    }
}

/// One `forEachChunk` call as the pool's workers see it.
private struct ChunkJob {
    let count: Int
    let chunks: Int
    let body: (Swift.Range<Int>) -> Void
}

/// Carries a value the caller knows to be safe across the threads of `Parallel.forEachChunk`
/// (each thread writes a disjoint range of the output).
@usableFromInline
struct UncheckedSendable<Value>: @unchecked Sendable {
    @usableFromInline let value: Value
    @usableFromInline init(_ value: Value) { self.value = value }
}
