import ArgumentParser
import Foundation
import Interpreter

extension Bench {
    /// `onnx-dpo bench gemm`: GFLOP/s of our GEMM kernels on the products of the benchmark models' DPO step.
    struct GEMM: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gemm",
            abstract: "Time the GEMM kernels on the SmolLM-135M and Qwen2.5-0.5B step shapes: GFLOP/s per shape and ISA.")

        @Option(help: "ISAs to time, comma-separated (avx512, avx2, neon, portable), or 'all' or 'best'.")
        var isa = "best"

        @Option(help: "Keep repeating each product for at least this many seconds (the fastest run is reported).")
        var minSeconds = 0.3

        @Option(help: "Time only the shapes whose name contains this text (e.g. \"smollm q/o\"; \"lora\" for the adapter's products, which the default run leaves out).")
        var only: String?

        @Option(help: "Threads a product is split across (default: every core).")
        var threads: Int?

        @Flag(help: "Skip the forward products with W packed once.")
        var noPacked = false

        @Flag(help: "Print one JSON object.")
        var json = false

        func run() throws {
            let isas: [String]
            switch isa {
            case "all": isas = ["avx512", "avx2", "neon", "portable"]
            case "best": isas = [GEMMBenchmark.bestISA]
            default: isas = isa.split(separator: ",").map(String.init)
            }
            let shapes = only.map { only in
                (GEMMBenchmark.defaultShapes + GEMMBenchmark.adapterProductShapes).filter { $0.name.contains(only) }
            } ?? GEMMBenchmark.defaultShapes
            let result = GEMMBenchmark.run(isas: isas, shapes: shapes, minimumSeconds: minSeconds, packed: !noPacked,
                                           threads: threads ?? Parallel.threadCount) { measurement in
                guard !json else { return }
                let shape = measurement.shape
                print(String(format: "%-9@ %-6@ %-32@ %6d x %6d x %6d %@%@  %8.2f ms  %7.1f GFLOP/s",
                             measurement.isa, measurement.bPath, shape.name, shape.m, shape.n, shape.k,
                             shape.transposeA ? "Aᵀ" : "A ", shape.transposeB ? "Bᵀ" : "B ",
                             measurement.seconds * 1000, measurement.gflops))
            }
            if json { print(try jsonText(result)) }
        }
    }
}
