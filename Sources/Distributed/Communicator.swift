import Foundation

/// The collectives data-parallel training needs, over a group of `size` processes numbered `rank` 0..<size: the one
/// seam between the trainer and MPI. `SingleProcess` is the group of one (every collective returns its input);
/// `OpenMPICommunicator` runs them over Open MPI.
///
/// Every process of the group must call the same collectives in the same order with matching sizes. A collective
/// that does not complete within the communicator's timeout throws `DistributedError.collectiveTimedOut`.
public protocol Communicator: AnyObject {
    /// This process's number in the group, 0..<size.
    var rank: Int { get }
    /// The number of processes in the group.
    var size: Int { get }
    /// Replaces `values` with their element-wise sum over the group (the same on every process).
    func allreduceSum(_ values: inout [Double]) throws
    /// Replaces `values` with their element-wise sum over the group, in float32 (gradients).
    func allreduceSum(_ values: inout [Float]) throws
    /// Every process's `bytes`, in rank order (each process may send a different count).
    func allgather(_ bytes: [UInt8]) throws -> [[UInt8]]
    /// Returns once every process has called it.
    func barrier() throws
    /// Ends the group's use of the communicator, once every process has called it; call once, last.
    func finalize() throws
    /// Stops every process of the group with `code`, after writing `message` to standard error.
    func abort(message: String, code: Int32) -> Never
}

extension Communicator {
    /// Rank 0: the process that writes files and prints.
    public var isRoot: Bool { rank == 0 }

    /// This process's contiguous share of `count` items: `count·rank/size ..< count·(rank+1)/size`, so shares differ
    /// by at most one item and, in rank order, cover `0..<count` in order (a rank may get none when count < size).
    public func share(of count: Int) -> Range<Int> {
        shareRange(count: count, rank: rank, size: size)
    }

    /// Every process's `values`, in rank order.
    public func allgather(_ values: [Double]) throws -> [[Double]] {
        let bytes = values.withUnsafeBytes { Array($0) }
        return try allgather(bytes).map { part in
            part.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
        }
    }

    /// Rank 0's `values` on every process (the other processes' arguments are ignored): what rank 0 read from the
    /// output folder, which the other processes may not see.
    public func broadcastFromRoot(_ values: [Double]) throws -> [Double] {
        guard size > 1 else { return values }
        return try allgather(isRoot ? values : [])[0]
    }
}

/// `count·rank/size ..< count·(rank+1)/size`: rank `rank`'s contiguous share of `count` items over `size` ranks.
public func shareRange(count: Int, rank: Int, size: Int) -> Range<Int> {
    precondition(size >= 1 && (0..<size).contains(rank), "rank \(rank) outside a group of \(size)")
    return (count * rank / size)..<(count * (rank + 1) / size)
}

/// The group of one process: every collective returns its input, so a trainer written against `Communicator` runs
/// exactly as it would without one.
public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allreduceSum(_ values: inout [Double]) throws {}
    public func allreduceSum(_ values: inout [Float]) throws {}
    public func allgather(_ bytes: [UInt8]) throws -> [[UInt8]] { [bytes] }
    public func barrier() throws {}
    public func finalize() throws {}
    public func abort(message: String, code: Int32) -> Never {
        FileHandle.standardError.write(Data((message + "\n").utf8))
        exit(code)
    }
}

/// What goes wrong with a group of processes, with what a user can do about it.
public enum DistributedError: Error, CustomStringConvertible {
    /// The process was started by `mpirun` but Open MPI's library could not be loaded.
    case libraryNotFound(tried: [String], reason: String)
    /// A symbol of the MPI C API is missing from the loaded library.
    case missingSymbol(String, library: String)
    /// An MPI call returned an error code.
    case callFailed(function: String, code: Int32)
    /// A collective did not complete in time: another process died, hangs, or took a different path.
    case collectiveTimedOut(operation: String, rank: Int, size: Int, seconds: Double)
    /// The processes disagree on something they must share (a checkpoint to resume from, a count).
    case disagreement(reason: String)

    public var description: String {
        switch self {
        case .libraryNotFound(let tried, let reason):
            return "started by mpirun (OMPI_COMM_WORLD_SIZE is set) but Open MPI's library could not be loaded "
                + "(tried \(tried.joined(separator: ", ")): \(reason). Install Open MPI (Debian: openmpi-bin) or set "
                + "ONNX_DPO_MPI_LIBRARY to the path of libmpi"
        case .missingSymbol(let symbol, let library):
            return "\(library) has no symbol \(symbol): onnx-dpo needs Open MPI 4 or later (the libmpi.so.40 ABI)"
        case .callFailed(let function, let code):
            return "\(function) failed with MPI error code \(code)"
        case .collectiveTimedOut(let operation, let rank, let size, let seconds):
            return "rank \(rank) of \(size): \(operation) did not complete within \(Int(seconds)) s: another process "
                + "died, hangs or is still working (raise --collective-timeout if one step takes longer than that)"
        case .disagreement(let reason):
            return reason
        }
    }
}

extension Communicator {
    /// The median time of an allreduce of `floats` float32 values over the group (each timed one after a barrier), in
    /// seconds: the communication a data-parallel step adds for a gradient of that size.
    public func timeAllreduce(floats: Int, iterations: Int = 10) throws -> Double {
        var values = [Float](repeating: 1, count: floats)
        var times: [Double] = []
        for _ in 0..<max(iterations, 1) {
            try barrier()
            let start = DispatchTime.now().uptimeNanoseconds
            try allreduceSum(&values)
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return times.sorted()[times.count / 2]
    }
}
