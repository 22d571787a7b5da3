import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The process group `mpirun` started, over Open MPI's C API loaded at run time (`dlopen`), so nothing links
/// against MPI at build time: a machine without Open MPI builds and runs onnx-dpo unchanged.
///
/// Open MPI's ABI (libmpi.so.40, Open MPI 4 and 5): handles are pointers, and the predefined ones are the addresses
/// of global objects (`MPI_COMM_WORLD` is `&ompi_mpi_comm_world`, `MPI_DOUBLE` `&ompi_mpi_double`, `MPI_SUM`
/// `&ompi_mpi_op_sum`), found with `dlsym`. Other MPI implementations (MPICH's integer handles) are not supported.
///
/// Collectives are nonblocking (`MPI_Iallreduce`, `MPI_Iallgatherv`, `MPI_Ibarrier`) and polled with `MPI_Test`
/// until `timeout`, so a process whose peer died or hangs stops with `DistributedError.collectiveTimedOut` instead of
/// waiting for ever. Call from one thread only (MPI is initialised with `MPI_THREAD_FUNNELED`).
public final class OpenMPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    /// Seconds a collective may take before it counts as failed.
    public let timeout: Double
    /// This process's host (`MPI_Get_processor_name`).
    public let processorName: String

    private typealias Handle = UnsafeMutableRawPointer
    private typealias Request = UnsafeMutableRawPointer?

    private let library: String
    private let commWorld: Handle, doubleType: Handle, floatType: Handle, byteType: Handle, intType: Handle
    private let sumOperation: Handle
    // The C signatures, handles as raw pointers (mpi.h is not needed).
    private typealias Flag = @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    private typealias Iallreduce = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int32, Handle, Handle,
                                                   Handle, UnsafeMutablePointer<Request>) -> Int32
    private typealias Iallgather = @convention(c) (UnsafeRawPointer?, Int32, Handle, UnsafeMutableRawPointer?, Int32,
                                                   Handle, Handle, UnsafeMutablePointer<Request>) -> Int32
    private typealias Iallgatherv = @convention(c) (UnsafeRawPointer?, Int32, Handle, UnsafeMutableRawPointer?,
                                                    UnsafePointer<Int32>, UnsafePointer<Int32>, Handle, Handle,
                                                    UnsafeMutablePointer<Request>) -> Int32
    private typealias Ibarrier = @convention(c) (Handle, UnsafeMutablePointer<Request>) -> Int32
    private typealias Test = @convention(c) (UnsafeMutablePointer<Request>, UnsafeMutablePointer<Int32>,
                                             UnsafeMutableRawPointer?) -> Int32
    private typealias Abort = @convention(c) (Handle, Int32) -> Int32

    private let mpiFinalize: @convention(c) () -> Int32
    private let mpiFinalized: Flag
    private let mpiIallreduce: Iallreduce
    private let mpiIallgather: Iallgather
    private let mpiIallgatherv: Iallgatherv
    private let mpiIbarrier: Ibarrier
    private let mpiTest: Test
    private let mpiAbort: Abort

    /// The library names tried, in order, after `ONNX_DPO_MPI_LIBRARY`.
    public static let libraryNames = ["libmpi.so.40", "libmpi.so", "libmpi.40.dylib", "libmpi.dylib"]

    /// Loads Open MPI, initialises it (once per process) and joins `MPI_COMM_WORLD`.
    public init(timeout: Double) throws {
        let candidates = (ProcessInfo.processInfo.environment["ONNX_DPO_MPI_LIBRARY"].map { [$0] } ?? []) + Self.libraryNames
        var handle: UnsafeMutableRawPointer?
        var loaded = ""
        var lastError = ""
        for name in candidates {
            // RTLD_GLOBAL: Open MPI's plugins (mca_*.so) resolve libmpi's symbols from the global namespace.
            if let opened = dlopen(name, RTLD_NOW | RTLD_GLOBAL) {
                (handle, loaded) = (opened, name)
                break
            }
            lastError = dlerror().map { String(cString: $0) } ?? "unknown error"
        }
        guard let handle else { throw DistributedError.libraryNotFound(tried: candidates, reason: lastError) }
        library = loaded
        func symbol(_ name: String) throws -> UnsafeMutableRawPointer {
            guard let address = dlsym(handle, name) else { throw DistributedError.missingSymbol(name, library: loaded) }
            return address
        }
        func function<F>(_ name: String, as type: F.Type) throws -> F { unsafeBitCast(try symbol(name), to: type) }

        commWorld = try symbol("ompi_mpi_comm_world")
        doubleType = try symbol("ompi_mpi_double")
        floatType = try symbol("ompi_mpi_float")
        byteType = try symbol("ompi_mpi_byte")
        intType = try symbol("ompi_mpi_int")
        sumOperation = try symbol("ompi_mpi_op_sum")
        mpiFinalize = try function("MPI_Finalize", as: (@convention(c) () -> Int32).self)
        mpiFinalized = try function("MPI_Finalized", as: Flag.self)
        mpiIallreduce = try function("MPI_Iallreduce", as: Iallreduce.self)
        mpiIallgather = try function("MPI_Iallgather", as: Iallgather.self)
        mpiIallgatherv = try function("MPI_Iallgatherv", as: Iallgatherv.self)
        mpiIbarrier = try function("MPI_Ibarrier", as: Ibarrier.self)
        mpiTest = try function("MPI_Test", as: Test.self)
        mpiAbort = try function("MPI_Abort", as: Abort.self)
        let initialized = try function("MPI_Initialized", as: Flag.self)
        let initThread = try function("MPI_Init_thread", as: (@convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?,
                                                                               Int32, UnsafeMutablePointer<Int32>) -> Int32).self)
        let commRank = try function("MPI_Comm_rank", as: (@convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32).self)
        let commSize = try function("MPI_Comm_size", as: (@convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32).self)
        let processorName = try function("MPI_Get_processor_name",
                                         as: (@convention(c) (UnsafeMutablePointer<CChar>, UnsafeMutablePointer<Int32>) -> Int32).self)

        var flag: Int32 = 0
        try Self.check(initialized(&flag), "MPI_Initialized")
        if flag == 0 {
            var provided: Int32 = 0
            // MPI_THREAD_FUNNELED is 1 in Open MPI's mpi.h: only the main thread calls MPI.
            try Self.check(initThread(nil, nil, 1, &provided), "MPI_Init_thread")
        }
        var value: Int32 = 0
        try Self.check(commRank(commWorld, &value), "MPI_Comm_rank")
        rank = Int(value)
        try Self.check(commSize(commWorld, &value), "MPI_Comm_size")
        size = Int(value)
        var name = [CChar](repeating: 0, count: 256 + 1)  // MPI_MAX_PROCESSOR_NAME is 256 in Open MPI
        var length: Int32 = 0
        try Self.check(processorName(&name, &length), "MPI_Get_processor_name")
        self.processorName = String(cString: name)
        self.timeout = timeout
    }

    private static func check(_ code: Int32, _ function: String) throws {
        if code != 0 { throw DistributedError.callFailed(function: function, code: code) }
    }

    /// Polls `request` until it completes, or throws once `timeout` seconds have passed (MPI cannot cancel a
    /// collective; the caller then aborts the group).
    private func wait(_ request: inout Request, _ operation: String) throws {
        let start = DispatchTime.now().uptimeNanoseconds
        var done: Int32 = 0
        var polls = 0
        while true {
            try Self.check(mpiTest(&request, &done, nil), "MPI_Test")  // nil: MPI_STATUS_IGNORE
            if done != 0 { return }
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            if elapsed > timeout {
                throw DistributedError.collectiveTimedOut(operation: operation, rank: rank, size: size, seconds: timeout)
            }
            // Spin while the peers are likely close behind, then leave the core to the compute threads.
            polls += 1
            if polls > 1000 { usleep(elapsed < 0.01 ? 20 : 200) }
        }
    }

    private func count(_ values: Int, _ operation: String) throws -> Int32 {
        guard values <= Int(Int32.max) else {
            throw DistributedError.disagreement(reason: "\(operation) of \(values) elements exceeds MPI's int count")
        }
        return Int32(values)
    }

    public func allreduceSum(_ values: inout [Double]) throws {
        try allreduce(&values, type: doubleType, "allreduce of \(values.count) doubles")
    }

    public func allreduceSum(_ values: inout [Float]) throws {
        try allreduce(&values, type: floatType, "allreduce of \(values.count) floats")
    }

    private func allreduce<T>(_ values: inout [T], type: Handle, _ operation: String) throws {
        let elements = try count(values.count, operation)
        var request: Request = nil
        let input = values
        try input.withUnsafeBytes { source in
            try values.withUnsafeMutableBytes { target in
                try Self.check(mpiIallreduce(source.baseAddress, target.baseAddress, elements, type, sumOperation,
                                             commWorld, &request), "MPI_Iallreduce")
                try wait(&request, operation)
            }
        }
    }

    public func allgather(_ bytes: [UInt8]) throws -> [[UInt8]] {
        var counts = [Int32](repeating: 0, count: size)
        var mine = try count(bytes.count, "allgather")
        var request: Request = nil
        try withUnsafeMutablePointer(to: &mine) { value in
            try counts.withUnsafeMutableBufferPointer { counts in
                try Self.check(mpiIallgather(value, 1, intType, counts.baseAddress, 1, intType, commWorld, &request),
                               "MPI_Iallgather")
                try wait(&request, "allgather of counts")
            }
        }
        var offsets = [Int32](repeating: 0, count: size)
        for index in 1..<max(size, 1) { offsets[index] = offsets[index - 1] + counts[index - 1] }
        let total = Int(offsets[size - 1]) + Int(counts[size - 1])
        var gathered = [UInt8](repeating: 0, count: max(total, 1))
        try bytes.withUnsafeBytes { source in
            try gathered.withUnsafeMutableBytes { target in
                try Self.check(mpiIallgatherv(source.baseAddress, mine, byteType, target.baseAddress, counts, offsets,
                                              byteType, commWorld, &request), "MPI_Iallgatherv")
                try wait(&request, "allgather of \(total) bytes")
            }
        }
        return (0..<size).map { Array(gathered[Int(offsets[$0])..<Int(offsets[$0] + counts[$0])]) }
    }

    public func barrier() throws {
        var request: Request = nil
        try Self.check(mpiIbarrier(commWorld, &request), "MPI_Ibarrier")
        try wait(&request, "barrier")
    }

    public func abort(message: String, code: Int32) -> Never {
        FileHandle.standardError.write(Data((message + "\n").utf8))
        _ = mpiAbort(commWorld, code)
        exit(code)
    }

    /// Ends MPI in this process (`MPI_Finalize`, which waits for the other processes); call once, last.
    public func finalize() throws {
        try barrier()  // with the timeout, so a failed peer is reported rather than waited for in MPI_Finalize
        var finalized: Int32 = 0
        try Self.check(mpiFinalized(&finalized), "MPI_Finalized")
        if finalized == 0 { try Self.check(mpiFinalize(), "MPI_Finalize") }
    }
}
