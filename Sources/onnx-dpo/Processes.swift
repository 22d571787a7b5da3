import ArgumentParser
import Distributed
import Foundation
import Interpreter

/// The flags of a run that `mpirun` may start many times: threads per process and the collective timeout.
struct ProcessOptions: ParsableArguments {
    @Option(help: "Threads per process (default: the cores divided by the processes mpirun started on this machine).")
    var threads: Int?

    @Option(help: "Seconds a collective between mpirun's processes may wait before the run stops with an error.")
    var collectiveTimeout: Double = 600

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
        if !(collectiveTimeout > 0) { throw ValidationError("--collective-timeout must be positive") }
    }

    /// Joins the processes (mpirun's, or this one alone), sets the threads, prints the world from rank 0 when there
    /// are several processes, and runs `body`. Under mpirun an error in any process stops them all (`MPI_Abort`)
    /// with the error and the rank that hit it, so none waits for a peer that is gone.
    func run(_ body: (any Communicator) throws -> Void) throws {
        let communicator = try World.join(collectiveTimeout: collectiveTimeout)
        Parallel.threadCount = threads ?? World.defaultThreads()
        do {
            let world = try WorldReport.gather(communicator, threads: Parallel.threadCount)
            if communicator.size > 1, communicator.isRoot { print(world) }
            try body(communicator)
            try communicator.finalize()
        } catch where communicator.size > 1 {
            communicator.abort(message: "onnx-dpo: rank \(communicator.rank) of \(communicator.size): "
                               + OnnxDPO.message(for: namingFlags(error)), code: 1)
        }
    }
}
