import Foundation

/// The processes of a run as the launcher started them: one process, or `mpirun`'s group (Open MPI sets
/// `OMPI_COMM_WORLD_SIZE`, `OMPI_COMM_WORLD_RANK` and `OMPI_COMM_WORLD_LOCAL_SIZE` in each process it starts).
public enum World {
    /// The group this process belongs to: Open MPI's when `mpirun` started more than one process, else a
    /// `SingleProcess`. `collectiveTimeout` bounds every collective (seconds).
    public static func join(collectiveTimeout: Double, environment: [String: String] = ProcessInfo.processInfo.environment)
        throws -> any Communicator
    {
        guard let size = environment["OMPI_COMM_WORLD_SIZE"].flatMap(Int.init), size > 1 else { return SingleProcess() }
        return try OpenMPICommunicator(timeout: collectiveTimeout)
    }

    /// Processes of the group on this machine (`OMPI_COMM_WORLD_LOCAL_SIZE`; 1 without mpirun).
    public static func localProcesses(environment: [String: String] = ProcessInfo.processInfo.environment) -> Int {
        max(1, environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? 1)
    }

    /// Threads per process that share this machine's cores among its processes: cores / local processes, at least 1.
    public static func defaultThreads(cores: Int = ProcessInfo.processInfo.activeProcessorCount,
                                      environment: [String: String] = ProcessInfo.processInfo.environment) -> Int {
        max(1, cores / localProcesses(environment: environment))
    }
}

/// Who runs a job: each process's rank, host and threads (gathered at start; printed by rank 0).
public struct WorldReport: Sendable, Equatable, Codable, CustomStringConvertible {
    public struct Process: Sendable, Equatable, Codable {
        public var rank: Int
        public var host: String
        public var threads: Int

        public init(rank: Int, host: String, threads: Int) {
            self.rank = rank
            self.host = host
            self.threads = threads
        }
    }

    /// In rank order.
    public var processes: [Process]

    public init(processes: [Process]) { self.processes = processes }

    /// Gathers every process's host and `threads` (a collective: every process calls it).
    public static func gather(_ communicator: any Communicator, threads: Int,
                              host: String = ProcessInfo.processInfo.hostName) throws -> WorldReport {
        let mine = try JSONEncoder().encode(Process(rank: communicator.rank, host: host, threads: threads))
        let all = try communicator.allgather(Array(mine))
        return WorldReport(processes: try all.map { try JSONDecoder().decode(Process.self, from: Data($0)) })
    }

    /// The hosts in order of their first rank, with their ranks.
    public var hosts: [(host: String, ranks: [Int])] {
        var order: [String] = []
        var ranks: [String: [Int]] = [:]
        for process in processes {
            if ranks[process.host] == nil { order.append(process.host) }
            ranks[process.host, default: []].append(process.rank)
        }
        return order.map { ($0, ranks[$0]!) }
    }

    /// `world: 2 processes on 1 host; host-a: ranks 0-1 (1 thread each)`.
    public var description: String {
        let hosts = self.hosts
        let lines = hosts.map { host, ranks -> String in
            let threads = Set(ranks.map { processes[$0].threads }).sorted().map(String.init).joined(separator: "/")
            let list = ranks == Array(ranks[0]...ranks[ranks.count - 1]) && ranks.count > 1
                ? "ranks \(ranks[0])-\(ranks.last!)" : (ranks.count == 1 ? "rank \(ranks[0])" : "ranks " + ranks.map(String.init).joined(separator: ","))
            return "  \(host): \(list), \(threads) thread\(threads == "1" ? "" : "s") each"
        }
        return "world: \(processes.count) process\(processes.count == 1 ? "" : "es") on \(hosts.count) host\(hosts.count == 1 ? "" : "s")\n"
            + lines.joined(separator: "\n")
    }
}
